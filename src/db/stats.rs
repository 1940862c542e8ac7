//! What the database says about the broker's health, read at each `/metrics` scrape: shares
//! by state, due jobs and the oldest one's wait, pending webhook deliveries, the audit
//! chain's unsealed backlog and head. Each is one aggregate over an indexed condition.

use sqlx::PgPool;
use strum::VariantArray;

use crate::domain::ShareState;

/// The figures, with a row for every share state and job kind (zero when none).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub shares: Vec<(&'static str, i64)>,
    /// Every kind the `jobs_kind_check` constraint allows that has a due job, and the
    /// share job kinds and `validate` always.
    pub jobs_due: Vec<(String, i64)>,
    pub oldest_due_job_secs: f64,
    pub deliveries_pending: i64,
    pub oldest_pending_delivery_secs: f64,
    pub unsealed_events: i64,
    pub chain_head: i64,
}

pub async fn read(pool: &PgPool) -> Result<Stats, sqlx::Error> {
    let shares: Vec<(String, i64)> = sqlx::query_as("select state, count(*) from shares group by state")
        .fetch_all(pool)
        .await?;
    let jobs: Vec<(String, i64)> = sqlx::query_as(
        "select kind, count(*) from jobs
         where (state = 'queued' and run_at <= now()) or (state = 'running' and lease_expires_at < now())
         group by kind",
    )
    .fetch_all(pool)
    .await?;
    let (oldest_due_job_secs,): (f64,) = sqlx::query_as(
        "select coalesce(extract(epoch from now() - min(run_at))::float8, 0) from jobs
         where state = 'queued' and run_at <= now()",
    )
    .fetch_one(pool)
    .await?;
    let (deliveries_pending, oldest_pending_delivery_secs): (i64, f64) = sqlx::query_as(
        "select count(*), coalesce(extract(epoch from now() - min(created_at))::float8, 0)
         from webhook_deliveries where state in ('queued', 'running')",
    )
    .fetch_one(pool)
    .await?;
    let (unsealed_events, chain_head): (i64, i64) = sqlx::query_as(
        "select (select count(*) from audit_events where chain_pos is null),
                coalesce((select max(chain_pos) from audit_events),
                         (select max(last_chain_pos) from audit_archives), 0)",
    )
    .fetch_one(pool)
    .await?;
    let count_of = |rows: &[(String, i64)], name: &str| rows.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c);
    Ok(Stats {
        shares: ShareState::VARIANTS
            .iter()
            .map(|s| (s.into(), count_of(&shares, s.as_ref())))
            .collect(),
        jobs_due: {
            let mut due: Vec<(String, i64)> = ["grant", "poll", "accept", "reject", "revoke", "validate", "reconcile"]
                .iter()
                .map(|k| (k.to_string(), count_of(&jobs, k)))
                .collect();
            due.extend(
                jobs.into_iter()
                    .filter(|(k, _)| !due.iter().any(|(d, _)| d == k))
                    .collect::<Vec<_>>(),
            );
            due
        },
        oldest_due_job_secs,
        deliveries_pending,
        oldest_pending_delivery_secs,
        unsealed_events,
        chain_head,
    })
}
