-- The audit log against the application's own role (`gsb_app`), who holds the credentials
-- every broker replica runs with. Before this migration, as `gsb_app`: a TEMP table named
-- `audit_events` with a trigger, one row, `select audit_seal(1)`, and the trigger ran as the
-- seal's owner (a superuser: SECURITY DEFINER, a search_path taken from the migrating
-- session, where pg_temp comes first unless named), disabled the audit triggers and
-- rewrote sealed events. Here:
--   * every function that runs with another role's rights, or fires for one, pins
--     `search_path = pg_catalog, public, pg_temp` (pg_temp last: never searched before the
--     real tables) and names its tables and functions with their schema;
--   * `gsb_app` has no TEMP (the broker needs none);
--   * an event is inserted unsealed, by every role: only `audit_seal` seals, by UPDATE, under
--     the guard of `guard_audit_events`;
--   * `gsb_app` no longer inserts checkpoints: `audit_checkpoint` records the sealed head it
--     reads itself, so a checkpoint can only say what the chain says.

-- Seals up to `p_batch` unsealed events (unchanged but for the pinned search_path and the
-- qualified names; see 20261210000001_audit_seal.sql for why it is shaped so).
create or replace function public.audit_seal(p_batch integer) returns integer
language plpgsql security definer set search_path = pg_catalog, public, pg_temp as $$
declare
    tail record;
    pos bigint;
    prev bytea;
    event record;
    sealed integer := 0;
begin
    perform pg_catalog.pg_advisory_xact_lock(x'6175646974'::bigint);
    select e.chain_pos, e.hash into tail from public.audit_events e
        where e.chain_pos is not null order by e.chain_pos desc limit 1;
    pos := coalesce(tail.chain_pos, 0);
    prev := coalesce(tail.hash, pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex'));
    for event in
        select e.seq, e.digest from public.audit_events e
            where e.chain_pos is null order by e.seq limit p_batch
    loop
        pos := pos + 1;
        update public.audit_events
            set chain_pos = pos, prev_hash = prev,
                hash = pg_catalog.sha256(prev || pg_catalog.int8send(pos) || event.digest)
            where seq = event.seq
            returning hash into prev;
        sealed := sealed + 1;
    end loop;
    return sealed;
end;
$$;

-- The guard of every UPDATE and DELETE (unchanged but for the pinned search_path and the
-- qualified names): it fires inside `audit_seal`, with the seal owner's rights.
create or replace function public.guard_audit_events() returns trigger
language plpgsql set search_path = pg_catalog, public, pg_temp as $$
declare
    seal_fields constant text[] := array['chain_pos', 'prev_hash', 'hash'];
    want_prev bytea;
begin
    if tg_op = 'UPDATE' and old.chain_pos is null and new.chain_pos is not null
        and (pg_catalog.to_jsonb(new) - seal_fields) = (pg_catalog.to_jsonb(old) - seal_fields) then
        if new.chain_pos = 1 then
            want_prev := pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex');
        else
            select e.hash into want_prev from public.audit_events e where e.chain_pos = new.chain_pos - 1;
        end if;
        if new.prev_hash = want_prev
            and new.hash = pg_catalog.sha256(new.prev_hash || pg_catalog.int8send(new.chain_pos) || old.digest) then
            return new;
        end if;
        raise exception 'audit_events is append-only: a seal of event % with a wrong link refused', old.seq
            using errcode = 'insufficient_privilege';
    end if;
    raise exception 'audit_events is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

-- The triggers that refuse every change name no table, but pin their path all the same.
alter function public.refuse_audit_change() set search_path = pg_catalog, public, pg_temp;
alter function public.refuse_append_only_change() set search_path = pg_catalog, public, pg_temp;

-- An event claiming a place in the chain when it is written is refused, for every role:
-- a place is given by `audit_seal` alone, after the head, with a link it computes. (A
-- pg_dump restore is unaffected: it loads rows before it creates triggers.)
create function public.refuse_sealed_audit_insert() returns trigger
language plpgsql set search_path = pg_catalog, public, pg_temp as $$
begin
    if new.chain_pos is not null or new.prev_hash is not null or new.hash is not null then
        raise exception 'audit_events: event % is inserted with a seal; events are written unsealed and only audit_seal seals', new.id
            using errcode = 'insufficient_privilege';
    end if;
    return new;
end;
$$;

create trigger audit_events_insert_unsealed
    before insert on public.audit_events
    for each row execute function public.refuse_sealed_audit_insert();

-- Records the sealed head as a checkpoint, unless a checkpoint already holds it (or a later
-- place), and returns it; nothing when the chain is empty or the head already recorded.
-- The caller names only who takes it (cut to 200 characters): the place and the hash are
-- read here, from the sealed chain, so no caller can record a forged head.
-- SECURITY DEFINER: `gsb_app` may not INSERT checkpoints itself.
create function public.audit_checkpoint(p_taken_by text)
returns table (chain_pos bigint, hash bytea)
language sql security definer set search_path = pg_catalog, public, pg_temp as $$
    insert into public.audit_checkpoints (id, chain_pos, hash, taken_by)
    select pg_catalog.gen_random_uuid(), head.chain_pos, head.hash, pg_catalog.left(p_taken_by, 200)
    from (select e.chain_pos, e.hash from public.audit_events e
          where e.chain_pos is not null order by e.chain_pos desc limit 1) head
    where not exists (select 1 from public.audit_checkpoints c where c.chain_pos >= head.chain_pos)
    returning chain_pos, hash;
$$;

revoke all on function public.audit_checkpoint(text) from public;

-- No role makes temporary tables here unless an administrator grants it: the broker needs
-- none, and a temporary table is how a caller's objects get in front of the real ones. A
-- migrating role that does not own the database cannot revoke this (Postgres warns and goes
-- on); a notice then says what to run.
do $$
begin
    execute format('revoke temporary on database %I from public', current_database());
    if exists (select 1 from pg_roles where rolname = 'gsb_app') then
        execute format('revoke temporary on database %I from gsb_app', current_database());
        revoke insert on public.audit_checkpoints from gsb_app;
        grant execute on function public.audit_checkpoint(text) to gsb_app;
        if has_database_privilege('gsb_app', current_database(), 'temporary') then
            raise notice 'gsb_app can still create temporary tables: as the database owner, run: revoke temporary on database % from public', current_database();
        end if;
    end if;
end;
$$;
