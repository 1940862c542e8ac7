//! The service's edges against a hostile or careless caller: regions in one spelling, webhook
//! URLs that point inside the broker's network, an OpenStack that redirects, the API's own
//! Glance budget, rows kept for ever, slow request heads and unbounded request ids.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use glance_share_broker::db;
use glance_share_broker::openstack::pace::api_key;
use glance_share_broker::openstack::{CloudConfig, OpenStack};
use glance_share_broker::worker::{Outcome, WebhookConfig, Worker, WorkerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::helpers::{
    IMAGE, PROJ_B, TestApp, fields, problem, request_body, spawn_app, spawn_app_with, spawn_app_with_cloud,
};
use crate::openstack::{Rig, broker_cloud, broker_cloud_with_glance, env, worker_config};

// ---- item 10 of issue 10: regions -------------------------------------------------------

fn in_region(region: &str) -> Value {
    json!({ "image_id": IMAGE, "targets": [PROJ_B], "region": region, "reason": "CI" })
}

#[tokio::test]
async fn a_region_is_checked_against_the_catalog_and_stored_as_the_catalog_spells_it() {
    let app = spawn_app_with_cloud(Some(broker_cloud()), |_| {}).await;

    let filed = app.file_as(&app.requester, &in_region(" RegionOne ")).await;
    assert_eq!(filed["region"], "RegionOne");

    let other = json!({ "image_id": Uuid::new_v4(), "targets": [PROJ_B], "region": "regionone", "reason": "CI" });
    let response = app
        .post(&app.requester, "/v1/share-requests", &other)
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&body), ["region"]);
    assert!(
        body["errors"][0]["reason"].as_str().unwrap().contains("`RegionOne`"),
        "{body}"
    );

    let nowhere = json!({ "image_id": Uuid::new_v4(), "targets": [PROJ_B], "region": "Nowhere", "reason": "CI" });
    let response = app
        .post(&app.requester, "/v1/share-requests", &nowhere)
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&body), ["region"]);
    let reason = body["errors"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("Nowhere") && reason.contains("`RegionOne`"), "{reason}");
    assert_eq!(app.request_count().await, 1, "nothing refused was stored");
}

#[tokio::test]
async fn a_second_live_share_of_an_image_to_a_project_is_refused_whatever_the_regions_spelling() {
    // With the catalog: " RegionOne" is RegionOne.
    let app = spawn_app_with_cloud(Some(broker_cloud()), |_| {}).await;
    app.file_as(&app.requester, &in_region("RegionOne")).await;
    let response = app
        .post(&app.requester, "/v1/share-requests", &in_region("RegionOne "))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::CONFLICT).await;

    // Without a cloud to ask, regions are only trimmed; the database still holds one live
    // share per image, region (whatever its case) and project.
    let app = spawn_app().await;
    app.file_as(&app.requester, &in_region("RegionOne")).await;
    for spelling in ["RegionOne ", "regionone", " REGIONONE"] {
        let response = app
            .post(&app.requester, "/v1/share-requests", &in_region(spelling))
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::CONFLICT).await;
    }
    assert_eq!(app.request_count().await, 1);
}

#[tokio::test]
async fn validation_refuses_a_region_the_catalog_does_not_spell_so() {
    // An API without a cloud files any region (trimmed); the worker, which has one, refuses
    // those its Glance does not serve instead of granting them in its own region.
    let app = spawn_app().await;
    let image = Rig::from_env().private_image("region-case").await;
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    for region in ["regionone", "Nowhere"] {
        let body = json!({ "image_id": image, "targets": [env("PROJ_B_ID")], "region": region, "reason": "CI" });
        let filed = app.file_as(&app.requester, &body).await;
        let request = app.validated(filed["id"].as_str().unwrap(), Some(&worker)).await;
        assert_eq!(request["validation"]["state"], "failed", "{request}");
        assert_eq!(fields(&request["validation"]), ["region"], "{request}");
    }
    let body = json!({ "image_id": image, "targets": [env("PROJ_B_ID")], "region": "RegionOne ", "reason": "CI" });
    let filed = app.file_as(&app.requester, &body).await;
    let request = app.validated(filed["id"].as_str().unwrap(), Some(&worker)).await;
    assert_eq!(request["validation"]["state"], "passed", "{request}");
    assert_eq!(request["region"], "RegionOne");
}

/// A database with the whole schema.
async fn migrated() -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect(&crate::helpers::fresh_database().await)
        .await
        .unwrap();
    db::MIGRATOR.run(&pool).await.unwrap();
    pool
}

/// Writes a request and one share of it, in `region` and `state`, straight to the tables
/// (past the API's checks, as an operator's or a bug's SQL would).
async fn write_share(pool: &sqlx::PgPool, region: &str, state: &str) -> Result<(), sqlx::Error> {
    let request = Uuid::new_v4();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "insert into share_requests (id, image_id, region, reason, requested_by, requested_by_subject, status)
         values ($1, $2, $3, 'direct', 'portal', 'key:portal', 'approved')",
    )
    .bind(request)
    .bind(Uuid::parse_str(IMAGE).unwrap())
    .bind(region)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        // A scheduled revoke must say when, and what it was scheduled from.
        "insert into shares (id, request_id, image_id, region, target, project_id, state,
                             revoke_effective_at, revoke_scheduled_from)
         values ($1, $2, $3, $4, $5, $5, $6,
                 case when $6 = 'revocation_scheduled' then now() + interval '1 day' end,
                 case when $6 = 'revocation_scheduled' then 'accepted' end)",
    )
    .bind(Uuid::new_v4())
    .bind(request)
    .bind(Uuid::parse_str(IMAGE).unwrap())
    .bind(region)
    .bind(PROJ_B)
    .bind(state)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

fn constraint_of(error: sqlx::Error) -> String {
    error
        .as_database_error()
        .and_then(|e| e.constraint())
        .unwrap_or_else(|| panic!("not a constraint violation: {error}"))
        .to_owned()
}

#[tokio::test]
async fn the_schema_refuses_an_untrimmed_region_and_a_live_twin_in_another_case() {
    let pool = migrated().await;
    for region in ["RegionOne ", " RegionOne", ""] {
        let error = write_share(&pool, region, "accepted").await.unwrap_err();
        assert_eq!(constraint_of(error), "share_requests_region_canonical", "{region:?}");
    }
    write_share(&pool, "RegionOne", "accepted").await.unwrap();
    // The same image, project and region spelled in another case is the same grant: refused
    // while the first is live, by the index db::share_requests::ONE_LIVE_GRANT names.
    let error = write_share(&pool, "regionone", "pending_acceptance").await.unwrap_err();
    assert_eq!(constraint_of(error), "shares_one_live_grant_idx");
    // A finished share does not count.
    write_share(&pool, "REGIONONE", "revoked").await.unwrap();
}

#[tokio::test]
async fn the_schema_refuses_a_state_no_enum_has() {
    let pool = migrated().await;
    let error = write_share(&pool, "RegionOne", "granted").await.unwrap_err();
    assert_eq!(constraint_of(error), "shares_state_check");
    use strum::VariantArray;
    for state in glance_share_broker::domain::ShareState::VARIANTS {
        sqlx::query("delete from shares").execute(&pool).await.unwrap();
        write_share(&pool, "RegionOne", state.as_ref()).await.unwrap();
    }
}

// ---- webhooks that point inside -----------------------------------------------------------

#[tokio::test]
async fn webhook_urls_at_internal_addresses_are_refused_at_registration() {
    let app = spawn_app_with(|args| args.worker.webhook_allow_private = false).await;
    for url in [
        "http://127.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://localhost/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fd00:ec2::254]/",
        "http://10.1.2.3/hook",
        "http://0.0.0.0:8080/hook",
        "http://2130706433/hook",
    ] {
        let response = app
            .post(&app.admin, "/v1/webhooks", &json!({ "url": url }))
            .send()
            .await
            .unwrap();
        let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&body), ["url"], "{url}: {body}");
    }

    // A public address is fine (nothing connects to it at registration); moving it inside
    // is refused like registering it there.
    let response = app
        .post(&app.admin, "/v1/webhooks", &json!({ "url": "https://8.8.8.8/hook" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = app
        .client
        .patch(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&app.admin)
        .json(&json!({ "url": "http://169.254.169.254/" }))
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(fields(&body), ["url"]);
}

/// A receiver that counts what reaches it.
async fn counting_receiver() -> (u16, Arc<Mutex<usize>>) {
    let hits = Arc::new(Mutex::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route(
            "/hooks",
            post(|State(hits): State<Arc<Mutex<usize>>>| async move {
                *hits.lock().unwrap() += 1;
                AxumStatus::NO_CONTENT
            }),
        )
        .with_state(hits.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, hits)
}

#[tokio::test]
async fn deliveries_to_internal_addresses_are_refused_when_they_connect() {
    // Registered while allowed (as a name that resolved elsewhere then would be), delivered
    // by a worker that does not allow them: `localhost` resolves to loopback at delivery.
    let app = spawn_app().await;
    let (port, hits) = counting_receiver().await;
    for url in [
        format!("http://localhost:{port}/hooks"),
        format!("http://127.0.0.1:{port}/hooks"),
    ] {
        let response = app
            .post(
                &app.admin,
                "/v1/webhooks",
                &json!({ "url": url, "events": ["request.created"] }),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    app.file(IMAGE, &[PROJ_B]).await;
    let strict = WorkerConfig {
        webhooks: WebhookConfig {
            allow_private: false,
            ..worker_config().webhooks
        },
        ..worker_config()
    };
    let worker = Worker::new(app.pool.clone(), broker_cloud(), strict);
    let settled = async |pool: &sqlx::PgPool| -> Vec<(String, Option<String>)> {
        sqlx::query_as("select state, last_error from webhook_deliveries")
            .fetch_all(pool)
            .await
            .unwrap()
    };
    for _ in 0..100 {
        if worker.deliver_once().await.unwrap() == Outcome::Idle {
            if settled(&app.pool).await.iter().all(|(state, _)| state == "failed") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deliveries = settled(&app.pool).await;
    assert_eq!(deliveries.len(), 2);
    for (state, error) in deliveries {
        assert_eq!(state, "failed", "tried until no tries were left");
        let error = error.expect("the refusal is recorded");
        assert!(error.contains("loopback"), "{error}");
    }
    assert_eq!(*hits.lock().unwrap(), 0, "nothing reached the receiver");

    // The same deliveries go out where internal addresses are allowed (the tests' setting).
    sqlx::query("update webhook_deliveries set state = 'queued', attempts = 0, run_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    let allowed = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    while allowed.deliver_once().await.unwrap() == Outcome::Ran {}
    assert_eq!(*hits.lock().unwrap(), 2);
}

// ---- the OpenStack client and redirects --------------------------------------------------

/// A server that answers 307 to `/v3/auth/tokens` and to `/v2/...`, pointing at `/stolen`,
/// and records every request that reaches `/stolen` with a password or a token.
#[derive(Clone, Default)]
struct Redirector {
    stolen: Arc<Mutex<Vec<String>>>,
}

impl Redirector {
    async fn start() -> (Redirector, String) {
        let redirector = Redirector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/stolen/{*rest}", any(steal))
            .fallback(|| async { (AxumStatus::TEMPORARY_REDIRECT, [("location", "/stolen/it")]) })
            .with_state(redirector.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (redirector, url)
    }
}

async fn steal(State(r): State<Redirector>, headers: HeaderMap, body: String) -> Response {
    if let Some(token) = headers.get("x-auth-token") {
        r.stolen.lock().unwrap().push(format!("token {token:?}"));
    }
    if body.contains("password") {
        r.stolen.lock().unwrap().push("password".into());
    }
    AxumStatus::NOT_FOUND.into_response()
}

#[tokio::test]
async fn the_openstack_client_follows_no_redirect_with_its_password_or_token() {
    let (redirector, url) = Redirector::start().await;

    // Keystone answering the authentication with a redirect: the password stays home.
    let cloud = CloudConfig::from_lookup(|k| match k {
        "OS_AUTH_URL" => Some(format!("{url}/v3")),
        "OS_USERNAME" => Some("broker".into()),
        "OS_PASSWORD" => Some("s3cret".into()),
        "OS_PROJECT_NAME" => Some("admin".into()),
        _ => None,
    })
    .unwrap();
    let keystone = OpenStack::new(cloud, Duration::from_secs(5)).unwrap();
    assert!(keystone.project("anything", "req-redirect").await.is_err());

    // Glance answering with a redirect: the (real) token stays home.
    let glance = broker_cloud_with_glance(&url, Duration::from_secs(5));
    assert!(glance.image(&Uuid::new_v4().to_string(), "req-redirect").await.is_err());

    assert_eq!(*redirector.stolen.lock().unwrap(), Vec::<String>::new());
}

/// A TLS server on 127.0.0.1 with a certificate of the test CA (tests/api/tls), answering
/// every request 404; its https URL.
async fn tls_server() -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/tls");
    let certs = CertificateDer::pem_file_iter(format!("{dir}/test-server.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(format!("{dir}/test-server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let not_found = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder().status(404).body(String::new()).unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), not_found)
                    .await;
            });
        }
    });
    url
}

#[tokio::test]
async fn the_openstack_client_trusts_the_cacert_of_clouds_yaml_and_verify_false_only_when_said() {
    let url = tls_server().await;
    let client = |cacert: Option<&str>, verify: bool| {
        let mut cloud = CloudConfig::from_lookup(|k| match k {
            "OS_AUTH_URL" => Some(format!("{url}/v3")),
            "OS_APPLICATION_CREDENTIAL_ID" => Some("a".into()),
            "OS_APPLICATION_CREDENTIAL_SECRET" => Some("s".into()),
            _ => None,
        })
        .unwrap();
        cloud.cacert = cacert.map(|name| format!("{}/tests/api/tls/{name}", env!("CARGO_MANIFEST_DIR")).into());
        cloud.verify = verify;
        OpenStack::new(cloud, Duration::from_secs(5)).unwrap()
    };
    // Keystone's 404 means the TLS handshake went through; a transport error that it did not.
    let answer = async |cloud: OpenStack| cloud.project("p", "req-tls").await.unwrap_err().to_string();

    let trusted = answer(client(Some("test-ca.pem"), true)).await;
    assert!(trusted.contains("404"), "with cacert: {trusted}");
    let untrusted = answer(client(None, true)).await;
    assert!(
        !untrusted.contains("404"),
        "without cacert the test CA is not trusted: {untrusted}"
    );
    let unverified = answer(client(None, false)).await;
    assert!(unverified.contains("404"), "verify: false: {unverified}");
}

// ---- the API's own Glance budget ---------------------------------------------------------

#[tokio::test]
async fn filings_beyond_the_apis_glance_budget_get_503_and_leave_the_workers_budget_alone() {
    let app = spawn_app_with_cloud(Some(broker_cloud()), |args| {
        args.worker.glance_rate_limit = 20;
        args.edges.api_glance_rate_limit = 1;
        args.edges.api_glance_concurrency = 2;
    })
    .await;
    let rig = Rig::from_env();
    let (image, alice) = (rig.private_image("api-budget").await, rig.token("alice").await);

    let filings = (0..12).map(|i| {
        let body = json!({ "image_id": image, "targets": [format!("project-{i}")], "reason": "budget" });
        let request = app.post_as(&alice, "/v1/share-requests", &body);
        async move { request.send().await.unwrap() }
    });
    let responses = futures_util::future::join_all(filings).await;
    let mut statuses = Vec::new();
    for response in responses {
        statuses.push(response.status());
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            let after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=5).contains(&after), "Retry-After {after}");
            let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
            assert!(body["detail"].as_str().unwrap().contains("budget"), "{body}");
        }
    }
    let passed = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(passed + refused, 12, "{statuses:?}");
    assert!(passed >= 1 && refused >= 1, "{statuses:?}");

    let cloud = broker_cloud();
    let workers = db::rate_slots::reserved(&app.pool, &cloud.cloud_key()).await.unwrap();
    let api = db::rate_slots::reserved(&app.pool, &api_key(&cloud)).await.unwrap();
    assert_eq!(workers, 0, "the filings took none of the workers' slots");
    assert_eq!(
        api, passed as i64,
        "one slot per filing that went to Glance, none for refusals"
    );
}

// ---- retention -----------------------------------------------------------------------------

#[tokio::test]
async fn the_purge_deletes_old_finished_work_and_keeps_young_rows_live_jobs_and_the_audit_log() {
    let app = spawn_app_with(|args| {
        args.edges.purge_every_secs = 1;
        args.edges.retain_jobs_days = 7;
        args.edges.retain_deliveries_days = 30;
    })
    .await;
    app.file(IMAGE, &[PROJ_B]).await;
    let audit_before = audit_count(&app).await;
    let sql = [
        // Jobs: 2,500 old finished ones (more than one batch), a young one, and live old ones,
        // told apart by `last_error`.
        "insert into jobs (id, kind, last_error, state, created_at, finished_at)
         select gen_random_uuid(), 'poll', 'old', 'done', now() - interval '9 days', now() - interval '8 days'
         from generate_series(1, 2500)",
        "insert into jobs (id, kind, last_error, state, finished_at) values (gen_random_uuid(), 'poll', 'old', 'failed', now() - interval '8 days')",
        "insert into jobs (id, kind, last_error, state, finished_at) values (gen_random_uuid(), 'poll', 'young', 'done', now() - interval '6 days')",
        "insert into jobs (id, kind, last_error, state, created_at, run_at) values (gen_random_uuid(), 'poll', 'live', 'queued', now() - interval '60 days', now() + interval '1 day')",
        "insert into jobs (id, kind, last_error, state, created_at, run_at, lease_expires_at) values (gen_random_uuid(), 'poll', 'live', 'running', now() - interval '60 days', now() - interval '60 days', now() + interval '1 day')",
        "insert into webhooks (id, url, secret, created_by) values ('00000000-0000-0000-0000-000000000001', 'https://8.8.8.8/', 's', 'test')",
        "insert into webhook_deliveries (id, webhook_id, event, audit_seq, payload, state, run_at, delivered_at) values
            (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 'old', 1, '{}', 'delivered', now() - interval '40 days', now() - interval '31 days'),
            (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 'old', 2, '{}', 'failed', now() - interval '31 days', null),
            (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 'young', 3, '{}', 'delivered', now() - interval '29 days', now() - interval '29 days'),
            (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', 'live', 4, '{}', 'queued', now() - interval '60 days', null)",
        "insert into idempotency_keys (principal, key, request_hash, response_status, response_headers, response_body, created_at) values
            ('p', 'old', '', 201, '{}', '', now() - interval '25 hours'),
            ('p', 'young', '', 201, '{}', '', now() - interval '23 hours')",
        "insert into rate_slots (key, next_at) values ('old', now() - interval '2 days'), ('young', now() - interval '1 hour')",
    ];
    for statement in sql {
        sqlx::query(statement).execute(&app.pool).await.unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    while remaining(&app, "jobs", "last_error", "old").await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One more round, so that every table has had its purge.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(remaining(&app, "jobs", "last_error", "old").await, 0);
    assert_eq!(remaining(&app, "jobs", "last_error", "young").await, 1);
    assert_eq!(remaining(&app, "jobs", "last_error", "live").await, 2);
    assert_eq!(remaining(&app, "webhook_deliveries", "event", "old").await, 0);
    assert_eq!(remaining(&app, "webhook_deliveries", "event", "young").await, 1);
    assert_eq!(remaining(&app, "webhook_deliveries", "event", "live").await, 1);
    assert_eq!(remaining(&app, "idempotency_keys", "key", "old").await, 0);
    assert_eq!(remaining(&app, "idempotency_keys", "key", "young").await, 1);
    assert_eq!(remaining(&app, "rate_slots", "key", "old").await, 0);
    assert_eq!(remaining(&app, "rate_slots", "key", "young").await, 1);
    assert_eq!(app.request_count().await, 1, "requests are history: never purged");
    assert_eq!(audit_count(&app).await, audit_before, "the audit log is never purged");
}

async fn remaining(app: &TestApp, table: &str, column: &str, value: &str) -> i64 {
    sqlx::query_scalar(&format!("select count(*) from {table} where {column} = $1"))
        .bind(value)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn audit_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from audit_events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

// ---- slow request heads and request ids --------------------------------------------------

#[tokio::test]
async fn a_client_that_stalls_in_its_request_head_is_disconnected_after_the_timeout() {
    let app = spawn_app_with(|args| args.edges.header_read_timeout_secs = 1).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"GET /heal").await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection is still open after 5 s");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "closed too early: {waited:?}");
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));

    // A client that sends its head in time is served as usual.
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unbounded_or_odd_request_id_is_replaced_by_a_generated_one_and_never_stored() {
    let app = spawn_app().await;
    let echoed = async |id: &str| -> String {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", id)
            .send()
            .await
            .unwrap();
        response.headers()["x-request-id"].to_str().unwrap().to_owned()
    };
    assert_eq!(echoed("req-42.a_b:c").await, "req-42.a_b:c");
    let long = "x".repeat(129);
    for bad in [long.as_str(), "two words", "caf\u{e9}"] {
        let id = echoed(bad).await;
        assert_ne!(id, bad);
        assert!(
            Uuid::parse_str(id.strip_prefix("req-").unwrap()).is_ok(),
            "a generated id: {id}"
        );
    }

    let huge = "y".repeat(8000);
    let response = app
        .post(&app.requester, "/v1/share-requests", &request_body(IMAGE, &[PROJ_B]))
        .header("x-request-id", &huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let stored: Vec<Option<String>> = sqlx::query_scalar("select correlation_id from audit_events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(!stored.is_empty());
    for id in stored.into_iter().flatten() {
        assert!(id.len() <= 128, "a {}-character request id was stored", id.len());
    }
}
