//! What the audit hash chain costs request intake, measured in one run against the real
//! Postgres at `DATABASE_URL`:
//!
//!     DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres cargo bench --bench audit_chain
//!
//! Each intake is what `POST /v1/share-requests` writes in its transaction: the request,
//! its shares and its `create` audit event, recorded with `events::record` (an unsealed
//! event: no lock). "chained" runs the broker's sealer (`startup::spawn_audit_sealer`, every
//! 200 ms, as `serve` does) in this process against the same database while the writers
//! write, and the round ends only when every event is sealed: the sealer's whole cost is in
//! the figure. "unchained" runs no sealer. Each variant gets a fresh database; rounds
//! alternate so both see the same machine. The target: the chain costs at most 30% of
//! throughput.

use std::time::{Duration, Instant};

use glance_share_broker::db::{self, audit::NewEvent};
use glance_share_broker::domain::{Action, Initiator, Limits, NewShareRequest};
use glance_share_broker::startup::spawn_audit_sealer;
use glance_share_broker::tasks::Tasks;
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
/// `GSB_AUDIT_SEAL_MS`'s default.
const SEAL_EVERY: Duration = Duration::from_millis(200);

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
async fn intake(pool: &PgPool, initiator: &Initiator) {
    let new = new_request();
    let mut tx = pool.begin().await.unwrap();
    let filer = db::share_requests::Filer {
        requested_by: "portal",
        subject: "key:portal",
        on_behalf_of: None,
        target_domains: None,
        image_owner: None,
    };
    let (request, _) = db::share_requests::insert(&mut tx, &new, filer).await.unwrap();
    let targets: Vec<&str> = new.targets.iter().map(|t| t.as_str()).collect();
    let event = NewEvent {
        reason: Some(&request.reason),
        correlation_id: Some("bench"),
        details: json!({ "targets": targets, "expires_at": request.expires_at, "auto_accept": request.auto_accept }),
        ..NewEvent::about_request(initiator, &request, Action::Create)
    };
    glance_share_broker::events::record(&mut tx, "bench", event)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// Runs `intakes` with `writers` at once, with the sealer running for "chained"; returns
/// how long they took, sealing included.
async fn round(pool: &PgPool, variant: Variant, intakes: usize, writers: usize) -> Duration {
    let started = Instant::now();
    let sealer = (variant == Variant::Chained).then(|| {
        let sealer = Tasks::new();
        spawn_audit_sealer(&sealer, pool.clone(), SEAL_EVERY);
        sealer
    });
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let initiator = Initiator::service("bench");
                for _ in 0..intakes / writers {
                    intake(&pool, &initiator).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    if let Some(sealer) = sealer {
        sealer.shutdown().await;
        // What the sealer had not reached yet is sealed now, on the clock.
        assert!(db::audit::seal_all(pool).await.unwrap());
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
        // Warm both up (connections, caches) before measuring.
        round(&chained_db, Variant::Chained, per_round, writers).await;
        round(&unchained_db, Variant::Unchained, per_round, writers).await;
        let (mut chained, mut unchained) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..rounds {
            chained += round(&chained_db, Variant::Chained, per_round, writers).await;
            unchained += round(&unchained_db, Variant::Unchained, per_round, writers).await;
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
        assert_eq!(
            report.events_checked as usize,
            per_round * (rounds + 1),
            "every event sealed"
        );
        for (name, pool) in [(chained_name, chained_db), (unchained_name, unchained_db)] {
            pool.close().await;
            admin_sql(&admin, &format!("drop database {name} with (force)")).await;
        }
    }
}
