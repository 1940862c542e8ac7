//! The metrics the broker exports on `/metrics`: every family described (`# HELP`, `# TYPE`)
//! in [`describe`], every label bounded (an enum's names, a status class, a route template).
//! Recorders for what the worker and the OpenStack client measure live here too, so that the
//! names are written once; `db::stats` reads the gauges taken from the database at each scrape.

use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

use crate::db::stats::Stats;

/// Histogram buckets (seconds) of the calls to Keystone and Glance and of the HTTP API.
pub const CALL_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets (seconds) of what takes from seconds to hours: a grant after its approval, a
/// webhook delivery after its event.
pub const LAG_BUCKETS: [f64; 12] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0];

/// Describes every family, once, to the installed recorder.
pub fn describe() {
    describe_counter!(
        "http_requests_total",
        "API requests, by method (known methods, else `other`), route template and status."
    );
    describe_histogram!(
        "http_request_duration_seconds",
        Unit::Seconds,
        "API request latency, by method, route template and status."
    );
    describe_gauge!(
        "db_pool_connections",
        "Database pool connections of this process, by state (idle, in_use)."
    );
    describe_gauge!("db_pool_max_connections", "The database pool's maximum size.");
    describe_gauge!(
        "gsb_shares",
        "Shares by state (the whole database, read at each scrape)."
    );
    describe_gauge!(
        "gsb_jobs_due",
        "Worker jobs due now (queued or with a lapsed lease), by kind."
    );
    describe_gauge!(
        "gsb_jobs_oldest_due_age_seconds",
        Unit::Seconds,
        "How long the oldest due job has waited: a stuck or missing worker makes it grow."
    );
    describe_gauge!(
        "gsb_webhook_deliveries_pending",
        "Webhook deliveries not yet delivered nor given up."
    );
    describe_gauge!(
        "gsb_webhook_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest pending webhook delivery."
    );
    describe_gauge!(
        "gsb_audit_unsealed_events",
        "Audit events committed but not yet sealed into the chain."
    );
    describe_gauge!(
        "gsb_audit_chain_head_position",
        "The place of the newest sealed audit event in the chain."
    );
    describe_gauge!(
        "gsb_audit_verify_ok",
        "1 when the last audit chain verify in this process found the chain intact, 0 when not."
    );
    describe_gauge!(
        "gsb_audit_verify_last_run_timestamp_seconds",
        Unit::Seconds,
        "When this process last verified the audit chain (Unix time)."
    );
    describe_histogram!(
        "gsb_grant_latency_seconds",
        Unit::Seconds,
        "From a request's approval to its member added in Glance."
    );
    describe_histogram!(
        "gsb_openstack_request_duration_seconds",
        Unit::Seconds,
        "Calls to OpenStack, by service, method and outcome (2xx..5xx, timeout, connect, transport)."
    );
    describe_counter!(
        "gsb_openstack_request_errors_total",
        "Failed calls to OpenStack, by service and class (timeout, connect, transport, throttled, server, client)."
    );
    describe_counter!(
        "gsb_webhook_deliveries_total",
        "Webhook delivery attempts, by result (delivered, failed)."
    );
    describe_counter!(
        "gsb_webhook_delivery_failures_total",
        "Failed webhook delivery attempts, by reason (client, server, timeout, connect, forbidden_address, transport)."
    );
    describe_histogram!(
        "gsb_webhook_delivery_lag_seconds",
        Unit::Seconds,
        "From an event to its webhook delivered."
    );
    describe_counter!(
        "gsb_fenced_writes_total",
        "Writes to Glance stopped because the job's lease was lost."
    );
    describe_counter!(
        "gsb_members_back_after_removal_total",
        "Members found in Glance again after the broker removed them."
    );
    describe_counter!(
        "gsb_outcomes_discarded_total",
        "Job outcomes discarded because the share moved on meanwhile (a lost race)."
    );
    describe_counter!(
        "gsb_revoke_stalls_total",
        "Revokes that kept failing past the stall limit."
    );
    describe_gauge!("gsb_revokes_stalled", "Shares whose revoke is stalled now.");
    describe_counter!(
        "gsb_worker_panics_total",
        "Panics caught in a background loop, by loop."
    );
    describe_counter!(
        "gsb_guards_unprotected_outside_total",
        "Images the deletion guard protects found unprotected outside the broker."
    );
    describe_counter!("gsb_drift_findings_total", "Drift findings opened, by kind.");
    describe_counter!("gsb_drift_repairs_total", "Drift repaired under enforcement, by kind.");
    describe_counter!(
        "gsb_shares_adopted_total",
        "Members made outside the broker adopted as shares."
    );
    describe_counter!(
        "gsb_db_failovers_total",
        "Times the database pool moved to a new primary."
    );
    describe_gauge!(
        "gsb_db_primary_available",
        "1 while a database host takes writes, 0 while none does (multi-host DATABASE_URL only)."
    );
    // Counters that alerts watch exist from the start, at zero: a rule on a series that
    // appears only with its first failure could not tell "none yet" from "not scraped".
    for result in ["delivered", "failed"] {
        metrics::counter!("gsb_webhook_deliveries_total", "result" => result).increment(0);
    }
    for reason in WEBHOOK_FAILURES {
        metrics::counter!("gsb_webhook_delivery_failures_total", "reason" => reason).increment(0);
    }
    for service in ["keystone", "glance", "nova", "cinder"] {
        for class in OPENSTACK_ERRORS {
            metrics::counter!("gsb_openstack_request_errors_total", "service" => service, "class" => class)
                .increment(0);
        }
    }
    metrics::counter!("gsb_revoke_stalls_total").increment(0);
    metrics::counter!("gsb_fenced_writes_total").increment(0);
}

/// The `reason` label of failed webhook deliveries.
const WEBHOOK_FAILURES: [&str; 6] = [
    "client",
    "server",
    "timeout",
    "connect",
    "forbidden_address",
    "transport",
];
/// The `class` label of failed calls to OpenStack.
const OPENSTACK_ERRORS: [&str; 6] = ["timeout", "connect", "transport", "throttled", "server", "client"];

/// Sets the gauges read from the database.
pub fn record_stats(stats: &Stats) {
    for (state, count) in &stats.shares {
        metrics::gauge!("gsb_shares", "state" => *state).set(*count as f64);
    }
    for (kind, count) in &stats.jobs_due {
        metrics::gauge!("gsb_jobs_due", "kind" => kind.clone()).set(*count as f64);
    }
    metrics::gauge!("gsb_jobs_oldest_due_age_seconds").set(stats.oldest_due_job_secs);
    metrics::gauge!("gsb_webhook_deliveries_pending").set(stats.deliveries_pending as f64);
    metrics::gauge!("gsb_webhook_oldest_pending_age_seconds").set(stats.oldest_pending_delivery_secs);
    metrics::gauge!("gsb_audit_unsealed_events").set(stats.unsealed_events as f64);
    metrics::gauge!("gsb_audit_chain_head_position").set(stats.chain_head as f64);
}

/// The result of an audit chain verify.
pub fn verified(ok: bool) {
    metrics::gauge!("gsb_audit_verify_ok").set(if ok { 1.0 } else { 0.0 });
    let now = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    metrics::gauge!("gsb_audit_verify_last_run_timestamp_seconds").set(now);
}

/// One call to OpenStack: `status` its answer's, or `None` with `failure` the transport's.
pub fn openstack_call(
    service: &'static str,
    method: &str,
    elapsed: Duration,
    status: Option<u16>,
    failure: Option<&reqwest::Error>,
) {
    let method = match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        _ => "other",
    };
    let outcome = match (status, failure) {
        (Some(s), _) => status_class(s),
        (None, Some(e)) if e.is_timeout() => "timeout",
        (None, Some(e)) if e.is_connect() => "connect",
        (None, _) => "transport",
    };
    metrics::histogram!("gsb_openstack_request_duration_seconds", "service" => service, "method" => method, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
    let class = match (status, outcome) {
        (Some(429), _) => "throttled",
        (Some(s), _) if s >= 500 => "server",
        // 404 answers "no such thing", which callers expect; 401 is retried once.
        (Some(s), _) if s >= 400 && s != 404 && s != 401 => "client",
        (Some(_), _) => return,
        (None, other) => other,
    };
    metrics::counter!("gsb_openstack_request_errors_total", "service" => service, "class" => class).increment(1);
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A share's member added in Glance, `since` its request's approval.
pub fn granted(since: Duration) {
    metrics::histogram!("gsb_grant_latency_seconds").record(since.as_secs_f64());
}

/// A webhook delivery attempt: delivered `lag` after its event, or failed for `reason`
/// (one of the names [`describe`] lists).
pub fn webhook_delivery(result: Result<Duration, &'static str>) {
    match result {
        Ok(lag) => {
            metrics::counter!("gsb_webhook_deliveries_total", "result" => "delivered").increment(1);
            metrics::histogram!("gsb_webhook_delivery_lag_seconds").record(lag.as_secs_f64());
        }
        Err(reason) => {
            metrics::counter!("gsb_webhook_deliveries_total", "result" => "failed").increment(1);
            metrics::counter!("gsb_webhook_delivery_failures_total", "reason" => reason).increment(1);
        }
    }
}
