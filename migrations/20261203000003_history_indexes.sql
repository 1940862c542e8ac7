-- History at scale (issue 15): the indexes the auditors' and callers' lists need once the log
-- holds tens of millions of events and the tables millions of requests and shares. Each list
-- is a page in a fixed order after a cursor (`db::conditions`: only the filters given are in
-- the statement), so each filter gets an index that reads its rows already in that order,
-- from the cursor on, and stops at the page's end. Measured in docs/benchmarks.md ("History
-- at scale").
--
-- Plain `create index`/`drop index if exists` on `audit_events`: they work on the table as
-- first created and on a table partitioned by time (an index on the parent is made on every
-- partition).

-- ---------------------------------------------------------------------------- audit log

-- Pages of the log are in chain order (`chain_pos`), and only sealed events are listed:
-- these hold sealed events only, so an event enters them once, when it is sealed, not also
-- when it is written. They replace the same indexes in `seq` order, which made every page
-- read all of the filter's events to sort them.
drop index if exists audit_events_image_idx;
drop index if exists audit_events_project_idx;
drop index if exists audit_events_owner_idx;
drop index if exists audit_events_actor_idx;

create index audit_events_image_pos_idx on audit_events (image_id, chain_pos)
    where chain_pos is not null;
-- A project is on one of four sides of an event (db::audit::read::PROJECT_SIDES): the
-- member project, the image's owner, the caller's own project, a target named when the
-- request was filed. A project's page reads each side in chain order and merges them.
create index audit_events_member_pos_idx on audit_events (project_id, chain_pos)
    where chain_pos is not null;
create index audit_events_owner_pos_idx on audit_events ((target ->> 'owner_project_id'), chain_pos)
    where chain_pos is not null;
create index audit_events_caller_project_pos_idx on audit_events ((initiator ->> 'project'), chain_pos)
    where chain_pos is not null;
-- Targets are a list: no order, but the events naming a project are found without reading
-- the others.
create index audit_events_targets_idx on audit_events using gin ((details -> 'targets'))
    where chain_pos is not null;
create index audit_events_actor_pos_idx on audit_events ((initiator ->> 'name'), chain_pos)
    where chain_pos is not null;
create index audit_events_action_pos_idx on audit_events (action, chain_pos)
    where chain_pos is not null;
-- A time range: its events, then the page of them in chain order.
create index audit_events_occurred_idx on audit_events (occurred_at)
    where chain_pos is not null;

-- ---------------------------------------------------------------------- requests, shares

-- Lists are newest first by id (UUIDv7, creation order), after the cursor. (The list by
-- status gets its `(status, id)` index from migration 20261203000005.)
drop index if exists share_requests_requested_by_idx;
create index share_requests_requested_by_id_idx on share_requests (requested_by, id);
create index share_requests_created_idx on share_requests (created_at);

drop index if exists shares_state_idx;
create index shares_state_id_idx on shares (state, id);
-- A project filter matches the resolved project or the target as filed: each side read
-- backwards from the cursor (db::shares::push_ids_for_project), for pages of shares (by id)
-- and of requests (by request id).
drop index if exists shares_project_idx;
create index shares_project_id_idx on shares (project_id, id);
create index shares_target_id_idx on shares (target, id);
create index shares_project_request_idx on shares (project_id, request_id);
create index shares_target_request_idx on shares (target, request_id);

-- Sealing's cost: the seal guard compares the row before and after column by column (not as
-- two JSON documents) since migration 20261203000001, which replaced it for partitions.
