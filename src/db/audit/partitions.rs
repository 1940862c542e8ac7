//! The log's partitions: one per calendar month (UTC) of `occurred_at`, the history from
//! before partitioning in the first one, and a default partition for any event no month
//! covers. `audit_partitions_ensure` (in the migrations) makes them ahead; the broker calls
//! it at start and every [`ENSURE_EVERY`], each replica, as its own role: the function is
//! all the DDL that role can reach.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// Months made ahead of the current one.
pub const MONTHS_AHEAD: i32 = 2;

/// How often each replica makes sure the coming months have their partitions: months ahead
/// of need, so a pass missed (a replica down, the lock busy) costs nothing.
pub const ENSURE_EVERY: Duration = Duration::from_secs(3600);

/// One partition of `audit_events` and the `occurred_at` it takes, `[from_at, to_at)`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Partition {
    /// Its name, quoted where SQL needs it.
    pub name: String,
    /// None: from the beginning of time (the first partition).
    pub from_at: Option<DateTime<Utc>>,
    /// None: to the end of time.
    pub to_at: Option<DateTime<Utc>>,
    /// The partition of every event no other one takes.
    pub is_default: bool,
}

/// Makes the partitions of this month and the next `months_ahead` that are missing, and
/// gives every partition the log's protections (`audit_partitions_ensure`); returns the
/// names of those made. Waits at most 2 s for the table's locks: a pass that cannot have
/// them fails, and the next one tries again.
pub async fn ensure(pool: &PgPool, months_ahead: i32) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("set local lock_timeout = '2s'").execute(&mut *tx).await?;
    let made: Vec<String> = sqlx::query_scalar("select * from audit_partitions_ensure($1)")
        .bind(months_ahead)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(made)
}

/// Every partition, oldest first, the default partition last.
pub async fn list(pool: &PgPool) -> Result<Vec<Partition>, sqlx::Error> {
    sqlx::query_as("select partition::text as name, from_at, to_at, is_default from audit_partitions()")
        .fetch_all(pool)
        .await
}
