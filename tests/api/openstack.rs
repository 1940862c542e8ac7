//! The real Keystone and Glance that `scripts/test.sh` starts (`scripts/openstack/`), seen
//! as its users see them: tokens for alice (proj-a), bob (proj-b), carol (proj-c), dave (proj-d,
//! also `image_share_approver`) and admin.

use std::time::Duration;

use glance_share_broker::openstack::{CloudConfig, OpenStack};
use glance_share_broker::worker::{Outcome, WebhookConfig, Worker, WorkerConfig};
use serde_json::{Value, json};
use sqlx::PgPool;

pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh, which starts Keystone and Glance")
    })
}

pub struct Rig {
    pub http: reqwest::Client,
    pub keystone: String,
    pub glance: String,
}

impl Rig {
    pub fn from_env() -> Rig {
        Rig {
            http: reqwest::Client::new(),
            keystone: env("KEYSTONE_URL"),
            glance: env("GLANCE_URL"),
        }
    }

    /// A project-scoped token for a seeded user (alice, bob, carol, dave) or admin.
    pub async fn token(&self, user: &str) -> String {
        let password = env(&format!("{}_PASSWORD", user.to_uppercase()));
        let project = match user {
            "alice" => "proj-a",
            "bob" => "proj-b",
            "carol" => "proj-c",
            "dave" => "proj-d",
            _ => "admin",
        };
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}});
        let response = self
            .http
            .post(format!("{}/v3/auth/tokens", self.keystone))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "token for {user}: {}",
            response.status()
        );
        response.headers()["x-subject-token"].to_str().unwrap().to_owned()
    }

    /// A new private image owned by alice's project, for one test alone.
    pub async fn private_image(&self, name: &str) -> String {
        let token = self.token("alice").await;
        let response = self
            .http
            .post(format!("{}/v2/images", self.glance))
            .header("x-auth-token", token)
            .json(&json!({"name": name, "visibility": "private", "disk_format": "raw", "container_format": "bare"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// GET on Glance as `token`: the status and the JSON body (if any).
    pub async fn glance_get(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.glance))
            .header("x-auth-token", token)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A new project in the Default domain, made by the admin; its id.
    pub async fn create_project(&self, name: &str) -> String {
        let response = self
            .http
            .post(format!("{}/v3/projects", self.keystone))
            .header("x-auth-token", self.token("admin").await)
            .json(&json!({"project": {"name": name, "domain_id": "default"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "create project {name}");
        response.json::<Value>().await.unwrap()["project"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn delete_project(&self, id: &str) {
        let response = self
            .http
            .delete(format!("{}/v3/projects/{id}", self.keystone))
            .header("x-auth-token", self.token("admin").await)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "delete project {id}");
    }

    pub async fn glance_put(&self, token: &str, path: &str, body: Value) -> u16 {
        let response = self
            .http
            .put(format!("{}{path}", self.glance))
            .header("x-auth-token", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }
}

fn admin_cloud() -> CloudConfig {
    let file = env("OS_CLIENT_CONFIG_FILE");
    CloudConfig::from_lookup(|k| match k {
        "OS_CLOUD" => Some("admin".to_owned()),
        "OS_CLIENT_CONFIG_FILE" => Some(file.clone()),
        _ => None,
    })
    .unwrap()
}

/// The broker's own client, as the admin cloud of the rig's clouds.yaml.
pub fn broker_cloud() -> OpenStack {
    OpenStack::new(admin_cloud(), Duration::from_secs(10)).unwrap()
}

/// The broker's client with the real Keystone and another Glance (the fake one).
pub fn broker_cloud_with_glance(url: &str, timeout: Duration) -> OpenStack {
    OpenStack::new(admin_cloud(), timeout).unwrap().with_glance_url(url)
}

pub fn worker_config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        lease: Duration::from_secs(10),
        idle_poll: Duration::from_millis(100),
        max_attempts: 3,
        retry_base: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        accept_poll_first: Duration::from_millis(200),
        accept_poll_max: Duration::from_secs(1),
        member_quota: 128,
        // Every grant checks its targets again, as after a long wait for approval.
        revalidate_after: Duration::ZERO,
        policy: Default::default(),
        webhooks: WebhookConfig {
            concurrency: 2,
            timeout: Duration::from_secs(1),
            max_attempts: 3,
        },
        glance_rate_limit: 0,
        instance: "test-worker".into(),
        revoke_stalled_after: Duration::from_secs(900),
        revoke_confirm_after: Duration::from_millis(200),
    }
}

/// Runs due jobs until none is left.
pub async fn drain(worker: &Worker) {
    for _ in 0..200 {
        if worker.run_once().await.unwrap() == Outcome::Idle {
            return;
        }
    }
    panic!("the worker did not become idle");
}

/// Runs due jobs until `done` holds, waiting for jobs scheduled in the future.
pub async fn drive_until(worker: &Worker, pool: &PgPool, what: &str, done: impl AsyncFn(&PgPool) -> bool) {
    for _ in 0..100 {
        drain(worker).await;
        if done(pool).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Runs the worker until `share` is in `state` (retries of transient failures included).
pub async fn until_share_state(worker: &Worker, pool: &PgPool, share: &str, state: &'static str) {
    let share = share.to_owned();
    drive_until(worker, pool, state, async move |pool: &PgPool| {
        crate::helpers::share_state(pool, &share).await == state
    })
    .await;
}
