//! What auditors read without walking the log: an image's access history (every grant,
//! answer and revoke, across projects) and the chain's state (head, backlog, last
//! checkpoint, last check, by any replica); and the policy's verdict kept with each request,
//! including for requests validated before the broker kept it.

use glance_share_broker::db;
use glance_share_broker::domain::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::faults::{approve_one, setup, until_state};
use crate::helpers::{PROJ_B, TestApp, fields, fresh_database, problem, spawn_app, spawn_app_at};
use crate::openstack::env;

async fn ok_json(app: &TestApp, key: &str, path: &str) -> Value {
    let response = app.get(key, path).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// Revokes `share` as the requester, forced (the test brokers have no Nova or Cinder to ask).
pub async fn revoke(app: &TestApp, share: &str, reason: &str) {
    let body = json!({"force": true, "reason": reason});
    let response = app
        .post(&app.requester, &format!("/v1/shares/{share}/revoke"), &body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{:?}", response.text().await);
}

#[tokio::test]
async fn an_images_access_history_lists_each_projects_grants_and_revokes_with_who_and_why_for_auditors_only() {
    let s = setup("shared").await;
    let app = &s.app;
    let first = approve_one(&s).await;
    until_state(&s, &first, "pending_acceptance").await;
    revoke(app, &first, "moved to another image").await;
    until_state(&s, &first, "revoked").await;
    let second = approve_one(&s).await;
    until_state(&s, &second, "pending_acceptance").await;
    // Another image's changes stay out of this image's history.
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;

    let path = format!("/v1/images/{}/access-history", s.image);
    let history = ok_json(app, &app.auditor, &path).await;
    let changes: Vec<(&str, &str, &str, &str)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap(),
                c["project_id"].as_str().unwrap(),
                c["by"].as_str().unwrap(),
                c["share_id"].as_str().unwrap(),
            )
        })
        .collect();
    let b = s.proj_b.as_str();
    assert_eq!(
        changes,
        [
            ("granted", b, "workflow", first.as_str()),
            ("revoked", b, "portal", first.as_str()),
            ("granted", b, "workflow", second.as_str()),
        ]
    );
    assert_eq!(history["items"][1]["reason"], "moved to another image");
    assert_eq!(history["items"][0]["image_id"], s.image.as_str());
    assert_eq!(history["next_cursor"], Value::Null);

    let one = ok_json(app, &app.auditor, &format!("{path}?limit=2")).await;
    assert_eq!(one["items"].as_array().unwrap().len(), 2);
    let cursor = one["next_cursor"].as_str().unwrap();
    let two = ok_json(app, &app.auditor, &format!("{path}?limit=2&cursor={cursor}")).await;
    assert_eq!(
        two["items"][0]["share_id"],
        second.as_str(),
        "nothing skipped or repeated"
    );

    for key in [&app.requester, &app.approver] {
        problem(app.get(key, &path).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    }
    // The image's own project does not read its access history: the log names every project.
    let scoped = db::api_keys::create(&app.pool, "proj-a-portal", Role::Requester, &[env("PROJ_A_ID")])
        .await
        .unwrap()
        .1;
    problem(app.get(&scoped, &path).send().await.unwrap(), StatusCode::FORBIDDEN).await;
    let bad = app
        .get(&app.auditor, "/v1/images/not-an-id/access-history")
        .send()
        .await
        .unwrap();
    assert_eq!(fields(&problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await), ["id"]);
    let bad = app.get(&app.auditor, &format!("{path}?limit=0")).send().await.unwrap();
    assert_eq!(fields(&problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await), ["limit"]);
}

async fn chain(app: &TestApp) -> Value {
    ok_json(app, &app.auditor, "/v1/audit-chain").await
}

async fn verify(app: &TestApp, query: &str) -> Value {
    ok_json(app, &app.auditor, &format!("/v1/audit-events/verify{query}")).await
}

#[tokio::test]
async fn the_chain_state_shows_the_head_and_the_last_check_whatever_it_found_for_auditors_only() {
    let app = spawn_app().await;
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    let before = chain(&app).await;
    assert_eq!(before["last_verification"], Value::Null, "{before}");
    // Every event committed is sealed before the state is read: the four keys and the filing.
    assert_eq!(before["head"]["chain_pos"], 5, "{before}");
    assert_eq!(before["unsealed_events"], 0);
    assert_eq!(before["head"]["hash"].as_str().unwrap().len(), 64);

    let report = verify(&app, "").await;
    assert_eq!(report["ok"], true);
    let after = chain(&app).await;
    let last = &after["last_verification"];
    assert_eq!(last["ok"], true, "{after}");
    assert_eq!(last["verified_by"], "verify by auditor");
    assert_eq!(last["events_checked"], 5);
    assert_eq!(last["head"], report["head"]);
    assert_eq!(last["problem"], Value::Null);
    assert_eq!(after["last_checkpoint"]["chain_pos"], 5);
    assert_eq!(after["last_checkpoint"]["hash"], report["head"]["hash"]);

    // A check that fails is recorded as it found it, with its first finding.
    let wrong = format!("?expect=2:{}", "ab".repeat(32));
    assert_eq!(verify(&app, &wrong).await["ok"], false);
    let failed = chain(&app).await;
    let last = &failed["last_verification"];
    assert_eq!(last["ok"], false, "{failed}");
    assert!(last["problem"].as_str().unwrap().contains("place 2"), "{last}");

    // Two auditors checking at once: both checks are recorded.
    let (one, two) = tokio::join!(verify(&app, ""), verify(&app, ""));
    assert!(one["ok"] == true && two["ok"] == true);
    let recorded: i64 = sqlx::query_scalar("select count(*) from audit_verifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 4);
    assert_eq!(chain(&app).await["last_verification"]["ok"], true);

    for key in [&app.requester, &app.approver] {
        problem(
            app.get(key, "/v1/audit-chain").send().await.unwrap(),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
}

#[tokio::test]
async fn a_recorded_check_cannot_be_changed_or_removed() {
    let app = spawn_app().await;
    verify(&app, "").await;
    for sql in [
        "update audit_verifications set ok = false",
        "delete from audit_verifications",
        "truncate audit_verifications",
    ] {
        let error = sqlx::query(sql).execute(&app.pool).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{sql}: {error}");
    }
}

/// A migrator with only the migrations before `version` (copied from `migrations/`).
async fn migrator_before(version: i64) -> Migrator {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let dir = std::env::temp_dir().join(format!("gsb-migrations-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for file in std::fs::read_dir(&source).unwrap() {
        let file = file.unwrap().file_name();
        let name = file.to_str().unwrap();
        let number: i64 = name.split('_').next().unwrap().parse().unwrap();
        if number < version {
            std::fs::copy(source.join(name), dir.join(name)).unwrap();
        }
    }
    Migrator::new(dir.as_path()).await.unwrap()
}

#[tokio::test]
async fn requests_validated_before_verdicts_were_kept_get_theirs_from_the_audit_log() {
    let url = fresh_database().await;
    let pool = PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
    migrator_before(20261203000005).await.run(&pool).await.unwrap();
    // Three requests as the worker left them: one awaiting two approvers, one denied for
    // asking auto_accept, and one not validated yet.
    let (waiting, forbidden, unvalidated) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for (id, validation, status) in [
        (waiting, "passed", "pending_approval"),
        (forbidden, "passed", "denied"),
        (unvalidated, "pending", "pending_approval"),
    ] {
        sqlx::query(
            "insert into share_requests (id, image_id, region, reason, requested_by, status, validation,
                                         requested_by_subject, updated_at)
             values ($1, $1, 'RegionOne', 'r', 'portal', $2, $3, 'key:portal', '2026-01-01T00:00:00Z')",
        )
        .bind(id)
        .bind(status)
        .bind(validation)
        .execute(&pool)
        .await
        .unwrap();
    }
    for (id, policy) in [
        (
            waiting,
            json!({"decision": "require_approval", "approvals": 2, "rule": "two-eyes"}),
        ),
        (
            forbidden,
            json!({"decision": "deny", "reason": "auto_accept_forbidden", "rule": null}),
        ),
    ] {
        sqlx::query(
            "insert into audit_events (id, occurred_at, action, outcome, initiator, target, observer, request_id,
                                       details, digest)
             values ($1, now(), 'update/validate', 'success', '{}', '{}', 'test', $2, $3, '\\x00')",
        )
        .bind(Uuid::new_v4())
        .bind(id)
        .bind(json!({ "policy": policy }))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let app = spawn_app_at(&url, |_| {}).await;
    let verdict = |id: Uuid| {
        let app = &app;
        async move { app.read(&format!("/v1/share-requests/{id}")).await["approval"]["verdict"].clone() }
    };
    assert_eq!(verdict(waiting).await, "require_approval");
    assert_eq!(verdict(forbidden).await, "auto_accept_forbidden");
    assert_eq!(verdict(unvalidated).await, Value::Null);
    let untouched: i64 =
        sqlx::query_scalar("select count(*) from share_requests where updated_at = '2026-01-01T00:00:00Z'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(untouched, 3, "filling the verdict in is not an update of the request");
}
