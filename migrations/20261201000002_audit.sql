-- The audit log: append-only, hash-chained, sealed off the writers' path.
--
-- A writer inserts its event with a number from a sequence (`seq`) and the SHA-256 of its
-- canonical JSON (`digest`), and takes no lock: the event is "unsealed" (`chain_pos`,
-- `prev_hash` and `hash` are null). A sealer, one at a time across every replica, later
-- gives the unsealed events their places in the chain, in one short transaction
-- (`audit_seal`). Seq order is the order events were written, not the order they committed:
-- the chain's order is the sealing order, `chain_pos`, 1, 2, 3, ... with no gaps:
--     hash = SHA-256(prev_hash || chain_pos as 8 bytes big-endian || digest)
-- the first event chaining to 32 zero bytes.
--
-- Every function here that runs with another role's rights, or fires for one, pins
-- `search_path = pg_catalog, public, pg_temp` (pg_temp last: never searched before the real
-- tables) and names its tables and functions with their schema, so that no object of the
-- caller's (a TEMP table named `audit_events`, say) stands in for the real one.

create sequence audit_events_seq as bigint;

create table audit_events (
    seq             bigint primary key default nextval('audit_events_seq'),
    id              uuid not null unique,
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
    -- The seal: null until `audit_seal` gives the event its place.
    prev_hash       bytea,
    hash            bytea unique,
    chain_pos       bigint unique,
    -- The writer's SHA-256 of the event's canonical JSON, which the seal links. `audit
    -- verify` recomputes it from the content: an input to the seal, never trusted.
    digest          bytea,
    -- Which canonical form the digest was taken over: 1, the broker's first (hand-written)
    -- form; 2, RFC 8785 (JCS), which the broker writes now. `audit verify` recomputes each
    -- event's digest under its own scheme; a scheme 2 digest covers the scheme itself.
    digest_scheme   smallint not null default 1,
    constraint audit_events_digest_scheme_known check (digest_scheme in (1, 2)),
    constraint audit_events_sealed_whole check (
        (chain_pos is null and prev_hash is null and hash is null)
        or (chain_pos is not null and prev_hash is not null and hash is not null)),
    constraint audit_events_unsealed_has_digest check (chain_pos is not null or digest is not null)
);

alter sequence audit_events_seq owned by audit_events.seq;

create index audit_events_image_idx on audit_events (image_id, seq);
create index audit_events_request_idx on audit_events (request_id, seq);
create index audit_events_share_idx on audit_events (share_id, seq);
-- Auditors' filters: a project on either side of a share, and who acted.
create index audit_events_project_idx on audit_events (project_id, seq);
create index audit_events_owner_idx on audit_events ((target ->> 'owner_project_id'), seq);
create index audit_events_actor_idx on audit_events ((initiator ->> 'name'), seq);
-- What the sealer reads: the unsealed events, oldest seq first.
create index audit_events_unsealed_idx on audit_events (seq) where chain_pos is null;

-- The sealed head (a place in the chain and its hash) as it was at a moment. `audit verify`
-- compares the chain with every checkpoint: a tail deleted, or history rewritten and
-- re-hashed, no longer matches what was recorded here.
create table audit_checkpoints (
    id        uuid primary key,
    taken_at  timestamptz not null default now(),
    chain_pos bigint not null,
    hash      bytea not null,
    -- The broker instance, or `verify`.
    taken_by  text not null
);

create index audit_checkpoints_chain_pos_idx on audit_checkpoints (chain_pos);

-- ------------------------------------------------------------------------ append-only

-- Nobody rewrites history: not the application, not an operator by mistake, not a superuser
-- (short of disabling the triggers, which `audit verify` then catches).
create function refuse_append_only_change() returns trigger
language plpgsql set search_path = pg_catalog, public, pg_temp as $$
begin
    raise exception '% is append-only: % refused', tg_table_name, tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger audit_events_no_truncate
    before truncate on audit_events
    for each statement execute function refuse_append_only_change();

create trigger audit_checkpoints_no_update_delete
    before update or delete on audit_checkpoints
    for each row execute function refuse_append_only_change();

create trigger audit_checkpoints_no_truncate
    before truncate on audit_checkpoints
    for each statement execute function refuse_append_only_change();

-- An event claiming a place in the chain when it is written is refused, for every role: a
-- place is given by `audit_seal` alone, after the head, with a link it computes. (A pg_dump
-- restore is unaffected: it loads rows before it creates triggers.)
create function refuse_sealed_audit_insert() returns trigger
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
    before insert on audit_events
    for each row execute function refuse_sealed_audit_insert();

-- Every UPDATE and DELETE is refused, with exactly one exception: sealing. An UPDATE passes
-- only when the row was unsealed, it sets `chain_pos`, `prev_hash` and `hash` and changes
-- nothing else, and the link it sets is right: `prev_hash` is the hash at `chain_pos - 1`
-- (zeros for the first) and `hash` is the formula above over the row's digest. Re-sealing,
-- changing content while sealing, or a wrong link is refused, for every role. It fires
-- inside `audit_seal`, with the seal owner's rights.
create function guard_audit_events() returns trigger
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

create trigger audit_events_no_update_delete
    before update or delete on audit_events
    for each row execute function guard_audit_events();

-- ------------------------------------------------------------------ seal and checkpoint

-- Seals up to `p_batch` unsealed events, in seq order, after the sealed head; returns how
-- many. One sealer at a time across every replica: the chain lock ("audit" in ASCII) is held
-- until the caller's transaction ends, and the tail and the unsealed events are read after
-- it is taken (each statement of a plpgsql function takes a fresh snapshot), so they include
-- the last seal committed. An event that commits later is sealed by a later call, after the
-- events already sealed.
--
-- SECURITY DEFINER, owned by the migrating role: `gsb_app` may not UPDATE the audit table,
-- and needs no such grant to seal; it can call this function, which sets only what sealing
-- sets, computed here, and which `guard_audit_events` checks again.
create function audit_seal(p_batch integer) returns integer
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

revoke all on function audit_seal(integer) from public;

-- Records the sealed head as a checkpoint, unless a checkpoint already holds it (or a later
-- place), and returns it; nothing when the chain is empty or the head already recorded. The
-- caller names only who takes it (cut to 200 characters): the place and the hash are read
-- here, from the sealed chain, so no caller can record a forged head.
-- SECURITY DEFINER: `gsb_app` may not INSERT checkpoints itself.
create function audit_checkpoint(p_taken_by text)
returns table (chain_pos bigint, hash bytea)
language sql security definer set search_path = pg_catalog, public, pg_temp as $$
    insert into public.audit_checkpoints (id, chain_pos, hash, taken_by)
    select pg_catalog.gen_random_uuid(), head.chain_pos, head.hash, pg_catalog.left(p_taken_by, 200)
    from (select e.chain_pos, e.hash from public.audit_events e
          where e.chain_pos is not null order by e.chain_pos desc limit 1) head
    where not exists (select 1 from public.audit_checkpoints c where c.chain_pos >= head.chain_pos)
    returning chain_pos, hash;
$$;

revoke all on function audit_checkpoint(text) from public;
