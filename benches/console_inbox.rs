//! The approvals inbox's first page with many pending requests in the database, timed on the
//! server: the whole broker (`Application::build`, every layer) called in-process, so the
//! figure is the server's own work, apart from sockets. In the same process, against the
//! same database and interleaved with it: the API's `GET /v1/share-requests?status=
//! pending_approval` (the data the inbox renders, as JSON) and a bare SELECT of the same
//! page (`db::share_requests::list`), each to its last byte.
//!
//!     DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench console_inbox
//!     DATABASE_URL=... cargo bench --bench console_inbox -- 5000 300    # requests, pages timed
//!
//! The requests are loaded through the broker's own SQL, as filing and validation write them
//! (`db::share_requests::insert`, `pass_validation`, `set_policy`: two targets each, a
//! two-approver verdict). Then a second round with the same rows where only the oldest 1%
//! are still pending (the rest decided by one UPDATE, then vacuumed as autovacuum would):
//! the inbox must not read past the decided ones. Prints p50 and p99 of each and the ratios, and the plan of the page query.
//! `cargo test --all-targets` runs it small (1,000 requests, 50 pages) as a smoke test.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use clap::Parser;
use glance_share_broker::config::ServeArgs;
use glance_share_broker::db::{self, share_requests::ResolvedTarget};
use glance_share_broker::domain::filters::RequestFilter;
use glance_share_broker::domain::policy::Verdict;
use glance_share_broker::domain::{ImageFacts, Limits, NewShareRequest, RequestStatus, Role};
use glance_share_broker::startup::Application;
use serde_json::json;
use sqlx::migrate::MigrateDatabase;
use sqlx::{PgPool, Postgres};
use tower::ServiceExt;
use uuid::Uuid;

/// Requests loaded and pages timed per variant: when measuring (`cargo bench` passes
/// `--bench`), and as a smoke test.
const MEASURE: (usize, usize) = (100_000, 2_000);
const SMOKE: (usize, usize) = (1_000, 50);
/// Requests per loading transaction, and loaders at once.
const BATCH: usize = 250;
const LOADERS: usize = 4;
/// Requests loaded between two refreshes of the planner's statistics.
const ANALYZE_EVERY: usize = 5_000;
/// Untimed pages of each variant first (connections, caches, prepared statements).
const WARM_UP: usize = 30;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn new_request(limits: &Limits) -> NewShareRequest {
    let input = serde_json::from_value(json!({
        "image_id": Uuid::new_v4().to_string(),
        "targets": ["2f0c6b8a9d3e4c1f8a7b6c5d4e3f2a1b", "proj-c"],
        "reason": "CI runners need the golden image",
    }))
    .unwrap();
    NewShareRequest::parse(input, limits, chrono::Utc::now()).unwrap()
}

/// Refreshes the planner's statistics: a table that grows by thousands of rows a second
/// outruns autovacuum, and a plan made for a small `shares` scans it whole.
async fn analyze(pool: &PgPool) {
    sqlx::query("analyze share_requests, shares")
        .execute(pool)
        .await
        .unwrap();
}

/// Files `count` requests and records each one's passed validation and two-approver verdict,
/// as the API and the worker write them, `BATCH` to a transaction, `LOADERS` at once.
async fn load(pool: &PgPool, count: usize) {
    let loaded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let limits = Limits {
        max_targets: 128,
        default_region: "RegionOne".into(),
    };
    let image = ImageFacts {
        name: Some("golden".into()),
        owner: Some("0000000000000000000000000000aaaa".into()),
        owner_domain: Some("default".into()),
        visibility: "shared".into(),
    };
    let tasks: Vec<_> = (0..LOADERS)
        .map(|loader| {
            let (pool, limits, image, loaded) = (pool.clone(), limits.clone(), image.clone(), loaded.clone());
            let mine = count / LOADERS + usize::from(loader < count % LOADERS);
            tokio::spawn(async move {
                let filer = db::share_requests::Filer {
                    requested_by: "portal",
                    subject: "key:portal",
                    on_behalf_of: None,
                    target_domains: None,
                    image_owner: None,
                };
                let mut left = mine;
                while left > 0 {
                    let mut tx = pool.begin().await.unwrap();
                    for _ in 0..left.min(BATCH) {
                        let new = new_request(&limits);
                        let (request, shares) = db::share_requests::insert(&mut tx, &new, filer).await.unwrap();
                        let targets: Vec<ResolvedTarget> = shares
                            .iter()
                            .map(|s| ResolvedTarget {
                                share_id: s.id,
                                project_id: s.project_id.clone().unwrap_or_else(|| format!("id-of-{}", s.target)),
                                project_name: s.target.clone(),
                                project_domain: "default".into(),
                            })
                            .collect();
                        db::share_requests::pass_validation(&mut tx, request.id, &image, &targets, &[])
                            .await
                            .unwrap();
                        db::share_requests::set_policy(
                            &mut tx,
                            request.id,
                            Verdict::RequireApproval,
                            2,
                            Some("two-eyes"),
                        )
                        .await
                        .unwrap();
                    }
                    tx.commit().await.unwrap();
                    let batch = left.min(BATCH);
                    left -= batch;
                    let done = loaded.fetch_add(batch, std::sync::atomic::Ordering::Relaxed) + batch;
                    if done / ANALYZE_EVERY != (done - batch) / ANALYZE_EVERY {
                        analyze(&pool).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    analyze(pool).await;
}

/// Signs in to the console with `key` through the router; the session cookie.
async fn console_session(router: &axum::Router, key: &str) -> String {
    let page = router.clone().oneshot(get("/console/sign-in", None)).await.unwrap();
    let token = cookie(&page, "gsb_console_sign_in");
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &token)
        .append_pair("method", "api_key")
        .append_pair("api_key", key)
        .finish();
    let request = Request::post("/console/sign-in")
        .header(header::COOKIE, format!("gsb_console_sign_in={token}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form))
        .unwrap();
    let signed_in = router.clone().oneshot(request).await.unwrap();
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    format!("gsb_console={}", cookie(&signed_in, "gsb_console"))
}

fn cookie(response: &axum::response::Response, name: &str) -> String {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .expect("the cookie is set")
        .to_owned()
}

fn get(path: &str, credential: Option<(header::HeaderName, String)>) -> Request<Body> {
    let mut request = Request::get(path).body(Body::empty()).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))));
    if let Some((name, value)) = credential {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    request
}

/// What is timed: one first page, to its last byte.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// `GET /console/approvals`, HTML.
    Console,
    /// `GET /v1/share-requests?status=pending_approval`, JSON.
    Api,
    /// The page's SELECT alone.
    Select,
}

struct Target {
    router: axum::Router,
    pool: PgPool,
    cookie: String,
    key: String,
}

impl Target {
    /// One first page; its size in bytes (rows for the SELECT).
    async fn page(&self, variant: Variant) -> usize {
        let (path, credential) = match variant {
            Variant::Console => ("/console/approvals", (header::COOKIE, self.cookie.clone())),
            Variant::Api => (
                "/v1/share-requests?status=pending_approval",
                (header::AUTHORIZATION, format!("Bearer {}", self.key)),
            ),
            Variant::Select => {
                let filter = RequestFilter {
                    status: Some(RequestStatus::PendingApproval),
                    ..Default::default()
                };
                return db::share_requests::list(&self.pool, None, &filter, None, 51)
                    .await
                    .unwrap()
                    .len();
            }
        };
        let response = self.router.clone().oneshot(get(path, Some(credential))).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .len()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Times `pages` first pages of each variant, interleaved so all see the same machine;
/// prints p50 and p99 of each and the ratios.
async fn round(target: &Target, label: &str, pages: usize) {
    let variants = [Variant::Console, Variant::Api, Variant::Select];
    let mut sizes = [0usize; 3];
    for _ in 0..WARM_UP {
        for (i, v) in variants.iter().enumerate() {
            sizes[i] = target.page(*v).await;
        }
    }
    let mut took: [Vec<Duration>; 3] = Default::default();
    for _ in 0..pages {
        for (i, v) in variants.iter().enumerate() {
            let started = Instant::now();
            target.page(*v).await;
            took[i].push(started.elapsed());
        }
    }
    let mut figures = [(Duration::ZERO, Duration::ZERO); 3];
    for (i, times) in took.iter_mut().enumerate() {
        times.sort();
        figures[i] = (percentile(times, 0.50), percentile(times, 0.99));
    }
    let [(console50, console99), (api50, api99), (select50, select99)] = figures;
    println!("{label}:");
    println!(
        "  console inbox (HTML, {} bytes): p50 {:.2} ms, p99 {:.2} ms",
        sizes[0],
        ms(console50),
        ms(console99)
    );
    println!(
        "  API list      (JSON, {} bytes): p50 {:.2} ms, p99 {:.2} ms",
        sizes[1],
        ms(api50),
        ms(api99)
    );
    println!(
        "  bare SELECT   ({} rows):        p50 {:.2} ms, p99 {:.2} ms",
        sizes[2],
        ms(select50),
        ms(select99)
    );
    println!(
        "  console / API: p50 {:.2}, p99 {:.2}; console / SELECT: p50 {:.2}, p99 {:.2}",
        console50.as_secs_f64() / api50.as_secs_f64(),
        console99.as_secs_f64() / api99.as_secs_f64(),
        console50.as_secs_f64() / select50.as_secs_f64(),
        console99.as_secs_f64() / select99.as_secs_f64(),
    );
    println!(
        "RESULT label={} console_p50_ms={:.3} console_p99_ms={:.3} api_p50_ms={:.3} api_p99_ms={:.3} select_p50_ms={:.3} select_p99_ms={:.3}",
        label.replace(' ', "_"),
        ms(console50),
        ms(console99),
        ms(api50),
        ms(api99),
        ms(select50),
        ms(select99)
    );
}

/// The plan of the inbox's page query, as Postgres runs it with these rows.
async fn plan(pool: &PgPool) {
    let lines: Vec<String> = sqlx::query_scalar(
        "explain (analyze, buffers, costs off)
         select * from share_requests r where r.status = 'pending_approval' order by r.id desc limit 51",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for line in lines {
        println!("    {line}");
    }
}

#[tokio::main]
async fn main() {
    let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let measuring = std::env::args().any(|a| a == "--bench");
    let numbers: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (requests, pages) = match (numbers.as_slice(), measuring) {
        ([requests, pages, ..], _) => (*requests, *pages),
        (_, true) => MEASURE,
        (_, false) => SMOKE,
    };
    println!(
        "console inbox: first page with {requests} requests in the database, {pages} timed pages of each{}",
        if measuring {
            ""
        } else {
            " (smoke test: `cargo bench --bench console_inbox` measures)"
        }
    );

    let (base, _) = admin.rsplit_once('/').expect("DATABASE_URL names a database");
    let url = format!("{base}/gsb_bench_{}", Uuid::new_v4().simple());
    Postgres::create_database(&url)
        .await
        .expect("Postgres answers at DATABASE_URL");
    let cli = Cli::parse_from([
        "bench",
        "--database-url",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--no-worker",
        "--instance",
        "bench",
        // Every page is timed, none refused: no per-caller or per-address budget.
        "--rate-limit-per-sec",
        "0",
        "--address-rate-limit-per-sec",
        "0",
    ]);
    let app = Application::build(&cli.serve, None).await.expect("the broker starts");
    let pool = app.pool.clone();
    let key = db::api_keys::create(&pool, "workflow", Role::Approver, &[])
        .await
        .unwrap()
        .1;

    let started = Instant::now();
    load(&pool, requests).await;
    println!(
        "loaded {requests} requests in {:.1} s ({:.0} a second)",
        started.elapsed().as_secs_f64(),
        requests as f64 / started.elapsed().as_secs_f64()
    );
    let router = app.router();
    let cookie = console_session(&router, &key).await;
    let target = Target {
        router,
        pool: pool.clone(),
        cookie,
        key,
    };
    round(&target, &format!("all {requests} pending"), pages).await;
    plan(&pool).await;

    // The same rows, the newest 99% decided: the pending ones are the oldest.
    let decided = sqlx::query(
        "update share_requests set status = 'approved', decided_by = 'workflow', decided_at = now()
         where id > (select id from share_requests order by id offset $1 limit 1)",
    )
    .bind((requests / 100) as i64)
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    // As autovacuum leaves a table whose decisions came one by one: without it, the index
    // still holds an entry for each request as it was while pending, and the page's scan
    // walks past 99,000 of them.
    sqlx::query("vacuum (analyze) share_requests")
        .execute(&pool)
        .await
        .unwrap();
    round(
        &target,
        &format!("{} pending among {requests}, the oldest", requests as u64 - decided),
        pages,
    )
    .await;
    plan(&pool).await;

    drop(target);
    app.tasks.shutdown().await;
    pool.close().await;
    Postgres::force_drop_database(&url).await.unwrap();
}
