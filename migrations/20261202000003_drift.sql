-- Drift: what the reconciler finds when it compares Glance with the broker, and the shares it
-- adopts (members people made by hand before the broker, for the owner projects configured).

-- A reconciliation is a job on one image (no share, no request): it runs alone on its image
-- like every job that talks to Glance about it (jobs_one_running_per_image_idx).
alter table jobs drop constraint jobs_kind_check;
alter table jobs add constraint jobs_kind_check check (kind in
    ('grant', 'poll', 'accept', 'reject', 'revoke', 'validate', 'reconcile'));
-- At most one reconciliation of an image queued or running: two sweeps (or two replicas, or a
-- sweep and POST /v1/reconcile) queue it once.
create unique index jobs_one_active_reconcile_idx on jobs (image_id)
    where kind = 'reconcile' and state in ('queued', 'running');

-- A share the broker did not make: found as a member in Glance and recorded as found (no
-- approver; `decided_by` stays null). Its request says so too.
alter table share_requests add column adopted boolean not null default false;
alter table shares add column adopted boolean not null default false;

-- One difference between Glance and the broker. Open while it is seen; resolved when a pass
-- no longer sees it (or the broker repaired it). db::drift and domain::drift.
create table drift_findings (
    id            uuid primary key,
    kind          text not null constraint drift_findings_kind_check check (kind in
                      ('unmanaged_member', 'member_missing', 'status_changed', 'image_missing',
                       'image_inactive', 'visibility_changed', 'protected_changed', 'project_missing')),
    image_id      uuid not null,
    region        text not null,
    -- The member project it is about; null for what is about the image itself.
    project_id    text,
    -- The broker's share it is about, when there is one.
    share_id      uuid references shares (id),
    -- What was expected and what Glance (or Keystone) showed, as the last pass saw it.
    details       jsonb not null default '{}',
    state         text not null default 'open'
                      constraint drift_findings_state_check check (state in ('open', 'resolved')),
    -- `repaired` when the broker put it right (enforcement), `not_seen` when a pass no longer
    -- saw it, `adopted` when the member was adopted.
    resolution    text constraint drift_findings_resolution_check
                      check (resolution in ('repaired', 'not_seen', 'adopted')),
    first_seen_at timestamptz not null default now(),
    last_seen_at  timestamptz not null default now(),
    resolved_at   timestamptz,
    constraint drift_findings_resolved_check check ((state = 'resolved') = (resolved_at is not null))
);

-- One open finding per image, project and kind: seeing it again moves `last_seen_at`.
create unique index drift_findings_one_open_idx on drift_findings (image_id, coalesce(project_id, ''), kind)
    where state = 'open';
create index drift_findings_image_idx on drift_findings (image_id);
create index drift_findings_project_idx on drift_findings (project_id);
create index drift_findings_open_idx on drift_findings (state) where state = 'open';
