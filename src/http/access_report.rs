//! Who had access to what, when (not who may call what: that is `access`): answers derived
//! from the audit log alone, so they hold for any past moment and agree with what an auditor
//! can check in the chain. The replay itself is `domain::access`; here the events are read
//! and the answers shaped.

use std::pin::pin;

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::audit::require_auditor;
use super::extract::{Caller, Id, Query};
use super::pagination::{Page, SeqCursor, SeqPaging};
use super::{ApiError, AppState};
use crate::db::{self, audit::Event, audit::EventFilter};
use crate::domain::Outcome;
use crate::domain::access::{AccessEvent, Change, ProjectAccess, Replay};

fn access_events() -> EventFilter {
    EventFilter {
        actions: Change::ACTIONS.map(|a| a.to_string()).to_vec(),
        outcome: Some(Outcome::Success),
        ..EventFilter::default()
    }
}

fn text(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The projects an image was shared with at one moment.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageAccess {
    pub image_id: Uuid,
    pub at: DateTime<Utc>,
    /// By region and project id.
    pub projects: Vec<ProjectAccess>,
}

/// The moment asked about.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AccessAt {
    /// Any past moment (RFC 3339); now when absent.
    pub at: Option<DateTime<Utc>>,
}

/// Which projects had access to an image at a moment, since when, and granted by whom
/// (auditors and admins).
///
/// Derived from the audit log: replays the image's grants, status changes and revokes up to
/// `at`.
#[utoipa::path(
    get, path = "/v1/images/{image_id}/access", tag = "audit",
    params(("image_id" = Uuid, Path, description = "The Glance image id"), AccessAt),
    responses(
        (status = 200, description = "The projects with access", body = ImageAccess),
        (status = 403, description = "Not an auditor"),
    ),
    security(("api_key" = []))
)]
pub async fn image_access(
    State(state): State<AppState>,
    caller: Caller,
    Id(image_id): Id,
    Query(q): Query<AccessAt>,
) -> Result<axum::Json<ImageAccess>, ApiError> {
    require_auditor(&caller)?;
    let at = q.at.unwrap_or_else(Utc::now);
    let filter = EventFilter {
        image_id: Some(image_id),
        // Events stored to the microsecond: one at `at` itself counts.
        before: Some(at + chrono::Duration::microseconds(1)),
        ..access_events()
    };
    let mut events = pin!(db::audit::stream(state.log(), filter, 0));
    let mut replay = Replay::default();
    while let Some(event) = events.try_next().await? {
        if let Some(event) = access_event(event) {
            replay.apply(event);
        }
    }
    Ok(axum::Json(ImageAccess {
        image_id,
        at,
        projects: replay.projects(),
    }))
}

/// The access change `event` records, when it names its project and region.
fn access_event(event: Event) -> Option<AccessEvent> {
    Some(AccessEvent {
        change: Change::of_action(&event.action)?,
        at: event.occurred_at,
        project_id: event.project_id?,
        region: text(&event.target, "region")?,
        share_id: event.share_id,
        request_id: event.request_id,
        requested_by: text(&event.details, "requested_by"),
        approved_by: text(&event.details, "approved_by"),
    })
}

/// One change of a project's access to an image.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessChange {
    pub at: DateTime<Utc>,
    /// `granted`, `accepted`, `rejected` or `revoked`.
    pub change: String,
    pub image_id: Option<Uuid>,
    pub image_name: Option<String>,
    pub owner_project_id: Option<String>,
    /// The consumer project whose access changed.
    pub project_id: Option<String>,
    pub region: Option<String>,
    pub share_id: Option<Uuid>,
    pub request_id: Option<Uuid>,
    /// Who: the approver of a grant, the revoker of a revoke (a principal, or `expiry`), else
    /// the initiator.
    pub by: Option<String>,
    pub reason: Option<String>,
    /// The broker saw the change in Glance rather than making it.
    pub observed_in_glance: bool,
    /// The audit event this comes from.
    pub event_id: Uuid,
}

impl From<Event> for AccessChange {
    fn from(e: Event) -> Self {
        // The access history reads access events only.
        let change = Change::of_action(&e.action).unwrap_or(Change::Rejected);
        let by = match change {
            Change::Granted => text(&e.details, "approved_by"),
            Change::Revoked => text(&e.details, "revoked_by"),
            Change::Accepted | Change::Rejected => None,
        };
        AccessChange {
            at: e.occurred_at,
            change: change.as_str().into(),
            image_id: e.image_id,
            image_name: text(&e.target, "image_name"),
            owner_project_id: text(&e.target, "owner_project_id"),
            project_id: e.project_id,
            region: text(&e.target, "region"),
            share_id: e.share_id,
            request_id: e.request_id,
            by: by.or_else(|| text(&e.initiator, "name")),
            reason: e.reason,
            observed_in_glance: e.details.get("observed_in_glance") == Some(&Value::Bool(true)),
            event_id: e.id,
        }
    }
}

/// Every grant, status change and revoke of one project's access, across images, oldest
/// first (auditors and admins).
#[utoipa::path(
    get, path = "/v1/projects/{project_id}/access-history", tag = "audit",
    params(("project_id" = String, Path, description = "The Keystone project id of the consumer"), SeqPaging),
    responses(
        (status = 200, description = "A page of changes", body = Page<AccessChange>),
        (status = 403, description = "Not an auditor"),
    ),
    security(("api_key" = []))
)]
pub async fn project_access_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(project_id): Path<String>,
    Query(q): Query<SeqPaging>,
) -> Result<axum::Json<Page<AccessChange>>, ApiError> {
    require_auditor(&caller)?;
    let filter = EventFilter {
        member_project_id: Some(project_id),
        ..access_events()
    };
    access_changes(&state, filter, q).await
}

/// Every grant, status change and revoke of access to one image, across projects, oldest
/// first (auditors and admins): each project's access runs from a `granted` to the next
/// `revoked`.
#[utoipa::path(
    get, path = "/v1/images/{image_id}/access-history", tag = "audit",
    params(("image_id" = Uuid, Path, description = "The Glance image id"), SeqPaging),
    responses(
        (status = 200, description = "A page of changes", body = Page<AccessChange>),
        (status = 403, description = "Not an auditor"),
    ),
    security(("api_key" = []))
)]
pub async fn image_access_history(
    State(state): State<AppState>,
    caller: Caller,
    Id(image_id): Id,
    Query(q): Query<SeqPaging>,
) -> Result<axum::Json<Page<AccessChange>>, ApiError> {
    require_auditor(&caller)?;
    let filter = EventFilter {
        image_id: Some(image_id),
        ..access_events()
    };
    access_changes(&state, filter, q).await
}

/// A page of the access changes `filter` picks, in chain order.
async fn access_changes(
    state: &AppState,
    filter: EventFilter,
    q: SeqPaging,
) -> Result<axum::Json<Page<AccessChange>>, ApiError> {
    let limit = q.limit.unwrap_or_default();
    let after = q.cursor.map_or(0, |c| c.0);
    let rows = db::audit::page(&state.log(), &filter, after, limit.fetch()).await?;
    Ok(axum::Json(Page::new(rows, limit, SeqCursor::after, AccessChange::from)))
}
