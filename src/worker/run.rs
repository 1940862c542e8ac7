//! The run loop: claims jobs (and webhook deliveries) and runs each with a heartbeat, wakes
//! on NOTIFY or polls, and survives a pass that panics. What a job does is in the modules
//! named after it; this one only dispatches.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use super::{Worker, grant};
use crate::db::jobs::{self, Claim, Claimed, Job};

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

impl Worker {
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
        let Some(claim) = jobs::claim(&self.pool, self.config.lease, grant::BATCH).await? else {
            return Ok(Outcome::Idle);
        };
        let job = claim.lead().clone();
        let heartbeat = self.spawn_heartbeat(job.clone());
        let result = self.run_claimed(&claim).await;
        drop(heartbeat);
        if let Err(e) = result {
            tracing::warn!(job.id = %job.id, error = ?e, "job abandoned; its lease will lapse and it will be retried");
        }
        Ok(Outcome::Ran)
    }

    /// Runs the claimed jobs: a lead and, for grants, those adopted with it.
    async fn run_claimed(&self, claim: &Claim) -> anyhow::Result<()> {
        let job = claim.lead();
        let span = tracing::info_span!("job", job.id = %job.id, job.kind = claim.job.name(), job.subject = %claim.job.subject(), attempt = job.attempts, batch = claim.held.len());
        match &claim.job {
            Job::Grant { shares } => self.grant(&claim.held, shares).instrument(span).await,
            Job::Share { share, step } => self.run_share_job(job, *share, *step).instrument(span).await,
            Job::Validate { request } => self.validate(job, *request).instrument(span).await,
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
