//! The worker's settings: how many jobs it runs, how it retries and paces its calls to
//! OpenStack, how long it holds a job, and where its credentials and policy come from.

use std::path::PathBuf;

use clap::Args;

use super::{DriftArgs, defaults};

/// How the worker runs and reaches OpenStack. Credentials come from `clouds.yaml`
/// (`OS_CLOUD`, `OS_CLIENT_CONFIG_FILE`) or `OS_*` variables, as for every OpenStack tool.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Jobs run at once by one process.
    #[arg(long, env = "GSB_WORKER_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub worker_concurrency: u32,

    /// How long a claimed job is held without a heartbeat before another worker may take it.
    #[arg(long, env = "GSB_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub lease_secs: u64,

    /// How often an idle worker looks for due jobs (it is also woken by LISTEN/NOTIFY).
    #[arg(long, env = "GSB_IDLE_POLL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60000))]
    pub idle_poll_ms: u64,

    /// Tries of a failing Glance call before a grant is `failed`, or a revoke (which is
    /// retried until done) is reported stalled.
    #[arg(long, env = "GSB_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub max_attempts: i32,

    /// First retry delay; it doubles each time (with jitter).
    #[arg(long, env = "GSB_RETRY_BASE_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=600000))]
    pub retry_base_ms: u64,

    /// Longest retry delay.
    #[arg(long, env = "GSB_RETRY_MAX_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub retry_max_secs: u64,

    /// First wait before checking whether the consumer accepted; it doubles each time.
    #[arg(long, env = "GSB_ACCEPT_POLL_FIRST_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub accept_poll_first_secs: u64,

    /// Longest wait between acceptance checks.
    #[arg(long, env = "GSB_ACCEPT_POLL_MAX_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub accept_poll_max_secs: u64,

    /// How long a passed validation is trusted: a grant starting later checks each target in
    /// Keystone again (the project may have been deleted since); one starting sooner uses the
    /// project ids validation resolved. 0 checks again every time.
    #[arg(long, env = "GSB_REVALIDATE_AFTER_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub revalidate_after_secs: u64,

    /// Glance's `image_member_quota` (Glance's default is 128): validation refuses a request
    /// that would pass it.
    #[arg(long, env = "GSB_IMAGE_MEMBER_QUOTA", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub image_member_quota: u32,

    /// The approval policy (TOML or YAML), applied to each validated request; reloaded on
    /// SIGHUP. Without one, every request needs one approver and waits as long as it takes.
    #[arg(long, env = "GSB_POLICY_FILE")]
    pub policy_file: Option<PathBuf>,

    /// Webhook deliveries sent at once by one process (apart from the jobs).
    #[arg(long, env = "GSB_WEBHOOK_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub webhook_concurrency: u32,

    /// Longest wait for a webhook receiver's answer.
    #[arg(long, env = "GSB_WEBHOOK_TIMEOUT_SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub webhook_timeout_secs: u64,

    /// Tries of a webhook delivery before it is `failed` (backoff as GSB_RETRY_*).
    #[arg(long, env = "GSB_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub webhook_max_attempts: i32,

    /// Let webhooks reach loopback, private, link-local (cloud metadata) and other internal
    /// addresses. Off: such URLs are refused at registration and deliveries to them refused.
    #[arg(long, env = "GSB_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,

    /// Timeout of one call to Keystone or Glance.
    #[arg(long, env = "GSB_OPENSTACK_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub openstack_timeout_secs: u64,

    /// Send Glance calls here instead of the catalog's image endpoint.
    #[arg(long, env = "GSB_GLANCE_URL")]
    pub glance_url: Option<String>,

    /// Glance calls per second to one cloud and region, all worker replicas together
    /// (they share the limit through Postgres). 0 turns the limit off.
    #[arg(long, env = "GSB_GLANCE_RATE_LIMIT", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=100000))]
    pub glance_rate_limit: u32,

    /// A revoke still failing this long after it started is reported stalled (the
    /// `share.revoke_stalled` webhook, the `gsb_revokes_stalled` gauge), as after
    /// GSB_MAX_ATTEMPTS failed tries; it is retried until the member is gone either way.
    #[arg(long, env = "GSB_REVOKE_STALLED_AFTER_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=604800))]
    pub revoke_stalled_after_secs: u64,

    /// How long after removing a member a revoke looks for it again before the share is
    /// `revoked` (Glance brings a removed member back when a status update that read it
    /// before the removal completes after it); one that came back is removed again.
    #[arg(long, env = "GSB_REVOKE_CONFIRM_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=600000))]
    pub revoke_confirm_ms: u64,

    /// How long before a share expires (its request's `expires_at`) the consumer is told,
    /// with one `share.expiring` webhook per share. 0 gives no notice.
    #[arg(long, env = "GSB_EXPIRY_NOTICE_SECS", default_value_t = 604800, value_parser = clap::value_parser!(u64).range(0..=31622400))]
    pub expiry_notice_secs: u64,
    #[command(flatten)]
    pub drift: DriftArgs,

    /// The deletion guard: keep Glance's `protected` on while an image has a live share (its
    /// owner cannot delete it then), and put back the value found after the last share ends.
    /// `false` turns it off for new grants (the policy's `protect_shared_images` can too).
    #[arg(long, env = "GSB_PROTECT_SHARED_IMAGES", default_value_t = true, action = clap::ArgAction::Set)]
    pub protect_shared_images: bool,
}

impl Default for WorkerArgs {
    /// The defaults above (and any GSB_* variables set).
    fn default() -> Self {
        defaults()
    }
}
