//! Validation of a new request, before anyone decides on it: the region is the one the broker
//! serves, spelled as in the catalog (the API checks it too when it has a cloud; an API
//! without one files any region), the image exists in the region and can take members, each
//! target is a real Keystone project (names resolved to ids, only among the projects the
//! requester may see), the owner is not among them, and the member quota has room. Reads
//! only: nothing is written to Glance.

use std::collections::HashMap;

use futures_util::{StreamExt, stream};

use crate::db::share_requests::{ImageFacts, ResolvedTarget, ShareRequest};
use crate::db::shares::Share;
use crate::domain::{FieldError, catalog_region};
use crate::openstack::glance::Image;
use crate::openstack::keystone::Project;
use crate::openstack::{CallError, OpenStack};

/// What validation found.
#[derive(Debug)]
pub enum Verdict {
    Passed(ImageFacts, Vec<ResolvedTarget>),
    Failed(Option<ImageFacts>, Vec<FieldError>),
}

/// Checks `request` and its `shares` (in target order) against Keystone and Glance. Every
/// problem is reported at once; an error is returned only when an answer could not be had.
pub async fn check(
    cloud: &OpenStack,
    request: &ShareRequest,
    shares: &[Share],
    member_quota: usize,
    concurrency: usize,
    rid: &str,
) -> Result<Verdict, CallError> {
    let mut errors = Vec::new();
    if let Err(reason) = catalog_region(&request.region, &cloud.regions().await?) {
        errors.push(FieldError::new("region", reason));
    }
    let image = cloud.image(&request.image_id.to_string(), rid).await?;
    let facts = match &image {
        Some(image) => {
            let owner_domain = match &image.owner {
                Some(owner) => cloud.project(owner, rid).await?.map(|p| p.domain_id),
                None => None,
            };
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
                    request.image_id, request.region
                ),
            ));
            None
        }
    };
    if let Some(image) = &image
        && !matches!(image.visibility.as_str(), "private" | "shared")
    {
        errors.push(FieldError::new(
            "image_id",
            format!(
                "the image is {}: a {} image cannot take members; only private or shared images can be shared",
                image.visibility, image.visibility
            ),
        ));
    }

    // Keystone reads, several at once; the answers come back in target order.
    let domains = request.target_domains.as_deref();
    let lookups: Vec<_> = shares
        .iter()
        .map(|share| resolve_within(cloud, share, domains, rid))
        .collect();
    let projects: Vec<_> = stream::iter(lookups).buffered(concurrency.max(1)).collect().await;
    let mut resolved = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for ((i, share), project) in shares.iter().enumerate().zip(projects) {
        let field = format!("targets[{i}]");
        let project = match project? {
            Ok(project) => project,
            Err(reason) => {
                errors.push(FieldError::new(field, reason));
                continue;
            }
        };
        if image.as_ref().and_then(|i| i.owner.as_deref()) == Some(project.id.as_str()) {
            errors.push(FieldError::new(
                field,
                format!("`{}` owns the image: there is nothing to share with it", share.target),
            ));
            continue;
        }
        if let Some(first) = seen.insert(project.id.clone(), i) {
            errors.push(FieldError::new(
                field,
                format!("names the same project ({}) as targets[{first}]", project.id),
            ));
            continue;
        }
        resolved.push(ResolvedTarget {
            share_id: share.id,
            project_id: project.id,
            project_name: project.name,
            project_domain: project.domain_id,
        });
    }

    if let Some(image) = &image
        && errors.is_empty()
        && let Some(error) = quota_error(cloud, image, &resolved, member_quota, rid).await?
    {
        errors.push(error);
    }

    Ok(match (facts, errors.is_empty()) {
        (Some(facts), true) => Verdict::Passed(facts, resolved),
        (facts, _) => Verdict::Failed(facts, errors),
    })
}

/// The Keystone project a target names, or why it names none.
pub(super) async fn resolve(cloud: &OpenStack, share: &Share, rid: &str) -> Result<Result<Project, String>, CallError> {
    resolve_within(cloud, share, None, rid).await
}

/// Like [`resolve`], with a target given by name looked for only in `domains` (`None`: the
/// whole cloud): a name found only elsewhere gets the very answer of a name found nowhere, so
/// a requester never learns that another tenant's project exists, nor its id or domain. A
/// project id is taken wherever it is (sharing across domains is the point of the broker;
/// an id is not guessed).
async fn resolve_within(
    cloud: &OpenStack,
    share: &Share,
    domains: Option<&[String]>,
    rid: &str,
) -> Result<Result<Project, String>, CallError> {
    if let Some(id) = &share.project_id {
        return Ok(cloud
            .project(id, rid)
            .await?
            .ok_or_else(|| format!("Keystone has no project with id {id}")));
    }
    let mut found = cloud.projects_named(&share.target, rid).await?;
    found.retain(|p| domains.is_none_or(|domains| domains.contains(&p.domain_id)));
    Ok(match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!("Keystone has no project named `{}`", share.target)),
        n => Err(format!(
            "{n} projects are named `{}` (in different domains): give the project id",
            share.target
        )),
    })
}

/// Glance counts every member (pending and rejected too) against its quota. A private image
/// hides its members, so only a shared image can be checked.
async fn quota_error(
    cloud: &OpenStack,
    image: &Image,
    targets: &[ResolvedTarget],
    quota: usize,
    rid: &str,
) -> Result<Option<FieldError>, CallError> {
    if image.visibility != "shared" {
        return Ok(None);
    }
    let members = cloud.members(&image.id, rid).await?;
    let new = targets
        .iter()
        .filter(|t| !members.iter().any(|m| m.member_id == t.project_id))
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
