//! Checking the log: the walk over the sealed chain (its links computed in
//! `domain::audit`, each event under its own digest scheme) from the last archived event on,
//! checkpoints of the sealed head, anchors kept outside the database, and events left
//! unsealed too long.

use std::pin::pin;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use super::archive;
use super::read::{EventFilter, LogReader, digested};
use super::seal::{seal_all, seal_all_waiting};
use crate::domain::audit::Walk;
use crate::domain::{AnchorMismatch, ChainLink, ChainReport, CheckpointMismatch, UnsealedEvent};

/// Seals what has committed, then records the sealed head (its place and hash) as a
/// checkpoint, unless a checkpoint already holds it (or a later one). Returns the head
/// recorded, if any. The head is read by `audit_checkpoint` in the database, never passed in:
/// the application's role may not insert checkpoints itself. Each checkpoint is also logged
/// (target `audit.checkpoint`), so a copy of the head lives outside the database for an
/// auditor to anchor `audit verify --expect` on.
pub async fn checkpoint(pool: &PgPool, taken_by: &str) -> Result<Option<ChainLink>, sqlx::Error> {
    seal_all(pool).await?;
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as("select chain_pos, hash from audit_checkpoint($1)")
        .bind(taken_by)
        .fetch_optional(pool)
        .await?;
    let taken = row.map(|(chain_pos, hash)| link(chain_pos, &hash));
    if let Some(head) = &taken {
        tracing::info!(
            target: "audit.checkpoint",
            chain_pos = head.chain_pos,
            hash = %head.hash,
            taken_by,
            "audit checkpoint"
        );
    }
    Ok(taken)
}

fn link(chain_pos: i64, hash: &[u8]) -> ChainLink {
    ChainLink {
        chain_pos,
        hash: hex::encode(hash),
    }
}

/// An event unsealed for longer than this fails verification: a working sealer seals within
/// `GSB_AUDIT_SEAL_MS` (200 ms by default), so it means no sealer runs, or one is stuck.
pub const UNSEALED_GRACE_SECS: i64 = 60;

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    taken_at: DateTime<Utc>,
    taken_by: String,
    chain_pos: i64,
    hash: Vec<u8>,
    stored_hash: Option<Vec<u8>>,
}

/// [`verify_anchored`] with no anchors.
pub async fn verify(pool: &PgPool, taken_by: &str) -> Result<ChainReport, sqlx::Error> {
    verify_anchored(pool, taken_by, &[]).await
}

/// Tries of sealing before a verify reads the chain.
const VERIFY_SEAL_TRIES: usize = 5;

/// Seals what has committed, walks the whole chain in order, in constant memory, and stops
/// at the first broken link; then compares every checkpoint, and every anchor the caller
/// kept outside the database (`anchors`: places and the hashes they must hold), with the
/// chain, and counts the events still unsealed (failing when one waited more than
/// [`UNSEALED_GRACE_SECS`]). When all holds and the chain has grown since the last
/// checkpoint, records a new one as `taken_by`. Records what it found, either way
/// (`audit_verifications`), for `GET /v1/audit-chain`.
///
/// After `audit archive`, the chain in the database starts after the last archived event:
/// the walk starts there (the first event left must chain to its recorded hash, so a
/// partition removed without an archive is a gap), and checkpoints and anchors up to it are
/// counted as archived instead of compared (`audit verify-archive` compares them with the
/// files).
///
/// Checkpoints live in the database: whoever can rewrite the log can rewrite them too.
/// Anchors cannot be reached from there, so an intact chain that matches them is the chain
/// the auditor saw.
pub async fn verify_anchored(pool: &PgPool, taken_by: &str, anchors: &[ChainLink]) -> Result<ChainReport, sqlx::Error> {
    // A verify reports on every event committed before it: it waits out a sealer that holds
    // the chain lock a few times before reading what is sealed.
    seal_all_waiting(pool, VERIFY_SEAL_TRIES).await?;
    let mut archived = archive::prefix(pool).await?;
    let start = archived.as_ref().and_then(|a| a.head.clone());
    let after = start.as_ref().map_or(0, |head| head.chain_pos);
    let mut batches = pin!(digested(LogReader::primary(pool), EventFilter::default(), after));
    let mut walk = start.as_ref().map_or_else(Walk::default, Walk::after);
    'walk: while let Some(batch) = batches.next().await.transpose()? {
        for event in batch {
            if !walk.step_digested(event) {
                break 'walk;
            }
        }
    }
    let Walk {
        checked,
        head,
        first_broken_link,
    } = walk;

    let (checkpoints_checked, checkpoints_archived): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where chain_pos > $1), count(*) filter (where chain_pos <= $1) from audit_checkpoints",
    )
    .bind(after)
    .fetch_one(pool)
    .await?;
    let mismatch = sqlx::query_as::<_, CheckpointRow>(
        "select c.taken_at, c.taken_by, c.chain_pos, c.hash, e.hash as stored_hash
         from audit_checkpoints c left join audit_events e on e.chain_pos = c.chain_pos
         where c.chain_pos > $1 and e.hash is distinct from c.hash
         order by c.chain_pos limit 1",
    )
    .bind(after)
    .fetch_optional(pool)
    .await?
    .map(|c| {
        let detail = match &c.stored_hash {
            None => format!(
                "the checkpoint of {} recorded the event at place {}, which is gone: events were deleted from the tail",
                c.taken_at.to_rfc3339(),
                c.chain_pos
            ),
            Some(_) => format!(
                "the checkpoint of {} recorded another hash for the event at place {}: the history was rewritten",
                c.taken_at.to_rfc3339(),
                c.chain_pos
            ),
        };
        CheckpointMismatch {
            taken_at: c.taken_at,
            taken_by: c.taken_by,
            checkpoint: link(c.chain_pos, &c.hash),
            stored_hash: c.stored_hash.map(hex::encode),
            detail,
        }
    });

    let (unsealed_events, stale): (i64, Option<(i64, Uuid, DateTime<Utc>)>) = (
        sqlx::query_scalar("select count(*) from audit_events where chain_pos is null")
            .fetch_one(pool)
            .await?,
        sqlx::query_as(
            "select seq, id, occurred_at from audit_events
             where chain_pos is null and occurred_at < now() - make_interval(secs => $1)
             order by seq limit 1",
        )
        .bind(UNSEALED_GRACE_SECS as f64)
        .fetch_optional(pool)
        .await?,
    );
    let stale_unsealed = stale.map(|(seq, id, occurred_at)| UnsealedEvent {
        seq,
        id,
        occurred_at,
        detail: format!(
            "event {seq} of {} is still unsealed after more than {UNSEALED_GRACE_SECS} s: no sealer is running, or it fails",
            occurred_at.to_rfc3339()
        ),
    });

    let (anchors_kept, anchors_archived): (Vec<ChainLink>, Vec<ChainLink>) =
        anchors.iter().cloned().partition(|a| a.chain_pos > after);
    let anchor_mismatch = anchor_mismatch(pool, &anchors_kept).await?;
    if let Some(archived) = &mut archived {
        (archived.checkpoints, archived.anchors) = (checkpoints_archived, anchors_archived.len() as i64);
    }

    let ok = first_broken_link.is_none()
        && mismatch.is_none()
        && stale_unsealed.is_none()
        && anchor_mismatch.is_none()
        && archived.as_ref().is_none_or(|a| a.gap.is_none());
    crate::metrics::verified(ok);
    let checkpoint_written = if ok { checkpoint(pool, taken_by).await? } else { None };
    let report = ChainReport {
        ok,
        events_checked: checked,
        head: head.map(|(chain_pos, hash)| link(chain_pos, &hash)),
        first_broken_link,
        archived,
        checkpoints_checked,
        checkpoint_mismatch: mismatch,
        checkpoint_written,
        unsealed_events,
        stale_unsealed,
        anchors_checked: anchors_kept.len() as i64,
        anchor_mismatch,
    };
    super::state::record_verification(pool, taken_by, &report).await?;
    Ok(report)
}

/// The first of `anchors`, by place, whose hash the chain does not hold at its place.
async fn anchor_mismatch(pool: &PgPool, anchors: &[ChainLink]) -> Result<Option<AnchorMismatch>, sqlx::Error> {
    if anchors.is_empty() {
        return Ok(None);
    }
    let places: Vec<i64> = anchors.iter().map(|a| a.chain_pos).collect();
    let hashes: Vec<String> = anchors.iter().map(|a| a.hash.clone()).collect();
    let found: Option<(i64, String, Option<Vec<u8>>)> = sqlx::query_as(
        "select a.chain_pos, a.hash, e.hash
         from unnest($1::bigint[], $2::text[]) as a (chain_pos, hash)
         left join audit_events e on e.chain_pos = a.chain_pos
         where e.hash is distinct from decode(a.hash, 'hex')
         order by a.chain_pos limit 1",
    )
    .bind(&places)
    .bind(&hashes)
    .fetch_optional(pool)
    .await?;
    Ok(found.map(|(chain_pos, hash, stored)| {
        let detail = match &stored {
            None => format!(
                "the chain has no event at place {chain_pos}, which the anchor expects: events were deleted from the tail, or the anchor is from another log"
            ),
            Some(_) => format!(
                "the event at place {chain_pos} does not have the anchored hash: the history up to there was rewritten"
            ),
        };
        AnchorMismatch {
            expected: ChainLink { chain_pos, hash },
            stored_hash: stored.map(hex::encode),
            detail,
        }
    }))
}
