//! `spawn_app()`: a broker on a free port with a database of its own, and typed helpers.

use std::net::SocketAddr;
use std::time::Duration;

use glance_share_broker::config::{AuditArgs, DatabaseArgs, ServeArgs, WorkerArgs};
use glance_share_broker::db;
use glance_share_broker::domain::Role;
use glance_share_broker::openstack::OpenStack;
use glance_share_broker::startup::Application;
use glance_share_broker::worker::Worker;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::openstack::{Rig, broker_cloud, drain, env, worker_config};

/// The server the tests create their databases on (`scripts/test.sh` sets it).
pub fn admin_database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates an empty database and returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_database_url();
    let name = format!("gsb_test_{}", Uuid::new_v4().simple());
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin)
        .await
        .expect("Postgres answers at DATABASE_URL");
    sqlx::query(&format!("create database {name}"))
        .execute(&pool)
        .await
        .expect("create a test database");
    pool.close().await;
    let (base, _) = admin.rsplit_once('/').expect("DATABASE_URL names a database");
    format!("{base}/{name}")
}

pub fn serve_args(database_url: &str) -> ServeArgs {
    ServeArgs {
        database: DatabaseArgs {
            database_url: database_url.to_owned(),
            db_max_connections: 20,
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        request_timeout_secs: 30,
        max_targets: 128,
        default_region: "RegionOne".into(),
        idempotency_ttl_hours: 24,
        instance: Some("test-broker".into()),
        rate_limit_per_sec: 1000,
        rate_limit_burst: 1000,
        address_rate_limit_per_sec: 10_000,
        address_rate_limit_burst: 10_000,
        no_worker: true,
        database_read_url: None,
        access: test_access(),
        audit: AuditArgs {
            audit_checkpoint_secs: 300,
            audit_seal_ms: 200,
        },
        // The tests' webhook receivers listen on 127.0.0.1, which webhooks may reach only
        // when allowed (tests/api/edges.rs checks the refusal without it).
        worker: WorkerArgs {
            webhook_allow_private: true,
            ..Default::default()
        },
        edges: Default::default(),
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The test's own database.
    pub database_url: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub requester: String,
    pub approver: String,
    pub auditor: String,
    pub admin: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A broker that takes Keystone tokens, validated by the real Keystone with the rig's admin.
pub async fn spawn_app_with_keystone() -> TestApp {
    spawn_app_with_cloud(Some(crate::openstack::broker_cloud()), |_| {}).await
}

/// A broker on a fresh database, whose settings `adjust` changes first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServeArgs)) -> TestApp {
    spawn_app_at(&fresh_database().await, adjust).await
}

/// A broker with the broker's own OpenStack client `cloud`, whose settings `adjust` changes.
pub async fn spawn_app_with_cloud(cloud: Option<OpenStack>, adjust: impl FnOnce(&mut ServeArgs)) -> TestApp {
    spawn(&fresh_database().await, cloud, adjust).await
}

/// A broker on the database at `url`.
pub async fn spawn_app_at(url: &str, adjust: impl FnOnce(&mut ServeArgs)) -> TestApp {
    spawn(url, None, adjust).await
}

async fn spawn(url: &str, cloud: Option<OpenStack>, adjust: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let url = url.to_owned();
    let mut args = serve_args(&url);
    adjust(&mut args);
    let app = Application::build(&args, cloud).await.expect("the broker starts");
    let addr = app.local_addr();
    tokio::spawn(app.run_until(std::future::pending()));
    // The test's own pool, on the first host of a multi-host URL (a failover test's primary).
    let first_host = db::failover::Hosts::parse(&url).unwrap().options(0);
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .connect_with(first_host)
        .await
        .unwrap();
    let mut keys = Vec::new();
    for (name, role) in [
        ("portal", Role::Requester),
        ("workflow", Role::Approver),
        ("auditor", Role::Auditor),
        ("ops", Role::Admin),
    ] {
        keys.push(db::api_keys::create(&pool, name, role, &[]).await.unwrap().1);
    }
    let [requester, approver, auditor, admin] = keys.try_into().unwrap();
    TestApp {
        addr,
        database_url: url,
        pool,
        client: reqwest::Client::new(),
        requester,
        approver,
        auditor,
        admin,
    }
}

pub const IMAGE: &str = "7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa";
pub const PROJ_B: &str = "2f0c6b8a9d3e4c1f8a7b6c5d4e3f2a1b";

/// A valid request body for `image` to `targets`.
pub fn request_body(image: &str, targets: &[&str]) -> Value {
    json!({ "image_id": image, "targets": targets, "reason": "CI runners need the golden image" })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get(&self, key: &str, path: &str) -> RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(key)
    }

    /// GET `path` as the auditor, who reads everything; the JSON body.
    pub async fn read(&self, path: &str) -> Value {
        self.read_as(&self.auditor, path).await
    }

    /// GET `path` with `key`; the JSON body.
    pub async fn read_as(&self, key: &str, path: &str) -> Value {
        self.get(key, path).send().await.unwrap().json().await.unwrap()
    }

    pub fn post(&self, key: &str, path: &str, body: &Value) -> RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(key).json(body)
    }

    /// GET as the holder of a Keystone token.
    pub fn get_as(&self, token: &str, path: &str) -> RequestBuilder {
        self.client.get(self.url(path)).header("x-auth-token", token)
    }

    /// POST `body` as the holder of a Keystone token.
    pub fn post_as(&self, token: &str, path: &str, body: &Value) -> RequestBuilder {
        self.client
            .post(self.url(path))
            .header("x-auth-token", token)
            .json(body)
    }

    /// POSTs a request for a new image to `proj-b` as the requester; the answer, whatever it is.
    pub async fn try_file(&self) -> Response {
        let body = request_body(&Uuid::new_v4().to_string(), &["proj-b"]);
        self.post(&self.requester, "/v1/share-requests", &body)
            .send()
            .await
            .unwrap()
    }

    /// Files a request as the requester and returns the created body.
    pub async fn file(&self, image: &str, targets: &[&str]) -> Value {
        self.file_as(&self.requester, &request_body(image, targets)).await
    }

    /// Files `body` as `key` and returns the created body.
    pub async fn file_as(&self, key: &str, body: &Value) -> Value {
        let response = self.post(key, "/v1/share-requests", body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    /// The request once its validation has finished: runs `worker` until it has, or, with
    /// none, waits for the worker processes a test started.
    pub async fn validated(&self, id: &str, worker: Option<&Worker>) -> Value {
        for _ in 0..300 {
            if let Some(worker) = worker {
                drain(worker).await;
            }
            let request: Value = self.read(&format!("/v1/share-requests/{id}")).await;
            if request["validation"]["state"] != "pending" {
                return request;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("request {id} was not validated within 30 s");
    }

    /// A request filed by `key` for a new image of proj-a to proj-b, validated against the
    /// real Keystone and Glance.
    pub async fn file_validated(&self, key: &str) -> Value {
        let image = Rig::from_env().private_image("approval").await;
        let filed = self.file_as(key, &request_body(&image, &[&env("PROJ_B_ID")])).await;
        let worker = Worker::new(self.pool.clone(), broker_cloud(), worker_config());
        let request = self.validated(filed["id"].as_str().unwrap(), Some(&worker)).await;
        assert_eq!(request["validation"]["state"], "passed", "{request}");
        request
    }

    /// Files `body` as the requester, lets `worker` (or running worker processes) validate
    /// it, and approves it as the approver; returns the approved request.
    pub async fn file_and_approve(&self, body: Value, worker: Option<&Worker>) -> Value {
        let filed = self.file_as(&self.requester, &body).await;
        let id = filed["id"].as_str().unwrap();
        let validated = self.validated(id, worker).await;
        assert_eq!(validated["validation"]["state"], "passed", "{validated}");
        let response = self
            .post(&self.approver, &format!("/v1/share-requests/{id}/approve"), &json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    /// A share's state, straight from the database.
    pub async fn share_state(&self, share_id: &str) -> String {
        share_state(&self.pool, share_id).await
    }

    /// How many share requests the database holds.
    pub async fn request_count(&self) -> i64 {
        sqlx::query_scalar("select count(*) from share_requests")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The audit actions recorded for a request, oldest first.
    pub async fn audit_actions(&self, request_id: &str) -> Vec<String> {
        db::audit::for_request(&self.pool, request_id.parse().unwrap())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect()
    }
}

/// Asserts a problem+json response with `status`, and returns its body.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:glance-share-broker:problem:"),
        "{body}"
    );
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}

/// The fields a validation problem names.
pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

/// A share's state, straight from the database.
pub async fn share_state(pool: &PgPool, share_id: &str) -> String {
    sqlx::query_scalar("select state from shares where id = $1::uuid")
        .bind(share_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The access settings of a test broker: the defaults, with the dev stack's admin project
/// named by id as the project whose tokens carry cloud-wide roles (when the rig is up).
pub fn test_access() -> glance_share_broker::config::AccessArgs {
    let mut access = glance_share_broker::config::AccessArgs::default();
    if let Ok(admin_project) = std::env::var("ADMIN_PROJECT_ID") {
        access.admin_projects = vec![admin_project];
    }
    access
}
