-- Revokes that never give up, and know why they run.
--
-- revoke_cause says what the end of a revoke records: a person's or expiry's revoke ends
-- `revoked`; a rejection ends `revoked` with the rejection recorded as done; the clean-up
-- after a grant that failed once Glance may have created the member ends `failed`.
-- revoke_started_at and revoke_stalled_at: a revoke that keeps failing is reported stalled
-- (the `share.revoke_stalled` webhook, the gsb_revokes_stalled gauge) once, and stays
-- `revoking` and retried until the member is gone.
alter table shares
    add column revoke_cause text
        check (revoke_cause in ('requested', 'expiry', 'rejected', 'rejected_in_glance', 'failed_grant')),
    add column revoke_started_at timestamptz,
    add column revoke_stalled_at timestamptz,
    -- When the revoke last removed the member: it is looked for again a moment later, for
    -- Glance brings a removed member back when a status update that read it before the
    -- removal completes after it.
    add column member_removed_at timestamptz;

-- Revokes in progress when this runs started no later than now.
update shares set revoke_started_at = updated_at where state = 'revoking';
