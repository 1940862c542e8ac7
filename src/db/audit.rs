//! The audit log. Events are written inside the caller's transaction, so an event exists
//! exactly when the change it records was committed. Each event carries the SHA-256 of its
//! own canonical encoding and of the event before it; writers take one advisory lock for the
//! tail, so the chain has a single total order whatever the number of replicas. Recording an
//! event also queues the webhook deliveries that announce it, in the same transaction.

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::share_requests::{Share, ShareRequest};
use crate::domain::{Initiator, canonical_json};

/// Advisory lock key that serializes appends to the chain ("audit" in ASCII).
const CHAIN_LOCK: i64 = 0x0061_7564_6974;

/// An event to append. `target` names what was acted on; `details` holds the rest.
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
    /// The hash this event must carry, computed from its content and `prev_hash`.
    pub fn expected_hash(&self) -> Vec<u8> {
        let body = json!({
            "seq": self.seq,
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
            "prev_hash": hex::encode(&self.prev_hash),
        });
        Sha256::digest(canonical_json(&body)).to_vec()
    }
}

/// The hash the first event chains to.
pub const GENESIS: [u8; 32] = [0; 32];

/// Appends an event inside `tx`. The chain lock is held until `tx` ends.
pub async fn record(tx: &mut PgConnection, observer: &str, event: NewEvent<'_>) -> Result<Event, sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await?;
    let tail: Option<(i64, Vec<u8>)> = sqlx::query_as("select seq, hash from audit_events order by seq desc limit 1")
        .fetch_optional(&mut *tx)
        .await?;
    let (seq, prev_hash) = tail.map_or((1, GENESIS.to_vec()), |(seq, hash)| (seq + 1, hash));

    let mut target = Map::new();
    for (key, value) in [
        ("image_id", json!(event.image_id)),
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
        seq,
        id: Uuid::now_v7(),
        // Postgres keeps microseconds: hash what will be read back.
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
        prev_hash,
        hash: Vec::new(),
    };
    stored.hash = stored.expected_hash();

    sqlx::query(
        "insert into audit_events (seq, id, occurred_at, action, outcome, initiator, target, observer,
            request_id, share_id, image_id, project_id, reason, correlation_id, details, prev_hash, hash)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(stored.seq)
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
    .bind(&stored.prev_hash)
    .bind(&stored.hash)
    .execute(&mut *tx)
    .await?;
    super::webhooks::enqueue_for(tx, &stored).await?;
    Ok(stored)
}

/// Every event about one share request, oldest first.
pub async fn for_request(pool: &PgPool, request_id: Uuid) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as("select * from audit_events where request_id = $1 order by seq")
        .bind(request_id)
        .fetch_all(pool)
        .await
}
