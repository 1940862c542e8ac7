-- The deletion guard and image fitness (issue 12, items 3 and 5).

-- ---------------------------------------------------------------------- image guards

-- While an image has a live share, the broker keeps Glance's `protected` flag on, so that
-- its owner cannot delete it by accident (Glance answers 403 to the delete). One row per image
-- and region the broker guards: it exists from just before the broker first sets the flag
-- until the broker has put back the value it found, after the last share ended. Written and
-- deleted only by the worker, under the lease of a job on the image (jobs on one image run
-- one at a time).
--
-- For the drift pass: an image with a row whose `protected_at` is set is expected to be
-- `protected: true` in Glance; one found unprotected was changed outside the broker
-- (`protected_changed`). `unprotected_outside_at` says when the worker itself saw that (it
-- does not set the flag again: the owner's choice stands until someone repairs it).
create table image_guards (
    image_id               uuid not null,
    region                 text not null,
    -- Glance's `protected` as the broker found it before it first set it: the value put
    -- back after the last share. `true`: the owner had protected it already; it stays so.
    found_protected        boolean not null,
    -- When Glance was seen protected under the guard (set by the broker, or already true);
    -- null while the broker is about to set it (remembered first, so a crash right after the
    -- change does not lose the value found).
    protected_at           timestamptz,
    -- When the worker saw the image unprotected while it guarded it (changed outside).
    unprotected_outside_at timestamptz,
    created_at             timestamptz not null default now(),
    primary key (image_id, region)
);

-- ---------------------------------------------------------------------- validation warnings

-- What validation found legal but risky (`validation.warnings`): a JSON array of
-- `{ "code", "message" }`, shown to approvers; never a reason to refuse.
alter table share_requests add column validation_warnings jsonb not null default '[]';
