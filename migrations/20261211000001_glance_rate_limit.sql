-- The outbound limit on Glance calls (GSB_GLANCE_RATE_LIMIT), shared by every worker replica:
-- one row per cloud and region. Each Glance call first reserves the next free time slot
-- with one short update; slots are spaced by 1/rate, so all replicas together never send
-- more than the rate, whatever their number.
create table rate_slots (
    -- The cloud (Keystone URL) and region the limit applies to.
    key       text primary key,
    -- The earliest time the next call may be sent.
    next_at   timestamptz not null,
    -- Slots handed out so far (calls made, or about to be).
    reserved  bigint not null default 0
);
