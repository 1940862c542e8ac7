//! Webhooks: a local receiver checks each delivery's signature as a receiver would, the order
//! of events, and retries after failures; endpoints are managed by admins only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use glance_share_broker::worker::{Outcome, Worker};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, fields, problem, share_state, spawn_app};
use crate::openstack::{Rig, broker_cloud, drive_until, env, worker_config};
use crate::pytools;

/// One delivery as the receiver took it.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    /// The Standard Webhooks headers: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    id: String,
    timestamp: String,
    signature: String,
    body: Bytes,
}

/// A webhook receiver on a free port: it answers 500 to the first `fail_first` deliveries
/// (or to all, with `usize::MAX`) and keeps every delivery (`all`) and those it accepts, in
/// arrival order.
#[derive(Clone)]
struct Receiver {
    accepted: Arc<Mutex<Vec<Received>>>,
    all: Arc<Mutex<Vec<Received>>>,
    refusals_left: Arc<Mutex<usize>>,
    url: String,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            accepted: Arc::default(),
            all: Arc::default(),
            refusals_left: Arc::new(Mutex::new(fail_first)),
            url: format!("http://{}/hooks/glance", listener.local_addr().unwrap()),
        };
        let app = axum::Router::new()
            .route("/hooks/glance", post(take))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    fn accepted(&self) -> Vec<Received> {
        self.accepted.lock().unwrap().clone()
    }

    fn all(&self) -> Vec<Received> {
        self.all.lock().unwrap().clone()
    }
}

async fn take(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let delivery = Received {
        event: header("x-gsb-event"),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
    };
    receiver.all.lock().unwrap().push(delivery.clone());
    let mut left = receiver.refusals_left.lock().unwrap();
    if *left > 0 {
        *left = left.saturating_sub(1);
        return AxumStatus::INTERNAL_SERVER_ERROR;
    }
    receiver.accepted.lock().unwrap().push(delivery);
    AxumStatus::NO_CONTENT
}

/// What a Standard Webhooks receiver does, written out: the key is the base64 after `whsec_`;
/// recompute the HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>", compare it with
/// each `v1,<base64>` of `webhook-signature`, and refuse old timestamps (replays).
fn verify(secret: &str, delivery: &Received) -> bool {
    let Ok(key) = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)) else {
        return false;
    };
    let fresh = delivery
        .timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() < 300);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", delivery.id, delivery.timestamp).as_bytes());
    mac.update(&delivery.body);
    let expected = mac.finalize().into_bytes();
    fresh
        && delivery.signature.split(' ').any(|sig| {
            sig.strip_prefix("v1,")
                .and_then(|b64| STANDARD.decode(b64).ok())
                .is_some_and(|sig| sig == expected.as_slice())
        })
}

/// Every delivery verified by the spec's own Python library (`standardwebhooks`), which must
/// also refuse each under another secret and with its body changed.
async fn verified_by_standard_webhooks(secret: &str, deliveries: &[Received]) {
    let deliveries: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            json!({
                "headers": {"webhook-id": d.id, "webhook-timestamp": d.timestamp, "webhook-signature": d.signature},
                "body": String::from_utf8(d.body.to_vec()).unwrap(),
            })
        })
        .collect();
    let input = json!({"secret": secret, "deliveries": deliveries});
    let out = pytools::check("webhook_verify.py", &[], input.to_string().as_bytes()).await;
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["verified"], deliveries.len(), "{summary}");
}

async fn register(app: &TestApp, body: Value) -> Value {
    let response = app.post(&app.admin, "/v1/webhooks", &body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// Sends due deliveries until `done` holds, waiting for retries scheduled later.
async fn deliver_until(worker: &Worker, what: &str, done: impl Fn() -> bool) {
    for _ in 0..200 {
        while worker.deliver_once().await.unwrap() == Outcome::Ran {}
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Files a request of a new image of proj-a for proj-b, validates it and approves it; runs the
/// share jobs until the share is granted. Returns (request id, share id).
async fn grant_one(app: &TestApp, worker: &Worker) -> (String, String) {
    let image = Rig::from_env().private_image("webhooks").await;
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "webhooks"});
    let approved = app.file_and_approve(body, Some(worker)).await;
    let share = approved["shares"][0]["id"].as_str().unwrap().to_owned();
    drive_until(worker, &app.pool, "the share is granted", async |pool| {
        share_state(pool, &share).await == "pending_acceptance"
    })
    .await;
    (approved["id"].as_str().unwrap().to_owned(), share)
}

#[tokio::test]
async fn deliveries_are_signed_come_in_order_and_are_retried_after_failures() {
    let (app, receiver) = (spawn_app().await, Receiver::start(2).await);
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let hook = register(&app, json!({"url": receiver.url, "description": "portal"})).await;
    let (id, secret) = (hook["id"].as_str().unwrap(), hook["secret"].as_str().unwrap());
    assert!(secret.starts_with("whsec_"));

    let (request_id, share) = grant_one(&app, &worker).await;
    let response = app
        .post(&app.admin, &format!("/v1/shares/{share}/accept"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    drive_until(&worker, &app.pool, "the share is accepted", async |pool| {
        share_state(pool, &share).await == "accepted"
    })
    .await;
    let revoke = json!({"force": true, "reason": "done"});
    let response = app
        .post(&app.requester, &format!("/v1/shares/{share}/revoke"), &revoke)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    drive_until(&worker, &app.pool, "the share is revoked", async |pool| {
        share_state(pool, &share).await == "revoked"
    })
    .await;

    let wanted = [
        "request.created",
        "request.needs_approval",
        "request.approved",
        "share.granted",
        "share.pending_acceptance",
        "share.accepted",
        "share.revoked",
    ];
    deliver_until(&worker, "every event is delivered", || {
        receiver.accepted().len() == wanted.len()
    })
    .await;
    let accepted = receiver.accepted();
    let events: Vec<&str> = accepted.iter().map(|r| r.event.as_str()).collect();
    assert_eq!(events, wanted, "in the order they happened, retries included");
    let all = receiver.all();
    assert_eq!(all.len(), wanted.len() + 2, "two refused, then each once");
    verified_by_standard_webhooks(secret, &all).await;
    assert_eq!(all[0].id, all[2].id, "a retry keeps its webhook-id");
    for delivery in &accepted {
        assert!(verify(secret, delivery), "{delivery:?}");
        assert!(!verify("whsec_d3Jvbmc=", delivery));
        let body: Value = serde_json::from_slice(&delivery.body).unwrap();
        assert_eq!(body["event"], delivery.event.as_str());
    }
    let first: Value = serde_json::from_slice(&accepted[0].body).unwrap();
    assert_eq!(first["resource"]["type"], "share_request");
    assert_eq!(first["resource"]["id"], request_id.as_str());
    let last: Value = serde_json::from_slice(&accepted[6].body).unwrap();
    assert_eq!(last["resource"]["type"], "share");
    assert_eq!(last["resource"]["state"], "revoked");

    // The log shows the two refusals the first delivery met before it went through.
    let log: Value = app
        .get(&app.admin, &format!("/v1/webhooks/{id}/deliveries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), wanted.len());
    let oldest = &items[wanted.len() - 1];
    assert_eq!(oldest["event"], "request.created");
    assert_eq!(oldest["state"], "delivered");
    assert_eq!(oldest["attempts"], 3);
    assert_eq!(oldest["last_status"], 204);
    assert!(items.iter().all(|d| d["state"] == "delivered"));
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_holds_up_no_share_and_gets_only_its_events() {
    let (app, receiver) = (spawn_app().await, Receiver::start(usize::MAX).await);
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let hook = register(
        &app,
        json!({"url": receiver.url, "events": ["request.approved", "share.granted"]}),
    )
    .await;

    // The share is granted while no delivery has gone through.
    grant_one(&app, &worker).await;
    assert!(receiver.accepted().is_empty());
    let secret = hook["secret"].as_str().unwrap();

    let log_path = format!("/v1/webhooks/{}/deliveries", hook["id"].as_str().unwrap());
    let log = async || -> Value { app.read_as(&app.admin, &log_path).await };
    let failed = |log: &Value| log["items"].as_array().unwrap().iter().all(|d| d["state"] == "failed");
    for _ in 0..200 {
        while worker.deliver_once().await.unwrap() == Outcome::Ran {}
        if failed(&log().await) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = log().await;
    let events: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["share.granted", "request.approved"],
        "newest first, nothing else"
    );
    for delivery in log["items"].as_array().unwrap() {
        assert_eq!(delivery["state"], "failed", "{delivery}");
        assert_eq!(delivery["attempts"], worker_config().webhooks.max_attempts);
        assert_eq!(delivery["last_status"], 500);
        assert_eq!(
            delivery["last_error"],
            "the receiver answered 500 Internal Server Error"
        );
    }
    let all = receiver.all();
    assert_eq!(all.len(), 2 * worker_config().webhooks.max_attempts as usize);
    verified_by_standard_webhooks(secret, &all).await;
}

#[tokio::test]
async fn only_admins_manage_webhooks_and_the_secret_is_shown_once() {
    let app = spawn_app().await;
    let body = json!({"url": "https://portal.example.com/hook", "events": ["share.granted"]});
    for key in [&app.requester, &app.approver, &app.auditor] {
        let response = app.post(key, "/v1/webhooks", &body).send().await.unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
    }
    let bad = json!({
        "url": "ftp://example.com/x",
        "events": ["share.granted", "share.exploded", "share.granted"],
        "description": "nul \u{0} inside",
    });
    let response = app.post(&app.admin, "/v1/webhooks", &bad).send().await.unwrap();
    let problem_body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&problem_body), ["url", "events[1]", "events[2]", "description"]);

    let created = register(&app, body).await;
    let id = created["id"].as_str().unwrap();
    let secret = created["secret"].as_str().unwrap();
    let path = format!("/v1/webhooks/{id}");
    let shown: Value = app.get(&app.admin, &path).send().await.unwrap().json().await.unwrap();
    assert_eq!(shown["events"], json!(["share.granted"]));
    assert!(shown.get("secret").is_none());
    let listed: Value = app
        .get(&app.admin, "/v1/webhooks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!listed.to_string().contains(secret));

    let response = app
        .client
        .patch(app.url(&path))
        .bearer_auth(&app.admin)
        .json(&json!({"active": false, "events": []}))
        .send()
        .await
        .unwrap();
    let changed: Value = response.json().await.unwrap();
    assert_eq!(
        (changed["active"].clone(), changed["events"].clone()),
        (json!(false), json!([]))
    );

    let response = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    problem(app.get(&app.admin, &path).send().await.unwrap(), StatusCode::NOT_FOUND).await;

    let audited: Vec<(String, Value)> =
        sqlx::query_as("select action, details from audit_events where action like '%/webhook' order by seq")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let actions: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "create/webhook", // refused: the requester
            "create/webhook", // refused: the approver
            "create/webhook", // refused: the auditor
            "create/webhook",
            "update/webhook",
            "delete/webhook"
        ]
    );
    assert!(audited.iter().all(|(_, d)| !d.to_string().contains(secret)));
    assert_eq!(audited[3].1["host"], "portal.example.com");
}
