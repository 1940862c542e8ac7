use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{IMAGE, PROJ_B, problem, request_body, spawn_app};

#[tokio::test]
async fn the_same_key_and_body_replay_the_first_response() {
    let app = spawn_app().await;
    let body = request_body(IMAGE, &[PROJ_B]);
    let send = || {
        app.post(&app.requester, "/v1/share-requests", &body)
            .header("idempotency-key", "k-1")
            .send()
    };

    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let (location, etag) = (first.headers()["location"].clone(), first.headers()["etag"].clone());
    let first: Value = first.json().await.unwrap();

    let second = send().await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.headers()["location"], location);
    assert_eq!(second.headers()["etag"], etag);
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    assert_eq!(app.request_count().await, 1);

    // Key order and whitespace do not make a different request.
    let reordered = r#"{ "reason": "CI runners need the golden image", "targets": ["2f0c6b8a9d3e4c1f8a7b6c5d4e3f2a1b"],
        "image_id": "7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa" }"#;
    let third = app
        .client
        .post(app.url("/v1/share-requests"))
        .bearer_auth(&app.requester)
        .header("idempotency-key", "k-1")
        .header("content-type", "application/json")
        .body(reordered)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), StatusCode::CREATED);
    assert_eq!(app.request_count().await, 1);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused() {
    let app = spawn_app().await;
    let send = |targets: &[&str]| {
        app.post(&app.requester, "/v1/share-requests", &request_body(IMAGE, targets))
            .header("idempotency-key", "k-2")
            .send()
    };
    assert_eq!(send(&[PROJ_B]).await.unwrap().status(), StatusCode::CREATED);
    problem(send(&["proj-c"]).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(app.request_count().await, 1);
}

#[tokio::test]
async fn keys_belong_to_one_principal() {
    let app = spawn_app().await;
    let body = request_body(IMAGE, &[PROJ_B]);
    let first = app
        .post(&app.requester, "/v1/share-requests", &body)
        .header("idempotency-key", "shared")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let body = request_body(IMAGE, &["proj-c"]);
    let other = app
        .post(&app.admin, "/v1/share-requests", &body)
        .header("idempotency-key", "shared")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::CREATED);
    assert!(other.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.request_count().await, 2);
}

#[tokio::test]
async fn twenty_concurrent_posts_with_one_key_create_exactly_one_request() {
    let app = spawn_app().await;
    let body = request_body(IMAGE, &[PROJ_B]);
    let sends = (0..20).map(|_| {
        app.post(&app.requester, "/v1/share-requests", &body)
            .header("idempotency-key", "burst")
            .send()
    });
    let responses = futures_util::future::join_all(sends).await;
    let mut created_ids = std::collections::HashSet::new();
    for response in responses {
        let response = response.unwrap();
        match response.status() {
            StatusCode::CREATED => {
                created_ids.insert(
                    response.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            StatusCode::CONFLICT => {
                let body = problem(response, StatusCode::CONFLICT).await;
                assert!(
                    body["type"].as_str().unwrap().ends_with("idempotency-key-in-flight"),
                    "{body}"
                );
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(created_ids.len(), 1, "every 201 names the same request");
    assert_eq!(app.request_count().await, 1);
}

#[tokio::test]
async fn decisions_are_idempotent_too() {
    let app = spawn_app().await;
    let filed = app.file_validated(&app.requester).await;
    let path = format!("/v1/share-requests/{}/approve", filed["id"].as_str().unwrap());
    let send = || {
        app.post(&app.approver, &path, &json!({"comment": "fine"}))
            .header("idempotency-key", "d-1")
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(
        second.status(),
        StatusCode::OK,
        "a replay, not a 409 'already approved'"
    );
    assert_eq!(second.json::<Value>().await.unwrap(), first);
}
