-- History at scale (issue 15), measured on ten million events and a million requests
-- (docs/benchmarks.md, "History at scale"): the indexes two lists need to read a page
-- without reading everything their filter matches.

-- A time range's page of the log takes its places from the index alone: every entry of the
-- range (a day: some 9,000), the first of them in chain order, and then only the page's
-- events (db::audit::read). With `occurred_at` alone, every event of the range was read to
-- sort them (30 ms a day).
drop index if exists audit_events_occurred_idx;
create index audit_events_occurred_pos_idx on audit_events (occurred_at, chain_pos)
    where chain_pos is not null;

-- Requests filed within a time range, newest first: the range's ids from the index alone,
-- then the page (db::share_requests::list). Walking the primary key backwards until the
-- range was reached read every newer request (1.4 s for a week two years back).
drop index if exists share_requests_created_idx;
create index share_requests_created_id_idx on share_requests (created_at, id);
