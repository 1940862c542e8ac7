//! Shares carried out against the real Keystone and Glance.

use std::time::Duration;

use glance_share_broker::db;
use glance_share_broker::domain::Role;
use glance_share_broker::worker::{Worker, WorkerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{share_state, spawn_app};
use crate::openstack::{Rig, broker_cloud, drain, drive_until, env, until_share_state, worker_config};

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
    assert_eq!(filed["validation"]["state"], "pending");
    drain(&worker).await;
    assert_eq!(
        rig.glance_get(&alice, &format!("/v2/images/{image}")).await.1["visibility"],
        "private"
    );

    // Validated before anyone decides: the approver sees the image and the project.
    let validated = app.validated(filed["id"].as_str().unwrap(), None).await;
    assert_eq!(validated["validation"]["state"], "passed", "{validated}");
    let facts = &validated["validation"]["image"];
    assert_eq!(facts["name"], "e2e-flow");
    assert_eq!(facts["owner"], env("PROJ_A_ID").as_str());
    assert_eq!(facts["visibility"], "private");
    assert_eq!(facts["owner_domain"], "default");
    assert_eq!(validated["shares"][0]["project_name"], "proj-b");

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
    until_share_state(&worker, &app.pool, &share, "pending_acceptance").await;
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
    until_share_state(&worker, &app.pool, &share, "accepted").await;
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
            &json!({"force": true, "reason": "project closed"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    until_share_state(&worker, &app.pool, &share, "revoked").await;
    let view: Value = app.read(&format!("/v1/shares/{share}")).await;
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
            "update/validate",
            "update/approve",
            "update/grant",
            "update/protect",
            "update/visibility",
            "allow",
            "accept", // refused: the owner's requester is not the consumer
            "accept",
            "accept",
            "revoke",
            "update/visibility",
            "update/unprotect",
            "revoke"
        ]
    );
}

#[tokio::test]
async fn validation_names_every_bad_target_and_nothing_reaches_glance() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("e2e-invalid").await;
    let proj_c = env("PROJ_C_ID");
    let unknown_id = "00000000000000000000000000000bad";
    let body = json!({
        "image_id": image,
        "targets": ["proj-c", "no-such-project", unknown_id, "proj-a", proj_c],
        "reason": "names"
    });
    let filed = app.file_as(&app.requester, &body).await;
    let id = filed["id"].as_str().unwrap();
    let request = app.validated(id, Some(&worker)).await;

    assert_eq!(request["status"], "invalid");
    assert_eq!(request["validation"]["state"], "failed");
    let reasons: Vec<(String, String)> = request["validation"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let fields: Vec<&str> = reasons.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        fields,
        ["targets[1]", "targets[2]", "targets[3]", "targets[4]"],
        "{request}"
    );
    assert!(
        reasons[0].1.contains("no project named `no-such-project`"),
        "{reasons:?}"
    );
    assert!(reasons[1].1.contains("no project with id"), "{reasons:?}");
    assert!(reasons[2].1.contains("owns the image"), "{reasons:?}");
    assert!(reasons[3].1.contains("same project"), "{reasons:?}");
    assert!(
        request["shares"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "invalid")
    );

    // An invalid request cannot be approved, and Glance was only read.
    let response = app
        .post(&app.approver, &format!("/v1/share-requests/{id}/approve"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(
        rig.glance_get(&rig.token("alice").await, &format!("/v2/images/{image}"))
            .await
            .1["visibility"],
        "private"
    );
    assert_eq!(app.audit_actions(id).await, ["create", "update/validate"]);
}

#[tokio::test]
async fn a_target_given_by_name_is_resolved_and_granted_by_id() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("e2e-names").await;
    let proj_c = env("PROJ_C_ID");
    let request = app
        .file_and_approve(
            json!({"image_id": image, "targets": ["proj-c"], "reason": "names"}),
            Some(&worker),
        )
        .await;
    assert_eq!(request["shares"][0]["project_id"], proj_c.as_str());
    assert_eq!(request["shares"][0]["project_name"], "proj-c");
    until_share_state(&worker, &app.pool, &share_id(&request, 0), "pending_acceptance").await;

    // Glance holds exactly the one real member.
    let (_, members) = rig
        .glance_get(&rig.token("alice").await, &format!("/v2/images/{image}/members"))
        .await;
    let ids: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [proj_c.as_str()]);

    // The same project by id in another request is the same grant: refused at once.
    let response = app
        .post(
            &app.requester,
            "/v1/share-requests",
            &json!({"image_id": image, "targets": [proj_c], "reason": "twice"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);

    // By id first and by name second, it is refused when validation resolves the name.
    let image = rig.private_image("e2e-names-2").await;
    let first = app
        .file_as(
            &app.requester,
            &json!({"image_id": image, "targets": [proj_c], "reason": "by id"}),
        )
        .await;
    let first_id = first["id"].as_str().unwrap();
    let second = app
        .file_as(
            &app.requester,
            &json!({"image_id": image, "targets": ["proj-c"], "reason": "by name"}),
        )
        .await;
    app.validated(first_id, Some(&worker)).await;
    let second = app.validated(second["id"].as_str().unwrap(), Some(&worker)).await;
    assert_eq!(second["status"], "invalid");
    let reason = second["validation"]["errors"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("already holds a live share"), "{second}");
    assert!(reason.contains(first_id), "names the other request: {reason}");
}

#[tokio::test]
async fn the_worker_sees_the_consumer_reject_in_glance_and_removes_the_member() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("e2e-poll").await;
    let proj_b = env("PROJ_B_ID");
    let request = app
        .file_and_approve(
            json!({"image_id": image, "targets": [proj_b], "reason": "poll"}),
            Some(&worker),
        )
        .await;
    let share = share_id(&request, 0);
    until_share_state(&worker, &app.pool, &share, "pending_acceptance").await;

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
    // A rejected member still lets the consumer boot the image: the rejection is carried out
    // as a revoke.
    let id = share.clone();
    drive_until(
        &worker,
        &app.pool,
        "the rejection is seen and carried out",
        async |pool: &PgPool| share_state(pool, &id).await == "revoked",
    )
    .await;
    let events = db::audit::for_request(&app.pool, request["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    let seen = events.iter().find(|e| e.action == "reject").unwrap();
    assert_eq!(seen.outcome, "success");
    assert_eq!(seen.details["observed_in_glance"], true);
    let last = events.last().unwrap();
    assert_eq!((last.action.as_str(), last.outcome.as_str()), ("revoke", "success"));
    assert_eq!(last.reason.as_deref(), Some("rejected by the consumer"));
    assert_eq!(crate::races::members_in_glance(&rig, &image).await, Vec::new());
    assert_eq!(crate::races::visibility_in_glance(&rig, &image).await, "private");
}

#[tokio::test]
async fn an_expired_share_is_revoked_by_the_worker() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("e2e-expiry").await;
    let proj_b = env("PROJ_B_ID");
    // Long enough for filing, validation, approval and the grant on a loaded machine.
    let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(6)).to_rfc3339();
    let request =
        app.file_and_approve(json!({"image_id": image, "targets": [proj_b], "reason": "short", "expires_at": expires_at, "auto_accept": true}), Some(&worker))
            .await;
    let share = share_id(&request, 0);
    let id = share.clone();
    // auto_accept accepts for the consumer (a transient failure on the way is retried).
    drive_until(
        &worker,
        &app.pool,
        "the share is granted and accepted",
        async move |pool: &PgPool| share_state(pool, &id).await == "accepted",
    )
    .await;
    assert_eq!(worker.sweep_expired().await.unwrap(), 0, "not yet");

    let id = share.clone();
    let sweeper = worker.clone();
    drive_until(&worker, &app.pool, "the share expires", async move |pool: &PgPool| {
        sweeper.sweep_expired().await.unwrap();
        share_state(pool, &id).await == "revoked"
    })
    .await;
    let view: Value = app.read(&format!("/v1/shares/{share}")).await;
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

/// A grant that starts long after validation (`revalidate_after`) checks its target in
/// Keystone again: a project deleted in between fails the share and nothing reaches Glance.
/// One that starts soon after uses the project id validation resolved, with no Keystone read.
#[tokio::test]
async fn a_grant_long_after_validation_checks_the_target_again() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let checking = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let trusting = Worker::new(
        app.pool.clone(),
        broker_cloud(),
        WorkerConfig {
            revalidate_after: Duration::from_secs(300),
            ..worker_config()
        },
    );
    let admin = rig.token("admin").await;

    for (worker, expected) in [(&checking, "failed"), (&trusting, "pending_acceptance")] {
        let project = rig
            .create_project(&format!("gsb-deleted-{}", Uuid::new_v4().simple()))
            .await;
        let image = rig.private_image("revalidate").await;
        let body = json!({"image_id": image, "targets": [project], "reason": "revalidate"});
        let request = app.file_and_approve(body, Some(worker)).await;
        rig.delete_project(&project).await;
        let share = share_id(&request, 0);
        until_share_state(worker, &app.pool, &share, expected).await;

        if expected == "failed" {
            let last_error: Option<String> = sqlx::query_scalar("select last_error from shares where id = $1")
                .bind(share.parse::<Uuid>().unwrap())
                .fetch_one(&app.pool)
                .await
                .unwrap();
            assert!(
                last_error.as_deref().is_some_and(|e| e.contains(&project)),
                "the share names the missing project: {last_error:?}"
            );
            let (_, found) = rig.glance_get(&admin, &format!("/v2/images/{image}")).await;
            assert_eq!(found["visibility"], "private", "nothing reached Glance: {found}");
        } else {
            let (_, members) = rig.glance_get(&admin, &format!("/v2/images/{image}/members")).await;
            let member_ids: Vec<&str> = members["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["member_id"].as_str().unwrap())
                .collect();
            assert_eq!(
                member_ids,
                [project.as_str()],
                "validation's project id was used as it was"
            );
        }
    }
}
