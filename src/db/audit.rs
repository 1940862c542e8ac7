//! The audit log. Events are written inside the caller's transaction, so an event exists
//! exactly when the change it records was committed. A writer takes no lock: its event gets
//! a seq from a sequence (the order events were written, not committed) and the SHA-256 of
//! its canonical encoding, and is "unsealed". [`seal`] later gives unsealed events their
//! places in the chain (`chain_pos`, 1, 2, 3, ... in sealing order), each with the SHA-256
//! of the hash before, its place and its digest: one sealer at a time across every replica
//! (`audit_seal` in the migrations), in one short transaction, every `GSB_AUDIT_SEAL_MS`.
//! The chain's order is the sealing order, not seq: an event with a lower seq can commit
//! after higher ones were sealed, and is then sealed after them. Recording an event also
//! queues the webhook deliveries that announce it, in the same transaction.
//!
//! Also here: reading the log (sealed events, filtered, in chain order, in batches so memory
//! stays constant; reads seal what has committed first), checkpoints of the sealed head, and
//! the walk that verifies the chain.

use std::pin::pin;

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::share_requests::ShareRequest;
use super::shares::Share;
use crate::domain::{
    AnchorMismatch, BrokenLink, ChainLink, ChainReport, CheckpointMismatch, Initiator, UnsealedEvent, canonical_json,
};

/// An event to append. Its `target` (the image, its owner, the member project, the region,
/// the request and share) is built from these fields; `details` holds the rest.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// CADF action: `create`, `update/approve`, `update/deny`, `update/cancel`, `allow`, `revoke`, ...
    pub action: &'a str,
    /// `success`, `failure` or `pending`.
    pub outcome: &'a str,
    pub initiator: &'a Initiator,
    pub request_id: Option<Uuid>,
    pub share_id: Option<Uuid>,
    pub image_id: Option<Uuid>,
    pub project_id: Option<&'a str>,
    pub region: Option<&'a str>,
    /// The image's name and owner project, when known (from Glance, at the grant).
    pub image_name: Option<&'a str>,
    pub image_owner: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub details: Value,
}

impl<'a> NewEvent<'a> {
    /// An event about no particular resource (yet); callers fill in what they know.
    pub fn attempt(initiator: &'a Initiator, action: &'a str) -> Self {
        NewEvent {
            action,
            outcome: "success",
            initiator,
            request_id: None,
            share_id: None,
            image_id: None,
            project_id: None,
            region: None,
            image_name: None,
            image_owner: None,
            reason: None,
            correlation_id: None,
            details: Value::Object(Map::new()),
        }
    }

    /// An event about a share request; callers fill in `reason` and `details`.
    pub fn about_request(initiator: &'a Initiator, request: &'a ShareRequest, action: &'a str) -> Self {
        NewEvent {
            action,
            outcome: "success",
            initiator,
            request_id: Some(request.id),
            share_id: None,
            image_id: Some(request.image_id),
            project_id: None,
            region: Some(&request.region),
            // Known once the request was validated against Glance.
            image_name: request.image_name.as_deref(),
            image_owner: request.image_owner.as_deref(),
            reason: None,
            correlation_id: None,
            details: Value::Object(Map::new()),
        }
    }

    /// An event about one share.
    pub fn about_share(initiator: &'a Initiator, share: &'a Share, action: &'a str, outcome: &'a str) -> Self {
        NewEvent {
            action,
            outcome,
            initiator,
            request_id: Some(share.request_id),
            share_id: Some(share.id),
            image_id: Some(share.image_id),
            project_id: Some(share.project_id.as_deref().unwrap_or(&share.target)),
            region: Some(&share.region),
            image_name: share.image_name.as_deref(),
            image_owner: share.image_owner.as_deref(),
            reason: None,
            correlation_id: None,
            details: Value::Object(Map::new()),
        }
    }
}

/// One stored event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Event {
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub action: String,
    pub outcome: String,
    pub initiator: Value,
    pub target: Value,
    pub observer: String,
    pub request_id: Option<Uuid>,
    pub share_id: Option<Uuid>,
    pub image_id: Option<Uuid>,
    pub project_id: Option<String>,
    pub reason: Option<String>,
    pub correlation_id: Option<String>,
    pub details: Value,
    /// The seal: null until [`seal`] gives the event its place in the chain.
    pub chain_pos: Option<i64>,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
}

impl Event {
    /// SHA-256 of the event's canonical JSON: everything but its place in the chain.
    pub fn content_digest(&self) -> [u8; 32] {
        let body = json!({
            "id": self.id,
            "occurred_at": self.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "action": self.action,
            "outcome": self.outcome,
            "initiator": self.initiator,
            "target": self.target,
            "observer": self.observer,
            "request_id": self.request_id,
            "share_id": self.share_id,
            "image_id": self.image_id,
            "project_id": self.project_id,
            "reason": self.reason,
            "correlation_id": self.correlation_id,
            "details": self.details,
        });
        Sha256::digest(canonical_json(&body)).into()
    }

    /// The hash this sealed event must carry: SHA-256 of `prev_hash`, `chain_pos` (8 bytes,
    /// big-endian) and [`Event::content_digest`], as `audit_seal` computes it. None while
    /// unsealed.
    pub fn expected_hash(&self) -> Option<Vec<u8>> {
        let (Some(prev_hash), Some(chain_pos)) = (&self.prev_hash, self.chain_pos) else {
            return None;
        };
        let mut link = Sha256::new();
        link.update(prev_hash);
        link.update(chain_pos.to_be_bytes());
        link.update(self.content_digest());
        Some(link.finalize().to_vec())
    }
}

/// The hash the first event chains to.
pub const GENESIS: [u8; 32] = [0; 32];

/// Appends an unsealed event inside `tx` and queues the webhook deliveries that announce
/// it. One insert, no lock: the event's digest goes with it, for [`seal`] to chain.
pub async fn record(tx: &mut PgConnection, observer: &str, event: NewEvent<'_>) -> Result<Event, sqlx::Error> {
    let mut stored = record_all(tx, observer, vec![event]).await?;
    Ok(stored.remove(0))
}

/// Appends an event in a transaction of its own: for what changes nothing in the database
/// (a policy reloaded from its file) or was refused.
pub async fn record_alone(pool: &PgPool, observer: &str, event: NewEvent<'_>) -> Result<Event, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let stored = record(&mut tx, observer, event).await?;
    tx.commit().await?;
    Ok(stored)
}

/// Appends several events inside `tx` in one insert (a worker's batch), in their order,
/// and queues their webhook deliveries.
pub async fn record_all(
    tx: &mut PgConnection,
    observer: &str,
    events: Vec<NewEvent<'_>>,
) -> Result<Vec<Event>, sqlx::Error> {
    let mut stored: Vec<Event> = events.into_iter().map(|e| prepare(observer, e)).collect();
    if stored.is_empty() {
        return Ok(stored);
    }
    let column = |f: fn(&Event) -> Option<String>| stored.iter().map(f).collect::<Vec<_>>();
    let (actions, outcomes, observers) = (
        column(|e| Some(e.action.clone())),
        column(|e| Some(e.outcome.clone())),
        column(|e| Some(e.observer.clone())),
    );
    let (project_ids, reasons, correlation_ids) = (
        column(|e| e.project_id.clone()),
        column(|e| e.reason.clone()),
        column(|e| e.correlation_id.clone()),
    );
    let ids: Vec<Uuid> = stored.iter().map(|e| e.id).collect();
    let times: Vec<DateTime<Utc>> = stored.iter().map(|e| e.occurred_at).collect();
    let initiators: Vec<&Value> = stored.iter().map(|e| &e.initiator).collect();
    let targets: Vec<&Value> = stored.iter().map(|e| &e.target).collect();
    let details: Vec<&Value> = stored.iter().map(|e| &e.details).collect();
    let request_ids: Vec<Option<Uuid>> = stored.iter().map(|e| e.request_id).collect();
    let share_ids: Vec<Option<Uuid>> = stored.iter().map(|e| e.share_id).collect();
    let image_ids: Vec<Option<Uuid>> = stored.iter().map(|e| e.image_id).collect();
    let digests: Vec<Vec<u8>> = stored.iter().map(|e| e.content_digest().to_vec()).collect();
    // seq comes from a sequence in row order; each row is matched back by its id. Whether
    // any webhook is active comes back with the rows: no round trip of its own.
    let seqs: Vec<(Uuid, i64, bool)> = sqlx::query_as(
        "with stored as (
             insert into audit_events (id, occurred_at, action, outcome, initiator, target, observer,
                 request_id, share_id, image_id, project_id, reason, correlation_id, details, digest)
             select * from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::jsonb[],
                 $6::jsonb[], $7::text[], $8::uuid[], $9::uuid[], $10::uuid[], $11::text[], $12::text[],
                 $13::text[], $14::jsonb[], $15::bytea[])
             returning id, seq)
         select id, seq, exists (select 1 from webhooks where active) from stored",
    )
    .bind(&ids)
    .bind(&times)
    .bind(&actions)
    .bind(&outcomes)
    .bind(&initiators)
    .bind(&targets)
    .bind(&observers)
    .bind(&request_ids)
    .bind(&share_ids)
    .bind(&image_ids)
    .bind(&project_ids)
    .bind(&reasons)
    .bind(&correlation_ids)
    .bind(&details)
    .bind(&digests)
    .fetch_all(&mut *tx)
    .await?;
    for event in &mut stored {
        event.seq = seqs
            .iter()
            .find(|(id, ..)| *id == event.id)
            .map(|(_, seq, _)| *seq)
            .ok_or_else(|| sqlx::Error::Protocol(format!("audit event {} was not stored", event.id)))?;
    }
    if seqs.iter().any(|(.., hooks)| *hooks) {
        for event in &stored {
            super::webhooks::enqueue_for(tx, event).await?;
        }
    }
    Ok(stored)
}

/// The event as it will be stored: its target, time and content, not yet numbered.
fn prepare(observer: &str, event: NewEvent<'_>) -> Event {
    let mut target = Map::new();
    for (key, value) in [
        ("image_id", json!(event.image_id)),
        ("image_name", json!(event.image_name)),
        ("owner_project_id", json!(event.image_owner)),
        ("project_id", json!(event.project_id)),
        ("region", json!(event.region)),
        ("request_id", json!(event.request_id)),
        ("share_id", json!(event.share_id)),
    ] {
        if !value.is_null() {
            target.insert(key.into(), value);
        }
    }
    Event {
        seq: 0,
        id: Uuid::now_v7(),
        // Postgres keeps microseconds: digest what will be read back.
        occurred_at: Utc::now().trunc_subsecs(6),
        action: event.action.into(),
        outcome: event.outcome.into(),
        initiator: serde_json::to_value(event.initiator).expect("an initiator always serializes"),
        target: Value::Object(target),
        observer: observer.into(),
        request_id: event.request_id,
        share_id: event.share_id,
        image_id: event.image_id,
        project_id: event.project_id.map(str::to_owned),
        reason: event.reason.map(str::to_owned),
        correlation_id: event.correlation_id.map(str::to_owned),
        details: event.details,
        chain_pos: None,
        prev_hash: None,
        hash: None,
    }
}

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

/// Every sealed event about one share request, in chain order (after sealing what has
/// committed).
pub async fn for_request(pool: &PgPool, request_id: Uuid) -> Result<Vec<Event>, sqlx::Error> {
    let filter = EventFilter {
        request_id: Some(request_id),
        ..EventFilter::default()
    };
    stream(pool.clone(), filter, 0).try_collect().await
}

/// Filters for reading the log; empty means "any".
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    pub image_id: Option<Uuid>,
    /// Either side of a share: the member project (or a request's target), the image's
    /// owner, or the caller's project.
    pub project_id: Option<String>,
    /// The member project alone.
    pub member_project_id: Option<String>,
    /// The initiator's name.
    pub actor: Option<String>,
    /// Any of these actions.
    pub actions: Vec<String>,
    pub outcome: Option<String>,
    /// At or after.
    pub after: Option<DateTime<Utc>>,
    /// Strictly before.
    pub before: Option<DateTime<Utc>>,
    pub request_id: Option<Uuid>,
    pub share_id: Option<Uuid>,
}

/// Up to `limit` sealed events matching `filter` placed after `after_pos`, in chain order.
/// Seals what has committed first, so the newest events are there.
pub async fn page(pool: &PgPool, filter: &EventFilter, after_pos: i64, limit: i64) -> Result<Vec<Event>, sqlx::Error> {
    seal_all(pool).await?;
    sealed_batch(pool, filter, after_pos, limit).await
}

/// Paging by place in the chain never skips or repeats an event: places are given in
/// increasing order, once, and an event that commits late is placed after the others.
async fn sealed_batch(
    db: impl PgExecutor<'_>,
    filter: &EventFilter,
    after_pos: i64,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(
        "select * from audit_events
         where chain_pos > $1
           and ($2::uuid is null or image_id = $2)
           and ($3::text is null or project_id = $3 or target ->> 'owner_project_id' = $3
                or initiator ->> 'project' = $3 or details -> 'targets' ? $3)
           and ($4::text is null or initiator ->> 'name' = $4)
           and (cardinality($5::text[]) = 0 or action = any($5))
           and ($6::text is null or outcome = $6)
           and ($7::timestamptz is null or occurred_at >= $7)
           and ($8::timestamptz is null or occurred_at < $8)
           and ($9::uuid is null or request_id = $9)
           and ($10::uuid is null or share_id = $10)
           and ($11::text is null or project_id = $11)
         order by chain_pos
         limit $12",
    )
    .bind(after_pos)
    .bind(filter.image_id)
    .bind(&filter.project_id)
    .bind(&filter.actor)
    .bind(&filter.actions)
    .bind(&filter.outcome)
    .bind(filter.after)
    .bind(filter.before)
    .bind(filter.request_id)
    .bind(filter.share_id)
    .bind(&filter.member_project_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Rows read per query when streaming.
const BATCH: i64 = 500;

/// Every sealed event matching `filter` placed after `after_pos`, in chain order, after
/// sealing what has committed. Read in batches of [`BATCH`], so memory stays constant
/// however long the log is; events sealed meanwhile are included.
pub fn stream(
    pool: PgPool,
    filter: EventFilter,
    after_pos: i64,
) -> impl Stream<Item = Result<Event, sqlx::Error>> + Send + 'static {
    let sealed = {
        let pool = pool.clone();
        async move { seal_all(&pool).await }
    };
    stream::once(sealed)
        .map_ok(move |_| {
            stream::try_unfold(
                (pool.clone(), filter.clone(), Some(after_pos)),
                |(pool, filter, after)| async move {
                    let Some(after) = after else {
                        return Ok::<_, sqlx::Error>(None);
                    };
                    let batch = sealed_batch(&pool, &filter, after, BATCH).await?;
                    let next = match batch.last() {
                        Some(last) if batch.len() as i64 == BATCH => last.chain_pos,
                        Some(_) => None,
                        None => return Ok(None),
                    };
                    Ok(Some((batch, (pool, filter, next))))
                },
            )
        })
        .try_flatten()
        .map_ok(|batch| stream::iter(batch.into_iter().map(Ok)))
        .try_flatten()
}

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

/// What is wrong with sealed `event`'s link, given the link before it (`None` for the first).
fn check_link(event: &Event, before: Option<&(i64, Vec<u8>)>) -> Option<BrokenLink> {
    let (want_pos, want_prev) = before.map_or((1, &GENESIS[..]), |(pos, hash)| (pos + 1, &hash[..]));
    let pos = event.chain_pos.unwrap_or_default();
    let hex_of = |bytes: &Option<Vec<u8>>| bytes.as_deref().map(hex::encode).unwrap_or_default();
    let broken = |field, expected: String, stored: String, detail: String| BrokenLink {
        chain_pos: pos,
        seq: event.seq,
        id: event.id,
        field,
        expected,
        stored,
        detail,
    };
    if pos != want_pos {
        return Some(broken(
            "chain_pos",
            want_pos.to_string(),
            pos.to_string(),
            format!("the events at places {want_pos} to {} are missing", pos - 1),
        ));
    }
    if event.prev_hash.as_deref() != Some(want_prev) {
        return Some(broken(
            "prev_hash",
            hex::encode(want_prev),
            hex_of(&event.prev_hash),
            format!(
                "the event at place {pos} does not chain to the hash of the event at place {}",
                pos - 1
            ),
        ));
    }
    let expected = event.expected_hash();
    if event.hash != expected {
        return Some(broken(
            "hash",
            hex_of(&expected),
            hex_of(&event.hash),
            format!(
                "the event at place {pos} (seq {}) was changed after it was written: its content does not give its hash",
                event.seq
            ),
        ));
    }
    None
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

/// Seals what has committed, walks the whole chain in order, in constant memory, and stops
/// at the first broken link; then compares every checkpoint, and every anchor the caller
/// kept outside the database (`anchors`: places and the hashes they must hold), with the
/// chain, and counts the events still unsealed (failing when one waited more than
/// [`UNSEALED_GRACE_SECS`]). When all holds and the chain has grown since the last
/// checkpoint, records a new one as `taken_by`.
///
/// Checkpoints live in the database: whoever can rewrite the log can rewrite them too.
/// Anchors cannot be reached from there, so an intact chain that matches them is the chain
/// the auditor saw.
pub async fn verify_anchored(pool: &PgPool, taken_by: &str, anchors: &[ChainLink]) -> Result<ChainReport, sqlx::Error> {
    let mut events = pin!(stream(pool.clone(), EventFilter::default(), 0));
    let (mut checked, mut head, mut first_broken_link) = (0, None::<(i64, Vec<u8>)>, None);
    while let Some(event) = events.next().await.transpose()? {
        checked += 1;
        if let Some(broken) = check_link(&event, head.as_ref()) {
            first_broken_link = Some(broken);
            break;
        }
        head = event.chain_pos.zip(event.hash);
    }

    let checkpoints_checked: i64 = sqlx::query_scalar("select count(*) from audit_checkpoints")
        .fetch_one(pool)
        .await?;
    let mismatch = sqlx::query_as::<_, CheckpointRow>(
        "select c.taken_at, c.taken_by, c.chain_pos, c.hash, e.hash as stored_hash
         from audit_checkpoints c left join audit_events e on e.chain_pos = c.chain_pos
         where e.hash is distinct from c.hash
         order by c.chain_pos limit 1",
    )
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

    let anchor_mismatch = anchor_mismatch(pool, anchors).await?;

    let ok = first_broken_link.is_none() && mismatch.is_none() && stale_unsealed.is_none() && anchor_mismatch.is_none();
    let checkpoint_written = if ok { checkpoint(pool, taken_by).await? } else { None };
    Ok(ChainReport {
        ok,
        events_checked: checked,
        head: head.map(|(chain_pos, hash)| link(chain_pos, &hash)),
        first_broken_link,
        checkpoints_checked,
        checkpoint_mismatch: mismatch,
        checkpoint_written,
        unsealed_events,
        stale_unsealed,
        anchors_checked: anchors.len() as i64,
        anchor_mismatch,
    })
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
