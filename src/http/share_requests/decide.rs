//! Deciding a share request: cancel (its requester), approve and deny (approvers), each
//! checked against who may decide (`domain::decisions`), the request's ETag and its status,
//! and recorded with its audit event in one transaction.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;

use super::{ShareRequestView, saved_request};
use crate::db::{self, audit::NewEvent, share_requests::ShareRequest};
use crate::domain::decisions::{self, Ask, Refusal, Standing};
use crate::domain::{Action, Capability, Outcome, RequestStatus, Subject, Validation};
use crate::http::extract::{Caller, Id, IdempotencyKey, IfMatch, Json, OptionalJson, etag};
use crate::http::idempotency::{self, Begun};
use crate::http::{ApiError, AppState, access};

/// A decision's optional comment.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why: shown on the request and in the audit log (at most 1,000 characters).
    #[schema(max_length = 1000)]
    pub comment: Option<String>,
}

/// Cancel a request that is still waiting for a decision (its requester, or an admin).
#[utoipa::path(
    post, path = "/v1/share-requests/{id}/cancel", tag = "share-requests",
    params(("id" = Uuid, Path, description = "The request's id"), IfMatch, IdempotencyKey),
    request_body(content = Decision, description = "Optional; an empty body is fine"),
    responses(
        (status = 200, description = "Cancelled", body = ShareRequestView, headers(("ETag" = String))),
        (status = 403, description = "Not the requester"),
        (status = 409, description = "Already decided"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn cancel_share_request(
    state: State<AppState>,
    caller: Caller,
    id: Id,
    if_match: IfMatch,
    key: IdempotencyKey,
    OptionalJson(body): OptionalJson<Decision>,
) -> Result<Response, ApiError> {
    decide(state, caller, id, if_match, key, body, RequestStatus::Cancelled).await
}

/// Approve a request (approvers and admins; never one's own request).
#[utoipa::path(
    post, path = "/v1/share-requests/{id}/approve", tag = "share-requests",
    params(("id" = Uuid, Path, description = "The request's id"), IfMatch, IdempotencyKey),
    request_body(content = Decision, description = "Optional; an empty body is fine"),
    responses(
        (status = 200, description = "Approved", body = ShareRequestView, headers(("ETag" = String))),
        (status = 403, description = "Not an approver, or the approver's own request"),
        (status = 409, description = "Already decided, or not validated yet"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn approve_share_request(
    state: State<AppState>,
    caller: Caller,
    id: Id,
    if_match: IfMatch,
    key: IdempotencyKey,
    OptionalJson(body): OptionalJson<Decision>,
) -> Result<Response, ApiError> {
    decide(state, caller, id, if_match, key, body, RequestStatus::Approved).await
}

/// Deny a request (approvers and admins; never one's own request).
#[utoipa::path(
    post, path = "/v1/share-requests/{id}/deny", tag = "share-requests",
    params(("id" = Uuid, Path, description = "The request's id"), IfMatch, IdempotencyKey),
    request_body(content = Decision, description = "Optional; an empty body is fine"),
    responses(
        (status = 200, description = "Denied", body = ShareRequestView, headers(("ETag" = String))),
        (status = 403, description = "Not an approver, or the approver's own request"),
        (status = 409, description = "Already decided"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn deny_share_request(
    state: State<AppState>,
    caller: Caller,
    id: Id,
    if_match: IfMatch,
    key: IdempotencyKey,
    OptionalJson(body): OptionalJson<Decision>,
) -> Result<Response, ApiError> {
    decide(state, caller, id, if_match, key, body, RequestStatus::Denied).await
}

/// Whether `caller` may move `request` to `to`: cancel what was filed for it (admins
/// anything); decide within its approval scope, never a request filed by or for itself, and
/// approve once (the rules compare subjects: `domain::decisions`).
fn may_decide(
    caller: &Caller,
    request: &ShareRequest,
    earlier: &[db::share_requests::Approval],
    to: RequestStatus,
) -> Result<(), ApiError> {
    let principal = &caller.principal;
    if !access::sees_request(principal, request) {
        return Err(ApiError::not_found("share request"));
    }
    let ask = match to {
        RequestStatus::Approved => Ask::Approve,
        RequestStatus::Denied => Ask::Deny,
        _ => Ask::Cancel,
    };
    let earlier: Vec<Subject> = earlier.iter().map(|a| Subject::parse(&a.approver_subject)).collect();
    let requester = Subject::parse(&request.requested_by_subject);
    decisions::may_decide(&caller.subject, principal.is_admin(), &requester, &earlier, ask).map_err(|refusal| {
        match refusal {
            Refusal::AlreadyApproved => ApiError::Conflict {
                detail: refusal.detail().into(),
                errors: Vec::new(),
            },
            _ => ApiError::Forbidden(refusal.detail().into()),
        }
    })?;
    if ask != Ask::Cancel
        && !principal.may_in(
            Capability::Approve,
            request.image_owner.as_deref(),
            request.image_owner_domain.as_deref(),
        )
    {
        return Err(ApiError::Forbidden(
            "the request's image belongs to a project outside the projects you may approve for".into(),
        ));
    }
    Ok(())
}

/// Records the caller's approval; approves the request once it has as many distinct
/// approvers as the policy requires (and queues its grants). Each approval is audited
/// (`pending` until the last); the request as it now stands is returned.
async fn approve(
    state: &AppState,
    tx: &mut PgConnection,
    caller: &Caller,
    request: ShareRequest,
    comment: Option<&str>,
) -> Result<ShareRequest, ApiError> {
    let id = request.id;
    let earlier = db::share_requests::approvals_of(&mut *tx, &[id]).await?;
    let earlier: Vec<Subject> = earlier.iter().map(|a| Subject::parse(&a.approver_subject)).collect();
    let required = usize::try_from(request.required_approvals).unwrap_or(1);
    let already_approved = || ApiError::Conflict {
        detail: Refusal::AlreadyApproved.detail().into(),
        errors: Vec::new(),
    };
    let standing = decisions::approve(&caller.subject, &earlier, required).map_err(|_| already_approved())?;
    let subject = caller.subject.to_string();
    let approver = db::share_requests::Approver {
        name: &caller.principal.name,
        subject: &subject,
        on_behalf_of: caller.on_behalf_of.as_deref(),
    };
    // The database holds the rule too: one approval per subject, even for two at once.
    if db::share_requests::add_approval(tx, id, approver, comment)
        .await?
        .is_none()
    {
        return Err(already_approved());
    }
    let given = earlier.len() + 1;
    let progress = json!({ "approvals": given, "required": required, "rule": request.policy_rule, "subject": subject });
    if let Standing::Waiting { .. } = standing {
        let request = db::share_requests::find(&mut *tx, id)
            .await?
            .ok_or_else(|| ApiError::not_found("share request"))?;
        let event = NewEvent {
            outcome: Outcome::Pending,
            reason: comment,
            details: progress,
            ..AppState::event(caller, &request, Action::Approve)
        };
        state.audit(tx, event).await?;
        return Ok(request);
    }
    let (request, decided) =
        db::share_requests::decide(tx, id, RequestStatus::Approved, &caller.principal.name, comment).await?;
    db::jobs::enqueue_grants(tx, &decided).await?;
    let event = NewEvent {
        reason: comment,
        details: progress,
        ..AppState::event(caller, &request, Action::Approve)
    };
    state.audit(tx, event).await?;
    Ok(request)
}

/// Moves an undecided request to `to`, with its shares and its audit event, in one transaction,
/// once the caller has the capability the move needs (cancel: `request`; else `approve`).
async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
    if_match: IfMatch,
    key: IdempotencyKey,
    body: Json<Decision>,
    to: RequestStatus,
) -> Result<Response, ApiError> {
    let (capability, action, verb) = match to {
        RequestStatus::Approved => (Capability::Approve, Action::Approve, "approve"),
        RequestStatus::Denied => (Capability::Approve, Action::Deny, "deny"),
        _ => (Capability::Request, Action::Cancel, "cancel"),
    };
    state.require(&caller, capability, action, Some(id)).await?;
    let comment = body.value.comment.as_deref().map(str::trim).filter(|c| !c.is_empty());
    if let Some(problem) = comment.and_then(crate::domain::free_text_problem) {
        return Err(ApiError::field("comment", problem));
    }
    let path = format!("/v1/share-requests/{id}/{verb}");
    let (mut tx, claim) = match idempotency::begin(&state, &caller, key, &Method::POST, &path, &body.document).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Proceed(tx, claim) => (tx, claim),
    };

    let request = db::share_requests::find_for_update(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("share request"))?;
    let action = match to {
        RequestStatus::Approved => Action::Approve,
        RequestStatus::Denied => Action::Deny,
        _ => Action::Cancel,
    };
    let earlier = db::share_requests::approvals_of(&mut *tx, &[id]).await?;
    if let Err(refusal) = may_decide(&caller, &request, &earlier, to) {
        tx.rollback().await?;
        // Approving twice is a conflict with one's own earlier approval, not a forbidden act.
        if matches!(refusal, ApiError::Conflict { .. }) {
            return Err(refusal);
        }
        let attempt = NewEvent::about_request(&caller.initiator, &request, action);
        return Err(state.refused(&caller, attempt, refusal).await);
    }
    if_match.check(&etag(request.version))?;
    if request.status != RequestStatus::PendingApproval {
        return Err(ApiError::Conflict {
            detail: format!(
                "the request is already {}; only a pending_approval request can be {verb}ed",
                request.status
            ),
            errors: Vec::new(),
        });
    }
    if to == RequestStatus::Approved && request.validation != Validation::Passed {
        return Err(ApiError::Conflict {
            detail: "the request has not been validated against Keystone and Glance yet; approve it once \
                     `validation.state` is `passed`"
                .into(),
            errors: Vec::new(),
        });
    }

    let request = match to {
        RequestStatus::Approved => approve(&state, &mut tx, &caller, request, comment).await?,
        _ => {
            let (request, _) = db::share_requests::decide(&mut tx, id, to, &caller.principal.name, comment).await?;
            state
                .audit(
                    &mut tx,
                    NewEvent {
                        reason: comment,
                        ..AppState::event(&caller, &request, action)
                    },
                )
                .await?;
            request
        }
    };
    let shares = db::shares::of_requests(&mut *tx, &[id]).await?;
    let approvals = db::share_requests::approvals_of(&mut *tx, &[id]).await?;
    let response = saved_request(StatusCode::OK, request, shares, approvals);
    idempotency::finish(&mut tx, claim, &response).await?;
    tx.commit().await?;
    Ok(response.into_response())
}
