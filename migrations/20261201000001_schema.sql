-- The broker's whole state. Postgres is also its only means of coordination: API and worker
-- replicas share these tables and nothing else.
--
-- Every column that holds a state or a status has a check listing exactly the values of its
-- Rust enum (src/domain/states.rs, src/db/jobs.rs, src/db/webhooks.rs); a value added there
-- needs a migration here.

-- ---------------------------------------------------------------------------- helpers

-- `updated_at` is kept by the database, the same way for every table that has one: any
-- update that changes the row stamps it. (`version`, which the ETag is derived from, is the
-- application's to bump: only a change a client must re-read moves it, not the worker's
-- bookkeeping.)
create function set_updated_at() returns trigger
language plpgsql as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

-- `select trigger_updated_at('<table>');` after a `create table` with an `updated_at`.
create function trigger_updated_at(tablename regclass) returns void
language plpgsql as $$
begin
    execute format('create trigger %s_set_updated_at before update on %s
                    for each row when (old is distinct from new) execute function set_updated_at()',
                   tablename, tablename);
end;
$$;

-- Whether a share in this state is undecided or in force. One definition for the unique
-- indexes on `shares` and for the queries that must agree with them.
create function share_is_live(state text) returns boolean
    language sql immutable parallel safe
    return state not in ('denied', 'cancelled', 'expired', 'failed', 'revoked', 'removed_outside',
                         'image_deleted', 'invalid');

-- ---------------------------------------------------------------------------- api keys

-- API keys for services (portals, approval workflows, auditors). Only the SHA-256 of a key
-- is stored; the key itself is shown once, at creation.
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

-- ---------------------------------------------------------------------- share requests

-- The ask: one image, one or more target projects, a reason, and a decision. Before anyone
-- decides, the worker validates it against Keystone and Glance and stores what it found
-- (`validation*`, `image_*`), so approvers decide on facts, not on what was typed.
create table share_requests (
    id                uuid primary key,
    image_id          uuid not null,
    -- Stored trimmed (the API also checks it against the cloud's catalog).
    region            text not null constraint share_requests_region_canonical
                          check (region <> '' and region = btrim(region)),
    reason            text not null,
    requested_by      text not null,
    -- `invalid`: validation failed; nothing of the request reaches Glance.
    status            text not null constraint share_requests_status_check check (status in
                          ('pending_approval', 'approved', 'denied', 'cancelled', 'expired', 'invalid')),
    expires_at        timestamptz,
    auto_accept       boolean not null default false,
    decided_by        text,
    decided_at        timestamptz,
    decision_comment  text,
    -- Bumped on every change a client must see; the ETag is derived from it.
    version           bigint not null default 1,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    -- pending: not checked yet (or Keystone/Glance did not answer); passed; failed.
    validation        text not null default 'pending'
                          constraint share_requests_validation_check
                          check (validation in ('pending', 'passed', 'failed')),
    validated_at      timestamptz,
    -- What failed, as [{"field", "reason"}].
    validation_errors jsonb not null default '[]',
    -- Why validation is still pending: Keystone or Glance did not answer (it is retried).
    validation_last_error text,
    -- The image as Glance described it at validation. `image_owner` is the project the
    -- request belongs to, for project scoping: set when the request is filed by a caller
    -- acting for projects (the broker checks Glance's `owner` then), else by validation.
    image_name        text,
    image_owner       text,
    image_owner_domain text,
    image_visibility  text,
    -- The end user a service's key filed it for (`X-On-Behalf-Of`).
    on_behalf_of      text,
    -- How it is decided: the approval policy, applied once validation has the facts, either
    -- decides by itself (`policy_rule` names the rule) or says how many distinct approvers
    -- it needs.
    required_approvals smallint not null default 1
                          constraint share_requests_required_approvals_check
                          check (required_approvals between 1 and 2),
    policy_rule       text,
    -- Separation of duties compares subjects, never names: a Keystone user id (its own token,
    -- or a key acting for it through X-On-Behalf-Of, resolved through Keystone), or
    -- `key:<name>` for a key acting for nobody.
    requested_by_subject text not null,
    -- Which domains the requester may see, for resolving target names: the token's domain
    -- for a Keystone user, the domains of its projects for a restricted key, null (the whole
    -- cloud) otherwise. A name outside them resolves to nothing, so a request never confirms
    -- that another tenant's project exists.
    target_domains    text[]
);

select trigger_updated_at('share_requests');

create index share_requests_image_idx on share_requests (image_id);
create index share_requests_requested_by_idx on share_requests (requested_by);
create index share_requests_status_idx on share_requests (status);
create index share_requests_image_owner_idx on share_requests (image_owner);

-- Each approval of a request, with who gave it and why. One per subject, enforced here: two
-- approvals by one person (its own token, then a key acting for it) cannot both be
-- inserted, even at the same moment. One key acting for two people gives two approvals.
create table approvals (
    request_id       uuid not null references share_requests (id),
    -- The principal that approved (an API key's name, or keystone:<user id>).
    approver         text not null,
    on_behalf_of     text,
    comment          text,
    approved_at      timestamptz not null default now(),
    approver_subject text not null,
    primary key (request_id, approver_subject)
);

-- -------------------------------------------------------------------------------- shares

-- One image granted to one project. `target` is what the requester wrote (an id or a name);
-- `project_id` is the Keystone id once known, `project_name`/`project_domain` what it
-- resolved to.
create table shares (
    id                uuid primary key,
    request_id        uuid not null references share_requests (id),
    image_id          uuid not null,
    region            text not null constraint shares_region_canonical
                          check (region <> '' and region = btrim(region)),
    target            text not null,
    project_id        text,
    state             text not null constraint shares_state_check check (state in
                          ('awaiting_approval', 'queued', 'granting', 'pending_acceptance', 'accepted',
                           'rejected', 'revoking', 'revoked', 'denied', 'cancelled', 'expired', 'failed',
                           'removed_outside', 'image_deleted', 'invalid')),
    last_error        text,
    -- The broker PATCHed the image from private to shared to grant this share; the last
    -- revoke puts it back.
    made_image_shared boolean not null default false,
    granted_at        timestamptz,
    revoked_by        text,
    revoke_reason     text,
    version           bigint not null default 1,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    project_name      text,
    project_domain    text,
    -- Learned from Glance when the share is granted; every later event about it names them.
    image_name        text,
    image_owner       text,
    -- What the end of a revoke records: a person's or expiry's revoke ends `revoked`; a
    -- rejection ends `revoked` with the rejection recorded as done; the clean-up after a
    -- grant that failed once Glance may have created the member ends `failed`.
    revoke_cause      text constraint shares_revoke_cause_check check (revoke_cause in
                          ('requested', 'expiry', 'rejected', 'rejected_in_glance', 'failed_grant')),
    -- A revoke that keeps failing is reported stalled (the `share.revoke_stalled` webhook,
    -- the gsb_revokes_stalled gauge) once, and stays `revoking` and retried until the
    -- member is gone.
    revoke_started_at timestamptz,
    revoke_stalled_at timestamptz,
    -- When the revoke last removed the member: it is looked for again a moment later, for
    -- Glance brings a removed member back when a status update that read it before the
    -- removal completes after it.
    member_removed_at timestamptz,
    unique (request_id, target)
);

select trigger_updated_at('shares');

create index shares_request_idx on shares (request_id);
create index shares_image_idx on shares (image_id);
create index shares_project_idx on shares (project_id);
create index shares_state_idx on shares (state);

-- At most one live share of an image to a project: a second request for the same grant is
-- refused while the first is undecided or in force; finished shares do not count. Once by
-- what was written, once by the resolved project (a project named in one request and given
-- by id in another is still one grant). The region is compared without regard to case:
-- Keystone region ids that differ only in case are one region on the usual
-- (case-insensitive) Keystone databases. db::share_requests::ONE_LIVE_GRANT names them.
create unique index shares_one_live_grant_idx on shares (image_id, lower(region), target)
    where share_is_live(state);
create unique index shares_one_live_project_idx on shares (image_id, lower(region), project_id)
    where project_id is not null and share_is_live(state);

-- ------------------------------------------------------------------------- idempotency

-- Idempotency-Key: the first successful response to a key is kept and replayed. Written in
-- the same transaction as the work the request did.
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

-- ---------------------------------------------------------------------------------- jobs

-- Work for the background worker. A job is claimed (lease token and expiry) and committed
-- before any call to OpenStack; finished jobs are kept as history until the retention purge.
-- A validation job belongs to a request, every other kind to a share.
create table jobs (
    id                uuid primary key,
    kind              text not null constraint jobs_kind_check check (kind in
                          ('grant', 'poll', 'accept', 'reject', 'revoke', 'validate')),
    request_id        uuid references share_requests (id),
    share_id          uuid references shares (id),
    -- The image the job writes to: jobs on one image run one at a time, across replicas.
    image_id          uuid,
    state             text not null default 'queued'
                          constraint jobs_state_check check (state in ('queued', 'running', 'done', 'failed')),
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
create unique index jobs_one_running_per_image_idx on jobs (image_id) where state = 'running';
-- Claims take the first due job of an image (db::jobs::claim), so that workers claiming at
-- the same moment go to different images; this answers "is there an earlier due job on
-- this image?" for each candidate.
create index jobs_queued_image_idx on jobs (image_id, run_at, id) where state = 'queued';
create index jobs_request_idx on jobs (request_id) where request_id is not null;
-- The retention purge deletes finished jobs oldest first.
create index jobs_finished_idx on jobs (finished_at) where state in ('done', 'failed');

-- The outbound limit on Glance calls (GSB_GLANCE_RATE_LIMIT), shared by every worker
-- replica: one row per cloud and region. Each Glance call first reserves the next free time
-- slot with one short update; slots are spaced by 1/rate, so all replicas together never
-- send more than the rate, whatever their number.
create table rate_slots (
    -- The cloud (Keystone URL) and region the limit applies to.
    key       text primary key,
    -- The earliest time the next call may be sent.
    next_at   timestamptz not null,
    -- Slots handed out so far (calls made, or about to be).
    reserved  bigint not null default 0
);

-- ------------------------------------------------------------------------------ webhooks

-- Endpoints admins register, and the deliveries queued for them. A delivery is queued in the
-- same transaction as the audit event it announces, and is its own small job (claimed under
-- a lease, retried with backoff) outside the share jobs: a slow or failing receiver never
-- holds an image or a worker slot a share needs.
create table webhooks (
    id           uuid primary key,
    url          text not null,
    -- Events it wants; empty means every event.
    events       text[] not null default '{}',
    description  text,
    -- Signs each delivery (HMAC-SHA256). Shown once, at creation; never returned or logged.
    secret       text not null,
    active       boolean not null default true,
    created_by   text not null,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);

select trigger_updated_at('webhooks');

create table webhook_deliveries (
    id                uuid primary key,
    webhook_id        uuid not null references webhooks (id) on delete cascade,
    event             text not null,
    -- The audit event announced, and the place of this event among those it announces:
    -- deliveries to one endpoint go out in this order.
    audit_seq         bigint not null,
    position          smallint not null default 0,
    payload           jsonb not null,
    state             text not null default 'queued'
                          constraint webhook_deliveries_state_check
                          check (state in ('queued', 'running', 'delivered', 'failed')),
    run_at            timestamptz not null default now(),
    attempts          integer not null default 0,
    lease_token       uuid,
    lease_expires_at  timestamptz,
    -- The receiver's last HTTP status, or why there was none.
    last_status       smallint,
    last_error        text,
    created_at        timestamptz not null default now(),
    delivered_at      timestamptz
);

create index webhook_deliveries_due_idx on webhook_deliveries (run_at) where state in ('queued', 'running');
create index webhook_deliveries_order_idx on webhook_deliveries (webhook_id, audit_seq, position);
-- The retention purge deletes settled deliveries oldest first.
create index webhook_deliveries_settled_idx on webhook_deliveries (coalesce(delivered_at, run_at))
    where state in ('delivered', 'failed');
