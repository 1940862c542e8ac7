//! The run loop: claims jobs (and webhook deliveries) and runs each with a heartbeat, wakes
//! on NOTIFY or polls, and survives a pass that panics (a panicking job is left for its
//! lease to lapse, like any abandoned job). Its loops are owned by a [`Tasks`], which stops
//! and drains them. What a job does is in the modules
//! named after it; this one only dispatches.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Worker, grant};
use crate::db::jobs::{self, Claim, Claimed, Job};
use crate::tasks::{Tasks, survive};
use crate::telemetry;

/// What one pass found to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    Idle,
    /// A job ran (whatever its result).
    Ran,
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

impl Worker {
    /// Runs until `stop` is cancelled: then stops claiming, lets the jobs in hand finish, and
    /// returns once every loop has ended.
    pub async fn run(self, stop: CancellationToken) {
        let tasks = Tasks::new();
        self.start(&tasks);
        stop.cancelled().await;
        tracing::info!("worker stopping: no new claims; finishing jobs in hand");
        tasks.shutdown().await;
    }

    /// Starts the worker's loops on `tasks`: the LISTEN for new jobs, one loop per job and
    /// delivery slot, and the expiry sweeper. When `tasks` shuts down, each loop finishes the
    /// job in hand and claims no more.
    pub fn start(&self, tasks: &Tasks) {
        let wake = Arc::new(Notify::new());
        tasks.spawn(listen(self.pool.clone(), wake.clone(), tasks.stopping()));
        let jobs = std::iter::repeat_n(Queue::Jobs, self.config.concurrency.max(1));
        let deliveries = std::iter::repeat_n(Queue::Deliveries, self.config.webhooks.concurrency.max(1));
        for queue in jobs.chain(deliveries) {
            let (worker, wake, stop) = (self.clone(), wake.clone(), tasks.stopping());
            tasks.spawn(async move {
                while !stop.is_cancelled() {
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
                            () = stop.cancelled() => {}
                        }
                    }
                }
            });
        }
        let worker = self.clone();
        tasks.every("sweeper", self.config.idle_poll, move || {
            let worker = worker.clone();
            async move { worker.sweep_expired().await.map(drop) }
        });
        if let Some(every) = self.config.drift.every {
            let worker = self.clone();
            tasks.every("reconcile", every, move || {
                let worker = worker.clone();
                async move { worker.queue_reconciles(None).await.map(drop) }
            });
        }
    }

    /// Claims and runs one due reconciliation, and no other job (`glance-share-broker
    /// reconcile`).
    pub async fn reconcile_once(&self) -> anyhow::Result<Outcome> {
        let claim = jobs::claim_of(&self.pool, self.config.lease, 1, Some(jobs::RECONCILE)).await?;
        Ok(self.run_with_heartbeat(claim).await)
    }

    /// Claims and runs one due job (a grant with the other due grants of its image).
    /// Tests call this until it returns [`Outcome::Idle`].
    pub async fn run_once(&self) -> anyhow::Result<Outcome> {
        let claim = jobs::claim(&self.pool, self.config.lease, grant::BATCH).await?;
        Ok(self.run_with_heartbeat(claim).await)
    }

    /// Runs `claim` (if any) while a heartbeat renews its lease.
    async fn run_with_heartbeat(&self, claim: Option<Claim>) -> Outcome {
        let Some(claim) = claim else {
            return Outcome::Idle;
        };
        let job = claim.lead().clone();
        let heartbeat = self.spawn_heartbeat(job.clone());
        let result = self.run_claimed(&claim).await;
        drop(heartbeat);
        if let Err(e) = result {
            tracing::warn!(job.id = %job.id, error = ?e, "job abandoned; its lease will lapse and it will be retried");
        }
        Outcome::Ran
    }

    /// Runs the claimed jobs: a lead and, for grants, those adopted with it.
    async fn run_claimed(&self, claim: &Claim) -> anyhow::Result<()> {
        let job = claim.lead();
        let span = job_span(claim);
        match &claim.job {
            Job::Grant { shares } => self.grant(&claim.held, shares).instrument(span).await,
            Job::Share { share, step } => self.run_share_job(job, *share, *step).instrument(span).await,
            Job::Validate { request } => self.validate(job, *request).instrument(span).await,
            Job::Reconcile { image } => self.reconcile(job, *image).instrument(span).await,
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
}

/// The span a claim runs in: its log lines' context, and, when traces are exported, a child
/// of the span that queued the lead job (the API call's, or the job's that queued it), so
/// that one trace shows a call, the jobs it queued and their calls to OpenStack. A child
/// rather than a link: the job is that call's work carried on later, and a trace viewer
/// shows a child in the call's trace, a link only as a pointer to another trace. Grants
/// adopted into the batch from other traces are linked.
fn job_span(claim: &Claim) -> tracing::Span {
    let job = claim.lead();
    let span = tracing::info_span!(
        "job",
        job.id = %job.id,
        job.kind = claim.job.name(),
        job.subject = %claim.job.subject(),
        attempt = job.attempts,
        batch = claim.held.len(),
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
    );
    if telemetry::trace::enabled() {
        span.record("otel.name", format!("{} job", claim.job.name()));
        span.record("otel.kind", "consumer");
        let others = claim.held[1..].iter().filter_map(|j| j.origin_trace.as_ref());
        telemetry::trace::continue_trace(&span, job.origin_trace.as_ref(), others);
    }
    span
}

/// Wakes idle loops when a job is queued anywhere, until `stop`; falls back to polling if it
/// cannot listen.
async fn listen(pool: PgPool, wake: Arc<Notify>, stop: CancellationToken) {
    let listening = async {
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
    };
    tokio::select! {
        () = listening => {}
        () = stop.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pass_that_panics_stops_its_heartbeat() {
        let alive = Arc::new(());
        let held = alive.clone();
        let pass = survive::<Outcome, _>("jobs", async move {
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
}
