//! The binary as an operator runs it: migrate, keys, serve, SIGTERM, serve again.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{IMAGE, PROJ_B, fresh_database, request_body};

const BIN: &str = env!("CARGO_BIN_EXE_glance-share-broker");

fn run(db: &str, args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).env("DATABASE_URL", db).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `command` (`serve --no-worker` or `api`) on `port` until it is ready.
async fn serve(db: &str, port: u16, command: &[&str]) -> Child {
    let mut child = Command::new(BIN)
        .args(command)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let status = child.wait().unwrap();
    panic!("the broker did not become ready within 10 s (exit: {status})");
}

fn stop(mut child: Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean shutdown, got {status}");
}

#[tokio::test]
async fn data_survives_a_restart_of_the_broker() {
    let db = fresh_database().await;
    assert!(run(&db, &["migrate"]).contains("migrations applied"));
    let out = run(&db, &["keys", "create", "--name", "portal", "--role", "requester"]);
    let key = out.lines().last().unwrap().to_owned();
    assert!(key.starts_with("gsb_"));
    assert!(run(&db, &["keys", "list"]).contains("portal\trequester"));

    let port = free_port();
    let broker = serve(&db, port, &["serve", "--no-worker"]).await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("http://127.0.0.1:{port}/v1/share-requests"))
        .bearer_auth(&key)
        .json(&request_body(IMAGE, &[PROJ_B]))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    stop(broker);

    // Back as the API alone (`api`), it serves what was stored.
    let broker = serve(&db, port, &["api"]).await;
    let url = format!(
        "http://127.0.0.1:{port}/v1/share-requests/{}",
        created["id"].as_str().unwrap()
    );
    let fetched: Value = client
        .get(url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, created);

    assert!(run(&db, &["keys", "revoke", "--name", "portal"]).contains("revoked"));
    let refused = client
        .get(format!("http://127.0.0.1:{port}/v1/shares"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    stop(broker);
}

#[test]
fn a_bad_setting_is_named_and_the_secret_is_not_printed() {
    let out = Command::new(BIN)
        .args(["migrate"])
        .env("DATABASE_URL", "mysql://u:hunter2@x/db")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let out = Command::new(BIN)
        .args(["serve", "--listen", "nowhere"])
        .env("DATABASE_URL", "postgres://x@127.0.0.1/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));

    let out = Command::new(BIN)
        .args(["serve"])
        .env("DATABASE_URL", "postgres://x@127.0.0.1/x")
        .env("GSB_MAX_TARGETS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max-targets"));
}

#[test]
fn with_no_command_the_broker_serves_with_its_settings_from_the_environment() {
    let out = Command::new(BIN)
        .env("DATABASE_URL", "mysql://u:hunter2@x/db")
        .env("GSB_NO_WORKER", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let out = Command::new(BIN).env_remove("DATABASE_URL").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a missing setting is a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--database-url"), "{stderr}");
}

#[test]
fn the_openapi_command_prints_the_committed_spec() {
    let out = Command::new(BIN).arg("openapi").output().unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

/// Runs the binary with `args`; (success, stdout, stderr).
fn try_run(db: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", db)
        .env("GSB_LOG_FORMAT", "json")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `audit.checkpoint` lines of a JSON log: (chain_pos, hash).
fn logged_checkpoints(stderr: &str) -> Vec<(i64, String)> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "audit.checkpoint")
        .map(|line| {
            (
                line["chain_pos"].as_i64().unwrap(),
                line["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn keys_create_and_revoke_are_audited_and_the_secret_is_nowhere_in_the_log() {
    let db = fresh_database().await;
    run(&db, &["migrate"]);
    let out = run(
        &db,
        &[
            "keys",
            "create",
            "--name",
            "portal",
            "--role",
            "requester",
            "--project",
            "proj-a",
        ],
    );
    let secret = out.lines().last().unwrap().to_owned();
    assert!(run(&db, &["keys", "revoke", "--name", "portal"]).contains("revoked"));
    assert!(
        !try_run(&db, &["keys", "revoke", "--name", "portal"]).0,
        "revoked already"
    );

    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let rows: Vec<(String, String, Value, Value, String)> = sqlx::query_as(
        "select action, outcome, initiator, details, to_jsonb(e)::text from audit_events e order by seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actions,
        ["create/key", "delete/key"],
        "one event per change, none for a refused one"
    );
    let key_id: String = sqlx::query_scalar("select id::text from api_keys where name = 'portal'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    };
    for (_, outcome, initiator, details, row) in &rows {
        assert_eq!(outcome, "success");
        assert_eq!(initiator["kind"], "database_user");
        assert_eq!(initiator["name"], "postgres", "the database user who made the change");
        assert_eq!(
            details["key"],
            serde_json::json!({"id": key_id, "name": "portal", "role": "requester", "projects": ["proj-a"]})
        );
        let bare = secret.trim_start_matches("gsb_");
        assert!(!row.contains(bare) && !row.contains(&hash), "the secret leaked: {row}");
    }
    let (ok, stdout, _) = try_run(&db, &["audit", "verify"]);
    assert!(ok && stdout.contains("the chain holds up to place 2"), "{stdout}");
}

#[tokio::test]
async fn audit_verify_logs_each_checkpoint_and_fails_on_an_anchor_the_chain_does_not_hold() {
    let db = fresh_database().await;
    run(&db, &["migrate"]);
    for name in ["portal", "approvals", "auditor"] {
        run(&db, &["keys", "create", "--name", name, "--role", "requester"]);
    }
    let (ok, _, stderr) = try_run(&db, &["audit", "verify"]);
    assert!(ok, "{stderr}");
    let logged = logged_checkpoints(&stderr);
    assert_eq!(logged.len(), 1, "{stderr}");
    let (pos, hash) = logged[0].clone();
    assert_eq!(pos, 3);
    let anchor = format!("{pos}:{hash}");
    let first: String = {
        let pool = sqlx::PgPool::connect(&db).await.unwrap();
        sqlx::query_scalar("select encode(hash, 'hex') from audit_events where chain_pos = 1")
            .fetch_one(&pool)
            .await
            .unwrap()
    };

    // The anchors an auditor kept hold: the check passes.
    let (ok, stdout, stderr) = try_run(
        &db,
        &[
            "audit",
            "verify",
            "--expect",
            &anchor,
            "--expect",
            &format!("1:{first}"),
        ],
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("2 anchors match the chain"), "{stdout}");

    // Another hash at a place, or a place the chain does not reach: a clear failure.
    let zeros = "0".repeat(64);
    for (expect, finding) in [
        (
            format!("3:{zeros}"),
            "the event at place 3 does not have the anchored hash",
        ),
        (format!("9:{hash}"), "the chain has no event at place 9"),
    ] {
        let (ok, stdout, stderr) = try_run(&db, &["audit", "verify", "--expect", &anchor, "--expect", &expect]);
        assert!(!ok, "{stdout}");
        assert!(stdout.contains("ANCHOR MISMATCH"), "{stdout}");
        assert!(
            stderr.contains(&format!("does not match the anchor --expect {expect}")) && stderr.contains(finding),
            "{stderr}"
        );
        assert!(
            logged_checkpoints(&stderr).is_empty(),
            "no checkpoint of a failed check"
        );
    }
    let (ok, _, stderr) = try_run(&db, &["audit", "verify", "--expect", "3:abc"]);
    assert!(
        !ok && stderr.contains("--expect") && stderr.contains("<chain_pos>:<hash>"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_anchor_catches_history_rewritten_with_its_checkpoints_by_the_superuser() {
    use glance_share_broker::db::audit::Event;

    let db = fresh_database().await;
    run(&db, &["migrate"]);
    for name in ["portal", "approvals"] {
        run(&db, &["keys", "create", "--name", name, "--role", "requester"]);
    }
    let (ok, _, stderr) = try_run(&db, &["audit", "verify"]);
    assert!(ok, "{stderr}");
    let (pos, hash) = logged_checkpoints(&stderr).remove(0);

    // Whoever has the database's keys rewrites the first event, re-hashes the chain after
    // it, and rewrites the checkpoints to match: every check inside the database passes.
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    let mut events: Vec<Event> = sqlx::query_as("select * from audit_events order by chain_pos")
        .fetch_all(&pool)
        .await
        .unwrap();
    events[0].details["key"]["role"] = "admin".into();
    let mut prev = events[0].prev_hash.clone();
    for event in &mut events {
        event.prev_hash = prev;
        event.hash = event.expected_hash();
        prev = event.hash.clone();
    }
    let mut tx = pool.begin().await.unwrap();
    for sql in [
        "alter table audit_events disable trigger user",
        "alter table audit_checkpoints disable trigger user",
        "delete from audit_checkpoints",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    for event in &events {
        sqlx::query("update audit_events set details = $2, digest = $3, prev_hash = $4, hash = $5 where seq = $1")
            .bind(event.seq)
            .bind(&event.details)
            .bind(&event.content_digest().unwrap()[..])
            .bind(&event.prev_hash)
            .bind(&event.hash)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    for sql in [
        "alter table audit_events enable trigger user",
        "alter table audit_checkpoints enable trigger user",
    ] {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    assert!(try_run(&db, &["audit", "verify"]).0, "the database alone cannot tell");

    let (ok, stdout, stderr) = try_run(&db, &["audit", "verify", "--expect", &format!("{pos}:{hash}")]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("the history up to there was rewritten"), "{stderr}");
}
