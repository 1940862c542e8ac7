//! The outbound limit on Glance calls (GSB_GLANCE_RATE_LIMIT), shared by every replica: each
//! call reserves a time slot in Postgres (`db::rate_slots`) and sleeps until it comes.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::PgPool;

use crate::db;
use crate::openstack::Pacer;

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
            interval: Duration::from_secs(1) / rate.max(1),
        }
    }
}

impl Pacer for SharedRate {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let slot = db::rate_slots::reserve(&self.pool, &self.key, self.interval)
                .await
                .map_err(|e| e.to_string())?;
            if slot.wait_secs > 0.0 {
                tokio::time::sleep(Duration::from_secs_f64(slot.wait_secs)).await;
            }
            Ok(())
        })
    }
}
