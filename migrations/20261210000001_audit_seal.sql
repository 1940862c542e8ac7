-- Sealing: the hash chain moves off the writers' path. A writer inserts its event with a
-- number from a sequence and the SHA-256 of its canonical JSON (`digest`), and takes no lock;
-- the event is "unsealed" (`chain_pos`, `prev_hash` and `hash` are null). A sealer, one at a
-- time across every replica, later gives the unsealed events their places in the chain, in
-- one short transaction (`audit_seal`). Seq order is the order events were written, not the
-- order they committed: an event with a lower seq can commit after higher ones were sealed.
-- The chain's order is therefore the sealing order, `chain_pos`, 1, 2, 3, ... with no gaps:
--     hash = SHA-256(prev_hash || chain_pos as 8 bytes big-endian || digest).
-- Existing events were chained with chain_pos = seq under the same formula, so their
-- hashes stay valid as they are.

-- Writers no longer chain: `audit_seal` replaces `audit_append`.
drop function audit_append;

create sequence audit_events_seq as bigint owned by audit_events.seq;
select setval('audit_events_seq', coalesce(max(seq), 0) + 1, false) from audit_events;
alter table audit_events alter column seq set default nextval('audit_events_seq');

alter table audit_events add column chain_pos bigint unique;
-- The writer's SHA-256 of the event's canonical JSON, which the seal links. Null for the
-- events written before sealing existed (they were chained when written). `audit verify`
-- recomputes it from the content: it is an input to the seal, never trusted.
alter table audit_events add column digest bytea;
alter table audit_events alter column prev_hash drop not null;
alter table audit_events alter column hash drop not null;
alter table audit_events add constraint audit_events_sealed_whole check (
    (chain_pos is null and prev_hash is null and hash is null)
    or (chain_pos is not null and prev_hash is not null and hash is not null));
alter table audit_events add constraint audit_events_unsealed_has_digest check (
    chain_pos is not null or digest is not null);

-- The rows written before sealing take their places (the trigger that would refuse it is
-- replaced below, in this same transaction).
drop trigger audit_events_no_update_delete on audit_events;
update audit_events set chain_pos = seq;

-- What the sealer reads: the unsealed events, oldest seq first.
create index audit_events_unsealed_idx on audit_events (seq) where chain_pos is null;

-- The checkpoints record the sealed head: a place in the chain and its hash.
alter table audit_checkpoints rename column seq to chain_pos;
alter index audit_checkpoints_seq_idx rename to audit_checkpoints_chain_pos_idx;

-- Nobody rewrites history, with exactly one exception: sealing. An UPDATE passes only when
-- the row was unsealed, it sets `chain_pos`, `prev_hash` and `hash` and changes nothing
-- else, and the link it sets is right: `prev_hash` is the hash at `chain_pos - 1` (zeros
-- for the first) and `hash` is the formula above over the row's digest. Re-sealing a sealed
-- row, changing content while sealing, or a wrong link is refused, for every role.
create function guard_audit_events() returns trigger language plpgsql as $$
declare
    seal_fields constant text[] := array['chain_pos', 'prev_hash', 'hash'];
    want_prev bytea;
begin
    if tg_op = 'UPDATE' and old.chain_pos is null and new.chain_pos is not null
        and (to_jsonb(new) - seal_fields) = (to_jsonb(old) - seal_fields) then
        if new.chain_pos = 1 then
            want_prev := decode(repeat('00', 32), 'hex');
        else
            select e.hash into want_prev from audit_events e where e.chain_pos = new.chain_pos - 1;
        end if;
        if new.prev_hash = want_prev
            and new.hash = sha256(new.prev_hash || int8send(new.chain_pos) || old.digest) then
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

-- Seals up to `p_batch` unsealed events, in seq order, after the sealed head; returns how
-- many. One sealer at a time across every replica: the chain lock ("audit" in ASCII, as
-- before) is held until the caller's transaction ends, and the tail and the unsealed events
-- are read after it is taken (each statement of a plpgsql function takes a fresh snapshot),
-- so they include the last seal committed. An event that commits later is sealed by a later
-- call, after the events already sealed.
--
-- SECURITY DEFINER, owned by the migrating role: `gsb_app` may not UPDATE the audit table,
-- and needs no such grant to seal; it can call this function, which sets only what sealing
-- sets, computed here, and which the trigger above checks again.
create function audit_seal(p_batch integer) returns integer
language plpgsql security definer set search_path from current as $$
declare
    tail record;
    pos bigint;
    prev bytea;
    event record;
    sealed integer := 0;
begin
    perform pg_advisory_xact_lock(x'6175646974'::bigint);
    select e.chain_pos, e.hash into tail from audit_events e
        where e.chain_pos is not null order by e.chain_pos desc limit 1;
    pos := coalesce(tail.chain_pos, 0);
    prev := coalesce(tail.hash, decode(repeat('00', 32), 'hex'));
    for event in
        select e.seq, e.digest from audit_events e where e.chain_pos is null order by e.seq limit p_batch
    loop
        pos := pos + 1;
        update audit_events
            set chain_pos = pos, prev_hash = prev, hash = sha256(prev || int8send(pos) || event.digest)
            where seq = event.seq
            returning hash into prev;
        sealed := sealed + 1;
    end loop;
    return sealed;
end;
$$;

revoke all on function audit_seal(integer) from public;

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'gsb_app') then
        grant usage on sequence audit_events_seq to gsb_app;
        grant execute on function audit_seal(integer) to gsb_app;
    end if;
end;
$$;
