//! The history loader of `benches/history` (`scripts/bench.sh`, section `history`), at a
//! small size: what it loads must be a log the broker itself could have written, or the
//! figures measured on ten million events of it would say nothing.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use glance_share_broker::db;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::helpers::{fresh_database, spawn_app_at};

#[allow(
    dead_code,
    reason = "the bench reports what the load took; this test checks what it loaded"
)]
#[path = "../../benches/history/load.rs"]
mod load;

#[tokio::test]
async fn a_loaded_history_has_the_counts_asked_for_verifies_and_replays_to_the_shares_in_force() {
    let url = fresh_database().await;
    let pool = PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
    db::MIGRATOR.run(&pool).await.unwrap();

    let loaded = load::load(&pool, load::Size::of_events(2_000), 2).await.unwrap();

    assert_eq!((loaded.events, loaded.requests), (2_000, 200));
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() as u64 }
    };
    assert_eq!(count("select count(*) from audit_events").await, 2_000);
    assert_eq!(
        count("select count(*) from audit_events where chain_pos is not null").await,
        2_000,
        "every event is sealed"
    );
    assert_eq!(count("select max(chain_pos) from audit_events").await, 2_000);
    assert_eq!(count("select count(*) from share_requests").await, 200);
    assert_eq!(count("select count(*) from shares").await, loaded.shares);
    assert_eq!(count("select count(*) from approvals").await, loaded.approvals);
    assert!(loaded.shares > 200, "requests have one or more targets");
    assert_eq!(
        count("select count(*) from audit_checkpoints where chain_pos = 2000").await,
        1,
        "the head is checkpointed"
    );
    // Three years of it, in time order along the chain but for writers' overlap.
    assert!((loaded.last_event - loaded.first_event).num_days() > 2 * 365);

    // The broker's own check, as an operator runs it.
    let out = Command::new(env!("CARGO_BIN_EXE_glance-share-broker"))
        .args(["audit", "verify"])
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("2000 events read"), "{said}");

    // The rows read back as the broker's own types, in states of every kind.
    let requests = db::share_requests::list(&pool, None, &Default::default(), None, 1_000)
        .await
        .unwrap();
    let shares = db::shares::list(&pool, None, &Default::default(), None, 10_000)
        .await
        .unwrap();
    assert_eq!((requests.len(), shares.len() as u64), (200, loaded.shares));
    let statuses: BTreeSet<String> = requests.iter().map(|r| r.status.to_string()).collect();
    let states: BTreeSet<String> = shares.iter().map(|s| s.state.to_string()).collect();
    for status in ["approved", "denied"] {
        assert!(statuses.contains(status), "{statuses:?}");
    }
    for state in ["accepted", "pending_acceptance", "revoked"] {
        assert!(states.contains(state), "{states:?}");
    }

    // Who has access now, replayed from the events by the API, is who holds a share in
    // force in the tables: the events and the rows tell one story.
    let app = spawn_app_at(&url, |_| {}).await;
    let mut in_force: HashMap<Uuid, BTreeSet<String>> = HashMap::new();
    for share in &shares {
        let entry = in_force.entry(share.image_id).or_default();
        if ["pending_acceptance", "accepted", "revoking"].contains(&share.state.as_ref()) {
            entry.insert(share.project_id.clone().unwrap());
        }
    }
    for (image, projects) in in_force {
        let access = app.read(&format!("/v1/images/{image}/access")).await;
        let replayed: BTreeSet<String> = access["projects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["project_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(replayed, projects, "image {image}: {access}");
    }
    let history = app
        .read(&format!(
            "/v1/projects/{}/access-history",
            shares[0].project_id.as_ref().unwrap()
        ))
        .await;
    assert!(
        history["items"]
            .as_array()
            .is_some_and(|items| items.iter().all(|i| i["change"] != Value::Null)),
        "{history}"
    );
}
