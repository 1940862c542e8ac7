//! Writing events: inside the caller's transaction, so an event exists exactly when the
//! change it records was committed. A writer takes no lock: its event gets a seq from a
//! sequence (the order events were written, not committed) and the digest of its content
//! under the current [`DigestScheme`], and is unsealed until `seal` chains it. Announcing an
//! event to webhooks is not done here: `crate::events` records and announces.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::share_requests::ShareRequest;
use crate::db::shares::Share;
use crate::domain::audit::{Action, DigestScheme, Event, Initiator, Outcome};

/// An event to append. Its `target` (the image, its owner, the member project, the region,
/// the request and share) is built from these fields; `details` holds the rest.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub action: Action,
    pub outcome: Outcome,
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
    pub fn attempt(initiator: &'a Initiator, action: Action) -> Self {
        NewEvent {
            action,
            outcome: Outcome::Success,
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
    pub fn about_request(initiator: &'a Initiator, request: &'a ShareRequest, action: Action) -> Self {
        NewEvent {
            action,
            outcome: Outcome::Success,
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
    pub fn about_share(initiator: &'a Initiator, share: &'a Share, action: Action, outcome: Outcome) -> Self {
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

/// Appends one unsealed event inside `tx`.
pub async fn insert(tx: &mut PgConnection, observer: &str, event: NewEvent<'_>) -> Result<Event, sqlx::Error> {
    let mut stored = insert_all(tx, observer, vec![event]).await?;
    Ok(stored.remove(0))
}

/// Appends several events inside `tx` in one insert (a worker's batch), in their order.
pub async fn insert_all(
    tx: &mut PgConnection,
    observer: &str,
    events: Vec<NewEvent<'_>>,
) -> Result<Vec<Event>, sqlx::Error> {
    store(tx, events.into_iter().map(|e| prepare(observer, e)).collect()).await
}

/// Stores events [`prepare`]d (and not numbered yet) inside `tx`, in one insert, each with
/// the digest of its content under its scheme; returns them numbered. [`insert_all`] is
/// the way in for the broker; the history loader of `benches/history` calls this directly,
/// with events it dated in the past, so that its rows and digests are the write path's own.
pub async fn store(tx: &mut PgConnection, mut stored: Vec<Event>) -> Result<Vec<Event>, sqlx::Error> {
    if stored.is_empty() {
        return Ok(stored);
    }
    let column = |f: fn(&Event) -> Option<&str>| stored.iter().map(f).collect::<Vec<_>>();
    let (actions, outcomes, observers) = (
        column(|e| Some(&e.action)),
        column(|e| Some(&e.outcome)),
        column(|e| Some(&e.observer)),
    );
    let (project_ids, reasons, correlation_ids) = (
        column(|e| e.project_id.as_deref()),
        column(|e| e.reason.as_deref()),
        column(|e| e.correlation_id.as_deref()),
    );
    let ids: Vec<Uuid> = stored.iter().map(|e| e.id).collect();
    let times: Vec<DateTime<Utc>> = stored.iter().map(|e| e.occurred_at).collect();
    let initiators: Vec<&Value> = stored.iter().map(|e| &e.initiator).collect();
    let targets: Vec<&Value> = stored.iter().map(|e| &e.target).collect();
    let details: Vec<&Value> = stored.iter().map(|e| &e.details).collect();
    let request_ids: Vec<Option<Uuid>> = stored.iter().map(|e| e.request_id).collect();
    let share_ids: Vec<Option<Uuid>> = stored.iter().map(|e| e.share_id).collect();
    let image_ids: Vec<Option<Uuid>> = stored.iter().map(|e| e.image_id).collect();
    let digests: Vec<[u8; 32]> = stored
        .iter()
        .map(|e| e.content_digest().expect("the write path digests under a known scheme"))
        .collect();
    let digests: Vec<&[u8]> = digests.iter().map(|d| &d[..]).collect();
    let schemes: Vec<i16> = stored.iter().map(|e| e.digest_scheme).collect();
    // seq comes from a sequence in row order; each row is matched back by its id.
    let seqs: HashMap<Uuid, i64> = sqlx::query_as(
        "insert into audit_events (id, occurred_at, action, outcome, initiator, target, observer,
             request_id, share_id, image_id, project_id, reason, correlation_id, details, digest, digest_scheme)
         select * from unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::jsonb[],
             $6::jsonb[], $7::text[], $8::uuid[], $9::uuid[], $10::uuid[], $11::text[], $12::text[],
             $13::text[], $14::jsonb[], $15::bytea[], $16::smallint[])
         returning id, seq",
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
    .bind(&schemes)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    for event in &mut stored {
        event.seq = *seqs
            .get(&event.id)
            .ok_or_else(|| sqlx::Error::Protocol(format!("audit event {} was not stored", event.id)))?;
    }
    Ok(stored)
}

/// The event as it will be stored: its target, time (now) and content, not yet numbered.
pub fn prepare(observer: &str, event: NewEvent<'_>) -> Event {
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
        action: event.action.to_string(),
        outcome: event.outcome.to_string(),
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
        digest_scheme: DigestScheme::CURRENT.number(),
        chain_pos: None,
        prev_hash: None,
        hash: None,
    }
}
