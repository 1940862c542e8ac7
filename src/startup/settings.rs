//! The broker's settings turned into each part's own configuration: the API's, the
//! worker's, the OpenStack client's, the database's. `config` knows only the settings;
//! the parts never see `config`.

use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::anyhow;

use crate::config::{AccessArgs, EdgeArgs, ServeArgs, WorkerArgs, instance_name};
use crate::db::retention::Retention;
use crate::domain::Limits;
use crate::domain::policy::SharedPolicy;
use crate::http::{ApiConfig, CacheTimes, RateLimitConfig};
use crate::openstack::{CloudConfig, OpenStack};
use crate::worker::{WebhookConfig, WorkerConfig};

/// A request budget of `per_sec` with `burst`; none when `per_sec` is 0.
fn rate_limit(per_sec: u32, burst: u32) -> Option<RateLimitConfig> {
    NonZeroU32::new(per_sec).map(|per_sec| RateLimitConfig {
        per_sec,
        burst: NonZeroU32::new(burst).unwrap_or(per_sec),
    })
}

/// What the API needs at run time.
pub fn api_config(args: &ServeArgs) -> ApiConfig {
    ApiConfig {
        limits: Limits {
            max_targets: args.max_targets as usize,
            default_region: args.default_region.clone(),
        },
        idempotency_ttl_hours: i64::from(args.idempotency_ttl_hours),
        request_timeout: Duration::from_secs(args.request_timeout_secs),
        instance: instance_name(&args.instance),
        rate_limit: rate_limit(args.rate_limit_per_sec, args.rate_limit_burst),
        address_rate_limit: rate_limit(args.address_rate_limit_per_sec, args.address_rate_limit_burst),
        webhook_allow_private: args.worker.webhook_allow_private,
        reconcile_ended_within: args.worker.drift.config().ended_within,
        validation: crate::validation::Settings {
            member_quota: args.worker.image_member_quota as usize,
            concurrency: args.worker.worker_concurrency as usize,
            // The API reads no policy file: its dry run warns as the configuration says.
            guard_on: args.worker.protect_shared_images,
        },
    }
}

/// How long Keystone's answers about tokens are trusted.
pub fn token_cache(access: &AccessArgs) -> CacheTimes {
    CacheTimes {
        valid: Duration::from_secs(access.token_cache_secs),
        invalid: Duration::from_secs(access.invalid_token_cache_secs),
    }
}

/// What the retention purge keeps, with the idempotency keys' time to live.
pub fn retention(edges: &EdgeArgs, idempotency_ttl_hours: u32) -> Retention {
    Retention {
        jobs_days: edges.retain_jobs_days,
        deliveries_days: edges.retain_deliveries_days,
        idempotency_hours: idempotency_ttl_hours,
    }
}

/// How the worker runs, as `instance`, deciding by `policy`.
pub fn worker_config(args: &WorkerArgs, instance: String, policy: SharedPolicy) -> WorkerConfig {
    WorkerConfig {
        concurrency: args.worker_concurrency as usize,
        lease: Duration::from_secs(args.lease_secs),
        idle_poll: Duration::from_millis(args.idle_poll_ms),
        max_attempts: args.max_attempts,
        retry_base: Duration::from_millis(args.retry_base_ms),
        retry_max: Duration::from_secs(args.retry_max_secs),
        accept_poll_first: Duration::from_secs(args.accept_poll_first_secs),
        accept_poll_max: Duration::from_secs(args.accept_poll_max_secs),
        member_quota: args.image_member_quota as usize,
        revalidate_after: Duration::from_secs(args.revalidate_after_secs),
        policy,
        webhooks: WebhookConfig {
            concurrency: args.webhook_concurrency as usize,
            timeout: Duration::from_secs(args.webhook_timeout_secs),
            max_attempts: args.webhook_max_attempts,
            allow_private: args.webhook_allow_private,
        },
        glance_rate_limit: args.glance_rate_limit,
        instance,
        revoke_stalled_after: Duration::from_secs(args.revoke_stalled_after_secs),
        revoke_confirm_after: Duration::from_millis(args.revoke_confirm_ms),
        expiry_notice: Duration::from_secs(args.expiry_notice_secs),
        drift: args.drift.config(),
        protect_images: args.protect_shared_images,
    }
}

/// The OpenStack client when credentials are given (`OS_CLOUD` or `OS_AUTH_URL`), else none.
pub fn openstack_if_configured(args: &WorkerArgs) -> anyhow::Result<Option<OpenStack>> {
    let configured = ["OS_CLOUD", "OS_AUTH_URL"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    if configured {
        openstack(args).map(Some)
    } else {
        Ok(None)
    }
}

/// The OpenStack client, from clouds.yaml or OS_* variables.
pub fn openstack(args: &WorkerArgs) -> anyhow::Result<OpenStack> {
    let cloud = CloudConfig::from_env()
        .map_err(|e| anyhow!("OpenStack credentials (OS_CLOUD / clouds.yaml or OS_* variables): {e:#}"))?;
    let client = OpenStack::new(cloud, Duration::from_secs(args.openstack_timeout_secs))?;
    Ok(match &args.glance_url {
        Some(url) => client.with_glance_url(url),
        None => client,
    })
}
