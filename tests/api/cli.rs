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

fn free_port() -> u16 {
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
fn the_openapi_command_prints_the_committed_spec() {
    let out = Command::new(BIN).arg("openapi").output().unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}
