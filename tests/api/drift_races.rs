//! Reconciliation racing the broker's own work and itself, against the real Glance: a revoke
//! of the same share wins, a grant in flight keeps its member, two reconcilers record one
//! finding; and `glance-share-broker reconcile` from the command line.

use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::drift::{
    active_image, add_member, call, drift_worker, findings, glance, granted, kinds, patch_image, reconcile,
    reconcile_only,
};
use crate::helpers::{TestApp, spawn_app};
use crate::openstack::{Rig, drain, env};

async fn revoke(app: &TestApp, share: &str) {
    let response = app
        .post(
            &app.requester,
            &format!("/v1/shares/{share}/revoke"),
            // The test broker has no Nova or Cinder to ask what depends on the image.
            &json!({"reason": "done", "force": true}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{:?}", response.text().await);
}

#[tokio::test]
async fn a_reconcile_racing_a_revoke_of_the_same_share_leaves_the_revoke_to_win() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = drift_worker(&app, true, &[]);
    let image = active_image(&rig, "drift-race-revoke").await;
    let share = granted(&app, &worker, &image, &env("PROJ_B_ID")).await;
    // The revoke is asked for, its job queued; the reconciliation runs before it (reconcile
    // only), sees the member of a share being revoked, and the member removed outside too.
    revoke(&app, &share).await;
    reconcile_only(&worker, &image).await;
    assert!(
        findings(&app, &image, "").await.is_empty(),
        "a revoke under way is no drift"
    );
    assert_eq!(app.share_state(&share).await, "revoking");
    let member = glance(&format!("/v2/images/{image}/members/{}", env("PROJ_B_ID")));
    assert_eq!(call(&rig, "alice", Method::DELETE, &member, None).await.0, 204);
    reconcile_only(&worker, &image).await;
    assert_eq!(
        app.share_state(&share).await,
        "revoking",
        "not removed_outside: the revoke wins"
    );
    assert!(findings(&app, &image, "").await.is_empty());
    drain(&worker).await;
    crate::openstack::until_share_state(&worker, &app.pool, &share, "revoked").await;
    reconcile(&worker, &image).await;
    assert!(findings(&app, &image, "").await.is_empty(), "revoked, and gone: agreed");
}

#[tokio::test]
async fn the_member_of_a_grant_in_flight_is_never_removed_as_unmanaged() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = drift_worker(&app, true, &[]);
    let image = active_image(&rig, "drift-race-grant").await;
    let b = env("PROJ_B_ID");
    let body = json!({"image_id": image, "targets": [b], "reason": "in flight"});
    let request = app.file_and_approve(body, Some(&worker)).await;
    let share = request["shares"][0]["id"].as_str().unwrap().to_owned();
    // As if a grant had added the member and its worker stopped before recording it.
    let image_url = glance(&format!("/v2/images/{image}"));
    let shared = json!([{"op": "replace", "path": "/visibility", "value": "shared"}]);
    patch_image(&rig, &image, shared).await;
    let members = format!("{image_url}/members");
    add_member(&rig, &image, &b).await;
    sqlx::query("update shares set state = 'granting' where id = $1::uuid")
        .bind(&share)
        .execute(&app.pool)
        .await
        .unwrap();
    reconcile_only(&worker, &image).await;
    let member = call(&rig, "admin", Method::GET, &format!("{members}/{b}"), None).await;
    assert_eq!(member.0, 200, "the grant's member stays");
    assert!(findings(&app, &image, "").await.is_empty());
    drain(&worker).await;
    assert_eq!(
        app.share_state(&share).await,
        "pending_acceptance",
        "the grant completes"
    );
}

#[tokio::test]
async fn two_reconcilers_at_once_record_one_finding() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let (one, two) = (drift_worker(&app, false, &[]), drift_worker(&app, false, &[]));
    let image = active_image(&rig, "drift-race-two").await;
    granted(&app, &one, &image, &env("PROJ_B_ID")).await;
    let c = env("PROJ_C_ID");
    add_member(&rig, &image, &c).await;
    let id = image.parse().unwrap();
    let (a, b) = tokio::join!(one.queue_reconciles(Some(id)), two.queue_reconciles(Some(id)));
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1, "queued once");
    let (a, b) = tokio::join!(one.run_once(), two.run_once());
    a.unwrap();
    b.unwrap();
    drain(&one).await;
    // And two passes one after the other, from two replicas.
    reconcile(&one, &image).await;
    reconcile(&two, &image).await;
    let found = findings(&app, &image, "").await;
    assert_eq!(kinds(&found), [(String::from("unmanaged_member"), Some(c))]);
    let opened: i64 = sqlx::query_scalar("select count(*) from audit_events where action = 'evaluate/drift'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(opened, 1);
}

#[tokio::test]
async fn the_reconcile_command_prints_the_findings_of_one_pass() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = drift_worker(&app, false, &[]);
    let image = active_image(&rig, "drift-cli").await;
    granted(&app, &worker, &image, &env("PROJ_B_ID")).await;
    let c = env("PROJ_C_ID");
    add_member(&rig, &image, &c).await;
    let out = Command::new(env!("CARGO_BIN_EXE_glance-share-broker"))
        .args(["reconcile", "--image-id", &image])
        .env("DATABASE_URL", &app.database_url)
        .env("OS_CLOUD", "admin")
        .env("GSB_LOG_FORMAT", "text")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(kinds(&printed), [(String::from("unmanaged_member"), Some(c))]);
    assert!(stderr.contains("1 reconciliations run, 1 open findings"), "{stderr}");
    let unsealed: Vec<String> =
        sqlx::query_scalar("select action from audit_events where chain_pos is null and action = 'evaluate/drift'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(
        unsealed.is_empty(),
        "the pass's events are sealed before the command ends: {unsealed:?}"
    );
}
