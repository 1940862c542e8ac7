//! The CADF export loaded by pycadf: every event real flows write (a share granted, accepted
//! and revoked in the real Glance; refusals; webhooks registered, changed and removed; API
//! keys made and revoked; the approval policy loaded and refused; a share failed by the fake
//! Glance) is a valid CADF event.

use glance_share_broker::db;
use glance_share_broker::domain::Role;
use glance_share_broker::startup::{PolicySource, audit_policy};
use glance_share_broker::worker::Worker;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::faults::{approve_one, setup, until_state};
use crate::helpers::{TestApp, request_body, spawn_app};
use crate::openstack::{Rig, broker_cloud, env, until_share_state, worker_config};
use crate::pytools;

/// The whole audit log as CADF, checked by tests/py/cadf_check.py; its summary.
async fn export_is_valid_cadf(app: &TestApp) -> Value {
    let response = app
        .get(&app.auditor, "/v1/audit-events?format=cadf")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.bytes().await.unwrap();
    let summary = pytools::check("cadf_check.py", &[], &body).await;
    serde_json::from_str(&summary).unwrap()
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> StatusCode {
    app.post(key, path, &body).send().await.unwrap().status()
}

#[tokio::test]
async fn every_event_of_real_flows_is_a_valid_cadf_event_for_pycadf() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let proj_b = env("PROJ_B_ID");

    // The approval policy loaded, and a bad file refused.
    let dir = std::env::temp_dir().join(format!("gsb-cadf-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.yaml");
    std::fs::write(&path, "rules:\n  - {name: nobody, decision: deny}\n").unwrap();
    let source = PolicySource::load(&path).unwrap();
    audit_policy(&app.pool, "test-broker", "start", &path, Ok(&source.loaded)).await;
    let bad = anyhow::anyhow!("rules[0].approvals: not allowed");
    audit_policy(&app.pool, "test-broker", "reload", &path, Err(&bad)).await;
    std::fs::remove_dir_all(&dir).unwrap();

    // A share granted, accepted and revoked in the real Glance.
    let image = rig.private_image("cadf").await;
    let body = request_body(&image, &[&proj_b]);
    let approved = app.file_and_approve(body, Some(&worker)).await;
    let share = approved["shares"][0]["id"].as_str().unwrap().to_owned();
    until_share_state(&worker, &app.pool, &share, "pending_acceptance").await;
    let (_, consumer) = db::api_keys::create(
        &app.pool,
        "proj-b-portal",
        Role::Requester,
        std::slice::from_ref(&proj_b),
    )
    .await
    .unwrap();
    let accept = format!("/v1/shares/{share}/accept");
    assert_eq!(
        post(&app, &app.requester, &accept, json!({})).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(post(&app, &consumer, &accept, json!({})).await, StatusCode::ACCEPTED);
    until_share_state(&worker, &app.pool, &share, "accepted").await;
    let revoke = format!("/v1/shares/{share}/revoke");
    assert_eq!(
        post(&app, &app.requester, &revoke, json!({"reason": "done", "force": true})).await,
        StatusCode::ACCEPTED
    );
    until_share_state(&worker, &app.pool, &share, "revoked").await;

    // Refusals: an approval by a requester, a decision on a decided request; a denial and a
    // cancellation.
    let filed = app.file(&uuid::Uuid::new_v4().to_string(), &[&proj_b]).await;
    let id = filed["id"].as_str().unwrap();
    let approve = format!("/v1/share-requests/{id}/approve");
    assert_eq!(
        post(&app, &app.requester, &approve, json!({})).await,
        StatusCode::FORBIDDEN
    );
    let deny = format!("/v1/share-requests/{id}/deny");
    assert_eq!(
        post(&app, &app.approver, &deny, json!({"comment": "no"})).await,
        StatusCode::OK
    );
    assert_eq!(
        post(&app, &app.approver, &approve, json!({})).await,
        StatusCode::CONFLICT
    );
    let other = app.file(&uuid::Uuid::new_v4().to_string(), &[&proj_b]).await;
    let cancel = format!("/v1/share-requests/{}/cancel", other["id"].as_str().unwrap());
    assert_eq!(post(&app, &app.requester, &cancel, json!({})).await, StatusCode::OK);

    // Webhooks registered, changed and removed; a registration refused.
    let hook = json!({"url": "https://hooks.example.com/gsb", "events": ["share.granted"]});
    assert_eq!(
        post(&app, &app.requester, "/v1/webhooks", hook.clone()).await,
        StatusCode::FORBIDDEN
    );
    let created: Value = app
        .post(&app.admin, "/v1/webhooks", &hook)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook_path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    let changed = app
        .client
        .patch(app.url(&hook_path))
        .bearer_auth(&app.admin)
        .json(&json!({"active": false}));
    assert_eq!(changed.send().await.unwrap().status(), StatusCode::OK);
    let removed = app.client.delete(app.url(&hook_path)).bearer_auth(&app.admin);
    assert!(removed.send().await.unwrap().status().is_success());

    // An API key revoked (the app's four keys were made at its start).
    assert!(db::api_keys::revoke(&app.pool, "proj-b-portal").await.unwrap());

    let summary = export_is_valid_cadf(&app).await;
    assert!(
        summary["valid"] == summary["events"] && summary["events"].as_i64().unwrap() >= 25,
        "{summary}"
    );
    let actions: Vec<String> = sqlx::query_scalar("select distinct action from audit_events order by 1")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    for action in [
        "create",
        "update/validate",
        "update/approve",
        "update/deny",
        "update/cancel",
        "update/grant",
        "allow",
        "accept",
        "revoke",
        "create/key",
        "delete/key",
        "update/policy",
        "create/webhook",
        "update/webhook",
        "delete/webhook",
    ] {
        assert!(
            actions.contains(&action.to_owned()),
            "no {action} event among {actions:?}"
        );
    }
}

#[tokio::test]
async fn events_of_shares_the_fake_glance_fails_are_valid_cadf_events_too() {
    let s = setup("shared").await;
    s.fake.inject(
        Method::POST,
        "add_member",
        [crate::fake_glance::Fault::Status(503, None)],
    );
    s.fake.set_quota(0);
    let id = approve_one(&s).await;
    let view = until_state(&s, &id, "failed").await;
    assert!(view["last_error"].is_string(), "{view}");
    let outcomes: Vec<String> = sqlx::query_scalar("select outcome from audit_events where share_id = $1::uuid")
        .bind(&id)
        .fetch_all(&s.app.pool)
        .await
        .unwrap();
    assert!(outcomes.iter().any(|o| o == "failure"), "{outcomes:?}");
    let summary = export_is_valid_cadf(&s.app).await;
    assert_eq!(summary["valid"], summary["events"], "{summary}");
}
