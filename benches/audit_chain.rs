//! What the audit hash chain costs request intake, measured in one run against the real
//! Postgres at `DATABASE_URL`:
//!
//!     DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench audit_chain
//!
//! Each intake is what `POST /v1/share-requests` writes in its transaction: the request,
//! its shares and its `create` audit event. "chained" appends the event with
//! `db::audit::record` (SHA-256 of its canonical JSON, then `audit_append`: the chain lock,
//! the tail and the link hash); "unchained" inserts the same row straight into
//! `audit_events`, with no digest, no lock and no hash of the event before. Each variant gets a fresh
//! database; rounds alternate so both see the same machine. The target: the chain costs at
//! most 30% of throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use glance_share_broker::db::{self, audit::NewEvent};
use glance_share_broker::domain::{Initiator, Limits, NewShareRequest};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

/// Intakes a round and rounds a variant when measuring (`cargo bench` passes `--bench`);
/// `cargo test --all-targets` runs a smoke test of a few intakes instead.
const MEASURE: (usize, usize) = (1000, 3);
const SMOKE: (usize, usize) = (20, 1);
/// One writer, and as many as the broker's default pool has connections.
const CONCURRENCY: [usize; 2] = [1, 10];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Chained,
    Unchained,
}

/// Runs `sql` on the server's administrative database.
async fn admin_sql(admin: &str, sql: &str) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(admin)
        .await
        .expect("Postgres answers at DATABASE_URL");
    sqlx::query(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

/// A new, migrated database: its name and a pool the size of the broker's default.
async fn fresh_database(admin: &str) -> (String, PgPool) {
    let name = format!("gsb_bench_{}", Uuid::new_v4().simple());
    admin_sql(admin, &format!("create database {name}")).await;
    let (base, _) = admin.rsplit_once('/').expect("DATABASE_URL names a database");
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect(&format!("{base}/{name}"))
        .await
        .unwrap();
    db::MIGRATOR.run(&pool).await.unwrap();
    (name, pool)
}

fn new_request() -> NewShareRequest {
    let input = serde_json::from_value(json!({
        "image_id": Uuid::new_v4().to_string(),
        "targets": ["2f0c6b8a9d3e4c1f8a7b6c5d4e3f2a1b", "proj-c"],
        "reason": "CI runners need the golden image",
    }))
    .unwrap();
    let limits = Limits {
        max_targets: 128,
        default_region: "RegionOne".into(),
    };
    NewShareRequest::parse(input, &limits, chrono::Utc::now()).unwrap()
}

/// One intake: the request, its shares and its event, in one transaction.
async fn intake(pool: &PgPool, variant: Variant, initiator: &Initiator, seq: &AtomicI64) {
    let new = new_request();
    let mut tx = pool.begin().await.unwrap();
    let filer = db::share_requests::Filer {
        requested_by: "portal",
        on_behalf_of: None,
        image_owner: None,
    };
    let (request, _) = db::share_requests::insert(&mut tx, &new, filer).await.unwrap();
    let targets: Vec<&str> = new.targets.iter().map(|t| t.as_str()).collect();
    let event = NewEvent {
        reason: Some(&request.reason),
        correlation_id: Some("bench"),
        details: json!({ "targets": targets, "expires_at": request.expires_at, "auto_accept": request.auto_accept }),
        ..NewEvent::about_request(initiator, &request, "create")
    };
    match variant {
        Variant::Chained => {
            db::audit::record(&mut tx, "bench", event).await.unwrap();
        }
        Variant::Unchained => {
            let random: [u8; 32] = rand::random();
            sqlx::query(
                "insert into audit_events (seq, id, occurred_at, action, outcome, initiator, target, observer,
                    request_id, share_id, image_id, project_id, reason, correlation_id, details, prev_hash, hash)
                 values ($1, $2, now(), $3, $4, $5, $6, 'bench', $7, null, $8, null, $9, $10, $11, $12, $13)",
            )
            .bind(seq.fetch_add(1, Ordering::Relaxed))
            .bind(Uuid::now_v7())
            .bind(event.action)
            .bind(event.outcome)
            .bind(serde_json::to_value(initiator).unwrap())
            .bind(json!({ "image_id": request.image_id, "region": request.region, "request_id": request.id }))
            .bind(request.id)
            .bind(request.image_id)
            .bind(event.reason)
            .bind(event.correlation_id)
            .bind(&event.details)
            .bind(&[0u8; 32][..])
            .bind(&random[..])
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
}

/// Runs `intakes` with `writers` at once; returns how long they took.
async fn round(pool: &PgPool, variant: Variant, intakes: usize, writers: usize, seq: &Arc<AtomicI64>) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (pool, seq) = (pool.clone(), seq.clone());
            tokio::spawn(async move {
                let initiator = Initiator::service("bench");
                for _ in 0..intakes / writers {
                    intake(&pool, variant, &initiator, &seq).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let admin = std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let measuring = std::env::args().any(|a| a == "--bench");
    let (per_round, rounds) = if measuring { MEASURE } else { SMOKE };
    println!(
        "audit chain cost{}: {per_round} intakes a round, {rounds} rounds a variant, alternating",
        if measuring {
            ""
        } else {
            " (smoke test: run `cargo bench --bench audit_chain` to measure)"
        }
    );
    for writers in CONCURRENCY {
        let ((chained_name, chained_db), (unchained_name, unchained_db)) =
            (fresh_database(&admin).await, fresh_database(&admin).await);
        let seq = Arc::new(AtomicI64::new(1));
        // Warm both up (connections, caches) before measuring.
        round(&chained_db, Variant::Chained, per_round, writers, &seq).await;
        round(&unchained_db, Variant::Unchained, per_round, writers, &seq).await;
        let (mut chained, mut unchained) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            chained += round(&chained_db, Variant::Chained, per_round, writers, &seq).await;
            unchained += round(&unchained_db, Variant::Unchained, per_round, writers, &seq).await;
        }
        let per_sec = |took: Duration| (per_round * rounds) as f64 / took.as_secs_f64();
        let (with, without) = (per_sec(chained), per_sec(unchained));
        let cost = 100.0 * (1.0 - with / without);
        println!(
            "{writers:>2} writer(s): without the chain {without:>7.0} intakes/s, with it {with:>7.0} intakes/s; \
             ratio {:.2}, the chain costs {cost:.1}% of throughput (target: at most 30%)",
            with / without
        );
        let report = db::audit::verify(&chained_db, "bench").await.unwrap();
        assert!(report.ok, "the chained log verifies");
        for (name, pool) in [(chained_name, chained_db), (unchained_name, unchained_db)] {
            pool.close().await;
            admin_sql(&admin, &format!("drop database {name}")).await;
        }
    }
}
