//! A Glance that misbehaves on purpose: it keeps images and members like the real one
//! (200 on add, 409 on a duplicate, 204 on delete, 404 on a missing member, 413 over quota,
//! 403 on a non-shared image) and answers the next calls with scripted faults: an error
//! status (with `Retry-After`), or a hang longer than the broker's timeout.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// What the next matching call gets instead of a real answer.
#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16, Option<u64>),
    Hang(Duration),
}

#[derive(Default)]
struct Inner {
    /// image id -> (owner, visibility)
    images: HashMap<String, (String, String)>,
    /// (image id, member id) -> status
    members: HashMap<(String, String), String>,
    /// images whose `protected` is true
    protected: std::collections::HashSet<String>,
    quota: usize,
    /// (method, operation) -> faults to serve first
    faults: HashMap<(Method, &'static str), VecDeque<Fault>>,
    calls: HashMap<(Method, &'static str), usize>,
    /// When each call came, in order.
    times: Vec<Instant>,
}

#[derive(Clone, Default)]
pub struct FakeGlance {
    inner: Arc<Mutex<Inner>>,
}

impl FakeGlance {
    /// An empty Glance with the default member quota (128), not yet serving.
    pub fn new() -> FakeGlance {
        let fake = FakeGlance::default();
        fake.inner.lock().unwrap().quota = 128;
        fake
    }

    /// Its routes (`/v2/images/...`), to serve as they are or wrapped (benches add latency).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v2/images/{image}", get(image).patch(patch_image))
            .route("/v2/images/{image}/members", get(list_members).post(add_member))
            .route(
                "/v2/images/{image}/members/{member}",
                get(get_member).put(put_member).delete(delete_member),
            )
            .with_state(self.clone())
    }

    /// Starts the fake on a free loopback port; returns it and its URL.
    pub async fn start() -> (FakeGlance, String) {
        let fake = FakeGlance::new();
        let app = fake.router();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, format!("http://{addr}"))
    }

    pub fn add_image(&self, id: &str, owner: &str, visibility: &str) {
        self.inner
            .lock()
            .unwrap()
            .images
            .insert(id.into(), (owner.into(), visibility.into()));
    }

    pub fn add_existing_member(&self, image: &str, member: &str) {
        self.inner
            .lock()
            .unwrap()
            .members
            .insert((image.into(), member.into()), "pending".into());
    }

    pub fn set_quota(&self, quota: usize) {
        self.inner.lock().unwrap().quota = quota;
    }

    /// The next calls of `op` (`add_member`, `delete_member`, `get_image`, ...) by `method`
    /// get these faults, in order.
    pub fn inject(&self, method: Method, op: &'static str, faults: impl IntoIterator<Item = Fault>) {
        self.inner
            .lock()
            .unwrap()
            .faults
            .entry((method, op))
            .or_default()
            .extend(faults);
    }

    /// Forgets the faults still scripted for `op`: its next calls are answered normally.
    pub fn clear_faults(&self, method: Method, op: &'static str) {
        self.inner.lock().unwrap().faults.remove(&(method, op));
    }

    pub fn calls(&self, method: Method, op: &'static str) -> usize {
        self.inner
            .lock()
            .unwrap()
            .calls
            .get(&(method, op))
            .copied()
            .unwrap_or(0)
    }

    /// Every call served, of any operation.
    pub fn total_calls(&self) -> usize {
        self.inner.lock().unwrap().calls.values().sum()
    }

    /// The most calls served within any `window`.
    pub fn busiest(&self, window: Duration) -> usize {
        let times = self.inner.lock().unwrap().times.clone();
        let mut start = 0;
        let mut most = 0;
        for (end, at) in times.iter().enumerate() {
            while *at - times[start] >= window {
                start += 1;
            }
            most = most.max(end - start + 1);
        }
        most
    }

    /// How many members the images hold, across all of them.
    pub fn member_count(&self) -> usize {
        self.inner.lock().unwrap().members.len()
    }

    pub fn member_status(&self, image: &str, member: &str) -> Option<String> {
        self.inner
            .lock()
            .unwrap()
            .members
            .get(&(image.to_owned(), member.to_owned()))
            .cloned()
    }

    /// Glance's `protected` flag of the image.
    pub fn protected(&self, image: &str) -> bool {
        self.inner.lock().unwrap().protected.contains(image)
    }

    pub fn visibility(&self, image: &str) -> String {
        self.inner.lock().unwrap().images[image].1.clone()
    }

    /// Counts the call and serves the next scripted fault, if any.
    async fn fault(&self, method: Method, op: &'static str) -> Option<Response> {
        let next = {
            let mut inner = self.inner.lock().unwrap();
            *inner.calls.entry((method.clone(), op)).or_default() += 1;
            inner.times.push(Instant::now());
            inner.faults.get_mut(&(method, op)).and_then(VecDeque::pop_front)
        };
        match next? {
            Fault::Status(status, retry_after) => {
                let mut response = (
                    StatusCode::from_u16(status).unwrap(),
                    Json(json!({"message": "injected fault", "code": status})),
                )
                    .into_response();
                if let Some(secs) = retry_after {
                    response.headers_mut().insert("retry-after", HeaderValue::from(secs));
                }
                Some(response)
            }
            Fault::Hang(how_long) => {
                tokio::time::sleep(how_long).await;
                Some(StatusCode::GATEWAY_TIMEOUT.into_response())
            }
        }
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"message": "not found"}))).into_response()
}

fn member_json(image: &str, member: &str, status: &str) -> Value {
    json!({"image_id": image, "member_id": member, "status": status, "schema": "/v2/schemas/member"})
}

async fn image(State(fake): State<FakeGlance>, Path(id): Path<String>) -> Response {
    if let Some(r) = fake.fault(Method::GET, "get_image").await {
        return r;
    }
    let inner = fake.inner.lock().unwrap();
    let protected = inner.protected.contains(&id);
    match inner.images.get(&id) {
        Some((owner, visibility)) => Json(
            json!({"id": id, "name": "fake", "owner": owner, "visibility": visibility,
                                                 "status": "active", "protected": protected}),
        )
        .into_response(),
        None => not_found(),
    }
}

/// A JSON patch of `/visibility` (operation `patch_image`) or of `/protected` (`protect_image`).
async fn patch_image(State(fake): State<FakeGlance>, Path(id): Path<String>, body: String) -> Response {
    let patch: Value = serde_json::from_str(&body).unwrap();
    if patch[0]["path"] == "/protected" {
        if let Some(r) = fake.fault(Method::PATCH, "protect_image").await {
            return r;
        }
        let mut inner = fake.inner.lock().unwrap();
        if !inner.images.contains_key(&id) {
            return not_found();
        }
        let protected = patch[0]["value"].as_bool().unwrap();
        if protected {
            inner.protected.insert(id.clone());
        } else {
            inner.protected.remove(&id);
        }
        return Json(json!({"id": id, "protected": protected})).into_response();
    }
    if let Some(r) = fake.fault(Method::PATCH, "patch_image").await {
        return r;
    }
    let visibility = patch[0]["value"].as_str().unwrap().to_owned();
    let mut inner = fake.inner.lock().unwrap();
    match inner.images.get_mut(&id) {
        Some(image) => {
            image.1 = visibility;
            Json(json!({"id": id, "visibility": image.1})).into_response()
        }
        None => not_found(),
    }
}

async fn list_members(State(fake): State<FakeGlance>, Path(id): Path<String>) -> Response {
    if let Some(r) = fake.fault(Method::GET, "list_members").await {
        return r;
    }
    let inner = fake.inner.lock().unwrap();
    let members: Vec<Value> = inner
        .members
        .iter()
        .filter(|((image, _), _)| *image == id)
        .map(|((image, member), status)| member_json(image, member, status))
        .collect();
    Json(json!({"members": members})).into_response()
}

async fn add_member(State(fake): State<FakeGlance>, Path(id): Path<String>, Json(body): Json<Value>) -> Response {
    if let Some(r) = fake.fault(Method::POST, "add_member").await {
        return r;
    }
    let member = body["member"].as_str().unwrap().to_owned();
    let mut inner = fake.inner.lock().unwrap();
    let Some((_, visibility)) = inner.images.get(&id) else {
        return not_found();
    };
    if visibility != "shared" {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"message": "Only shared images have members."})),
        )
            .into_response();
    }
    if inner.members.contains_key(&(id.clone(), member.clone())) {
        return (StatusCode::CONFLICT, Json(json!({"message": "duplicated"}))).into_response();
    }
    if inner.members.keys().filter(|(image, _)| *image == id).count() >= inner.quota {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"message": "Image member limit exceeded"})),
        )
            .into_response();
    }
    inner.members.insert((id.clone(), member.clone()), "pending".into());
    Json(member_json(&id, &member, "pending")).into_response()
}

async fn get_member(State(fake): State<FakeGlance>, Path((id, member)): Path<(String, String)>) -> Response {
    if let Some(r) = fake.fault(Method::GET, "get_member").await {
        return r;
    }
    match fake.member_status(&id, &member) {
        Some(status) => Json(member_json(&id, &member, &status)).into_response(),
        None => not_found(),
    }
}

async fn put_member(
    State(fake): State<FakeGlance>,
    Path((id, member)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = fake.fault(Method::PUT, "put_member").await {
        return r;
    }
    let status = body["status"].as_str().unwrap().to_owned();
    let mut inner = fake.inner.lock().unwrap();
    match inner.members.get_mut(&(id.clone(), member.clone())) {
        Some(s) => {
            *s = status.clone();
            Json(member_json(&id, &member, &status)).into_response()
        }
        None => not_found(),
    }
}

async fn delete_member(State(fake): State<FakeGlance>, Path((id, member)): Path<(String, String)>) -> Response {
    if let Some(r) = fake.fault(Method::DELETE, "delete_member").await {
        return r;
    }
    match fake.inner.lock().unwrap().members.remove(&(id, member)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(),
    }
}
