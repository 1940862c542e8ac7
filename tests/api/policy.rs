//! The approval policy applied by the worker once validation has the facts, against the real
//! Keystone and Glance (every seeded project is in the `Default` domain): rules that approve
//! and deny, two distinct approvers, expiry of undecided requests, and reloading the file.

use std::time::Duration;

use glance_share_broker::domain::policy::{Policy, SharedPolicy};
use glance_share_broker::startup::PolicySource;
use glance_share_broker::worker::{Worker, WorkerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, share_state, spawn_app};
use crate::openstack::{Rig, broker_cloud, drive_until, env, worker_config};

fn worker_with(app: &TestApp, policy_toml: &str) -> Worker {
    let policy = Policy::parse("policy.toml", policy_toml).unwrap();
    let config = WorkerConfig {
        policy: SharedPolicy::new(policy),
        ..worker_config()
    };
    Worker::new(app.pool.clone(), broker_cloud(), config)
}

/// Files a request of a new image of proj-a for `targets` and lets `worker` validate it.
async fn file_validated(app: &TestApp, worker: &Worker, targets: &[String]) -> Value {
    let image = Rig::from_env().private_image("policy").await;
    let body = json!({"image_id": image, "targets": targets, "reason": "policy"});
    let filed = app.file_as(&app.requester, &body).await;
    app.validated(filed["id"].as_str().unwrap(), Some(worker)).await
}

/// The audit events of a request: (action, outcome, initiator name, details).
async fn events(app: &TestApp, id: &str) -> Vec<(String, String, String, Value)> {
    sqlx::query_as(
        "select action, outcome, initiator->>'name', details from audit_events where request_id = $1::uuid order by seq",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

const RULES: &str = r#"
[[rules]]
name = "no-proj-c"
any_target_in = ["PROJ_C"]
decision = "deny"

[[rules]]
name = "same-domain"
same_domain = true
decision = "approve"
"#;

#[tokio::test]
async fn a_request_within_one_domain_is_approved_by_the_policy_and_granted() {
    let app = spawn_app().await;
    let worker = worker_with(&app, &RULES.replace("PROJ_C", &env("PROJ_C_ID")));
    let request = file_validated(&app, &worker, &[env("PROJ_B_ID")]).await;
    let id = request["id"].as_str().unwrap();

    assert_eq!(request["status"], "approved");
    assert_eq!(request["decided_by"], "policy");
    assert_eq!(request["approval"]["rule"], "same-domain");
    assert_eq!(request["approval"]["verdict"], "approve");
    assert_eq!(request["approval"]["approvals"], json!([]));
    let share = request["shares"][0]["id"].as_str().unwrap().to_owned();
    drive_until(&worker, &app.pool, "the share is granted", async |pool| {
        share_state(pool, &share).await == "pending_acceptance"
    })
    .await;

    let events = events(&app, id).await;
    let (action, outcome, by, details) = &events[2];
    assert_eq!(
        (action.as_str(), outcome.as_str(), by.as_str()),
        ("update/approve", "success", "policy")
    );
    assert_eq!(details["rule"], "same-domain");
    assert_eq!(
        events[1].3["policy"],
        json!({"decision": "approve", "rule": "same-domain"})
    );
}

#[tokio::test]
async fn a_target_on_the_deny_list_gets_the_request_denied_whatever_comes_after() {
    let app = spawn_app().await;
    let worker = worker_with(&app, &RULES.replace("PROJ_C", &env("PROJ_C_ID")));
    // Same domain too, but the deny rule comes first.
    let request = file_validated(&app, &worker, &[env("PROJ_B_ID"), env("PROJ_C_ID")]).await;
    assert_eq!(request["status"], "denied");
    assert_eq!(request["approval"]["rule"], "no-proj-c");
    assert_eq!(request["approval"]["verdict"], "deny");
    assert!(
        request["shares"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "denied")
    );
    let actions: Vec<String> = events(&app, request["id"].as_str().unwrap())
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(actions, ["create", "update/validate", "update/deny"]);
}

#[tokio::test]
async fn a_two_approver_rule_needs_two_distinct_approvers() {
    let app = spawn_app().await;
    let policy = "[[rules]]\nname = \"two-eyes\"\ndecision = \"require_approval\"\napprovals = 2";
    let worker = worker_with(&app, policy);
    let request = file_validated(&app, &worker, &[env("PROJ_B_ID")]).await;
    let id = request["id"].as_str().unwrap();
    assert_eq!(request["status"], "pending_approval");
    assert_eq!(request["approval"]["required"], 2);
    assert_eq!(request["approval"]["rule"], "two-eyes");
    assert_eq!(request["approval"]["verdict"], "require_approval");

    let approve = format!("/v1/share-requests/{id}/approve");
    let first = app
        .post(&app.approver, &approve, &json!({"comment": "ok by me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["status"], "pending_approval", "one approval of two");
    assert_eq!(first["approval"]["approvals"][0]["approver"], "workflow");
    assert_eq!(first["approval"]["approvals"][0]["comment"], "ok by me");
    assert_eq!(first["shares"][0]["state"], "awaiting_approval");

    let again = app.post(&app.approver, &approve, &json!({})).send().await.unwrap();
    problem(again, StatusCode::CONFLICT).await;

    let second = app
        .post(&app.admin, &approve, &json!({"comment": "second pair of eyes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = second.json().await.unwrap();
    assert_eq!(second["status"], "approved");
    assert_eq!(second["decided_by"], "ops");
    assert_eq!(second["approval"]["approvals"].as_array().unwrap().len(), 2);
    assert_eq!(second["shares"][0]["state"], "queued");

    let approvals: Vec<(String, String, Value)> = events(&app, id)
        .await
        .into_iter()
        .filter(|e| e.0 == "update/approve")
        .map(|(_, outcome, by, details)| (outcome, by, details))
        .collect();
    assert_eq!(
        approvals,
        [
            (
                "pending".to_owned(),
                "workflow".to_owned(),
                json!({"approvals": 1, "required": 2, "rule": "two-eyes", "subject": "key:workflow"})
            ),
            (
                "success".to_owned(),
                "ops".to_owned(),
                json!({"approvals": 2, "required": 2, "rule": "two-eyes", "subject": "key:ops"})
            ),
        ]
    );
}

#[tokio::test]
async fn an_undecided_request_expires_after_the_policy_time() {
    let app = spawn_app().await;
    let worker = worker_with(&app, "expire_undecided_after = \"1s\"");
    let request = file_validated(&app, &worker, &[env("PROJ_B_ID")]).await;
    let id = request["id"].as_str().unwrap();
    assert_eq!(request["status"], "pending_approval");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(worker.sweep_expired().await.unwrap(), 1);

    let request: Value = app.read(&format!("/v1/share-requests/{id}")).await;
    assert_eq!(request["status"], "expired");
    assert_eq!(request["shares"][0]["state"], "expired");
    assert_eq!(events(&app, id).await.last().unwrap().0, "update/expire");
    let response = app
        .post(&app.approver, &format!("/v1/share-requests/{id}/approve"), &json!({}))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::CONFLICT).await;
}

#[tokio::test]
async fn a_bad_policy_file_is_refused_and_the_policy_in_force_kept() {
    let dir = std::env::temp_dir().join(format!("gsb-policy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.yaml");
    std::fs::write(&path, "rules:\n  - {name: everyone, decision: approve}\n").unwrap();
    let source = PolicySource::load(&path).unwrap();
    let policy = source.policy();
    assert_eq!(policy.current().rules[0].name, "everyone");

    std::fs::write(&path, "rules:\n  - {name: broken, decision: approve, approvals: 2}\n").unwrap();
    let error = format!("{:#}", source.reload().unwrap_err());
    assert!(error.contains("rules[0].approvals"), "{error}");
    assert_eq!(
        policy.current().rules[0].name,
        "everyone",
        "the old policy stays in force"
    );

    std::fs::write(&path, "rules:\n  - {name: nobody, decision: deny}\n").unwrap();
    source.reload().unwrap();
    assert_eq!(policy.current().rules[0].name, "nobody");

    std::fs::write(&path, "rules: [").unwrap();
    assert!(PolicySource::load(&path).is_err(), "a bad file stops the start");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Waits until the worker's log holds `line`.
async fn logged(log: &std::path::Path, line: &str) {
    for _ in 0..300 {
        if std::fs::read_to_string(log).unwrap_or_default().contains(line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the worker never logged `{line}`");
}

#[tokio::test]
async fn a_worker_process_reloads_its_policy_on_sighup_and_keeps_it_when_the_new_file_is_bad() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("gsb-policy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, log) = (dir.join("policy.toml"), dir.join("worker.log"));
    std::fs::write(&path, "[[rules]]\nname = \"first\"\ndecision = \"approve\"").unwrap();
    let mut worker = std::process::Command::new(env!("CARGO_BIN_EXE_glance-share-broker"))
        .args(["worker", "--idle-poll-ms", "100"])
        .env("DATABASE_URL", &app.database_url)
        .env("OS_CLOUD", "admin")
        .env("OS_CLIENT_CONFIG_FILE", env("OS_CLIENT_CONFIG_FILE"))
        .env("GSB_POLICY_FILE", &path)
        .env("GSB_LOG_FORMAT", "text")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let hang_up = || kill(Pid::from_raw(worker.id() as i32), Signal::SIGHUP).unwrap();
    let decide = async || {
        let image = Rig::from_env().private_image("policy-reload").await;
        let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "reload"});
        let filed = app.file_as(&app.requester, &body).await;
        let request = app.validated(filed["id"].as_str().unwrap(), None).await;
        (request["status"].clone(), request["approval"]["rule"].clone())
    };
    assert_eq!(decide().await, (json!("approved"), json!("first")));

    std::fs::write(
        &path,
        "[[rules]]\nname = \"second\"\ndecision = \"deny\"\napprovals = 2",
    )
    .unwrap();
    hang_up();
    logged(&log, "approval policy not reloaded").await;
    assert_eq!(
        decide().await,
        (json!("approved"), json!("first")),
        "the old policy stays"
    );

    std::fs::write(&path, "[[rules]]\nname = \"second\"\ndecision = \"deny\"").unwrap();
    hang_up();
    logged(&log, "approval policy reloaded").await;
    assert_eq!(decide().await, (json!("denied"), json!("second")));

    kill(Pid::from_raw(worker.id() as i32), Signal::SIGTERM).unwrap();
    assert!(worker.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}
