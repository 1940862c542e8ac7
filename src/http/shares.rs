//! `/v1/shares`: one image granted to one project.

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::extract::{Caller, Id, IdempotencyKey, IfMatch, Listing, etag};
use super::idempotency::{self, Begun, Saved};
use super::pagination::{Cursor, Page, Paging};
use super::{ApiError, AppState, access};
use crate::db::shares::{RevokeStart, Share};
use crate::db::{self, audit::NewEvent, jobs::Kind, share_requests::ShareRequest};
use crate::domain::decisions;
use crate::domain::filters::ShareFilter;
use crate::domain::{
    Action as Audited, Capability, Outcome, REJECTED_BY_CONSUMER, Refusal, RevokeCause, ShareState, Subject, Trigger,
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
    let share = view_share(&state, &caller, id).await?;
    let version = share.version;
    Ok(Saved::json(StatusCode::OK, &share)
        .header(header::ETAG, etag(version))
        .into_response())
}

/// One share as [`get_share`] shows it to `caller` (404 when it may not see it).
pub(super) async fn view_share(state: &AppState, caller: &Caller, id: Uuid) -> Result<ShareView, ApiError> {
    let share = db::shares::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("share"))?;
    let request = db::share_requests::find(&state.pool, share.request_id)
        .await?
        .ok_or_else(|| ApiError::not_found("share"))?;
    if !access::sees_share(&caller.principal, &share, &request) {
        return Err(ApiError::not_found("share"));
    }
    Ok(share)
}

/// What a caller asks of a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Accept,
    Reject,
    /// Revoke now; refused (before this runs) while something depends on the image.
    Revoke,
    /// Revoke now although something depends on the image.
    ForceRevoke,
    /// Revoke at this time; in force until then.
    ScheduleRevoke(DateTime<Utc>),
    /// Cancel a scheduled revoke.
    CancelRevocation,
}

impl Action {
    /// The method and path the caller used (the idempotency key's scope).
    fn route(self, id: Uuid) -> (Method, String) {
        let verb = match self {
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Revoke | Action::ForceRevoke | Action::ScheduleRevoke(_) => "revoke",
            Action::CancelRevocation => return (Method::DELETE, format!("/v1/shares/{id}/revocation")),
        };
        (Method::POST, format!("/v1/shares/{id}/{verb}"))
    }

    fn audited(self) -> Audited {
        match self {
            Action::Accept => Audited::Accept,
            Action::Reject => Audited::Reject,
            Action::Revoke | Action::ForceRevoke | Action::ScheduleRevoke(_) => Audited::Revoke,
            Action::CancelRevocation => Audited::Cancel,
        }
    }

    /// What the action does to the share, for its state machine.
    fn trigger(self, share: &Share) -> Trigger {
        match self {
            Action::Accept => Trigger::Accept,
            Action::Reject => Trigger::Reject,
            Action::Revoke | Action::ForceRevoke => Trigger::Revoke,
            Action::ScheduleRevoke(_) => Trigger::ScheduleRevoke,
            Action::CancelRevocation => Trigger::CancelScheduledRevoke {
                accepted: share.revoke_scheduled_from.as_deref() == Some(ShareState::Accepted.as_ref()),
            },
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
        (status = 403, description = "Not the consumer project"),
        (status = 409, description = "The share is not granted"),
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
        (status = 403, description = "Not the consumer project"),
        (status = 409, description = "The share is not granted"),
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

/// Whether `caller` may do `action` to `share`: accept or reject as its consumer project,
/// revoke as the subject its request was filed for (or a requester of the image's project);
/// admins do everything.
pub(super) fn may_act(caller: &Caller, share: &Share, request: &ShareRequest, action: Action) -> Result<(), ApiError> {
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
        _ => {
            let owner_requester = request
                .image_owner
                .as_deref()
                .is_some_and(|p| principal.may(Capability::Request, Some(p)));
            let requester = Subject::parse(&request.requested_by_subject);
            let forbidden = |refusal: decisions::Refusal| ApiError::Forbidden(refusal.detail().into());
            decisions::may_revoke(&caller.subject, principal.is_admin(), &requester, owner_requester)
                .map_err(forbidden)?;
            if action == Action::ForceRevoke {
                decisions::may_force_revoke(principal.is_admin(), owner_requester).map_err(forbidden)?;
            }
            Ok(())
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
    let ask = Ask {
        action,
        document: &serde_json::Value::Null,
        reason: None,
        details: serde_json::Value::Null,
    };
    act(state, caller, id, if_match, key, ask).await
}

/// One ask of a share: the action, the body it came with, and what its audit event says.
pub(super) struct Ask<'a> {
    pub action: Action,
    pub document: &'a serde_json::Value,
    pub reason: Option<&'a str>,
    /// The audit event's details (and, for a revoke, the dependents it records).
    pub details: serde_json::Value,
}

/// Checks who may do the ask's action to the share and whether its state allows it, then
/// records the change, its audit event and the worker's job (if any) in one transaction.
pub(super) async fn act(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    if_match: IfMatch,
    key: IdempotencyKey,
    ask: Ask<'_>,
) -> Result<Response, ApiError> {
    let Ask {
        action,
        document,
        reason,
        details,
    } = ask;
    let (method, path) = action.route(id);
    let (mut tx, claim) = match idempotency::begin(state, caller, key, &method, &path, document).await? {
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
    let trigger = action.trigger(&share);
    let refused = |refusal: Refusal| ApiError::Conflict {
        detail: refusal.to_string(),
        errors: Vec::new(),
    };
    let next = share.state.on(trigger).map_err(refused)?;
    // The share is locked: each guard below holds unless the lock is gone.
    let lost = || {
        refused(Refusal {
            state: share.state,
            trigger,
        })
    };
    let by = caller.principal.name.as_str();
    // A revoke, and a rejection (a rejected member still gives access in Glance: only its
    // removal takes access away), start revoking now: from here on a revoke wins over every
    // accept, reject, poll and expiry the worker may be carrying out.
    let revoke = |reason, cause| RevokeStart {
        by,
        reason,
        cause,
        last_error: None,
        // What the API found depending on the image, when it looked (a person's revoke).
        dependents: details.get("dependents").is_some().then_some(&details),
    };
    let (changed, job) = match action {
        Action::Accept => (share, Some(Kind::Accept)),
        Action::Reject | Action::Revoke | Action::ForceRevoke => {
            let start = match action {
                Action::Reject => revoke(REJECTED_BY_CONSUMER, RevokeCause::Rejected),
                _ => revoke(reason.unwrap_or_default(), RevokeCause::Requested),
            };
            let revoking = db::shares::start_revoke(&mut tx, id, share.state, start).await?;
            (revoking.ok_or_else(lost)?, Some(Kind::Revoke))
        }
        Action::ScheduleRevoke(at) => {
            let schedule = db::shares::Schedule {
                by,
                reason: reason.unwrap_or_default(),
                effective_at: at,
            };
            let scheduled = db::shares::schedule_revoke(&mut tx, id, share.state, schedule).await?;
            // The sweep starts the revoke when it is due.
            (scheduled.ok_or_else(lost)?, None)
        }
        Action::CancelRevocation => {
            let back = db::shares::cancel_scheduled_revoke(&mut tx, id, next).await?;
            // Polls stop while a revoke is scheduled: a share back to waiting for the
            // consumer is polled again.
            let poll = (next == ShareState::PendingAcceptance).then_some(Kind::Poll);
            (back.ok_or_else(lost)?, poll)
        }
    };
    let outcome = match action {
        Action::CancelRevocation => Outcome::Success,
        _ => Outcome::Pending,
    };
    let event = NewEvent {
        reason,
        correlation_id: caller.request_id.as_deref(),
        details,
        ..NewEvent::about_share(&caller.initiator, &changed, action.audited(), outcome)
    };
    state.audit(&mut tx, event).await?;
    if let Some(kind) = job {
        db::jobs::enqueue(&mut tx, kind, changed.id, changed.image_id, Utc::now()).await?;
    }

    let version = changed.version;
    let status = match action {
        Action::CancelRevocation => StatusCode::OK,
        _ => StatusCode::ACCEPTED,
    };
    let response = Saved::json(status, &changed).header(header::ETAG, etag(version));
    idempotency::finish(&mut tx, claim, &response).await?;
    tx.commit().await?;
    Ok(response.into_response())
}
