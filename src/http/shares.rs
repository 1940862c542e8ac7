//! `/v1/shares`: one image granted to one project.

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{Caller, Id, IdempotencyKey, IfMatch, Json, Listing, etag};
use super::idempotency::{self, Begun, Saved};
use super::pagination::{Cursor, Page, Paging};
use super::{ApiError, AppState, access};
use crate::db::shares::{RevokeStart, Share};
use crate::db::{self, audit::NewEvent, jobs::Kind, share_requests::ShareRequest};
use crate::domain::decisions;
use crate::domain::filters::ShareFilter;
use crate::domain::{
    Action as Audited, Capability, Outcome, REJECTED_BY_CONSUMER, Refusal, RevokeCause, Subject, Trigger,
};

/// A share as the API shows it: the row itself, less the columns it keeps to itself.
pub use crate::db::shares::Share as ShareView;

/// List shares, newest first: those the caller may see (its projects' shares, those made to
/// its projects, and those it filed; everything for approvers, auditors and admins).
#[utoipa::path(
    get, path = "/v1/shares", tag = "shares",
    params(ShareFilter, Paging),
    responses(
        (status = 200, description = "A page of shares", body = Page<ShareView>),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn list_shares(
    State(state): State<AppState>,
    caller: Caller,
    Listing { filter, paging }: Listing<ShareFilter>,
) -> Result<axum::Json<Page<ShareView>>, ApiError> {
    let viewer = access::viewer(&caller.principal);
    let limit = paging.limit.unwrap_or_default();
    let before = paging.cursor.map(|c| c.0);
    let rows = db::shares::list(&state.pool, viewer.as_ref(), &filter, before, limit.fetch()).await?;
    let cursor = |last: &Share| Cursor(last.id).to_string();
    Ok(axum::Json(Page::new(rows, limit, cursor, |share| share)))
}

/// One share.
#[utoipa::path(
    get, path = "/v1/shares/{id}", tag = "shares",
    params(("id" = Uuid, Path, description = "The share's id")),
    responses(
        (status = 200, description = "The share", body = ShareView, headers(("ETag" = String))),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn get_share(State(state): State<AppState>, caller: Caller, Id(id): Id) -> Result<Response, ApiError> {
    let share = db::shares::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("share"))?;
    let request = db::share_requests::find(&state.pool, share.request_id)
        .await?
        .ok_or_else(|| ApiError::not_found("share"))?;
    if !access::sees_share(&caller.principal, &share, &request) {
        return Err(ApiError::not_found("share"));
    }
    let version = share.version;
    Ok(Saved::json(StatusCode::OK, &share)
        .header(header::ETAG, etag(version))
        .into_response())
}

/// Why a share is being revoked.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeInput {
    /// Required: shown on the share and in the audit log (at most 1,000 characters).
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
}

/// What a caller asks of a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Accept,
    Reject,
    Revoke,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Revoke => "revoke",
        }
    }

    fn audited(self) -> Audited {
        match self {
            Action::Accept => Audited::Accept,
            Action::Reject => Audited::Reject,
            Action::Revoke => Audited::Revoke,
        }
    }
}

/// Accept a share for the consumer project (its members' keys, or an admin).
///
/// The worker sets the Glance member to `accepted`; the share shows `accepted` once done.
#[utoipa::path(
    post, path = "/v1/shares/{id}/accept", tag = "shares",
    params(("id" = Uuid, Path, description = "The share's id"), IfMatch, IdempotencyKey),
    responses(
        (status = 202, description = "Queued for the worker", body = ShareView, headers(("ETag" = String))),
        (status = 403, description = "Not the consumer project", body = super::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The share is not granted", body = super::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn accept_share(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
    if_match: IfMatch,
    key: IdempotencyKey,
) -> Result<Response, ApiError> {
    consumer_act(&state, &caller, id, if_match, key, Action::Accept).await
}

/// Reject a share for the consumer project (its members' keys, or an admin).
///
/// A rejected member still lets the consumer boot the image by id, so a rejection removes it:
/// the share goes `revoking` at once (reason "rejected by the consumer"), and `revoked` once
/// the worker has removed the member (and made the image `private` again when the broker made
/// it `shared` and no member is left).
#[utoipa::path(
    post, path = "/v1/shares/{id}/reject", tag = "shares",
    params(("id" = Uuid, Path, description = "The share's id"), IfMatch, IdempotencyKey),
    responses(
        (status = 202, description = "Queued for the worker", body = ShareView, headers(("ETag" = String))),
        (status = 403, description = "Not the consumer project", body = super::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The share is not granted", body = super::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn reject_share(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
    if_match: IfMatch,
    key: IdempotencyKey,
) -> Result<Response, ApiError> {
    consumer_act(&state, &caller, id, if_match, key, Action::Reject).await
}

/// Revoke a granted share (the requester who filed it, or an admin), with a reason.
///
/// The worker removes the member from Glance; if the broker made the image `shared` and no
/// member is left, it makes the image `private` again.
#[utoipa::path(
    post, path = "/v1/shares/{id}/revoke", tag = "shares",
    request_body = RevokeInput,
    params(("id" = Uuid, Path, description = "The share's id"), IfMatch, IdempotencyKey),
    responses(
        (status = 202, description = "Queued for the worker", body = ShareView, headers(("ETag" = String))),
        (status = 403, description = "Not the requester", body = super::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not revocable in its state", body = super::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason", body = super::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn revoke_share(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
    if_match: IfMatch,
    key: IdempotencyKey,
    body: Json<RevokeInput>,
) -> Result<Response, ApiError> {
    let reason = body.value.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::field("reason", "is required: say why"));
    }
    if let Some(problem) = crate::domain::free_text_problem(reason) {
        return Err(ApiError::field("reason", problem));
    }
    act(
        &state,
        &caller,
        id,
        if_match,
        key,
        &body.document,
        Action::Revoke,
        Some(reason),
    )
    .await
}

/// Whether `caller` may do `action` to `share`: accept or reject as its consumer project,
/// revoke as the subject its request was filed for (or a requester of the image's project);
/// admins do everything.
fn may_act(caller: &Caller, share: &Share, request: &ShareRequest, action: Action) -> Result<(), ApiError> {
    let principal = &caller.principal;
    if !access::sees_share(principal, share, request) {
        return Err(ApiError::not_found("share"));
    }
    match action {
        Action::Accept | Action::Reject => {
            let consumer = share
                .project_id
                .as_deref()
                .is_some_and(|p| principal.may(Capability::Consume, Some(p)));
            if consumer {
                return Ok(());
            }
            Err(ApiError::Forbidden(
                "only the consumer project, or an admin, may accept or reject a share".into(),
            ))
        }
        Action::Revoke => {
            let owner_requester = request
                .image_owner
                .as_deref()
                .is_some_and(|p| principal.may(Capability::Request, Some(p)));
            let requester = Subject::parse(&request.requested_by_subject);
            decisions::may_revoke(&caller.subject, principal.is_admin(), &requester, owner_requester)
                .map_err(|refusal| ApiError::Forbidden(refusal.detail().into()))
        }
    }
}

/// [`act`] for the consumer's calls (accept, reject): no body, no reason.
async fn consumer_act(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    if_match: IfMatch,
    key: IdempotencyKey,
    action: Action,
) -> Result<Response, ApiError> {
    act(state, caller, id, if_match, key, &serde_json::Value::Null, action, None).await
}

/// Checks who may do `action` to the share and whether its state allows it, then records the
/// ask, its audit event and the worker's job in one transaction.
#[allow(clippy::too_many_arguments)]
async fn act(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    if_match: IfMatch,
    key: IdempotencyKey,
    document: &serde_json::Value,
    action: Action,
    reason: Option<&str>,
) -> Result<Response, ApiError> {
    let path = format!("/v1/shares/{id}/{}", action.verb());
    let (mut tx, claim) = match idempotency::begin(state, caller, key, &Method::POST, &path, document).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Proceed(tx, claim) => (tx, claim),
    };
    let share = db::shares::find_for_update(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("share"))?;
    let request = db::share_requests::find(&mut *tx, share.request_id)
        .await?
        .ok_or_else(|| ApiError::not_found("share"))?;
    if let Err(refusal) = may_act(caller, &share, &request, action) {
        tx.rollback().await?;
        let attempt = NewEvent::about_share(&caller.initiator, &share, action.audited(), Outcome::Failure);
        return Err(state.refused(caller, attempt, refusal).await);
    }
    if_match.check(&etag(share.version))?;

    // The share's state machine decides, as the worker's does when it records the outcome.
    let trigger = match action {
        Action::Accept => Trigger::Accept,
        Action::Reject => Trigger::Reject,
        Action::Revoke => Trigger::Revoke,
    };
    let refused = |refusal: Refusal| ApiError::Conflict {
        detail: refusal.to_string(),
        errors: Vec::new(),
    };
    share.state.on(trigger).map_err(refused)?;
    // A revoke, and a rejection (a rejected member still gives access in Glance: only its
    // removal takes access away), start revoking now: from here on a revoke wins over every
    // accept, reject, poll and expiry the worker may be carrying out.
    let start = match action {
        Action::Accept => None,
        Action::Reject => Some(RevokeStart {
            by: &caller.principal.name,
            reason: REJECTED_BY_CONSUMER,
            cause: RevokeCause::Rejected,
            last_error: None,
        }),
        Action::Revoke => Some(RevokeStart {
            by: &caller.principal.name,
            reason: reason.unwrap_or_default(),
            cause: RevokeCause::Requested,
            last_error: None,
        }),
    };
    let (share, kind) = match start {
        None => (share, Kind::Accept),
        Some(start) => {
            // The share is locked: the guard holds unless the lock is gone.
            let revoking = db::shares::start_revoke(&mut tx, id, share.state, start)
                .await?
                .ok_or_else(|| {
                    refused(Refusal {
                        state: share.state,
                        trigger,
                    })
                })?;
            (revoking, Kind::Revoke)
        }
    };
    let event = NewEvent {
        reason,
        correlation_id: caller.request_id.as_deref(),
        ..NewEvent::about_share(&caller.initiator, &share, action.audited(), Outcome::Pending)
    };
    state.audit(&mut tx, event).await?;
    db::jobs::enqueue(&mut tx, kind, share.id, share.image_id, Utc::now()).await?;

    let version = share.version;
    let response = Saved::json(StatusCode::ACCEPTED, &share).header(header::ETAG, etag(version));
    idempotency::finish(&mut tx, claim, &response).await?;
    tx.commit().await?;
    Ok(response.into_response())
}
