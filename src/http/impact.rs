//! What depends on a shared image in its consumer projects: `GET /v1/shares/{id}/impact`
//! for one share, `GET /v1/images/{image_id}/dependents` across the image's live shares.
//! Nova, Cinder and Glance are asked at the time of the call (`OpenStack::findings`); what
//! could not be asked is listed in `unchecked`, never read as "nothing depends on it".
//! Safe revokes (`revocation.rs`) ask the same question before they change anything.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{Caller, Id};
use super::{ApiError, AppState, access};
use crate::db::{self, share_requests::ShareRequest, shares::Share};
use crate::domain::decisions::{self, ImpactReader};
use crate::domain::impact::{Dependent, Findings, Impact, Unchecked};
use crate::domain::{Capability, ShareState};

/// What depends on one share's image in its consumer project.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareImpact {
    pub share_id: Uuid,
    pub image_id: Uuid,
    /// The consumer project.
    pub project_id: Option<String>,
    pub state: ShareState,
    /// When Nova, Cinder and Glance were asked.
    pub checked_at: DateTime<Utc>,
    pub dependents: Vec<Dependent>,
    /// Services that could not be checked: what depends on the image there is unknown.
    pub unchecked: Vec<Unchecked>,
}

/// What depends on an image across its live shares (those the caller may read).
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageDependents {
    pub image_id: Uuid,
    pub checked_at: DateTime<Utc>,
    pub shares: Vec<ShareImpact>,
    /// Services that could not be checked, for every share.
    pub unchecked: Vec<Unchecked>,
}

/// What depends on the share's image in its consumer project now: servers booted from it,
/// volumes made from it and the servers using them, images derived from it; and the
/// services that could not be checked. Readers: the image's project, the consumer project,
/// approvers, auditors and admins.
#[utoipa::path(
    get, path = "/v1/shares/{id}/impact", tag = "shares",
    params(("id" = Uuid, Path, description = "The share's id")),
    responses(
        (status = 200, description = "What depends on the image", body = ShareImpact),
        (status = 403, description = "Not one of the readers"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn get_share_impact(
    State(state): State<AppState>,
    caller: Caller,
    Id(id): Id,
) -> Result<axum::Json<ShareImpact>, ApiError> {
    let (share, request) = share_and_request(&state, id).await?;
    if !access::sees_share(&caller.principal, &share, &request) {
        return Err(ApiError::not_found("share"));
    }
    may_read(&caller, &share, &request).map_err(|r| ApiError::Forbidden(r.detail().into()))?;
    let findings = findings(&state, share.image_id).await;
    Ok(axum::Json(share_impact(&share, &findings)))
}

/// What depends on the image across its live shares: each share the caller may read, with
/// what depends on the image in its consumer project. Same readers as a share's impact; an
/// image with no live share the caller may read is answered 404.
#[utoipa::path(
    get, path = "/v1/images/{image_id}/dependents", tag = "shares",
    params(("image_id" = Uuid, Path, description = "The Glance image id")),
    responses(
        (status = 200, description = "What depends on the image, share by share", body = ImageDependents),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn get_image_dependents(
    State(state): State<AppState>,
    caller: Caller,
    Id(image_id): Id,
) -> Result<axum::Json<ImageDependents>, ApiError> {
    let shares = db::shares::live_of_image(&state.pool, image_id).await?;
    let request_ids: Vec<Uuid> = shares.iter().map(|s| s.request_id).collect();
    let requests = db::share_requests::find_many(&state.pool, &request_ids).await?;
    let readable: Vec<&Share> = shares
        .iter()
        .filter(|share| {
            requests
                .iter()
                .find(|r| r.id == share.request_id)
                .is_some_and(|request| {
                    access::sees_share(&caller.principal, share, request) && may_read(&caller, share, request).is_ok()
                })
        })
        .collect();
    if readable.is_empty() {
        return Err(ApiError::NotFound(
            "no live share of that image that you may read".into(),
        ));
    }
    let findings = findings(&state, image_id).await;
    Ok(axum::Json(ImageDependents {
        image_id,
        checked_at: Utc::now(),
        shares: readable.into_iter().map(|s| share_impact(s, &findings)).collect(),
        unchecked: findings.unchecked,
    }))
}

async fn share_and_request(state: &AppState, id: Uuid) -> Result<(Share, ShareRequest), ApiError> {
    let share = db::shares::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("share"))?;
    let request = db::share_requests::find(&state.pool, share.request_id)
        .await?
        .ok_or_else(|| ApiError::not_found("share"))?;
    Ok((share, request))
}

fn may_read(caller: &Caller, share: &Share, request: &ShareRequest) -> Result<(), decisions::Refusal> {
    let principal = &caller.principal;
    let reader = ImpactReader {
        admin: principal.is_admin(),
        auditor: principal.may_somewhere(Capability::Audit),
        approver: principal.may_somewhere(Capability::Approve),
        owner_requester: request
            .image_owner
            .as_deref()
            .is_some_and(|p| principal.may(Capability::Request, Some(p))),
        consumer: share
            .project_id
            .as_deref()
            .is_some_and(|p| principal.may(Capability::Consume, Some(p))),
    };
    decisions::may_read_impact(reader)
}

fn share_impact(share: &Share, findings: &Findings) -> ShareImpact {
    let Impact { dependents, unchecked } = impact_in(share, findings);
    ShareImpact {
        share_id: share.id,
        image_id: share.image_id,
        project_id: share.project_id.clone(),
        state: share.state,
        checked_at: Utc::now(),
        dependents,
        unchecked,
    }
}

/// What depends on the share's image in its consumer project, from `findings`. A share whose
/// project is not resolved yet has no consumer: nothing there can depend on the image.
pub(super) fn impact_in(share: &Share, findings: &Findings) -> Impact {
    let projects: Vec<&str> = share.project_id.as_deref().into_iter().collect();
    findings.impact(&share.image_id.to_string(), &projects)
}

/// What Nova, Cinder and Glance say depends on `image_id` now; every service unchecked when
/// this process has no OpenStack cloud to ask.
pub(super) async fn findings(state: &AppState, image_id: Uuid) -> Findings {
    let Some(cloud) = &state.cloud else {
        let reason = "this broker process has no OpenStack cloud configured (OS_CLOUD) to ask";
        let unchecked = ["compute", "volume", "image"].map(|service| Unchecked {
            service: service.into(),
            reason: reason.into(),
        });
        return Findings {
            unchecked: unchecked.into(),
            ..Findings::default()
        };
    };
    let rid = format!("req-{}", Uuid::new_v4());
    cloud.findings(&image_id.to_string(), &rid).await
}
