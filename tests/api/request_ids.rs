//! One request id from the caller through the API, the audit log and the worker into
//! Keystone and Glance: `X-OpenStack-Request-ID` (oslo's `req-<uuid>`) is honoured and echoed,
//! the worker's calls carry the id of the API call that queued them (seen by recording proxies
//! in front of the real Keystone and Glance), and so do the events the worker writes.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response};
use glance_share_broker::worker::Worker;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, request_body, spawn_app};
use crate::openstack::{Rig, broker_cloud_at, drain, env, until_share_state, worker_config};

/// A recorded call: method, path, `X-OpenStack-Request-ID`.
type Call = (String, String, Option<String>);

/// An HTTP proxy in front of `upstream` that records each call's method, path and
/// `X-OpenStack-Request-ID`, and all its headers.
#[derive(Clone)]
pub struct Recorder {
    upstream: String,
    http: reqwest::Client,
    calls: Arc<Mutex<Vec<Call>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Recorder {
    pub async fn start(upstream: &str) -> (Recorder, String) {
        let recorder = Recorder {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            calls: Arc::default(),
            headers: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(recorder.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (recorder, url)
    }

    /// The request ids of the calls recorded since `from` (an index), with their paths.
    pub fn since(&self, from: usize) -> Vec<Call> {
        self.calls.lock().unwrap()[from..].to_vec()
    }

    /// Each recorded call with its headers, in the order they came.
    pub fn with_headers(&self) -> Vec<(Call, HeaderMap)> {
        let calls = self.calls.lock().unwrap().clone();
        calls.into_iter().zip(self.headers.lock().unwrap().clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

async fn forward(State(r): State<Recorder>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let id = parts
        .headers
        .get("x-openstack-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    {
        // One lock for both lists, so that their places match.
        let mut calls = r.calls.lock().unwrap();
        calls.push((parts.method.to_string(), parts.uri.path().to_owned(), id));
        r.headers.lock().unwrap().push(parts.headers.clone());
    }
    let mut headers = parts.headers.clone();
    headers.remove("host");
    let method = Method::from_bytes(parts.method.as_str().as_bytes()).unwrap();
    let answer = r
        .http
        .request(method, format!("{}{path}", r.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = AxumStatus::from_u16(answer.status().as_u16()).unwrap();
    let mut back = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "content-length" {
            back.append(name.clone(), value.clone());
        }
    }
    (status, back, answer.bytes().await.unwrap()).into_response()
}

async fn correlation_ids(app: &TestApp, request_id: &str) -> Vec<(String, Option<String>)> {
    sqlx::query_as("select action, correlation_id from audit_events where request_id = $1::uuid order by seq")
        .bind(request_id)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

fn oslo_id() -> String {
    format!("req-{}", Uuid::new_v4())
}

#[tokio::test]
async fn an_openstack_request_id_travels_from_the_call_through_the_worker_to_keystone_and_glance() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let (keystone, keystone_url) = Recorder::start(&env("KEYSTONE_URL")).await;
    let (glance, glance_url) = Recorder::start(&env("GLANCE_URL")).await;
    let cloud = broker_cloud_at(&keystone_url).with_glance_url(&glance_url);
    let worker = Worker::new(app.pool.clone(), cloud, worker_config());
    let image = rig.private_image("request-ids").await;

    // Filed with an id: echoed in both headers, the audit event's correlation id.
    let filing = oslo_id();
    let response = app
        .post(
            &app.requester,
            "/v1/share-requests",
            &request_body(&image, &[&env("PROJ_B_ID")]),
        )
        .header("x-openstack-request-id", &filing)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-openstack-request-id"], filing.as_str());
    assert_eq!(response.headers()["x-request-id"], filing.as_str());
    let filed: Value = response.json().await.unwrap();
    let id = filed["id"].as_str().unwrap();

    // The validation the filing queued: its Keystone and Glance calls, and its event, carry it.
    let (k0, g0) = (keystone.len(), glance.len());
    let validated = app.validated(id, Some(&worker)).await;
    assert_eq!(validated["validation"]["state"], "passed", "{validated}");
    let glance_calls = glance.since(g0);
    assert!(!glance_calls.is_empty());
    for (method, path, rid) in &glance_calls {
        assert_eq!(rid.as_deref(), Some(filing.as_str()), "{method} {path}");
    }
    let keystone_reads: Vec<_> = keystone
        .since(k0)
        .into_iter()
        .filter(|(_, p, _)| p != "/v3/auth/tokens")
        .collect();
    assert!(!keystone_reads.is_empty(), "the targets are looked up in Keystone");
    for (method, path, rid) in &keystone_reads {
        assert_eq!(rid.as_deref(), Some(filing.as_str()), "{method} {path}");
    }
    assert_eq!(
        correlation_ids(&app, id).await,
        [
            ("create".into(), Some(filing.clone())),
            ("update/validate".into(), Some(filing.clone()))
        ]
    );

    // Approved with another id: the grant's calls and events carry the approval's id.
    let approval = oslo_id();
    let g1 = glance.len();
    let response = app
        .post(&app.approver, &format!("/v1/share-requests/{id}/approve"), &json!({}))
        .header("x-openstack-request-id", &approval)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let share = filed["shares"][0]["id"].as_str().unwrap();
    until_share_state(&worker, &app.pool, share, "pending_acceptance").await;
    let writes: Vec<_> = glance.since(g1).into_iter().filter(|(m, _, _)| m != "GET").collect();
    assert!(
        writes.iter().any(|(m, p, _)| m == "POST" && p.ends_with("/members")),
        "{writes:?}"
    );
    for (method, path, rid) in &writes {
        assert_eq!(rid.as_deref(), Some(approval.as_str()), "{method} {path}");
    }
    let events = correlation_ids(&app, id).await;
    let after_approval: Vec<_> = events.iter().skip_while(|(a, _)| a != "update/approve").collect();
    let actions: Vec<&str> = after_approval.iter().map(|(a, _)| a.as_str()).collect();
    assert!(
        actions.contains(&"update/grant") && actions.contains(&"allow"),
        "{events:?}"
    );
    for (action, rid) in after_approval {
        assert_eq!(rid.as_deref(), Some(approval.as_str()), "{action}");
    }
    drain(&worker).await;
}

#[tokio::test]
async fn an_odd_openstack_request_id_is_replaced_and_an_x_request_id_alone_is_echoed_in_both_headers() {
    let app = spawn_app().await;
    let ids = async |name: &str, value: &str| -> (String, String) {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        let header = |h: &str| response.headers()[h].to_str().unwrap().to_owned();
        (header("x-request-id"), header("x-openstack-request-id"))
    };
    let upper = format!("req-{}", Uuid::new_v4()).to_uppercase();
    for odd in ["req-nope", "7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa", upper.as_str()] {
        let (request_id, openstack_id) = ids("x-openstack-request-id", odd).await;
        assert_ne!(openstack_id, odd);
        assert_eq!(request_id, openstack_id);
        assert!(
            Uuid::parse_str(openstack_id.strip_prefix("req-").unwrap()).is_ok(),
            "{openstack_id}"
        );
    }
    assert_eq!(ids("x-request-id", "corr-9").await, ("corr-9".into(), "corr-9".into()));

    // Both sent: OpenStack's id is the call's id.
    let oslo = oslo_id();
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "corr-10")
        .header("x-openstack-request-id", &oslo)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], oslo.as_str());
    assert_eq!(response.headers()["x-openstack-request-id"], oslo.as_str());
}
