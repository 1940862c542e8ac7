//! What a reconciliation does about what it found, after recording it: adopts members made by
//! hand for the adopting owners, and, when the policy enforces (`enforce_drift`), repairs:
//! removes members no live share stands for (an audited revoke, reason `unapproved`), makes
//! the image `shared` again, and protects it again where the deletion guard keeps it protected. Each repair checks the lease before its Glance call (the fence)
//! and records itself, its audit events and the finding it resolves in a transaction under the
//! lease after the call. A member is never removed while a share of its project is live: the
//! database is asked again just before the call, so a grant approved since the look is safe.

use serde_json::json;
use uuid::Uuid;

use super::Worker;
use super::reconcile::Look;
use crate::db;
use crate::db::audit::NewEvent;
use crate::db::drift::Adopted;
use crate::db::jobs::{self, Claimed, Kind};
use crate::domain::drift::{DriftKind, Repair};
use crate::domain::{Action, Initiator, Outcome as AuditOutcome, ShareState};

/// The reason an unmanaged member's removal records.
pub const UNAPPROVED: &str = "unapproved";

impl Worker {
    pub(super) async fn repair_and_adopt(
        &self,
        job: &Claimed,
        image_id: Uuid,
        look: &Look,
        rid: &str,
    ) -> anyhow::Result<()> {
        for adoption in &look.comparison.adoptions {
            self.adopt(job, image_id, look, &adoption.project_id, adoption.state, rid)
                .await?;
        }
        if !self.config.policy.current().enforce_drift {
            return Ok(());
        }
        for (kind, repair) in &look.comparison.repairs {
            let repaired = match repair {
                Repair::RemoveMember { project_id } => self.remove_unmanaged(job, image_id, project_id, rid).await?,
                Repair::RestoreVisibility => self.restore_visibility(job, image_id, look, rid).await?,
                Repair::RestoreProtected { protected } => {
                    self.restore_protected(job, image_id, look, *protected, rid).await?
                }
            };
            if repaired {
                metrics::counter!("gsb_drift_repairs_total", "kind" => kind.as_ref().to_owned()).increment(1);
            }
        }
        Ok(())
    }

    /// Removes a member no live share stands for; `false` when it was left (a share of its
    /// project is live now, or Glance failed: the next pass tries again).
    async fn remove_unmanaged(
        &self,
        job: &Claimed,
        image_id: Uuid,
        project_id: &str,
        rid: &str,
    ) -> anyhow::Result<bool> {
        let held = std::slice::from_ref(job);
        if db::drift::has_live_share(&self.pool, image_id, project_id).await? {
            tracing::info!(image.id = %image_id, project.id = project_id, "a share of the project went live since the look: member kept");
            return Ok(false);
        }
        self.fence(held).await?;
        if let Err(e) = self.cloud.remove_member(&image_id.to_string(), project_id, rid).await {
            tracing::warn!(image.id = %image_id, project.id = project_id, error = %e, "removing an unmanaged member failed");
            return Ok(false);
        }
        let mut tx = self.lease_tx(held).await?;
        let resolved = db::drift::resolve(
            &mut tx,
            image_id,
            Some(project_id),
            DriftKind::UnmanagedMember,
            "repaired",
        )
        .await?;
        let region = resolved.as_ref().map(|f| f.region.clone()).unwrap_or_default();
        let mut events = vec![NewEvent {
            image_id: Some(image_id),
            project_id: Some(project_id),
            region: Some(&region),
            reason: Some(UNAPPROVED),
            correlation_id: Some(rid),
            details: json!({ "drift": DriftKind::UnmanagedMember, "finding_id": resolved.as_ref().map(|f| f.id) }),
            ..NewEvent::attempt(&self.actor, Action::Revoke)
        }];
        if let Some(f) = &resolved {
            events.push(self.finding_event(f, Action::DriftResolved, rid));
        }
        crate::events::record_all(&mut tx, &self.config.instance, events).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Makes the image `shared` again, so its members see it.
    async fn restore_visibility(&self, job: &Claimed, image_id: Uuid, look: &Look, rid: &str) -> anyhow::Result<bool> {
        let held = std::slice::from_ref(job);
        let found = look.image.as_ref().map(|i| i.visibility.clone());
        self.fence(held).await?;
        if let Err(e) = self.cloud.set_visibility(&image_id.to_string(), "shared", rid).await {
            tracing::warn!(image.id = %image_id, error = %e, "restoring the image's visibility failed");
            return Ok(false);
        }
        let tx = self.lease_tx(held).await?;
        let details = json!({ "visibility": { "from": found, "to": "shared" }, "drift": DriftKind::VisibilityChanged });
        let event = image_event(&self.actor, look, image_id, Action::Visibility, details, rid);
        self.record_repair(tx, image_id, DriftKind::VisibilityChanged, event, rid)
            .await?;
        Ok(true)
    }

    /// Puts the image's `protected` back to what the deletion guard keeps.
    async fn restore_protected(
        &self,
        job: &Claimed,
        image_id: Uuid,
        look: &Look,
        protected: bool,
        rid: &str,
    ) -> anyhow::Result<bool> {
        let held = std::slice::from_ref(job);
        let found = look.image.as_ref().map(|i| i.protected);
        self.fence(held).await?;
        if let Err(e) = self.cloud.set_protected(&image_id.to_string(), protected, rid).await {
            tracing::warn!(image.id = %image_id, error = %e, "restoring the image's protection failed");
            return Ok(false);
        }
        let mut tx = self.lease_tx(held).await?;
        db::image_guards::clear_unprotected_outside(&mut tx, image_id, &look.region).await?;
        let details = json!({ "protected": { "from": found, "to": protected }, "drift": DriftKind::ProtectedChanged });
        let event = image_event(&self.actor, look, image_id, Action::Protect, details, rid);
        self.record_repair(tx, image_id, DriftKind::ProtectedChanged, event, rid)
            .await?;
        Ok(true)
    }

    /// Records a repair of the image (a finding about no member) with its audit event, and
    /// resolves its finding, in `tx` (taken under the lease after the Glance call).
    async fn record_repair(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        image_id: Uuid,
        kind: DriftKind,
        event: NewEvent<'_>,
        rid: &str,
    ) -> anyhow::Result<()> {
        let resolved = db::drift::resolve(&mut tx, image_id, None, kind, "repaired").await?;
        let mut events = vec![event];
        if let Some(f) = &resolved {
            events.push(self.finding_event(f, Action::DriftResolved, rid));
        }
        crate::events::record_all(&mut tx, &self.config.instance, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a member made by hand as a share, as Glance shows it: no approver, its state
    /// from the member's status, its grant time the member's. A pending one is polled like
    /// any other; a rejected one is revoked like any other (the next pass, or a person).
    async fn adopt(
        &self,
        job: &Claimed,
        image_id: Uuid,
        look: &Look,
        project_id: &str,
        state: ShareState,
        rid: &str,
    ) -> anyhow::Result<()> {
        let image = look.image.as_ref();
        let member = look.members.iter().find(|m| m.member_id == project_id);
        let adopted = Adopted {
            image_id,
            region: &look.region,
            project_id,
            state,
            image_name: image.and_then(|i| i.name.as_deref()),
            image_owner: image.and_then(|i| i.owner.as_deref()),
            image_visibility: image.map_or("shared", |i| i.visibility.as_str()),
            member_created_at: member.and_then(|m| m.created_at),
            by: &self.actor.name,
        };
        let mut tx = self.lease_tx(std::slice::from_ref(job)).await?;
        let Some(share) = db::drift::adopt(&mut tx, &adopted).await? else {
            tx.rollback().await?;
            return Ok(());
        };
        if state == ShareState::PendingAcceptance {
            let first = chrono::Utc::now() + self.config.accept_poll_first;
            jobs::enqueue(&mut tx, Kind::Poll, share.id, image_id, first).await?;
        }
        let mut events = vec![NewEvent {
            details: json!({
                "member_status": member.map(|m| m.status.as_str()),
                "member_created_at": member.and_then(|m| m.created_at),
                "approved_by": null,
            }),
            ..self.event(&share, Action::Adopt, AuditOutcome::Success, rid)
        }];
        let resolved = db::drift::resolve(
            &mut tx,
            image_id,
            Some(project_id),
            DriftKind::UnmanagedMember,
            "adopted",
        )
        .await?;
        if let Some(f) = &resolved {
            events.push(self.finding_event(f, Action::DriftResolved, rid));
        }
        crate::events::record_all(&mut tx, &self.config.instance, events).await?;
        tx.commit().await?;
        metrics::counter!("gsb_shares_adopted_total").increment(1);
        Ok(())
    }
}

/// An audit event about the image as the look saw it (a repair of the image itself).
fn image_event<'a>(
    actor: &'a Initiator,
    look: &'a Look,
    image_id: Uuid,
    action: Action,
    details: serde_json::Value,
    rid: &'a str,
) -> NewEvent<'a> {
    NewEvent {
        image_id: Some(image_id),
        region: Some(&look.region),
        image_owner: look.image.as_ref().and_then(|i| i.owner.as_deref()),
        image_name: look.image.as_ref().and_then(|i| i.name.as_deref()),
        correlation_id: Some(rid),
        details,
        ..NewEvent::attempt(actor, action)
    }
}
