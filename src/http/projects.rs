//! `/v1/projects`: what a requester needs to fill in a request: the images its project owns
//! (`GET /v1/projects/{project_id}/images`, from Glance) and the projects it may name as
//! targets (`GET /v1/projects?search=`, from Keystone). Both ask OpenStack with the broker's
//! own credentials, so each is bounded to what the caller could learn by filing requests:
//! a project's images only for that project's requesters; project names only in the domains
//! the caller's target names resolve in (`AppState::target_domains`, as validation resolves
//! them), a few at a time (docs/security.md).

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{Caller, Query};
use super::pagination::{Cursor, Page, Paging};
use super::{ApiError, AppState};
use crate::domain::{Capability, Target};
use crate::openstack::OpenStack;
use crate::openstack::glance::Image;

/// Shortest text a project search takes: shorter ones would list a domain's projects wholesale.
pub const MIN_SEARCH_CHARS: usize = 3;
/// Longest: a project name's own limit.
pub const MAX_SEARCH_CHARS: usize = crate::domain::MAX_PROJECT_NAME_CHARS;
/// Most projects one search answers.
pub const MAX_MATCHES: u32 = 20;

/// An image a project owns, as Glance describes it, and whether it can be shared.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectImage {
    pub id: String,
    pub name: Option<String>,
    /// Glance's status (`active`, `queued`, `saving`, `deactivated`...).
    pub status: String,
    /// `private`, `shared`, `community` or `public`.
    pub visibility: String,
    /// Bytes of image data.
    pub size: Option<i64>,
    pub protected: bool,
    pub created_at: Option<DateTime<Utc>>,
    /// Whether validation would take the image (its visibility can take members and it is
    /// fit for a consumer); the targets are checked when a request is filed.
    pub shareable: bool,
    /// Why not, when it is not: what validation would say on `image_id`.
    pub refusals: Vec<String>,
}

impl From<Image> for ProjectImage {
    fn from(image: Image) -> Self {
        let refusals = crate::validation::refusals(&image);
        ProjectImage {
            shareable: refusals.is_empty(),
            refusals,
            id: image.id,
            name: image.name,
            status: image.status,
            visibility: image.visibility,
            size: image.size,
            protected: image.protected,
            created_at: image.created_at,
        }
    }
}

fn cloud(state: &AppState) -> Result<&OpenStack, ApiError> {
    state
        .cloud
        .as_ref()
        .ok_or_else(|| ApiError::Upstream("this needs the broker's OpenStack cloud, and none is configured".into()))
}

fn request_id(caller: &Caller) -> String {
    caller
        .request_id
        .clone()
        .unwrap_or_else(|| format!("req-{}", Uuid::new_v4()))
}

/// The images a project owns, newest first, each with whether it can be shared (the
/// project's requesters and admins).
///
/// Read from Glance at the time of the call (hidden images are not listed, as in Glance's
/// own list). A `cursor` whose image Glance no longer knows (deleted and purged) is refused
/// with 422: start again.
#[utoipa::path(
    get, path = "/v1/projects/{project_id}/images", tag = "projects",
    params(
        ("project_id" = String, Path, description = "The Keystone project id (32 hex digits or a UUID)",
            pattern = "^([0-9A-Fa-f]{32}|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"),
        Paging
    ),
    responses(
        (status = 200, description = "A page of the project's images", body = Page<ProjectImage>),
        (status = 403, description = "Not a requester of that project"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn list_project_images(
    State(state): State<AppState>,
    caller: Caller,
    Path(project_id): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<axum::Json<Page<ProjectImage>>, ApiError> {
    if !matches!(Target::parse(&project_id), Ok(Target::ProjectId(_))) {
        return Err(ApiError::field(
            "project_id",
            "must be a Keystone project id (32 hex digits or a UUID)",
        ));
    }
    if !caller.principal.may(Capability::Request, Some(&project_id)) {
        return Err(ApiError::Forbidden(format!(
            "only a requester of project {project_id} (or an admin) may list its images"
        )));
    }
    let limit = paging.limit.unwrap_or_default();
    let marker = paging.cursor.map(|c| c.0.to_string());
    let fetch = usize::try_from(limit.fetch()).unwrap_or(usize::MAX);
    let images = cloud(&state)?
        .images_of(&project_id, fetch, marker.as_deref(), &request_id(&caller))
        .await
        .map_err(|e| ApiError::openstack("Glance cannot list the project's images now", e))?
        .ok_or_else(|| {
            ApiError::field(
                "cursor",
                "Glance no longer knows the image this page started after: start again without a cursor",
            )
        })?;
    // Glance's image ids are UUIDs (its schema says so): the last one is the next marker.
    let cursor = |last: &Image| Cursor(Uuid::try_parse(&last.id).unwrap_or_default()).to_string();
    Ok(axum::Json(Page::new(images, limit, cursor, ProjectImage::from)))
}

/// What to look for.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProjectSearch {
    /// Part of the project's name, case ignored: 3 to 64 characters, no control characters.
    #[param(min_length = 3, max_length = 64, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$")]
    pub search: String,
    /// At most this many projects (1 to 20, default 20).
    #[param(minimum = 1, maximum = 20)]
    pub limit: Option<u32>,
}

/// A project a request may name as a target.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectMatch {
    pub id: String,
    pub name: String,
    pub domain_id: String,
}

/// The projects a search found.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectMatches {
    /// By name, then domain.
    pub items: Vec<ProjectMatch>,
    /// More projects match than were answered: search for more of the name.
    pub truncated: bool,
}

/// Find projects to share with by part of their name (requesters and admins).
///
/// Looks only among the enabled projects of the domains where the caller's target names
/// resolve when it files (its own projects' domains; the whole cloud for a caller that
/// requests for any project), so it tells no more than filing by name would; answers at
/// most `limit` (20) of them, with `truncated` when more match. Not a list to page through.
#[utoipa::path(
    get, path = "/v1/projects", tag = "projects",
    params(ProjectSearch),
    responses(
        (status = 200, description = "The projects found", body = ProjectMatches),
        (status = 403, description = "Not a requester"),
    ),
    security(("api_key" = []), ("keystone_token" = []))
)]
pub async fn search_projects(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ProjectSearch>,
) -> Result<axum::Json<ProjectMatches>, ApiError> {
    caller.require(Capability::Request)?;
    let chars = q.search.chars().count();
    if !(MIN_SEARCH_CHARS..=MAX_SEARCH_CHARS).contains(&chars) || q.search.chars().any(char::is_control) {
        return Err(ApiError::field(
            "search",
            format!(
                "must be {MIN_SEARCH_CHARS} to {MAX_SEARCH_CHARS} characters of a project's name, with no control characters"
            ),
        ));
    }
    let limit = q.limit.unwrap_or(MAX_MATCHES);
    if !(1..=MAX_MATCHES).contains(&limit) {
        return Err(ApiError::field("limit", format!("must be from 1 to {MAX_MATCHES}")));
    }
    let cloud = cloud(&state)?;
    let rid = request_id(&caller);
    let domains = state.target_domains(&caller).await?;
    let scopes: Vec<Option<&str>> = match &domains {
        None => vec![None],
        Some(domains) => domains.iter().map(|d| Some(d.as_str())).collect(),
    };
    let mut found = Vec::new();
    for domain in scopes {
        let projects = cloud
            .projects_containing(&q.search, domain, &rid)
            .await
            .map_err(|e| ApiError::openstack("Keystone cannot search projects now", e))?;
        found.extend(projects);
    }
    // Keystone's filter is a LIKE: `%` and `_` in the text are wildcards there, not here.
    let wanted = q.search.to_lowercase();
    found.retain(|p| p.name.to_lowercase().contains(&wanted));
    found.sort_by(|a, b| (&a.name, &a.domain_id).cmp(&(&b.name, &b.domain_id)));
    found.dedup_by(|a, b| a.id == b.id);
    let truncated = found.len() > limit as usize;
    found.truncate(limit as usize);
    let items = found
        .into_iter()
        .map(|p| ProjectMatch {
            id: p.id,
            name: p.name,
            domain_id: p.domain_id,
        })
        .collect();
    Ok(axum::Json(ProjectMatches { items, truncated }))
}
