//! What a caller may narrow a list of requests, shares or audit events to: one filter per
//! resource, read from the query string by the API and applied by the database, the same
//! type on both sides (and for the audit log, in pages and exports alike). `None` means "any".

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::drift::{DriftKind, FindingState};
use super::{Outcome, RequestStatus, ShareState};

/// Filters for share requests.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestFilter {
    /// Only requests in this status.
    pub status: Option<RequestStatus>,
    /// Only requests for this image.
    pub image_id: Option<Uuid>,
    /// Only requests with this target project (id or name as filed).
    pub project_id: Option<String>,
    /// Only requests filed by this principal.
    pub requested_by: Option<String>,
    /// Only requests created at or after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Only requests created before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
}

/// Filters for shares.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ShareFilter {
    /// Only shares in this state.
    pub state: Option<ShareState>,
    /// Only shares of this image.
    pub image_id: Option<Uuid>,
    /// Only shares to this project (id, or name as filed).
    pub project_id: Option<String>,
    /// Only shares of this request.
    pub request_id: Option<Uuid>,
    /// Only shares whose request this principal filed.
    pub requested_by: Option<String>,
    /// Only shares created at or after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Only shares created before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
}

/// Filters for the audit log: its pages, its exports and the access reports built on it.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Only events about this image.
    pub image_id: Option<Uuid>,
    /// Only events with this project on either side: the member project, the image's owner,
    /// or the caller's own project.
    pub project_id: Option<String>,
    /// Only events initiated by this principal (the initiator's name: a key's name, `worker`, `expiry`).
    pub actor: Option<String>,
    /// Only this action, e.g. `allow`, `revoke`, `update/approve`.
    pub action: Option<String>,
    /// Only this outcome.
    #[param(inline)]
    pub outcome: Option<Outcome>,
    /// Only events at or after this time (RFC 3339).
    pub after: Option<DateTime<Utc>>,
    /// Only events before this time (RFC 3339).
    pub before: Option<DateTime<Utc>>,
    /// Only events about this share request.
    pub request_id: Option<Uuid>,
    /// Only events about this share.
    pub share_id: Option<Uuid>,
    /// Only events with any of these actions (the access reports; not a query parameter).
    #[serde(skip)]
    pub actions: Vec<String>,
    /// Only events whose member project is this one (the project's access history; not a
    /// query parameter).
    #[serde(skip)]
    pub member_project_id: Option<String>,
}

/// Filters for drift findings.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DriftFilter {
    /// Only findings about this image.
    pub image_id: Option<Uuid>,
    /// Only findings about this member project.
    pub project_id: Option<String>,
    /// Only findings of this kind.
    pub kind: Option<DriftKind>,
    /// Only `open` or only `resolved` findings.
    pub state: Option<FindingState>,
}
