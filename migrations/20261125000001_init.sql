-- The broker's whole state. Postgres is also its only means of coordination:
-- API and worker replicas share these tables and nothing else.

-- API keys for services (portals, approval workflows, auditors).
-- Only the SHA-256 of a key is stored; the key itself is shown once, at creation.
create table api_keys (
    id          uuid primary key,
    name        text not null unique,
    role        text not null check (role in ('requester', 'approver', 'auditor', 'admin')),
    -- Projects the key acts for; empty means no restriction.
    projects    text[] not null default '{}',
    key_hash    bytea not null unique,
    created_at  timestamptz not null default now(),
    revoked_at  timestamptz
);

-- The ask: one image, one or more target projects, a reason, and a decision.
create table share_requests (
    id                uuid primary key,
    image_id          uuid not null,
    region            text not null,
    reason            text not null,
    requested_by      text not null,
    status            text not null check (status in
                        ('pending_approval', 'approved', 'denied', 'cancelled', 'expired')),
    expires_at        timestamptz,
    auto_accept       boolean not null default false,
    decided_by        text,
    decided_at        timestamptz,
    decision_comment  text,
    -- Bumped on every change; the ETag is derived from it.
    version           bigint not null default 1,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now()
);

create index share_requests_image_idx on share_requests (image_id);
create index share_requests_requested_by_idx on share_requests (requested_by);
create index share_requests_status_idx on share_requests (status);

-- One image granted to one project. `target` is what the requester wrote (an id or a
-- name); `project_id` is the Keystone id once known.
create table shares (
    id            uuid primary key,
    request_id    uuid not null references share_requests (id),
    image_id      uuid not null,
    region        text not null,
    target        text not null,
    project_id    text,
    state         text not null,
    last_error    text,
    -- The broker PATCHed the image from private to shared to grant this share; the last
    -- revoke puts it back.
    made_image_shared boolean not null default false,
    granted_at    timestamptz,
    revoked_by    text,
    revoke_reason text,
    version       bigint not null default 1,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    unique (request_id, target)
);

create index shares_request_idx on shares (request_id);
create index shares_image_idx on shares (image_id);
create index shares_project_idx on shares (project_id);
create index shares_state_idx on shares (state);

-- At most one live share of an image to a project: a second request for the same grant is
-- refused while the first is undecided or in force. Finished shares do not count.
create unique index shares_one_live_grant_idx on shares (image_id, region, target)
    where state not in ('denied', 'cancelled', 'expired', 'failed', 'revoked', 'removed_outside', 'image_deleted');

-- Idempotency-Key: the first successful response to a key is kept and replayed.
-- Written in the same transaction as the work the request did.
create table idempotency_keys (
    principal        text not null,
    key              text not null,
    request_hash     bytea not null,
    response_status  smallint not null,
    response_headers jsonb not null,
    response_body    bytea not null,
    created_at       timestamptz not null default now(),
    primary key (principal, key)
);

create index idempotency_keys_created_idx on idempotency_keys (created_at);

-- Work for the background worker. A job is claimed (lease token and expiry) and committed
-- before any call to OpenStack; finished jobs are kept as history.
create table jobs (
    id                uuid primary key,
    kind              text not null,
    request_id        uuid references share_requests (id),
    share_id          uuid references shares (id),
    -- The image the job writes to: jobs on one image run one at a time, across replicas.
    image_id          uuid,
    state             text not null default 'queued'
                        check (state in ('queued', 'running', 'done', 'failed')),
    run_at            timestamptz not null default now(),
    attempts          integer not null default 0,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    last_error        text,
    created_at        timestamptz not null default now(),
    finished_at       timestamptz
);

create index jobs_due_idx on jobs (run_at) where state in ('queued', 'running');
-- At most one active job per share (or request) and kind.
create unique index jobs_one_active_idx on jobs (kind, coalesce(share_id, request_id))
    where state in ('queued', 'running');
-- Glance can fail concurrent member writes to one image: one running job per image.
create unique index jobs_one_running_per_image_idx on jobs (image_id)
    where state = 'running';

-- The audit log: append-only, each event chained to the one before by hash.
create table audit_events (
    seq             bigint primary key,
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
    prev_hash       bytea not null,
    hash            bytea not null unique
);

create index audit_events_image_idx on audit_events (image_id, seq);
create index audit_events_request_idx on audit_events (request_id, seq);
create index audit_events_share_idx on audit_events (share_id, seq);

-- Nobody rewrites history: not the application, not an operator by mistake.
create function refuse_audit_change() returns trigger language plpgsql as $$
begin
    raise exception 'audit_events is append-only: % refused', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

create trigger audit_events_no_update_delete
    before update or delete on audit_events
    for each row execute function refuse_audit_change();

create trigger audit_events_no_truncate
    before truncate on audit_events
    for each statement execute function refuse_audit_change();
