//! The command line and the environment: every setting, typed and checked before anything
//! starts. A bad value stops the process with a message naming the setting. Knows `domain`
//! only: `startup` turns these settings into each part's own configuration.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::domain::{ApproverScope, Role, RoleMap};

mod audit;
mod drift;
mod otel;
mod worker;
pub use audit::{ArchiveMonth, AuditCommand};
pub use drift::{DriftArgs, Every};
pub use otel::{Endpoint, OtelArgs, TracesSampler};
pub use worker::WorkerArgs;

#[derive(Debug, Parser)]
#[command(
    name = "glance-share-broker",
    version,
    about = "Brokers OpenStack Glance image shares between projects"
)]
pub struct Cli {
    /// Log format: `json` (one object per line) or `text`.
    #[arg(long, env = "GSB_LOG_FORMAT", default_value = "json", global = true)]
    pub log_format: LogFormat,

    /// OpenTelemetry trace export (off unless an OTLP endpoint is set).
    #[command(flatten, next_help_heading = "Traces (OpenTelemetry)")]
    pub otel: OtelArgs,

    /// What to run; `serve` when none is named.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API and the worker (the default). Applies pending migrations first.
    Serve(Box<ServeArgs>),
    /// Run only the HTTP API (the same as `serve --no-worker`), to scale it apart from the worker.
    Api(Box<ServeArgs>),
    /// Run only the worker (to scale it apart from the API).
    Worker(WorkerCommandArgs),
    /// Apply the embedded database migrations and exit.
    Migrate(DatabaseArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Compare Glance with the broker once (every managed image, or `--image-id`), print the
    /// drift findings of the pass as JSON lines, and exit. Repairs as the policy says.
    Reconcile(ReconcileArgs),
    /// Print the OpenAPI document.
    Openapi,
}

impl Command {
    /// `serve`, with every setting from the environment: what runs when no command is named.
    /// A missing or bad setting is a usage error, as for `serve` typed out.
    pub fn serve_from_env() -> Result<Command, clap::Error> {
        let mut cli = Cli::command();
        cli.build();
        let serve = cli
            .find_subcommand_mut("serve")
            .expect("`serve` is a subcommand")
            .clone();
        let mut matches = serve.try_get_matches_from(["serve"])?;
        ServeArgs::from_arg_matches_mut(&mut matches).map(|args| Command::Serve(Box::new(args)))
    }
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// Postgres URL, e.g. postgres://broker:secret@db:5432/broker; with several hosts
    /// (db1:5432,db2:5432), the broker follows whichever is the primary
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Most connections the pool opens.
    #[arg(long, env = "GSB_DB_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address the API listens on.
    #[arg(long, env = "GSB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Longest a request may run before it is answered 503.
    #[arg(long, env = "GSB_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Most target projects in one request (keep at or below Glance's image_member_quota).
    #[arg(long, env = "GSB_MAX_TARGETS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub max_targets: u32,

    /// Region of requests that name none.
    #[arg(long, env = "GSB_DEFAULT_REGION", default_value = "RegionOne")]
    pub default_region: String,

    /// How long an Idempotency-Key's response is kept and replayed (at least 24 hours).
    #[arg(long, env = "GSB_IDEMPOTENCY_TTL_HOURS", default_value_t = 24, value_parser = clap::value_parser!(u32).range(24..=8760))]
    pub idempotency_ttl_hours: u32,

    /// This instance's name in the audit log (default: the host name).
    #[arg(long, env = "GSB_INSTANCE")]
    pub instance: Option<String>,

    /// Requests per second each authenticated caller (an API key, or a Keystone user) may make
    /// to `/v1/`, per API replica; more get 429 with Retry-After. 0 turns the limit off.
    #[arg(long, env = "GSB_RATE_LIMIT_PER_SEC", default_value_t = 50)]
    pub rate_limit_per_sec: u32,

    /// Requests a caller may make at once above its steady rate.
    #[arg(long, env = "GSB_RATE_LIMIT_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_limit_burst: u32,

    /// Requests per second one client address may make to `/v1/`, counted before
    /// authentication, per API replica. 0 turns the limit off.
    #[arg(long, env = "GSB_ADDRESS_RATE_LIMIT_PER_SEC", default_value_t = 200)]
    pub address_rate_limit_per_sec: u32,

    /// Requests one client address may make at once above its steady rate.
    #[arg(long, env = "GSB_ADDRESS_RATE_LIMIT_BURST", default_value_t = 400, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub address_rate_limit_burst: u32,

    /// Serve the API only; run the worker elsewhere (`glance-share-broker worker`).
    #[arg(long, env = "GSB_NO_WORKER")]
    pub no_worker: bool,

    /// Postgres URL of a standby for auditors' reads and exports of the audit log (sealing
    /// still happens on the primary); they may lag behind it by the standby's replay delay.
    #[arg(long, env = "GSB_DATABASE_READ_URL", hide_env_values = true)]
    pub database_read_url: Option<String>,

    #[command(flatten)]
    pub access: AccessArgs,

    #[command(flatten)]
    pub audit: AuditArgs,

    #[command(flatten)]
    pub worker: WorkerArgs,

    #[command(flatten)]
    pub edges: EdgeArgs,
}

/// Bounds at the service's edges: slow clients, the API's own share of Glance, and how long
/// finished work is kept.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Longest a client may take to send a request's head (request line and headers); the
    /// connection is closed after it. Also how long an idle keep-alive connection is kept
    /// (behind a load balancer, keep it above the balancer's idle timeout).
    #[arg(long, env = "GSB_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_read_timeout_secs: u64,

    /// Glance calls per second the API makes (who owns an image, when a request is filed), all
    /// API replicas together, apart from the workers' GSB_GLANCE_RATE_LIMIT. Beyond it (after a
    /// wait of at most a second) filings are answered 503 with Retry-After. 0 turns it off.
    #[arg(long, env = "GSB_API_GLANCE_RATE_LIMIT", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100000))]
    pub api_glance_rate_limit: u32,

    /// Glance calls one API replica makes at once; more are answered 503 with Retry-After.
    #[arg(long, env = "GSB_API_GLANCE_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub api_glance_concurrency: u32,

    /// Days a finished job (done or failed) is kept.
    #[arg(long, env = "GSB_RETAIN_JOBS_DAYS", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retain_jobs_days: u32,

    /// Days a settled webhook delivery (delivered or failed) is kept in the delivery log.
    #[arg(long, env = "GSB_RETAIN_DELIVERIES_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub retain_deliveries_days: u32,

    /// How often old jobs, deliveries, expired idempotency keys and idle rate slots are purged.
    #[arg(long, env = "GSB_PURGE_EVERY_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub purge_every_secs: u64,
}

impl Default for EdgeArgs {
    /// The defaults above (and any GSB_* variables set).
    fn default() -> Self {
        defaults()
    }
}

/// Who may call the API: Keystone tokens and how their roles map to the broker's.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// How long a validated Keystone token is trusted before Keystone is asked again (0: always ask).
    #[arg(long, env = "GSB_TOKEN_CACHE_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub token_cache_secs: u64,

    /// How long Keystone's "no such token" is remembered, so junk tokens do not reach
    /// Keystone on every call (0: always ask).
    #[arg(long, env = "GSB_INVALID_TOKEN_CACHE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub invalid_token_cache_secs: u64,

    /// Projects whose tokens carry cloud-wide broker roles (admin, auditor, an `everywhere`
    /// approver), besides system-scoped tokens: project ids or `<project name>@<domain name>`.
    /// Any other token's roles hold in its own project or domain only.
    #[arg(
        long,
        env = "GSB_ADMIN_PROJECTS",
        value_delimiter = ',',
        default_value = "admin@Default"
    )]
    pub admin_projects: Vec<String>,

    /// Keystone roles that make a user requester of its project's images and consumer of shares to it.
    #[arg(
        long,
        env = "GSB_KEYSTONE_MEMBER_ROLES",
        value_delimiter = ',',
        default_value = "member"
    )]
    pub keystone_member_roles: Vec<String>,

    /// Keystone roles that let a user read its project's requests and shares.
    #[arg(
        long,
        env = "GSB_KEYSTONE_READER_ROLES",
        value_delimiter = ',',
        default_value = "reader"
    )]
    pub keystone_reader_roles: Vec<String>,

    /// Keystone roles that let a user approve and deny requests.
    #[arg(
        long,
        env = "GSB_KEYSTONE_APPROVER_ROLES",
        value_delimiter = ',',
        default_value = "image_share_approver"
    )]
    pub keystone_approver_roles: Vec<String>,

    /// Which requests a Keystone approver decides: `everywhere`, `project` (images its token's
    /// project owns) or `domain` (images owned in its token's project's domain).
    #[arg(long, env = "GSB_KEYSTONE_APPROVER_SCOPE", default_value = "everywhere")]
    pub keystone_approver_scope: ApproverScope,

    /// Keystone roles that let a user read everything (none by default).
    #[arg(long, env = "GSB_KEYSTONE_AUDITOR_ROLES", value_delimiter = ',')]
    pub keystone_auditor_roles: Vec<String>,

    /// Keystone roles that let a user do everything.
    #[arg(
        long,
        env = "GSB_KEYSTONE_ADMIN_ROLES",
        value_delimiter = ',',
        default_value = "admin"
    )]
    pub keystone_admin_roles: Vec<String>,
}

impl Default for AccessArgs {
    /// The defaults above (and any GSB_* variables set).
    fn default() -> Self {
        defaults()
    }
}

impl AccessArgs {
    pub fn role_map(&self) -> RoleMap {
        let names = |roles: &[String]| -> Vec<String> {
            roles
                .iter()
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .collect()
        };
        RoleMap {
            member: names(&self.keystone_member_roles),
            reader: names(&self.keystone_reader_roles),
            approver: names(&self.keystone_approver_roles),
            auditor: names(&self.keystone_auditor_roles),
            admin: names(&self.keystone_admin_roles),
            approver_scope: self.keystone_approver_scope,
            cloud_projects: names(&self.admin_projects),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct WorkerCommandArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// This instance's name in the audit log (default: the host name).
    #[arg(long, env = "GSB_INSTANCE")]
    pub instance: Option<String>,

    #[command(flatten)]
    pub audit: AuditArgs,

    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub worker: WorkerCommandArgs,
    /// Reconcile this image only.
    #[arg(long)]
    pub image_id: Option<uuid::Uuid>,
}

/// How a running broker looks after the audit log.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// How often the head of the audit chain is recorded as a checkpoint (when it moved).
    #[arg(long, env = "GSB_AUDIT_CHECKPOINT_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub audit_checkpoint_secs: u64,

    /// How often unsealed audit events are sealed into the hash chain (milliseconds).
    #[arg(long, env = "GSB_AUDIT_SEAL_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60000))]
    pub audit_seal_ms: u64,
}

impl AuditArgs {
    pub fn checkpoint_every(&self) -> Duration {
        Duration::from_secs(self.audit_checkpoint_secs)
    }

    pub fn seal_every(&self) -> Duration {
        Duration::from_millis(self.audit_seal_ms)
    }
}

/// A group of settings at its defaults (and any GSB_* variables set), as parsed from no flags.
fn defaults<T: Args + FromArgMatches>() -> T {
    #[derive(Parser)]
    struct Only<T: Args> {
        #[command(flatten)]
        group: T,
    }
    let matches = Only::<T>::command().get_matches_from(["only"]);
    Only::<T>::from_arg_matches(&matches)
        .expect("the defaults are valid")
        .group
}

/// The instance name: as configured, else the host name.
pub fn instance_name(configured: &Option<String>) -> String {
    configured.clone().unwrap_or_else(default_instance)
}

fn default_instance() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "glance-share-broker".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key. The key is printed once, alone on the last line.
    Create {
        #[command(flatten)]
        database: DatabaseArgs,
        /// A unique name for the key's holder, e.g. `service-portal`.
        #[arg(long)]
        name: String,
        /// requester, approver, auditor or admin.
        #[arg(long)]
        role: Role,
        /// A project the key acts for (repeat for more).
        #[arg(long = "project")]
        projects: Vec<String>,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Revoke a key by name.
    Revoke {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        name: String,
    },
}
