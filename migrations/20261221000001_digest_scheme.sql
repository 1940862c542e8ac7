-- Which canonical form an event's digest was taken over: 1, the broker's first (hand-written)
-- form, for every event written before this column; 2, RFC 8785 (JCS), for new events.
-- `audit verify` recomputes each event's digest under its own scheme, so older events stay
-- verifiable. A scheme 2 digest covers the scheme itself: changing it breaks the link.
alter table audit_events add column digest_scheme smallint not null default 1;
alter table audit_events add constraint audit_events_digest_scheme_known check (digest_scheme in (1, 2));
