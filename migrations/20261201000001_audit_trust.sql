-- The audit log that auditors can trust: what the image looked like when it was shared,
-- checkpoints of the chain's head, and a database role for the application that may only
-- append to the audit tables.

-- Learned from Glance when a share is granted; every later event about the share names them.
alter table shares add column image_name text;
alter table shares add column image_owner text;

-- The head of the chain (seq and hash) as it was at a moment. `audit verify` compares the
-- chain with every checkpoint: a tail deleted, or history rewritten and re-hashed, no longer
-- matches what was recorded here.
create table audit_checkpoints (
    id        uuid primary key,
    taken_at  timestamptz not null default now(),
    seq       bigint not null,
    hash      bytea not null,
    -- The broker instance, or `verify`.
    taken_by  text not null
);

create index audit_checkpoints_seq_idx on audit_checkpoints (seq);

-- Auditors' filters: a project on either side of a share, and who acted.
create index audit_events_project_idx on audit_events (project_id, seq);
create index audit_events_owner_idx on audit_events ((target ->> 'owner_project_id'), seq);
create index audit_events_actor_idx on audit_events ((initiator ->> 'name'), seq);

-- Appends one event to the chain in one round trip, so the chain lock covers as little as it
-- can: the lock (held until the transaction ends, so seq order is commit order across every
-- replica), the tail, and the insert. The broker digests the event's canonical JSON
-- (`p_digest`); the link is
--     hash = SHA-256(prev_hash || seq as 8 bytes big-endian || p_digest).
-- Each statement of a plpgsql function takes a fresh snapshot: the tail read after the lock
-- is the last one committed.
create function audit_append(
    p_id uuid, p_occurred_at timestamptz, p_action text, p_outcome text, p_initiator jsonb,
    p_target jsonb, p_observer text, p_request_id uuid, p_share_id uuid, p_image_id uuid,
    p_project_id text, p_reason text, p_correlation_id text, p_details jsonb, p_digest bytea)
returns table (new_seq bigint, new_prev_hash bytea, new_hash bytea)
language plpgsql as $$
declare
    tail record;
begin
    -- "audit" in ASCII: one key for every writer of every replica.
    perform pg_advisory_xact_lock(x'6175646974'::bigint);
    select e.seq, e.hash into tail from audit_events e order by e.seq desc limit 1;
    new_seq := coalesce(tail.seq, 0) + 1;
    new_prev_hash := coalesce(tail.hash, decode(repeat('00', 32), 'hex'));
    new_hash := sha256(new_prev_hash || int8send(new_seq) || p_digest);
    insert into audit_events (seq, id, occurred_at, action, outcome, initiator, target, observer,
        request_id, share_id, image_id, project_id, reason, correlation_id, details, prev_hash, hash)
    values (new_seq, p_id, p_occurred_at, p_action, p_outcome, p_initiator, p_target, p_observer,
        p_request_id, p_share_id, p_image_id, p_project_id, p_reason, p_correlation_id, p_details,
        new_prev_hash, new_hash);
    return next;
end;
$$;

-- Like `refuse_audit_change`, naming whichever table was written to.
create function refuse_append_only_change() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only: % refused', tg_table_name, tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger audit_checkpoints_no_update_delete
    before update or delete on audit_checkpoints
    for each row execute function refuse_append_only_change();

create trigger audit_checkpoints_no_truncate
    before truncate on audit_checkpoints
    for each statement execute function refuse_append_only_change();

-- `gsb_app`: the privileges the running broker needs, and no more. Run migrations as the
-- tables' owner; run `serve` and `worker` as a login role that is a member of `gsb_app`
-- (`create role broker login password '...' in role gsb_app`). Such a role may read and
-- write the broker's tables but only SELECT and INSERT on the audit tables: it cannot
-- UPDATE, DELETE or TRUNCATE them even with the triggers disabled, since it cannot disable
-- them either (only an owner or a superuser can).
--
-- Roles belong to the whole server. The role is created when absent; a migrating role that
-- may not create roles leaves that to an administrator (a notice says so), and the grants
-- below are made once the role exists.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'gsb_app') then
        begin
            create role gsb_app nologin;
        exception
            -- Another database's migration created it at the same moment.
            when duplicate_object or unique_violation then null;
            when insufficient_privilege then
                raise notice 'cannot create role gsb_app: create it (nologin) and migrate again to grant it';
        end;
    end if;
    if exists (select 1 from pg_roles where rolname = 'gsb_app') then
        execute format('grant connect on database %I to gsb_app', current_database());
        grant usage on schema public to gsb_app;
        grant select, insert, update, delete on all tables in schema public to gsb_app;
        revoke insert, update, delete on _sqlx_migrations from gsb_app;
        revoke update, delete, truncate on audit_events, audit_checkpoints from gsb_app;
        -- Tables later migrations create (as this same role) are granted alike; an
        -- append-only one must revoke what it refuses, as above.
        alter default privileges in schema public grant select, insert, update, delete on tables to gsb_app;
    end if;
end;
$$;
