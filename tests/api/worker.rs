//! Shares carried out against the real Keystone and Glance.

use glance_share_broker::db;
use glance_share_broker::domain::Role;
use glance_share_broker::worker::Worker;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{share_state, spawn_app};
use crate::openstack::{Rig, broker_cloud, drain, drive_until, env, worker_config};

fn share_id(request: &Value, i: usize) -> String {
    request["shares"][i]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_share_is_granted_accepted_and_revoked_in_the_real_glance() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("e2e-flow").await;
    let proj_b = env("PROJ_B_ID");
    let (alice, bob) = (rig.token("alice").await, rig.token("bob").await);

    // Filed but not approved: nothing reaches Glance.
    let body = json!({"image_id": image, "targets": [proj_b], "reason": "e2e"});
    let response = app
        .post(&app.requester, "/v1/share-requests", &body)
        .send()
        .await
        .unwrap();
    let filed: Value = response.json().await.unwrap();
    drain(&worker).await;
    assert_eq!(
        rig.glance_get(&alice, &format!("/v2/images/{image}")).await.1["visibility"],
        "private"
    );

    let response = app
        .post(
            &app.approver,
            &format!("/v1/share-requests/{}/approve", filed["id"].as_str().unwrap()),
            &json!({}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let share = share_id(&filed, 0);
    drain(&worker).await;
    assert_eq!(share_state(&app.pool, &share).await, "pending_acceptance");
    let (_, members) = rig.glance_get(&alice, &format!("/v2/images/{image}/members")).await;
    assert_eq!(members["members"][0]["member_id"], proj_b.as_str());
    assert_eq!(members["members"][0]["status"], "pending");
    assert_eq!(
        rig.glance_get(&alice, &format!("/v2/images/{image}")).await.1["visibility"],
        "shared"
    );

    // The consumer accepts through the broker, with a key for its project.
    let (_, consumer) = db::api_keys::create(
        &app.pool,
        "proj-b-portal",
        Role::Requester,
        std::slice::from_ref(&proj_b),
    )
    .await
    .unwrap();
    let response = app
        .post(&app.requester, &format!("/v1/shares/{share}/accept"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "the owner's requester is not the consumer"
    );
    let response = app
        .post(&consumer, &format!("/v1/shares/{share}/accept"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    drain(&worker).await;
    assert_eq!(share_state(&app.pool, &share).await, "accepted");
    let (_, member) = rig
        .glance_get(&alice, &format!("/v2/images/{image}/members/{proj_b}"))
        .await;
    assert_eq!(member["status"], "accepted");
    let (_, listed) = rig.glance_get(&bob, "/v2/images").await;
    assert!(
        listed["images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == image.as_str()),
        "bob's own list has it"
    );

    // Revoked: the consumer loses access and the image is private again.
    let response = app
        .post(&app.requester, &format!("/v1/shares/{share}/revoke"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "a revoke needs a reason"
    );
    let response = app
        .post(
            &app.requester,
            &format!("/v1/shares/{share}/revoke"),
            &json!({"reason": "project closed"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    drain(&worker).await;
    let view: Value = app
        .get(&app.auditor, &format!("/v1/shares/{share}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["state"], "revoked");
    assert_eq!(view["revoked_by"], "portal");
    assert_eq!(view["revoke_reason"], "project closed");
    assert_eq!(rig.glance_get(&bob, &format!("/v2/images/{image}")).await.0, 404);
    assert_eq!(
        rig.glance_get(&alice, &format!("/v2/images/{image}")).await.1["visibility"],
        "private"
    );

    let actions = app.audit_actions(filed["id"].as_str().unwrap()).await;
    assert_eq!(
        actions,
        [
            "create",
            "update/approve",
            "update/grant",
            "update/visibility",
            "allow",
            "accept",
            "accept",
            "revoke",
            "update/visibility",
            "revoke"
        ]
    );
}

#[tokio::test]
async fn targets_by_name_resolve_and_unknown_projects_fail_clearly() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("e2e-names").await;
    let unknown_id = "00000000000000000000000000000bad";
    let request = app
        .file_and_approve(
            json!({"image_id": image, "targets": ["proj-c", "no-such-project", unknown_id], "reason": "names"}),
        )
        .await;
    drain(&worker).await;

    let shares: Value = app
        .get(
            &app.auditor,
            &format!("/v1/shares?request_id={}", request["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let by_target = |t: &str| {
        shares["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["target"] == t)
            .unwrap()
            .clone()
    };
    let named = by_target("proj-c");
    assert_eq!(named["state"], "pending_acceptance");
    assert_eq!(named["project_id"], env("PROJ_C_ID").as_str());
    let missing = by_target("no-such-project");
    assert_eq!(missing["state"], "failed");
    assert!(
        missing["last_error"]
            .as_str()
            .unwrap()
            .contains("no project named `no-such-project`"),
        "{missing}"
    );
    let bad_id = by_target(unknown_id);
    assert_eq!(bad_id["state"], "failed");
    assert!(
        bad_id["last_error"].as_str().unwrap().contains("no project with id"),
        "{bad_id}"
    );

    // Glance holds exactly the one real member: no grant to nobody.
    let (_, members) = rig
        .glance_get(&rig.token("alice").await, &format!("/v2/images/{image}/members"))
        .await;
    let ids: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [env("PROJ_C_ID").as_str()]);
}

#[tokio::test]
async fn the_worker_sees_the_consumer_accept_in_glance() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("e2e-poll").await;
    let proj_b = env("PROJ_B_ID");
    let request = app
        .file_and_approve(json!({"image_id": image, "targets": [proj_b], "reason": "poll"}))
        .await;
    let share = share_id(&request, 0);
    drain(&worker).await;
    assert_eq!(share_state(&app.pool, &share).await, "pending_acceptance");

    // bob accepts with the openstack CLI's call, not through the broker.
    let bob = rig.token("bob").await;
    let status = rig
        .glance_put(
            &bob,
            &format!("/v2/images/{image}/members/{proj_b}"),
            json!({"status": "rejected"}),
        )
        .await;
    assert_eq!(status, 200);
    let id = share.clone();
    drive_until(&worker, &app.pool, "the rejection is seen", async |pool: &PgPool| {
        share_state(pool, &id).await == "rejected"
    })
    .await;
    let events = db::audit::for_request(&app.pool, request["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.action, "reject");
    assert_eq!(last.details["observed_in_glance"], true);
}

#[tokio::test]
async fn an_expired_share_is_revoked_by_the_worker() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("e2e-expiry").await;
    let proj_b = env("PROJ_B_ID");
    let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let request =
        app.file_and_approve(json!({"image_id": image, "targets": [proj_b], "reason": "short", "expires_at": expires_at, "auto_accept": true}))
            .await;
    let share = share_id(&request, 0);
    drain(&worker).await;
    assert_eq!(
        share_state(&app.pool, &share).await,
        "accepted",
        "auto_accept accepts for the consumer"
    );
    assert_eq!(worker.sweep_expired().await.unwrap(), 0, "not yet");

    let id = share.clone();
    let sweeper = worker.clone();
    drive_until(&worker, &app.pool, "the share expires", async move |pool: &PgPool| {
        sweeper.sweep_expired().await.unwrap();
        share_state(pool, &id).await == "revoked"
    })
    .await;
    let view: Value = app
        .get(&app.auditor, &format!("/v1/shares/{share}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["revoked_by"], "expiry");
    assert_eq!(
        rig.glance_get(&rig.token("bob").await, &format!("/v2/images/{image}"))
            .await
            .0,
        404
    );
    assert_eq!(
        rig.glance_get(&rig.token("alice").await, &format!("/v2/images/{image}"))
            .await
            .1["visibility"],
        "private"
    );
}
