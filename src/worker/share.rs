//! Jobs on one share (poll, accept, reject, revoke): the calls to Glance and what they found
//! ([`Effect`], or a [`Failure`]), which `settle` records. Also the lease's guards that grants
//! use too: the fence checked before each write to Glance, and the transactions taken under
//! the lease (`lease_tx`) in which a revoke records the removal of the member, and a revoke or
//! a grant a visibility change, as it goes (see the module docs of `worker`).

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::Worker;
use crate::db;
use crate::db::audit::NewEvent;
use crate::db::jobs::{self, Claimed, Step};
use crate::db::shares::Share;
use crate::domain::{Action, Outcome as AuditOutcome};
use crate::domain::{RevokeCause, ShareState, Trigger};
use crate::openstack::CallError;
use crate::openstack::glance::Image;

/// What Glance said, once a job's calls are done.
#[derive(Debug)]
pub(super) enum Effect {
    /// The share no longer needs this job.
    Nothing,
    /// The request expired before the grant.
    Expired,
    Granted {
        project_id: String,
        accepted: bool,
        /// The image as Glance showed it: the audit log names it and its owner.
        image: Box<Image>,
    },
    /// The consumer has not decided yet.
    StillPending,
    Seen(Seen),
    /// The broker accepted the member for the consumer.
    Accepted,
    /// A `reject` job queued before rejections were carried out as revokes: the rejection is
    /// to be carried out now.
    RejectAsked,
    /// The member was removed; it is to be looked for again at this time.
    Removed(chrono::DateTime<Utc>),
    /// The member is gone, and stayed gone (and the image is private again when the broker
    /// owed that).
    Revoked,
}

/// An OpenStack call that failed, and whether Glance may hold the share's member anyway.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) error: CallError,
    /// The add of the member timed out or failed with a server error (Glance may have
    /// created it), or a call after the add failed.
    pub(super) member_may_exist: bool,
}

impl From<CallError> for Failure {
    fn from(error: CallError) -> Self {
        Failure {
            error,
            member_may_exist: false,
        }
    }
}

/// A change observed in Glance.
#[derive(Debug)]
pub(super) enum Seen {
    Accepted,
    Rejected,
    MemberGone,
    ImageGone,
}

impl Worker {
    /// A job on one share: its calls to OpenStack, then one transaction for the outcome.
    /// An error is ours (database, lost lease): the job is left for its lease to lapse.
    pub(super) async fn run_share_job(&self, job: &Claimed, share_id: Uuid, step: Step) -> anyhow::Result<()> {
        // Sent to Keystone and Glance as X-OpenStack-Request-ID, and the audit events'
        // correlation id: one id finds the call's and the job's work in every log.
        let rid = Self::request_id_of(std::slice::from_ref(job));
        let result = self.execute(job, share_id, step, &rid).await?;
        self.settle(step.kind(), vec![(job, share_id, result)], &rid).await
    }

    /// The network part. The outer error is ours; the inner one is OpenStack's answer.
    async fn execute(
        &self,
        job: &Claimed,
        share_id: Uuid,
        step: Step,
        rid: &str,
    ) -> anyhow::Result<Result<Effect, Failure>> {
        let share = db::shares::find(&self.pool, share_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("share {share_id} is gone"))?;
        Ok(match step {
            Step::Poll => match self.poll(&share, rid).await {
                // The member is gone: the share ends, and with it maybe the image's guard.
                Ok(Effect::Seen(seen @ (Seen::MemberGone | Seen::ImageGone))) => self
                    .release_guard(std::slice::from_ref(job), &share, &[share.id], rid)
                    .await?
                    .map(|()| Effect::Seen(seen))
                    .map_err(Failure::from),
                polled => polled.map_err(Failure::from),
            },
            Step::Accept => self.accept(job, &share, rid).await?,
            // Carried out as a revoke, which settle starts: nothing to ask Glance first.
            Step::Reject => Ok(Effect::RejectAsked),
            Step::Revoke => self.revoke(job, &share, rid).await?,
        })
    }

    /// Stops a job whose lease was lost or lapsed before it writes to Glance: another worker
    /// may own the job now, and the share may have moved on (a revoked member must not be
    /// added again). The error abandons the job, as any lost lease does.
    pub(super) async fn fence(&self, held: &[Claimed]) -> anyhow::Result<()> {
        if jobs::still_held(&self.pool, held).await? {
            return Ok(());
        }
        metrics::counter!("gsb_fenced_writes_total").increment(1);
        anyhow::bail!("lease lost on job {}: no more writes to Glance", held[0].id)
    }

    async fn poll(&self, share: &Share, rid: &str) -> Result<Effect, CallError> {
        let (ShareState::PendingAcceptance, Some(project_id)) = (share.state, &share.project_id) else {
            return Ok(Effect::Nothing);
        };
        let image_id = share.image_id.to_string();
        Ok(match self.cloud.member(&image_id, project_id, rid).await? {
            Some(member) if member.status == "accepted" => Effect::Seen(Seen::Accepted),
            Some(member) if member.status == "rejected" => Effect::Seen(Seen::Rejected),
            Some(_) => Effect::StillPending,
            None if self.cloud.image(&image_id, rid).await?.is_none() => Effect::Seen(Seen::ImageGone),
            None => Effect::Seen(Seen::MemberGone),
        })
    }

    /// Accepts the member for the consumer, if the share can still be accepted.
    async fn accept(&self, job: &Claimed, share: &Share, rid: &str) -> anyhow::Result<Result<Effect, Failure>> {
        let (Ok(_), Some(project_id)) = (share.state.on(Trigger::Accept), &share.project_id) else {
            return Ok(Ok(Effect::Nothing));
        };
        self.fence(std::slice::from_ref(job)).await?;
        let set = self
            .cloud
            .set_member_status(&share.image_id.to_string(), project_id, "accepted", rid)
            .await;
        Ok(set.map(|()| Effect::Accepted).map_err(Failure::from))
    }

    /// Removes the member, looks for it again `revoke_confirm_after` later (removing it again
    /// if it came back), then leaves the image private if the broker made it shared and no
    /// member is left.
    async fn revoke(&self, job: &Claimed, share: &Share, rid: &str) -> anyhow::Result<Result<Effect, Failure>> {
        if share.state != ShareState::Revoking {
            return Ok(Ok(Effect::Nothing));
        }
        let held = std::slice::from_ref(job);
        let image_id = share.image_id.to_string();
        if let Some(project_id) = &share.project_id {
            let confirm_after =
                chrono::Duration::from_std(self.config.revoke_confirm_after).unwrap_or(chrono::Duration::MAX);
            let removed_at = db::shares::revocation(&self.pool, share.id).await?.member_removed_at;
            let remove = match removed_at {
                None => true,
                Some(at) if Utc::now() < at + confirm_after => return Ok(Ok(Effect::Removed(at + confirm_after))),
                Some(_) => match self.cloud.member(&image_id, project_id, rid).await {
                    Ok(None) => false,
                    Ok(Some(member)) => {
                        metrics::counter!("gsb_members_back_after_removal_total").increment(1);
                        tracing::warn!(share.id = %share.id, member.status = %member.status, "the removed member is back in Glance: removing it again");
                        true
                    }
                    Err(e) => return Ok(Err(e.into())),
                },
            };
            if remove {
                if removed_at.is_none() {
                    self.note_dependents(held, share, rid).await?;
                }
                self.fence(held).await?;
                if let Err(e) = self.cloud.remove_member(&image_id, project_id, rid).await {
                    return Ok(Err(e.into()));
                }
                let mut tx = self.lease_tx(held).await?;
                db::shares::note_member_removed(&mut tx, share.id).await?;
                tx.commit().await?;
                return Ok(Ok(Effect::Removed(Utc::now() + confirm_after)));
            }
        }
        // Leave the image as the broker found it: private, once the last member is gone.
        if db::shares::broker_made_image_shared(&self.pool, share.image_id, &share.region).await? {
            match self.cloud.members(&image_id, rid).await {
                Ok(members) if members.is_empty() => {
                    self.fence(held).await?;
                    if let Err(e) = self.cloud.set_visibility(&image_id, "private", rid).await {
                        return Ok(Err(e.into()));
                    }
                    self.record_visibility(held, share.id, "shared", "private", rid).await?;
                }
                Ok(_) => {}
                // The image was deleted, or made private by its owner: nothing to restore.
                Err(CallError::Permanent { .. }) => {}
                Err(e) => return Ok(Err(e.into())),
            }
        }
        // The last share holding a member lifts the deletion guard.
        if let Err(e) = self.release_guard(held, share, &[share.id], rid).await? {
            return Ok(Err(e.into()));
        }
        Ok(Ok(Effect::Revoked))
    }

    /// Records what depends on the image in the consumer project just before the member is
    /// removed, unless the revoke's asker looked already (a person's revoke through the API)
    /// or the revoke only cleans up after a failed grant or a rejection. A service that does
    /// not answer is recorded as unchecked: the revoke goes on (it never gives up).
    async fn note_dependents(&self, held: &[Claimed], share: &Share, rid: &str) -> anyhow::Result<()> {
        let cause = db::shares::revocation(&self.pool, share.id).await?.cause;
        let looks = matches!(
            cause,
            None | Some(RevokeCause::Requested | RevokeCause::Scheduled | RevokeCause::Expiry)
        );
        let Some(project) = share.project_id.as_deref().filter(|_| looks) else {
            return Ok(());
        };
        if db::shares::revoke_dependents(&self.pool, share.id).await?.is_some() {
            return Ok(());
        }
        let image_id = share.image_id.to_string();
        let impact = self.cloud.findings(&image_id, rid).await.impact(&image_id, &[project]);
        let looked = json!({ "dependents": impact.dependents, "unchecked": impact.unchecked });
        let mut tx = self.lease_tx(held).await?;
        db::shares::note_revoke_dependents(&mut tx, share.id, &looked).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a visibility change the broker made, and (to private) that it owes none.
    pub(super) async fn record_visibility(
        &self,
        held: &[Claimed],
        share_id: Uuid,
        from: &str,
        to: &str,
        rid: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.lease_tx(held).await?;
        let share = db::shares::find(&mut *tx, share_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("share {share_id} is gone"))?;
        if to == "private" {
            db::shares::clear_made_image_shared(&mut tx, share.image_id, &share.region).await?;
        }
        let event = NewEvent {
            details: json!({ "visibility": { "from": from, "to": to } }),
            ..self.event(&share, Action::Visibility, AuditOutcome::Success, rid)
        };
        crate::events::record(&mut tx, &self.config.instance, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A transaction that goes on only while this worker still holds every job in `held`
    /// (the job rows stay locked until it ends, so the lease cannot be taken over meanwhile).
    pub(super) async fn lease_tx(
        &self,
        held: &[Claimed],
    ) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        anyhow::ensure!(jobs::holds(&mut tx, held).await?, "lease lost on job {}", held[0].id);
        Ok(tx)
    }
}

/// What the end of a revoke records: who revoked, why (`cause`), and what the revoke broke in
/// the consumer project as found when it started or just before it removed the member (with
/// what could not be checked), when anyone looked.
pub(super) async fn revoked_details(
    tx: &mut sqlx::PgConnection,
    share: &Share,
    cause: Option<RevokeCause>,
) -> Result<serde_json::Value, sqlx::Error> {
    let mut details = json!({ "revoked_by": share.revoked_by, "cause": cause });
    if let Some(looked) = db::shares::revoke_dependents(&mut *tx, share.id).await? {
        details["dependents"] = looked["dependents"].clone();
        details["unchecked"] = looked["unchecked"].clone();
    }
    Ok(details)
}
