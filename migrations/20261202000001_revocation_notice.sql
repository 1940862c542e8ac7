-- Revocation that breaks nobody by surprise (issue 12, items 1 and 2): a revoke can be
-- scheduled for a later time (the share stays in force, `revocation_scheduled`, until then),
-- an expiry is announced ahead of time once, and every revoke records what in the consumer
-- project depended on the image when it was carried out.

-- A scheduled revoke keeps the member (and the consumer's access) until it is due.
alter table shares drop constraint shares_state_check;
alter table shares add constraint shares_state_check check (state in
    ('awaiting_approval', 'queued', 'granting', 'pending_acceptance', 'accepted',
     'rejected', 'revocation_scheduled', 'revoking', 'revoked', 'denied', 'cancelled', 'expired',
     'failed', 'removed_outside', 'image_deleted', 'invalid'));

-- A scheduled revoke that came due is carried out with the cause `scheduled`.
alter table shares drop constraint shares_revoke_cause_check;
alter table shares add constraint shares_revoke_cause_check check (revoke_cause in
    ('requested', 'scheduled', 'expiry', 'rejected', 'rejected_in_glance', 'failed_grant'));

-- Live: undecided or in force. A share whose revoke is scheduled is in force until then
-- (the same list as before: `revocation_scheduled` is live, named here so nobody has to
-- work that out from what the list leaves out).
create or replace function share_is_live(state text) returns boolean
    language sql immutable parallel safe
    return state not in ('denied', 'cancelled', 'expired', 'failed', 'revoked', 'removed_outside',
                         'image_deleted', 'invalid')
           or state = 'revocation_scheduled';

alter table shares
    -- When a scheduled revoke is due, and the state it was scheduled from (a cancelled
    -- schedule puts the share back there).
    add column revoke_effective_at   timestamptz,
    add column revoke_scheduled_from text constraint shares_revoke_scheduled_from_check
        check (revoke_scheduled_from in ('pending_acceptance', 'accepted')),
    -- When the `share.expiring` notice was recorded: once per share, whatever the replicas.
    add column expiry_noticed_at     timestamptz,
    -- What depended on the image in the consumer project when the revoke was started or
    -- carried out (`{"dependents": [...], "unchecked": [...]}`); the end of the revoke
    -- records it in its audit event.
    add column revoke_dependents     jsonb,
    add constraint shares_scheduled_has_time check
        (state <> 'revocation_scheduled' or (revoke_effective_at is not null and revoke_scheduled_from is not null));

-- The sweep finds the scheduled revokes that came due.
create index shares_revoke_due_idx on shares (revoke_effective_at) where state = 'revocation_scheduled';
