//! Revokes that break nobody by surprise: `POST /v1/shares/{id}/revoke` refuses (409
//! `share-in-use`) while something in the consumer project depends on the image, and (503
//! `dependents-unchecked`) while Nova, Cinder or Glance cannot say; `force` revokes anyway
//! and records what it broke; `effective_at` schedules the revoke, giving the consumer
//! notice; `DELETE /v1/shares/{id}/revocation` cancels a scheduled one. The look at the
//! dependents happens before the transaction (none is held across the calls), then
//! `shares::act` makes the change, guarded by the share's state, with its audit event.

use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{Caller, Id, IdempotencyKey, IfMatch, Json};
use super::impact::{findings, impact_in};
use super::shares::{Action, Ask, act, may_act};
use super::{ApiError, AppState, access};
use crate::db::{self, audit::NewEvent, shares::Share};
use crate::domain::impact::Impact;
use crate::domain::{Action as Audited, Outcome, Trigger, schedule_problem};

/// Why a share is being revoked, and how.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeInput {
    /// Required: shown on the share and in the audit log (at most 1,000 characters).
    #[schema(min_length = 1, max_length = 1000)]
    pub reason: String,
    /// Revoke even though something in the consumer project depends on the image (or it
    /// could not be checked): a requester of the image's project, or an admin. The audit
    /// event records what it broke.
    #[serde(default)]
    pub force: bool,
    /// Revoke at this time instead of now (in the future, at most 366 days ahead): the share
    /// goes `revocation_scheduled`, the consumer is told (`share.revocation_scheduled`), and
    /// the member is kept until then. Not with `force`.
    #[serde(default)]
    pub effective_at: Option<DateTime<Utc>>,
}

/// Revoke a granted share (the requester who filed it, a requester of the image's project,
/// or an admin), with a reason: now, or at `effective_at`.
///
/// A revoke now first asks Nova, Cinder and Glance what in the consumer project depends on
/// the image: if anything does, it is refused with 409 `share-in-use` listing it; if a
/// service could not be asked, with 503 `dependents-unchecked` naming it; nothing changes
/// either way. `force` revokes anyway. The worker removes the member from Glance; if the
/// broker made the image `shared` and no member is left, it makes the image `private` again.
#[utoipa::path(
    post, path = "/v1/shares/{id}/revoke", tag = "shares",
    request_body = RevokeInput,
    params(("id" = Uuid, Path, description = "The share's id"), IfMatch, IdempotencyKey),
    responses(
        (status = 202, description = "Queued for the worker, or scheduled", body = super::shares::ShareView, headers(("ETag" = String))),
        (status = 403, description = "Not the requester (or, to force, not the image's project)"),
        (status = 409, description = "Not revocable in its state, or in use (`share-in-use`, with `dependents`)"),
        (status = 422, description = "No reason, or a bad `effective_at`"),
        (status = 503, description = "What depends on the image could not be checked (`dependents-unchecked`, with `unchecked`), or the database is away"),
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
    let input = &body.value;
    let reason = input.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::field("reason", "is required: say why"));
    }
    if let Some(problem) = crate::domain::free_text_problem(reason) {
        return Err(ApiError::field("reason", problem));
    }
    let (action, details) = match (input.effective_at, input.force) {
        (Some(_), true) => {
            return Err(ApiError::field(
                "force",
                "cannot go with effective_at: a scheduled revoke is carried out when due, whatever depends on the image then",
            ));
        }
        (Some(at), false) => {
            if let Some(problem) = schedule_problem(at, Utc::now()) {
                return Err(ApiError::field("effective_at", problem));
            }
            (
                Action::ScheduleRevoke(at),
                json!({ "scheduled": true, "effective_at": at }),
            )
        }
        (None, force) => {
            let action = if force { Action::ForceRevoke } else { Action::Revoke };
            let details = match revocable(&state, &caller, id, action).await? {
                Some(share) => look_before_revoking(&state, &caller, &share, force, reason).await?,
                // `act` refuses it, as the caller or the share's state requires.
                None => Value::Null,
            };
            (action, details)
        }
    };
    let ask = Ask {
        action,
        document: &body.document,
        reason: Some(reason),
        details,
    };
    act(&state, &caller, id, if_match, key, ask).await
}

/// Cancel a scheduled revoke (the same callers as a revoke): the share goes back to where it
/// was (`accepted` or `pending_acceptance`), and the cancellation is audited.
#[utoipa::path(
    delete, path = "/v1/shares/{id}/revocation", tag = "shares",
    params(("id" = Uuid, Path, description = "The share's id"), IfMatch, IdempotencyKey),
    responses(
        (status = 200, description = "The share, in force again", body = super::shares::ShareView, headers(("ETag" = String))),
        (status = 403, description = "Not the requester"),
        (status = 409, description = "No revoke is scheduled (or it came due)"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn cancel_revocation(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
    if_match: IfMatch,
    key: IdempotencyKey,
) -> Result<Response, ApiError> {
    let ask = Ask {
        action: Action::CancelRevocation,
        document: &Value::Null,
        reason: None,
        details: Value::Null,
    };
    act(&state, &caller, id, if_match, key, ask).await
}

/// Whether `caller` may force the revoke of share `id` now: what `revoke_share` would let
/// `"force": true` do (the console offers it only then).
pub(super) async fn may_force(state: &AppState, caller: &Caller, id: Uuid) -> Result<bool, ApiError> {
    Ok(revocable(state, caller, id, Action::ForceRevoke).await?.is_some())
}

/// The share, when `caller` may revoke it (`action`) in its state now: only then is it worth
/// asking what depends on it (`act` checks again under the share's lock).
async fn revocable(state: &AppState, caller: &Caller, id: Uuid, action: Action) -> Result<Option<Share>, ApiError> {
    let Some(share) = db::shares::find(&state.pool, id).await? else {
        return Ok(None);
    };
    let Some(request) = db::share_requests::find(&state.pool, share.request_id).await? else {
        return Ok(None);
    };
    let allowed = access::sees_share(&caller.principal, &share, &request)
        && may_act(caller, &share, &request, action).is_ok()
        && share.state.on(Trigger::Revoke).is_ok();
    Ok(allowed.then_some(share))
}

/// What depends on the share's image now: the details its revoke records, or the refusal
/// (recorded in the audit log) when something does, or it could not be checked, and the
/// revoke is not forced.
async fn look_before_revoking(
    state: &AppState,
    caller: &Caller,
    share: &Share,
    force: bool,
    reason: &str,
) -> Result<Value, ApiError> {
    let impact = impact_in(share, &findings(state, share.image_id).await);
    if force || impact.is_clear() {
        return Ok(json!({ "forced": force, "dependents": impact.dependents, "unchecked": impact.unchecked }));
    }
    let project = share.project_id.as_deref().unwrap_or_default();
    let (slug, error) = if impact.dependents.is_empty() {
        let services: Vec<&str> = impact.unchecked.iter().map(|u| u.service.as_str()).collect();
        let detail = format!(
            "what depends on the image in project {project} could not be checked ({}): nothing was revoked; \
             retry later, or force the revoke",
            services.join(", ")
        );
        ("dependents-unchecked", ApiError::DependentsUnchecked { detail, impact })
    } else {
        let detail = format!(
            "{} thing(s) in project {project} depend on the image (servers, volumes, snapshots): revoking \
             now would leave them unable to rebuild or boot again; nothing was revoked. Give notice with \
             effective_at, or force the revoke",
            impact.dependents.len()
        );
        ("share-in-use", ApiError::InUse { detail, impact })
    };
    let Impact { dependents, unchecked } = match &error {
        ApiError::InUse { impact, .. } | ApiError::DependentsUnchecked { impact, .. } => impact.clone(),
        _ => Impact::default(),
    };
    let event = NewEvent {
        reason: Some(reason),
        outcome: Outcome::Failure,
        correlation_id: caller.request_id.as_deref(),
        details: json!({ "reason": slug, "detail": error.to_string(), "dependents": dependents, "unchecked": unchecked }),
        ..NewEvent::about_share(&caller.initiator, share, Audited::Revoke, Outcome::Failure)
    };
    crate::events::record_alone(&state.pool, &state.config.instance, event).await?;
    Err(error)
}
