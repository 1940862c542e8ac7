-- Separation of duties compares subjects, never names. A subject is one person or one key:
-- a Keystone user id (whether the user called with its own token or a service's key acted
-- for it through X-On-Behalf-Of, resolved through Keystone), or `key:<name>` for a key acting
-- for nobody. Rows written before subjects existed get theirs from what they recorded: a
-- Keystone principal `keystone:<user id>` gives the id; a key gives `key:<name>`; a free-text
-- X-On-Behalf-Of gives `unresolved:<text>`, which matches nobody (so such a request cannot
-- be approved by anyone claiming to be someone else, nor by a second "distinct" approver
-- who is the first under another spelling).

alter table share_requests add column requested_by_subject text;
update share_requests set requested_by_subject = case
    when on_behalf_of is not null then 'unresolved:' || on_behalf_of
    when requested_by like 'keystone:%' then substr(requested_by, length('keystone:') + 1)
    else 'key:' || requested_by
end;
alter table share_requests alter column requested_by_subject set not null;

-- Which domains the requester may see, for resolving target names: the token's domain for a
-- Keystone user, the domains of its projects for a restricted key, null (the whole cloud)
-- for an unrestricted key or a cloud-wide principal. A name outside them resolves to nothing,
-- so a request never confirms that another tenant's project exists.
alter table share_requests add column target_domains text[];

alter table approvals add column approver_subject text;
update approvals set approver_subject = case
    when on_behalf_of is not null then 'unresolved:' || on_behalf_of || ' via ' || approver
    when approver like 'keystone:%' then substr(approver, length('keystone:') + 1)
    else 'key:' || approver
end;
alter table approvals alter column approver_subject set not null;
-- One approval per person, enforced by the database: two approvals by one subject (its own
-- token, then a key acting for it) cannot both be inserted, even at the same moment. One key
-- acting for two different people gives two approvals.
alter table approvals drop constraint approvals_pkey;
alter table approvals add primary key (request_id, approver_subject);
