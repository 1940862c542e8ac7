//! The worker against a Glance that fails: each failure Glance can answer with is either
//! retried until it passes or ends the share `failed` with a plain error.

use std::time::Duration;

use glance_share_broker::db;
use glance_share_broker::worker::{Worker, WorkerConfig};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::fake_glance::{FakeGlance, Fault};
use crate::helpers::{TestApp, share_state, spawn_app};
use crate::openstack::{broker_cloud_with_glance, drain, drive_until, env, worker_config};

/// A broker whose worker talks to the fake Glance, which holds one image of proj-a.
pub struct Setup {
    pub app: TestApp,
    pub fake: FakeGlance,
    pub worker: Worker,
    /// The fake Glance's address.
    pub url: String,
    pub image: String,
    pub proj_b: String,
}

pub async fn setup(visibility: &str) -> Setup {
    let app = spawn_app().await;
    let (fake, url) = FakeGlance::start().await;
    let image = Uuid::new_v4().to_string();
    fake.add_image(&image, &env("PROJ_A_ID"), visibility);
    let worker = Worker::new(
        app.pool.clone(),
        broker_cloud_with_glance(&url, Duration::from_millis(1500)),
        worker_config(),
    );
    Setup {
        app,
        fake,
        worker,
        url,
        image,
        proj_b: env("PROJ_B_ID"),
    }
}

/// Files and approves a share of the setup's image to proj-b; returns the share id.
pub async fn approve_one(s: &Setup) -> String {
    let body = json!({"image_id": s.image, "targets": [s.proj_b], "reason": "faults"});
    s.app.file_and_approve(body, Some(&s.worker)).await["shares"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn share(app: &TestApp, id: &str) -> Value {
    app.read(&format!("/v1/shares/{id}")).await
}

pub async fn until_state(s: &Setup, id: &str, state: &'static str) -> Value {
    let id2 = id.to_owned();
    drive_until(&s.worker, &s.app.pool, state, async move |pool: &PgPool| {
        share_state(pool, &id2).await == state
    })
    .await;
    share(&s.app, id).await
}

#[tokio::test]
async fn server_errors_are_retried_until_glance_answers() {
    let s = setup("shared").await;
    s.fake.inject(
        Method::POST,
        "add_member",
        [Fault::Status(503, None), Fault::Status(500, None)],
    );
    let id = approve_one(&s).await;
    let view = until_state(&s, &id, "pending_acceptance").await;
    assert_eq!(s.fake.calls(Method::POST, "add_member"), 3);
    assert_eq!(s.fake.member_status(&s.image, &s.proj_b).as_deref(), Some("pending"));
    assert_eq!(view["last_error"], Value::Null, "success clears the error");
}

#[tokio::test]
async fn a_hung_call_times_out_and_is_retried() {
    let s = setup("shared").await;
    s.fake
        .inject(Method::POST, "add_member", [Fault::Hang(Duration::from_secs(5))]);
    let id = approve_one(&s).await;
    until_state(&s, &id, "pending_acceptance").await;
    assert_eq!(s.fake.calls(Method::POST, "add_member"), 2);
}

#[tokio::test]
async fn too_many_requests_waits_as_long_as_retry_after_says() {
    let s = setup("shared").await;
    s.fake.inject(Method::POST, "add_member", [Fault::Status(429, Some(2))]);
    let id = approve_one(&s).await;
    drain(&s.worker).await;
    let view = share(&s.app, &id).await;
    assert_eq!(view["state"], "granting");
    assert!(view["last_error"].as_str().unwrap().contains("429"), "{view}");
    let wait: f64 = sqlx::query_scalar(
        "select extract(epoch from run_at - now())::float8 from jobs where share_id = $1::uuid and kind = 'grant'",
    )
    .bind(&id)
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert!(
        wait > 1.0,
        "the retry waits for Retry-After (2 s), not the 10 ms backoff: {wait}"
    );
    until_state(&s, &id, "pending_acceptance").await;
    assert_eq!(s.fake.calls(Method::POST, "add_member"), 2);
}

#[tokio::test]
async fn the_member_quota_fails_the_share_with_a_plain_error() {
    let s = setup("shared").await;
    s.fake.set_quota(0);
    let id = approve_one(&s).await;
    let view = until_state(&s, &id, "failed").await;
    assert!(view["last_error"].as_str().unwrap().contains("member quota"), "{view}");
    assert_eq!(
        s.fake.calls(Method::POST, "add_member"),
        1,
        "a permanent error is not retried"
    );
}

#[tokio::test]
async fn a_public_image_fails_validation() {
    let s = setup("public").await;
    let body = json!({"image_id": s.image, "targets": [s.proj_b], "reason": "faults"});
    let filed = s.app.file_as(&s.app.requester, &body).await;
    let request = s.app.validated(filed["id"].as_str().unwrap(), Some(&s.worker)).await;
    assert_eq!(request["status"], "invalid");
    assert_eq!(request["validation"]["errors"][0]["field"], "image_id");
    assert!(
        request["validation"]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("public image cannot take members"),
        "{request}"
    );
    assert_eq!(s.fake.calls(Method::POST, "add_member"), 0);
}

#[tokio::test]
async fn an_image_made_public_after_validation_fails_the_share() {
    let s = setup("shared").await;
    let body = json!({"image_id": s.image, "targets": [s.proj_b], "reason": "faults"});
    let filed = s.app.file_as(&s.app.requester, &body).await;
    let id = filed["id"].as_str().unwrap();
    s.app.validated(id, Some(&s.worker)).await;
    s.fake.add_image(&s.image, &env("PROJ_A_ID"), "public");
    let approved: Value = s
        .app
        .post(&s.app.approver, &format!("/v1/share-requests/{id}/approve"), &json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let share_id = approved["shares"][0]["id"].as_str().unwrap();
    let view = until_state(&s, share_id, "failed").await;
    assert!(
        view["last_error"]
            .as_str()
            .unwrap()
            .contains("public image cannot have members"),
        "{view}"
    );
    assert_eq!(s.fake.calls(Method::POST, "add_member"), 0);
}

#[tokio::test]
async fn glance_failing_during_validation_keeps_the_request_pending_and_retries() {
    let s = setup("shared").await;
    s.fake.inject(Method::GET, "get_image", [Fault::Status(503, None)]);
    let body = json!({"image_id": s.image, "targets": [s.proj_b], "reason": "faults"});
    let filed = s.app.file_as(&s.app.requester, &body).await;
    let id = filed["id"].as_str().unwrap();
    s.worker.run_once().await.unwrap();
    let pending = s.app.read(&format!("/v1/share-requests/{id}")).await;
    assert_eq!(pending["validation"]["state"], "pending");
    assert!(
        pending["validation"]["last_error"].as_str().unwrap().contains("503"),
        "{pending}"
    );
    let response = s
        .app
        .post(&s.app.approver, &format!("/v1/share-requests/{id}/approve"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409, "no approval before validation");

    let request = s.app.validated(id, Some(&s.worker)).await;
    assert_eq!(request["validation"]["state"], "passed", "{request}");
    assert_eq!(request["validation"]["last_error"], Value::Null);
}

#[tokio::test]
async fn validation_refuses_what_would_pass_the_member_quota() {
    let s = setup("shared").await;
    let worker = Worker::new(
        s.app.pool.clone(),
        broker_cloud_with_glance(&s.url, Duration::from_millis(1500)),
        WorkerConfig {
            member_quota: 1,
            ..worker_config()
        },
    );
    s.fake.add_existing_member(&s.image, &env("PROJ_C_ID"));
    let body = json!({"image_id": s.image, "targets": [s.proj_b], "reason": "faults"});
    let filed = s.app.file_as(&s.app.requester, &body).await;
    let request = s.app.validated(filed["id"].as_str().unwrap(), Some(&worker)).await;
    assert_eq!(request["status"], "invalid");
    assert_eq!(request["validation"]["errors"][0]["field"], "targets");
    assert!(
        request["validation"]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("member quota of 1"),
        "{request}"
    );
}

#[tokio::test]
async fn a_forbidden_add_fails_the_share() {
    let s = setup("shared").await;
    s.fake.inject(Method::POST, "add_member", [Fault::Status(403, None)]);
    let id = approve_one(&s).await;
    let view = until_state(&s, &id, "failed").await;
    assert!(view["last_error"].as_str().unwrap().contains("403"), "{view}");
}

#[tokio::test]
async fn an_existing_member_counts_as_granted_and_a_missing_one_as_revoked() {
    let s = setup("shared").await;
    s.fake.add_existing_member(&s.image, &s.proj_b);
    let id = approve_one(&s).await;
    until_state(&s, &id, "pending_acceptance").await;

    // Someone removed the member behind the broker's back; the revoke still completes.
    s.fake
        .inject(Method::DELETE, "delete_member", [Fault::Status(404, None)]);
    let path = format!("/v1/shares/{id}/revoke");
    let response = s
        .app
        .post(&s.app.requester, &path, &json!({"force": true, "reason": "done"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    until_state(&s, &id, "revoked").await;
}

#[tokio::test]
async fn a_call_that_keeps_failing_fails_the_share_after_the_last_attempt() {
    let s = setup("shared").await;
    s.fake.inject(
        Method::POST,
        "add_member",
        std::iter::repeat_n(Fault::Status(502, None), 10),
    );
    let id = approve_one(&s).await;
    let view = until_state(&s, &id, "failed").await;
    assert_eq!(
        s.fake.calls(Method::POST, "add_member"),
        3,
        "max_attempts in the test config"
    );
    assert!(view["last_error"].as_str().unwrap().contains("502"), "{view}");
}

#[tokio::test]
async fn a_private_image_is_made_shared_and_back() {
    let s = setup("private").await;
    let id = approve_one(&s).await;
    until_state(&s, &id, "pending_acceptance").await;
    assert_eq!(s.fake.visibility(&s.image), "shared");
    let path = format!("/v1/shares/{id}/revoke");
    s.app
        .post(&s.app.requester, &path, &json!({"force": true, "reason": "done"}))
        .send()
        .await
        .unwrap();
    until_state(&s, &id, "revoked").await;
    assert_eq!(s.fake.visibility(&s.image), "private");
}

/// A claim that finds an image's first due job locked (another worker is claiming that
/// image) takes another image's first job with the rest of its batch: it does not lock the
/// first image's other jobs, which the other worker's batch would then leave behind.
#[tokio::test]
async fn a_claim_racing_another_for_an_image_takes_another_image() {
    let s = setup("shared").await;
    let second = Uuid::new_v4().to_string();
    s.fake.add_image(&second, &env("PROJ_A_ID"), "shared");
    let mut ids = Vec::new();
    for image in [&s.image, &second] {
        let body = json!({"image_id": image, "targets": [s.proj_b, env("PROJ_C_ID")], "reason": "race"});
        let filed = s.app.file_as(&s.app.requester, &body).await;
        ids.push(filed["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        s.app.validated(id, Some(&s.worker)).await;
    }
    for id in &ids {
        let approve = format!("/v1/share-requests/{id}/approve");
        let response = s.app.post(&s.app.approver, &approve, &json!({})).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }

    // Another worker's claim, in flight: it holds the row of the first due grant.
    let mut other = s.app.pool.begin().await.unwrap();
    let raced: Uuid = sqlx::query_scalar(
        "select image_id from jobs where kind = 'grant' and state = 'queued' order by run_at limit 1 for update",
    )
    .fetch_one(&mut *other)
    .await
    .unwrap();
    let claim = db::jobs::claim(&s.app.pool, Duration::from_secs(10), 64).await.unwrap();
    let held = claim.map(|claim| claim.held).unwrap_or_default();
    let images: Vec<Option<Uuid>> = held.iter().map(|job| job.image_id).collect();
    let expected: Uuid = if raced.to_string() == s.image {
        second.parse().unwrap()
    } else {
        s.image.parse().unwrap()
    };
    assert_eq!(images, [Some(expected); 2], "both grants of the other image: {held:?}");
    other.rollback().await.unwrap();
}

/// Registers an endpoint for `events` (none: all) straight in the database, as an admin
/// would; deliveries are queued for it, and these tests look at the queue.
async fn hook(app: &TestApp, events: &[String]) {
    let mut tx = app.pool.begin().await.unwrap();
    let hook = db::webhooks::NewWebhook {
        url: "http://127.0.0.1:9/hook",
        events,
        description: None,
        created_by: "faults",
    };
    db::webhooks::create(&mut tx, hook).await.unwrap();
    tx.commit().await.unwrap();
}

/// How many deliveries of `event` are queued or sent.
async fn deliveries_of(app: &TestApp, event: &str) -> i64 {
    sqlx::query_scalar("select count(*) from webhook_deliveries where event = $1")
        .bind(event)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_expiry_revoke_that_meets_eight_503s_keeps_trying_reports_the_stall_and_ends_revoked() {
    let s = setup("shared").await;
    let worker = Worker::new(
        s.app.pool.clone(),
        broker_cloud_with_glance(&s.url, Duration::from_millis(1500)),
        WorkerConfig {
            max_attempts: 8,
            ..worker_config()
        },
    );
    hook(&s.app, &[]).await;
    let id = approve_one(&s).await;
    until_state(&s, &id, "pending_acceptance").await;
    s.fake.inject(
        Method::DELETE,
        "delete_member",
        // Glance answers 503 until the test says it is back.
        std::iter::repeat_n(Fault::Status(503, None), 1000),
    );
    sqlx::query(
        "update share_requests set expires_at = now() where id = (select request_id from shares where id = $1::uuid)",
    )
    .bind(&id)
    .execute(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(worker.sweep_expired().await.unwrap(), 1);

    // Eight answers of 503: the revoke has not given up, and says it is stalled.
    for _ in 0..200 {
        drain(&worker).await;
        if s.fake.calls(Method::DELETE, "delete_member") >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More tries may have gone in the last pass (their retry delays are tens of ms): the
    // worker runs only when the test drives it, so none is in flight now.
    let tries = s.fake.calls(Method::DELETE, "delete_member");
    assert!(tries >= 8, "{tries} tries");
    let view = share(&s.app, &id).await;
    assert_eq!(view["state"], "revoking", "{view}");
    assert!(view["last_error"].as_str().unwrap().contains("503"), "{view}");
    assert!(
        s.fake.member_status(&s.image, &s.proj_b).is_some(),
        "the member is still there"
    );
    assert_eq!(deliveries_of(&s.app, "share.revoke_stalled").await, 1);
    assert_eq!(deliveries_of(&s.app, "share.failed").await, 0);
    let stalled: Value = sqlx::query_scalar(
        "select details from audit_events where share_id = $1::uuid and action = 'revoke' and outcome = 'failure'",
    )
    .bind(&id)
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(stalled["stalled"], true, "{stalled}");
    assert_eq!(stalled["attempts"], 8, "{stalled}");
    worker.sweep_expired().await.unwrap();
    let metrics = glance_share_broker::telemetry::metrics_handle().render();
    assert!(metrics.contains("gsb_revoke_stalls_total"), "{metrics}");
    assert!(metrics.contains("gsb_revokes_stalled"), "{metrics}");

    // Glance comes back: the member goes, and the stall is reported once.
    let tries = s.fake.calls(Method::DELETE, "delete_member");
    s.fake.clear_faults(Method::DELETE, "delete_member");
    let id2 = id.clone();
    drive_until(&worker, &s.app.pool, "revoked", async move |pool: &PgPool| {
        share_state(pool, &id2).await == "revoked"
    })
    .await;
    assert_eq!(s.fake.member_status(&s.image, &s.proj_b), None);
    assert_eq!(s.fake.calls(Method::DELETE, "delete_member"), tries + 1);
    assert_eq!(deliveries_of(&s.app, "share.revoke_stalled").await, 1);
    assert_eq!(deliveries_of(&s.app, "share.revoked").await, 1);
    assert_eq!(share(&s.app, &id).await["last_error"], Value::Null);
}

#[tokio::test]
async fn a_grant_that_fails_after_adding_the_member_removes_it_before_the_share_fails() {
    let s = setup("shared").await;
    hook(&s.app, &[]).await;
    // The add succeeds; the accept for the consumer (auto_accept) is refused for good.
    s.fake.inject(Method::PUT, "put_member", [Fault::Status(403, None)]);
    let body = json!({"image_id": s.image, "targets": [s.proj_b], "reason": "faults", "auto_accept": true});
    let request = s.app.file_and_approve(body, Some(&s.worker)).await;
    let id = request["shares"][0]["id"].as_str().unwrap().to_owned();
    let view = until_state(&s, &id, "failed").await;
    assert_eq!(
        s.fake.member_status(&s.image, &s.proj_b),
        None,
        "a failed share leaves no member behind"
    );
    assert_eq!(s.fake.calls(Method::POST, "add_member"), 1);
    assert!(view["last_error"].as_str().unwrap().contains("403"), "{view}");
    let trail: Vec<(String, String)> =
        sqlx::query_as("select action, outcome from audit_events where share_id = $1::uuid order by seq")
            .bind(&id)
            .fetch_all(&s.app.pool)
            .await
            .unwrap();
    let tail: Vec<(&str, &str)> = trail[trail.len() - 3..]
        .iter()
        .map(|(a, o)| (a.as_str(), o.as_str()))
        .collect();
    // The member's removal lifts the deletion guard, too.
    assert_eq!(
        tail,
        [
            ("revoke", "pending"),
            ("update/unprotect", "success"),
            ("allow", "failure")
        ],
        "{trail:?}"
    );
    assert_eq!(deliveries_of(&s.app, "share.failed").await, 1);
    assert_eq!(deliveries_of(&s.app, "share.revoked").await, 0);
}

#[tokio::test]
async fn a_refused_action_on_a_failed_share_announces_nothing() {
    let s = setup("shared").await;
    hook(&s.app, &[]).await;
    s.fake.set_quota(0);
    let id = approve_one(&s).await;
    until_state(&s, &id, "failed").await;
    assert_eq!(deliveries_of(&s.app, "share.failed").await, 1, "the failure itself");
    let before: i64 = sqlx::query_scalar("select count(*) from webhook_deliveries")
        .fetch_one(&s.app.pool)
        .await
        .unwrap();

    // The owner's requester is not the consumer: refused, and audited.
    let response = s
        .app
        .post(&s.app.requester, &format!("/v1/shares/{id}/accept"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let refusals: i64 = sqlx::query_scalar(
        "select count(*) from audit_events where share_id = $1::uuid and action = 'accept' and outcome = 'failure'",
    )
    .bind(&id)
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(refusals, 1, "the refusal is audited");
    let after: i64 = sqlx::query_scalar("select count(*) from webhook_deliveries")
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
    assert_eq!(after, before, "a refusal announces nothing");
    assert_eq!(deliveries_of(&s.app, "share.failed").await, 1);
}
