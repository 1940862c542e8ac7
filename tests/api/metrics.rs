//! `/metrics` read by prometheus_client's parser after real work (a share granted in the real
//! Glance, a webhook delivered, the audit chain verified): every family described, labels
//! bounded; the shipped alert rules pass `promtool check rules`, and every metric the rules
//! and the Grafana dashboard name is exported.

use std::path::PathBuf;

use axum::http::StatusCode as AxumStatus;
use axum::routing::post;
use glance_share_broker::worker::{Outcome, Worker};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, request_body, spawn_app};
use crate::openstack::{Rig, broker_cloud, env, until_share_state, worker_config};
use crate::pytools;

fn shipped(path: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

/// A receiver that takes every delivery.
async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/hook", post(|| async { AxumStatus::NO_CONTENT }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn scrape(app: &TestApp) -> String {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

#[tokio::test]
async fn metrics_after_real_work_parse_with_help_and_bounded_labels_and_cover_the_alerts_and_dashboard() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let hook = json!({"url": receiver().await});
    assert_eq!(
        app.post(&app.admin, "/v1/webhooks", &hook)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );

    let image = rig.private_image("metrics").await;
    let approved = app
        .file_and_approve(request_body(&image, &[&env("PROJ_B_ID")]), Some(&worker))
        .await;
    until_share_state(
        &worker,
        &app.pool,
        approved["shares"][0]["id"].as_str().unwrap(),
        "pending_acceptance",
    )
    .await;
    while worker.deliver_once().await.unwrap() == Outcome::Ran {}
    let verify: Value = app.read("/v1/audit-events/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
    // A method no route knows: counted as `other`, never as itself.
    let odd = Method::from_bytes(b"BREW").unwrap();
    app.client.request(odd, app.url("/healthz")).send().await.unwrap();

    let text = scrape(&app).await;
    let rules = shipped("docs/prometheus/alerts.yml");
    let out = pytools::check(
        "metrics_check.py",
        &[&rules, &shipped("docs/grafana/dashboard.json")],
        text.as_bytes(),
    )
    .await;
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert!(summary["families"].as_u64().unwrap() >= 20, "{summary}");
    assert!(!text.contains("BREW"), "the method label is bounded");
    assert!(text.contains(r#"method="other""#));
    for series in [
        r#"gsb_shares{state="pending_acceptance"}"#,
        r#"gsb_shares{state="revoked"}"#,
        r#"gsb_jobs_due{kind="grant"}"#,
        "gsb_jobs_oldest_due_age_seconds ",
        "gsb_audit_unsealed_events ",
        "gsb_audit_chain_head_position ",
        "gsb_audit_verify_ok 1",
        "gsb_grant_latency_seconds_count",
        r#"gsb_openstack_request_duration_seconds_count{service="glance",method="POST",outcome="2xx"}"#,
        r#"gsb_openstack_request_duration_seconds_count{service="keystone""#,
        r#"gsb_webhook_deliveries_total{result="delivered"}"#,
        "gsb_webhook_delivery_lag_seconds_count",
        "gsb_webhook_oldest_pending_age_seconds ",
    ] {
        assert!(text.contains(series), "no {series} in:\n{text}");
    }

    let promtool = std::env::var("PROMTOOL")
        .expect("PROMTOOL is not set: run the tests through scripts/test.sh, or `. scripts/lib.sh && ensure_promtool`");
    let checked = tokio::process::Command::new(&promtool)
        .args(["check", "rules", &rules])
        .output()
        .await
        .unwrap();
    assert!(
        checked.status.success(),
        "promtool check rules:\n{}",
        String::from_utf8_lossy(&checked.stdout)
    );
}
