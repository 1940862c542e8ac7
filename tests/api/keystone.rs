//! Keystone identities and project scoping, with real tokens of the dev stack's users:
//! alice (proj-a, owns the images), bob (proj-b, the consumer), carol (proj-c, a bystander),
//! dave (the `image_share_approver`).

use std::time::Duration;

use glance_share_broker::worker::Worker;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{problem, spawn_app, spawn_app_with_cloud, spawn_app_with_keystone};
use crate::openstack::{Rig, broker_cloud, drive_until, env, worker_config};

/// The audit events recorded as refused, as (action, initiator name, details.reason).
async fn refusals(pool: &sqlx::PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "select action, initiator->>'name', details->>'reason' from audit_events
         where outcome = 'failure' order by seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn alice_shares_her_image_with_bob_who_accepts_while_carol_sees_nothing() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("keystone-flow").await;
    let (proj_a, proj_b) = (env("PROJ_A_ID"), env("PROJ_B_ID"));
    let [alice, bob, carol, dave] = [
        rig.token("alice").await,
        rig.token("bob").await,
        rig.token("carol").await,
        rig.token("dave").await,
    ];
    let body = json!({"image_id": image, "targets": [proj_b], "reason": "bob's CI needs it"});

    // bob cannot request a share of alice's image, and the refusal is recorded.
    let response = app.post_as(&bob, "/v1/share-requests", &body).send().await.unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(
        refusals(&app.pool).await,
        [("create".to_owned(), "bob".to_owned(), "forbidden".to_owned())]
    );

    let response = app.post_as(&alice, "/v1/share-requests", &body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let filed: Value = response.json().await.unwrap();
    assert_eq!(filed["requested_by"], format!("keystone:{}", env("ALICE_USER_ID")));
    let validated = app.validated(filed["id"].as_str().unwrap(), Some(&worker)).await;
    assert_eq!(validated["validation"]["image"]["owner"], proj_a.as_str());
    let (id, share) = (
        filed["id"].as_str().unwrap().to_owned(),
        filed["shares"][0]["id"].as_str().unwrap().to_owned(),
    );

    // alice cannot approve her own request; dave, the approver, can.
    let approve = format!("/v1/share-requests/{id}/approve");
    let response = app.post_as(&alice, &approve, &json!({})).send().await.unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .post_as(&dave, &approve, &json!({"comment": "looks fine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drive_until(&worker, &app.pool, "the share is granted", async |pool| {
        crate::helpers::share_state(pool, &share).await == "pending_acceptance"
    })
    .await;

    // bob sees the share made to his project (not the request) and accepts it.
    let response = app.get_as(&bob, &format!("/v1/shares/{share}")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let listed: Value = app
        .get_as(&bob, "/v1/shares")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], share.as_str());
    problem(
        app.get_as(&bob, &format!("/v1/share-requests/{id}"))
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
    let response = app
        .post_as(&alice, &format!("/v1/shares/{share}/accept"), &json!({}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .post_as(&bob, &format!("/v1/shares/{share}/accept"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    drive_until(&worker, &app.pool, "the share is accepted", async |pool| {
        crate::helpers::share_state(pool, &share).await == "accepted"
    })
    .await;
    let (_, member) = rig
        .glance_get(&bob, &format!("/v2/images/{image}/members/{proj_b}"))
        .await;
    assert_eq!(member["status"], "accepted");

    // carol sees nothing of it: 404s and empty lists; her writes are 404 too.
    for path in [format!("/v1/share-requests/{id}"), format!("/v1/shares/{share}")] {
        problem(app.get_as(&carol, &path).send().await.unwrap(), StatusCode::NOT_FOUND).await;
    }
    for path in ["/v1/share-requests", "/v1/shares"] {
        let page: Value = app.get_as(&carol, path).send().await.unwrap().json().await.unwrap();
        assert_eq!(page["items"], json!([]), "{path}");
    }
    let response = app
        .post_as(
            &carol,
            &format!("/v1/shares/{share}/revoke"),
            &json!({"reason": "mine now"}),
        )
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::NOT_FOUND).await;

    // alice sees her project's request; the audit log names each person.
    let page: Value = app
        .get_as(&alice, "/v1/share-requests")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["id"], id.as_str());
    let initiators: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select action, initiator->>'name', initiator->>'project' from audit_events
         where request_id = $1::uuid and outcome <> 'failure' and initiator->>'kind' = 'keystone_user' order by seq",
    )
    .bind(&id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        initiators,
        [
            ("create".to_owned(), "alice".to_owned(), Some(proj_a.clone())),
            ("update/approve".to_owned(), "dave".to_owned(), Some(env("PROJ_D_ID"))),
            ("accept".to_owned(), "bob".to_owned(), Some(proj_b.clone())),
        ]
    );
    let refused: Vec<String> = refusals(&app.pool)
        .await
        .into_iter()
        .map(|(a, n, _)| format!("{n} {a}"))
        .collect();
    assert_eq!(
        refused,
        ["bob create", "alice update/approve", "alice accept", "carol revoke"]
    );
}

#[tokio::test]
async fn a_bad_token_is_401_and_a_good_one_is_trusted_for_the_cache_time_only() {
    let rig = Rig::from_env();
    let cached = spawn_app_with_keystone().await;
    let uncached = spawn_app_with_cloud(Some(broker_cloud()), |args| args.access.token_cache_secs = 0).await;

    let response = cached.get_as("not-a-token", "/v1/shares").send().await.unwrap();
    let body = problem(response, StatusCode::UNAUTHORIZED).await;
    assert!(
        body["detail"].as_str().unwrap().contains("invalid or expired"),
        "{body}"
    );

    let token = rig.token("carol").await;
    for app in [&cached, &uncached] {
        assert_eq!(
            app.get_as(&token, "/v1/shares").send().await.unwrap().status(),
            StatusCode::OK
        );
    }
    // carol signs out: Keystone revokes her token.
    let response = rig
        .http
        .delete(format!("{}/v3/auth/tokens", rig.keystone))
        .header("x-auth-token", &token)
        .header("x-subject-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        cached.get_as(&token, "/v1/shares").send().await.unwrap().status(),
        StatusCode::OK,
        "within the cache time the token is not checked again"
    );
    let response = uncached.get_as(&token, "/v1/shares").send().await.unwrap();
    problem(response, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn without_a_cloud_tokens_are_refused_clearly_and_keys_still_work() {
    let app = spawn_app().await;
    let response = app.get_as("some-token", "/v1/shares").send().await.unwrap();
    let body = problem(response, StatusCode::UNAUTHORIZED).await;
    assert!(body["detail"].as_str().unwrap().contains("not configured"), "{body}");
    assert_eq!(
        app.get(&app.auditor, "/v1/shares").send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_key_acting_for_a_user_is_recorded_with_the_user_and_cannot_approve_for_them() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("on-behalf").await;
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "r"});
    let response = app
        .post(&app.requester, "/v1/share-requests", &body)
        .header("x-on-behalf-of", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let filed: Value = response.json().await.unwrap();
    assert_eq!(filed["on_behalf_of"], "alice");
    assert_eq!(filed["requested_by_subject"], env("ALICE_USER_ID"));
    let id = filed["id"].as_str().unwrap();
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    app.validated(id, Some(&worker)).await;
    let initiator: Value = sqlx::query_scalar("select initiator from audit_events where action = 'create'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(initiator["name"], "portal");
    assert_eq!(initiator["kind"], "api_key");
    assert_eq!(initiator["on_behalf_of"], "alice");

    // The approval workflow acting for alice herself may not approve her request.
    let approve = format!("/v1/share-requests/{id}/approve");
    let response = app
        .post(&app.approver, &approve, &json!({}))
        .header("x-on-behalf-of", "alice")
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .post(&app.approver, &approve, &json!({}))
        .header("x-on-behalf-of", "bob")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = app
        .get(&app.auditor, "/v1/shares")
        .header("x-on-behalf-of", "x".repeat(256))
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(crate::helpers::fields(&body), ["X-On-Behalf-Of"]);
}

#[tokio::test]
async fn keystone_being_unreachable_is_503_not_401() {
    let unreachable = glance_share_broker::openstack::OpenStack::new(
        glance_share_broker::openstack::CloudConfig::from_lookup(|k| match k {
            "OS_AUTH_URL" => Some("http://127.0.0.1:9/v3".into()),
            "OS_USERNAME" => Some("broker".into()),
            "OS_PASSWORD" => Some("secret".into()),
            "OS_PROJECT_NAME" => Some("admin".into()),
            _ => None,
        })
        .unwrap(),
        Duration::from_secs(2),
    )
    .unwrap();
    let app = spawn_app_with_cloud(Some(unreachable), |_| {}).await;
    let response = app.get_as("some-token", "/v1/shares").send().await.unwrap();
    problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
}

#[tokio::test]
async fn an_approver_limited_to_its_project_or_domain_decides_only_those_images() {
    use glance_share_broker::domain::ApproverScope;

    let rig = Rig::from_env();
    let [alice, dave] = [rig.token("alice").await, rig.token("dave").await];
    for (scope, expected) in [
        // dave's token is scoped to proj-d, which owns none of alice's images: he neither
        // sees nor decides their requests...
        (ApproverScope::Project, StatusCode::NOT_FOUND),
        // ...but proj-d and proj-a are both in the Default domain.
        (ApproverScope::Domain, StatusCode::OK),
    ] {
        let app = spawn_app_with_cloud(Some(broker_cloud()), |args| {
            args.access.keystone_approver_scope = scope;
        })
        .await;
        let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
        let image = rig.private_image("approver-scope").await;
        let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "scoped approver"});
        let response = app.post_as(&alice, "/v1/share-requests", &body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        app.validated(&id, Some(&worker)).await;
        let response = app
            .post_as(&dave, &format!("/v1/share-requests/{id}/approve"), &json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), expected, "approver scope {scope:?}");
    }
}
