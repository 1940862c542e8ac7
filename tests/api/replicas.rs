//! Several replicas on one database, as a large cloud runs them: two `api` and three `worker`
//! processes fanning out hundreds of shares over many images, while one worker is killed
//! with SIGKILL, one is frozen past its lease and resumed, and one API is restarted.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use glance_share_broker::db;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::crash::{BIN, signal, tempdir, worker_with};
use crate::fake_glance::FakeGlance;
use crate::helpers::spawn_app;
use crate::openstack::{Rig, env};
use crate::outages::fan_out_projects;

const IMAGES: usize = 25;
const PROJECTS: usize = 12;
/// Glance calls per second for all workers together.
const GLANCE_RATE: usize = 40;
/// The window the rate is measured over: slots are spaced in the database, but a call can
/// leave a little after its slot (a busy machine, a frozen worker resumed), so single
/// seconds see bunching that longer windows average out.
const WINDOW: Duration = Duration::from_secs(5);

/// An `api` process on `port`, killed when dropped.
struct ApiProcess(Child);

impl ApiProcess {
    fn start(db: &str, port: u16, log: &std::path::Path) -> ApiProcess {
        let child = Command::new(BIN)
            .arg("api")
            .env("DATABASE_URL", db)
            .env("GSB_LISTEN", format!("127.0.0.1:{port}"))
            .env("GSB_INSTANCE", log.file_name().unwrap().to_str().unwrap())
            .env("GSB_LOG_FORMAT", "text")
            .env("GSB_RATE_LIMIT_PER_SEC", "0")
            .env("GSB_ADDRESS_RATE_LIMIT_PER_SEC", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        ApiProcess(child)
    }
}

impl Drop for ApiProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn until_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} never became ready");
}

/// POSTs until an answer other than a refused connection or a 503 comes (an API replica may
/// be restarting: a client retries with the same Idempotency-Key).
async fn post(http: &reqwest::Client, bases: &[String], key: &str, path: &str, body: &Value, idem: &str) -> Value {
    for attempt in 0.. {
        let base = &bases[attempt % bases.len()];
        let sent = http
            .post(format!("{base}{path}"))
            .bearer_auth(key)
            .header("idempotency-key", idem)
            .json(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return r.json().await.unwrap(),
            Ok(r) if r.status().as_u16() == 409 => {
                // Not validated yet: the workers will get to it.
            }
            Ok(r) if r.status().as_u16() != 503 => panic!("{path}: {} {}", r.status(), r.text().await.unwrap()),
            _ => {}
        }
        assert!(attempt < 600, "{path} never succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

#[tokio::test]
async fn two_apis_and_three_workers_grant_each_share_once_through_a_kill_a_freeze_and_a_restart() {
    let app = spawn_app().await;
    let projects = fan_out_projects(&Rig::from_env(), PROJECTS).await;
    let (fake, glance) = FakeGlance::start().await;
    let images: Vec<String> = (0..IMAGES).map(|_| Uuid::new_v4().to_string()).collect();
    for image in &images {
        fake.add_image(image, &env("PROJ_A_ID"), "shared");
    }
    let dir = tempdir();
    let db = app.database_url.clone();
    let rate = GLANCE_RATE.to_string();
    let settings = [("GSB_GLANCE_RATE_LIMIT", rate.as_str())];
    let mut workers: Vec<_> = ["worker-a", "worker-b", "worker-c"]
        .iter()
        .map(|name| worker_with(&db, &glance, &dir.join(name), &settings))
        .collect();
    let ports = [free_port(), free_port()];
    let mut apis: Vec<ApiProcess> = ports
        .iter()
        .enumerate()
        .map(|(n, port)| ApiProcess::start(&db, *port, &dir.join(format!("api-{n}"))))
        .collect();
    let bases: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let http = reqwest::Client::new();
    for base in &bases {
        until_ready(&http, base).await;
    }

    let started = Instant::now();
    let mut requests = Vec::new();
    for (n, image) in images.iter().enumerate() {
        let body = json!({"image_id": image, "targets": projects, "reason": "replicas"});
        let filed = post(
            &http,
            &bases[n % 2..],
            &app.requester,
            "/v1/share-requests",
            &body,
            &format!("file-{n}"),
        )
        .await;
        requests.push(filed["id"].as_str().unwrap().to_owned());
        match n {
            // A worker killed outright, in the middle of the fan-out.
            5 => {
                signal(&workers[0], Signal::SIGKILL);
                workers[0].wait().unwrap();
            }
            // One frozen past its 2 s lease, then resumed: its late results must be refused.
            8 => signal(&workers[1], Signal::SIGSTOP),
            14 => signal(&workers[1], Signal::SIGCONT),
            // An API replica restarted; clients retry on the other one meanwhile.
            10 => {
                apis.remove(0);
                apis.push(ApiProcess::start(&db, ports[0], &dir.join("api-0-again")));
            }
            _ => {}
        }
    }
    for (n, request) in requests.iter().enumerate() {
        post(
            &http,
            &bases,
            &app.approver,
            &format!("/v1/share-requests/{request}/approve"),
            &json!({}),
            &format!("approve-{n}"),
        )
        .await;
    }

    let total = (IMAGES * PROJECTS) as i64;
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let granted: i64 = sqlx::query_scalar("select count(*) from shares where state = 'pending_acceptance'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if granted == total {
            break;
        }
        assert!(Instant::now() < deadline, "only {granted} of {total} shares granted");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let busiest = fake.busiest(WINDOW);
    eprintln!(
        "replicas: {total} shares over {IMAGES} images granted in {:?}; {} Glance calls, at most {busiest} in {WINDOW:?} \
         (limit {GLANCE_RATE}/s: {:.1}/s), at most {} in one second",
        started.elapsed(),
        fake.total_calls(),
        busiest as f64 / WINDOW.as_secs_f64(),
        fake.busiest(Duration::from_secs(1)),
    );

    assert_eq!(fake.member_count(), IMAGES * PROJECTS, "one member per share in Glance");
    let granted_twice: Vec<(Uuid, i64)> = sqlx::query_as(
        "select s.id, count(e.seq) from shares s
         left join audit_events e on e.share_id = s.id and e.action = 'allow' and e.outcome = 'success'
         group by s.id having count(e.seq) <> 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(
        granted_twice.is_empty(),
        "each share has exactly one `allow` event: {granted_twice:?}"
    );
    let limit = (GLANCE_RATE as f64 * WINDOW.as_secs_f64() * 1.05) as usize;
    assert!(
        busiest <= limit,
        "the workers together stayed within the Glance limit (+5%): {busiest} calls in {WINDOW:?}"
    );
    let report = db::audit::verify(&app.pool, "replicas test").await.unwrap();
    assert!(report.ok, "the audit chain verifies: {report:?}");
    // Waited for without blocking: the fake Glance answers their last calls on this thread.
    let stopping = Instant::now();
    for worker in &workers[1..] {
        signal(worker, Signal::SIGTERM);
    }
    for worker in &mut workers[1..] {
        let status = loop {
            if let Some(status) = worker.try_wait().unwrap() {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "SIGTERM stops a worker cleanly");
    }
    eprintln!("replicas: the workers stopped {:?} after SIGTERM", stopping.elapsed());
}
