//! Validation of a new request, before anyone decides on it: the region is the one the broker
//! serves, spelled as in the catalog (the API checks it too when it has a cloud; an API
//! without one files any region), the image exists in the region and can take members, each
//! target is a real Keystone project (names resolved to ids, only among the projects the
//! requester may see), the owner is not among them, and the member quota has room. Reads
//! only: nothing is written to Glance. The verdict, its audit event and the approval policy's
//! decision are recorded in one transaction, committed only while the lease holds.

use std::collections::HashMap;

use chrono::Utc;
use futures_util::{StreamExt, stream};
use serde_json::json;
use uuid::Uuid;

use super::{Worker, approval, retry};
use crate::db;
use crate::db::audit::NewEvent;
use crate::db::jobs::{self, Claimed, Finish};
use crate::db::share_requests::{ImageFacts, ResolvedTarget, ShareRequest};
use crate::db::shares::Share;
use crate::domain::{Action, Outcome as AuditOutcome};
use crate::domain::{FieldError, RequestStatus, Validation, catalog_region};
use crate::openstack::glance::Image;
use crate::openstack::keystone::Project;
use crate::openstack::{CallError, OpenStack};

impl Worker {
    /// Validates a new request: reads Keystone and Glance, then records the verdict and its
    /// audit event in one transaction, if the lease is still ours. Validation never gives up
    /// on a call that fails: the request stays `pending` with the error visible, and is retried.
    pub(super) async fn validate(&self, job: &Claimed, request_id: Uuid) -> anyhow::Result<()> {
        let request = db::share_requests::find(&self.pool, request_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("request {request_id} is gone"))?;
        let undecided =
            |r: &ShareRequest| r.status == RequestStatus::PendingApproval && r.validation == Validation::Pending;
        let rid = Self::request_id_of(std::slice::from_ref(job));
        let verdict = if undecided(&request) {
            let shares = db::shares::of_requests(&self.pool, &[request_id]).await?;
            Some(
                check(
                    &self.cloud,
                    &request,
                    &shares,
                    self.config.member_quota,
                    self.config.concurrency,
                    &rid,
                )
                .await,
            )
        } else {
            None
        };

        let mut tx = self.pool.begin().await?;
        db::jobs::carry_request_id(&mut tx, &rid).await?;
        let request = db::share_requests::find_for_update(&mut tx, request_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("request {request_id} is gone"))?;
        let finish = match verdict {
            // Cancelled or decided meanwhile: there is nothing left to validate.
            _ if !undecided(&request) => Finish::Done,
            None => Finish::Done,
            Some(Ok(Verdict::Passed(image, targets))) => {
                let ids: Vec<&str> = targets.iter().map(|t| t.project_id.as_str()).collect();
                let taken =
                    db::share_requests::live_grants_to(&mut *tx, request.image_id, &request.region, &ids, request.id)
                        .await?;
                if taken.is_empty() {
                    let (request, shares) =
                        db::share_requests::pass_validation(&mut tx, request_id, &image, &targets).await?;
                    let decision = self.config.policy.current().decide(&approval::facts(&request, &shares));
                    let event = NewEvent {
                        details: json!({
                            "image": image_details(&image),
                            "targets": target_details(&shares),
                            "policy": approval::details(&decision),
                        }),
                        ..NewEvent::about_request(&self.actor, &request, Action::Validate)
                    };
                    crate::events::record(&mut tx, &self.config.instance, event).await?;
                    approval::apply(&mut tx, &self.config.instance, &decision, &request).await?;
                } else {
                    let shares = db::shares::of_requests(&mut *tx, &[request_id]).await?;
                    let errors = taken_errors(&targets, &shares, &taken);
                    self.record_failed(&mut tx, request_id, Some(&image), &errors).await?;
                }
                Finish::Done
            }
            Some(Ok(Verdict::Failed(image, errors))) => {
                self.record_failed(&mut tx, request_id, image.as_ref(), &errors).await?;
                Finish::Done
            }
            Some(Err(error)) => {
                let message = error.to_string();
                tracing::warn!(error = %message, "validation could not reach OpenStack; retrying");
                db::share_requests::note_validation_error(&mut tx, request_id, &message).await?;
                let retry_after = match &error {
                    CallError::Transient { retry_after, .. } => *retry_after,
                    CallError::Permanent { .. } => None,
                };
                let delay = retry::next_delay(
                    job.attempts - 1,
                    self.config.retry_base,
                    self.config.retry_max,
                    retry_after,
                    rand::random(),
                );
                Finish::Later(Utc::now() + delay, None)
            }
        };
        self.commit_if_ours(tx, job, finish).await
    }

    async fn record_failed(
        &self,
        tx: &mut sqlx::PgConnection,
        request_id: Uuid,
        image: Option<&db::share_requests::ImageFacts>,
        errors: &[FieldError],
    ) -> anyhow::Result<()> {
        let (request, _) = db::share_requests::fail_validation(tx, request_id, image, errors).await?;
        let event = NewEvent {
            outcome: AuditOutcome::Failure,
            details: json!({ "image": image.map(image_details), "errors": errors }),
            ..NewEvent::about_request(&self.actor, &request, Action::Validate)
        };
        crate::events::record(tx, &self.config.instance, event).await?;
        Ok(())
    }

    async fn commit_if_ours(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        job: &Claimed,
        finish: Finish,
    ) -> anyhow::Result<()> {
        if jobs::finish(&mut tx, job, finish).await? {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
            tracing::warn!(job.id = %job.id, "lease lost before completion: outcome discarded, another worker owns the job");
        }
        Ok(())
    }
}

fn image_details(image: &db::share_requests::ImageFacts) -> serde_json::Value {
    json!({ "name": image.name, "owner": image.owner, "owner_domain": image.owner_domain, "visibility": image.visibility })
}

fn target_details(shares: &[Share]) -> serde_json::Value {
    shares
        .iter()
        .map(|s| json!({ "target": s.target, "project_id": s.project_id, "project_name": s.project_name, "domain_id": s.project_domain }))
        .collect()
}

/// One error per target whose project already holds a live share of the image elsewhere.
fn taken_errors(
    targets: &[db::share_requests::ResolvedTarget],
    shares: &[Share],
    taken: &[(String, Uuid)],
) -> Vec<FieldError> {
    shares
        .iter()
        .enumerate()
        .filter_map(|(i, share)| {
            let target = targets.iter().find(|t| t.share_id == share.id)?;
            let (_, other) = taken.iter().find(|(project, _)| *project == target.project_id)?;
            Some(FieldError::new(
                format!("targets[{i}]"),
                format!(
                    "project {} already holds a live share of this image (request {other}); revoke or cancel that first",
                    target.project_id
                ),
            ))
        })
        .collect()
}

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
