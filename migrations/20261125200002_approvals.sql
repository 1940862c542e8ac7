-- How a request is decided. The approval policy, applied once validation has the facts,
-- either decides by itself (`policy_rule` names the rule) or says how many distinct
-- approvers the request needs; each approval is kept, with who gave it and why.
alter table share_requests
    add column required_approvals smallint not null default 1 check (required_approvals between 1 and 2),
    add column policy_rule text;

create table approvals (
    request_id    uuid not null references share_requests (id),
    -- The principal that approved (an API key's name, or keystone:<user id>).
    approver      text not null,
    on_behalf_of  text,
    comment       text,
    approved_at   timestamptz not null default now(),
    primary key (request_id, approver)
);
