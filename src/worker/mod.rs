//! The background worker: carries approved shares out against Glance, tracks acceptance,
//! revokes and expires. Imports `domain`, `db` and `openstack`; never `http`.
//!
//! Each job runs in three steps, and no transaction is open across a network call:
//! 1. claim: one committed statement gives this worker a lease on the job;
//! 2. execute: the Glance and Keystone calls, with the lease renewed by a heartbeat;
//! 3. settle: one transaction records the outcome, its audit event and the job's end,
//!    and is committed only if the lease is still ours.
//!
//! Races: the API and other jobs change shares while a job runs, so settle asks the share's
//! state machine ([`ShareState::on`]) again against the share as it is then, and writes only
//! a move it allows, guarded by the state it moves from. An outcome that lost its race (an
//! acceptance polled while the share was being revoked) is discarded, and a job that finds
//! its share moved on just ends. Before each write to Glance the job checks that its lease
//! still holds (the fence), so a worker that stalled past its lease writes nothing more.
//! Revokes never give up: they are retried, with backoff up to `GSB_RETRY_MAX_SECS`, until
//! the member is gone, and reported stalled (`share.revoke_stalled`) when they take long.

mod approval;
mod grant;
mod pace;
mod retry;
mod validate;
mod webhooks;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tracing::Instrument;
use uuid::Uuid;

use crate::db;
use crate::db::audit::NewEvent;
use crate::db::jobs::{self, Claimed, Finish, Kind, Subject};
use crate::db::share_requests::ShareRequest;
use crate::db::shares::RevokeStart;
use crate::db::shares::Share;
use crate::domain::policy::SharedPolicy;
use crate::domain::{
    FieldError, Initiator, REJECTED_BY_CONSUMER, RequestStatus, RevokeCause, ShareState, Trigger, Validation,
};
use crate::openstack::glance::Image;
use crate::openstack::{CallError, OpenStack};

pub use pace::{ApiBudget, api_key};
pub use retry::{backoff, next_delay, poll_delay};
use validate::Verdict;
pub use webhooks::WebhookConfig;

/// How the worker paces itself.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How often an idle worker looks for due jobs when no notification comes.
    pub idle_poll: Duration,
    /// Tries of a Glance call that keeps failing transiently before a grant fails, or a
    /// revoke (which never gives up) is reported stalled.
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// First and longest wait between acceptance checks.
    pub accept_poll_first: Duration,
    pub accept_poll_max: Duration,
    /// Glance's `image_member_quota`, which validation checks a request against.
    pub member_quota: usize,
    /// How long a passed validation is trusted: grants starting later check their targets
    /// in Keystone again.
    pub revalidate_after: Duration,
    /// The approval policy applied to each validated request; it also says how long an
    /// undecided request may wait.
    pub policy: SharedPolicy,
    /// How webhook deliveries are sent.
    pub webhooks: WebhookConfig,
    /// Glance calls per second to one cloud and region, shared by all replicas; 0: no limit.
    pub glance_rate_limit: u32,
    /// This instance's name in the audit log.
    pub instance: String,
    /// A revoke still failing this long after it started is reported stalled (as after
    /// `max_attempts` failed tries, whichever comes first).
    pub revoke_stalled_after: Duration,
    /// How long after removing a member the revoke looks for it again before the share is
    /// `revoked`: Glance brings a removed member back when a status update by the consumer
    /// that read it before the removal completes after it.
    pub revoke_confirm_after: Duration,
}

/// What one pass found to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    Idle,
    /// A job ran (whatever its result).
    Ran,
}

#[derive(Clone)]
pub struct Worker {
    pool: PgPool,
    cloud: OpenStack,
    config: Arc<WorkerConfig>,
    actor: Arc<Initiator>,
    webhook_http: reqwest::Client,
}

/// The two queues a worker takes work from.
#[derive(Debug, Clone, Copy)]
enum Queue {
    /// Share and request jobs against OpenStack.
    Jobs,
    /// Webhook deliveries.
    Deliveries,
}

impl Queue {
    fn name(self) -> &'static str {
        match self {
            Queue::Jobs => "jobs",
            Queue::Deliveries => "deliveries",
        }
    }
}

/// A job's heartbeat, stopped when dropped: also when its pass panics, so that a job a
/// panic abandoned is not renewed for ever, and its lease lapses.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs one pass of the loop `name`; a pass that panics becomes a failed pass (logged and
/// counted in `gsb_worker_panics_total`), so the loop goes on instead of stopping for good.
/// A panicking job is left for its lease to lapse, like any abandoned job.
async fn survive<F>(name: &'static str, pass: F) -> anyhow::Result<Outcome>
where
    F: Future<Output = anyhow::Result<Outcome>>,
{
    match AssertUnwindSafe(pass).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".to_owned());
            metrics::counter!("gsb_worker_panics_total", "loop" => name).increment(1);
            tracing::error!(worker.loop = name, panic = %message, "a worker pass panicked; the loop goes on");
            Err(anyhow::anyhow!("the {name} pass panicked: {message}"))
        }
    }
}

/// What Glance said, once a job's calls are done.
#[derive(Debug)]
enum Effect {
    /// The share no longer needs this job.
    Nothing,
    /// The request expired before the grant.
    Expired,
    Granted {
        project_id: String,
        accepted: bool,
        /// The image as Glance showed it: the audit log names it and its owner.
        image: Image,
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
struct Failure {
    error: CallError,
    /// The add of the member timed out or failed with a server error (Glance may have
    /// created it), or a call after the add failed.
    member_may_exist: bool,
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
enum Seen {
    Accepted,
    Rejected,
    MemberGone,
    ImageGone,
}

/// `cloud` with every Glance call waiting for a slot under the limit that all replicas share
/// (`rate` calls per second to its cloud and region; 0: no limit).
pub fn paced(cloud: OpenStack, pool: PgPool, rate: u32) -> OpenStack {
    match rate {
        0 => cloud,
        rate => {
            let key = cloud.cloud_key();
            cloud.with_pacer(Arc::new(pace::SharedRate::new(pool, key, rate)))
        }
    }
}

/// The requests `shares` belong to, by id.
async fn requests_of(
    db: impl sqlx::PgExecutor<'_>,
    shares: &HashMap<Uuid, Share>,
) -> Result<HashMap<Uuid, ShareRequest>, sqlx::Error> {
    let ids: Vec<Uuid> = shares.values().map(|s| s.request_id).collect();
    let requests = db::share_requests::find_many(db, &ids).await?;
    Ok(requests.into_iter().map(|r| (r.id, r)).collect())
}

/// Logs an outcome that lost its race to a newer change of its share, and counts it.
fn discarded(share_id: Uuid, refusal: &crate::domain::Refusal) {
    metrics::counter!("gsb_outcomes_discarded_total").increment(1);
    tracing::info!(share.id = %share_id, %refusal, "the share moved on: this outcome lost its race and is discarded");
}

/// What settling a batch collects besides its state changes: the audit events, in order,
/// and the (share, image) of each member whose acceptance is to be checked.
#[derive(Default)]
struct Settled {
    events: Vec<ShareEvent>,
    polls: Vec<(Uuid, Uuid)>,
}

/// An audit event about a share, to be written once the rest of the transaction is.
struct ShareEvent {
    share: Share,
    action: &'static str,
    outcome: &'static str,
    reason: Option<String>,
    details: serde_json::Value,
}

impl ShareEvent {
    fn new(share: Share, action: &'static str, outcome: &'static str) -> Self {
        ShareEvent {
            share,
            action,
            outcome,
            reason: None,
            details: json!({}),
        }
    }
}

impl Worker {
    pub fn new(pool: PgPool, cloud: OpenStack, config: WorkerConfig) -> Self {
        let cloud = paced(cloud, pool.clone(), config.glance_rate_limit);
        Worker {
            pool,
            cloud,
            webhook_http: webhooks::client(&config.webhooks),
            config: Arc::new(config),
            actor: Arc::new(Initiator::service("worker")),
        }
    }

    /// Runs until `shutdown` turns true: stops claiming, lets running jobs finish, returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(self.pool.clone(), wake.clone()));
        let mut loops = Vec::new();
        let jobs = std::iter::repeat_n(Queue::Jobs, self.config.concurrency.max(1));
        let deliveries = std::iter::repeat_n(Queue::Deliveries, self.config.webhooks.concurrency.max(1));
        for queue in jobs.chain(deliveries) {
            let (worker, wake, mut shutdown) = (self.clone(), wake.clone(), shutdown.clone());
            loops.push(tokio::spawn(async move {
                while !*shutdown.borrow() {
                    let pass = survive(queue.name(), async {
                        match queue {
                            Queue::Jobs => worker.run_once().await,
                            Queue::Deliveries => worker.deliver_once().await,
                        }
                    })
                    .await;
                    let outcome = pass.unwrap_or_else(|e| {
                        tracing::error!(error = ?e, ?queue, "worker pass failed");
                        Outcome::Idle
                    });
                    if outcome == Outcome::Idle {
                        tokio::select! {
                            () = wake.notified() => {}
                            () = tokio::time::sleep(worker.config.idle_poll) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                }
            }));
        }
        let sweeper = {
            let worker = self.clone();
            tokio::spawn(async move {
                loop {
                    let swept = survive("sweeper", async { worker.sweep_expired().await.map(|_| Outcome::Ran) });
                    if let Err(e) = swept.await {
                        tracing::warn!(error = %e, "expiry sweep failed");
                    }
                    tokio::time::sleep(worker.config.idle_poll).await;
                }
            })
        };
        let _ = shutdown.wait_for(|stop| *stop).await;
        tracing::info!("worker stopping: no new claims; finishing jobs in hand");
        for handle in loops {
            let _ = handle.await;
        }
        sweeper.abort();
        listener.abort();
    }

    /// Claims and runs one due job (a grant with the other due grants of its image).
    /// Tests call this until it returns [`Outcome::Idle`].
    pub async fn run_once(&self) -> anyhow::Result<Outcome> {
        let held = jobs::claim(&self.pool, self.config.lease, grant::BATCH).await?;
        let Some(job) = held.first().cloned() else {
            return Ok(Outcome::Idle);
        };
        let heartbeat = self.spawn_heartbeat(job.clone());
        let result = self.run_claimed(&held).await;
        drop(heartbeat);
        if let Err(e) = result {
            tracing::warn!(job.id = %job.id, error = ?e, "job abandoned; its lease will lapse and it will be retried");
        }
        Ok(Outcome::Ran)
    }

    /// Runs the claimed jobs: a lead and, for grants, those adopted with it.
    async fn run_claimed(&self, held: &[Claimed]) -> anyhow::Result<()> {
        let job = &held[0];
        let span = tracing::info_span!("job", job.id = %job.id, job.kind = job.kind.as_str(), job.subject = %job.subject, attempt = job.attempts, batch = held.len());
        match job.subject {
            _ if job.kind == Kind::Grant => self.grant(held).instrument(span).await,
            Subject::Share(share_id) => self.run_share_job(job, share_id).instrument(span).await,
            Subject::Request(request_id) => self.validate(job, request_id).instrument(span).await,
        }
    }

    /// Renews the lease of `job` and of the jobs adopted under its token, until dropped.
    fn spawn_heartbeat(&self, job: Claimed) -> Heartbeat {
        let (pool, lease) = (self.pool.clone(), self.config.lease);
        Heartbeat(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match jobs::heartbeat(&pool, job.lease_token, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(job.id = %job.id, "lease lost");
                        return;
                    }
                    Err(e) => tracing::warn!(job.id = %job.id, error = %e, "heartbeat failed"),
                }
            }
        }))
    }

    /// A job on one share: its calls to OpenStack, then one transaction for the outcome.
    /// An error is ours (database, lost lease): the job is left for its lease to lapse.
    async fn run_share_job(&self, job: &Claimed, share_id: Uuid) -> anyhow::Result<()> {
        // Sent to Keystone and Glance as X-OpenStack-Request-ID, and the audit events'
        // correlation id: one id finds the job's calls in every log.
        let rid = format!("req-{}", Uuid::new_v4());
        let result = self.execute(job, share_id, &rid).await?;
        self.settle(vec![(job, share_id, result)], &rid).await
    }

    /// The network part. The outer error is ours; the inner one is OpenStack's answer.
    async fn execute(&self, job: &Claimed, share_id: Uuid, rid: &str) -> anyhow::Result<Result<Effect, Failure>> {
        let share = db::shares::find(&self.pool, share_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("share {share_id} is gone"))?;
        Ok(match job.kind {
            Kind::Poll => self.poll(&share, rid).await.map_err(Failure::from),
            Kind::Accept => self.accept(job, &share, rid).await?,
            // Carried out as a revoke, which settle starts: nothing to ask Glance first.
            Kind::Reject => Ok(Effect::RejectAsked),
            Kind::Revoke => self.revoke(job, &share, rid).await?,
            Kind::Grant | Kind::Validate => anyhow::bail!("{} jobs do not run one share at a time", job.kind.as_str()),
        })
    }

    /// Stops a job whose lease was lost or lapsed before it writes to Glance: another worker
    /// may own the job now, and the share may have moved on (a revoked member must not be
    /// added again). The error abandons the job, as any lost lease does.
    async fn fence(&self, held: &[Claimed]) -> anyhow::Result<()> {
        if jobs::still_held(&self.pool, held).await? {
            return Ok(());
        }
        metrics::counter!("gsb_fenced_writes_total").increment(1);
        anyhow::bail!("lease lost on job {}: no more writes to Glance", held[0].id)
    }

    /// The target's Keystone project id: checked again at grant time, for the project may
    /// have been deleted since validation.
    async fn resolve_target(&self, share: &Share, rid: &str) -> Result<String, CallError> {
        match validate::resolve(&self.cloud, share, rid).await? {
            Ok(project) => Ok(project.id),
            Err(reason) => Err(CallError::permanent(None, reason)),
        }
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
        Ok(Ok(Effect::Revoked))
    }

    /// Records a visibility change the broker made, and (to private) that it owes none.
    async fn record_visibility(
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
            ..self.event(&share, "update/visibility", "success", rid)
        };
        db::audit::record(&mut tx, &self.config.instance, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A transaction that goes on only while this worker still holds every job in `held`
    /// (the job rows stay locked until it ends, so the lease cannot be taken over meanwhile).
    async fn lease_tx(&self, held: &[Claimed]) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        anyhow::ensure!(jobs::holds(&mut tx, held).await?, "lease lost on job {}", held[0].id);
        Ok(tx)
    }

    /// An audit event by the worker about `share`, correlated with the job's OpenStack calls.
    fn event<'a>(&'a self, share: &'a Share, action: &'a str, outcome: &'a str, rid: &'a str) -> NewEvent<'a> {
        NewEvent {
            correlation_id: Some(rid),
            ..NewEvent::about_share(&self.actor, share, action, outcome)
        }
    }

    /// Records the outcomes of share jobs (held under one lease) in one transaction with
    /// their audit events (after the changes they record); commits only if every job is
    /// still ours. `rid` correlates the events with the jobs' OpenStack calls. Each outcome
    /// is checked against its share as it is now (locked): one the share's state machine
    /// refuses lost a race and is discarded.
    async fn settle(
        &self,
        mut outcomes: Vec<(&Claimed, Uuid, Result<Effect, Failure>)>,
        rid: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = outcomes.iter().map(|(_, id, _)| *id).collect();
        let mut shares: HashMap<Uuid, Share> = db::shares::lock_all(&mut tx, &ids)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
        let requests = requests_of(&mut *tx, &shares).await?;
        // A member added for a share that moved on meanwhile lost its race. (Nothing but its
        // grant moves a `granting` share, yet the rule is the same everywhere.)
        for (_, id, result) in &mut outcomes {
            if let Ok(Effect::Granted { accepted, .. }) = result {
                let share = shares.get(id).ok_or_else(|| anyhow::anyhow!("share {id} is gone"))?;
                if let Err(refusal) = share.state.on(Trigger::Granted { accepted: *accepted }) {
                    discarded(*id, &refusal);
                    *result = Ok(Effect::Nothing);
                }
            }
        }
        // The members created in Glance (a grant batch's usual outcome) in one statement.
        let granted: Vec<db::shares::Granted> = outcomes
            .iter()
            .filter_map(|(_, id, result)| match result {
                Ok(Effect::Granted {
                    project_id,
                    accepted,
                    image,
                }) => Some(db::shares::Granted {
                    id: *id,
                    project_id,
                    state: shares[id].state.on(Trigger::Granted { accepted: *accepted }).ok()?,
                    image_name: image.name.as_deref(),
                    image_owner: image.owner.as_deref(),
                }),
                _ => None,
            })
            .collect();
        let updated = db::shares::set_granted_all(&mut tx, &granted).await?;
        anyhow::ensure!(updated.len() == granted.len(), "a locked share moved during its grant");
        for share in updated {
            shares.insert(share.id, share);
        }

        let mut settled = Settled::default();
        let mut ends = Vec::with_capacity(outcomes.len());
        for (job, share_id, result) in outcomes {
            let share = shares
                .remove(&share_id)
                .ok_or_else(|| anyhow::anyhow!("share {share_id} is gone"))?;
            let request = requests
                .get(&share.request_id)
                .ok_or_else(|| anyhow::anyhow!("request {} is gone", share.request_id))?;
            let end = self
                .record_outcome(&mut tx, job, share, request, result, &mut settled)
                .await?;
            ends.push((job, end));
        }
        let first_job = ends.first().map(|(job, _)| job.id);
        if !jobs::finish_all(&mut tx, ends).await? {
            tx.rollback().await?;
            tracing::warn!(job.id = ?first_job, "lease lost before completion: outcome discarded, another worker owns the job");
            return Ok(());
        }
        if !settled.polls.is_empty() {
            let first = Utc::now() + self.config.accept_poll_first;
            jobs::enqueue_all(&mut tx, Kind::Poll, &settled.polls, first).await?;
        }
        let events = settled
            .events
            .iter()
            .map(|e| NewEvent {
                reason: e.reason.as_deref(),
                details: e.details.clone(),
                ..self.event(&e.share, e.action, e.outcome, rid)
            })
            .collect();
        db::audit::record_all(&mut tx, &self.config.instance, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves `share` (as it is now, locked) on `trigger` if its state machine allows, guarded
    /// by its state, with the error that put it there (if any); `None` when the outcome lost
    /// its race to a newer change (it is discarded, never written over that change).
    async fn apply(
        &self,
        tx: &mut sqlx::PgConnection,
        share: &Share,
        trigger: Trigger,
        last_error: Option<&str>,
    ) -> anyhow::Result<Option<Share>> {
        let to = match share.state.on(trigger) {
            Ok(to) => to,
            Err(refusal) => {
                discarded(share.id, &refusal);
                return Ok(None);
            }
        };
        Ok(db::shares::transition(tx, share.id, share.state, to, last_error).await?)
    }

    /// Starts revoking `share` (as it is now, locked) on `trigger`, and queues the revoke;
    /// `None` when the share's state machine refuses (the outcome lost its race).
    async fn start_revoke(
        &self,
        tx: &mut sqlx::PgConnection,
        share: &Share,
        trigger: Trigger,
        start: RevokeStart<'_>,
    ) -> anyhow::Result<Option<Share>> {
        match share.state.on(trigger) {
            Ok(ShareState::Revoking) => {}
            Ok(other) => anyhow::bail!("{trigger:?} moves a share to {other}, not to revoking"),
            Err(refusal) => {
                discarded(share.id, &refusal);
                return Ok(None);
            }
        }
        let revoking = db::shares::start_revoke(tx, share.id, share.state, start).await?;
        if let Some(revoking) = &revoking {
            jobs::enqueue(tx, Kind::Revoke, revoking.id, revoking.image_id, Utc::now()).await?;
        }
        Ok(revoking)
    }

    /// Records one job's outcome inside `tx` (a granted member is already recorded, and
    /// `share` shows it), adding its audit events and acceptance checks to `settled`;
    /// returns how the job ends.
    async fn record_outcome(
        &self,
        tx: &mut sqlx::PgConnection,
        job: &Claimed,
        share: Share,
        request: &ShareRequest,
        result: Result<Effect, Failure>,
        settled: &mut Settled,
    ) -> anyhow::Result<Finish> {
        let now = Utc::now();
        let events = &mut settled.events;
        Ok(match result {
            Ok(Effect::Nothing) => Finish::Done,
            Ok(Effect::Expired) => {
                if let Some(share) = self.apply(tx, &share, Trigger::ExpireBeforeGrant, None).await? {
                    events.push(ShareEvent::new(share, "update/expire", "success"));
                }
                Finish::Done
            }
            Ok(Effect::Granted { accepted, .. }) => {
                if !accepted {
                    settled.polls.push((share.id, share.image_id));
                }
                // Who asked and who approved: what an access report answers with.
                events.push(ShareEvent {
                    details: json!({ "requested_by": request.requested_by, "approved_by": request.decided_by }),
                    ..ShareEvent::new(share.clone(), "allow", "success")
                });
                if accepted {
                    events.push(ShareEvent {
                        details: json!({ "auto_accept": true }),
                        ..ShareEvent::new(share, "accept", "success")
                    });
                }
                Finish::Done
            }
            // The poll started on a share awaiting the consumer; one that moved on needs none.
            Ok(Effect::StillPending | Effect::Seen(_)) if share.state != ShareState::PendingAcceptance => {
                tracing::info!(share.id = %share.id, state = %share.state, "the share moved on during the poll: its finding is discarded");
                Finish::Done
            }
            Ok(Effect::StillPending) => {
                let next = retry::poll_delay(
                    job.attempts - 1,
                    self.config.accept_poll_first,
                    self.config.accept_poll_max,
                );
                Finish::Later(now + next, None)
            }
            Ok(Effect::Seen(Seen::Rejected)) => {
                let start = RevokeStart {
                    by: &self.actor.name,
                    reason: REJECTED_BY_CONSUMER,
                    cause: RevokeCause::RejectedInGlance,
                    last_error: None,
                };
                if let Some(share) = self.start_revoke(tx, &share, Trigger::Reject, start).await? {
                    events.push(ShareEvent {
                        details: json!({ "observed_in_glance": true }),
                        ..ShareEvent::new(share.clone(), "reject", "success")
                    });
                    events.push(ShareEvent {
                        reason: share.revoke_reason.clone(),
                        ..ShareEvent::new(share, "revoke", "pending")
                    });
                }
                Finish::Done
            }
            Ok(Effect::Seen(seen)) => {
                let (trigger, action) = match seen {
                    Seen::Accepted => (Trigger::Accept, "accept"),
                    Seen::MemberGone => (Trigger::MemberGoneOutside, "revoke"),
                    Seen::ImageGone => (Trigger::ImageGone, "revoke"),
                    Seen::Rejected => unreachable!("handled above"),
                };
                if let Some(share) = self.apply(tx, &share, trigger, None).await? {
                    events.push(ShareEvent {
                        details: json!({ "observed_in_glance": true }),
                        ..ShareEvent::new(share, action, "success")
                    });
                }
                Finish::Done
            }
            Ok(Effect::Accepted) => {
                if let Some(share) = self.apply(tx, &share, Trigger::Accept, None).await? {
                    events.push(ShareEvent::new(share, "accept", "success"));
                }
                Finish::Done
            }
            Ok(Effect::RejectAsked) => {
                let start = RevokeStart {
                    by: &self.actor.name,
                    reason: REJECTED_BY_CONSUMER,
                    cause: RevokeCause::Rejected,
                    last_error: None,
                };
                if let Some(share) = self.start_revoke(tx, &share, Trigger::Reject, start).await? {
                    events.push(ShareEvent {
                        reason: share.revoke_reason.clone(),
                        ..ShareEvent::new(share, "revoke", "pending")
                    });
                }
                Finish::Done
            }
            Ok(Effect::Removed(_)) if share.state != ShareState::Revoking => Finish::Done,
            Ok(Effect::Removed(confirm_at)) => Finish::Later(confirm_at, None),
            Ok(Effect::Revoked) => {
                self.record_revoked(tx, share, events).await?;
                Finish::Done
            }
            Err(failure) => self.record_error(tx, job, share, failure, events).await?,
        })
    }

    /// Records that the member of a `revoking` share is gone: the share ends `revoked`, or
    /// `failed` when the revoke cleaned up after a failed grant; a rejection through the
    /// broker is recorded as done as well.
    async fn record_revoked(
        &self,
        tx: &mut sqlx::PgConnection,
        share: Share,
        events: &mut Vec<ShareEvent>,
    ) -> anyhow::Result<()> {
        let cause = db::shares::revocation(&mut *tx, share.id).await?.cause;
        let after_failed_grant = cause == Some(RevokeCause::FailedGrant);
        // A failed share shows why its grant failed.
        let last_error = share.revoke_reason.clone().filter(|_| after_failed_grant);
        let trigger = Trigger::MemberRemoved { after_failed_grant };
        let Some(share) = self.apply(tx, &share, trigger, last_error.as_deref()).await? else {
            return Ok(());
        };
        if after_failed_grant {
            events.push(ShareEvent {
                reason: share.revoke_reason.clone(),
                details: json!({ "member_removed": true }),
                ..ShareEvent::new(share, "allow", "failure")
            });
            return Ok(());
        }
        if cause == Some(RevokeCause::Rejected) {
            events.push(ShareEvent::new(share.clone(), "reject", "success"));
        }
        events.push(ShareEvent {
            reason: share.revoke_reason.clone(),
            details: json!({ "revoked_by": share.revoked_by }),
            ..ShareEvent::new(share, "revoke", "success")
        });
        Ok(())
    }

    async fn record_error(
        &self,
        tx: &mut sqlx::PgConnection,
        job: &Claimed,
        share: Share,
        failure: Failure,
        events: &mut Vec<ShareEvent>,
    ) -> anyhow::Result<Finish> {
        let Failure {
            error,
            member_may_exist,
        } = failure;
        let message = error.to_string();
        let retry_after = match &error {
            CallError::Transient { retry_after, .. } => *retry_after,
            CallError::Permanent { .. } => None,
        };
        // The job's work is still wanted only while the share is where the job found it.
        let wanted = match job.kind {
            Kind::Grant => share.state.on(Trigger::StartGrant).is_ok(),
            Kind::Poll => share.state == ShareState::PendingAcceptance,
            Kind::Accept => share.state.on(Trigger::Accept).is_ok(),
            Kind::Revoke => share.state == ShareState::Revoking,
            Kind::Reject | Kind::Validate => false,
        };
        if !wanted {
            tracing::info!(error = %message, state = %share.state, "OpenStack call failed, but the share moved on: the job ends");
            return Ok(Finish::Done);
        }
        // Polls and revokes never give up; grants and accepts do, after a permanent error or
        // their last try.
        let gives_up = matches!(job.kind, Kind::Grant | Kind::Accept)
            && (!error.is_transient() || job.attempts >= self.config.max_attempts);
        tracing::warn!(error = %message, gives_up, "OpenStack call failed");
        let backoff = retry::next_delay(
            job.attempts - 1,
            self.config.retry_base,
            self.config.retry_max,
            retry_after,
            rand::random(),
        );
        let finish = match job.kind {
            Kind::Poll => {
                // Tracking never gives up: the next check may well succeed.
                let next = retry::poll_delay(
                    job.attempts - 1,
                    self.config.accept_poll_first,
                    self.config.accept_poll_max,
                );
                db::shares::note_error(&mut *tx, share.id, share.state, &message).await?;
                Finish::Later(Utc::now() + next.max(retry_after.unwrap_or_default()), Some(message))
            }
            Kind::Revoke => return self.revoke_failed(tx, job, share, error, backoff, events).await,
            _ if !gives_up => {
                db::shares::note_error(&mut *tx, share.id, share.state, &message).await?;
                Finish::Later(Utc::now() + backoff, Some(message))
            }
            Kind::Grant => {
                // An earlier try may have got as far as the add, too.
                let member_may_exist = member_may_exist || job.attempts > 1;
                let trigger = Trigger::GrantFailed { member_may_exist };
                if member_may_exist {
                    let reason = format!("the grant failed: {message}");
                    let start = RevokeStart {
                        by: &self.actor.name,
                        reason: &reason,
                        cause: RevokeCause::FailedGrant,
                        last_error: Some(&message),
                    };
                    if let Some(share) = self.start_revoke(tx, &share, trigger, start).await? {
                        events.push(ShareEvent {
                            reason: share.revoke_reason.clone(),
                            ..ShareEvent::new(share, "revoke", "pending")
                        });
                    }
                } else if let Some(share) = self.apply(tx, &share, trigger, Some(&message)).await? {
                    events.push(ShareEvent {
                        reason: Some(message.clone()),
                        ..ShareEvent::new(share, "allow", "failure")
                    });
                }
                Finish::Failed(message)
            }
            _ => {
                if let Some(share) = db::shares::note_error(&mut *tx, share.id, share.state, &message).await? {
                    events.push(ShareEvent {
                        reason: Some(message.clone()),
                        ..ShareEvent::new(share, "accept", "failure")
                    });
                }
                Finish::Failed(message)
            }
        };
        Ok(finish)
    }

    /// A revoke that failed is tried again, however it failed: with backoff after a transient
    /// error, and at the longest interval (`retry_max`) after a permanent one (a role taken
    /// from the broker, say, which an operator may give back); "already gone" is success and
    /// never comes here. It stays `revoking` with the error in `last_error`, and is reported
    /// stalled once (a `revoke` failure with `details.stalled`, announced as
    /// `share.revoke_stalled`) after `max_attempts` tries or `revoke_stalled_after`.
    async fn revoke_failed(
        &self,
        tx: &mut sqlx::PgConnection,
        job: &Claimed,
        share: Share,
        error: CallError,
        backoff: Duration,
        events: &mut Vec<ShareEvent>,
    ) -> anyhow::Result<Finish> {
        let message = error.to_string();
        let delay = if error.is_transient() {
            backoff
        } else {
            self.config.retry_max
        };
        let Some(share) = db::shares::note_error(&mut *tx, share.id, ShareState::Revoking, &message).await? else {
            return Ok(Finish::Done);
        };
        let revocation = db::shares::revocation(&mut *tx, share.id).await?;
        let limit = chrono::Duration::from_std(self.config.revoke_stalled_after).unwrap_or(chrono::Duration::MAX);
        let too_long = revocation.started_at.is_some_and(|at| Utc::now() - at >= limit);
        if revocation.stalled_at.is_none()
            && (job.attempts >= self.config.max_attempts || too_long)
            && let Some(stalled) = db::shares::mark_revoke_stalled(tx, share.id).await?
        {
            metrics::counter!("gsb_revoke_stalls_total").increment(1);
            tracing::error!(share.id = %share.id, attempts = job.attempts, error = %message, "a revoke is stalled: the member may still be in Glance; retrying");
            events.push(ShareEvent {
                reason: Some(message.clone()),
                details: json!({ "stalled": true, "attempts": job.attempts, "revoking_since": revocation.started_at }),
                ..ShareEvent::new(stalled, "revoke", "failure")
            });
        }
        Ok(Finish::Later(Utc::now() + delay, Some(message)))
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

    /// Validates a new request: reads Keystone and Glance, then records the verdict and its
    /// audit event in one transaction, if the lease is still ours. Validation never gives up
    /// on a call that fails: the request stays `pending` with the error visible, and is retried.
    async fn validate(&self, job: &Claimed, request_id: Uuid) -> anyhow::Result<()> {
        let request = db::share_requests::find(&self.pool, request_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("request {request_id} is gone"))?;
        let undecided =
            |r: &ShareRequest| r.status == RequestStatus::PendingApproval && r.validation == Validation::Pending;
        let verdict = if undecided(&request) {
            let shares = db::shares::of_requests(&self.pool, &[request_id]).await?;
            let rid = format!("req-{}", Uuid::new_v4());
            Some(
                validate::check(
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
                        ..NewEvent::about_request(&self.actor, &request, "update/validate")
                    };
                    db::audit::record(&mut tx, &self.config.instance, event).await?;
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
            outcome: "failure",
            details: json!({ "image": image.map(image_details), "errors": errors }),
            ..NewEvent::about_request(&self.actor, &request, "update/validate")
        };
        db::audit::record(tx, &self.config.instance, event).await?;
        Ok(())
    }

    /// Starts revoking shares whose request expired, and shares seen `rejected` before
    /// rejections removed the member; expires undecided requests; and sets the
    /// `gsb_revokes_stalled` gauge. A share being revoked already is left to that revoke.
    pub async fn sweep_expired(&self) -> anyhow::Result<usize> {
        let expiry = Initiator::service("expiry");
        let mut tx = self.pool.begin().await?;
        let instance = self.config.instance.as_str();
        let expired = db::shares::expired_in_force(&mut tx, 100).await?;
        let rejected = db::shares::rejected_with_member(&mut tx, 100).await?;
        let by_expiry = RevokeStart {
            by: "expiry",
            reason: "the share expired",
            cause: RevokeCause::Expiry,
            last_error: None,
        };
        let by_rejection = RevokeStart {
            by: &self.actor.name,
            reason: REJECTED_BY_CONSUMER,
            cause: RevokeCause::RejectedInGlance,
            last_error: None,
        };
        let starts = (expired.iter().map(|s| (s, &expiry, Trigger::Revoke, by_expiry))).chain(
            rejected
                .iter()
                .map(|s| (s, &*self.actor, Trigger::Reject, by_rejection)),
        );
        let mut started = 0;
        for (share, initiator, trigger, start) in starts {
            // The queries pick states a revoke may start from; a share picked twice (expired
            // and rejected) is started once, by the guard.
            if share.state.on(trigger) != Ok(ShareState::Revoking) {
                continue;
            }
            let Some(share) = db::shares::start_revoke(&mut tx, share.id, share.state, start).await? else {
                continue;
            };
            let event = NewEvent {
                reason: share.revoke_reason.as_deref(),
                ..NewEvent::about_share(initiator, &share, "revoke", "pending")
            };
            db::audit::record(&mut tx, instance, event).await?;
            jobs::enqueue(&mut tx, Kind::Revoke, share.id, share.image_id, Utc::now()).await?;
            started += 1;
        }
        let wait = self.config.policy.current().expire_undecided_after;
        let requests = db::share_requests::undecided_past_expiry(&mut tx, 100, wait).await?;
        for id in &requests {
            let (request, _) = db::share_requests::decide(&mut tx, *id, RequestStatus::Expired, "expiry", None).await?;
            db::audit::record(
                &mut tx,
                instance,
                NewEvent::about_request(&expiry, &request, "update/expire"),
            )
            .await?;
        }
        tx.commit().await?;
        let stalled = db::shares::stalled_revokes(&self.pool).await?;
        metrics::gauge!("gsb_revokes_stalled").set(stalled as f64);
        Ok(started + requests.len())
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

/// Wakes idle loops when a job is queued anywhere; falls back to polling if it cannot listen.
async fn listen(pool: PgPool, wake: Arc<Notify>) {
    loop {
        match PgListener::connect_with(&pool).await {
            Ok(mut listener) => {
                if listener.listen(jobs::CHANNEL).await.is_ok() {
                    while listener.recv().await.is_ok() {
                        wake.notify_waiters();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot LISTEN for jobs; polling only"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pass_that_panics_is_a_failed_pass_and_the_loop_goes_on() {
        let mut outcomes = Vec::new();
        for round in 0..3 {
            let pass = survive("jobs", async move {
                if round == 1 {
                    panic!("a bad row");
                }
                Ok(Outcome::Ran)
            });
            outcomes.push(pass.await.map_err(|e| e.to_string()));
        }
        assert_eq!(outcomes[0], Ok(Outcome::Ran));
        assert_eq!(outcomes[1], Err("the jobs pass panicked: a bad row".to_owned()));
        assert_eq!(outcomes[2], Ok(Outcome::Ran), "the pass after the panic runs");
    }

    #[tokio::test]
    async fn a_pass_that_panics_stops_its_heartbeat() {
        let alive = Arc::new(());
        let held = alive.clone();
        let pass = survive("jobs", async move {
            let _heartbeat = Heartbeat(tokio::spawn(async move {
                let _held = held;
                std::future::pending::<()>().await
            }));
            panic!("mid-job");
        });
        assert!(pass.await.is_err());
        for _ in 0..100 {
            if Arc::strong_count(&alive) == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the heartbeat outlived its pass: the job's lease would never lapse");
    }

    #[tokio::test]
    async fn a_panic_in_a_pass_is_counted() {
        let handle = crate::telemetry::metrics_handle();
        let pass = survive("sweeper", async { panic!("{}", String::from("formatted")) });
        let error = pass.await.unwrap_err().to_string();
        assert_eq!(error, "the sweeper pass panicked: formatted");
        let rendered = handle.render();
        assert!(
            rendered
                .lines()
                .any(|l| l.starts_with("gsb_worker_panics_total{loop=\"sweeper\"}")),
            "{rendered}"
        );
    }
}
