//! `/v1/share-requests`: filing, reading, cancelling and deciding share requests.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

pub mod decide;
mod dry_run;

pub use dry_run::{DryRunView, Filing};

use super::extract::{Caller, Id, IdempotencyKey, Json, Listing, Query, etag};
use super::idempotency::{self, Begun, Saved};
use super::pagination::{Cursor, Page, Paging};
use super::shares::ShareView;
use super::{ApiError, AppState, access};
use crate::db::{self, audit::NewEvent, share_requests::ShareRequest};
use crate::domain::filters::RequestFilter;
use crate::domain::policy::Verdict;
use crate::domain::{
    Action, Capability, FieldError, NewShareRequest, RequestStatus, ShareRequestInput, Validation, Warning,
};

/// A share request with its shares.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareRequestView {
    pub id: Uuid,
    pub status: RequestStatus,
    pub image_id: Uuid,
    pub region: String,
    pub reason: String,
    /// The principal that filed the request: an API key's name, or `keystone:<user id>`.
    pub requested_by: String,
    /// Who the request is for, as separation of duties sees it: the Keystone user id of the
    /// user who filed it (or whom a key's `X-On-Behalf-Of` named), or `key:<name>`.
    pub requested_by_subject: String,
    /// The end user a service filed it for (`X-On-Behalf-Of`).
    pub on_behalf_of: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub auto_accept: bool,
    /// Who approved, denied or cancelled the request.
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_comment: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the worker found when it checked the request against Keystone and Glance.
    pub validation: ValidationView,
    /// How the request is decided: by a policy rule, or by its approvers.
    pub approval: ApprovalView,
    /// One share per target project.
    pub shares: Vec<ShareView>,
}

/// How a request is decided. Once validated, the approval policy either decides it by a rule
/// (`rule`, with `decided_by` = `policy`) or says how many distinct approvers it needs.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    /// What the approval policy decided when validation passed: `approve` or `deny` (a
    /// rule decided), `require_approval` (people decide: `required` of them) or
    /// `auto_accept_forbidden` (denied: the request asked for `auto_accept`, which the
    /// policy does not allow). Absent until validation has passed.
    pub verdict: Option<Verdict>,
    /// Distinct approvers the request needs (1 or 2).
    pub required: i16,
    /// The policy rule that decided the request, or that set `required`.
    pub rule: Option<String>,
    /// The approvals given so far, oldest first.
    pub approvals: Vec<ApprovalEntry>,
}

/// One approver's approval.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalEntry {
    pub approver: String,
    /// Who approved, as separation of duties sees it (a Keystone user id, or `key:<name>`).
    pub approver_subject: String,
    /// The end user the approver's key acted for.
    pub on_behalf_of: Option<String>,
    pub comment: Option<String>,
    pub approved_at: DateTime<Utc>,
}

/// The result of checking a request against Keystone and Glance, before any decision.
/// A request can be approved only once its validation has `passed`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidationView {
    pub state: Validation,
    pub validated_at: Option<DateTime<Utc>>,
    /// The image as Glance described it; null until validated.
    pub image: Option<ImageView>,
    /// Why validation failed (each with the field at fault).
    pub errors: Vec<FieldError>,
    /// Why validation is still pending: Keystone or Glance did not answer; it is retried.
    pub last_error: Option<String>,
    /// What is legal but risky (an image that is hidden, has no checksum, is left
    /// unprotected...): for approvers to weigh; never a reason to refuse.
    pub warnings: Vec<Warning>,
}

/// An image's facts as Glance gave them at validation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImageView {
    pub name: Option<String>,
    /// The project that owns the image.
    pub owner: Option<String>,
    /// The owner project's Keystone domain id.
    pub owner_domain: Option<String>,
    /// `private` or `shared` (a `public` or `community` image fails validation).
    pub visibility: String,
}

impl ShareRequestView {
    fn new(r: ShareRequest, shares: Vec<db::shares::Share>, approvals: Vec<db::share_requests::Approval>) -> Self {
        ShareRequestView {
            id: r.id,
            status: r.status,
            image_id: r.image_id,
            region: r.region,
            reason: r.reason,
            requested_by: r.requested_by,
            requested_by_subject: r.requested_by_subject,
            on_behalf_of: r.on_behalf_of,
            expires_at: r.expires_at,
            auto_accept: r.auto_accept,
            decided_by: r.decided_by,
            decided_at: r.decided_at,
            decision_comment: r.decision_comment,
            created_at: r.created_at,
            updated_at: r.updated_at,
            validation: ValidationView {
                state: r.validation,
                validated_at: r.validated_at,
                image: r.image_visibility.map(|visibility| ImageView {
                    name: r.image_name,
                    owner: r.image_owner,
                    owner_domain: r.image_owner_domain,
                    visibility,
                }),
                errors: r.validation_errors.0,
                last_error: r.validation_last_error,
                warnings: r.validation_warnings.0,
            },
            approval: ApprovalView {
                // Written by this broker's worker with the wire names: anything else is no verdict.
                verdict: r.policy_decision.as_deref().and_then(|v| v.parse().ok()),
                required: r.required_approvals,
                rule: r.policy_rule,
                approvals: approvals
                    .into_iter()
                    .map(|a| ApprovalEntry {
                        approver: a.approver,
                        approver_subject: a.approver_subject,
                        on_behalf_of: a.on_behalf_of,
                        comment: a.comment,
                        approved_at: a.approved_at,
                    })
                    .collect(),
            },
            shares,
        }
    }
}

fn location(id: Uuid) -> String {
    format!("/v1/share-requests/{id}")
}

pub(super) fn saved_request(
    status: StatusCode,
    request: ShareRequest,
    shares: Vec<db::shares::Share>,
    approvals: Vec<db::share_requests::Approval>,
) -> Saved {
    let (id, version) = (request.id, request.version);
    Saved::json(status, &ShareRequestView::new(request, shares, approvals))
        .header(header::LOCATION, location(id))
        .header(header::ETAG, etag(version))
}

/// File a share request (or, with `dry_run=true`, see what its validation would find).
///
/// Records the ask and one `awaiting_approval` share per target, and queues its validation:
/// the worker checks the image and the targets against Glance and Keystone (reading only)
/// and stores what it found under `validation`. Nothing is written to Glance until the
/// request is approved. Send an `Idempotency-Key` to retry safely.
///
/// With `dry_run=true` the same validation runs at once and is answered 200 (`valid`,
/// `errors`, `warnings`, the resolved `targets`); nothing is stored, no audit event is
/// written and an `Idempotency-Key` is not used. Input that never reaches validation (bad
/// fields, an unknown region) is 422 as when filing; an image of another project 403.
#[utoipa::path(
    post, path = "/v1/share-requests", tag = "share-requests",
    request_body = ShareRequestInput,
    params(IdempotencyKey, dry_run::Filing),
    responses(
        (status = 200, description = "Dry run: what validation found; nothing stored", body = dry_run::DryRunView),
        (status = 201, description = "Filed", body = ShareRequestView,
            headers(("Location" = String), ("ETag" = String))),
        (status = 403, description = "Not a requester, or the image is not the caller's project's"),
        (status = 409, description = "A live share of this image to a target exists, or the same key is in flight"),
        (status = 422, description = "Invalid fields, or a key reused with another body"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn create_share_request(
    State(state): State<AppState>,
    caller: Caller,
    Query(filing): Query<dry_run::Filing>,
    key: IdempotencyKey,
    body: Json<ShareRequestInput>,
) -> Result<Response, ApiError> {
    state
        .require(&caller, Capability::Request, Action::Create, None)
        .await?;
    let mut new = NewShareRequest::parse(body.value, &state.config.limits, Utc::now()).map_err(ApiError::Validation)?;
    state.check_region(&mut new).await?;
    let owner = state.requestable_owner(&caller, new.image_id).await?;
    let target_domains = state.target_domains(&caller).await?;
    if filing.dry_run {
        return Ok(dry_run::answer(&state, &new, target_domains.as_deref())
            .await?
            .into_response());
    }
    let (mut tx, claim) = match idempotency::begin(
        &state,
        &caller,
        key,
        &Method::POST,
        "/v1/share-requests",
        &body.document,
    )
    .await?
    {
        Begun::Replay(response) => return Ok(response),
        Begun::Proceed(tx, claim) => (tx, claim),
    };

    let subject = caller.subject.to_string();
    let filer = db::share_requests::Filer {
        requested_by: &caller.principal.name,
        subject: &subject,
        on_behalf_of: caller.on_behalf_of.as_deref(),
        target_domains: target_domains.as_deref(),
        image_owner: owner.as_deref(),
    };
    let (request, shares) = db::share_requests::insert(&mut tx, &new, filer)
        .await
        .map_err(|e| live_grant_conflict(e, &new))?;
    db::jobs::enqueue_validation(&mut tx, request.id).await?;
    let targets: Vec<&str> = new.targets.iter().map(|t| t.as_str()).collect();
    state
        .audit(
            &mut tx,
            NewEvent {
                reason: Some(&request.reason),
                details: json!({ "targets": targets, "expires_at": request.expires_at, "auto_accept": request.auto_accept,
                                 "subject": subject }),
                ..AppState::event(&caller, &request, Action::Create)
            },
        )
        .await?;

    let response = saved_request(StatusCode::CREATED, request, shares, Vec::new());
    idempotency::finish(&mut tx, claim, &response).await?;
    tx.commit().await?;
    Ok(response.into_response())
}

/// A unique violation on the live-grant index becomes a 409 naming the target.
fn live_grant_conflict(e: sqlx::Error, new: &NewShareRequest) -> ApiError {
    let is_live_grant = e
        .as_database_error()
        .and_then(|d| d.constraint())
        .is_some_and(|c| db::share_requests::ONE_LIVE_GRANT.contains(&c));
    if !is_live_grant {
        return e.into();
    }
    ApiError::Conflict {
        detail: "a target already has a live share of this image (undecided or in force); revoke or cancel it first"
            .into(),
        errors: new
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                super::FieldError::new(
                    format!("targets[{i}]"),
                    format!("`{}` may already hold this image", t.as_str()),
                )
            })
            .collect(),
    }
}

/// List share requests, newest first: those the caller may see (its projects' requests and
/// those it filed; everything for approvers, auditors and admins).
#[utoipa::path(
    get, path = "/v1/share-requests", tag = "share-requests",
    params(RequestFilter, Paging),
    responses(
        (status = 200, description = "A page of requests", body = Page<ShareRequestView>),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn list_share_requests(
    State(state): State<AppState>,
    caller: Caller,
    Listing { filter, paging }: Listing<RequestFilter>,
) -> Result<axum::Json<Page<ShareRequestView>>, ApiError> {
    let viewer = access::viewer(&caller.principal);
    let limit = paging.limit.unwrap_or_default();
    // The page and what hangs off it on one connection: one acquire (and release) for the three.
    let mut conn = state.pool.acquire().await?;
    let before = paging.cursor.map(|c| c.0);
    let mut rows = db::share_requests::list(&mut *conn, viewer.as_ref(), &filter, before, limit.fetch()).await?;
    let next_cursor = limit.trim(&mut rows).map(|last| Cursor(last.id).to_string());
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut by_request: HashMap<Uuid, Vec<db::shares::Share>> = HashMap::new();
    for share in db::shares::of_requests(&mut *conn, &ids).await? {
        by_request.entry(share.request_id).or_default().push(share);
    }
    let mut approvals: HashMap<Uuid, Vec<db::share_requests::Approval>> = HashMap::new();
    for approval in db::share_requests::approvals_of(&mut *conn, &ids).await? {
        approvals.entry(approval.request_id).or_default().push(approval);
    }
    let items = rows
        .into_iter()
        .map(|r| {
            let shares = by_request.remove(&r.id).unwrap_or_default();
            let approvals = approvals.remove(&r.id).unwrap_or_default();
            ShareRequestView::new(r, shares, approvals)
        })
        .collect();
    Ok(axum::Json(Page { items, next_cursor }))
}

/// One share request, with its shares.
#[utoipa::path(
    get, path = "/v1/share-requests/{id}", tag = "share-requests",
    params(("id" = Uuid, Path, description = "The request's id")),
    responses(
        (status = 200, description = "The request", body = ShareRequestView, headers(("ETag" = String))),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn get_share_request(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<Response, ApiError> {
    let (request, shares, approvals) = readable(&state, &caller, id).await?;
    Ok(saved_request(StatusCode::OK, request, shares, approvals).into_response())
}

/// One share request as [`get_share_request`] shows it to `caller` (404 when it may not see it).
pub(super) async fn view_share_request(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<ShareRequestView, ApiError> {
    let (request, shares, approvals) = readable(state, caller, id).await?;
    Ok(ShareRequestView::new(request, shares, approvals))
}

async fn readable(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<(ShareRequest, Vec<db::shares::Share>, Vec<db::share_requests::Approval>), ApiError> {
    let request = db::share_requests::find(&state.pool, id)
        .await?
        .filter(|r| access::sees_request(&caller.principal, r))
        .ok_or_else(|| ApiError::not_found("share request"))?;
    let shares = db::shares::of_requests(&state.pool, &[id]).await?;
    let approvals = db::share_requests::approvals_of(&state.pool, &[id]).await?;
    Ok((request, shares, approvals))
}
