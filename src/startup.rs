//! The one place that sees everything: it turns settings into a running broker.

mod audit;
mod policy_file;
mod reconcile;
mod settings;

use policy_file::approval_policy;
pub use policy_file::{PolicySource, PolicyVersion, audit_policy};

use std::future::Future;
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::config::{Command, DatabaseArgs, KeysCommand, ServeArgs, instance_name};
use crate::db::failover::{self, Follower, Hosts, Moved};

use crate::openstack::OpenStack;
use crate::tasks::Tasks;
use crate::worker::Worker;
use crate::{db, http, telemetry};

/// The API, and the worker unless `no_worker`, until SIGTERM or SIGINT; then every background
/// task (the worker's loops too) is stopped and waited for.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Read the credentials before binding, so a bad clouds.yaml stops the start. The
    // worker needs them; the API alone uses them (for Keystone tokens) when given.
    let cloud = if args.no_worker {
        settings::openstack_if_configured(&args.worker)?
    } else {
        Some(settings::openstack(&args.worker)?)
    };
    let app = Application::build(&args, cloud.clone()).await?;
    let worker = cloud.filter(|_| !args.no_worker);
    let working = worker.is_some();
    if let Some(cloud) = worker {
        let instance = instance_name(&args.instance);
        let policy = approval_policy(&args.worker, &app.pool, &instance, &app.tasks).await?;
        let config = settings::worker_config(&args.worker, instance, policy);
        Worker::new(app.pool.clone(), cloud, config).start(&app.tasks);
    }
    tracing::info!(listen = %app.local_addr(), worker = working, keystone_tokens = app.keystone, "serving");
    app.run_until(shutdown_signal()).await
}

/// Runs one command of the command line.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::Api(args) => {
            serve(ServeArgs {
                no_worker: true,
                ..*args
            })
            .await
        }
        Command::Worker(args) => {
            let cloud = settings::openstack(&args.worker)?;
            let tasks = Tasks::new();
            let pool = connect(&args.database, args.database.db_max_connections, Some(&tasks)).await?;
            migrate(&pool).await?;
            let instance = instance_name(&args.instance);
            let policy = approval_policy(&args.worker, &pool, &instance, &tasks).await?;
            let config = settings::worker_config(&args.worker, instance, policy);
            spawn_audit_checkpoints(
                &tasks,
                pool.clone(),
                args.audit.checkpoint_every(),
                instance_name(&args.instance),
            );
            spawn_audit_sealer(&tasks, pool.clone(), args.audit.seal_every());
            spawn_audit_partitions(&tasks, pool.clone());
            Worker::new(pool, cloud, config).start(&tasks);
            tracing::info!("worker running");
            shutdown_signal().await;
            tracing::info!("worker stopping: no new claims; finishing jobs in hand");
            tasks.shutdown().await;
            Ok(())
        }
        Command::Migrate(database) => {
            let pool = connect(&database, 1, None).await?;
            migrate(&pool).await?;
            println!("migrations applied");
            for made in db::audit::partitions::ensure(&pool, db::audit::partitions::MONTHS_AHEAD).await? {
                println!("audit partition {made} made");
            }
            Ok(())
        }
        Command::Keys(command) => keys(command).await,
        Command::Audit(command) => audit::run(command).await,
        Command::Reconcile(args) => reconcile::reconcile(args).await,
        Command::Openapi => {
            println!("{}", openapi_json());
            Ok(())
        }
    }
}

/// The OpenAPI document as committed in `openapi/openapi.json`.
pub fn openapi_json() -> String {
    serde_json::to_string_pretty(&http::openapi()).expect("the OpenAPI document always serializes")
}

/// Applies the migrations not yet applied. When none is pending, touches nothing: the
/// broker can then run as a role that may not create tables (`gsb_app`).
/// A pool on the database `DATABASE_URL` names. With several hosts (the libpq multi-host
/// form), on the one that takes writes, and kept there by a task of `tasks` when the primary
/// moves (a one-shot command, given no `tasks`, connects to the primary of the moment).
async fn connect(database: &DatabaseArgs, max_connections: u32, tasks: Option<&Tasks>) -> anyhow::Result<PgPool> {
    let hosts = Hosts::parse(&database.database_url)
        .map_err(|e| anyhow::anyhow!(e))?
        .for_writes();
    connect_to(hosts, max_connections, tasks).await
}

/// A pool on the first of `hosts` that suits them (see [`connect`]).
async fn connect_to(hosts: Hosts, max_connections: u32, tasks: Option<&Tasks>) -> anyhow::Result<PgPool> {
    let primary = if hosts.several() {
        hosts.primary().await
    } else {
        Some(0)
    };
    if primary.is_none() {
        tracing::warn!(
            "no Postgres host takes writes yet: starting on the first, following the primary once there is one"
        );
    }
    let current = primary.unwrap_or(0);
    let moved = Moved::default();
    let pool = db::pool_following(hosts.options(current), max_connections, moved.clone());
    if let Some(tasks) = tasks.filter(|_| hosts.several()) {
        let follower = Follower::new(pool.clone(), hosts, current, moved);
        tasks.every("failover", failover::CHECK_EVERY, move || {
            let follower = follower.clone();
            async move { follower.check().await }
        });
    }
    Ok(pool)
}

async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    if db::migrations_applied(pool).await.unwrap_or(false) {
        return Ok(());
    }
    db::MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations (is DATABASE_URL right, and Postgres up?)")
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            database,
            name,
            role,
            projects,
        } => {
            let pool = connect(&database, 1, None).await?;
            migrate(&pool).await?;
            let (key, secret) = db::api_keys::create(&pool, &name, role, &projects)
                .await
                .with_context(|| format!("creating key `{name}` (names are unique, even once revoked)"))?;
            println!(
                "created key `{}` with role {} (store it now: it is not shown again):",
                key.name, role
            );
            println!("{secret}");
        }
        KeysCommand::List { database } => {
            let pool = connect(&database, 1, None).await?;
            for key in db::api_keys::list(&pool).await? {
                let state = key
                    .revoked_at
                    .map_or("active".to_owned(), |at| format!("revoked {}", at.to_rfc3339()));
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    key.name,
                    key.role.0,
                    key.projects.join(","),
                    key.created_at.to_rfc3339(),
                    state
                );
            }
        }
        KeysCommand::Revoke { database, name } => {
            let pool = connect(&database, 1, None).await?;
            anyhow::ensure!(
                db::api_keys::revoke(&pool, &name).await?,
                "no active key named `{name}`"
            );
            println!("revoked key `{name}`");
        }
    }
    Ok(())
}

/// A broker bound to its port, ready to serve, with its background tasks running.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    pub pool: PgPool,
    /// The owner of the background tasks (sealer, checkpoints, purge, and the worker when
    /// it runs here): stopped and drained when [`Application::run_until`] ends.
    pub tasks: Tasks,
    /// Whether callers may use Keystone tokens (a cloud is configured).
    pub keystone: bool,
    /// Longest a client may take to send a request's head.
    header_read_timeout: Duration,
}

impl Application {
    /// Connects, migrates and binds. `--listen` with port 0 picks a free port (tests do).
    /// `cloud` is the broker's own OpenStack client: without one, Keystone tokens are refused.
    pub async fn build(args: &ServeArgs, cloud: Option<OpenStack>) -> anyhow::Result<Self> {
        let tasks = Tasks::new();
        let pool = connect(&args.database, args.database.db_max_connections, Some(&tasks)).await?;
        migrate(&pool).await?;
        let config = settings::api_config(args);
        spawn_retention_purge(
            &tasks,
            pool.clone(),
            settings::retention(&args.edges, args.idempotency_ttl_hours),
            Duration::from_secs(args.edges.purge_every_secs),
        );
        let keystone = cloud.is_some();
        spawn_audit_checkpoints(
            &tasks,
            pool.clone(),
            args.audit.checkpoint_every(),
            config.instance.clone(),
        );
        spawn_audit_sealer(&tasks, pool.clone(), args.audit.seal_every());
        spawn_audit_partitions(&tasks, pool.clone());
        // The API's own Glance calls (who owns an image) have a budget of their own, apart
        // from the workers': filings never take the slots grants and revokes need.
        let cloud = cloud.map(|cloud| {
            crate::openstack::pace::ApiBudget::apply(
                cloud,
                pool.clone(),
                args.edges.api_glance_rate_limit,
                args.edges.api_glance_concurrency,
            )
        });
        let audit_reads = match &args.database_read_url {
            Some(url) => {
                let hosts = Hosts::parse(url).map_err(|e| anyhow::anyhow!("GSB_DATABASE_READ_URL: {e}"))?;
                connect_to(hosts, args.database.db_max_connections, Some(&tasks)).await?
            }
            None => pool.clone(),
        };
        let state = http::AppState {
            pool: pool.clone(),
            audit_reads,
            config: Arc::new(config),
            metrics: telemetry::metrics_handle(),
            tokens: http::TokenValidator::new(
                cloud.clone(),
                args.access.role_map(),
                settings::token_cache(&args.access),
            ),
            cloud,
        };
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding --listen {}", args.listen))?;
        Ok(Application {
            listener,
            router: http::router(state),
            pool,
            tasks,
            keystone,
            header_read_timeout: Duration::from_secs(args.edges.header_read_timeout_secs),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The routes with every layer, to call in-process: `benches/console_inbox.rs` times the
    /// server's own work with it, apart from sockets.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight, and then
    /// stops the background tasks and waits for them (the worker's jobs in hand finish).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let served = http::serve(self.listener, self.router, self.header_read_timeout, shutdown).await;
        self.tasks.shutdown().await;
        served?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Forgets finished jobs, settled deliveries, expired idempotency keys and idle rate slots
/// (`db::retention`), every `every` (the first time at start).
fn spawn_retention_purge(tasks: &Tasks, pool: PgPool, keep: db::retention::Retention, every: Duration) {
    tasks.every("purge", every, move || {
        let pool = pool.clone();
        async move {
            let purged = db::retention::purge(&pool, keep).await.context("purging old rows")?;
            if purged.total() > 0 {
                tracing::info!(
                    purged.jobs = purged.jobs,
                    purged.deliveries = purged.deliveries,
                    purged.idempotency_keys = purged.idempotency_keys,
                    purged.rate_slots = purged.rate_slots,
                    "old rows purged"
                );
            }
            Ok(())
        }
    });
}

/// Records the head of the audit chain every `every`, when it moved (`db::audit::checkpoint`
/// also logs it, so a copy lives outside the database).
fn spawn_audit_checkpoints(tasks: &Tasks, pool: PgPool, every: Duration, instance: String) {
    tasks.every("checkpoints", every, move || {
        let (pool, instance) = (pool.clone(), instance.clone());
        async move {
            db::audit::checkpoint(&pool, &instance)
                .await
                .context("audit checkpoint")?;
            Ok(())
        }
    });
}

/// Seals unsealed audit events into the hash chain every `every`, a batch after another
/// while there is a backlog. Each replica runs one; the chain lock lets one seal at a time.
/// Not woken by NOTIFY from writers: a notifying transaction takes a database-wide lock at
/// commit, which would serialize the writers' commits again.
pub fn spawn_audit_sealer(tasks: &Tasks, pool: PgPool, every: Duration) {
    tasks.every("sealer", every, move || {
        let pool = pool.clone();
        async move {
            db::audit::seal_all(&pool).await.context("sealing the audit log")?;
            Ok(())
        }
    });
}

/// Makes the audit log's partitions of the coming months, at start (after the migrations)
/// and every hour; every replica does, and the database makes each one once.
fn spawn_audit_partitions(tasks: &Tasks, pool: PgPool) {
    use db::audit::partitions::{ENSURE_EVERY, MONTHS_AHEAD, ensure};
    tasks.every("partitions", ENSURE_EVERY, move || {
        let pool = pool.clone();
        async move {
            for made in ensure(&pool, MONTHS_AHEAD).await.context("making audit partitions")? {
                tracing::info!(partition = %made, "audit partition made");
            }
            Ok(())
        }
    });
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received: finishing requests in flight");
}
