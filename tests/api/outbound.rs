//! How the worker spends Glance calls: the grants of one image are carried out in one pass
//! (the image read and made shared once, members added one after another), and every call
//! takes a slot under the outbound rate limit that all replicas share.

use std::time::Duration;

use glance_share_broker::db;
use glance_share_broker::worker::{Outcome, Worker, WorkerConfig};
use reqwest::Method;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::fake_glance::{FakeGlance, Fault};
use crate::helpers::{TestApp, share_state, spawn_app};
use crate::openstack::{broker_cloud_with_glance, drive_until, env, worker_config};

/// Files and approves a share of a new fake image (owned by proj-a, `visibility`) to
/// proj-b, proj-c and proj-d; returns the share ids.
async fn approve_three(app: &TestApp, fake: &FakeGlance, worker: &Worker, visibility: &str) -> (String, Vec<String>) {
    let image = Uuid::new_v4().to_string();
    fake.add_image(&image, &env("PROJ_A_ID"), visibility);
    let targets = [env("PROJ_B_ID"), env("PROJ_C_ID"), env("PROJ_D_ID")];
    let body = json!({"image_id": image, "targets": targets, "reason": "batch"});
    let approved = app.file_and_approve(body, Some(worker)).await;
    let ids = approved["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    (image, ids)
}

fn worker_with(app: &TestApp, url: &str, config: WorkerConfig) -> Worker {
    Worker::new(
        app.pool.clone(),
        broker_cloud_with_glance(url, Duration::from_secs(5)),
        config,
    )
}

#[tokio::test]
async fn the_grants_of_one_image_are_carried_out_in_one_pass() {
    let app = spawn_app().await;
    let (fake, url) = FakeGlance::start().await;
    let worker = worker_with(&app, &url, worker_config());
    let (image, shares) = approve_three(&app, &fake, &worker, "private").await;
    assert_eq!(fake.calls(Method::GET, "get_image"), 1, "validation read the image");

    assert_eq!(worker.run_once().await.unwrap(), Outcome::Ran);
    for id in &shares {
        assert_eq!(share_state(&app.pool, id).await, "pending_acceptance");
    }
    assert_eq!(fake.calls(Method::GET, "get_image"), 2, "one read for the three grants");
    assert_eq!(fake.calls(Method::PATCH, "patch_image"), 1, "made shared once");
    assert_eq!(fake.calls(Method::POST, "add_member"), 3);
    assert_eq!(fake.visibility(&image), "shared");
    let request_id: Uuid = sqlx::query_scalar("select request_id from shares where id = $1::uuid")
        .bind(&shares[0])
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let actions = app.audit_actions(&request_id.to_string()).await;
    let count = |action: &str| actions.iter().filter(|a| *a == action).count();
    assert_eq!(
        (count("update/grant"), count("allow"), count("update/visibility")),
        (3, 3, 1),
        "{actions:?}"
    );
}

#[tokio::test]
async fn a_batch_leaves_the_rest_for_the_retry_when_glance_struggles() {
    let app = spawn_app().await;
    let (fake, url) = FakeGlance::start().await;
    let worker = worker_with(&app, &url, worker_config());
    let (_, shares) = approve_three(&app, &fake, &worker, "shared").await;
    // The first add gets a 503: the two others wait for the retry too, untried.
    fake.inject(Method::POST, "add_member", [Fault::Status(503, None)]);
    assert_eq!(worker.run_once().await.unwrap(), Outcome::Ran);
    let states = [
        share_state(&app.pool, &shares[0]).await,
        share_state(&app.pool, &shares[1]).await,
        share_state(&app.pool, &shares[2]).await,
    ];
    assert_eq!(states, ["granting", "granting", "granting"]);
    assert_eq!(fake.calls(Method::POST, "add_member"), 1, "nothing more after the 503");

    drive_until(
        &worker,
        &app.pool,
        "every share is granted",
        async |pool: &sqlx::PgPool| {
            let mut all = true;
            for id in &shares {
                all &= share_state(pool, id).await == "pending_acceptance";
            }
            all
        },
    )
    .await;
    assert_eq!(fake.calls(Method::POST, "add_member"), 4);
}

#[tokio::test]
async fn replicas_sharing_the_rate_limit_get_slots_spaced_by_the_interval() {
    let app = spawn_app().await;
    let replica = PgPoolOptions::new()
        .max_connections(5)
        .connect(&app.database_url)
        .await
        .unwrap();
    let interval = Duration::from_millis(20);
    let reserve = |pool: sqlx::PgPool| async move {
        let mut slots = Vec::new();
        for _ in 0..10 {
            slots.push(db::rate_slots::reserve(&pool, "cloud", interval).await.unwrap().at);
        }
        slots
    };
    let (a, b) = tokio::join!(reserve(app.pool.clone()), reserve(replica));
    let mut slots: Vec<_> = a.into_iter().chain(b).collect();
    slots.sort();
    for pair in slots.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::from_std(interval).unwrap(),
            "slots {} and {} are closer than the interval",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(db::rate_slots::reserved(&app.pool, "cloud").await.unwrap(), 20);
    assert_eq!(db::rate_slots::reserved(&app.pool, "another cloud").await.unwrap(), 0);
}

#[tokio::test]
async fn every_glance_call_of_the_worker_takes_a_slot_and_keystone_calls_none() {
    let app = spawn_app().await;
    let (fake, url) = FakeGlance::start().await;
    let cloud = broker_cloud_with_glance(&url, Duration::from_secs(5));
    let key = cloud.cloud_key();
    let limited = WorkerConfig {
        glance_rate_limit: 50,
        ..worker_config()
    };
    let worker = Worker::new(app.pool.clone(), cloud, limited);
    let (_, shares) = approve_three(&app, &fake, &worker, "private").await;
    drive_until(
        &worker,
        &app.pool,
        "every share is granted",
        async |pool: &sqlx::PgPool| share_state(pool, &shares[2]).await == "pending_acceptance",
    )
    .await;
    let calls = fake.total_calls();
    assert!(calls >= 6, "validation and grants called Glance: {calls}");
    let reserved = db::rate_slots::reserved(&app.pool, &key).await.unwrap();
    assert_eq!(reserved, i64::try_from(calls).unwrap());
}
