//! Crash safety with real worker processes: a worker killed while it holds a job, and a
//! worker frozen past its lease, never make an effect happen twice or leave a job stuck.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::fake_glance::{FakeGlance, Fault};
use crate::helpers::{TestApp, spawn_app};
use crate::openstack::env;

pub const BIN: &str = env!("CARGO_BIN_EXE_glance-share-broker");

/// A worker process that is killed when dropped, so a failing test leaves none behind
/// (a stopped one would poll the database for ever).
pub struct WorkerProcess(Child);

impl std::ops::Deref for WorkerProcess {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for WorkerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A `glance-share-broker worker` process with a 2 s lease, logging to `log`.
fn worker(db: &str, glance: &str, log: &std::path::Path) -> WorkerProcess {
    worker_with(db, glance, log, &[])
}

/// [`worker`], with more settings in the environment.
pub fn worker_with(db: &str, glance: &str, log: &std::path::Path, settings: &[(&str, &str)]) -> WorkerProcess {
    let child = Command::new(BIN)
        .args([
            "worker",
            "--lease-secs",
            "2",
            "--idle-poll-ms",
            "100",
            "--retry-base-ms",
            "50",
        ])
        .env("DATABASE_URL", db)
        .env("OS_CLOUD", "admin")
        .env("OS_CLIENT_CONFIG_FILE", env("OS_CLIENT_CONFIG_FILE"))
        .env("GSB_GLANCE_URL", glance)
        .env("GSB_INSTANCE", log.file_name().unwrap().to_str().unwrap())
        .env("GSB_LOG_FORMAT", "text")
        .envs(settings.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    WorkerProcess(child)
}

pub fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

pub async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn approve_one(app: &TestApp, image: &str) -> String {
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "crash"});
    app.file_and_approve(body, None).await["shares"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn running_jobs(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from jobs where state = 'running'")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn allow_events(app: &TestApp, share: &str) -> i64 {
    sqlx::query_scalar("select count(*) from audit_events where share_id = $1::uuid and action = 'allow'")
        .bind(share)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_worker_killed_mid_job_is_replaced_and_the_member_is_added_once() {
    let app = spawn_app().await;
    let (fake, glance) = FakeGlance::start().await;
    let image = Uuid::new_v4().to_string();
    fake.add_image(&image, &env("PROJ_A_ID"), "shared");
    // The first add stalls long enough for the worker holding it to be killed.
    fake.inject(Method::POST, "add_member", [Fault::Hang(Duration::from_secs(60))]);
    let dir = tempdir();
    let db = app.database_url.clone();

    let mut first = worker(&db, &glance, &dir.join("worker-a"));
    let share = approve_one(&app, &image).await;
    wait_for("the first worker to call Glance", async || {
        fake.calls(Method::POST, "add_member") == 1
    })
    .await;
    signal(&first, Signal::SIGKILL);
    first.wait().unwrap();

    let mut second = worker(&db, &glance, &dir.join("worker-b"));
    wait_for("the second worker to finish the grant", async || {
        app.share_state(&share).await == "pending_acceptance"
    })
    .await;
    assert_eq!(fake.calls(Method::POST, "add_member"), 2);
    assert_eq!(
        fake.member_status(&image, &env("PROJ_B_ID")).as_deref(),
        Some("pending"),
        "one member"
    );
    assert_eq!(allow_events(&app, &share).await, 1, "the grant is recorded once");
    wait_for("no job left running", async || running_jobs(&app).await == 0).await;
    signal(&second, Signal::SIGTERM);
    assert!(second.wait().unwrap().success(), "SIGTERM stops a worker cleanly");
}

#[tokio::test]
async fn a_worker_frozen_past_its_lease_has_its_late_completion_refused() {
    let app = spawn_app().await;
    let (fake, glance) = FakeGlance::start().await;
    let image = Uuid::new_v4().to_string();
    fake.add_image(&image, &env("PROJ_A_ID"), "shared");
    // The frozen worker's call ends, 4 s later, with a 504: a result it must not record.
    fake.inject(Method::POST, "add_member", [Fault::Hang(Duration::from_secs(4))]);
    let dir = tempdir();
    let db = app.database_url.clone();

    let mut frozen = worker(&db, &glance, &dir.join("worker-frozen"));
    let share = approve_one(&app, &image).await;
    wait_for("the worker to call Glance", async || {
        fake.calls(Method::POST, "add_member") == 1
    })
    .await;
    signal(&frozen, Signal::SIGSTOP);

    let mut other = worker(&db, &glance, &dir.join("worker-other"));
    wait_for("the other worker to take over and finish", async || {
        app.share_state(&share).await == "pending_acceptance"
    })
    .await;
    signal(&other, Signal::SIGTERM);
    assert!(other.wait().unwrap().success());

    // Let the frozen worker's call come back, and let it try to complete.
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(&frozen, Signal::SIGCONT);
    let log = dir.join("worker-frozen");
    wait_for("the late completion to be refused", async || {
        std::fs::read_to_string(&log).unwrap().contains("outcome discarded")
    })
    .await;
    assert_eq!(
        app.share_state(&share).await,
        "pending_acceptance",
        "the late failure changed nothing"
    );
    let last_error: Option<String> = sqlx::query_scalar("select last_error from shares where id = $1::uuid")
        .bind(&share)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(last_error, None);
    assert_eq!(allow_events(&app, &share).await, 1);
    signal(&frozen, Signal::SIGTERM);
    frozen.wait().unwrap();
}

pub fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gsb-crash-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
