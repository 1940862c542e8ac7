//! Worker throughput and politeness against the fake Glance (`tests/api/fake_glance.rs`) with
//! a set latency, and a minimal fake Keystone (token, catalog, project lookups), so the figures
//! are the broker's own and not those of the loopback rig. Run by `scripts/bench.sh`:
//!
//!   cargo bench --bench worker -- throughput 0     # shares granted per second at 0 ms
//!   cargo bench --bench worker -- throughput 20    # ... at 20 ms per Glance call
//!   cargo bench --bench worker -- politeness 20    # 2 replicas, 2 fan-outs to 128 projects, 20 calls/s
//!   cargo bench --bench worker -- reconcile 20     # 1,000 managed images reconciled under 20 calls/s
//!   cargo bench --bench worker -- guard 20         # throughput with the deletion guard on / off
//!
//! Each prints one `RESULT` line of `key=value` pairs. Needs `DATABASE_URL` (an admin
//! connection: a fresh database is made per run and dropped after).

#[allow(dead_code, reason = "the bench serves the fake; the tests use the rest of it")]
#[path = "../tests/api/fake_glance.rs"]
mod fake_glance;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use glance_share_broker::db;
use glance_share_broker::domain::{Limits, NewShareRequest, RequestStatus, ShareRequestInput};
use glance_share_broker::openstack::{CloudConfig, OpenStack};
use glance_share_broker::worker::{WebhookConfig, Worker, WorkerConfig};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use fake_glance::FakeGlance;

/// The image owner's project in the fake cloud.
const OWNER: &str = "0000000000000000000000000000aaaa";

/// What the fake Glance does to every call before answering it.
struct Gate {
    latency: Duration,
    /// Glance's own limit, as public clouds enforce it: a token bucket (per second, burst).
    limit: Option<(f64, f64)>,
    bucket: Mutex<(f64, Instant)>,
    /// When each call arrived.
    arrivals: Mutex<Vec<Instant>>,
    /// How long the calls took to answer, in all (microseconds).
    busy_us: AtomicUsize,
    throttled: AtomicUsize,
}

async fn gate(State(gate): State<Arc<Gate>>, request: Request, next: Next) -> Response {
    let now = Instant::now();
    gate.arrivals.lock().unwrap().push(now);
    if let Some((rate, burst)) = gate.limit {
        let mut bucket = gate.bucket.lock().unwrap();
        let (tokens, since) = *bucket;
        let tokens = (tokens + now.duration_since(since).as_secs_f64() * rate).min(burst);
        if tokens < 1.0 {
            *bucket = (tokens, now);
            drop(bucket);
            gate.throttled.fetch_add(1, Ordering::Relaxed);
            let mut response =
                (StatusCode::TOO_MANY_REQUESTS, Json(json!({"message": "rate limited"}))).into_response();
            response.headers_mut().insert("retry-after", HeaderValue::from(1));
            return response;
        }
        *bucket = (tokens - 1.0, now);
    }
    if !gate.latency.is_zero() {
        // tokio's timer ticks in whole milliseconds and rounds a sleep up (20 ms took
        // 21.1 ms); a blocking thread's sleep keeps to the latency set within a few µs.
        let latency = gate.latency;
        tokio::task::spawn_blocking(move || std::thread::sleep(latency))
            .await
            .expect("a sleep does not panic");
    }
    let response = next.run(request).await;
    gate.busy_us
        .fetch_add(now.elapsed().as_micros() as usize, Ordering::Relaxed);
    response
}

/// The fake cloud: Keystone (`/v3`) and Glance (`/v2`) on one loopback port.
struct FakeCloud {
    glance: FakeGlance,
    gate: Arc<Gate>,
    url: String,
}

impl FakeCloud {
    async fn start(latency: Duration, limit: Option<(f64, f64)>) -> FakeCloud {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let glance = FakeGlance::new();
        let gate = Arc::new(Gate {
            latency,
            limit,
            bucket: Mutex::new((limit.map_or(0.0, |(_, burst)| burst), Instant::now())),
            arrivals: Mutex::default(),
            busy_us: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
        });
        let keystone = Router::new()
            .route("/v3/auth/tokens", post(issue_token))
            .route("/v3/projects/{id}", get(project))
            .with_state(url.clone());
        let app = glance
            .router()
            .layer(middleware::from_fn_with_state(gate.clone(), self::gate))
            .merge(keystone);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeCloud { glance, gate, url }
    }

    fn client(&self) -> OpenStack {
        let auth_url = format!("{}/v3", self.url);
        let cloud = CloudConfig::from_lookup(|k| {
            Some(match k {
                "OS_AUTH_URL" => auth_url.clone(),
                "OS_USERNAME" => "broker".into(),
                "OS_PASSWORD" => "secret".into(),
                "OS_PROJECT_NAME" => "admin".into(),
                "OS_USER_DOMAIN_NAME" | "OS_PROJECT_DOMAIN_NAME" => "Default".into(),
                "OS_REGION_NAME" => "RegionOne".into(),
                "OS_INTERFACE" => "public".into(),
                _ => return None,
            })
        })
        .expect("the fake cloud's settings are valid");
        OpenStack::new(cloud, Duration::from_secs(30)).unwrap()
    }
}

async fn issue_token(State(url): State<String>) -> Response {
    let expires_at = Utc::now() + chrono::Duration::hours(12);
    let catalog = json!([{"type": "image", "endpoints": [
        {"interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": url}]}]);
    let mut response = (
        StatusCode::CREATED,
        Json(json!({"token": {"expires_at": expires_at, "catalog": catalog}})),
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-subject-token", HeaderValue::from_static("fake-token"));
    response
}

async fn project(Path(id): Path<String>) -> Json<serde_json::Value> {
    Json(json!({"project": {"id": id, "name": format!("bench-{id}"), "domain_id": "default"}}))
}

/// A fresh database with the broker's schema; returns its URL.
async fn fresh_database() -> String {
    let admin = std::env::var("DATABASE_URL").expect("DATABASE_URL (an admin connection) is set");
    let name = format!("gsb_bench_{}", Uuid::new_v4().simple());
    let pool = PgPoolOptions::new().max_connections(1).connect(&admin).await.unwrap();
    sqlx::query(&format!("create database {name}"))
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').expect("DATABASE_URL names a database");
    let url = format!("{base}/{name}");
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    db::MIGRATOR.run(&pool).await.unwrap();
    pool.close().await;
    url
}

async fn drop_database(url: &str) {
    let admin = std::env::var("DATABASE_URL").unwrap();
    let name = url.rsplit_once('/').unwrap().1;
    let pool = PgPoolOptions::new().max_connections(1).connect(&admin).await.unwrap();
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&pool)
        .await
        .unwrap();
}

/// Approved requests, one per image, each to `targets`, their grants queued: what the API
/// leaves behind when requests are approved.
async fn approved(pool: &PgPool, cloud: &FakeCloud, images: usize, targets: &[String]) {
    let limits = Limits {
        max_targets: 1000,
        default_region: "RegionOne".into(),
    };
    for _ in 0..images {
        let image = Uuid::new_v4();
        cloud.glance.add_image(&image.to_string(), OWNER, "shared");
        let input: ShareRequestInput = serde_json::from_value(json!({
            "image_id": image, "targets": targets, "reason": "bench"}))
        .unwrap();
        let new = NewShareRequest::parse(input, &limits, Utc::now()).unwrap();
        let mut tx = pool.begin().await.unwrap();
        let filer = db::share_requests::Filer {
            requested_by: "bench",
            subject: "key:bench",
            on_behalf_of: None,
            target_domains: None,
            image_owner: Some(OWNER),
        };
        let (request, _) = db::share_requests::insert(&mut tx, &new, filer).await.unwrap();
        let (_, shares) = db::share_requests::decide(&mut tx, request.id, RequestStatus::Approved, "bench", None)
            .await
            .unwrap();
        for share in shares {
            db::jobs::enqueue(&mut tx, db::jobs::Kind::Grant, share.id, share.image_id, Utc::now())
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
}

fn projects(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{i:032x}")).collect()
}

fn config(concurrency: usize, glance_rate_limit: u32) -> WorkerConfig {
    WorkerConfig {
        concurrency,
        lease: Duration::from_secs(30),
        idle_poll: Duration::from_millis(100),
        max_attempts: 8,
        retry_base: Duration::from_millis(500),
        retry_max: Duration::from_secs(30),
        // Acceptance checks would come after the figures are taken.
        accept_poll_first: Duration::from_secs(3600),
        accept_poll_max: Duration::from_secs(3600),
        member_quota: 128,
        revalidate_after: Duration::from_secs(300),
        policy: Default::default(),
        webhooks: WebhookConfig {
            concurrency: 1,
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            allow_private: false,
        },
        glance_rate_limit,
        instance: "bench".into(),
        revoke_stalled_after: Duration::from_secs(900),
        revoke_confirm_after: Duration::from_millis(100),
        expiry_notice: Duration::ZERO,
        drift: Default::default(),
        protect_images: true,
    }
}

async fn granted(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from shares where state = 'pending_acceptance'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs `replicas` workers until `total` shares are granted; returns the time it took, from
/// the start to the last grant, both by the database's clock: the watcher looks only every
/// 100 ms, so that it takes next to nothing from the CPUs it measures.
async fn run_workers(url: &str, cloud: &FakeCloud, replicas: usize, config: WorkerConfig, total: i64) -> Duration {
    let stop = CancellationToken::new();
    let watcher = PgPoolOptions::new().max_connections(1).connect(url).await.unwrap();
    let started: DateTime<Utc> = sqlx::query_scalar("select clock_timestamp()")
        .fetch_one(&watcher)
        .await
        .unwrap();
    let mut handles = Vec::new();
    for _ in 0..replicas {
        let pool = PgPoolOptions::new()
            .max_connections(config.concurrency as u32 + 4)
            .connect(url)
            .await
            .unwrap();
        let worker = Worker::new(pool, cloud.client(), config.clone());
        handles.push(tokio::spawn(worker.run(stop.clone())));
    }
    while granted(&watcher).await < total {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last: DateTime<Utc> = sqlx::query_scalar("select max(granted_at) from shares")
        .fetch_one(&watcher)
        .await
        .unwrap();
    let elapsed = (last - started).to_std().expect("the last grant comes after the start");
    stop.cancel();
    for handle in handles {
        handle.await.unwrap();
    }
    elapsed
}

/// Shares granted per second by one worker (GSB_WORKER_CONCURRENCY 8), against the bound
/// `concurrency / latency` on member writes; with the deletion guard as `protect` says.
async fn throughput(latency_ms: u64, protect: bool) -> f64 {
    let (images, per_image, concurrency) = (80, 50, 8);
    let cloud = FakeCloud::start(Duration::from_millis(latency_ms), None).await;
    let url = fresh_database().await;
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
    approved(&pool, &cloud, images, &projects(per_image)).await;
    let total = (images * per_image) as i64;
    let config = WorkerConfig {
        protect_images: protect,
        ..config(concurrency, 0)
    };
    let elapsed = run_workers(&url, &cloud, 1, config, total).await;
    let per_sec = total as f64 / elapsed.as_secs_f64();
    let glance_calls = cloud.gate.arrivals.lock().unwrap().len();
    // One member POST per share, `concurrency` at once, each taking the latency: as set, and
    // as the fake Glance actually took to answer.
    let took_ms = cloud.gate.busy_us.load(Ordering::Relaxed) as f64 / 1000.0 / glance_calls as f64;
    let bound = match latency_ms {
        0 => "none".to_owned(),
        ms => {
            let (set, measured) = (
                concurrency as f64 * 1000.0 / ms as f64,
                concurrency as f64 * 1000.0 / took_ms,
            );
            format!(
                "{set:.0} ratio_to_bound={:.2} bound_at_measured_latency={measured:.0} ratio_to_that={:.2}",
                per_sec / set,
                per_sec / measured
            )
        }
    };
    println!(
        "RESULT bench=worker latency_ms={latency_ms} measured_latency_ms={took_ms:.2} concurrency={concurrency} images={images} \
         targets_per_image={per_image} shares={total} protect={protect} glance_calls={glance_calls} secs={:.3} \
         shares_per_sec={per_sec:.0} bound_per_sec={bound}",
        elapsed.as_secs_f64()
    );
    pool.close().await;
    drop_database(&url).await;
    per_sec
}

/// The deletion guard's cost on grants: throughput with it on against the same run with it off.
async fn guard_cost(latency_ms: u64) {
    let on = throughput(latency_ms, true).await;
    let off = throughput(latency_ms, false).await;
    println!(
        "RESULT bench=guard latency_ms={latency_ms} shares_per_sec_on={on:.0} shares_per_sec_off={off:.0} ratio_on_to_off={:.3}",
        on / off
    );
}

/// Two worker replicas under one shared limit of `rate` Glance calls per second fan two
/// images out to the same 128 projects, against a Glance that enforces that rate itself.
async fn politeness(rate: u32) {
    let (images, per_image, replicas, concurrency) = (2, 128, 2, 8);
    // Glance's own limit: the same rate, with a burst of 2 calls to absorb scheduling jitter.
    let cloud = FakeCloud::start(Duration::from_millis(5), Some((f64::from(rate), 2.0))).await;
    let url = fresh_database().await;
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
    approved(&pool, &cloud, images, &projects(per_image)).await;
    let total = (images * per_image) as i64;
    let elapsed = run_workers(&url, &cloud, replicas, config(concurrency, rate), total).await;
    let arrivals = cloud.gate.arrivals.lock().unwrap().clone();
    let span = arrivals.last().unwrap().duration_since(arrivals[0]).as_secs_f64();
    let achieved = (arrivals.len() - 1) as f64 / span;
    println!(
        "RESULT bench=politeness limit_per_sec={rate} replicas={replicas} images={images} targets_per_image={per_image} \
         shares={total} glance_calls={} secs={:.3} achieved_per_sec={achieved:.2} deviation_pct={:.1} throttled_429={}",
        arrivals.len(),
        elapsed.as_secs_f64(),
        (achieved / f64::from(rate) - 1.0) * 100.0,
        cloud.gate.throttled.load(Ordering::Relaxed)
    );
    pool.close().await;
    drop_database(&url).await;
}

/// 1,000 managed images (one share each, granted, its member in Glance) reconciled by one
/// worker under a limit of `rate` Glance calls per second, against the same pass with no
/// limit (the baseline, in the same process): the time, the Glance calls per image, and the
/// rate the calls reached against the limit.
async fn reconcile(rate: u32) {
    let (images, concurrency) = (1000, 8);
    let cloud = FakeCloud::start(Duration::from_millis(5), None).await;
    let url = fresh_database().await;
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
    approved(&pool, &cloud, images, &projects(1)).await;
    // Granted as a grant leaves them: the member in Glance, the share awaiting the consumer.
    sqlx::query("delete from jobs").execute(&pool).await.unwrap();
    let shares: Vec<(Uuid, String)> =
        sqlx::query_as("update shares set state = 'pending_acceptance', project_id = target, granted_at = now() returning image_id, target")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (image, project) in &shares {
        cloud.glance.add_existing_member(&image.to_string(), project);
    }
    let mut passes = Vec::new();
    for limit in [0, rate] {
        let start_calls = cloud.gate.arrivals.lock().unwrap().len();
        let worker = Worker::new(pool.clone(), cloud.client(), config(concurrency, limit));
        let queued = worker.queue_reconciles(None).await.unwrap().len();
        let started = Instant::now();
        let stop = CancellationToken::new();
        let runner = tokio::spawn(worker.clone().run(stop.clone()));
        loop {
            let left: i64 = sqlx::query_scalar(
                "select count(*) from jobs where kind = 'reconcile' and state in ('queued', 'running')",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = started.elapsed();
        stop.cancel();
        runner.await.unwrap();
        let arrivals: Vec<Instant> = cloud.gate.arrivals.lock().unwrap()[start_calls..].to_vec();
        let span = arrivals.last().unwrap().duration_since(arrivals[0]).as_secs_f64();
        let findings: i64 = sqlx::query_scalar("select count(*) from drift_findings")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            (queued, findings),
            (images, 0),
            "every image reconciled, and no drift in agreeing data"
        );
        passes.push((limit, elapsed, arrivals.len(), (arrivals.len() - 1) as f64 / span));
    }
    let (_, base_secs, _, base_rate) = passes[0];
    let (_, secs, calls, achieved) = passes[1];
    println!(
        "RESULT bench=reconcile images={images} concurrency={concurrency} limit_per_sec={rate} glance_calls={calls} \
         calls_per_image={:.2} secs={:.3} achieved_per_sec={achieved:.2} within_limit={} deviation_pct={:.1} \
         baseline_secs={:.3} baseline_per_sec={base_rate:.0} ratio_to_baseline={:.2}",
        calls as f64 / images as f64,
        secs.as_secs_f64(),
        achieved <= f64::from(rate) * 1.02,
        (achieved / f64::from(rate) - 1.0) * 100.0,
        base_secs.as_secs_f64(),
        secs.as_secs_f64() / base_secs.as_secs_f64()
    );
    pool.close().await;
    drop_database(&url).await;
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and a benchmark is no test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("the worker benchmarks run with `cargo bench --bench worker` (scripts/bench.sh)");
        return;
    }
    // Everything but the flags names what to run.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let number = |i: usize, default: u64| args.get(i).map_or(default, |a| a.parse().expect("a number"));
    match args.first().map(String::as_str) {
        Some("throughput") => {
            throughput(number(1, 0), true).await;
        }
        Some("guard") => guard_cost(number(1, 20)).await,
        Some("politeness") => politeness(number(1, 20) as u32).await,
        Some("reconcile") => reconcile(number(1, 20) as u32).await,
        None => {
            throughput(0, true).await;
            throughput(20, true).await;
            politeness(20).await;
            reconcile(20).await;
        }
        Some(other) => {
            panic!(
                "unknown bench {other}: throughput [ms] | guard [ms] | politeness [per second] | reconcile [per second]"
            )
        }
    }
}
