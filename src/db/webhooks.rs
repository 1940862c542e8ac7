//! Webhook endpoints and their deliveries. Deliveries are queued inside the transaction that
//! records the audit events they announce ([`announce`], called by `crate::events`), and are
//! claimed like jobs: a lease is committed before the receiver is called, and the outcome is
//! accepted only with the lease token. Deliveries to one endpoint go out in the order of the
//! events' seq (the order they were written: two events written at once may commit, and be
//! delivered, in either order).

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::audit::Event;
use crate::domain::webhook::{Recorded, events_for};

/// A registered endpoint, as the API shows it. Its secret is never read with it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[schema(as = WebhookView)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    /// The events it receives; empty means every event.
    pub events: Vec<String>,
    pub description: Option<String>,
    /// Whether deliveries are made (an inactive endpoint keeps its log).
    pub active: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, url, events, description, active, created_by, created_at, updated_at";

/// What an endpoint is registered with.
#[derive(Debug, Clone)]
pub struct NewWebhook<'a> {
    pub url: &'a str,
    pub events: &'a [String],
    pub description: Option<&'a str>,
    pub created_by: &'a str,
}

/// Registers an endpoint and returns it with the only copy of its secret.
pub async fn create(tx: &mut PgConnection, new: NewWebhook<'_>) -> Result<(Webhook, String), sqlx::Error> {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = crate::domain::webhook::new_secret(&bytes);
    let webhook = sqlx::query_as(&format!(
        "insert into webhooks (id, url, events, description, secret, created_by)
         values ($1, $2, $3, $4, $5, $6) returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(new.url)
    .bind(new.events)
    .bind(new.description)
    .bind(&secret)
    .bind(new.created_by)
    .fetch_one(tx)
    .await?;
    Ok((webhook, secret))
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange<'a> {
    pub url: Option<&'a str>,
    pub events: Option<&'a [String]>,
    pub description: Option<&'a str>,
    pub active: Option<bool>,
}

pub async fn update(
    tx: &mut PgConnection,
    id: Uuid,
    change: WebhookChange<'_>,
) -> Result<Option<Webhook>, sqlx::Error> {
    sqlx::query_as(&format!(
        "update webhooks set url = coalesce($2, url), events = coalesce($3, events),
                description = coalesce($4, description), active = coalesce($5, active), updated_at = now()
         where id = $1 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(change.url)
    .bind(change.events)
    .bind(change.description)
    .bind(change.active)
    .fetch_optional(tx)
    .await
}

/// Removes an endpoint with its delivery log; `false` when there was none.
pub async fn delete(tx: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("delete from webhooks where id = $1")
        .bind(id)
        .execute(tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Webhook>, sqlx::Error> {
    sqlx::query_as(&format!("select {COLUMNS} from webhooks where id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Newest first, keyset-paginated by id.
pub async fn list(db: impl PgExecutor<'_>, before: Option<Uuid>, limit: i64) -> Result<Vec<Webhook>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from webhooks where ($1::uuid is null or id < $1) order by id desc limit $2"
    ))
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The resource an audit event is about, as deliveries show it.
async fn resource(tx: &mut PgConnection, event: &Event) -> Result<Option<Value>, sqlx::Error> {
    // A drift finding is announced as the finding, whatever share it names.
    if let Some(finding) = event.details["finding_id"]
        .as_str()
        .and_then(|id| id.parse::<Uuid>().ok())
    {
        return super::drift::resource(tx, finding).await;
    }
    if let Some(share_id) = event.share_id {
        return sqlx::query_scalar(
            "select jsonb_build_object('type', 'share', 'id', id, 'request_id', request_id, 'image_id', image_id,
                    'region', region, 'target', target, 'project_id', project_id, 'state', state,
                    'last_error', last_error, 'granted_at', granted_at, 'revoked_by', revoked_by,
                    'revoke_reason', revoke_reason, 'revoke_effective_at', revoke_effective_at,
                    'expires_at', (select expires_at from share_requests r where r.id = request_id),
                    'updated_at', updated_at)
             from shares where id = $1",
        )
        .bind(share_id)
        .fetch_optional(tx)
        .await;
    }
    let Some(request_id) = event.request_id else {
        return Ok(None);
    };
    sqlx::query_scalar(
        "select jsonb_build_object('type', 'share_request', 'id', id, 'image_id', image_id, 'region', region,
                'status', status, 'reason', reason, 'requested_by', requested_by, 'on_behalf_of', on_behalf_of,
                'image_owner', image_owner, 'decided_by', decided_by, 'decision_comment', decision_comment,
                'required_approvals', required_approvals, 'policy_rule', policy_rule, 'updated_at', updated_at)
         from share_requests where id = $1",
    )
    .bind(request_id)
    .fetch_optional(tx)
    .await
}

/// Queues the deliveries that announce `events`, just recorded inside `tx`. Most clouds have
/// no active endpoint: then one query finds that, and nothing is queued.
pub async fn announce(tx: &mut PgConnection, events: &[Event]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let any_active: bool = sqlx::query_scalar("select exists (select 1 from webhooks where active)")
        .fetch_one(&mut *tx)
        .await?;
    if any_active {
        for event in events {
            enqueue_for(tx, event).await?;
        }
    }
    Ok(())
}

/// Queues a delivery of each webhook event `event` announces to every active endpoint that
/// wants it.
async fn enqueue_for(tx: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
    let Some(resource) = resource(tx, event).await? else {
        return Ok(());
    };
    // Events this broker just wrote: their action and outcome are its own vocabulary.
    let (Ok(action), Ok(outcome)) = (event.action.parse(), event.outcome.parse()) else {
        return Ok(());
    };
    let names = events_for(Recorded {
        action,
        outcome,
        about_share: event.share_id.is_some(),
        share_state: resource["state"].as_str().and_then(|state| state.parse().ok()),
        by_broker: event.initiator["kind"] == "service",
        details: &event.details,
    });
    let mut queued = false;
    for (position, name) in names.into_iter().enumerate() {
        let payload = json!({
            "event": name,
            "occurred_at": event.occurred_at,
            "audit_event_id": event.id,
            "resource": resource,
        });
        let hooks: Vec<Uuid> = sqlx::query_scalar(
            "select id from webhooks where active and (cardinality(events) = 0 or $1 = any(events)) order by id",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<Uuid> = hooks.iter().map(|_| Uuid::now_v7()).collect();
        sqlx::query(
            "insert into webhook_deliveries (id, webhook_id, event, audit_seq, position, payload)
             select d.id, d.webhook_id, $3, $4, $5, $6 from unnest($1::uuid[], $2::uuid[]) as d (id, webhook_id)",
        )
        .bind(&ids)
        .bind(&hooks)
        .bind(name)
        .bind(event.seq)
        .bind(position as i16)
        .bind(&payload)
        .execute(&mut *tx)
        .await?;
        queued |= !hooks.is_empty();
    }
    // Wakes idle workers when the transaction commits. Only when there is something to
    // deliver: a notifying transaction takes a database-wide lock at commit, which would
    // serialize every audited commit.
    if queued {
        sqlx::query("select pg_notify($1, '')")
            .bind(super::jobs::CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// One delivery in the log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event: String,
    pub payload: Value,
    pub state: String,
    pub attempts: i32,
    pub run_at: DateTime<Utc>,
    pub last_status: Option<i16>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// An endpoint's deliveries, newest first, keyset-paginated by id (UUIDv7: creation order).
pub async fn deliveries(
    db: impl PgExecutor<'_>,
    webhook_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "select id, webhook_id, event, payload, state, attempts, run_at, last_status, last_error, created_at,
                delivered_at
         from webhook_deliveries where webhook_id = $1 and ($2::uuid is null or id < $2)
         order by id desc limit $3",
    )
    .bind(webhook_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A delivery this worker holds, with what sending it needs.
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub event: String,
    pub url: String,
    pub secret: SecretString,
    pub payload: Value,
    pub attempts: i32,
    pub lease_token: Uuid,
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: Uuid,
    event: String,
    url: String,
    secret: String,
    payload: Value,
    attempts: i32,
    lease_token: Uuid,
}

/// Claims the next due delivery whose endpoint has nothing older waiting, and commits the
/// claim at once.
pub async fn claim(pool: &PgPool, lease: Duration) -> Result<Option<ClaimedDelivery>, sqlx::Error> {
    let row: Option<ClaimRow> = sqlx::query_as(
        "with next as (
            select d.id from webhook_deliveries d join webhooks w on w.id = d.webhook_id and w.active
            where ((d.state = 'queued' and d.run_at <= now()) or (d.state = 'running' and d.lease_expires_at < now()))
              and not exists (select 1 from webhook_deliveries e
                              where e.webhook_id = d.webhook_id and e.state in ('queued', 'running')
                                and (e.audit_seq, e.position) < (d.audit_seq, d.position))
            order by d.run_at limit 1
            for update of d skip locked)
         update webhook_deliveries d set state = 'running', lease_token = $1, attempts = attempts + 1,
                lease_expires_at = now() + make_interval(secs => $2)
         from next, webhooks w
         where d.id = next.id and w.id = d.webhook_id
         returning d.id, d.event, w.url, w.secret, d.payload, d.attempts, d.lease_token",
    )
    .bind(Uuid::new_v4())
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| ClaimedDelivery {
        id: r.id,
        event: r.event,
        url: r.url,
        secret: SecretString::from(r.secret),
        payload: r.payload,
        attempts: r.attempts,
        lease_token: r.lease_token,
    }))
}

/// How a delivery attempt ended.
#[derive(Debug, Clone)]
pub enum Attempt<'a> {
    Delivered {
        status: u16,
    },
    /// Try again at this time.
    Retry {
        status: Option<u16>,
        error: &'a str,
        at: DateTime<Utc>,
    },
    /// No more tries.
    Failed {
        status: Option<u16>,
        error: &'a str,
    },
}

/// Records an attempt; `false` when the lease was lost (another worker took it over).
pub async fn finish(pool: &PgPool, delivery: &ClaimedDelivery, attempt: Attempt<'_>) -> Result<bool, sqlx::Error> {
    let (state, status, error, at) = match attempt {
        Attempt::Delivered { status } => ("delivered", Some(status), None, None),
        Attempt::Retry { status, error, at } => ("queued", status, Some(error), Some(at)),
        Attempt::Failed { status, error } => ("failed", status, Some(error), None),
    };
    let done = sqlx::query(
        "update webhook_deliveries
         set state = $3, last_status = $4, last_error = $5, run_at = coalesce($6, run_at),
             lease_token = null, lease_expires_at = null,
             delivered_at = case when $3 = 'delivered' then now() end
         where id = $1 and lease_token = $2 and state = 'running'",
    )
    .bind(delivery.id)
    .bind(delivery.lease_token)
    .bind(state)
    .bind(status.map(|s| s as i16))
    .bind(error)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
