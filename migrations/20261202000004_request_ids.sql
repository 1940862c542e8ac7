-- The id of the API call that queued a job (its X-OpenStack-Request-ID, or X-Request-Id):
-- the worker sends it to Keystone and Glance as the global request id and writes it as the
-- correlation id of the events it records because of that call. It is taken from the
-- transaction's `gsb.request_id` setting (db::jobs::carry_request_id), so that every job
-- queued in a call's transaction, by any route, carries that call's id.
alter table jobs add column origin_request_id text
    default nullif(current_setting('gsb.request_id', true), '')
    constraint jobs_origin_request_id_check check (char_length(origin_request_id) <= 128);
