//! Reconciliation: a `reconcile` job compares one image in Glance (and its shares' projects in
//! Keystone) with the broker's record of it, through [`compare`], and records what differs as
//! drift findings. The job holds its image like every job that talks to Glance about it, so no
//! grant or revoke of the image runs meanwhile; the API's changes (an approval, a revoke) only
//! move shares in the database, and are seen because Glance is read first and the shares after:
//! a member Glance showed belongs to a share that is live by then, or to none.
//!
//! In three steps, no transaction open across a call: look (Glance, Keystone), record (one
//! transaction under the lease: findings seen, findings no longer seen, shares that lost their
//! member or image moved as the poll moves them, each with its audit event), then repair and
//! adopt (`reconcile_repair.rs`), and finish. The sweep (`GSB_RECONCILE_EVERY`) and
//! `POST /v1/reconcile` queue the jobs; at most one is queued or running per image.

use std::collections::BTreeSet;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::{Worker, retry};
use crate::db;
use crate::db::audit::NewEvent;
use crate::db::drift::{DriftFinding, Sighting};
use crate::db::jobs::{Claimed, Finish};
use crate::domain::drift::{Comparison, DriftKind, Expected, ImageFacts, MemberFacts, Observed, ShareFacts, compare};
use crate::domain::{Action, Outcome as AuditOutcome};
use crate::openstack::CallError;
use crate::openstack::glance::{Image, Member};

/// How drift is looked for.
#[derive(Debug, Clone, Default)]
pub struct DriftConfig {
    /// How often every managed image is reconciled; `None`: only when asked.
    pub every: Option<std::time::Duration>,
    /// How long after a share ended its image is still reconciled (its member must not
    /// come back).
    pub ended_within: std::time::Duration,
    /// Owner projects whose members made outside the broker are adopted, not reported.
    pub adopt_owners: Vec<String>,
}

/// What one look at Glance and Keystone found.
pub(super) struct Look {
    pub(super) image: Option<Image>,
    pub(super) members: Vec<Member>,
    pub(super) comparison: Comparison,
    pub(super) region: String,
}

impl Worker {
    /// Queues the reconciliation of `only`, or of every image the broker manages and every
    /// `shared` image of the adopting owners; returns the images queued now (those already
    /// queued or running are left as they are).
    pub async fn queue_reconciles(&self, only: Option<Uuid>) -> anyhow::Result<Vec<Uuid>> {
        let mut images: BTreeSet<Uuid> = match only {
            Some(image) => BTreeSet::from([image]),
            None => db::drift::managed_images(&self.pool, self.config.drift.ended_within)
                .await?
                .into_iter()
                .collect(),
        };
        if only.is_none() {
            let rid = format!("req-{}", Uuid::new_v4());
            for owner in &self.config.drift.adopt_owners {
                match self.cloud.shared_images_of(owner, &rid).await {
                    Ok(found) => images.extend(found.iter().filter_map(|i| i.id.parse::<Uuid>().ok())),
                    Err(e) => tracing::warn!(owner, error = %e, "cannot list the owner's images for adoption"),
                }
            }
        }
        let images: Vec<Uuid> = images.into_iter().collect();
        let mut tx = self.pool.begin().await?;
        let queued = db::jobs::enqueue_reconciles(&mut tx, &images).await?;
        tx.commit().await?;
        Ok(queued)
    }

    /// One image's reconciliation (a claimed `reconcile` job).
    pub(super) async fn reconcile(&self, job: &Claimed, image_id: Uuid) -> anyhow::Result<()> {
        let rid = format!("req-{}", Uuid::new_v4());
        let look = match self.look(image_id, &rid).await? {
            Ok(look) => look,
            Err(error) => return self.reconcile_failed(job, error).await,
        };
        self.release_guard_of_moves(job, &look, &rid).await?;
        self.record_look(job, image_id, &look, &rid).await?;
        self.repair_and_adopt(job, image_id, &look, &rid).await?;
        let tx = self.pool.begin().await?;
        self.commit_if_ours(tx, job, Finish::Done).await
    }

    /// Glance first, then the broker's shares, then Keystone for the live shares' projects.
    async fn look(&self, image_id: Uuid, rid: &str) -> anyhow::Result<Result<Look, CallError>> {
        let id = image_id.to_string();
        let image = match self.cloud.image(&id, rid).await {
            Ok(image) => image,
            Err(e) => return Ok(Err(e)),
        };
        // Members exist only while the image is `shared`; otherwise Glance hides them.
        let listed = image.as_ref().is_some_and(|i| i.visibility == "shared");
        let members = if listed {
            match self.cloud.members(&id, rid).await {
                Ok(members) => members,
                Err(e) => return Ok(Err(e)),
            }
        } else {
            Vec::new()
        };
        let shares = db::drift::shares_of_image(&self.pool, image_id, self.config.drift.ended_within).await?;
        let mut keystone_answered = true;
        let mut missing_projects = Vec::new();
        let live: BTreeSet<&str> = shares
            .iter()
            .filter(|s| crate::domain::drift::is_live(s.state))
            .filter_map(|s| s.project_id.as_deref())
            .collect();
        if image.is_some() {
            for project in live {
                match self.cloud.project(project, rid).await {
                    Ok(Some(_)) => {}
                    Ok(None) => missing_projects.push(project.to_owned()),
                    Err(e) => {
                        tracing::warn!(project, error = %e, "Keystone did not answer: projects not compared");
                        keystone_answered = false;
                        break;
                    }
                }
            }
        }
        let region = match shares.first() {
            Some(share) => share.region.clone(),
            None => self
                .cloud
                .regions()
                .await
                .ok()
                .and_then(|r| r.into_iter().next())
                .unwrap_or_default(),
        };
        // The deletion guard expects `protected` once it has seen it set.
        let guard = db::image_guards::find(&self.pool, image_id, &region).await?;
        let expected = Expected {
            shares: shares
                .iter()
                .map(|s| ShareFacts {
                    id: s.id,
                    project_id: s.project_id.clone(),
                    state: s.state,
                })
                .collect(),
            protected: guard.filter(|g| g.protected_at.is_some()).map(|_| true),
            adopt: image
                .as_ref()
                .and_then(|i| i.owner.as_ref())
                .is_some_and(|owner| self.config.drift.adopt_owners.contains(owner)),
        };
        let observed = Observed {
            image: image.as_ref().map(|i| ImageFacts {
                status: i.status.clone(),
                visibility: i.visibility.clone(),
                owner: i.owner.clone(),
                protected: Some(i.protected),
            }),
            members: listed.then(|| {
                members
                    .iter()
                    .map(|m| MemberFacts {
                        project_id: m.member_id.clone(),
                        status: m.status.clone(),
                    })
                    .collect()
            }),
            missing_projects,
        };
        let mut comparison = compare(&expected, &observed);
        if !keystone_answered {
            comparison.checked.retain(|k| *k != DriftKind::ProjectMissing);
        }
        Ok(Ok(Look {
            image,
            members,
            comparison,
            region,
        }))
    }

    /// Shares about to end because their member or image is gone may take the deletion guard
    /// with them, as when the poll ends them (the same rule). Glance failing leaves the guard
    /// for the next pass.
    async fn release_guard_of_moves(&self, job: &Claimed, look: &Look, rid: &str) -> anyhow::Result<()> {
        let moving: Vec<Uuid> = look.comparison.moves.iter().map(|(id, _)| *id).collect();
        let Some(first) = db::shares::by_ids(&self.pool, &moving).await?.into_iter().next() else {
            return Ok(());
        };
        if let Err(e) = self
            .release_guard(std::slice::from_ref(job), &first, &moving, rid)
            .await?
        {
            tracing::warn!(image.id = %first.image_id, error = %e, "the deletion guard stays until the next pass");
        }
        Ok(())
    }

    /// Records the findings, resolves those no longer seen, and moves shares that lost their
    /// member or image: one transaction under the lease, with the audit events.
    async fn record_look(&self, job: &Claimed, image_id: Uuid, look: &Look, rid: &str) -> anyhow::Result<()> {
        let held = std::slice::from_ref(job);
        let mut tx = self.lease_tx(held).await?;
        let c = &look.comparison;
        // The poll's rule for a member or an image gone, applied to the share as it is now.
        let moving: Vec<Uuid> = c.moves.iter().map(|(id, _)| *id).collect();
        let locked = db::shares::lock_all(&mut tx, &moving).await?;
        let mut moved = Vec::new();
        for (share_id, trigger) in &c.moves {
            if let Some(share) = locked.iter().find(|s| s.id == *share_id)
                && let Some(share) = self.apply(&mut tx, share, *trigger, None).await?
            {
                moved.push(share);
            }
        }
        let mut opened = Vec::new();
        let mut seen = Vec::new();
        for f in &c.findings {
            let sighting = Sighting {
                image_id,
                region: &look.region,
                kind: f.kind,
                project_id: f.project_id.as_deref(),
                share_id: f.share_id,
                details: &f.details,
            };
            let (finding, new) = db::drift::see(&mut tx, &sighting).await?;
            seen.push((f.project_id.clone(), f.kind));
            if new {
                opened.push(finding);
            }
        }
        // A member about to be adopted resolves its finding as adopted, not as unseen.
        seen.extend(
            c.adoptions
                .iter()
                .map(|a| (Some(a.project_id.clone()), DriftKind::UnmanagedMember)),
        );
        let resolved = db::drift::resolve_unseen(&mut tx, image_id, &c.checked, &seen).await?;
        let mut events: Vec<NewEvent> = moved
            .iter()
            .map(|share| NewEvent {
                details: json!({ "observed_in_glance": true, "reconciled": true }),
                ..self.event(share, Action::Revoke, AuditOutcome::Success, rid)
            })
            .collect();
        events.extend(opened.iter().map(|f| self.finding_event(f, Action::DriftDetected, rid)));
        events.extend(
            resolved
                .iter()
                .map(|f| self.finding_event(f, Action::DriftResolved, rid)),
        );
        crate::events::record_all(&mut tx, &self.config.instance, events).await?;
        tx.commit().await?;
        for f in &opened {
            metrics::counter!("gsb_drift_findings_total", "kind" => f.kind.as_ref().to_owned()).increment(1);
            tracing::warn!(image.id = %image_id, drift.kind = %f.kind, project.id = ?f.project_id, "drift found");
        }
        Ok(())
    }

    /// The audit event about a finding (opened, or resolved).
    pub(super) fn finding_event<'a>(&'a self, f: &'a DriftFinding, action: Action, rid: &'a str) -> NewEvent<'a> {
        NewEvent {
            share_id: f.share_id,
            image_id: Some(f.image_id),
            project_id: f.project_id.as_deref(),
            region: Some(&f.region),
            correlation_id: Some(rid),
            details: json!({
                "finding_id": f.id,
                "kind": f.kind,
                "details": f.details,
                "resolution": f.resolution,
            }),
            ..NewEvent::attempt(&self.actor, action)
        }
    }

    /// Glance or Keystone did not answer: the job is retried (a transient failure) or ends
    /// failed; the findings stay as the last pass left them.
    async fn reconcile_failed(&self, job: &Claimed, error: CallError) -> anyhow::Result<()> {
        let message = error.to_string();
        let finish = match &error {
            CallError::Transient { retry_after, .. } if job.attempts < self.config.max_attempts => {
                let delay = retry::next_delay(
                    job.attempts - 1,
                    self.config.retry_base,
                    self.config.retry_max,
                    *retry_after,
                    rand::random(),
                );
                Finish::Later(Utc::now() + delay, Some(message))
            }
            _ => Finish::Failed(message),
        };
        tracing::warn!(job.id = %job.id, error = %error, "reconciliation could not look at Glance");
        let tx = self.pool.begin().await?;
        self.commit_if_ours(tx, job, finish).await
    }
}
