use std::time::Duration;

use glance_share_broker::startup::Application;
use glance_share_broker::worker::Worker;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{IMAGE, PROJ_B, problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_readiness_need_no_key() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ok");
    let spec = app.client.get(app.url("/openapi.json")).send().await.unwrap();
    assert_eq!(spec.status(), StatusCode::OK);
    let docs = app.client.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(
        docs.text().await.unwrap().contains("swagger"),
        "Swagger UI is served from the binary"
    );
}

#[tokio::test]
async fn readiness_fails_when_migrations_are_missing() {
    let app = spawn_app().await;
    sqlx::query("update _sqlx_migrations set success = false")
        .execute(&app.pool)
        .await
        .unwrap();
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_request_id_is_echoed_or_made() {
    let app = spawn_app().await;
    let given = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");
    let made = app.client.get(app.url("/healthz")).send().await.unwrap();
    let made = made.headers()["x-request-id"].to_str().unwrap();
    assert!(
        made.len() == 40 && Uuid::parse_str(made.strip_prefix("req-").unwrap()).is_ok(),
        "an id of oslo's form, req-<uuid>, is made when none is sent: {made}"
    );
}

#[tokio::test]
async fn the_request_id_becomes_the_audit_correlation_id() {
    let app = spawn_app().await;
    let body = crate::helpers::request_body(IMAGE, &[PROJ_B]);
    let response = app
        .post(&app.requester, "/v1/share-requests", &body)
        .header("x-request-id", "corr-7")
        .send()
        .await
        .unwrap();
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let events = glance_share_broker::db::audit::for_request(&app.pool, id)
        .await
        .unwrap();
    assert_eq!(events[0].correlation_id.as_deref(), Some("corr-7"));
    assert_eq!(events[0].initiator["name"], "portal");
    assert_eq!(events[0].observer, "test-broker");
    let sealed = events[0].hash.clone().expect("reading the log seals it first");
    assert_eq!(Some(sealed), events[0].expected_hash());
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app().await;
    app.file(IMAGE, &[PROJ_B]).await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="POST",route="/v1/share-requests",status="201"}"#),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("db_pool_connections"), "{text}");
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_app_with(|args| {
        args.rate_limit_per_sec = 1;
        args.rate_limit_burst = 2;
    })
    .await;
    for _ in 0..2 {
        let response = app.get(&app.requester, "/v1/share-requests").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = app.get(&app.requester, "/v1/share-requests").send().await.unwrap();
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body = problem(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "urn:glance-share-broker:problem:rate-limited");

    // Another caller has its own budget, and probes are never limited.
    let response = app.get(&app.auditor, "/v1/share-requests").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for _ in 0..5 {
        let response = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn a_broker_that_stops_stops_every_background_task() {
    let url = crate::helpers::fresh_database().await;
    let app = Application::build(&crate::helpers::serve_args(&url), None)
        .await
        .unwrap();
    let pool = app.pool.clone();
    Worker::new(
        pool,
        crate::openstack::broker_cloud(),
        crate::openstack::worker_config(),
    )
    .start(&app.tasks);
    let tasks = app.tasks.clone();
    // The sealer, checkpoints, purge and the audit log's partitions of the coming months;
    // the worker's LISTEN, 4 job and 2 delivery loops, and its sweeper.
    assert_eq!(tasks.running(), 12);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the broker stops promptly")
        .unwrap()
        .unwrap();
    assert_eq!(tasks.running(), 0, "a background task outlived the broker");
}
