-- Validation: before anyone decides on a request, the worker checks it against Keystone and
-- Glance and stores what it found, so approvers decide on facts, not on what was typed.

alter table share_requests
    -- pending: not checked yet (or Keystone/Glance did not answer); passed; failed.
    add column validation        text not null default 'pending'
        check (validation in ('pending', 'passed', 'failed')),
    add column validated_at      timestamptz,
    -- What failed, as [{"field", "reason"}].
    add column validation_errors jsonb not null default '[]',
    -- Why validation is still pending: Keystone or Glance did not answer (it is retried).
    add column validation_last_error text,
    -- The image as Glance described it at validation.
    add column image_name        text,
    add column image_owner       text,
    add column image_owner_domain text,
    add column image_visibility  text;

-- A request that failed validation ends as `invalid`; nothing of it reaches Glance.
alter table share_requests drop constraint share_requests_status_check;
alter table share_requests add constraint share_requests_status_check check (status in
    ('pending_approval', 'approved', 'denied', 'cancelled', 'expired', 'invalid'));

-- The project a target resolved to.
alter table shares
    add column project_name   text,
    add column project_domain text;

-- Whether a share in this state is undecided or in force. One definition for the indexes
-- below and for the queries that must agree with them.
create function share_is_live(state text) returns boolean
    language sql immutable parallel safe
    return state not in ('denied', 'cancelled', 'expired', 'failed', 'revoked', 'removed_outside',
                         'image_deleted', 'invalid');

drop index shares_one_live_grant_idx;
create unique index shares_one_live_grant_idx on shares (image_id, region, target)
    where share_is_live(state);
-- The same once names are resolved: a project named in one request and given by id in
-- another is still one grant.
create unique index shares_one_live_project_idx on shares (image_id, region, project_id)
    where project_id is not null and share_is_live(state);

-- Validation jobs belong to a request, not a share.
create index jobs_request_idx on jobs (request_id) where request_id is not null;
