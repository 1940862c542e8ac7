//! Slots for outbound calls under a rate limit shared by every replica (GSB_GLANCE_RATE_LIMIT).
//! One row per cloud and region holds the earliest time the next call may go; reserving a
//! slot moves it on by one interval in a single statement, so reservations from any number
//! of replicas are serialized by the row lock and never overlap. Time is the database's, so
//! replicas' clocks need not agree: callers get back how long to wait, not when. A row idle
//! for a day is purged (`db::retention`): it holds nothing a new row would not.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// One reserved slot.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Slot {
    /// When the call may be sent (database time).
    pub at: DateTime<Utc>,
    /// How long the caller must wait from now until then.
    pub wait_secs: f64,
}

/// Reserves the slot under key `$1` for a rate of one call per `$2` seconds, only when it
/// comes within `$3` seconds (any time when `$3` is null), as the CTE `reserved` (`at`).
const RESERVE: &str = "with reserved as (
    insert into rate_slots as r (key, next_at, reserved)
    values ($1, clock_timestamp() + make_interval(secs => $2), 1)
    on conflict (key) do update
        set next_at = greatest(r.next_at, clock_timestamp()) + make_interval(secs => $2),
            reserved = r.reserved + 1
        where $3::float8 is null or r.next_at <= clock_timestamp() + make_interval(secs => $3)
    returning r.next_at - make_interval(secs => $2) as at)";

/// Reserves the next slot under `key` for a rate of one call per `interval`: now, when no
/// call is scheduled, else one interval after the last one reserved.
pub async fn reserve(db: impl PgExecutor<'_>, key: &str, interval: Duration) -> Result<Slot, sqlx::Error> {
    // No bound: the conditional update always applies (`null` `max_wait` makes it true).
    sqlx::query_as(&format!(
        "{RESERVE} select at, greatest(extract(epoch from at - clock_timestamp())::float8, 0) as wait_secs from reserved"
    ))
    .bind(key)
    .bind(interval.as_secs_f64())
    .bind(None::<f64>)
    .fetch_one(db)
    .await
}

/// Reserves the next slot under `key` like [`reserve`], but only when it comes within
/// `max_wait`; otherwise reserves nothing (so refused callers do not push the queue further
/// out) and says how long until a slot within `max_wait` is free.
pub async fn try_reserve(
    db: impl PgExecutor<'_>,
    key: &str,
    interval: Duration,
    max_wait: Duration,
) -> Result<Result<Slot, Duration>, sqlx::Error> {
    // The second branch reads the row as it was before the statement: it is there only when
    // the first reserved nothing.
    let row: Option<(DateTime<Utc>, f64, bool)> = sqlx::query_as(&format!(
        "{RESERVE} select at, greatest(extract(epoch from at - clock_timestamp())::float8, 0) as wait_secs, true
           from reserved
         union all
         select next_at, greatest(extract(epoch from next_at - clock_timestamp())::float8, 0), false
           from rate_slots where key = $1 and not exists (select 1 from reserved)"
    ))
    .bind(key)
    .bind(interval.as_secs_f64())
    .bind(max_wait.as_secs_f64())
    .fetch_optional(db)
    .await?;
    // No row at all: a concurrent statement created the row after this one's snapshot (so the
    // second branch cannot see it) and took its slot; the next is at least an interval away.
    let Some((at, wait_secs, granted)) = row else {
        return Ok(Err(interval));
    };
    Ok(if granted {
        Ok(Slot { at, wait_secs })
    } else {
        Err(Duration::from_secs_f64((wait_secs - max_wait.as_secs_f64()).max(0.0)))
    })
}

/// How many slots have been handed out under `key`.
pub async fn reserved(db: impl PgExecutor<'_>, key: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select coalesce((select reserved from rate_slots where key = $1), 0)")
        .bind(key)
        .fetch_one(db)
        .await
}
