//! Sealing: giving unsealed events their places in the chain (`chain_pos`, 1, 2, 3, ... in
//! sealing order), each with the link hash over the hash before, its place and its digest.
//! One sealer at a time across every replica (`audit_seal` in the migrations), in one short
//! transaction, every `GSB_AUDIT_SEAL_MS`. The chain's order is the sealing order, not seq:
//! an event with a lower seq can commit after higher ones were sealed, and is then sealed
//! after them.

use sqlx::PgPool;

/// Events sealed per transaction.
pub const SEAL_BATCH: i32 = 1000;

/// Seals up to `batch` unsealed events, oldest seq first, after the sealed head, in one
/// short transaction (`audit_seal`: the chain lock, the tail, the links). Returns how many,
/// or `None` when another sealer held the lock for 2 s (a later call seals them).
pub async fn seal(pool: &PgPool, batch: i32) -> Result<Option<i32>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("set local lock_timeout = '2s'").execute(&mut *tx).await?;
    match sqlx::query_scalar("select audit_seal($1)")
        .bind(batch)
        .fetch_one(&mut *tx)
        .await
    {
        Ok(sealed) => {
            tx.commit().await?;
            Ok(Some(sealed))
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Postgres's `lock_not_available`: the wait for the chain lock timed out.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// Seals every event committed before the call, batch after batch. `false` when another
/// sealer kept the lock too long: some may be left to it.
pub async fn seal_all(pool: &PgPool) -> Result<bool, sqlx::Error> {
    loop {
        match seal(pool, SEAL_BATCH).await? {
            Some(sealed) if sealed == SEAL_BATCH => continue,
            Some(_) => return Ok(true),
            None => return Ok(false),
        }
    }
}

/// [`seal_all`], waiting out another sealer that holds the chain lock (each try waits 2 s for
/// it) up to `tries` times: for a command that must leave nothing unsealed behind it (a
/// verify reports on every event committed before it; `reconcile` seals its pass's events).
/// `false` when the lock stayed taken every time.
pub async fn seal_all_waiting(pool: &PgPool, tries: usize) -> Result<bool, sqlx::Error> {
    for _ in 0..tries {
        if seal_all(pool).await? {
            return Ok(true);
        }
    }
    Ok(false)
}
