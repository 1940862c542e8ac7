//! Grants, carried out in batches: the grant jobs of one image held under one lease are done
//! in one pass. Targets validated long ago are checked again in Keystone (reads, so several
//! at once, ahead of the writes), the image is read and made `shared` once, the members are added one after
//! another (Glance can fail concurrent member writes to one image), and every outcome is
//! settled in one transaction. A batch of one is the plain case.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::Worker;
use super::share::{Effect, Failure};
use crate::db;
use crate::db::jobs::{Claimed, Kind};
use crate::db::share_requests::ShareRequest;
use crate::db::shares::Share;
use crate::domain::{Action, Outcome as AuditOutcome, ShareState, Trigger};
use crate::openstack::CallError;
use crate::openstack::glance::Image;

/// How many grant jobs of one image one pass carries out at most.
pub(super) const BATCH: i64 = 64;

impl Worker {
    /// Carries out the grant jobs in `held` (all on one image, under one lease token), of
    /// `ids`, the shares in the same order.
    /// An error is ours (database, lost lease): the jobs are left for their lease to lapse.
    pub(super) async fn grant(&self, held: &[Claimed], ids: &[Uuid]) -> anyhow::Result<()> {
        let shares: HashMap<Uuid, Share> = db::shares::by_ids(&self.pool, ids)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
        let requests = super::settle::requests_of(&self.pool, &shares).await?;

        // What needs Glance, and what is settled without it.
        let mut outcomes: Vec<Option<Result<Effect, Failure>>> = Vec::with_capacity(held.len());
        let mut todo = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let share = shares.get(id).ok_or_else(|| anyhow::anyhow!("share {id} is gone"))?;
            let request = requests
                .get(&share.request_id)
                .ok_or_else(|| anyhow::anyhow!("request {} is gone", share.request_id))?;
            outcomes.push(if share.state.on(Trigger::StartGrant).is_err() {
                Some(Ok(Effect::Nothing))
            } else if request.expires_at.is_some_and(|at| at <= Utc::now()) {
                Some(Ok(Effect::Expired))
            } else {
                todo.push((i, share, request));
                None
            });
        }

        let rid = Self::request_id_of(held);
        if !todo.is_empty() {
            self.grant_members(held, &todo, &rid, &mut outcomes).await?;
            for (i, _, request) in &todo {
                if let (Some(Ok(Effect::Granted { .. })), Some(decided)) = (&outcomes[*i], request.decided_at) {
                    crate::metrics::granted((Utc::now() - decided).to_std().unwrap_or_default());
                }
            }
        }
        let settled = held
            .iter()
            .zip(ids)
            .zip(outcomes)
            .map(|((job, id), outcome)| (job, *id, outcome.expect("every share has an outcome")))
            .collect();
        self.settle(Kind::Grant, settled, &rid).await
    }

    /// Moves the queued shares to `granting`, with their audit events, before anything is
    /// written to Glance.
    async fn start_granting(
        &self,
        held: &[Claimed],
        todo: &[(usize, &Share, &ShareRequest)],
        rid: &str,
    ) -> anyhow::Result<()> {
        let queued: Vec<Uuid> = todo
            .iter()
            .filter(|(_, s, _)| s.state == ShareState::Queued)
            .map(|(_, s, _)| s.id)
            .collect();
        if queued.is_empty() {
            return Ok(());
        }
        let granting = ShareState::Queued.on(Trigger::StartGrant)?;
        let mut tx = self.lease_tx(held).await?;
        let granting = db::shares::transition_all(&mut tx, &queued, ShareState::Queued, granting).await?;
        anyhow::ensure!(granting.len() == queued.len(), "a queued share moved during its grant");
        let events = granting
            .iter()
            .map(|share| self.event(share, Action::Grant, AuditOutcome::Pending, rid))
            .collect();
        crate::events::record_all(&mut tx, &self.config.instance, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The Keystone and Glance calls of a batch; fills in the outcome of each share in `todo`.
    async fn grant_members(
        &self,
        held: &[Claimed],
        todo: &[(usize, &Share, &ShareRequest)],
        rid: &str,
        outcomes: &mut [Option<Result<Effect, Failure>>],
    ) -> anyhow::Result<()> {
        // A target validated more than `revalidate_after` ago is checked again, for the
        // project may have been deleted since; a fresh validation's project id is used as it
        // is. The checks are reads: they run ahead, several at once, while the members are
        // added one after another. A pass that ends early (a lost lease) cancels those left.
        let limit = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let lookups: Vec<AbortOnDropHandle<Result<String, CallError>>> = todo
            .iter()
            .map(|(_, share, request)| {
                let trusted = self
                    .validation_is_fresh(request)
                    .then(|| share.project_id.clone())
                    .flatten();
                let (worker, share, rid, limit) = (self.clone(), (*share).clone(), rid.to_owned(), limit.clone());
                AbortOnDropHandle::new(tokio::spawn(async move {
                    if let Some(project_id) = trusted {
                        return Ok(project_id);
                    }
                    let _permit = limit.acquire_owned().await.expect("the semaphore is never closed");
                    worker.resolve_target(&share, &rid).await
                }))
            })
            .collect();
        let (_, first, _) = todo[0];
        let image_id = first.image_id.to_string();
        // The image is read while the shares are marked `granting`.
        let (started, image) = tokio::join!(self.start_granting(held, todo, rid), self.cloud.image(&image_id, rid));
        started?;
        let image = match image {
            Ok(Some(image)) => Ok(image),
            Ok(None) => Err(CallError::permanent(
                Some(404),
                format!(
                    "image {image_id} does not exist in region {} (or the broker cannot see it)",
                    first.region
                ),
            )),
            Err(e) => Err(e),
        };
        // Whether the image can take members is found out before the first member is added.
        let mut checked = false;
        // After a transient failure the rest of the batch waits for the retry as well,
        // rather than press a Glance that is struggling.
        let mut failed: Option<CallError> = None;
        for ((i, share, request), lookup) in todo.iter().zip(lookups) {
            let project = lookup.await?;
            let outcome = match (project, &image) {
                (Err(e), _) => Err(e.into()),
                (_, Err(e)) => Err(e.clone().into()),
                (Ok(project_id), Ok(image)) if image.owner.as_deref() == Some(project_id.as_str()) => {
                    Err(CallError::permanent(None, "the target project owns the image: nothing to share").into())
                }
                (Ok(project_id), Ok(image)) => {
                    if !checked {
                        checked = true;
                        failed = match image.visibility.as_str() {
                            // Protected before anyone may use it, then shared.
                            "shared" | "private" => match self.guard(held, share, image, rid).await? {
                                Err(e) => Err(e),
                                Ok(()) if image.visibility == "private" => {
                                    self.make_shared(held, share, &image_id, rid).await?
                                }
                                Ok(()) => Ok(()),
                            },
                            other => Err(CallError::permanent(
                                Some(403),
                                format!(
                                    "a {other} image cannot have members; only private or shared images can be shared"
                                ),
                            )),
                        }
                        .err();
                    }
                    let outcome = match &failed {
                        Some(e) => Err(e.clone().into()),
                        None => {
                            self.add_member(held, &image_id, image, project_id, request.auto_accept, rid)
                                .await?
                        }
                    };
                    if let Err(Failure { error, .. }) = &outcome
                        && error.is_transient()
                    {
                        failed = Some(error.clone());
                    }
                    outcome
                }
            };
            outcomes[*i] = Some(outcome);
        }
        self.release_after_failed_grants(held, todo, rid, outcomes).await
    }

    /// A pass whose every grant failed for good with no member left in Glance leaves nothing
    /// to guard: the guard is lifted unless another share still holds a member. Best effort:
    /// when Glance fails meanwhile the image stays protected until a revoke of the image ends.
    async fn release_after_failed_grants(
        &self,
        held: &[Claimed],
        todo: &[(usize, &Share, &ShareRequest)],
        rid: &str,
        outcomes: &[Option<Result<Effect, Failure>>],
    ) -> anyhow::Result<()> {
        let nothing_held = todo.iter().all(|(i, _, _)| {
            matches!(&outcomes[*i], Some(Err(Failure { error, member_may_exist: false })) if !error.is_transient())
        });
        if !nothing_held {
            return Ok(());
        }
        let ending: Vec<Uuid> = todo.iter().map(|(_, share, _)| share.id).collect();
        if let Err(e) = self.release_guard(held, todo[0].1, &ending, rid).await? {
            tracing::warn!(error = %e, "the deletion guard could not be lifted after failed grants; it is lifted when a share of the image ends");
        }
        Ok(())
    }

    /// The target's Keystone project id: checked again at grant time, for the project may
    /// have been deleted since validation.
    async fn resolve_target(&self, share: &Share, rid: &str) -> Result<String, CallError> {
        match crate::validation::resolve(&self.cloud, &super::validate::target_of(share), rid).await? {
            Ok(project) => Ok(project.id),
            Err(reason) => Err(CallError::permanent(None, reason)),
        }
    }

    /// Whether `request` passed validation less than `revalidate_after` ago.
    fn validation_is_fresh(&self, request: &ShareRequest) -> bool {
        let trusted = chrono::Duration::from_std(self.config.revalidate_after).unwrap_or(chrono::Duration::MAX);
        request.validated_at.is_some_and(|at| Utc::now() - at < trusted)
    }

    /// Makes a private image `shared`, remembering first (on `share`) that the broker did, so
    /// the last revoke puts it back even after a crash right after the change.
    async fn make_shared(
        &self,
        held: &[Claimed],
        share: &Share,
        image_id: &str,
        rid: &str,
    ) -> anyhow::Result<Result<(), CallError>> {
        let mut tx = self.lease_tx(held).await?;
        db::shares::mark_made_image_shared(&mut tx, share.id).await?;
        tx.commit().await?;
        self.fence(held).await?;
        if let Err(e) = self.cloud.set_visibility(image_id, "shared", rid).await {
            return Ok(Err(e));
        }
        self.record_visibility(held, share.id, "private", "shared", rid).await?;
        Ok(Ok(()))
    }

    /// Adds one member, and accepts it for the consumer with `auto_accept`, each write only
    /// while the lease holds. A failure says whether Glance may hold the member anyway: an add
    /// that timed out or failed with a server error may have been carried out, and a failed
    /// accept comes after the add.
    async fn add_member(
        &self,
        held: &[Claimed],
        image_id: &str,
        image: &Image,
        project_id: String,
        auto_accept: bool,
        rid: &str,
    ) -> anyhow::Result<Result<Effect, Failure>> {
        self.fence(held).await?;
        if let Err(error) = self.cloud.add_member(image_id, &project_id, rid).await {
            let member_may_exist = error.is_transient();
            return Ok(Err(Failure {
                error,
                member_may_exist,
            }));
        }
        if auto_accept {
            self.fence(held).await?;
            if let Err(error) = self
                .cloud
                .set_member_status(image_id, &project_id, "accepted", rid)
                .await
            {
                return Ok(Err(Failure {
                    error,
                    member_may_exist: true,
                }));
            }
        }
        Ok(Ok(Effect::Granted {
            project_id,
            accepted: auto_accept,
            image: Box::new(image.clone()),
        }))
    }
}
