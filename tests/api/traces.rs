//! OpenTelemetry traces as an operator's collector receives them: a broker process (`serve`,
//! API and worker) exports OTLP/HTTP protobuf to a collector in the test, which decodes
//! what it gets with OpenTelemetry's own protobuf types. The broker talks to the real
//! Keystone and Glance through recording proxies, to see what each call carries.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::free_port;
use crate::crash::{BIN, signal, tempdir};
use crate::helpers::{TestApp, request_body, spawn_app};
use crate::openstack::{Rig, env};
use crate::request_ids::Recorder;

/// One exported span, its ids in lower-case hex.
#[derive(Debug, Clone)]
struct Exported {
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent: String,
    name: String,
    kind: SpanKind,
    attributes: BTreeMap<String, String>,
    /// `service.name` of the resource that sent it.
    service: String,
}

impl Exported {
    fn attr(&self, name: &str) -> &str {
        self.attributes.get(name).map_or("", String::as_str)
    }
}

/// An OTLP/HTTP collector: `POST /v1/traces` with a protobuf body.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Exported>>>,
    /// Every body received, as it came: what leaked, if anything, is in there.
    bodies: Arc<Mutex<Vec<Bytes>>>,
}

impl Collector {
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(receive))
            .with_state(collector.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (collector, url)
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }

    fn posts(&self) -> usize {
        self.bodies.lock().unwrap().len()
    }

    /// The spans of one trace.
    fn trace(&self, trace_id: &str) -> Vec<Exported> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }

    /// Whether any body received holds `secret`.
    fn saw(&self, secret: &str) -> bool {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
    }
}

async fn receive(State(collector): State<Collector>, body: Bytes) -> (AxumStatus, Vec<u8>) {
    let Ok(export) = ExportTraceServiceRequest::decode(body.clone()) else {
        return (AxumStatus::BAD_REQUEST, Vec::new());
    };
    collector.bodies.lock().unwrap().push(body);
    let mut spans = collector.spans.lock().unwrap();
    for resource in export.resource_spans {
        let resource_attributes = attributes(&resource.resource.unwrap_or_default().attributes);
        let service = resource_attributes.get("service.name").cloned().unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            spans.push(Exported {
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent: hex::encode(&span.parent_span_id),
                name: span.name.clone(),
                kind: SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified),
                attributes: attributes(&span.attributes),
                service: service.clone(),
            });
        }
    }
    // An empty ExportTraceServiceResponse: all accepted.
    (AxumStatus::OK, Vec::new())
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(i)) => i.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// A collector that takes connections and never answers; how many it took.
async fn hanging_collector() -> (Arc<Mutex<usize>>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let taken = Arc::new(Mutex::new(0));
    let count = taken.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            *count.lock().unwrap() += 1;
            held.push(stream);
        }
    });
    (taken, url)
}

/// A `glance-share-broker serve` process (API and worker) on the test's database, reaching
/// Keystone and Glance through `keystone` and `glance`; killed when dropped.
struct Broker {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Broker {
    async fn start(app: &TestApp, keystone: &str, glance: &str, settings: &[(&str, &str)]) -> Broker {
        let port = free_port();
        let log = tempdir().join("broker.log");
        let child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.database_url)
            .env("GSB_LISTEN", format!("127.0.0.1:{port}"))
            .env("GSB_LOG_FORMAT", "text")
            .env("GSB_INSTANCE", "traced-broker")
            .env("GSB_IDLE_POLL_MS", "100")
            .env("GSB_RETRY_BASE_MS", "50")
            .env("GSB_RECONCILE_EVERY", "off")
            .env("GSB_RATE_LIMIT_PER_SEC", "0")
            .env("GSB_ADDRESS_RATE_LIMIT_PER_SEC", "0")
            .env("OS_AUTH_URL", format!("{keystone}/v3"))
            .env("OS_USERNAME", "admin")
            .env("OS_PASSWORD", env("ADMIN_PASSWORD"))
            .env("OS_PROJECT_NAME", "admin")
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("GSB_GLANCE_URL", glance)
            // Export soon after a span ends, not after the SDK's 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut broker = Broker { child, port, log };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(broker.url("/readyz")).send().await
                && r.status() == StatusCode::OK
            {
                return broker;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = broker.child.try_wait();
        panic!("the broker did not become ready ({status:?}):\n{}", broker.log());
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the clean exit that flushes the last spans; how long it took.
    fn stop(mut self) -> Duration {
        let started = Instant::now();
        signal(&self.child, Signal::SIGTERM);
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "SIGTERM is a clean shutdown, got {status}:\n{}",
            self.log()
        );
        started.elapsed()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A `traceparent` in trace `trace_id` from the caller's span `span_id`, sampled.
fn traceparent(trace_id: &str, span_id: &str) -> String {
    format!("00-{trace_id}-{span_id}-01")
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// The `traceparent` a response carries: (trace id, span id, flags).
fn answered_traceparent(response: &reqwest::Response) -> (String, String, String) {
    let value = response.headers()["traceparent"].to_str().unwrap().to_owned();
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!(parts[0], "00", "{value}");
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

/// Waits until `done` holds of what the collector received.
async fn until_collected(collector: &Collector, what: &str, done: impl Fn(&[Exported]) -> bool) {
    for _ in 0..300 {
        if done(&collector.spans()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the collector did not receive {what}: {:#?}", collector.spans());
}

/// A test's database, a collector, and recording proxies in front of the real Keystone and
/// Glance.
struct Scene {
    app: TestApp,
    rig: Rig,
    collector: Collector,
    collector_url: String,
    keystone: Recorder,
    keystone_url: String,
    glance: Recorder,
    glance_url: String,
}

async fn scene() -> Scene {
    let (collector, collector_url) = Collector::start().await;
    let (keystone, keystone_url) = Recorder::start(&env("KEYSTONE_URL")).await;
    let (glance, glance_url) = Recorder::start(&env("GLANCE_URL")).await;
    Scene {
        app: spawn_app().await,
        rig: Rig::from_env(),
        collector,
        collector_url,
        keystone,
        keystone_url,
        glance,
        glance_url,
    }
}

impl Scene {
    /// A broker process reaching OpenStack through the scene's proxies.
    async fn broker(&self, settings: &[(&str, &str)]) -> Broker {
        Broker::start(&self.app, &self.keystone_url, &self.glance_url, settings).await
    }
}

#[tokio::test]
async fn a_traceparent_follows_a_share_from_the_api_through_the_worker_to_keystone_and_glance() {
    let scene = scene().await;
    let broker = scene
        .broker(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", scene.collector_url.as_str()),
            // No acceptance check in the middle of what the test reads.
            ("GSB_ACCEPT_POLL_FIRST_SECS", "3600"),
        ])
        .await;
    let Scene {
        app,
        rig,
        collector,
        keystone,
        keystone_url,
        glance,
        glance_url,
        ..
    } = scene;
    let image = rig.private_image("traces").await;
    // One trace for the person's whole errand (file, look, approve), as a portal would send.
    let trace_id = random_hex(16);
    let (filing_parent, approval_parent) = (random_hex(8), random_hex(8));

    let filed = app
        .client
        .post(broker.url("/v1/share-requests"))
        .bearer_auth(&app.requester)
        .header("traceparent", traceparent(&trace_id, &filing_parent))
        .header("tracestate", "portal=errand-1")
        .json(&request_body(&image, &[&env("PROJ_B_ID")]))
        .send()
        .await
        .unwrap();
    assert_eq!(filed.status(), StatusCode::CREATED);
    let (answered_trace, filing_span, flags) = answered_traceparent(&filed);
    assert_eq!((answered_trace.as_str(), flags.as_str()), (trace_id.as_str(), "01"));
    assert_ne!(filing_span, filing_parent, "the response names the broker's span");
    assert_eq!(filed.headers()["tracestate"], "portal=errand-1");
    let filed: Value = filed.json().await.unwrap();
    let id = filed["id"].as_str().unwrap().to_owned();
    let traced = TestApp {
        addr: format!("127.0.0.1:{}", broker.port).parse().unwrap(),
        ..app
    };
    let validated = traced.validated(&id, None).await;
    assert_eq!(validated["validation"]["state"], "passed", "{validated}");

    // A person's Keystone token reaches Keystone (validation); it must reach no span.
    let alice = rig.token("alice").await;
    let read = traced
        .client
        .get(broker.url(&format!("/v1/share-requests/{id}")))
        .header("x-auth-token", &alice)
        .header("traceparent", traceparent(&trace_id, &random_hex(8)))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);

    let g0 = glance.len();
    let approved = traced
        .client
        .post(broker.url(&format!("/v1/share-requests/{id}/approve")))
        .bearer_auth(&traced.approver)
        .header("traceparent", traceparent(&trace_id, &approval_parent))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(approved.status(), StatusCode::OK);
    let (_, approval_span, _) = answered_traceparent(&approved);
    let share = filed["shares"][0]["id"].as_str().unwrap().to_owned();
    crate::crash::wait_for("the grant", async || {
        traced.share_state(&share).await == "pending_acceptance"
    })
    .await;
    until_collected(&collector, "the grant's spans", |spans| {
        spans.iter().any(|s| s.name == "grant job" && s.trace_id == trace_id)
            && spans
                .iter()
                .any(|s| s.attr("openstack.operation") == "add image member" && s.trace_id == trace_id)
    })
    .await;
    let trace = collector.trace(&trace_id);
    let one = |what: &str, find: &dyn Fn(&Exported) -> bool| -> Exported {
        let found: Vec<&Exported> = trace.iter().filter(|s| find(s)).collect();
        assert_eq!(found.len(), 1, "{what} in {trace:#?}");
        found[0].clone()
    };

    // The API's server spans: children of the caller's spans, named by method and route.
    let filing = one("the filing's server span", &|s| s.span_id == filing_span);
    assert_eq!(
        (filing.kind, filing.name.as_str(), filing.parent.as_str()),
        (SpanKind::Server, "POST /v1/share-requests", filing_parent.as_str())
    );
    assert_eq!(filing.attr("http.request.method"), "POST");
    assert_eq!(filing.attr("http.route"), "/v1/share-requests");
    assert_eq!(filing.attr("http.response.status_code"), "201");
    assert_eq!(filing.service, "glance-share-broker");
    let approval = one("the approval's server span", &|s| s.span_id == approval_span);
    assert_eq!(
        (approval.kind, approval.name.as_str(), approval.parent.as_str()),
        (
            SpanKind::Server,
            "POST /v1/share-requests/{id}/approve",
            approval_parent.as_str()
        )
    );
    assert_eq!(approval.attr("url.path"), format!("/v1/share-requests/{id}/approve"));
    assert_eq!(approval.attr("http.response.status_code"), "200");

    // The worker's jobs: children of the calls that queued them.
    let validation = one("the validation job", &|s| s.name == "validate job");
    assert_eq!(
        (validation.kind, validation.parent.as_str()),
        (SpanKind::Consumer, filing_span.as_str())
    );
    let grant = one("the grant job", &|s| s.name == "grant job");
    assert_eq!(
        (grant.kind, grant.parent.as_str()),
        (SpanKind::Consumer, approval_span.as_str())
    );

    // Their OpenStack calls: client spans, children of the jobs.
    let clients: Vec<&Exported> = trace.iter().filter(|s| s.kind == SpanKind::Client).collect();
    let keystone_url_host = url::Url::parse(&keystone_url).unwrap();
    let validation_keystone: Vec<&&Exported> = clients
        .iter()
        .filter(|s| s.attr("openstack.service") == "keystone" && s.parent == validation.span_id)
        .collect();
    assert!(
        !validation_keystone.is_empty(),
        "the targets are looked up: {clients:#?}"
    );
    for call in &validation_keystone {
        assert_eq!(call.attr("server.address"), keystone_url_host.host_str().unwrap());
        assert_eq!(call.attr("server.port"), keystone_url_host.port().unwrap().to_string());
        assert!(call.name == "GET keystone" || call.name == "POST keystone", "{call:?}");
    }
    let add = one("the add member call", &|s| {
        s.attr("openstack.operation") == "add image member"
    });
    assert_eq!(
        (add.kind, add.name.as_str(), add.parent.as_str()),
        (SpanKind::Client, "POST glance", grant.span_id.as_str())
    );
    assert_eq!(add.attr("http.request.method"), "POST");
    assert_eq!(add.attr("url.full"), format!("{glance_url}/v2/images/{image}/members"));
    assert!(
        ["200", "409"].contains(&add.attr("http.response.status_code")),
        "{add:?}"
    );
    assert!(
        clients
            .iter()
            .any(|s| s.attr("openstack.service") == "glance" && s.parent == validation.span_id),
        "validation reads the image: {clients:#?}"
    );
    for call in &clients {
        assert!(
            !call.attr("url.full").contains('?') || call.attr("url.full").contains("=REDACTED"),
            "{call:?}"
        );
    }

    // Each of the grant's Glance calls carried its client span's traceparent, beside the
    // global request id.
    let grant_calls: Vec<_> = glance.with_headers().into_iter().skip(g0).collect();
    assert!(!grant_calls.is_empty());
    let client_ids: Vec<&str> = clients.iter().map(|s| s.span_id.as_str()).collect();
    for ((method, path, rid), headers) in &grant_calls {
        let sent = headers
            .get("traceparent")
            .unwrap_or_else(|| panic!("{method} {path} carries no traceparent"))
            .to_str()
            .unwrap();
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", trace_id.as_str(), "01"),
            "{method} {path}"
        );
        assert!(
            client_ids.contains(&parts[2]),
            "{method} {path}: {sent} is no exported client span"
        );
        assert!(rid.as_deref().is_some_and(|r| r.starts_with("req-")), "{method} {path}");
    }
    assert!(
        keystone.with_headers().iter().any(|(_, h)| h
            .get("traceparent")
            .is_some_and(|t| t.to_str().unwrap().contains(&trace_id))),
        "Keystone calls carry the trace too"
    );

    // No secret reached the collector: no token the broker or a person sent, no password,
    // no API key.
    let mut secrets = vec![
        alice.clone(),
        env("ADMIN_PASSWORD"),
        traced.requester.clone(),
        traced.approver.clone(),
    ];
    for (_, headers) in glance.with_headers().iter().chain(keystone.with_headers().iter()) {
        for name in ["x-auth-token", "x-subject-token"] {
            if let Some(token) = headers.get(name) {
                secrets.push(token.to_str().unwrap().to_owned());
            }
        }
    }
    assert!(secrets.len() > 4, "the proxies saw the broker's tokens");
    broker.stop();
    assert!(collector.posts() > 0);
    for secret in &secrets {
        assert!(!collector.saw(secret), "a secret reached the collector");
    }
    for span in collector.spans() {
        for (name, value) in &span.attributes {
            assert!(
                !name.contains("auth") && !name.contains("token") && !name.contains("password"),
                "{name}={value}"
            );
        }
    }
}

#[tokio::test]
async fn without_an_otlp_endpoint_or_with_otel_sdk_disabled_nothing_is_exported_or_propagated() {
    let scene = scene().await;
    let (app, keystone, glance) = (&scene.app, &scene.keystone, &scene.glance);
    let settings: [&[(&str, &str)]; 2] = [
        // What an operator who never heard of OpenTelemetry runs: no endpoint.
        &[("OTEL_SERVICE_NAME", "named-but-off")],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", scene.collector_url.as_str()),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ],
    ];
    for settings in settings {
        let broker = scene.broker(settings).await;
        let image = scene.rig.private_image("traces-off").await;
        // From before the filing: the API's own look-ups are calls too.
        let (k0, g0) = (keystone.len(), glance.len());
        let filed = app
            .client
            .post(broker.url("/v1/share-requests"))
            .bearer_auth(&app.requester)
            .header("traceparent", traceparent(&random_hex(16), &random_hex(8)))
            .json(&request_body(&image, &[&env("PROJ_B_ID")]))
            .send()
            .await
            .unwrap();
        assert_eq!(filed.status(), StatusCode::CREATED, "{settings:?}");
        assert!(filed.headers().get("traceparent").is_none(), "{settings:?}");
        let id = filed.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        // The broker process validates; the test's own API reads the same database.
        app.validated(&id, None).await;
        let calls: Vec<_> = keystone
            .with_headers()
            .into_iter()
            .skip(k0)
            .chain(glance.with_headers().into_iter().skip(g0))
            .collect();
        assert!(!calls.is_empty(), "{settings:?}: validation calls OpenStack");
        for ((method, path, _), headers) in &calls {
            assert!(headers.get("traceparent").is_none(), "{settings:?}: {method} {path}");
        }
        broker.stop();
    }
    assert_eq!(scene.collector.posts(), 0, "nothing was exported");
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace_and_the_request_is_served() {
    let app = spawn_app().await;
    let (collector, collector_url) = Collector::start().await;
    let broker = Broker::start(
        &app,
        &env("KEYSTONE_URL"),
        &env("GLANCE_URL"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url.as_str()),
            ("OTEL_SERVICE_NAME", "broker-under-test"),
        ],
    )
    .await;
    let valid = traceparent(&random_hex(16), &random_hex(8));
    let malformed: Vec<Vec<String>> = vec![
        vec!["not a traceparent".into()],
        vec!["00-00000000000000000000000000000000-00f067aa0ba902b7-01".into()],
        vec!["00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".into()],
        vec!["00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01".into()],
        vec!["ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()],
        vec!["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra".into()],
        // Two, even both well formed: which one is meant is unknown.
        vec![valid.clone(), traceparent(&random_hex(16), &random_hex(8))],
    ];
    let mut roots = Vec::new();
    for headers in &malformed {
        let mut request = app
            .client
            .get(broker.url("/v1/share-requests"))
            .bearer_auth(&app.auditor)
            .header("tracestate", "vendor=kept-only-with-a-parent");
        for value in headers {
            request = request.header("traceparent", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{headers:?}");
        let (trace_id, span_id, flags) = answered_traceparent(&response);
        assert!(
            headers.iter().all(|h| !h.contains(&trace_id)),
            "{headers:?}: a new trace"
        );
        assert_ne!(trace_id, "0".repeat(32));
        assert_eq!(flags, "01", "a new trace is sampled (parentbased_always_on)");
        assert!(response.headers().get("tracestate").is_none(), "{headers:?}");
        roots.push((trace_id, span_id));
    }
    // A caller that decided not to sample: its decision holds, nothing is exported for it.
    let unsampled_trace = random_hex(16);
    let response = app
        .client
        .get(broker.url("/v1/share-requests"))
        .bearer_auth(&app.auditor)
        .header("traceparent", format!("00-{unsampled_trace}-{}-00", random_hex(8)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(answered_traceparent(&response).0, unsampled_trace);
    assert_eq!(answered_traceparent(&response).2, "00");

    until_collected(&collector, "every request's span", |spans| {
        roots
            .iter()
            .all(|(t, s)| spans.iter().any(|e| &e.trace_id == t && &e.span_id == s))
    })
    .await;
    broker.stop();
    for (trace_id, span_id) in &roots {
        let span = collector.spans().into_iter().find(|s| &s.span_id == span_id).unwrap();
        assert_eq!((&span.trace_id, span.parent.as_str()), (trace_id, ""), "a root span");
        assert_eq!(span.name, "GET /v1/share-requests");
        assert_eq!(span.service, "broker-under-test");
    }
    assert!(collector.trace(&unsampled_trace).is_empty());
}

#[tokio::test]
async fn a_collector_that_hangs_or_is_down_slows_no_request_and_no_shutdown() {
    let app = spawn_app().await;
    let (taken, hanging) = hanging_collector().await;
    let down = format!("http://127.0.0.1:{}", free_port());
    for collector in [hanging.as_str(), down.as_str()] {
        let broker = Broker::start(
            &app,
            &env("KEYSTONE_URL"),
            &env("GLANCE_URL"),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", collector),
                // A small queue, soon full: the spans beyond it are dropped, not waited for.
                ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
            ],
        )
        .await;
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        for _ in 0..200 {
            let sent = Instant::now();
            let response = app
                .client
                .get(broker.url("/v1/share-requests"))
                .bearer_auth(&app.auditor)
                .header("traceparent", traceparent(&random_hex(16), &random_hex(8)))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            slowest = slowest.max(sent.elapsed());
        }
        let all = started.elapsed();
        assert!(
            slowest < Duration::from_secs(2) && all < Duration::from_secs(30),
            "{collector}: slowest {slowest:?}, all {all:?}"
        );
        // The flush at shutdown waits 5 s at most for a collector that never answers.
        let stopping = broker.stop();
        assert!(
            stopping < Duration::from_secs(15),
            "{collector}: shutdown took {stopping:?}"
        );
    }
    assert!(*taken.lock().unwrap() > 0, "the broker tried the hanging collector");
}
