-- The W3C trace context (`traceparent`, `tracestate`) of the span that queued a job: the API
-- call's server span, or the job that queued a follow-up. The worker's span for the job
-- continues that trace (a child of that span), so that one trace shows a call, the jobs it
-- queued and their calls to OpenStack. Taken, like `origin_request_id`, from settings of the
-- queuing transaction (`gsb.traceparent`, `gsb.tracestate`: db::jobs::carry_origin), so every
-- job queued in it, by any route, carries them. Null when tracing is off.
alter table jobs
    add column origin_traceparent text
        default nullif(current_setting('gsb.traceparent', true), '')
        constraint jobs_origin_traceparent_check
            check (origin_traceparent ~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'),
    add column origin_tracestate text
        default nullif(current_setting('gsb.tracestate', true), '')
        constraint jobs_origin_tracestate_check check (char_length(origin_tracestate) <= 512);
