use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{IMAGE, PROJ_B, fields, problem, request_body, spawn_app};

#[tokio::test]
async fn filing_a_request_records_it_with_one_share_per_target() {
    let app = spawn_app().await;
    let response = app
        .post(
            &app.requester,
            "/v1/share-requests",
            &request_body(IMAGE, &[PROJ_B, "proj-c"]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/v1/share-requests/{}", body["id"].as_str().unwrap()));
    assert_eq!(body["status"], "pending_approval");
    assert_eq!(body["image_id"], IMAGE);
    assert_eq!(body["region"], "RegionOne");
    assert_eq!(body["requested_by"], "portal");
    let shares = body["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 2);
    assert!(shares.iter().all(|s| s["state"] == "awaiting_approval"));
    assert_eq!(shares[0]["project_id"], PROJ_B);
    assert_eq!(shares[1]["target"], "proj-c");
    assert_eq!(
        shares[1]["project_id"],
        Value::Null,
        "a name is resolved later, by the worker"
    );

    let fetched = app.get(&app.auditor, &location).send().await.unwrap();
    assert_eq!(fetched.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(fetched.json::<Value>().await.unwrap(), body);
    assert_eq!(app.audit_actions(body["id"].as_str().unwrap()).await, ["create"]);
}

#[tokio::test]
async fn each_invalid_field_is_named_in_a_problem() {
    let app = spawn_app().await;
    let long = "r".repeat(1001);
    let too_many: Vec<String> = (0..129).map(|i| format!("{i:032x}")).collect();
    let cases: Vec<(Value, &[&str])> = vec![
        (
            json!({"image_id": "nope", "targets": [PROJ_B], "reason": "x"}),
            &["image_id"],
        ),
        (json!({"image_id": IMAGE, "targets": [], "reason": "x"}), &["targets"]),
        (
            json!({"image_id": IMAGE, "targets": too_many, "reason": "x"}),
            &["targets"],
        ),
        (
            json!({"image_id": IMAGE, "targets": [PROJ_B, PROJ_B], "reason": "x"}),
            &["targets[1]"],
        ),
        (
            json!({"image_id": IMAGE, "targets": ["  "], "reason": "x"}),
            &["targets[0]"],
        ),
        (
            json!({"image_id": IMAGE, "targets": ["a\u{1}b"], "reason": "x"}),
            &["targets[0]"],
        ),
        (
            json!({"image_id": IMAGE, "targets": ["x".repeat(65)], "reason": "x"}),
            &["targets[0]"],
        ),
        (
            json!({"image_id": IMAGE, "targets": [PROJ_B], "reason": ""}),
            &["reason"],
        ),
        (
            json!({"image_id": IMAGE, "targets": [PROJ_B], "reason": long}),
            &["reason"],
        ),
        (json!({"image_id": IMAGE, "targets": [PROJ_B]}), &["reason"]),
        (
            json!({"image_id": IMAGE, "targets": [PROJ_B], "reason": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            &["expires_at"],
        ),
        (
            json!({"image_id": IMAGE, "targets": [PROJ_B], "reason": "x", "expires_at": "tomorrow"}),
            &["expires_at"],
        ),
        (
            json!({"image_id": IMAGE, "targets": "proj-b", "reason": "x"}),
            &["targets"],
        ),
        (
            json!({"image_id": IMAGE, "targets": [PROJ_B], "reason": "x", "colour": "red"}),
            &["colour"],
        ),
        (
            json!({"image_id": "nope", "targets": [], "reason": ""}),
            &["image_id", "targets", "reason"],
        ),
    ];
    for (body, expected) in cases {
        let response = app
            .post(&app.requester, "/v1/share-requests", &body)
            .send()
            .await
            .unwrap();
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&problem), expected, "{body}");
        assert!(problem["errors"][0]["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
    assert_eq!(app.request_count().await, 0, "nothing invalid was stored");
}

#[tokio::test]
async fn malformed_bodies_get_problems_not_stack_traces() {
    let app = spawn_app().await;
    let post = || {
        app.client
            .post(app.url("/v1/share-requests"))
            .bearer_auth(&app.requester)
    };

    let response = post()
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::BAD_REQUEST).await;

    let response = post()
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let response = post().send().await.unwrap();
    problem(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let huge = json!({"image_id": IMAGE, "targets": [PROJ_B], "reason": "x".repeat(100_000)});
    let response = post().json(&huge).send().await.unwrap();
    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;

    let response = app.get(&app.requester, "/v1/nothing-here").send().await.unwrap();
    problem(response, StatusCode::NOT_FOUND).await;

    let response = app
        .client
        .delete(app.url("/v1/share-requests"))
        .bearer_auth(&app.requester)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;

    let response = app
        .get(&app.requester, "/v1/share-requests/not-a-uuid")
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::fields(&problem(response, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["id"]
    );

    let response = app
        .get(&app.requester, &format!("/v1/share-requests/{IMAGE}"))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::NOT_FOUND).await;

    let response = app.get(&app.requester, "/v1/shares?state=nope").send().await.unwrap();
    assert_eq!(
        fields(&problem(response, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["state"]
    );
    let response = app
        .get(&app.requester, "/v1/share-requests?colour=red")
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(response, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["colour"]
    );
    let response = app
        .get(&app.requester, "/v1/share-requests?limit=500")
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(response, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["limit"]
    );
    let response = app
        .get(&app.requester, "/v1/share-requests?cursor=garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(
        fields(&problem(response, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["cursor"]
    );
}

#[tokio::test]
async fn a_second_live_share_of_the_same_image_to_a_project_is_refused() {
    let app = spawn_app().await;
    let first = app.file(IMAGE, &[PROJ_B]).await;
    let response = app
        .post(&app.requester, "/v1/share-requests", &request_body(IMAGE, &[PROJ_B]))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::CONFLICT).await;

    // Once the first is cancelled, the same grant may be asked for again.
    let path = format!("/v1/share-requests/{}/cancel", first["id"].as_str().unwrap());
    assert_eq!(
        app.post(&app.requester, &path, &json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    app.file(IMAGE, &[PROJ_B]).await;
}

#[tokio::test]
async fn cancelling_honours_if_match_and_moves_every_share() {
    let app = spawn_app().await;
    let filed = app.file(IMAGE, &[PROJ_B, "proj-c"]).await;
    let id = filed["id"].as_str().unwrap();
    let path = format!("/v1/share-requests/{id}/cancel");

    let stale = app
        .post(&app.requester, &path, &json!({}))
        .header("if-match", "\"v0\"")
        .send()
        .await
        .unwrap();
    problem(stale, StatusCode::PRECONDITION_FAILED).await;

    let etag = app
        .get(&app.requester, &format!("/v1/share-requests/{id}"))
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .to_str()
        .unwrap()
        .to_owned();
    let response = app
        .post(&app.requester, &path, &json!({"comment": "no longer needed"}))
        .header("if-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(
        response.headers()["etag"].to_str().unwrap(),
        etag,
        "a change gives a new ETag"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["decided_by"], "portal");
    assert_eq!(body["decision_comment"], "no longer needed");
    assert!(
        body["shares"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "cancelled")
    );

    let again = app
        .client
        .post(app.url(&path))
        .bearer_auth(&app.requester)
        .send()
        .await
        .unwrap();
    problem(again, StatusCode::CONFLICT).await;
    assert_eq!(app.audit_actions(id).await, ["create", "update/cancel"]);
}

#[tokio::test]
async fn approving_and_denying_record_who_decided() {
    let app = spawn_app().await;
    let a = app.file_validated(&app.requester).await;
    let b = app.file("0b6a1c6e-3f5d-4a57-9b0e-51c6a3b7f0aa", &[PROJ_B]).await;

    let path = format!("/v1/share-requests/{}/approve", a["id"].as_str().unwrap());
    let approved: Value = app
        .post(&app.approver, &path, &json!({"comment": "ok"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decided_by"], "workflow");
    assert_eq!(approved["shares"][0]["state"], "queued");

    let path = format!("/v1/share-requests/{}/deny", b["id"].as_str().unwrap());
    let denied: Value = app
        .post(&app.approver, &path, &json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(denied["status"], "denied");
    assert_eq!(denied["shares"][0]["state"], "denied");

    assert_eq!(
        app.audit_actions(a["id"].as_str().unwrap()).await,
        ["create", "update/validate", "update/approve"]
    );
    assert_eq!(
        app.audit_actions(b["id"].as_str().unwrap()).await,
        ["create", "update/deny"]
    );
}

#[tokio::test]
async fn lists_filter_by_status_image_project_and_requester() {
    let app = spawn_app().await;
    let other_image = "0b6a1c6e-3f5d-4a57-9b0e-51c6a3b7f0aa";
    let a = app.file(IMAGE, &[PROJ_B]).await;
    app.file(other_image, &["proj-c"]).await;
    let path = format!("/v1/share-requests/{}/cancel", a["id"].as_str().unwrap());
    app.post(&app.requester, &path, &json!({})).send().await.unwrap();

    let ids = |body: Value| -> usize { body["items"].as_array().unwrap().len() };
    let get = |q: String| {
        let app = &app;
        async move { app.read(&q).await }
    };
    assert_eq!(ids(get("/v1/share-requests".into()).await), 2);
    assert_eq!(ids(get("/v1/share-requests?status=cancelled".into()).await), 1);
    assert_eq!(ids(get(format!("/v1/share-requests?image_id={other_image}")).await), 1);
    assert_eq!(ids(get(format!("/v1/share-requests?project_id={PROJ_B}")).await), 1);
    assert_eq!(ids(get("/v1/share-requests?requested_by=portal".into()).await), 2);
    assert_eq!(ids(get("/v1/share-requests?requested_by=someone-else".into()).await), 0);
    assert_eq!(
        ids(get("/v1/share-requests?created_after=2999-01-01T00:00:00Z".into()).await),
        0
    );
    assert_eq!(
        ids(get("/v1/share-requests?created_before=2999-01-01T00:00:00Z".into()).await),
        2
    );
    assert_eq!(ids(get("/v1/shares?state=cancelled".into()).await), 1);
    assert_eq!(ids(get("/v1/shares?project_id=proj-c".into()).await), 1);
    assert_eq!(
        ids(get(format!("/v1/shares?request_id={}", a["id"].as_str().unwrap())).await),
        1
    );

    let share = &a["shares"][0];
    let one: Value = get(format!("/v1/shares/{}", share["id"].as_str().unwrap())).await;
    assert_eq!(one["state"], "cancelled");
    assert_eq!(one["request_id"], a["id"]);
}

#[tokio::test]
async fn a_nul_character_in_free_text_is_refused_by_name() {
    let app = spawn_app().await;
    let filed = app.file(IMAGE, &[PROJ_B]).await;
    let path = format!("/v1/share-requests/{}/cancel", filed["id"].as_str().unwrap());
    let response = app
        .post(&app.requester, &path, &json!({"comment": "a\u{0}b"}))
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&body), ["comment"]);

    let mut request = request_body(IMAGE, &["proj-b"]);
    request["targets"][0] = json!("proj\u{0}b");
    let response = app
        .post(&app.requester, "/v1/share-requests", &request)
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&body), ["targets[0]"]);
    assert_eq!(app.request_count().await, 1, "nothing stored");
}
