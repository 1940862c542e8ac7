//! The background worker: carries approved shares out against Glance, tracks acceptance,
//! revokes and expires. Imports `domain`, `db` and `openstack`; never `http`.
//!
//! Each job runs in three steps, and no transaction is open across a network call:
//! 1. claim (`run.rs`): one committed statement gives this worker a lease on the job, parsed
//!    into a [`Job`](crate::db::jobs::Job); a heartbeat renews the lease while the job runs;
//! 2. call (`share.rs`, `grant.rs`, `validate.rs`): the Glance and Keystone calls. Before each
//!    write to Glance the job checks that its lease still holds (the fence), so a worker that
//!    stalled past its lease writes nothing more. Some writes are remembered at once, each in
//!    a short transaction of its own taken under the lease (`lease_tx`), so that a crash right
//!    after the call does not forget them: a grant moves its shares to `granting` and records
//!    that the broker made an image `shared` (`start_granting`, `make_shared`), a revoke
//!    records when it removed the member (`note_member_removed`), and both record a
//!    visibility change with its audit event (`record_visibility`); the deletion guard
//!    (`guard.rs`) remembers the value of `protected` it found before it sets it, and lifts
//!    the guard when the last share holding a member ends;
//! 3. settle (`settle.rs`): one transaction records the outcome, its audit events and the job's
//!    end, and is committed only if the lease is still ours.
//!
//! Races: the API and other jobs change shares while a job runs, so settle asks the share's
//! state machine ([`ShareState::on`](crate::domain::ShareState::on)) again against the share
//! as it is then, and writes only a move it allows, guarded by the state it moves from. An
//! outcome that lost its race (an acceptance polled while the share was being revoked) is
//! discarded, and a job that finds its share moved on just ends. Revokes never give up: they
//! are retried, with backoff up to `GSB_RETRY_MAX_SECS`, until the member is gone, and
//! reported stalled (`share.revoke_stalled`) when they take long.
//!
//! Besides jobs: `expire.rs` sweeps expired shares and undecided requests, `webhooks.rs`
//! delivers the queued webhook calls, and the reconcile sweep (`reconcile.rs`, every
//! `GSB_RECONCILE_EVERY`) queues a `reconcile` job per managed image.

mod approval;
mod expire;
mod grant;
mod guard;
mod reconcile;
mod reconcile_repair;
mod retry;
mod run;
mod settle;
mod share;
mod validate;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::db::audit::NewEvent;
use crate::db::shares::Share;
use crate::domain::Initiator;
use crate::domain::policy::SharedPolicy;
use crate::domain::{Action, Outcome as AuditOutcome};
use crate::openstack::OpenStack;
use crate::openstack::pace::paced;

pub use reconcile::DriftConfig;
pub use reconcile_repair::UNAPPROVED;
pub use retry::{backoff, next_delay, poll_delay};
pub use run::Outcome;
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
    /// How long before a share's request expires the consumer is told (`share.expiring`);
    /// zero: no notice.
    pub expiry_notice: Duration,
    /// How drift is looked for (reconciliation); enforcement is the policy's `enforce_drift`.
    pub drift: DriftConfig,
    /// Keep Glance's `protected` on while an image has a live share (GSB_PROTECT_SHARED_IMAGES;
    /// the policy may turn it off too).
    pub protect_images: bool,
}

#[derive(Clone)]
pub struct Worker {
    pool: PgPool,
    cloud: OpenStack,
    config: Arc<WorkerConfig>,
    actor: Arc<Initiator>,
    webhook_http: reqwest::Client,
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

    /// The request id of a claim's OpenStack calls and events: the id of the API call that
    /// queued it (so one id follows a call from the API through the worker into Keystone's
    /// and Glance's logs), else a new one in oslo's format.
    fn request_id_of(held: &[crate::db::jobs::Claimed]) -> String {
        held.first()
            .and_then(|job| job.origin_request_id.clone())
            .unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4()))
    }

    /// An audit event by the worker about `share`, correlated with the job's OpenStack calls.
    fn event<'a>(&'a self, share: &'a Share, action: Action, outcome: AuditOutcome, rid: &'a str) -> NewEvent<'a> {
        NewEvent {
            correlation_id: Some(rid),
            ..NewEvent::about_share(&self.actor, share, action, outcome)
        }
    }
}
