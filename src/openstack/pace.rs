//! The outbound rate limits: budgets for Glance calls, kept in Postgres (`db::rate_slots`)
//! so that every replica shares them; the worker's client and the API's each get one. The workers' budget (GSB_GLANCE_RATE_LIMIT): each call reserves the next time slot
//! and sleeps until it comes, however long the queue. The API's budget
//! (GSB_API_GLANCE_RATE_LIMIT, under a key of its own so that filings never take the slots
//! grants and revokes need): a call waits at most [`API_MAX_WAIT`] for a slot and a bounded
//! number run at once per replica; beyond that it is refused, and the caller told when to
//! come back, instead of queueing for minutes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Semaphore;

use super::{OpenStack, PaceRefused, Pacer, Pass};
use crate::db;

/// Longest an API call waits for a Glance slot before it is refused.
pub const API_MAX_WAIT: Duration = Duration::from_secs(1);

/// At most `rate` Glance calls per second to one cloud and region, across all replicas.
pub struct SharedRate {
    pool: PgPool,
    key: String,
    interval: Duration,
}

impl SharedRate {
    /// A limit of `rate` calls per second (more than 0) under `key`.
    pub fn new(pool: PgPool, key: String, rate: u32) -> Self {
        SharedRate {
            pool,
            key,
            interval: interval(rate),
        }
    }
}

fn interval(rate: u32) -> Duration {
    Duration::from_secs(1) / rate.max(1)
}

fn unavailable(e: sqlx::Error) -> PaceRefused {
    PaceRefused {
        reason: format!("outbound rate limit unavailable: {e}"),
        retry_after: None,
    }
}

impl Pacer for SharedRate {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<Pass, PaceRefused>> + Send + '_>> {
        Box::pin(async move {
            let slot = db::rate_slots::reserve(&self.pool, &self.key, self.interval)
                .await
                .map_err(unavailable)?;
            if slot.wait_secs > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(slot.wait_secs)).await;
            }
            Ok(Pass::free())
        })
    }
}

/// `cloud` with every Glance call waiting for a slot under the limit that all replicas share
/// (`rate` calls per second to its cloud and region; 0: no limit): the workers' budget.
pub fn paced(cloud: OpenStack, pool: PgPool, rate: u32) -> OpenStack {
    match rate {
        0 => cloud,
        rate => {
            let key = cloud.cloud_key();
            cloud.with_pacer(Arc::new(SharedRate::new(pool, key, rate)))
        }
    }
}

/// The rate-slot key of the API's Glance budget for a cloud (the workers' key is
/// [`OpenStack::cloud_key`]).
pub fn api_key(cloud: &OpenStack) -> String {
    format!("{} api", cloud.cloud_key())
}

/// The API's own Glance budget: `rate` calls per second across API replicas (0: no rate),
/// `concurrency` at once in this replica; refusals instead of long waits.
pub struct ApiBudget {
    pool: PgPool,
    key: String,
    interval: Option<Duration>,
    in_flight: Arc<Semaphore>,
}

impl ApiBudget {
    /// Gives `cloud`'s Glance calls this budget.
    pub fn apply(cloud: OpenStack, pool: PgPool, rate: u32, concurrency: u32) -> OpenStack {
        let budget = ApiBudget {
            pool,
            key: api_key(&cloud),
            interval: (rate > 0).then(|| interval(rate)),
            in_flight: Arc::new(Semaphore::new(concurrency.max(1) as usize)),
        };
        cloud.with_pacer(Arc::new(budget))
    }
}

impl Pacer for ApiBudget {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<Pass, PaceRefused>> + Send + '_>> {
        Box::pin(async move {
            let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| PaceRefused {
                reason: "the API's Glance budget is spent (too many look-ups at once)".into(),
                retry_after: Some(Duration::from_secs(1)),
            })?;
            let Some(interval) = self.interval else {
                return Ok(Pass::holding(permit));
            };
            match db::rate_slots::try_reserve(&self.pool, &self.key, interval, API_MAX_WAIT)
                .await
                .map_err(unavailable)?
            {
                Ok(slot) => {
                    if slot.wait_secs > 0.0 {
                        tokio::time::sleep(Duration::from_secs_f64(slot.wait_secs)).await;
                    }
                    Ok(Pass::holding(permit))
                }
                Err(free_in) => Err(PaceRefused {
                    reason: "the API's Glance budget is spent (GSB_API_GLANCE_RATE_LIMIT)".into(),
                    retry_after: Some(free_in),
                }),
            }
        })
    }
}
