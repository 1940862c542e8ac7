//! Outages of what the broker depends on, for real: a Postgres of the test's own stopped and
//! started under load, and Glance cut off in the middle of a fan-out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use glance_share_broker::worker::{Worker, WorkerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{TestApp, request_body, share_state, spawn_app, spawn_app_at};
use crate::openstack::{Rig, broker_cloud_with_glance, env, worker_config};
use crate::postgres::PrivatePostgres;
use crate::proxy::TcpProxy;

/// What the load saw: each acknowledged request's id, and every status answered.
#[derive(Default)]
pub struct Load {
    pub acknowledged: HashSet<String>,
    pub statuses: HashMap<u16, usize>,
}

impl Load {
    /// Asserts what an outage under this load may and may not do: only 201 and 503 were
    /// answered, the outage was seen, the load made progress, and every request acknowledged
    /// with 201 is in `pool`. Returns how many were acknowledged.
    pub async fn assert_nothing_acknowledged_lost(&self, pool: &PgPool) -> usize {
        eprintln!(
            "answers: {:?}; acknowledged: {}",
            self.statuses,
            self.acknowledged.len()
        );
        let unexpected: Vec<_> = self.statuses.keys().filter(|s| ![201, 503].contains(*s)).collect();
        assert!(
            unexpected.is_empty(),
            "only 201 and 503 are answered: {:?}",
            self.statuses
        );
        assert!(
            self.statuses.contains_key(&503),
            "the outage was seen: {:?}",
            self.statuses
        );
        let ids: Vec<Uuid> = self.acknowledged.iter().map(|id| id.parse().unwrap()).collect();
        assert!(ids.len() > 20, "the load made progress: {:?}", self.statuses);
        let stored: i64 = sqlx::query_scalar("select count(*) from share_requests where id = any($1)")
            .bind(&ids)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(
            stored as usize,
            ids.len(),
            "every request acknowledged before, during or after the outage is stored"
        );
        ids.len()
    }
}

/// Files requests from `clients` tasks until `stop`, each retrying its own Idempotency-Key
/// until it is acknowledged, as a careful client does.
pub async fn file_until(app: Arc<TestApp>, clients: usize, stop: Arc<AtomicBool>, load: Arc<Mutex<Load>>) {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (app, stop, load) = (app.clone(), stop.clone(), load.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let key = Uuid::new_v4().to_string();
                let body = request_body(&Uuid::new_v4().to_string(), &["proj-b"]);
                loop {
                    let sent = app
                        .post(&app.requester, "/v1/share-requests", &body)
                        .header("idempotency-key", &key)
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    let Ok(response) = sent else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let status = response.status();
                    *load.lock().await.statuses.entry(status.as_u16()).or_default() += 1;
                    if status == StatusCode::CREATED {
                        let id = response.json::<Value>().await.unwrap()["id"]
                            .as_str()
                            .unwrap()
                            .to_owned();
                        load.lock().await.acknowledged.insert(id);
                        break;
                    }
                    assert_eq!(
                        response.headers()["content-type"],
                        "application/problem+json",
                        "every error is a problem"
                    );
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test]
async fn postgres_restarted_under_load_loses_no_acknowledged_request() {
    // An answer other than 201 or 503 fails the test: the broker's error log says why.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("glance_share_broker=error")
        .with_test_writer()
        .try_init();
    let pg = PrivatePostgres::create();
    let app = Arc::new(spawn_app_at(&pg.url(), |_| {}).await);
    let (stop, load) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Load::default())));
    let writers = tokio::spawn(file_until(app.clone(), 8, stop.clone(), load.clone()));
    tokio::time::sleep(Duration::from_millis(1500)).await;

    pg.stop();
    // While it is down: 503 problems, and not ready.
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let response = app.try_file().await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    pg.start();
    // It recovers without a restart of the broker.
    let mut ready = false;
    for _ in 0..100 {
        let response = app.client.get(app.url("/readyz")).send().await.unwrap();
        if response.status() == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz recovers once Postgres is back");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    writers.await.unwrap();

    load.lock().await.assert_nothing_acknowledged_lost(&app.pool).await;
}

/// Makes sure `count` projects named `gsb-outage-N` exist in Keystone; returns their ids.
pub async fn fan_out_projects(rig: &Rig, count: usize) -> Vec<String> {
    let token = rig.token("admin").await;
    let mut ids = Vec::new();
    for n in 1..=count {
        let name = format!("gsb-outage-{n}");
        let created = rig
            .http
            .post(format!("{}/v3/projects", rig.keystone))
            .header("x-auth-token", &token)
            .json(&json!({"project": {"name": name, "domain_id": "default"}}))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(created.status().as_u16(), 201 | 409),
            "create {name}: {}",
            created.status()
        );
        let found: Value = rig
            .http
            .get(format!("{}/v3/projects", rig.keystone))
            .query(&[("name", &name)])
            .header("x-auth-token", &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(found["projects"][0]["id"].as_str().unwrap().to_owned());
    }
    ids
}

#[tokio::test]
async fn glance_cut_off_in_the_middle_of_a_fan_out_every_share_converges() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let projects = fan_out_projects(&rig, 6).await;
    let image = rig.private_image("outage-fan-out").await;
    let mut proxy = TcpProxy::start(&env("GLANCE_URL")).await;
    let config = WorkerConfig {
        max_attempts: 50,
        retry_base: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        ..worker_config()
    };
    let worker = Worker::new(
        app.pool.clone(),
        broker_cloud_with_glance(&proxy.url(), Duration::from_secs(2)),
        config,
    );
    let body = json!({"image_id": image, "targets": projects, "reason": "outage"});
    let request = app.file_and_approve(body, Some(&worker)).await;
    let shares: Vec<String> = request["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();

    // Glance goes away after the second member is added, while four are still to come.
    let second_add = proxy.after_requests_matching(b"POST /v2/images/", b"/members ", 2);
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.clone().run(stop.clone()));
    second_add.await.unwrap();
    proxy.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let granted = granted_count(&app.pool, &shares).await;
    assert!(
        granted < shares.len(),
        "the outage came mid fan-out ({granted} granted)"
    );
    proxy.restart().await;

    for _ in 0..300 {
        if granted_count(&app.pool, &shares).await == shares.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    running.await.unwrap();
    for share in &shares {
        assert_eq!(
            share_state(&app.pool, share).await,
            "pending_acceptance",
            "share {share}"
        );
    }
    let (_, members) = rig
        .glance_get(&rig.token("alice").await, &format!("/v2/images/{image}/members"))
        .await;
    let mut in_glance: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["member_id"].as_str().unwrap())
        .collect();
    in_glance.sort();
    let mut expected: Vec<&str> = projects.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(in_glance, expected, "each project is a member once");
    let allows: i64 =
        sqlx::query_scalar("select count(*) from audit_events where request_id = $1::uuid and action = 'allow'")
            .bind(request["id"].as_str().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(allows as usize, shares.len(), "one grant event per share");
}

async fn granted_count(pool: &PgPool, shares: &[String]) -> usize {
    let ids: Vec<Uuid> = shares.iter().map(|s| s.parse().unwrap()).collect();
    let n: i64 = sqlx::query_scalar("select count(*) from shares where id = any($1) and state = 'pending_acceptance'")
        .bind(&ids)
        .fetch_one(pool)
        .await
        .unwrap();
    n as usize
}
