//! Scheduled revokes and expiry notices racing each other and several workers: every move
//! is a guarded transition, so each race has one winner and one audit trail.

use glance_share_broker::worker::{Worker, WorkerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{problem, share_state, spawn_app_with_cloud};
use crate::impact::{accepted_share, broker, revoke, share_events};
use crate::openstack::{Rig, broker_cloud, drive_until, until_share_state, worker_config};

#[tokio::test]
async fn a_scheduled_revoke_races_a_person_the_expiry_a_cancellation_and_a_second_worker() {
    let (app, worker, rig) = broker().await;
    let other = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let soon = || (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let schedule = async |share: &str, at: String| {
        let response = revoke(
            &app,
            &app.requester,
            share,
            json!({"reason": "later", "effective_at": at}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    };
    let wait_until_due = || tokio::time::sleep(std::time::Duration::from_millis(2100));

    // Two workers fire one due revoke: it is started once.
    let image = rig.private_image("impact-race-workers").await;
    let share = accepted_share(&app, &worker, &image, None).await;
    schedule(&share, soon()).await;
    wait_until_due().await;
    let (a, b) = tokio::join!(worker.sweep_expired(), other.sweep_expired());
    assert_eq!(a.unwrap() + b.unwrap(), 1, "one start between them");
    let pending = share_events(&app.pool, &share)
        .await
        .into_iter()
        .filter(|(a, o, d)| a == "revoke" && o == "pending" && d["scheduled"] != true)
        .count();
    assert_eq!(pending, 1);
    until_share_state(&worker, &app.pool, &share, "revoked").await;

    // A person revokes now (forced) before it is due: theirs wins; the schedule finds nothing.
    let image = rig.private_image("impact-race-person").await;
    let share = accepted_share(&app, &worker, &image, None).await;
    schedule(&share, soon()).await;
    let response = revoke(&app, &app.requester, &share, json!({"reason": "now", "force": true})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_until_due().await;
    worker.sweep_expired().await.unwrap();
    until_share_state(&worker, &app.pool, &share, "revoked").await;
    let view: Value = app.read(&format!("/v1/shares/{share}")).await;
    assert_eq!(view["revoke_reason"], "now");

    // Due and started by the sweep: a cancellation comes too late.
    let image = rig.private_image("impact-race-cancel").await;
    let share = accepted_share(&app, &worker, &image, None).await;
    schedule(&share, soon()).await;
    wait_until_due().await;
    worker.sweep_expired().await.unwrap();
    let response = app
        .client
        .delete(app.url(&format!("/v1/shares/{share}/revocation")))
        .bearer_auth(&app.requester)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::CONFLICT).await;
    until_share_state(&worker, &app.pool, &share, "revoked").await;

    // The share expires before its scheduled revoke: the expiry revokes it.
    let image = rig.private_image("impact-race-expiry").await;
    let expires = (chrono::Utc::now() + chrono::Duration::seconds(8)).to_rfc3339();
    let share = accepted_share(&app, &worker, &image, Some(expires)).await;
    schedule(&share, (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339()).await;
    let id = share.clone();
    let sweeper = worker.clone();
    drive_until(&worker, &app.pool, "the share expires", async move |pool: &PgPool| {
        sweeper.sweep_expired().await.unwrap();
        share_state(pool, &id).await == "revoked"
    })
    .await;
    let view: Value = app.read(&format!("/v1/shares/{share}")).await;
    assert_eq!(view["revoked_by"], "expiry");
}

#[tokio::test]
async fn an_expiry_is_announced_once_ahead_whatever_the_number_of_sweeps() {
    let app = spawn_app_with_cloud(Some(broker_cloud()), |_| {}).await;
    let config = WorkerConfig {
        expiry_notice: std::time::Duration::from_secs(3600),
        ..worker_config()
    };
    let worker = Worker::new(app.pool.clone(), broker_cloud(), config.clone());
    let other = Worker::new(app.pool.clone(), broker_cloud(), config);
    let rig = Rig::from_env();
    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": ["share.expiring"]});
    assert_eq!(
        app.post(&app.admin, "/v1/webhooks", &hook)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let far = (chrono::Utc::now() + chrono::Duration::hours(5)).to_rfc3339();
    let later = rig.private_image("impact-notice-later").await;
    let later = accepted_share(&app, &worker, &later, Some(far)).await;
    let near = (chrono::Utc::now() + chrono::Duration::minutes(30)).to_rfc3339();
    let image = rig.private_image("impact-notice").await;
    let share = accepted_share(&app, &worker, &image, Some(near)).await;

    for _ in 0..3 {
        let (a, b) = tokio::join!(worker.sweep_expired(), other.sweep_expired());
        a.unwrap();
        b.unwrap();
    }
    let notices = |share: String| {
        let pool = app.pool.clone();
        async move {
            share_events(&pool, &share)
                .await
                .into_iter()
                .filter(|(a, o, d)| a == "update/expire" && o == "pending" && d["notice"] == true)
                .count()
        }
    };
    assert_eq!(notices(share.clone()).await, 1, "once");
    assert_eq!(notices(later).await, 0, "not yet: it expires in 5 hours");
    let announced: Vec<String> =
        sqlx::query_scalar("select event from webhook_deliveries where event = 'share.expiring'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(announced.len(), 1);
    assert_eq!(share_state(&app.pool, &share).await, "accepted", "notice only");
}
