-- The audit log partitioned by month (issue 15), and its archives.
--
-- `audit_events` becomes a table partitioned by range on `occurred_at`, one partition per
-- calendar month in UTC (`audit_events_2027_01`, ...), plus `audit_events_default`, which
-- takes any event no monthly partition covers, so that a write never fails for want of a
-- partition. The table as it was is not rewritten: it is renamed and attached as the first
-- partition, `audit_events_before_<YYYY_MM>`, holding every event before the first monthly
-- partition (the month after this migration runs, or after its latest event). It is read
-- twice (for its latest event, and by Postgres to check the partition's bound) while writes
-- wait, seconds per ten million events; nothing is copied.
--
-- Partitions are made ahead (this month and the next two) by `audit_partitions_ensure`,
-- which the broker calls at start and every hour: `gsb_app` may call it, and it is all the
-- DDL `gsb_app` can reach. An old partition leaves the table only through
-- `glance-share-broker audit archive`, which writes its events to a file, records the file
-- and the chain's place in `audit_archives`, and detaches it (docs/audit.md).
--
-- Uniqueness. Postgres enforces a unique index on a partitioned table only when it includes
-- the partition key, so `seq`, `id`, `hash` and `chain_pos` are unique within each
-- partition (each has its own unique indexes, which also serve every lookup), and across
-- partitions by these means instead:
--   - `seq`: every event is numbered by the insert trigger from `audit_events_seq`, whatever
--     the writer put there: no writer can reuse a number.
--   - `chain_pos`: a seal must follow the chain's head, kept in `audit_chain_head` by the
--     seal guard (one row, locked by each seal), so places are given once, in order, with
--     no gaps, whichever partition holds the event; `audit verify` checks it again.
--   - `hash`: it covers `chain_pos`, so two events with different places have different
--     hashes (short of a SHA-256 collision).
--   - `id`: a UUIDv7 each writer draws; nothing looks an event up by id, and the chain
--     covers it (a copied event is a second event at another place, not a replacement).
--
-- Every protection of the log holds on every partition: the row triggers (numbering and
-- refusing seals on insert, the guard on update and delete) are declared on the
-- partitioned table and cloned by Postgres to each partition, present and future; TRUNCATE
-- is refused by a statement trigger on the table and on each partition (statement
-- triggers are not cloned: `audit_partition_conform` adds it to every partition, one made
-- by hand included, at the next maintenance pass); `gsb_app` holds no privilege on any
-- partition (it reads and appends through the table) and cannot detach or drop one (only
-- the owner can).

-- ----------------------------------------------------------------------- the chain head

-- The sealed head: the place and hash the next seal must follow; one row (the guard and
-- `audit_seal` keep it so; only the owner could add another). The seal guard
-- replaces it with each seal it lets through (it deletes the head the seal follows, then
-- inserts the seal's place), under the row's lock: a seal that does not follow the head is
-- refused, so a place is given once whichever partition holds its event, and the guard
-- checks a link with one index probe instead of one in every partition. `audit_seal` sets it
-- from the chain's real tail when they differ (a log loaded with the triggers off).
create table audit_chain_head (
    chain_pos  bigint primary key,
    hash       bytea not null
);

insert into audit_chain_head (chain_pos, hash)
select coalesce(tail.chain_pos, 0), coalesce(tail.hash, decode(repeat('00', 32), 'hex'))
from (select 1) one
left join (select e.chain_pos, e.hash from audit_events e where e.chain_pos is not null
           order by e.chain_pos desc limit 1) tail on true;

create trigger audit_chain_head_no_truncate
    before truncate on audit_chain_head
    for each statement execute function refuse_append_only_change();

-- ------------------------------------------------------------- the triggers, now global

-- Replaces `refuse_sealed_audit_insert`: an event claiming a seal is refused, and every
-- event takes its `seq` from the sequence here (the column has no default), so a writer
-- that names a number, to collide with an event in another partition, is overruled.
create function admit_audit_event() returns trigger
language plpgsql set search_path = pg_catalog, public, pg_temp as $$
begin
    if new.chain_pos is not null or new.prev_hash is not null or new.hash is not null then
        raise exception 'audit_events: event % is inserted with a seal; events are written unsealed and only audit_seal seals', new.id
            using errcode = 'insufficient_privilege';
    end if;
    new.seq := pg_catalog.nextval('public.audit_events_seq'::pg_catalog.regclass);
    return new;
end;
$$;

-- The guard of 20261201000002, with the link checked against `audit_chain_head` instead of
-- the event at `chain_pos - 1` (which would be an index probe in every partition): a seal
-- passes when it changes nothing but the seal (the row with its seal's fields set back to
-- null equals the row before, column by column, each by its type's equality: cheaper than
-- comparing both rows as JSON, and a column added later is compared too), its hash is the
-- formula over its digest, and it follows the head (its place is the next one, its
-- `prev_hash` the head's hash); the head then becomes this seal. Two sessions sealing the
-- same place by hand: the second waits for the head row, finds it gone, and is refused.
create or replace function guard_audit_events() returns trigger
language plpgsql set search_path = pg_catalog, public, pg_temp as $$
declare
    content record;
begin
    if tg_op = 'UPDATE' and old.chain_pos is null and new.chain_pos is not null then
        content := new;
        content.chain_pos := null;
        content.prev_hash := null;
        content.hash := null;
        if content is not distinct from old then
            if new.hash = pg_catalog.sha256(new.prev_hash || pg_catalog.int8send(new.chain_pos) || old.digest) then
                delete from public.audit_chain_head h where h.chain_pos = new.chain_pos - 1 and h.hash = new.prev_hash;
                if found then
                    insert into public.audit_chain_head (chain_pos, hash) values (new.chain_pos, new.hash);
                    return new;
                end if;
            end if;
            raise exception 'audit_events is append-only: a seal of event % with a wrong link refused', old.seq
                using errcode = 'insufficient_privilege';
        end if;
    end if;
    raise exception 'audit_events is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

-- `audit_seal` of 20261201000002, with four changes: when every sealed event is archived, it
-- goes on after the last archived one; it records the tail it starts from in
-- `audit_chain_head` when the head there differs; it updates each event by its seq and its
-- `occurred_at`, so Postgres touches only the partition that holds it (by seq alone the update
-- would look in every partition, for every event); and it runs its statements with generic
-- plans (as the Postgres default would not, for a partitioned table: it would plan the update
-- again for every event), put back as they were when it returns.
create or replace function audit_seal(p_batch integer) returns integer
language plpgsql security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    tail record;
    pos bigint;
    prev bytea;
    event record;
    sealed integer := 0;
    plans text := pg_catalog.current_setting('plan_cache_mode');
begin
    perform pg_catalog.pg_advisory_xact_lock(x'6175646974'::bigint);
    select e.chain_pos, e.hash into tail from public.audit_events e
        where e.chain_pos is not null order by e.chain_pos desc limit 1;
    if tail.chain_pos is null then
        -- Every sealed event is archived: the chain goes on after the last archived one.
        select a.last_chain_pos as chain_pos, a.last_hash as hash into tail from public.audit_archives a
            where a.last_chain_pos is not null order by a.last_chain_pos desc limit 1;
    end if;
    pos := coalesce(tail.chain_pos, 0);
    prev := coalesce(tail.hash, pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex'));
    if not exists (select 1 from public.audit_chain_head h where h.chain_pos = pos and h.hash = prev) then
        delete from public.audit_chain_head;
        insert into public.audit_chain_head (chain_pos, hash) values (pos, prev);
    end if;
    perform pg_catalog.set_config('plan_cache_mode', 'force_generic_plan', true);
    for event in
        select e.seq, e.occurred_at, e.digest from public.audit_events e
            where e.chain_pos is null order by e.seq limit p_batch
    loop
        pos := pos + 1;
        update public.audit_events
            set chain_pos = pos, prev_hash = prev,
                hash = pg_catalog.sha256(prev || pg_catalog.int8send(pos) || event.digest)
            where seq = event.seq and occurred_at = event.occurred_at
            returning hash into prev;
        sealed := sealed + 1;
    end loop;
    perform pg_catalog.set_config('plan_cache_mode', plans, true);
    return sealed;
end;
$$;

-- ------------------------------------------------------------------ months, in UTC

-- The first instant of the UTC month `p_offset` months after the one `p_at` falls in.
create function audit_month(p_at timestamptz, p_offset integer) returns timestamptz
language sql immutable set search_path = pg_catalog, public, pg_temp as $$
    select (pg_catalog.date_trunc('month', p_at at time zone 'UTC')
            + pg_catalog.make_interval(months => p_offset)) at time zone 'UTC';
$$;

-- ---------------------------------------------------------------- the conversion

-- The table as it was becomes the first partition: renamed, with its unique indexes and
-- filter indexes renamed after it (the partitioned table's own take the old names), and
-- without its row triggers (the partitioned table's are cloned onto it when it is
-- attached). Its TRUNCATE trigger stays. Its upper bound is the first monthly partition.
do $$
declare
    first_month timestamptz := public.audit_month(
        greatest(pg_catalog.now(), (select max(e.occurred_at) from public.audit_events e)), 1);
    legacy text := 'audit_events_before_' || pg_catalog.to_char(first_month at time zone 'UTC', 'YYYY_MM');
    renamed record;
begin
    drop trigger audit_events_insert_unsealed on public.audit_events;
    drop trigger audit_events_no_update_delete on public.audit_events;
    alter table public.audit_events alter column seq drop default;
    execute format('alter table public.audit_events rename to %I', legacy);
    for renamed in
        select * from (values ('audit_events_pkey', 'seq_key'), ('audit_events_id_key', 'id_key'),
                              ('audit_events_hash_key', 'hash_key'), ('audit_events_chain_pos_key', 'chain_pos_key')) k (old, suffix)
    loop
        execute format('alter table public.%I rename constraint %I to %I', legacy, renamed.old, legacy || '_' || renamed.suffix);
    end loop;
    for renamed in
        select * from (values ('image_idx'), ('request_idx'), ('share_idx'), ('project_idx'), ('owner_idx'),
                              ('actor_idx'), ('unsealed_idx')) k (suffix)
    loop
        execute format('alter index public.%I rename to %I', 'audit_events_' || renamed.suffix, legacy || '_' || renamed.suffix);
    end loop;
    perform pg_catalog.set_config('gsb.audit_legacy_partition', legacy, true);
    perform pg_catalog.set_config('gsb.audit_first_month', first_month::text, true);
end;
$$;

-- The columns, in the same order, and the checks, by the same names, as the first
-- partition (Postgres matches a partition's checks with the table's by name).
create table audit_events (
    seq             bigint not null,
    id              uuid not null,
    occurred_at     timestamptz not null,
    action          text not null,
    outcome         text not null,
    initiator       jsonb not null,
    target          jsonb not null,
    observer        text not null,
    request_id      uuid,
    share_id        uuid,
    image_id        uuid,
    project_id      text,
    reason          text,
    correlation_id  text,
    details         jsonb not null default '{}',
    prev_hash       bytea,
    hash            bytea,
    chain_pos       bigint,
    digest          bytea,
    digest_scheme   smallint not null default 1,
    constraint audit_events_digest_scheme_known check (digest_scheme in (1, 2)),
    constraint audit_events_sealed_whole check (
        (chain_pos is null and prev_hash is null and hash is null)
        or (chain_pos is not null and prev_hash is not null and hash is not null)),
    constraint audit_events_unsealed_has_digest check (chain_pos is not null or digest is not null)
) partition by range (occurred_at);

-- The sequence belongs to the whole log now, not to its first partition (which an archive
-- may drop).
alter sequence audit_events_seq owned by audit_events.seq;

-- The filter indexes, as 20261201000002 made them: the first partition's, identical, are
-- attached to these as they are, and every later partition gets its own.
create index audit_events_image_idx on audit_events (image_id, seq);
create index audit_events_request_idx on audit_events (request_id, seq);
create index audit_events_share_idx on audit_events (share_id, seq);
create index audit_events_project_idx on audit_events (project_id, seq);
create index audit_events_owner_idx on audit_events ((target ->> 'owner_project_id'), seq);
create index audit_events_actor_idx on audit_events ((initiator ->> 'name'), seq);
create index audit_events_unsealed_idx on audit_events (seq) where chain_pos is null;

do $$
begin
    execute format('alter table public.audit_events attach partition public.%I for values from (minvalue) to (%L)',
        pg_catalog.current_setting('gsb.audit_legacy_partition'),
        pg_catalog.current_setting('gsb.audit_first_month'));
end;
$$;

create table audit_events_default partition of audit_events default;

-- Cloned by Postgres to every partition, present and future.
create trigger audit_events_admit
    before insert on audit_events
    for each row execute function admit_audit_event();

create trigger audit_events_no_update_delete
    before update or delete on audit_events
    for each row execute function guard_audit_events();

-- Not cloned: `audit_partition_conform` adds it to each partition.
create trigger audit_events_no_truncate
    before truncate on audit_events
    for each statement execute function refuse_append_only_change();

drop function refuse_sealed_audit_insert();

-- ---------------------------------------------------------------- partitions

-- Every partition of the log: its bounds (null for MINVALUE and MAXVALUE, both null for
-- the default partition), read from the catalog.
create function audit_partitions()
returns table (partition regclass, from_at timestamptz, to_at timestamptz, is_default boolean)
language sql stable set search_path = pg_catalog, public, pg_temp as $$
    select c.oid::pg_catalog.regclass,
           case when b.m[1] is null or b.m[1] = 'MINVALUE' then null else pg_catalog.btrim(b.m[1], '''')::timestamptz end,
           case when b.m[2] is null or b.m[2] = 'MAXVALUE' then null else pg_catalog.btrim(b.m[2], '''')::timestamptz end,
           b.m is null
    from pg_catalog.pg_inherits i
    join pg_catalog.pg_class c on c.oid = i.inhrelid
    cross join lateral (
        select pg_catalog.regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), '^FOR VALUES FROM \((.*)\) TO \((.*)\)$') as m
    ) b
    where i.inhparent = 'public.audit_events'::pg_catalog.regclass
    order by b.m is null, 2 nulls first;
$$;

-- Gives partition `p` what every partition of the log must have, unless it has it already:
-- its own unique indexes on `seq`, `id`, `hash` and `chain_pos` (named `<p>_<column>_key`),
-- the TRUNCATE trigger, and no privilege for `gsb_app` or PUBLIC. Idempotent and quiet
-- when nothing is missing, so the maintenance pass runs it on every partition.
create function audit_partition_conform(p regclass) returns void
language plpgsql set search_path = pg_catalog, public, pg_temp as $$
declare
    name text := (select c.relname from pg_catalog.pg_class c where c.oid = p);
    col text;
begin
    foreach col in array array['seq', 'id', 'hash', 'chain_pos'] loop
        if pg_catalog.to_regclass(pg_catalog.format('public.%I', name || '_' || col || '_key')) is null then
            execute pg_catalog.format('create unique index %I on %s (%I)', name || '_' || col || '_key', p, col);
        end if;
    end loop;
    if not exists (select 1 from pg_catalog.pg_trigger t where t.tgrelid = p and t.tgname = 'audit_events_no_truncate') then
        execute pg_catalog.format(
            'create trigger audit_events_no_truncate before truncate on %s for each statement execute function public.refuse_append_only_change()', p);
    end if;
    if exists (select 1 from pg_catalog.pg_roles r where r.rolname = 'gsb_app')
        and pg_catalog.has_table_privilege('gsb_app', p, 'select, insert, update, delete, truncate, references, trigger') then
        execute pg_catalog.format('revoke all on %s from public, gsb_app', p);
    end if;
end;
$$;

revoke all on function audit_partition_conform(regclass) from public;

-- Makes the monthly partitions of this month and the next `p_months_ahead` (at most 24)
-- that are missing, and conforms every partition (one made by hand too); returns the
-- partitions made. One maintainer at a time across every replica (an advisory lock,
-- "audpart"), so two replicas calling at once make each partition once. A partition is made
-- outside the table and then attached, which locks the table only against other DDL, not
-- against writers. A month whose events already went to the default partition cannot be
-- attached (Postgres refuses an attach the default partition's rows would violate): it is
-- skipped with a warning, its events stay where they are, and the others are made.
--
-- SECURITY DEFINER, owned by the migrating role: `gsb_app` calls it, and may make nothing
-- else (it has no CREATE on the schema).
create function audit_partitions_ensure(p_months_ahead integer) returns setof text
language plpgsql security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    month timestamptz;
    next_month timestamptz;
    name text;
    p regclass;
begin
    perform pg_catalog.pg_advisory_xact_lock(x'61756470617274'::bigint);
    for i in 0 .. least(greatest(p_months_ahead, 0), 24) loop
        month := public.audit_month(pg_catalog.now(), i);
        next_month := public.audit_month(month, 1);
        continue when exists (
            select 1 from public.audit_partitions() b
            where not b.is_default
              and (b.from_at is null or b.from_at < next_month) and (b.to_at is null or b.to_at > month));
        name := 'audit_events_' || pg_catalog.to_char(month at time zone 'UTC', 'YYYY_MM');
        begin
            execute pg_catalog.format(
                'create table public.%I (like public.audit_events including defaults including constraints)', name);
            perform public.audit_partition_conform(pg_catalog.format('public.%I', name)::pg_catalog.regclass);
            execute pg_catalog.format(
                'alter table public.audit_events attach partition public.%I for values from (%L) to (%L)',
                name, month, next_month);
            return next name;
        exception
            when check_violation then
                raise warning 'audit_events_default holds events of the month %: partition % not made; they stay in the default partition',
                    pg_catalog.to_char(month at time zone 'UTC', 'YYYY-MM'), name;
            when duplicate_table then
                raise warning 'a table named % exists outside the audit log (a detached partition?): the month % stays in the default partition',
                    name, pg_catalog.to_char(month at time zone 'UTC', 'YYYY-MM');
        end;
    end loop;
    for p in select b.partition from public.audit_partitions() b loop
        perform public.audit_partition_conform(p);
    end loop;
end;
$$;

revoke all on function audit_partitions_ensure(integer) from public;

-- ---------------------------------------------------------------- archives

-- One row per `audit archive`: the partitions it detached, the chain's places their events
-- held (a prefix of the remaining chain: from the place after the previous archive's last,
-- whose hash `first_prev_hash` is), the last event's hash, how many, and the SHA-256 of the
-- file they were written to. `audit verify` starts the walk after the latest archive's last
-- event; `audit verify-archive` checks a file against its row. Append-only, like the log:
-- written by the owner alone (the archive command), never changed.
create table audit_archives (
    id               uuid primary key,
    archived_at      timestamptz not null default now(),
    -- The database role that ran the archive, and where it says it ran (host, OS user).
    archived_by      text not null,
    -- Every partition whose upper bound was at or before `before` (besides the default).
    before           timestamptz not null,
    partitions       text[] not null,
    dropped          boolean not null,
    file_name        text not null,
    file_sha256      bytea not null unique check (octet_length(file_sha256) = 32),
    event_count      bigint not null check (event_count >= 0),
    first_chain_pos  bigint,
    last_chain_pos   bigint unique,
    first_prev_hash  bytea,
    last_hash        bytea,
    constraint audit_archives_range_whole check (
        (event_count = 0 and first_chain_pos is null and last_chain_pos is null
            and first_prev_hash is null and last_hash is null)
        or (event_count > 0 and first_chain_pos >= 1 and last_chain_pos - first_chain_pos + 1 = event_count
            and first_prev_hash is not null and last_hash is not null))
);

create trigger audit_archives_no_update_delete
    before update or delete on audit_archives
    for each row execute function refuse_append_only_change();

create trigger audit_archives_no_truncate
    before truncate on audit_archives
    for each statement execute function refuse_append_only_change();

-- ---------------------------------------------------------------- gsb_app

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'gsb_app') then
        grant select, insert on audit_events to gsb_app;
        revoke update, delete, truncate, references, trigger on audit_events from gsb_app;
        grant select on audit_archives to gsb_app;
        revoke insert, update, delete, truncate, references, trigger on audit_archives from gsb_app;
        revoke all on audit_chain_head from gsb_app;
        grant execute on function audit_partitions_ensure(integer) to gsb_app;
    end if;
end;
$$;

-- This month and the next two; every partition conformed (the first one and the default
-- partition too).
select count(*) from audit_partitions_ensure(2);
