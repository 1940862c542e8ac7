//! Everything the broker keeps in Postgres: one module per table family.
//! Queries are checked at run time (`query_as`), so building needs no database.
//! Imports `domain`; never `http`, `worker` or `openstack`.

pub mod api_keys;
pub mod audit;
pub mod conditions;
pub mod console_sessions;
pub mod drift;
pub mod failover;
pub mod idempotency;
pub mod image_guards;
pub mod jobs;
pub mod rate_slots;
pub mod retention;
pub mod share_requests;
pub mod shares;
pub mod stats;
pub mod webhooks;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgPool};

use self::failover::Moved;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// A connection used this recently is handed out without a ping first.
const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// A pool that fails fast when Postgres is away, so callers answer 503 instead of hanging.
///
/// sqlx pings every idle connection before handing it out: a round trip per acquire, and a
/// request acquires more than once. Only connections idle for longer than [`TRUSTED_IDLE`]
/// are pinged (the pattern sqlx documents for `before_acquire`; HikariCP's
/// `aliveBypassWindowMs` does the same), so one left broken by a Postgres restart is still
/// found before use, and a busy pool pays nothing.
pub fn pool(options: PgConnectOptions, max_connections: u32) -> PgPool {
    pool_following(options, max_connections, Moved::default())
}

/// [`pool`], whose connections opened before the pool `moved` to another host (a failover:
/// [`failover::Follower`]) are dropped instead of handed out.
///
/// Each connection turns off Postgres's JIT compilation (`jit`, on by default since
/// Postgres 12) for its session: the broker's statements are short index reads, but once
/// the tables hold millions of rows (the audit log's partitions, above all) their estimated
/// cost passes `jit_above_cost`, and compiling a statement's expressions took 100-350 ms
/// for a page that reads in 5 ms (docs/benchmarks.md, "History at scale").
pub fn pool_following(options: PgConnectOptions, max_connections: u32, moved: Moved) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("set jit = off").await?;
                Ok(())
            })
        })
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let moved = moved.clone();
            Box::pin(async move {
                if moved.predates(meta.age) {
                    return Ok(false);
                }
                if meta.idle_for > TRUSTED_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options)
}

/// Whether every embedded migration has been applied.
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> = sqlx::query_scalar("select max(version) from _sqlx_migrations where success")
        .fetch_one(pool)
        .await?;
    Ok(applied.unwrap_or(0) >= latest)
}
