use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{IMAGE, PROJ_B, problem, request_body, spawn_app};

#[tokio::test]
async fn calls_without_a_valid_key_get_401_with_a_challenge() {
    let app = spawn_app().await;
    let no_key = app.client.get(app.url("/v1/share-requests")).send().await.unwrap();
    assert!(
        no_key.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    problem(no_key, StatusCode::UNAUTHORIZED).await;

    let bad_key = app
        .get("gsb_not-a-real-key", "/v1/share-requests")
        .send()
        .await
        .unwrap();
    problem(bad_key, StatusCode::UNAUTHORIZED).await;

    let basic = app
        .client
        .get(app.url("/v1/shares"))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap();
    problem(basic, StatusCode::UNAUTHORIZED).await;

    let (_, key) =
        glance_share_broker::db::api_keys::create(&app.pool, "leaver", glance_share_broker::domain::Role::Admin, &[])
            .await
            .unwrap();
    assert_eq!(
        app.get(&key, "/v1/shares").send().await.unwrap().status(),
        StatusCode::OK
    );
    assert!(
        glance_share_broker::db::api_keys::revoke(&app.pool, "leaver")
            .await
            .unwrap()
    );
    problem(
        app.get(&key, "/v1/shares").send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

#[tokio::test]
async fn each_role_may_do_its_part_and_no_more() {
    let app = spawn_app().await;
    let body = request_body(IMAGE, &[PROJ_B]);

    for key in [&app.approver, &app.auditor] {
        let response = app.post(key, "/v1/share-requests", &body).send().await.unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
    }
    let filed = app.file(IMAGE, &[PROJ_B]).await;
    let id = filed["id"].as_str().unwrap();

    for key in [&app.requester, &app.auditor] {
        let response = app
            .post(key, &format!("/v1/share-requests/{id}/approve"), &json!({}))
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
    }
    let response = app
        .post(&app.auditor, &format!("/v1/share-requests/{id}/cancel"), &json!({}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    for key in [&app.requester, &app.approver, &app.auditor, &app.admin] {
        assert_eq!(
            app.get(key, "/v1/share-requests").send().await.unwrap().status(),
            StatusCode::OK
        );
        assert_eq!(
            app.get(key, &format!("/v1/share-requests/{id}"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }

    // Another requester may not cancel someone else's request; an admin may.
    let (_, other) = glance_share_broker::db::api_keys::create(
        &app.pool,
        "other-portal",
        glance_share_broker::domain::Role::Requester,
        &[],
    )
    .await
    .unwrap();
    let response = app
        .post(&other, &format!("/v1/share-requests/{id}/cancel"), &json!({}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .post(&app.admin, &format!("/v1/share-requests/{id}/cancel"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn nobody_approves_their_own_request() {
    let app = spawn_app().await;
    let filed = app.file_validated(&app.admin).await;
    let id = filed["id"].as_str().unwrap();
    let response = app
        .post(&app.admin, &format!("/v1/share-requests/{id}/approve"), &json!({}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    let response = app
        .post(&app.approver, &format!("/v1/share-requests/{id}/approve"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}
