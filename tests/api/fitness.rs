//! Image fitness at validation (an image a consumer cannot use is refused, what is risky is
//! warned about) and the dry run (`POST /v1/share-requests?dry_run=true`), against the real
//! Keystone and Glance, and the real Nova and Cinder for a zero-byte snapshot of a
//! volume-backed server.

use std::time::Duration;

use glance_share_broker::worker::Worker;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{TestApp, spawn_app, spawn_app_with_keystone};
use crate::openstack::{Rig, broker_cloud, env, worker_config};

/// Files a request of `image` to proj-b and lets the worker validate it; the request.
async fn validate(app: &TestApp, worker: &Worker, image: &str) -> Value {
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "fitness"});
    let filed = app.file_as(&app.requester, &body).await;
    app.validated(filed["id"].as_str().unwrap(), Some(worker)).await
}

/// The reasons validation gave on `image_id`.
fn image_errors(request: &Value) -> Vec<String> {
    request["validation"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["field"] == "image_id")
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect()
}

/// POST as `token` (a Keystone token) with a JSON body, to any service; status and body.
async fn call(rig: &Rig, method: reqwest::Method, token: &str, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = rig
        .http
        .request(method, url)
        .header("x-auth-token", token)
        .header(
            "openstack-api-version",
            if url.contains("/v3/") {
                "volume 3.71"
            } else {
                "compute 2.45"
            },
        )
        .header("accept", "application/json");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `url` until `field` (a JSON pointer) is one of `done`; its last value.
async fn until(rig: &Rig, token: &str, url: &str, field: &str, done: &[&str]) -> String {
    let mut last = String::new();
    for _ in 0..600 {
        let (_, body) = call(rig, reqwest::Method::GET, token, url, None).await;
        last = body
            .pointer(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if done.contains(&last.as_str()) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url}: {field} still `{last}`");
}

#[tokio::test]
async fn a_deactivated_image_is_refused_with_the_reason_on_image_id() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("fitness-deactivated").await;
    let admin = rig.token("admin").await;
    let deactivate = format!("{}/v2/images/{image}/actions/deactivate", rig.glance);
    let (status, _) = call(&rig, reqwest::Method::POST, &admin, &deactivate, None).await;
    assert_eq!(status, 204);

    let request = validate(&app, &worker, &image).await;
    assert_eq!(request["status"], "invalid", "{request}");
    let errors = image_errors(&request);
    assert_eq!(errors.len(), 1, "{request}");
    assert!(errors[0].contains("`deactivated`, not `active`"), "{errors:?}");
    let reactivate = format!("{}/v2/images/{image}/actions/reactivate", rig.glance);
    call(&rig, reqwest::Method::POST, &admin, &reactivate, None).await;
}

/// Alice boots a server from a volume made from her image and snapshots it: Nova gives a
/// zero-byte image whose `block_device_mapping` points at a Cinder snapshot in her project.
/// Shared, it would boot nowhere: validation (and a dry run) refuse it and say how to make
/// a shareable image.
#[tokio::test]
async fn a_zero_byte_snapshot_of_a_volume_backed_server_is_refused_and_says_how_to_share_instead() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let (nova, cinder) = (env("NOVA_URL"), env("CINDER_URL"));
    let (alice, admin) = (rig.token("alice").await, rig.token("admin").await);
    let source = rig.private_image("fitness-bfv-source").await;

    // A flavor of the test's own (flavors are global; a second run finds it).
    let flavor = json!({"flavor": {"name": "gsb.fitness", "id": "gsb-fitness", "ram": 64, "vcpus": 1, "disk": 1}});
    let (status, _) = call(
        &rig,
        reqwest::Method::POST,
        &admin,
        &format!("{nova}/flavors"),
        Some(flavor),
    )
    .await;
    assert!(status == 200 || status == 409, "flavor: {status}");
    let volume = json!({"volume": {"size": 1, "imageRef": source, "name": "gsb-fitness-bfv"}});
    let (status, body) = call(
        &rig,
        reqwest::Method::POST,
        &alice,
        &format!("{cinder}/volumes"),
        Some(volume),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let volume = body["volume"]["id"].as_str().unwrap().to_owned();
    let state = until(
        &rig,
        &alice,
        &format!("{cinder}/volumes/{volume}"),
        "/volume/status",
        &["available", "error"],
    )
    .await;
    assert_eq!(state, "available");
    let server = json!({"server": {"name": "gsb-fitness-bfv", "flavorRef": "gsb-fitness", "networks": "none",
        "block_device_mapping_v2": [{"boot_index": 0, "uuid": volume, "source_type": "volume", "destination_type": "volume"}]}});
    let (status, body) = call(
        &rig,
        reqwest::Method::POST,
        &alice,
        &format!("{nova}/servers"),
        Some(server),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let server = body["server"]["id"].as_str().unwrap().to_owned();
    let state = until(
        &rig,
        &alice,
        &format!("{nova}/servers/{server}"),
        "/server/status",
        &["ACTIVE", "ERROR"],
    )
    .await;
    assert_eq!(state, "ACTIVE");
    let snapshot = json!({"createImage": {"name": "gsb-fitness-bfv-snapshot"}});
    let action = format!("{nova}/servers/{server}/action");
    let (status, body) = call(&rig, reqwest::Method::POST, &alice, &action, Some(snapshot)).await;
    assert_eq!(status, 202, "{body}");
    let image = body["image_id"].as_str().unwrap().to_owned();
    let glance_image = format!("{}/v2/images/{image}", rig.glance);
    assert_eq!(
        until(&rig, &alice, &glance_image, "/status", &["active", "killed"]).await,
        "active"
    );
    let (_, facts) = rig.glance_get(&alice, &format!("/v2/images/{image}")).await;
    assert_eq!(facts["size"], 0, "{facts}");
    assert!(
        facts["block_device_mapping"]
            .as_str()
            .unwrap()
            .contains("\"source_type\": \"snapshot\"")
    );

    let request = validate(&app, &worker, &image).await;
    assert_eq!(request["status"], "invalid", "{request}");
    let errors = image_errors(&request);
    assert_eq!(errors.len(), 1, "{request}");
    assert!(
        errors[0].contains("zero-byte snapshot of a volume-backed server"),
        "{errors:?}"
    );
    assert!(errors[0].contains("openstack image create --volume"), "{errors:?}");

    // The dry run says the same, at once.
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "fitness"});
    let dry = app
        .post(&app.requester, "/v1/share-requests?dry_run=true", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(dry.status(), StatusCode::OK);
    let dry: Value = dry.json().await.unwrap();
    assert_eq!(dry["valid"], false);
    assert_eq!(dry["errors"][0]["reason"].as_str(), Some(errors[0].as_str()));

    // Best effort: the server, then the snapshot image.
    call(
        &rig,
        reqwest::Method::DELETE,
        &alice,
        &format!("{nova}/servers/{server}"),
        None,
    )
    .await;
    call(&rig, reqwest::Method::DELETE, &alice, &glance_image, None).await;
}

#[tokio::test]
async fn an_active_image_passes_with_the_risks_approvers_should_see() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("fitness-hidden").await;
    let response = rig
        .http
        .patch(format!("{}/v2/images/{image}", rig.glance))
        .header("x-auth-token", rig.token("alice").await)
        .header("content-type", "application/openstack-images-v2.1-json-patch")
        .body(json!([{"op": "replace", "path": "/os_hidden", "value": true}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let request = validate(&app, &worker, &image).await;
    assert_eq!(request["validation"]["state"], "passed", "{request}");
    assert_eq!(request["validation"]["errors"], json!([]));
    let warnings = request["validation"]["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{request}");
    assert_eq!(warnings[0]["code"], "image_hidden");
    let plain = rig.private_image("fitness-plain").await;
    let request = validate(&app, &worker, &plain).await;
    assert_eq!(request["validation"]["state"], "passed", "{request}");
    assert_eq!(
        request["validation"]["warnings"],
        json!([]),
        "data, checksum, and the guard on"
    );
}

/// What a dry run must never leave behind.
async fn stored(pool: &PgPool) -> [i64; 4] {
    let mut counts = [0; 4];
    for (i, table) in ["share_requests", "jobs", "audit_events", "idempotency_keys"]
        .iter()
        .enumerate()
    {
        counts[i] = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(pool)
            .await
            .unwrap();
    }
    counts
}

#[tokio::test]
async fn a_dry_run_answers_what_validation_finds_and_stores_nothing() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("dry-run").await;
    let before = stored(&app.pool).await;
    let body = json!({"image_id": image, "targets": ["proj-b", env("PROJ_C_ID")], "reason": "dry run"});
    let response = app
        .post(&app.requester, "/v1/share-requests?dry_run=true", &body)
        .header("idempotency-key", "dry-once")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let dry: Value = response.json().await.unwrap();
    assert_eq!(dry["valid"], true, "{dry}");
    assert_eq!(dry["errors"], json!([]));
    assert_eq!(dry["image"]["owner"], env("PROJ_A_ID").as_str());
    assert_eq!(dry["targets"][0]["target"], "proj-b");
    assert_eq!(dry["targets"][0]["project_id"], env("PROJ_B_ID").as_str());
    assert_eq!(dry["targets"][1]["project_name"], "proj-c");
    assert_eq!(stored(&app.pool).await, before, "no request, job, audit event or key");

    // The key was not used: filing with it is a first filing.
    let response = app
        .post(&app.requester, "/v1/share-requests", &body)
        .header("idempotency-key", "dry-once")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);

    // Now proj-c holds a live share (undecided): a dry run says so, on its target.
    let again = json!({"image_id": image, "targets": [env("PROJ_C_ID")], "reason": "again"});
    let dry: Value = app
        .post(&app.requester, "/v1/share-requests?dry_run=true", &again)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dry["valid"], false);
    assert_eq!(dry["errors"][0]["field"], "targets[0]", "{dry}");
}

#[tokio::test]
async fn a_dry_run_lists_every_error_and_input_that_never_reaches_validation_is_422() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("dry-run-bad").await;
    let body = json!({"image_id": image, "targets": ["gsb-no-such-project", env("PROJ_A_ID")], "reason": "bad"});
    let response = app
        .post(&app.requester, "/v1/share-requests?dry_run=true", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let dry: Value = response.json().await.unwrap();
    assert_eq!(dry["valid"], false);
    let fields: Vec<&str> = dry["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["targets[0]", "targets[1]"], "{dry}");
    assert_eq!(dry["targets"][0]["project_id"], Value::Null);

    for (path, body, field) in [
        (
            "/v1/share-requests?dry_run=true",
            json!({"image_id": image, "targets": []}),
            "reason",
        ),
        (
            "/v1/share-requests?dry_run=maybe",
            json!({"image_id": image, "targets": ["proj-b"], "reason": "x"}),
            "dry_run",
        ),
        (
            "/v1/share-requests?dry_run=true&x=1",
            json!({"image_id": image, "targets": ["proj-b"], "reason": "x"}),
            "x",
        ),
    ] {
        let response = app.post(&app.requester, path, &body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        let problem: Value = response.json().await.unwrap();
        assert!(problem.to_string().contains(field), "{path}: {problem}");
    }
    assert_eq!(stored(&app.pool).await[0], 0);
}

#[tokio::test]
async fn who_may_not_file_may_not_dry_run() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("dry-run-who").await;
    let body = json!({"image_id": image, "targets": ["proj-b"], "reason": "who"});
    let path = "/v1/share-requests?dry_run=true";
    for key in [&app.approver, &app.auditor] {
        let response = app.post(key, path, &body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    let response = app.client.post(app.url(path)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Carol acts for proj-c: alice's image is not hers to share.
    let response = app
        .post_as(&rig.token("carol").await, path, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Alice may.
    let response = app
        .post_as(&rig.token("alice").await, path, &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(stored(&app.pool).await[0], 0);
}

/// Many dry runs at once: each is answered (200, or 503 with Retry-After once the API's own
/// Glance budget is spent), and nothing is stored.
#[tokio::test]
async fn concurrent_dry_runs_store_nothing_and_keep_to_the_api_glance_budget() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("dry-run-many").await;
    let before = stored(&app.pool).await;
    let body = json!({"image_id": image, "targets": ["proj-b"], "reason": "many"});
    let answers = futures_util::future::join_all((0..12).map(|_| {
        app.post(&app.requester, "/v1/share-requests?dry_run=true", &body)
            .send()
    }))
    .await;
    let mut ok = 0;
    for answer in answers {
        let answer = answer.unwrap();
        match answer.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                let after = answer.headers().contains_key("retry-after");
                assert!(after, "{:?}", answer.text().await);
            }
            other => panic!("{other}: {:?}", answer.text().await),
        }
    }
    assert!(ok >= 1);
    assert_eq!(stored(&app.pool).await, before);
}
