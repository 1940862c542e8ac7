//! The one check of a share request against Keystone and Glance, used by the worker's
//! `validate` job and by the API's dry run (`POST /v1/share-requests?dry_run=true`): the region
//! is the one the broker serves, spelled as in the catalog; the image exists in the region, can
//! take members (`private` or `shared`) and is fit for a consumer (active, not a zero-byte
//! snapshot of volumes: `domain::fitness`); each target is a real Keystone project (names
//! resolved to ids, only among the projects the requester may see), the owner is not among
//! them, no project is named twice, and the member quota has room. Reads only: nothing is
//! written anywhere. Imports `domain` and `openstack`; never `http`, `worker` or `db` (its
//! callers read and write the database: the live-share check below takes what they read).

use std::collections::HashMap;

use futures_util::{StreamExt, stream};
use uuid::Uuid;

use crate::domain::{FieldError, ImageFacts, ImageShape, Target, Warning, catalog_region};
use crate::openstack::glance::Image;
use crate::openstack::keystone::Project;
use crate::openstack::{CallError, OpenStack};

/// What is checked: a request as filed (or as it would be filed).
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    pub image_id: Uuid,
    pub region: &'a str,
    /// The domains target names resolve in; `None`: the whole cloud.
    pub target_domains: Option<&'a [String]>,
    pub targets: Vec<Target>,
}

/// How the check runs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Glance's `image_member_quota`.
    pub member_quota: usize,
    /// Keystone look-ups at once.
    pub concurrency: usize,
    /// The broker will protect the image while it is shared (no warning about deletion then).
    pub guard_on: bool,
}

/// What the check found. It passed when `image` is known and `errors` is empty.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub image: Option<ImageFacts>,
    /// The project each target resolved to, in target order (`None`: see `errors`).
    pub projects: Vec<Option<Project>>,
    /// Every problem at once, each on its field.
    pub errors: Vec<FieldError>,
    pub warnings: Vec<Warning>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.image.is_some() && self.errors.is_empty()
    }

    /// The resolved projects' ids, in target order.
    pub fn project_ids(&self) -> Vec<&str> {
        self.projects.iter().flatten().map(|p| p.id.as_str()).collect()
    }
}

/// Checks `candidate` against Keystone and Glance. Every problem is reported at once; an
/// error is returned only when an answer could not be had.
pub async fn check(
    cloud: &OpenStack,
    candidate: &Candidate<'_>,
    settings: Settings,
    rid: &str,
) -> Result<Verdict, CallError> {
    let mut errors = Vec::new();
    if let Err(reason) = catalog_region(candidate.region, &cloud.regions().await?) {
        errors.push(FieldError::new("region", reason));
    }
    let image = cloud.image(&candidate.image_id.to_string(), rid).await?;
    let mut warnings = Vec::new();
    let facts = match &image {
        Some(image) => {
            let owner_domain = match &image.owner {
                Some(owner) => cloud.project(owner, rid).await?.map(|p| p.domain_id),
                None => None,
            };
            errors.extend(
                refusals(image)
                    .into_iter()
                    .map(|reason| FieldError::new("image_id", reason)),
            );
            warnings = crate::domain::fitness_warnings(&shape(image), settings.guard_on);
            Some(ImageFacts {
                name: image.name.clone(),
                owner: image.owner.clone(),
                owner_domain,
                visibility: image.visibility.clone(),
            })
        }
        None => {
            errors.push(FieldError::new(
                "image_id",
                format!(
                    "Glance has no image {} in region {} (or the broker cannot see it)",
                    candidate.image_id, candidate.region
                ),
            ));
            None
        }
    };

    // Keystone reads, several at once; the answers come back in target order.
    let lookups: Vec<_> = candidate
        .targets
        .iter()
        .map(|target| resolve_within(cloud, target, candidate.target_domains, rid))
        .collect();
    let found: Vec<_> = stream::iter(lookups)
        .buffered(settings.concurrency.max(1))
        .collect()
        .await;
    let mut projects = Vec::with_capacity(found.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for ((i, target), project) in candidate.targets.iter().enumerate().zip(found) {
        let field = format!("targets[{i}]");
        let problem = match project? {
            Err(reason) => Err(reason),
            Ok(project) if image.as_ref().and_then(|i| i.owner.as_deref()) == Some(project.id.as_str()) => {
                Err(format!(
                    "`{}` owns the image: there is nothing to share with it",
                    target.as_str()
                ))
            }
            Ok(project) => match seen.insert(project.id.clone(), i) {
                Some(first) => Err(format!("names the same project ({}) as targets[{first}]", project.id)),
                None => Ok(project),
            },
        };
        projects.push(match problem {
            Ok(project) => Some(project),
            Err(reason) => {
                errors.push(FieldError::new(field, reason));
                None
            }
        });
    }

    if let Some(image) = &image
        && errors.is_empty()
    {
        let ids: Vec<&str> = projects.iter().flatten().map(|p| p.id.as_str()).collect();
        if let Some(error) = quota_error(cloud, image, &ids, settings.member_quota, rid).await? {
            errors.push(error);
        }
    }

    Ok(Verdict {
        image: facts,
        projects,
        errors,
        warnings,
    })
}

/// Why `image` cannot be shared, as validation would say on `image_id`: its visibility
/// takes no members, or it is unfit for a consumer (`domain::fitness`). Empty: it can be.
pub fn refusals(image: &Image) -> Vec<String> {
    let mut reasons = Vec::new();
    if !matches!(image.visibility.as_str(), "private" | "shared") {
        reasons.push(format!(
            "the image is {}: a {} image cannot take members; only private or shared images can be shared",
            image.visibility, image.visibility
        ));
    }
    reasons.extend(crate::domain::fitness_refusal(&shape(image)));
    reasons
}

/// What fitness looks at in Glance's answer.
fn shape(image: &Image) -> ImageShape<'_> {
    ImageShape {
        status: &image.status,
        size: image.size,
        has_checksum: image.checksum.is_some() || image.os_hash_value.is_some(),
        hidden: image.os_hidden,
        protected: image.protected,
        block_device_mapping: image.block_device_mapping.as_deref(),
    }
}

/// One error per target whose project already holds a live share of the image (`taken`:
/// project id and the request holding it, as the caller read them from the database).
pub fn taken_errors(verdict: &Verdict, taken: &[(String, Uuid)]) -> Vec<FieldError> {
    verdict
        .projects
        .iter()
        .enumerate()
        .filter_map(|(i, project)| {
            let project = project.as_ref()?;
            let (_, other) = taken.iter().find(|(id, _)| *id == project.id)?;
            Some(FieldError::new(
                format!("targets[{i}]"),
                format!(
                    "project {} already holds a live share of this image (request {other}); revoke or cancel that first",
                    project.id
                ),
            ))
        })
        .collect()
}

/// The Keystone project `target` names, or why it names none; a name is looked for in the
/// whole cloud.
pub async fn resolve(cloud: &OpenStack, target: &Target, rid: &str) -> Result<Result<Project, String>, CallError> {
    resolve_within(cloud, target, None, rid).await
}

/// Like [`resolve`], with a target given by name looked for only in `domains` (`None`: the
/// whole cloud): a name found only elsewhere gets the very answer of a name found nowhere, so
/// a requester never learns that another tenant's project exists, nor its id or domain. A
/// project id is taken wherever it is (sharing across domains is the point of the broker;
/// an id is not guessed).
async fn resolve_within(
    cloud: &OpenStack,
    target: &Target,
    domains: Option<&[String]>,
    rid: &str,
) -> Result<Result<Project, String>, CallError> {
    let name = match target {
        Target::ProjectId(id) => {
            return Ok(cloud
                .project(id, rid)
                .await?
                .ok_or_else(|| format!("Keystone has no project with id {id}")));
        }
        Target::ProjectName(name) => name,
    };
    let mut found = cloud.projects_named(name, rid).await?;
    found.retain(|p| domains.is_none_or(|domains| domains.contains(&p.domain_id)));
    Ok(match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!("Keystone has no project named `{name}`")),
        n => Err(format!(
            "{n} projects are named `{name}` (in different domains): give the project id"
        )),
    })
}

/// Glance counts every member (pending and rejected too) against its quota. A private image
/// hides its members, so only a shared image can be checked.
async fn quota_error(
    cloud: &OpenStack,
    image: &Image,
    project_ids: &[&str],
    quota: usize,
    rid: &str,
) -> Result<Option<FieldError>, CallError> {
    if image.visibility != "shared" {
        return Ok(None);
    }
    let members = cloud.members(&image.id, rid).await?;
    let new = project_ids
        .iter()
        .filter(|id| !members.iter().any(|m| m.member_id == **id))
        .count();
    Ok((members.len() + new > quota).then(|| {
        FieldError::new(
            "targets",
            format!(
                "the image has {} members; {new} more would pass Glance's member quota of {quota}",
                members.len()
            ),
        )
    }))
}
