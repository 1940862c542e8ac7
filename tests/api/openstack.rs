//! The real Keystone and Glance that `scripts/test.sh` starts (`scripts/openstack/`), seen
//! as its users see them: tokens for alice (proj-a), bob (proj-b), carol (proj-c), dave (proj-d,
//! also `image_share_approver`) and admin.

use std::time::Duration;

use glance_share_broker::domain::policy::{AutoAccept, Policy, SharedPolicy};
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

    /// A new private image owned by alice's project, for one test alone, with data (so it is
    /// `active`: validation refuses any other status). The shared Glance's database is busy
    /// under every engineer's tests and now and then fails an upload (500, then 409 on a
    /// retry): such an image is dropped and another made.
    pub async fn private_image(&self, name: &str) -> String {
        let token = self.token("alice").await;
        for _ in 0..5 {
            let response = self
                .http
                .post(format!("{}/v2/images", self.glance))
                .header("x-auth-token", &token)
                .json(&json!({"name": name, "visibility": "private", "disk_format": "raw", "container_format": "bare"}))
                .send()
                .await
                .unwrap();
            if response.status().is_server_error() {
                continue;
            }
            assert_eq!(response.status(), 201);
            let id = response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned();
            let uploaded = self
                .http
                .put(format!("{}/v2/images/{id}/file", self.glance))
                .header("x-auth-token", &token)
                .header("content-type", "application/octet-stream")
                .body(vec![7u8; 4096])
                .send()
                .await
                .unwrap()
                .status();
            if uploaded == 204 {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!("Glance failed five images in a row");
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

    /// The rig's Glance keeps its catalog in SQLite, which answers 500 ("database is locked")
    /// when many tests write at once: a test's own setup write is tried again then, since
    /// what is under test is the broker, not the rig.
    pub async fn glance_put(&self, token: &str, path: &str, body: Value) -> u16 {
        let mut status = 0;
        for _ in 0..5 {
            status = self
                .http
                .put(format!("{}{path}", self.glance))
                .header("x-auth-token", token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            if status != 500 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        status
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
        // No rules (one approver each); requests may ask for auto_accept, which the default
        // policy forbids (tests/api/authz_attacks.rs shows that).
        policy: SharedPolicy::new(Policy {
            auto_accept: AutoAccept::Allow,
            ..Policy::default()
        }),
        webhooks: WebhookConfig {
            concurrency: 2,
            timeout: Duration::from_secs(1),
            max_attempts: 3,
            // The tests' receivers listen on 127.0.0.1 (tests/api/edges.rs checks the refusal).
            allow_private: true,
        },
        glance_rate_limit: 0,
        instance: "test-worker".into(),
        revoke_stalled_after: Duration::from_secs(900),
        revoke_confirm_after: Duration::from_millis(200),
        // Off: the tests that want the notice turn it on.
        expiry_notice: Duration::ZERO,
        drift: glance_share_broker::worker::DriftConfig {
            every: None,
            ended_within: Duration::from_secs(3600),
            adopt_owners: Vec::new(),
        },
        protect_images: true,
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

/// Keystone identities made for one test: domains, projects in them, users and roles.
impl Rig {
    /// POST `body` to Keystone's `path` as the admin; the created object under `key`.
    async fn keystone_create(&self, path: &str, key: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}/v3{path}", self.keystone))
            .header("x-auth-token", self.token("admin").await)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "create {path}: {body}");
        response.json::<Value>().await.unwrap()[key].clone()
    }

    /// A new domain; its id.
    pub async fn create_domain(&self, name: &str) -> String {
        let domain = self
            .keystone_create("/domains", "domain", json!({"domain": {"name": name}}))
            .await;
        domain["id"].as_str().unwrap().to_owned()
    }

    /// A new project in `domain_id`; its id.
    pub async fn create_project_in(&self, name: &str, domain_id: &str) -> String {
        let project = self
            .keystone_create(
                "/projects",
                "project",
                json!({"project": {"name": name, "domain_id": domain_id}}),
            )
            .await;
        project["id"].as_str().unwrap().to_owned()
    }

    /// A new user in `domain_id` whose password is `password`; its id.
    pub async fn create_user(&self, name: &str, domain_id: &str, password: &str) -> String {
        let user = self
            .keystone_create(
                "/users",
                "user",
                json!({"user": {"name": name, "domain_id": domain_id, "password": password}}),
            )
            .await;
        user["id"].as_str().unwrap().to_owned()
    }

    /// Grants the role named `role` to `user_id` on `target` (`projects/<id>` or `domains/<id>`).
    pub async fn grant(&self, target: &str, user_id: &str, role: &str) {
        let admin = self.token("admin").await;
        let roles: Value = self
            .http
            .get(format!("{}/v3/roles", self.keystone))
            .query(&[("name", role)])
            .header("x-auth-token", &admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let role_id = roles["roles"][0]["id"].as_str().unwrap().to_owned();
        let response = self
            .http
            .put(format!("{}/v3/{target}/users/{user_id}/roles/{role_id}", self.keystone))
            .header("x-auth-token", &admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "grant {role} on {target}");
    }

    /// A token for the user with id `user_id`, scoped as `scope` (Keystone's `scope` object).
    pub async fn token_for(&self, user_id: &str, password: &str, scope: Value) -> String {
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {"id": user_id, "password": password}}},
            "scope": scope}});
        let response = self
            .http
            .post(format!("{}/v3/auth/tokens", self.keystone))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "token for {user_id} scoped {scope}");
        response.headers()["x-subject-token"].to_str().unwrap().to_owned()
    }

    /// The admin's system-scoped token (`system: {all: true}`).
    pub async fn system_token(&self) -> String {
        let admin = env("ADMIN_USER_ID");
        self.token_for(&admin, &env("ADMIN_PASSWORD"), json!({"system": {"all": true}}))
            .await
    }
}

/// The broker's own client, authenticating through `auth_url` (a proxy in front of Keystone).
pub fn broker_cloud_at(auth_url: &str) -> OpenStack {
    let config = CloudConfig::from_lookup(|k| match k {
        "OS_AUTH_URL" => Some(format!("{auth_url}/v3")),
        "OS_USERNAME" => Some("admin".into()),
        "OS_PASSWORD" => Some(env("ADMIN_PASSWORD")),
        "OS_PROJECT_NAME" => Some("admin".into()),
        "OS_USER_DOMAIN_NAME" | "OS_PROJECT_DOMAIN_NAME" => Some("Default".into()),
        _ => None,
    })
    .unwrap();
    OpenStack::new(config, Duration::from_secs(10)).unwrap()
}
