//! Shares raced by the API and the worker: a revoke wins over accepts, rejects, polls and
//! expiry; a rejection removes the member; a worker that lost its lease writes nothing more
//! to Glance. Against the real Keystone and Glance, with [`HoldingGlance`] in front of
//! Glance (or of the fake one) to hold a job between its Glance call and its settle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use glance_share_broker::db;
use glance_share_broker::domain::Role;
use glance_share_broker::worker::{Outcome, Worker, WorkerConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::fake_glance::FakeGlance;
use crate::helpers::{TestApp, share_state, spawn_app};
use crate::openstack::{Rig, broker_cloud, broker_cloud_with_glance, drain, env, until_share_state, worker_config};

/// A call whose answer is held until the test lets it go.
pub struct Hold {
    reached: Semaphore,
    go: Semaphore,
}

impl Hold {
    fn new() -> Hold {
        Hold {
            reached: Semaphore::new(0),
            go: Semaphore::new(0),
        }
    }

    /// Runs worker passes until one makes the held call and Glance has answered it (the
    /// answer is held); that pass, still running. A pass that ends without the call (it found
    /// another job due first, or none yet) is followed by another.
    pub async fn reached_by(&self, worker: &Worker) -> tokio::task::JoinHandle<Outcome> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let mut pass = spawn_pass(worker);
            tokio::select! {
                biased;
                reached = self.reached.acquire() => {
                    reached.unwrap().forget();
                    return pass;
                }
                ended = &mut pass => {
                    ended.unwrap();
                }
            }
            // A call that never comes (the job failed before it) fails the test instead of
            // hanging it.
            assert!(
                tokio::time::Instant::now() < deadline,
                "the held call reached the proxy within 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets the held answer go to the broker.
    pub fn release(&self) {
        self.go.add_permits(1);
    }
}

struct Armed {
    method: Method,
    path_suffix: String,
    hold: Arc<Hold>,
}

/// A Glance in front of another (the real one, or the fake): it forwards every call, and
/// holds the answer of an armed one until the test releases it. The call is carried out by
/// the Glance behind; only the broker hears of it later, as when its job stalls.
#[derive(Clone)]
pub struct HoldingGlance {
    upstream: String,
    http: reqwest::Client,
    armed: Arc<Mutex<Vec<Armed>>>,
}

impl HoldingGlance {
    /// Starts it on a free loopback port in front of `upstream`; returns it and its URL.
    pub async fn start(upstream: &str) -> (HoldingGlance, String) {
        let glance = HoldingGlance {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            armed: Arc::default(),
        };
        let app = axum::Router::new().fallback(forward).with_state(glance.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (glance, url)
    }

    /// Holds the answer to the next `method` call whose path ends with `path_suffix`.
    pub fn hold(&self, method: Method, path_suffix: &str) -> Arc<Hold> {
        let hold = Arc::new(Hold::new());
        self.armed.lock().unwrap().push(Armed {
            method,
            path_suffix: path_suffix.to_owned(),
            hold: hold.clone(),
        });
        hold
    }
}

async fn forward(
    State(glance): State<HoldingGlance>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let mut request = glance
        .http
        .request(method.clone(), format!("{}{path}", glance.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = request.send().await.unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let content_type = answer.headers().get("content-type").cloned();
    let body = answer.bytes().await.unwrap();
    let armed = {
        let mut armed = glance.armed.lock().unwrap();
        let at = armed
            .iter()
            .position(|a| a.method == method && uri.path().ends_with(&a.path_suffix));
        at.map(|at| armed.remove(at))
    };
    if let Some(armed) = armed {
        armed.hold.reached.add_permits(1);
        armed.hold.go.acquire().await.unwrap().forget();
    }
    let mut response = (status, body).into_response();
    if let Some(content_type) = content_type {
        response.headers_mut().insert("content-type", content_type);
    }
    response
}

/// A worker whose Glance calls go through `url`, waiting long enough for any hold.
fn worker_through(app: &TestApp, url: &str) -> Worker {
    Worker::new(
        app.pool.clone(),
        broker_cloud_with_glance(url, Duration::from_secs(60)),
        worker_config(),
    )
}

/// An API key of the consumer project `project_id`.
async fn consumer_key(app: &TestApp, project_id: &str) -> String {
    db::api_keys::create(
        &app.pool,
        &format!("consumer-{project_id}"),
        Role::Requester,
        &[project_id.to_owned()],
    )
    .await
    .unwrap()
    .1
}

/// The members of `image` as the cloud's admin sees them in Glance: (project, status). A
/// private image hides its members (Glance keeps them, and shows them again once the image
/// is `shared`): such an image is made `shared` for the look, and `private` again.
pub async fn members_in_glance(rig: &Rig, image: &str) -> Vec<(String, String)> {
    members_seen_by(rig, &rig.token("admin").await, image).await
}

/// [`members_in_glance`] with an admin token at hand.
async fn members_seen_by(rig: &Rig, admin: &str, image: &str) -> Vec<(String, String)> {
    let private = visibility_seen_by(rig, admin, image).await == "private";
    if private {
        set_visibility(rig, admin, image, "shared").await;
    }
    let (status, body) = rig.glance_get(admin, &format!("/v2/images/{image}/members")).await;
    if private {
        set_visibility(rig, admin, image, "private").await;
    }
    assert_eq!(status, 200, "{body}");
    body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["member_id"].as_str().unwrap().to_owned(),
                m["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn set_visibility(rig: &Rig, token: &str, image: &str, visibility: &str) {
    // This Glance answers 500 now and then to a write racing another on the image.
    for _ in 0..10 {
        let response = rig
            .http
            .patch(format!("{}/v2/images/{image}", rig.glance))
            .header("x-auth-token", token)
            .header("content-type", "application/openstack-images-v2.1-json-patch")
            .body(json!([{"op": "replace", "path": "/visibility", "value": visibility}]).to_string())
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            200 => return,
            500 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("make {image} {visibility}: {other}"),
        }
    }
    panic!("make {image} {visibility}: Glance keeps failing");
}

pub async fn visibility_in_glance(rig: &Rig, image: &str) -> String {
    visibility_seen_by(rig, &rig.token("admin").await, image).await
}

async fn visibility_seen_by(rig: &Rig, admin: &str, image: &str) -> String {
    let (_, body) = rig.glance_get(admin, &format!("/v2/images/{image}")).await;
    body["visibility"].as_str().unwrap().to_owned()
}

/// (action, outcome) of a share's audit events, oldest first.
async fn share_trail(pool: &PgPool, share: &str) -> Vec<(String, String)> {
    sqlx::query_as("select action, outcome from audit_events where share_id = $1::uuid order by seq")
        .bind(share)
        .fetch_all(pool)
        .await
        .unwrap()
}

fn has(trail: &[(String, String)], action: &str, outcome: &str) -> bool {
    trail.iter().any(|(a, o)| a == action && o == outcome)
}

async fn post_status(app: &TestApp, key: &str, path: &str, body: Value) -> u16 {
    app.post(key, path, &body).send().await.unwrap().status().as_u16()
}

/// Makes the acceptance checks of these shares due now.
async fn polls_due(pool: &PgPool, shares: &[String]) {
    sqlx::query("update jobs set run_at = now() where kind = 'poll' and state = 'queued' and share_id::text = any($1)")
        .bind(shares)
        .execute(pool)
        .await
        .unwrap();
}

/// A share of a new private image of proj-a to proj-b, granted in the real Glance by
/// `worker`; returns (image, share id).
async fn granted_share(app: &TestApp, rig: &Rig, worker: &Worker, name: &str) -> (String, String) {
    let image = rig.private_image(name).await;
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "race"});
    let request = app.file_and_approve(body, Some(worker)).await;
    let share = request["shares"][0]["id"].as_str().unwrap().to_owned();
    until_share_state(worker, &app.pool, &share, "pending_acceptance").await;
    (image, share)
}

/// Runs one pass of `worker` in the background.
fn spawn_pass(worker: &Worker) -> tokio::task::JoinHandle<Outcome> {
    let worker = worker.clone();
    tokio::spawn(async move { worker.run_once().await.unwrap() })
}

#[tokio::test]
async fn a_revoke_made_while_a_poll_is_in_flight_wins_over_the_acceptance_it_saw() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let (glance, url) = HoldingGlance::start(&env("GLANCE_URL")).await;
    let worker = worker_through(&app, &url);
    let (image, share) = granted_share(&app, &rig, &worker, "race-poll").await;
    let proj_b = env("PROJ_B_ID");

    // bob accepts in Glance; the poll that sees it is held between Glance's answer and its settle.
    let bob = rig.token("bob").await;
    let path = format!("/v2/images/{image}/members/{proj_b}");
    assert_eq!(rig.glance_put(&bob, &path, json!({"status": "accepted"})).await, 200);
    let hold = glance.hold(Method::GET, &format!("/members/{proj_b}"));
    polls_due(&app.pool, std::slice::from_ref(&share)).await;
    let pass = hold.reached_by(&worker).await;

    let revoke = format!("/v1/shares/{share}/revoke");
    let status = post_status(&app, &app.requester, &revoke, json!({"force": true, "reason": "raced"})).await;
    assert_eq!(status, 202);
    hold.release();
    assert_eq!(pass.await.unwrap(), Outcome::Ran);
    assert_eq!(
        share_state(&app.pool, &share).await,
        "revoking",
        "the acceptance the poll saw is not written over the revoke"
    );

    until_share_state(&worker, &app.pool, &share, "revoked").await;
    assert_eq!(members_in_glance(&rig, &image).await, Vec::new());
    assert_eq!(visibility_in_glance(&rig, &image).await, "private");
    let trail = share_trail(&app.pool, &share).await;
    assert!(has(&trail, "revoke", "success"), "{trail:?}");
    assert!(
        !has(&trail, "accept", "success"),
        "the lost acceptance is not recorded: {trail:?}"
    );
}

#[tokio::test]
async fn a_revoke_right_after_an_accept_wins_over_the_accept_job() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let (glance, url) = HoldingGlance::start(&env("GLANCE_URL")).await;
    let worker = worker_through(&app, &url);
    let (image, share) = granted_share(&app, &rig, &worker, "race-accept").await;
    let proj_b = env("PROJ_B_ID");
    let consumer = consumer_key(&app, &proj_b).await;

    let accept = format!("/v1/shares/{share}/accept");
    assert_eq!(post_status(&app, &consumer, &accept, json!({})).await, 202);
    // The accept job has set the member `accepted` in Glance, and not settled yet.
    let hold = glance.hold(Method::PUT, &format!("/members/{proj_b}"));
    let pass = hold.reached_by(&worker).await;
    let revoke = format!("/v1/shares/{share}/revoke");
    assert_eq!(
        post_status(&app, &app.requester, &revoke, json!({"force": true, "reason": "raced"})).await,
        202
    );
    hold.release();
    pass.await.unwrap();
    assert_eq!(share_state(&app.pool, &share).await, "revoking");

    until_share_state(&worker, &app.pool, &share, "revoked").await;
    assert_eq!(members_in_glance(&rig, &image).await, Vec::new());
    let trail = share_trail(&app.pool, &share).await;
    assert!(has(&trail, "revoke", "success"), "{trail:?}");
    assert!(!has(&trail, "accept", "success"), "{trail:?}");
    let pending: i64 =
        sqlx::query_scalar("select count(*) from jobs where share_id = $1::uuid and state in ('queued', 'running')")
            .bind(&share)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(pending, 0, "no job is left behind");
}

#[tokio::test]
async fn rejecting_a_share_through_the_broker_removes_the_member_and_makes_the_image_private_again() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let (image, share) = granted_share(&app, &rig, &worker, "race-reject").await;
    let proj_b = env("PROJ_B_ID");
    assert_eq!(visibility_in_glance(&rig, &image).await, "shared");
    let consumer = consumer_key(&app, &proj_b).await;

    let response = app
        .post(&consumer, &format!("/v1/shares/{share}/reject"), &json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["state"], "revoking");
    assert_eq!(view["revoke_reason"], "rejected by the consumer");

    until_share_state(&worker, &app.pool, &share, "revoked").await;
    assert_eq!(
        members_in_glance(&rig, &image).await,
        Vec::new(),
        "a rejected member would still let the consumer boot the image"
    );
    assert_eq!(visibility_in_glance(&rig, &image).await, "private");
    let trail = share_trail(&app.pool, &share).await;
    let tail: Vec<(&str, &str)> = trail[trail.len() - 5..]
        .iter()
        .map(|(a, o)| (a.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        tail,
        [
            ("reject", "pending"),
            ("update/visibility", "success"),
            ("update/unprotect", "success"),
            ("reject", "success"),
            ("revoke", "success"),
        ]
    );
    // The access report sees the access end.
    let access = app.read(&format!("/v1/images/{image}/access")).await;
    assert_eq!(access["projects"], json!([]), "{access}");
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_adds_no_member() {
    let app = spawn_app().await;
    let (fake, fake_url) = FakeGlance::start().await;
    let image = Uuid::new_v4().to_string();
    let proj_b = env("PROJ_B_ID");
    fake.add_image(&image, &env("PROJ_A_ID"), "shared");
    let (glance, url) = HoldingGlance::start(&fake_url).await;
    let stalled = worker_through(&app, &url);
    let other = worker_through(&app, &fake_url);
    let body = json!({"image_id": image, "targets": [proj_b], "reason": "fencing"});
    let request = app.file_and_approve(body, Some(&other)).await;
    let share = request["shares"][0]["id"].as_str().unwrap().to_owned();

    // The grant stalls on its read of the image, past its lease ...
    let hold = glance.hold(Method::GET, &image);
    let pass = hold.reached_by(&stalled).await;
    sqlx::query("update jobs set lease_expires_at = now() - interval '1 second' where share_id = $1::uuid")
        .bind(&share)
        .execute(&app.pool)
        .await
        .unwrap();
    // ... another worker takes the grant over, and the share is then revoked.
    until_share_state(&other, &app.pool, &share, "pending_acceptance").await;
    let revoke = format!("/v1/shares/{share}/revoke");
    assert_eq!(
        post_status(
            &app,
            &app.requester,
            &revoke,
            json!({"force": true, "reason": "fenced"})
        )
        .await,
        202
    );
    until_share_state(&other, &app.pool, &share, "revoked").await;
    assert_eq!(fake.member_status(&image, &proj_b), None);

    // The stalled worker wakes up: it must not add the revoked member back.
    hold.release();
    assert_eq!(pass.await.unwrap(), Outcome::Ran);
    assert_eq!(
        fake.calls(Method::POST, "add_member"),
        1,
        "only the worker holding the lease added it"
    );
    assert_eq!(
        fake.member_status(&image, &proj_b),
        None,
        "the revoked member stays gone"
    );
    assert_eq!(share_state(&app.pool, &share).await, "revoked");
}

/// What a round of the race does to a share.
#[derive(Debug, Clone, Copy)]
enum Step {
    ApiAccept,
    ApiReject,
    ApiRevoke,
    GlanceAccept,
    GlanceReject,
    Poll,
    Expire,
    Work,
}

const STEPS: [Step; 8] = [
    Step::ApiAccept,
    Step::ApiReject,
    Step::ApiRevoke,
    Step::GlanceAccept,
    Step::GlanceReject,
    Step::Poll,
    Step::Expire,
    Step::Work,
];

/// The consumers of the race: project id, the user who may set its member's status in
/// Glance, and an API key of the project.
struct Consumer {
    project: String,
    token: String,
    key: String,
}

/// One step against a round's shares (one per consumer, on one image), run next to a worker
/// pass so the API, the sweep and the worker interleave.
async fn race_step(
    app: &TestApp,
    rig: &Rig,
    worker: &Worker,
    round: &Round<'_>,
    step: Step,
    who: usize,
    alongside: bool,
) {
    let share = &round.shares[who];
    let consumer = &round.consumers[who];
    let member = format!("/v2/images/{}/members/{}", round.image, consumer.project);
    let act = async {
        match step {
            Step::ApiAccept => {
                post_status(app, &consumer.key, &format!("/v1/shares/{share}/accept"), json!({})).await;
            }
            Step::ApiReject => {
                post_status(app, &consumer.key, &format!("/v1/shares/{share}/reject"), json!({})).await;
            }
            Step::ApiRevoke => {
                let path = format!("/v1/shares/{share}/revoke");
                post_status(app, &app.requester, &path, json!({"force": true, "reason": "race"})).await;
            }
            Step::GlanceAccept => {
                rig.glance_put(&consumer.token, &member, json!({"status": "accepted"}))
                    .await;
            }
            Step::GlanceReject => {
                rig.glance_put(&consumer.token, &member, json!({"status": "rejected"}))
                    .await;
            }
            Step::Poll => polls_due(&app.pool, &round.shares).await,
            Step::Expire => {
                sqlx::query("update share_requests set expires_at = now() where id = $1::uuid")
                    .bind(round.request)
                    .execute(&app.pool)
                    .await
                    .unwrap();
                worker.sweep_expired().await.unwrap();
            }
            Step::Work => {
                worker.run_once().await.unwrap();
            }
        }
    };
    if alongside {
        let (_, pass) = tokio::join!(act, worker.run_once());
        pass.unwrap();
    } else {
        act.await;
    }
}

struct Round<'a> {
    image: String,
    request: &'a str,
    shares: Vec<String>,
    consumers: &'a [Consumer],
}

/// Runs the worker and the sweep until nothing is left to do but acceptance checks.
async fn settle_round(app: &TestApp, worker: &Worker, shares: &[String]) {
    for _ in 0..100 {
        polls_due(&app.pool, shares).await;
        drain(worker).await;
        worker.sweep_expired().await.unwrap();
        let busy: i64 = sqlx::query_scalar(
            "select count(*) from jobs where share_id::text = any($1) and kind <> 'poll' and state in ('queued', 'running')",
        )
        .bind(shares)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if busy == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the round did not settle");
}

#[tokio::test]
async fn every_revoke_ends_with_no_member_in_glance_whatever_races_it() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let mut consumers = Vec::new();
    for (user, project) in [("bob", "PROJ_B_ID"), ("carol", "PROJ_C_ID"), ("dave", "PROJ_D_ID")] {
        let project = env(project);
        consumers.push(Consumer {
            token: rig.token(user).await,
            key: consumer_key(&app, &project).await,
            project,
        });
    }
    let admin = rig.token("admin").await;
    let seed: u64 = std::env::var("GSB_RACE_SEED").map_or(0x5eed_2026, |s| s.parse().unwrap());
    let mut rng = StdRng::seed_from_u64(seed);
    // Each round races three shares of one image; GSB_RACE_ROUNDS runs more for a deeper look.
    let rounds: usize = std::env::var("GSB_RACE_ROUNDS").map_or(30, |s| s.parse().unwrap());
    let mut revoked = 0;
    for round in 0..rounds {
        let image = rig.private_image(&format!("race-{round}")).await;
        let targets: Vec<&str> = consumers.iter().map(|c| c.project.as_str()).collect();
        let body = json!({"image_id": image, "targets": targets, "reason": "race",
                          "auto_accept": rng.random_bool(0.3)});
        let request = app.file_and_approve(body, Some(&worker)).await;
        let request_id = request["id"].as_str().unwrap().to_owned();
        let shares: Vec<String> = (0..consumers.len())
            .map(|i| request["shares"][i]["id"].as_str().unwrap().to_owned())
            .collect();
        drain(&worker).await;
        let round_state = Round {
            image: image.clone(),
            request: &request_id,
            shares: shares.clone(),
            consumers: &consumers,
        };
        let mut steps = Vec::new();
        for _ in 0..10 {
            let step = STEPS[rng.random_range(0..STEPS.len())];
            let who = rng.random_range(0..consumers.len());
            let alongside = rng.random_bool(0.6);
            steps.push((step, who, alongside));
            race_step(&app, &rig, &worker, &round_state, step, who, alongside).await;
        }
        settle_round(&app, &worker, &shares).await;

        let in_glance: HashMap<String, String> = members_seen_by(&rig, &admin, &image).await.into_iter().collect();
        let context = format!("seed {seed:#x}, round {round}, steps {steps:?}");
        let mut live = 0;
        for (share, consumer) in shares.iter().zip(&consumers) {
            let state = share_state(&app.pool, share).await;
            let trail = share_trail(&app.pool, share).await;
            let member = in_glance.get(&consumer.project);
            // A revoke starts with a person's or expiry's revoke, or a rejection (through the
            // broker, or seen in Glance).
            let started = trail
                .iter()
                .position(|(a, o)| (a == "revoke" || a == "reject") && o == "pending");
            if let Some(started) = started {
                revoked += 1;
                assert_eq!(state, "revoked", "a revoke was lost: {context}; {trail:?}");
                assert_eq!(member, None, "revoked, yet in Glance: {context}");
                assert!(has(&trail, "revoke", "success"), "{context}; {trail:?}");
                let accepted_after = trail.iter().skip(started).any(|(a, o)| a == "accept" && o == "success");
                assert!(
                    !accepted_after,
                    "an acceptance written after the revoke: {context}; {trail:?}"
                );
            } else {
                assert!(
                    ["pending_acceptance", "accepted"].contains(&state.as_str()),
                    "{state}: {context}; {trail:?}"
                );
                assert!(member.is_some(), "{state} without a member in Glance: {context}");
                live += 1;
            }
        }
        let visibility = visibility_seen_by(&rig, &admin, &image).await;
        let expected = if live == 0 { "private" } else { "shared" };
        assert_eq!(visibility, expected, "{context}");
    }
    assert!(
        revoked >= rounds,
        "the rounds revoked too few shares to tell: {revoked}"
    );
}

#[tokio::test]
async fn a_member_that_comes_back_after_its_removal_is_removed_again() {
    let app = spawn_app().await;
    let (fake, fake_url) = FakeGlance::start().await;
    let image = Uuid::new_v4().to_string();
    let proj_b = env("PROJ_B_ID");
    fake.add_image(&image, &env("PROJ_A_ID"), "shared");
    let (glance, url) = HoldingGlance::start(&fake_url).await;
    let worker = worker_through(&app, &url);
    let body = json!({"image_id": image, "targets": [proj_b], "reason": "comes back"});
    let request = app.file_and_approve(body, Some(&worker)).await;
    let share = request["shares"][0]["id"].as_str().unwrap().to_owned();
    until_share_state(&worker, &app.pool, &share, "pending_acceptance").await;

    let revoke = format!("/v1/shares/{share}/revoke");
    assert_eq!(
        post_status(&app, &app.requester, &revoke, json!({"force": true, "reason": "gone"})).await,
        202
    );
    let hold = glance.hold(Method::DELETE, &format!("/members/{proj_b}"));
    let pass = hold.reached_by(&worker).await;
    // As the real Glance does when the consumer's status update read the member before the
    // removal and saves it after: the member is back.
    fake.add_existing_member(&image, &proj_b);
    hold.release();
    pass.await.unwrap();
    assert_eq!(
        share_state(&app.pool, &share).await,
        "revoking",
        "not revoked before a second look"
    );

    until_share_state(&worker, &app.pool, &share, "revoked").await;
    assert_eq!(fake.member_status(&image, &proj_b), None);
    assert_eq!(fake.calls(Method::DELETE, "delete_member"), 2);
}

#[tokio::test]
async fn a_consumer_setting_its_member_status_during_the_revoke_cannot_keep_the_member() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    // Long enough for a status update in flight at the removal to be saved by then, even on
    // a loaded machine.
    let config = WorkerConfig {
        revoke_confirm_after: Duration::from_secs(1),
        ..worker_config()
    };
    let worker = Worker::new(app.pool.clone(), broker_cloud(), config);
    let proj_b = env("PROJ_B_ID");
    let bob = rig.token("bob").await;
    // Each try loses the race to Glance only now and then: three tries.
    for attempt in 0..3 {
        let (image, share) = granted_share(&app, &rig, &worker, &format!("race-hostile-{attempt}")).await;
        // bob sets his member's status over and over, from several clients, while it is revoked.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut hammers = Vec::new();
        for client in 0..6 {
            let (rig, stop, bob) = (Rig::from_env(), stop.clone(), bob.clone());
            let path = format!("/v2/images/{image}/members/{proj_b}");
            hammers.push(tokio::spawn(async move {
                let mut puts = client;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let status = if puts % 2 == 0 { "rejected" } else { "accepted" };
                    rig.glance_put(&bob, &path, json!({"status": status})).await;
                    puts += 1;
                }
            }));
        }
        let revoke = format!("/v1/shares/{share}/revoke");
        assert_eq!(
            post_status(
                &app,
                &app.requester,
                &revoke,
                json!({"force": true, "reason": "hostile"})
            )
            .await,
            202
        );
        until_share_state(&worker, &app.pool, &share, "revoked").await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for hammer in hammers {
            hammer.await.unwrap();
        }
        assert_eq!(members_in_glance(&rig, &image).await, Vec::new(), "try {attempt}");
    }
}

/// A share of a fake Glance's image to proj-b, granted; returns (app, fake, worker, image, share).
async fn granted_in_fake() -> (TestApp, FakeGlance, Worker, String, String) {
    let app = spawn_app().await;
    let (fake, url) = FakeGlance::start().await;
    let image = Uuid::new_v4().to_string();
    fake.add_image(&image, &env("PROJ_A_ID"), "shared");
    let worker = worker_through(&app, &url);
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "upgrade"});
    let request = app.file_and_approve(body, Some(&worker)).await;
    let share = request["shares"][0]["id"].as_str().unwrap().to_owned();
    until_share_state(&worker, &app.pool, &share, "pending_acceptance").await;
    (app, fake, worker, image, share)
}

#[tokio::test]
async fn a_reject_job_queued_before_rejections_removed_members_removes_the_member() {
    let (app, fake, worker, image, share) = granted_in_fake().await;
    let mut tx = app.pool.begin().await.unwrap();
    let (share_id, image_id) = (share.parse().unwrap(), image.parse().unwrap());
    db::jobs::enqueue(&mut tx, db::jobs::Kind::Reject, share_id, image_id, chrono::Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    until_share_state(&worker, &app.pool, &share, "revoked").await;
    assert_eq!(fake.member_status(&image, &env("PROJ_B_ID")), None);
    assert_eq!(
        fake.calls(Method::PUT, "put_member"),
        0,
        "no status is set on a member to remove"
    );
}

#[tokio::test]
async fn a_share_left_rejected_with_its_member_is_revoked_by_the_sweep() {
    let (app, fake, worker, image, share) = granted_in_fake().await;
    // As a share seen rejected before rejections removed the member was left.
    sqlx::query("update shares set state = 'rejected' where id = $1::uuid")
        .bind(&share)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(worker.sweep_expired().await.unwrap(), 1);
    assert_eq!(share_state(&app.pool, &share).await, "revoking");
    until_share_state(&worker, &app.pool, &share, "revoked").await;
    assert_eq!(fake.member_status(&image, &env("PROJ_B_ID")), None);
    let trail = share_trail(&app.pool, &share).await;
    assert!(has(&trail, "revoke", "success"), "{trail:?}");
}
