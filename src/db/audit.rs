//! The audit log. Events are written inside the caller's transaction, so an event exists
//! exactly when the change it records was committed. Each event carries the SHA-256 of its
//! place in the chain: the hash of the event before, its seq and the SHA-256 of its own
//! canonical encoding. Writers append through `audit_append` (see the migrations), which
//! takes one advisory lock for the tail until the transaction ends: the chain has a single
//! total order, and seq order is commit order, whatever the number of replicas. Recording an
//! event also queues the webhook deliveries that announce it, in the same transaction.
//!
//! Also here: reading the log (filtered, in chain order, in batches so memory stays
//! constant), checkpoints of the chain's head, and the walk that verifies the chain.

use std::pin::pin;

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::{Stream, StreamExt, TryStreamExt, stream};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::share_requests::{Share, ShareRequest};
use crate::domain::{BrokenLink, ChainLink, ChainReport, CheckpointMismatch, Initiator, canonical_json};

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
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
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

    /// The hash this event must carry: SHA-256 of `prev_hash`, `seq` (8 bytes, big-endian)
    /// and [`Event::content_digest`], as `audit_append` computes it.
    pub fn expected_hash(&self) -> Vec<u8> {
        let mut link = Sha256::new();
        link.update(&self.prev_hash);
        link.update(self.seq.to_be_bytes());
        link.update(self.content_digest());
        link.finalize().to_vec()
    }
}

/// The hash the first event chains to.
pub const GENESIS: [u8; 32] = [0; 32];

/// Appends an event inside `tx` and queues the webhook deliveries that announce it. The
/// event is encoded and digested first; then one round trip takes the chain lock (held until
/// `tx` ends), reads the tail and inserts, so the lock covers as little as it can.
pub async fn record(tx: &mut PgConnection, observer: &str, event: NewEvent<'_>) -> Result<Event, sqlx::Error> {
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
    let mut stored = Event {
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
        prev_hash: Vec::new(),
        hash: Vec::new(),
    };
    let (seq, prev_hash, hash): (i64, Vec<u8>, Vec<u8>) = sqlx::query_as(
        "select new_seq, new_prev_hash, new_hash
         from audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(stored.id)
    .bind(stored.occurred_at)
    .bind(&stored.action)
    .bind(&stored.outcome)
    .bind(&stored.initiator)
    .bind(&stored.target)
    .bind(&stored.observer)
    .bind(stored.request_id)
    .bind(stored.share_id)
    .bind(stored.image_id)
    .bind(&stored.project_id)
    .bind(&stored.reason)
    .bind(&stored.correlation_id)
    .bind(&stored.details)
    .bind(&stored.content_digest()[..])
    .fetch_one(&mut *tx)
    .await?;
    (stored.seq, stored.prev_hash, stored.hash) = (seq, prev_hash, hash);
    super::webhooks::enqueue_for(tx, &stored).await?;
    Ok(stored)
}

/// Every event about one share request, oldest first.
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

/// Up to `limit` events matching `filter` with a seq above `after_seq`, in chain order.
pub async fn page(
    db: impl PgExecutor<'_>,
    filter: &EventFilter,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(
        "select * from audit_events
         where seq > $1
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
         order by seq
         limit $12",
    )
    .bind(after_seq)
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

/// Every event matching `filter` with a seq above `after_seq`, in chain order. Read in
/// batches of [`BATCH`], so memory stays constant however long the log is; events appended
/// meanwhile are included (seq order is commit order: see [`record`]).
pub fn stream(
    pool: PgPool,
    filter: EventFilter,
    after_seq: i64,
) -> impl Stream<Item = Result<Event, sqlx::Error>> + Send + 'static {
    stream::try_unfold((pool, filter, Some(after_seq)), |(pool, filter, after)| async move {
        let Some(after) = after else {
            return Ok::<_, sqlx::Error>(None);
        };
        let batch = page(&pool, &filter, after, BATCH).await?;
        let next = match batch.last() {
            Some(last) if batch.len() as i64 == BATCH => Some(last.seq),
            Some(_) => None,
            None => return Ok(None),
        };
        Ok(Some((batch, (pool, filter, next))))
    })
    .map_ok(|batch| stream::iter(batch.into_iter().map(Ok)))
    .try_flatten()
}

/// Records the chain's head as a checkpoint, unless a checkpoint already holds it (or a
/// later one). Returns the head recorded, if any.
pub async fn checkpoint(pool: &PgPool, taken_by: &str) -> Result<Option<ChainLink>, sqlx::Error> {
    let row: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "insert into audit_checkpoints (id, seq, hash, taken_by)
         select $1, head.seq, head.hash, $2
         from (select seq, hash from audit_events order by seq desc limit 1) head
         where not exists (select 1 from audit_checkpoints c where c.seq >= head.seq)
         returning seq, hash",
    )
    .bind(Uuid::now_v7())
    .bind(taken_by)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(seq, hash)| link(seq, &hash)))
}

fn link(seq: i64, hash: &[u8]) -> ChainLink {
    ChainLink {
        seq,
        hash: hex::encode(hash),
    }
}

/// What is wrong with `event`'s link, given the link before it (`None` for the first event).
fn check_link(event: &Event, before: Option<&(i64, Vec<u8>)>) -> Option<BrokenLink> {
    let (want_seq, want_prev) = before.map_or((1, &GENESIS[..]), |(seq, hash)| (seq + 1, &hash[..]));
    let broken = |field, expected: String, stored: String, detail: String| BrokenLink {
        seq: event.seq,
        id: event.id,
        field,
        expected,
        stored,
        detail,
    };
    if event.seq != want_seq {
        return Some(broken(
            "seq",
            want_seq.to_string(),
            event.seq.to_string(),
            format!("events {want_seq} to {} are missing", event.seq - 1),
        ));
    }
    if event.prev_hash != want_prev {
        return Some(broken(
            "prev_hash",
            hex::encode(want_prev),
            hex::encode(&event.prev_hash),
            format!(
                "event {} does not chain to the hash of event {}",
                event.seq,
                event.seq - 1
            ),
        ));
    }
    let expected = event.expected_hash();
    if event.hash != expected {
        return Some(broken(
            "hash",
            hex::encode(&expected),
            hex::encode(&event.hash),
            format!(
                "event {} was changed after it was written: its content does not give its hash",
                event.seq
            ),
        ));
    }
    None
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    taken_at: DateTime<Utc>,
    taken_by: String,
    seq: i64,
    hash: Vec<u8>,
    stored_hash: Option<Vec<u8>>,
}

/// Walks the whole chain in order, in constant memory, and stops at the first broken link;
/// then compares every checkpoint with the chain. When all holds and the chain has grown
/// since the last checkpoint, records a new one as `taken_by`.
pub async fn verify(pool: &PgPool, taken_by: &str) -> Result<ChainReport, sqlx::Error> {
    let mut events = pin!(stream(pool.clone(), EventFilter::default(), 0));
    let (mut checked, mut head, mut first_broken_link) = (0, None::<(i64, Vec<u8>)>, None);
    while let Some(event) = events.next().await.transpose()? {
        checked += 1;
        if let Some(broken) = check_link(&event, head.as_ref()) {
            first_broken_link = Some(broken);
            break;
        }
        head = Some((event.seq, event.hash));
    }

    let checkpoints_checked: i64 = sqlx::query_scalar("select count(*) from audit_checkpoints")
        .fetch_one(pool)
        .await?;
    let mismatch = sqlx::query_as::<_, CheckpointRow>(
        "select c.taken_at, c.taken_by, c.seq, c.hash, e.hash as stored_hash
         from audit_checkpoints c left join audit_events e on e.seq = c.seq
         where e.hash is distinct from c.hash
         order by c.seq limit 1",
    )
    .fetch_optional(pool)
    .await?
    .map(|c| {
        let detail = match &c.stored_hash {
            None => format!(
                "the checkpoint of {} recorded event {}, which is gone: events were deleted from the tail",
                c.taken_at.to_rfc3339(),
                c.seq
            ),
            Some(_) => format!(
                "the checkpoint of {} recorded another hash for event {}: the history was rewritten",
                c.taken_at.to_rfc3339(),
                c.seq
            ),
        };
        CheckpointMismatch {
            taken_at: c.taken_at,
            taken_by: c.taken_by,
            checkpoint: link(c.seq, &c.hash),
            stored_hash: c.stored_hash.map(hex::encode),
            detail,
        }
    });

    let ok = first_broken_link.is_none() && mismatch.is_none();
    let checkpoint_written = if ok { checkpoint(pool, taken_by).await? } else { None };
    Ok(ChainReport {
        ok,
        events_checked: checked,
        head: head.map(|(seq, hash)| link(seq, &hash)),
        first_broken_link,
        checkpoints_checked,
        checkpoint_mismatch: mismatch,
        checkpoint_written,
    })
}
