//! `POST /v1/share-requests?dry_run=true`: the worker's validation (`crate::validation`, the
//! one check both use) run at once against Keystone and Glance, within the API's own Glance
//! budget, and answered 200 with what it found. Nothing is stored: no request, no job, no
//! audit event, no idempotency key.

use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::super::{ApiError, AppState};
use super::ImageView;
use crate::db;
use crate::domain::{FieldError, NewShareRequest, Warning};
use crate::validation::{self, Candidate};

/// How a request is filed.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Filing {
    /// `true`: validate now and answer 200 with the result; store nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What validation would find if the request were filed now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DryRunView {
    /// Whether the request would pass validation (no `errors`).
    pub valid: bool,
    pub image_id: Uuid,
    /// The region as the catalog spells it.
    pub region: String,
    /// The image as Glance describes it; null when Glance has none.
    pub image: Option<ImageView>,
    /// Each target, in the order given, with the project it resolves to (null: see `errors`).
    pub targets: Vec<DryRunTarget>,
    /// Every problem, each on its field (`image_id`, `targets[i]`, `region`, `targets`).
    pub errors: Vec<FieldError>,
    /// What is legal but risky, as approvers would see it.
    pub warnings: Vec<Warning>,
}

/// One target and the Keystone project it resolves to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DryRunTarget {
    pub target: String,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub domain_id: Option<String>,
}

/// Runs validation on `new` (already parsed, its region checked, the caller allowed to file
/// it) and answers with the result.
pub(super) async fn answer(
    state: &AppState,
    new: &NewShareRequest,
    target_domains: Option<&[String]>,
) -> Result<Json<DryRunView>, ApiError> {
    let cloud = state.cloud.as_ref().ok_or_else(|| {
        ApiError::Upstream("a dry run needs the broker's OpenStack cloud, and none is configured".into())
    })?;
    let candidate = Candidate {
        image_id: new.image_id,
        region: &new.region,
        target_domains,
        targets: new.targets.clone(),
    };
    let rid = format!("req-{}", Uuid::new_v4());
    let mut verdict = validation::check(cloud, &candidate, state.config.validation, &rid)
        .await
        .map_err(|e| ApiError::openstack("Keystone or Glance cannot validate the request now", e))?;
    if verdict.passed() {
        let ids = verdict.project_ids();
        let taken =
            db::share_requests::live_grants_to(&state.pool, new.image_id, &new.region, &ids, Uuid::nil()).await?;
        let errors = validation::taken_errors(&verdict, &taken);
        verdict.errors.extend(errors);
    }
    let targets = new
        .targets
        .iter()
        .zip(&verdict.projects)
        .map(|(target, project)| DryRunTarget {
            target: target.as_str().to_owned(),
            project_id: project.as_ref().map(|p| p.id.clone()),
            project_name: project.as_ref().map(|p| p.name.clone()),
            domain_id: project.as_ref().map(|p| p.domain_id.clone()),
        })
        .collect();
    Ok(Json(DryRunView {
        valid: verdict.passed(),
        image_id: new.image_id,
        region: new.region.clone(),
        image: verdict.image.map(|i| ImageView {
            name: i.name,
            owner: i.owner,
            owner_domain: i.owner_domain,
            visibility: i.visibility,
        }),
        targets,
        errors: verdict.errors,
        warnings: verdict.warnings,
    }))
}
