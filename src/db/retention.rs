//! Forgetting what is no longer needed, so that tables grow with the work in hand and not
//! with time: finished jobs, settled webhook deliveries, expired idempotency keys and rate
//! slots nobody has used for a day. Deleted in small batches (each its own short statement,
//! skipping rows others have locked), so a purge never holds many locks or a long
//! transaction. Never touches the audit tables, share requests or shares: they are history.

use sqlx::PgPool;

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Finished (done or failed) jobs, after they finished.
    pub jobs_days: u32,
    /// Delivered or failed webhook deliveries, after their last try.
    pub deliveries_days: u32,
    /// Idempotency keys, after they were saved (their replay window).
    pub idempotency_hours: u32,
}

/// Rows deleted by one statement.
const BATCH: i64 = 1000;

/// How many rows of each kind one purge deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub jobs: u64,
    pub deliveries: u64,
    pub idempotency_keys: u64,
    pub rate_slots: u64,
}

impl Purged {
    pub fn total(&self) -> u64 {
        self.jobs + self.deliveries + self.idempotency_keys + self.rate_slots
    }
}

/// Deletes every row past its time, batch after batch.
pub async fn purge(pool: &PgPool, keep: Retention) -> Result<Purged, sqlx::Error> {
    Ok(Purged {
        jobs: in_batches(
            pool,
            "delete from jobs where id in (
                select id from jobs
                where state in ('done', 'failed') and finished_at < now() - make_interval(days => $1::int)
                order by finished_at limit $2 for update skip locked)",
            i64::from(keep.jobs_days),
        )
        .await?,
        deliveries: in_batches(
            pool,
            "delete from webhook_deliveries where id in (
                select id from webhook_deliveries
                where state in ('delivered', 'failed')
                  and coalesce(delivered_at, run_at) < now() - make_interval(days => $1::int)
                order by coalesce(delivered_at, run_at) limit $2 for update skip locked)",
            i64::from(keep.deliveries_days),
        )
        .await?,
        idempotency_keys: in_batches(
            pool,
            "delete from idempotency_keys where (principal, key) in (
                select principal, key from idempotency_keys
                where created_at < now() - make_interval(hours => $1::int)
                order by created_at limit $2 for update skip locked)",
            i64::from(keep.idempotency_hours),
        )
        .await?,
        // A slot row only says when the next call may go; once that is a day past, a new
        // row would say the same.
        rate_slots: in_batches(
            pool,
            "delete from rate_slots where key in (
                select key from rate_slots where next_at < now() - make_interval(days => $1::int)
                limit $2 for update skip locked)",
            1,
        )
        .await?,
    })
}

/// Runs `delete` (which takes the age as $1 and the batch size as $2) until a batch comes
/// back short; the rows deleted.
async fn in_batches(pool: &PgPool, delete: &'static str, age: i64) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(delete)
            .bind(age)
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
    }
}
