//! Where the chain stands (its head, its backlog, its last checkpoint) and the record of
//! each check of it (`audit_verifications`), which every replica reads.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::seal::seal_all;
use crate::domain::{ChainHead, ChainLink, ChainReport, ChainState, Checkpoint, Verification};

/// Records what a check found, as `verified_by`.
pub async fn record_verification(pool: &PgPool, verified_by: &str, report: &ChainReport) -> Result<(), sqlx::Error> {
    let head = report.head.as_ref();
    let head_hash = head.map(|h| hex::decode(&h.hash).expect("a report's head is the walk's own hex"));
    sqlx::query(
        "insert into audit_verifications (id, verified_by, ok, events_checked, head_pos, head_hash,
                                          checkpoints_checked, unsealed_events, problem)
         values ($1, left($2, 200), $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(Uuid::now_v7())
    .bind(verified_by)
    .bind(report.ok)
    .bind(report.events_checked)
    .bind(head.map(|h| h.chain_pos))
    .bind(head_hash)
    .bind(report.checkpoints_checked)
    .bind(report.unsealed_events)
    .bind(report.problem())
    .execute(pool)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct HeadRow {
    chain_pos: i64,
    hash: Vec<u8>,
    id: Uuid,
    occurred_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct VerificationRow {
    verified_at: DateTime<Utc>,
    verified_by: String,
    ok: bool,
    events_checked: i64,
    head_pos: Option<i64>,
    head_hash: Option<Vec<u8>>,
    checkpoints_checked: i64,
    unsealed_events: i64,
    problem: Option<String>,
}

/// The chain's state, after sealing what has committed (each read of the log does). Reads
/// the primary: the head is where sealing happens. A handful of index lookups.
pub async fn state(pool: &PgPool) -> Result<ChainState, sqlx::Error> {
    seal_all(pool).await?;
    let head: Option<HeadRow> = sqlx::query_as(
        "select chain_pos, hash, id, occurred_at from audit_events
         where chain_pos is not null order by chain_pos desc limit 1",
    )
    .fetch_optional(pool)
    .await?;
    let (unsealed_events, checkpoints): (i64, i64) = sqlx::query_as(
        "select (select count(*) from audit_events where chain_pos is null),
                (select count(*) from audit_checkpoints)",
    )
    .fetch_one(pool)
    .await?;
    let checkpoint: Option<(DateTime<Utc>, String, i64, Vec<u8>)> = sqlx::query_as(
        "select taken_at, taken_by, chain_pos, hash from audit_checkpoints order by chain_pos desc limit 1",
    )
    .fetch_optional(pool)
    .await?;
    let verification: Option<VerificationRow> = sqlx::query_as(
        "select verified_at, verified_by, ok, events_checked, head_pos, head_hash, checkpoints_checked,
                unsealed_events, problem
         from audit_verifications order by verified_at desc, id desc limit 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(ChainState {
        head: head.map(|h| ChainHead {
            chain_pos: h.chain_pos,
            hash: hex::encode(h.hash),
            event_id: h.id,
            occurred_at: h.occurred_at,
        }),
        unsealed_events,
        checkpoints,
        last_checkpoint: checkpoint.map(|(taken_at, taken_by, chain_pos, hash)| Checkpoint {
            taken_at,
            taken_by,
            chain_pos,
            hash: hex::encode(hash),
        }),
        last_verification: verification.map(|v| Verification {
            verified_at: v.verified_at,
            verified_by: v.verified_by,
            ok: v.ok,
            events_checked: v.events_checked,
            head: v.head_pos.zip(v.head_hash).map(|(chain_pos, hash)| ChainLink {
                chain_pos,
                hash: hex::encode(hash),
            }),
            checkpoints_checked: v.checkpoints_checked,
            unsealed_events: v.unsealed_events,
            problem: v.problem,
        }),
    })
}
