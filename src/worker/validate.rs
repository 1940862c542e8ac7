//! Validation of a new request, before anyone decides on it: the worker runs the one check
//! (`crate::validation`, shared with the API's dry run) against Keystone and Glance, adds the
//! database's answer (a target that already holds a live share of the image), and records the
//! verdict, its warnings, its audit event and the approval policy's decision in one
//! transaction, committed only while the lease holds. Reads only: nothing is written to Glance.

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::{Worker, approval, retry};
use crate::db;
use crate::db::audit::NewEvent;
use crate::db::jobs::{self, Claimed, Finish, Origin};
use crate::db::share_requests::{ImageFacts, ResolvedTarget, ShareRequest};
use crate::db::shares::Share;
use crate::domain::{Action, Outcome as AuditOutcome, Target};
use crate::domain::{FieldError, RequestStatus, Validation, Warning};
use crate::openstack::CallError;
use crate::telemetry;
use crate::validation::{self, Candidate};

/// The target a share names, as validation resolves it.
pub(super) fn target_of(share: &Share) -> Target {
    match &share.project_id {
        Some(id) => Target::ProjectId(id.clone()),
        None => Target::ProjectName(share.target.clone()),
    }
}

impl Worker {
    /// Validation's settings, as this worker runs.
    pub(super) fn validation_settings(&self) -> validation::Settings {
        validation::Settings {
            member_quota: self.config.member_quota,
            concurrency: self.config.concurrency,
            guard_on: self.guards_images(),
        }
    }

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
            let candidate = Candidate {
                image_id: request.image_id,
                region: &request.region,
                target_domains: request.target_domains.as_deref(),
                targets: shares.iter().map(target_of).collect(),
            };
            Some(
                validation::check(&self.cloud, &candidate, self.validation_settings(), &rid)
                    .await
                    .map(|verdict| (verdict, shares)),
            )
        } else {
            None
        };

        let mut tx = self.pool.begin().await?;
        let trace = telemetry::trace::current();
        db::jobs::carry_origin(
            &mut tx,
            Origin {
                request_id: &rid,
                trace,
            },
        )
        .await?;
        let request = db::share_requests::find_for_update(&mut tx, request_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("request {request_id} is gone"))?;
        let finish = match verdict {
            // Cancelled or decided meanwhile: there is nothing left to validate.
            _ if !undecided(&request) => Finish::Done,
            None => Finish::Done,
            Some(Ok((verdict, shares))) if verdict.passed() => {
                let ids = verdict.project_ids();
                let taken =
                    db::share_requests::live_grants_to(&mut *tx, request.image_id, &request.region, &ids, request.id)
                        .await?;
                let image = verdict.image.as_ref().expect("a passed verdict knows the image");
                if taken.is_empty() {
                    let targets: Vec<ResolvedTarget> = shares
                        .iter()
                        .zip(&verdict.projects)
                        .filter_map(|(share, project)| {
                            let project = project.as_ref()?;
                            Some(ResolvedTarget {
                                share_id: share.id,
                                project_id: project.id.clone(),
                                project_name: project.name.clone(),
                                project_domain: project.domain_id.clone(),
                            })
                        })
                        .collect();
                    let (request, shares) =
                        db::share_requests::pass_validation(&mut tx, request_id, image, &targets, &verdict.warnings)
                            .await?;
                    let decision = self.config.policy.current().decide(&approval::facts(&request, &shares));
                    let event = NewEvent {
                        details: json!({
                            "image": image_details(image),
                            "targets": target_details(&shares),
                            "warnings": verdict.warnings,
                            "policy": approval::details(&decision),
                        }),
                        ..NewEvent::about_request(&self.actor, &request, Action::Validate)
                    };
                    crate::events::record(&mut tx, &self.config.instance, event).await?;
                    approval::apply(&mut tx, &self.config.instance, &decision, &request).await?;
                } else {
                    let errors = validation::taken_errors(&verdict, &taken);
                    self.record_failed(&mut tx, request_id, Some(image), &errors, &verdict.warnings)
                        .await?;
                }
                Finish::Done
            }
            Some(Ok((verdict, _))) => {
                self.record_failed(
                    &mut tx,
                    request_id,
                    verdict.image.as_ref(),
                    &verdict.errors,
                    &verdict.warnings,
                )
                .await?;
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
        image: Option<&ImageFacts>,
        errors: &[FieldError],
        warnings: &[Warning],
    ) -> anyhow::Result<()> {
        let (request, _) = db::share_requests::fail_validation(tx, request_id, image, errors, warnings).await?;
        let event = NewEvent {
            outcome: AuditOutcome::Failure,
            details: json!({ "image": image.map(image_details), "errors": errors, "warnings": warnings }),
            ..NewEvent::about_request(&self.actor, &request, Action::Validate)
        };
        crate::events::record(tx, &self.config.instance, event).await?;
        Ok(())
    }

    pub(super) async fn commit_if_ours(
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

fn image_details(image: &ImageFacts) -> serde_json::Value {
    json!({ "name": image.name, "owner": image.owner, "owner_domain": image.owner_domain, "visibility": image.visibility })
}

fn target_details(shares: &[Share]) -> serde_json::Value {
    shares
        .iter()
        .map(|s| json!({ "target": s.target, "project_id": s.project_id, "project_name": s.project_name, "domain_id": s.project_domain }))
        .collect()
}
