//! `/v1/webhooks`: endpoints admins register to hear of requests and shares, and each one's
//! delivery log. A webhook's secret is shown once, when it is created. A URL whose host is,
//! or resolves to, an internal address is refused unless GSB_WEBHOOK_ALLOW_PRIVATE (the
//! worker checks again at each delivery, since a name may resolve elsewhere later).

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{Caller, Id, IdempotencyKey, Json, Query};
use super::idempotency::{self, Begun, Saved};
use super::pagination::{Cursor, Page, Paging};
use super::{ApiError, AppState, FieldError};
use crate::db::audit::NewEvent;
use crate::db::webhooks::{Delivery, NewWebhook, Webhook, WebhookChange};
use crate::db::{self};
use crate::domain::address;
use crate::domain::webhook::EVENTS;
use crate::domain::{Action, Capability, MAX_REASON_CHARS};

const MAX_URL_CHARS: usize = 2048;

/// Longest wait for DNS when a URL is registered.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A new endpoint, with the secret that signs its deliveries: store it now, it is not shown again.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// A Standard Webhooks secret (`whsec_<base64>`): verify each delivery's `webhook-signature`
    /// with it, using any Standard Webhooks library (docs/webhooks.md).
    pub secret: String,
}

/// An endpoint to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookInput {
    /// Where deliveries are POSTed: an `http` or `https` URL.
    #[schema(example = "https://portal.example.com/hooks/glance-shares")]
    pub url: String,
    /// The events it receives (empty or absent: every event): `request.created`,
    /// `request.needs_approval`, `request.approved`, `request.denied`, `request.expired`,
    /// `request.cancelled`, `share.granted`, `share.pending_acceptance`, `share.accepted`,
    /// `share.rejected`, `share.revoked`, `share.failed`, `share.revoke_stalled`, `drift.detected`.
    #[serde(default)]
    pub events: Vec<String>,
    /// What it is for (at most 1,000 characters).
    #[serde(default)]
    pub description: Option<String>,
}

/// A change to an endpoint: absent fields stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
    /// `false` stops deliveries (those queued wait); `true` resumes them.
    pub active: Option<bool>,
}

/// One delivery of one event to the endpoint.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub event: String,
    /// `queued` (retries included), `running`, `delivered` or `failed` (no tries left).
    pub state: String,
    pub attempts: i32,
    /// When the next try is due, while `queued`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The receiver's last HTTP status.
    pub last_status: Option<i16>,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// The JSON body sent.
    pub payload: Value,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            id: d.id,
            next_attempt_at: (d.state == "queued").then_some(d.run_at),
            event: d.event,
            state: d.state,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            payload: d.payload,
            created_at: d.created_at,
            delivered_at: d.delivered_at,
        }
    }
}

fn check_url(url: &str, errors: &mut Vec<FieldError>) {
    let uri = Uri::try_from(url).ok();
    let valid = url.chars().count() <= MAX_URL_CHARS
        && uri.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
        });
    if !valid {
        errors.push(FieldError::new(
            "url",
            format!("must be an http or https URL with a host, at most {MAX_URL_CHARS} characters"),
        ));
    }
}

fn check_events(events: &[String], errors: &mut Vec<FieldError>) {
    for (i, event) in events.iter().enumerate() {
        if !EVENTS.contains(&event.as_str()) {
            errors.push(FieldError::new(
                format!("events[{i}]"),
                format!("unknown event `{event}`: one of {}", EVENTS.join(", ")),
            ));
        } else if events[..i].contains(event) {
            errors.push(FieldError::new(
                format!("events[{i}]"),
                format!("`{event}` is listed twice"),
            ));
        }
    }
}

fn check_description(description: Option<&str>, errors: &mut Vec<FieldError>) {
    let Some(description) = description else { return };
    if description.chars().count() > MAX_REASON_CHARS {
        errors.push(FieldError::new("description", "at most 1000 characters"));
    } else if description.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        errors.push(FieldError::new("description", "must not contain control characters"));
    }
}

/// Refuses a URL whose host is, or resolves to, an address webhooks may not reach, or does
/// not resolve at all.
async fn check_destination(url: &str) -> Result<(), ApiError> {
    let refuse = |reason: String| ApiError::field("url", reason);
    let parsed = url::Url::parse(url).map_err(|_| refuse("must be an http or https URL with a host".into()))?;
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = parsed.port_or_known_default().unwrap_or(80);
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
            _ => Vec::new(),
        },
    };
    if addresses.is_empty() {
        return Err(refuse(format!("the host `{host}` does not resolve")));
    }
    match address::first_forbidden(addresses) {
        Some((_, why)) => Err(refuse(format!(
            "the host is {why}, which webhooks may not reach (GSB_WEBHOOK_ALLOW_PRIVATE allows it)"
        ))),
        None => Ok(()),
    }
}

/// The host a URL names, for the audit log (the URL itself may carry credentials).
fn host_of(url: &str) -> Option<String> {
    Uri::try_from(url).ok()?.host().map(str::to_owned)
}

impl AppState {
    /// Refuses (and records) webhook changes by anyone but an admin.
    async fn require_admin(&self, caller: &Caller, action: Action) -> Result<(), ApiError> {
        self.require(caller, Capability::Admin, action, None).await
    }

    /// An audit event about a webhook; callers add details.
    fn webhook_event<'a>(caller: &'a Caller, action: Action, webhook: &Webhook) -> NewEvent<'a> {
        NewEvent {
            correlation_id: caller.request_id.as_deref(),
            details: json!({ "webhook_id": webhook.id, "host": host_of(&webhook.url), "events": webhook.events, "active": webhook.active }),
            ..NewEvent::attempt(&caller.initiator, action)
        }
    }
}

fn location(id: Uuid) -> String {
    format!("/v1/webhooks/{id}")
}

/// Register a webhook endpoint (admins).
///
/// The answer carries the endpoint's `secret`, once: every delivery is signed with it.
#[utoipa::path(
    post, path = "/v1/webhooks", tag = "webhooks",
    request_body = WebhookInput,
    params(IdempotencyKey),
    responses(
        (status = 201, description = "Registered", body = CreatedWebhook, headers(("Location" = String))),
        (status = 403, description = "Not an admin"),
        (status = 422, description = "A bad URL or event"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    key: IdempotencyKey,
    body: Json<WebhookInput>,
) -> Result<Response, ApiError> {
    state.require_admin(&caller, Action::CreateWebhook).await?;
    let input = &body.value;
    let mut errors = Vec::new();
    check_url(&input.url, &mut errors);
    check_events(&input.events, &mut errors);
    check_description(input.description.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if !state.config.webhook_allow_private {
        check_destination(&input.url).await?;
    }
    let (mut tx, claim) =
        match idempotency::begin(&state, &caller, key, &Method::POST, "/v1/webhooks", &body.document).await? {
            Begun::Replay(response) => return Ok(response),
            Begun::Proceed(tx, claim) => (tx, claim),
        };
    let new = NewWebhook {
        url: &input.url,
        events: &input.events,
        description: input.description.as_deref(),
        created_by: &caller.principal.name,
    };
    let (webhook, secret) = db::webhooks::create(&mut tx, new).await?;
    state
        .audit(
            &mut tx,
            AppState::webhook_event(&caller, Action::CreateWebhook, &webhook),
        )
        .await?;
    let id = webhook.id;
    let created = CreatedWebhook { webhook, secret };
    let response = Saved::json(StatusCode::CREATED, &created).header(header::LOCATION, location(id));
    idempotency::finish(&mut tx, claim, &response).await?;
    tx.commit().await?;
    Ok(response.into_response())
}

/// List webhook endpoints, newest first (admins).
#[utoipa::path(
    get, path = "/v1/webhooks", tag = "webhooks",
    params(Paging),
    responses(
        (status = 200, description = "A page of endpoints", body = Page<Webhook>),
        (status = 403, description = "Not an admin"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<Paging>,
) -> Result<axum::Json<Page<Webhook>>, ApiError> {
    caller.require(Capability::Admin)?;
    let limit = q.limit.unwrap_or_default();
    let rows = db::webhooks::list(&state.pool, q.cursor.map(|c| c.0), limit.fetch()).await?;
    let cursor = |last: &Webhook| Cursor(last.id).to_string();
    Ok(axum::Json(Page::new(rows, limit, cursor, |w| w)))
}

/// One webhook endpoint (admins).
#[utoipa::path(
    get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint", body = Webhook),
        (status = 403, description = "Not an admin"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<axum::Json<Webhook>, ApiError> {
    caller.require(Capability::Admin)?;
    let webhook = db::webhooks::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    Ok(axum::Json(webhook))
}

/// Change a webhook endpoint: its URL, events, description, or whether it is active (admins).
#[utoipa::path(
    patch, path = "/v1/webhooks/{id}", tag = "webhooks",
    request_body = WebhookPatch,
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "Changed", body = Webhook),
        (status = 403, description = "Not an admin"),
        (status = 422, description = "A bad URL or event"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn update_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
    body: Json<WebhookPatch>,
) -> Result<axum::Json<Webhook>, ApiError> {
    state.require_admin(&caller, Action::UpdateWebhook).await?;
    let patch = &body.value;
    let mut errors = Vec::new();
    if let Some(url) = &patch.url {
        check_url(url, &mut errors);
    }
    check_events(patch.events.as_deref().unwrap_or_default(), &mut errors);
    check_description(patch.description.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if let Some(url) = &patch.url
        && !state.config.webhook_allow_private
    {
        check_destination(url).await?;
    }
    let change = WebhookChange {
        url: patch.url.as_deref(),
        events: patch.events.as_deref(),
        description: patch.description.as_deref(),
        active: patch.active,
    };
    let mut tx = state.pool.begin().await?;
    let webhook = db::webhooks::update(&mut tx, id, change)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    state
        .audit(
            &mut tx,
            AppState::webhook_event(&caller, Action::UpdateWebhook, &webhook),
        )
        .await?;
    tx.commit().await?;
    Ok(axum::Json(webhook))
}

/// Remove a webhook endpoint and its delivery log (admins).
#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Not an admin"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn delete_webhook(State(state): State<AppState>, caller: Caller, Id(id): Id) -> Result<StatusCode, ApiError> {
    state.require_admin(&caller, Action::DeleteWebhook).await?;
    let mut tx = state.pool.begin().await?;
    let webhook = db::webhooks::find(&mut *tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    db::webhooks::delete(&mut tx, id).await?;
    state
        .audit(
            &mut tx,
            AppState::webhook_event(&caller, Action::DeleteWebhook, &webhook),
        )
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The endpoint's delivery log, newest first (admins): each event sent, its tries and the
/// receiver's answers.
#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The endpoint's id"), Paging),
    responses(
        (status = 200, description = "A page of deliveries", body = Page<DeliveryView>),
        (status = 403, description = "Not an admin"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
    Query(q): Query<Paging>,
) -> Result<axum::Json<Page<DeliveryView>>, ApiError> {
    caller.require(Capability::Admin)?;
    db::webhooks::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    let limit = q.limit.unwrap_or_default();
    let rows = db::webhooks::deliveries(&state.pool, id, q.cursor.map(|c| c.0), limit.fetch()).await?;
    let cursor = |last: &Delivery| Cursor(last.id).to_string();
    Ok(axum::Json(Page::new(rows, limit, cursor, DeliveryView::from)))
}
