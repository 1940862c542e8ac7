//! `/v1/reconcile` and `/v1/drift`: asking the worker to compare Glance with the broker, and
//! what it found. Findings name projects of every tenant, so only auditors and admins read
//! them; only admins ask for a pass.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{Caller, Listing, OptionalJson};
use super::pagination::{Cursor, Page};
use super::{ApiError, AppState};
use crate::db::audit::NewEvent;
use crate::db::drift::DriftFinding;
use crate::db::{self};
use crate::domain::filters::DriftFilter;
use crate::domain::{Action, Capability};

pub use crate::db::drift::DriftFinding as DriftFindingView;

/// What to reconcile.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileInput {
    /// This image only (any image, managed or not); absent: every image the broker manages.
    pub image_id: Option<Uuid>,
}

/// What was queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReconcileQueued {
    /// The images whose reconciliation was queued now (an image already queued or being
    /// reconciled is not queued twice, and is not listed).
    pub queued: Vec<Uuid>,
    /// How many images were asked for.
    pub images: usize,
}

/// Compare Glance with the broker now (admins).
///
/// Queues a reconciliation of the image given, or of every image the broker manages (live
/// shares, shares ended within `GSB_RECONCILE_ENDED_WITHIN_HOURS`, open findings); the worker
/// carries them out within the Glance rate budget. Findings appear at `GET /v1/drift`.
#[utoipa::path(
    post, path = "/v1/reconcile", tag = "drift",
    request_body(content = Option<ReconcileInput>, description = "Optional: `{\"image_id\"}`"),
    responses(
        (status = 202, description = "Queued", body = ReconcileQueued),
        (status = 403, description = "Not an admin"),
        (status = 422, description = "A bad image id"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn reconcile(
    State(state): State<AppState>,
    caller: Caller,
    OptionalJson(body): OptionalJson<ReconcileInput>,
) -> Result<(StatusCode, axum::Json<ReconcileQueued>), ApiError> {
    state
        .require(&caller, Capability::Admin, Action::Reconcile, None)
        .await?;
    let images = match body.value.image_id {
        Some(image) => vec![image],
        None => db::drift::managed_images(&state.pool, state.config.reconcile_ended_within).await?,
    };
    let mut tx = state.pool.begin().await?;
    let queued = db::jobs::enqueue_reconciles(&mut tx, &images).await?;
    let event = NewEvent {
        image_id: body.value.image_id,
        correlation_id: caller.request_id.as_deref(),
        details: json!({ "images": images.len(), "queued": queued.len() }),
        ..NewEvent::attempt(&caller.initiator, Action::Reconcile)
    };
    state.audit(&mut tx, event).await?;
    tx.commit().await?;
    let images = images.len();
    Ok((StatusCode::ACCEPTED, axum::Json(ReconcileQueued { queued, images })))
}

/// List drift findings, newest first (auditors and admins).
#[utoipa::path(
    get, path = "/v1/drift", tag = "drift",
    params(DriftFilter, super::pagination::Paging),
    responses(
        (status = 200, description = "A page of findings", body = Page<DriftFindingView>),
        (status = 403, description = "Not an auditor or admin"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn list_drift(
    State(state): State<AppState>,
    caller: Caller,
    Listing { filter, paging }: Listing<DriftFilter>,
) -> Result<axum::Json<Page<DriftFindingView>>, ApiError> {
    caller.require(Capability::Audit)?;
    let limit = paging.limit.unwrap_or_default();
    let rows = db::drift::list(&state.pool, &filter, paging.cursor.map(|c| c.0), limit.fetch()).await?;
    let cursor = |last: &DriftFinding| Cursor(last.id).to_string();
    Ok(axum::Json(Page::new(rows, limit, cursor, |f| f)))
}
