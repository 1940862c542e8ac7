//! The deletion guard: Glance's `protected` kept on while an image has a live share (the
//! owner's delete is refused), and the value found put back after the last share ends;
//! against the real Glance, and the fake one for a failing PATCH.

use glance_share_broker::domain::policy::{Policy, SharedPolicy};
use glance_share_broker::worker::{Worker, WorkerConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::fake_glance::Fault;
use crate::faults::{approve_one, setup};
use crate::helpers::{TestApp, spawn_app};
use crate::openstack::{Rig, broker_cloud, drain, env, until_share_state, worker_config};

/// Glance's `protected` flag of `image`, as its owner sees it.
async fn protected(rig: &Rig, image: &str) -> bool {
    let (status, body) = rig
        .glance_get(&rig.token("alice").await, &format!("/v2/images/{image}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["protected"].as_bool().unwrap()
}

/// Sends what `build` makes as alice, again while the shared Glance answers 5xx (its
/// database is busy under every engineer's tests); the last answer's status.
async fn as_alice(rig: &Rig, build: impl Fn(&str) -> reqwest::RequestBuilder) -> u16 {
    let token = rig.token("alice").await;
    let mut status = 0;
    for _ in 0..10 {
        status = build(&token).send().await.unwrap().status().as_u16();
        if status < 500 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    status
}

/// Alice sets `protected` on her image.
async fn set_protected(rig: &Rig, image: &str, value: bool) {
    let body = json!([{"op": "replace", "path": "/protected", "value": value}]).to_string();
    let status = as_alice(rig, |token| {
        rig.http
            .patch(format!("{}/v2/images/{image}", rig.glance))
            .header("x-auth-token", token)
            .header("content-type", "application/openstack-images-v2.1-json-patch")
            .body(body.clone())
    })
    .await;
    assert_eq!(status, 200);
}

/// Alice deletes her image: Glance's status code.
async fn owner_deletes(rig: &Rig, image: &str) -> u16 {
    as_alice(rig, |token| {
        rig.http
            .delete(format!("{}/v2/images/{image}", rig.glance))
            .header("x-auth-token", token)
    })
    .await
}

/// Files and approves one request of `image` to `targets`; its share ids.
async fn share(app: &TestApp, worker: &Worker, image: &str, targets: &[String]) -> Vec<String> {
    let body = json!({"image_id": image, "targets": targets, "reason": "guard"});
    let request = app.file_and_approve(body, Some(worker)).await;
    let ids: Vec<String> = (0..targets.len())
        .map(|i| request["shares"][i]["id"].as_str().unwrap().to_owned())
        .collect();
    for id in &ids {
        until_share_state(worker, &app.pool, id, "pending_acceptance").await;
    }
    ids
}

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
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

/// The guard's audit events about `image`: (action, outcome, details).
async fn guard_events(pool: &PgPool, image: &str) -> Vec<(String, String, Value)> {
    sqlx::query_as(
        "select action, outcome, details from audit_events
         where image_id = $1::uuid and action in ('update/protect', 'update/unprotect') order by seq",
    )
    .bind(image)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn guard_rows(pool: &PgPool, image: &str) -> i64 {
    sqlx::query_scalar("select count(*) from image_guards where image_id = $1::uuid")
        .bind(image)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_shared_image_is_protected_its_owner_cannot_delete_it_and_the_last_share_restores_it() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("guard-flow").await;
    assert!(!protected(&rig, &image).await);

    let shares = share(&app, &worker, &image, &[env("PROJ_B_ID"), env("PROJ_C_ID")]).await;
    assert!(protected(&rig, &image).await, "protected while shared");
    assert_eq!(
        owner_deletes(&rig, &image).await,
        403,
        "Glance refuses the owner's delete"
    );
    let row: (bool, bool) =
        sqlx::query_as("select found_protected, protected_at is not null from image_guards where image_id = $1::uuid")
            .bind(&image)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(row, (false, true), "the value found is remembered");

    // One share ends: the other still holds a member, so the guard stays.
    revoke(&app, &shares[0]).await;
    until_share_state(&worker, &app.pool, &shares[0], "revoked").await;
    assert!(protected(&rig, &image).await, "still shared with proj-c");

    revoke(&app, &shares[1]).await;
    until_share_state(&worker, &app.pool, &shares[1], "revoked").await;
    assert!(!protected(&rig, &image).await, "put back as found");
    assert_eq!(guard_rows(&app.pool, &image).await, 0);
    let events = guard_events(&app.pool, &image).await;
    let actions: Vec<(&str, &str)> = events.iter().map(|(a, o, _)| (a.as_str(), o.as_str())).collect();
    assert_eq!(
        actions,
        [("update/protect", "success"), ("update/unprotect", "success")]
    );
    assert_eq!(events[0].2["protected"], json!({"from": false, "to": true}));
    assert_eq!(events[1].2["protected"], json!({"from": true, "to": false}));
    assert_ne!(owner_deletes(&rig, &image).await, 403, "deletable again");
}

#[tokio::test]
async fn an_image_its_owner_had_protected_stays_protected_after_the_last_share() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("guard-owner-protected").await;
    set_protected(&rig, &image, true).await;

    let shares = share(&app, &worker, &image, &[env("PROJ_B_ID")]).await;
    assert!(protected(&rig, &image).await);
    revoke(&app, &shares[0]).await;
    until_share_state(&worker, &app.pool, &shares[0], "revoked").await;
    assert!(protected(&rig, &image).await, "the owner's protection stays");
    assert_eq!(guard_rows(&app.pool, &image).await, 0);
    let events = guard_events(&app.pool, &image).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].2["found"], true);
    assert_eq!(events[1].2["protected"], json!({"from": true, "to": true}));
    set_protected(&rig, &image, false).await;
    assert_ne!(owner_deletes(&rig, &image).await, 403);
}

/// Two shares of one image revoked at once, carried out by two workers racing: the guard is
/// lifted once, by whichever ends the last share.
#[tokio::test]
async fn two_shares_ending_at_once_restore_the_value_found_exactly_once() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let other = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("guard-race").await;
    let shares = share(&app, &worker, &image, &[env("PROJ_B_ID"), env("PROJ_C_ID")]).await;

    tokio::join!(revoke(&app, &shares[0]), revoke(&app, &shares[1]));
    for _ in 0..100 {
        tokio::join!(drain(&worker), drain(&other));
        let done: i64 =
            sqlx::query_scalar("select count(*) from shares where image_id = $1::uuid and state = 'revoked'")
                .bind(&image)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if done == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!protected(&rig, &image).await);
    let events = guard_events(&app.pool, &image).await;
    let unprotects = events.iter().filter(|(a, _, _)| a == "update/unprotect").count();
    assert_eq!(unprotects, 1, "{events:?}");
    assert_eq!(guard_rows(&app.pool, &image).await, 0);
    owner_deletes(&rig, &image).await;
}

#[tokio::test]
async fn with_the_guard_off_by_configuration_or_policy_the_image_is_left_untouched() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let by_config = WorkerConfig {
        protect_images: false,
        ..worker_config()
    };
    let by_policy = WorkerConfig {
        policy: SharedPolicy::new(Policy {
            protect_shared_images: Some(false),
            ..Policy::default()
        }),
        ..worker_config()
    };
    for config in [by_config, by_policy] {
        let worker = Worker::new(app.pool.clone(), broker_cloud(), config);
        let image = rig.private_image("guard-off").await;
        let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "guard off"});
        let filed = app.file_as(&app.requester, &body).await;
        let validated = app.validated(filed["id"].as_str().unwrap(), Some(&worker)).await;
        let codes: Vec<&str> = validated["validation"]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, ["image_unprotected"], "approvers are told: {validated}");
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
        let share = filed["shares"][0]["id"].as_str().unwrap();
        until_share_state(&worker, &app.pool, share, "pending_acceptance").await;
        assert!(!protected(&rig, &image).await, "untouched");
        revoke(&app, share).await;
        until_share_state(&worker, &app.pool, share, "revoked").await;
        assert!(!protected(&rig, &image).await);
        assert!(guard_events(&app.pool, &image).await.is_empty());
        assert_eq!(guard_rows(&app.pool, &image).await, 0);
        owner_deletes(&rig, &image).await;
    }
}

/// The owner unprotects a guarded image: the broker records it (once), does not set it
/// again, and at the end leaves it as the owner left it.
#[tokio::test]
async fn an_owner_who_unprotects_a_shared_image_is_recorded_not_fought() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("guard-owner-unprotects").await;
    let first = share(&app, &worker, &image, &[env("PROJ_B_ID")]).await;
    set_protected(&rig, &image, false).await;

    // The next grant of the image sees it.
    let second = share(&app, &worker, &image, &[env("PROJ_C_ID")]).await;
    assert!(!protected(&rig, &image).await, "not set again");
    let seen: bool =
        sqlx::query_scalar("select unprotected_outside_at is not null from image_guards where image_id = $1::uuid")
            .bind(&image)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(seen);

    for share in [&first[0], &second[0]] {
        revoke(&app, share).await;
        until_share_state(&worker, &app.pool, share, "revoked").await;
    }
    assert!(!protected(&rig, &image).await);
    let events = guard_events(&app.pool, &image).await;
    let summary: Vec<(&str, &str)> = events.iter().map(|(a, o, _)| (a.as_str(), o.as_str())).collect();
    assert_eq!(
        summary,
        [
            ("update/protect", "success"),
            ("update/protect", "failure"),
            ("update/unprotect", "success")
        ]
    );
    assert_eq!(events[1].2["changed_outside"], true);
    assert_eq!(events[2].2["changed_outside"], true);
    assert_ne!(owner_deletes(&rig, &image).await, 403);
}

/// A PATCH of `protected` that fails is retried: no member is added before the image is
/// protected, and a revoke stays `revoking` until the value found is back.
#[tokio::test]
async fn a_failing_protect_is_retried_and_never_leaves_a_share_half_done() {
    let s = setup("private").await;
    s.fake.inject(
        Method::PATCH,
        "protect_image",
        [Fault::Status(503, None), Fault::Status(503, None)],
    );
    let share = approve_one(&s).await;
    until_share_state(&s.worker, &s.app.pool, &share, "pending_acceptance").await;
    assert!(s.fake.protected(&s.image));
    // Three tries of the PATCH, one add: the failed tries added nothing (an add before the
    // guard held would have been tried again with each).
    assert_eq!(s.fake.calls(Method::PATCH, "protect_image"), 3);
    assert_eq!(s.fake.calls(Method::POST, "add_member"), 1);

    s.fake
        .inject(Method::PATCH, "protect_image", [Fault::Status(503, None)]);
    revoke(&s.app, &share).await;
    until_share_state(&s.worker, &s.app.pool, &share, "revoked").await;
    assert!(!s.fake.protected(&s.image), "put back after the retry");
    assert_eq!(s.fake.calls(Method::PATCH, "protect_image"), 5);
    let unprotects = guard_events(&s.app.pool, &s.image)
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "update/unprotect")
        .count();
    assert_eq!(unprotects, 1);
}
