-- What approvers and auditors read in the console (and the API): the approval policy's
-- verdict on each validated request, every check of the audit chain, and the index the
-- approvals inbox's first page reads.

-- The policy's verdict, recorded with `required_approvals` and `policy_rule` when validation
-- passes: `approve` and `deny` (a rule decided), `require_approval` (people decide:
-- `required_approvals` of them), `auto_accept_forbidden` (denied: the request asked for
-- auto_accept, which the policy does not allow). Null until validation has passed.
alter table share_requests add column policy_decision text
    constraint share_requests_policy_decision_check
    check (policy_decision in ('approve', 'deny', 'require_approval', 'auto_accept_forbidden'));

-- Requests validated before this column existed: their `update/validate` event holds the
-- verdict (`details.policy`, written in the same transaction). Not a change anyone made, so
-- `updated_at` is left as it was.
alter table share_requests disable trigger share_requests_set_updated_at;
update share_requests r
set policy_decision = case
        when e.details -> 'policy' ->> 'reason' = 'auto_accept_forbidden' then 'auto_accept_forbidden'
        else e.details -> 'policy' ->> 'decision'
    end
from audit_events e
where e.request_id = r.id
  and e.action = 'update/validate'
  and e.outcome = 'success'
  and e.details -> 'policy' ->> 'decision' in ('approve', 'deny', 'require_approval')
  and r.validation = 'passed';
alter table share_requests enable trigger share_requests_set_updated_at;

-- Each check of the audit chain (`audit verify`, `GET /v1/audit-events/verify`): when, by
-- whom, what it found. The last one is what `GET /v1/audit-chain` and the console show;
-- every replica reads the same rows (the verify metrics are each process's own). A row is
-- the checker's word, not a proof: whoever can write as the broker can add one, so the
-- console offers a fresh check next to it. Append-only, like the checkpoints.
create table audit_verifications (
    id             uuid primary key,
    verified_at    timestamptz not null default now(),
    verified_by    text not null,
    ok             boolean not null,
    events_checked bigint not null,
    -- The last event whose link held.
    head_pos       bigint,
    head_hash      bytea,
    checkpoints_checked bigint not null,
    unsealed_events bigint not null,
    -- The first thing found wrong, in a sentence; null when ok.
    problem        text,
    constraint audit_verifications_problem_when_not_ok check (ok = (problem is null))
);

create index audit_verifications_verified_at_idx on audit_verifications (verified_at desc, id desc);

create trigger audit_verifications_no_update_delete
    before update or delete on audit_verifications
    for each row execute function refuse_append_only_change();

create trigger audit_verifications_no_truncate
    before truncate on audit_verifications
    for each statement execute function refuse_append_only_change();

do $$
begin
    if exists (select 1 from pg_roles where rolname = 'gsb_app') then
        revoke update, delete, truncate on audit_verifications from gsb_app;
    end if;
end;
$$;

-- The approvals inbox's first page: the newest requests in one status (`status =
-- 'pending_approval' order by id desc limit 51`). On (status) alone Postgres reads every
-- pending request and sorts them (1.3 ms with 1,000 pending among 100,000, growing with the
-- pending ones); on (status, id) it reads the page's 51 entries backwards, however many
-- requests are pending or decided (benches/console_inbox.rs). It serves every lookup by
-- status alone too, so the index on status alone goes.
create index share_requests_status_id_idx on share_requests (status, id);
drop index share_requests_status_idx;
