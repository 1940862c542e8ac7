//! Drift against the real Keystone and Glance: each kind made by hand (as alice, bob or the
//! admin, through Glance's and Keystone's own APIs) and found by a reconciliation, repaired
//! under enforcement, members made by hand adopted, and who may ask and read.
//! Races and the command line are in `drift_races.rs`.

use std::time::Duration;

use glance_share_broker::domain::policy::{AutoAccept, Policy, SharedPolicy};
use glance_share_broker::worker::{DriftConfig, Worker, WorkerConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, fields, problem, spawn_app};
use crate::openstack::{Rig, broker_cloud, drain, env, until_share_state, worker_config};

/// A worker that repairs (`enforce_drift`) or only reports, adopting for `adopt` owners.
pub fn drift_worker(app: &TestApp, enforce: bool, adopt: &[&str]) -> Worker {
    let config = WorkerConfig {
        policy: SharedPolicy::new(Policy {
            auto_accept: AutoAccept::Allow,
            enforce_drift: enforce,
            ..Policy::default()
        }),
        drift: DriftConfig {
            every: None,
            ended_within: Duration::from_secs(3600),
            adopt_owners: adopt.iter().map(|p| p.to_string()).collect(),
        },
        ..worker_config()
    };
    Worker::new(app.pool.clone(), broker_cloud(), config)
}

/// A call to Glance or Keystone as `user` (alice, bob, admin): the status and the JSON body.
pub async fn call(rig: &Rig, user: &str, method: Method, url: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = rig
        .http
        .request(method.clone(), url)
        .header("x-auth-token", rig.token(user).await)
        .header("accept", "application/json");
    request = match (method == Method::PATCH, body) {
        (true, Some(body)) => request
            .header("content-type", "application/openstack-images-v2.1-json-patch")
            .body(body.to_string()),
        (false, Some(body)) => request.json(&body),
        (_, None) => request,
    };
    // The rig's Glance keeps its catalog in SQLite, which answers 500 ("database is locked")
    // now and then while many tests write at once: such a call is made again.
    for _ in 0..10 {
        let response = request.try_clone().unwrap().send().await.unwrap();
        let status = response.status().as_u16();
        if status != 500 {
            return (status, response.json().await.unwrap_or(Value::Null));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("{method} {url}: Glance answered 500 ten times")
}

pub fn glance(path: &str) -> String {
    format!("{}{path}", env("GLANCE_URL"))
}

/// A new private image of alice's project with data, so that it is `active`. The rig's
/// Glance keeps its catalog in SQLite, which answers 500 ("database is locked") now and then
/// while many tests write at once: each step is tried again until Glance shows it done.
pub async fn active_image(rig: &Rig, name: &str) -> String {
    let images = glance("/v2/images");
    let body = json!({"name": name, "visibility": "private", "disk_format": "raw", "container_format": "bare"});
    for _ in 0..10 {
        let (status, created) = call(rig, "alice", Method::POST, &images, Some(body.clone())).await;
        if status != 201 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let image = created["id"].as_str().unwrap().to_owned();
        for _ in 0..10 {
            let response = rig
                .http
                .put(glance(&format!("/v2/images/{image}/file")))
                .header("x-auth-token", rig.token("alice").await)
                .header("content-type", "application/octet-stream")
                .body(vec![7u8; 512])
                .send()
                .await
                .unwrap();
            let shown = call(rig, "alice", Method::GET, &glance(&format!("/v2/images/{image}")), None).await;
            if response.status() == 204 || shown.1["status"] == "active" {
                return image;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    panic!("Glance would not make an active image")
}

/// Shares `image` with `target` through the broker (accepted for the consumer); the share id.
pub async fn granted(app: &TestApp, worker: &Worker, image: &str, target: &str) -> String {
    let body = json!({"image_id": image, "targets": [target], "reason": "drift", "auto_accept": true});
    let request = app.file_and_approve(body, Some(worker)).await;
    let share = request["shares"][0]["id"].as_str().unwrap().to_owned();
    // A grant Glance answered with a retryable error is tried again later.
    until_share_state(worker, &app.pool, &share, "accepted").await;
    share
}

/// Adds `project` as a member of `image` by hand, as alice (the owner).
pub async fn add_member(rig: &Rig, image: &str, project: &str) {
    let members = glance(&format!("/v2/images/{image}/members"));
    let added = call(rig, "alice", Method::POST, &members, Some(json!({"member": project}))).await;
    assert_eq!(added.0, 200, "{added:?}");
}

/// Changes `image` by hand with a JSON patch, as alice.
pub async fn patch_image(rig: &Rig, image: &str, patch: Value) {
    let changed = call(
        rig,
        "alice",
        Method::PATCH,
        &glance(&format!("/v2/images/{image}")),
        Some(patch),
    )
    .await;
    assert_eq!(changed.0, 200, "{changed:?}");
}

/// Reconciles `image` and runs reconciliations only (the jobs queued for the image wait).
pub async fn reconcile_only(worker: &Worker, image: &str) {
    worker.queue_reconciles(Some(image.parse().unwrap())).await.unwrap();
    while worker.reconcile_once().await.unwrap() == glance_share_broker::worker::Outcome::Ran {}
}

/// Reconciles `image` and runs the worker until idle.
pub async fn reconcile(worker: &Worker, image: &str) {
    worker.queue_reconciles(Some(image.parse().unwrap())).await.unwrap();
    drain(worker).await;
}

/// The findings about `image`, as the auditor lists them, with `query` added.
pub async fn findings(app: &TestApp, image: &str, query: &str) -> Vec<Value> {
    let page = app.read(&format!("/v1/drift?image_id={image}{query}")).await;
    page["items"].as_array().unwrap_or_else(|| panic!("{page}")).clone()
}

/// (kind, project) of each finding, sorted.
pub fn kinds(found: &[Value]) -> Vec<(String, Option<String>)> {
    let mut kinds: Vec<_> = found
        .iter()
        .map(|f| {
            (
                f["kind"].as_str().unwrap().to_owned(),
                f["project_id"].as_str().map(str::to_owned),
            )
        })
        .collect();
    kinds.sort();
    kinds
}

fn one(kind: &str, project: Option<&str>) -> (String, Option<String>) {
    (kind.to_owned(), project.map(str::to_owned))
}

async fn audit_count(app: &TestApp, action: &str, image: &str) -> i64 {
    sqlx::query_scalar("select count(*) from audit_events where action = $1 and image_id = $2::uuid")
        .bind(action)
        .bind(image)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn members_added_removed_or_changed_outside_the_broker_are_found_once_audited_and_announced() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = drift_worker(&app, false, &[]);
    let hook = json!({"url": "http://127.0.0.1:9/drift", "events": ["drift.detected"]});
    let response = app.post(&app.admin, "/v1/webhooks", &hook).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let image = active_image(&rig, "drift-members").await;
    let share = granted(&app, &worker, &image, &env("PROJ_B_ID")).await;
    let (b, c) = (env("PROJ_B_ID"), env("PROJ_C_ID"));
    reconcile(&worker, &image).await;
    assert!(findings(&app, &image, "").await.is_empty(), "agreeing is no drift");

    // alice adds carol's project by hand; bob un-accepts his share in Glance.
    add_member(&rig, &image, &c).await;
    let bob_member = format!("/v2/images/{image}/members/{b}");
    assert_eq!(
        rig.glance_put(&rig.token("bob").await, &bob_member, json!({"status": "rejected"}))
            .await,
        200
    );
    reconcile(&worker, &image).await;
    let open = findings(&app, &image, "&state=open").await;
    assert_eq!(
        kinds(&open),
        [one("status_changed", Some(&b)), one("unmanaged_member", Some(&c))]
    );
    assert_eq!(audit_count(&app, "evaluate/drift", &image).await, 2);
    let announced: Vec<Value> =
        sqlx::query_scalar("select payload from webhook_deliveries where event = 'drift.detected' order by audit_seq")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(announced.len(), 2);
    assert_eq!(announced[0]["resource"]["type"], "drift_finding");
    assert_eq!(app.share_state(&share).await, "accepted", "reporting changes no share");
    let carol = call(
        &rig,
        "admin",
        Method::GET,
        &glance(&format!("/v2/images/{image}/members/{c}")),
        None,
    )
    .await;
    assert_eq!(carol.0, 200, "without enforcement nothing is removed");

    // Seen again: the same findings, seen later, not new ones.
    reconcile(&worker, &image).await;
    let again = findings(&app, &image, "&state=open").await;
    assert_eq!(kinds(&again), kinds(&open));
    assert!(again[0]["last_seen_at"].as_str() > open[0]["last_seen_at"].as_str());
    assert_eq!(audit_count(&app, "evaluate/drift", &image).await, 2);

    // alice removes bob's member: missing, the share removed outside (the poll's rule, once).
    assert_eq!(
        call(&rig, "alice", Method::DELETE, &glance(&bob_member), None).await.0,
        204
    );
    reconcile(&worker, &image).await;
    reconcile(&worker, &image).await;
    let open = findings(&app, &image, "&state=open").await;
    assert_eq!(
        kinds(&open),
        [one("member_missing", Some(&b)), one("unmanaged_member", Some(&c))]
    );
    assert_eq!(app.share_state(&share).await, "removed_outside");
    let revokes: i64 =
        sqlx::query_scalar("select count(*) from audit_events where action = 'revoke' and share_id = $1::uuid")
            .bind(&share)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(revokes, 1, "the removal outside is recorded once");
    let resolved = findings(&app, &image, "&state=resolved&kind=status_changed").await;
    assert_eq!(
        resolved.len(),
        1,
        "the status is no longer seen once the member is gone"
    );
    assert_eq!(resolved[0]["resolution"], "not_seen");
    assert_eq!(audit_count(&app, "update/drift", &image).await, 1);
    let by_project = app
        .read(&format!("/v1/drift?project_id={c}&kind=unmanaged_member"))
        .await;
    assert_eq!(by_project["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_image_deactivated_made_private_or_deleted_is_found() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = drift_worker(&app, false, &[]);
    let image = active_image(&rig, "drift-image").await;
    let share = granted(&app, &worker, &image, &env("PROJ_B_ID")).await;
    let actions = glance(&format!("/v2/images/{image}/actions"));
    assert_eq!(
        call(&rig, "admin", Method::POST, &format!("{actions}/deactivate"), None)
            .await
            .0,
        204
    );
    reconcile(&worker, &image).await;
    let open = findings(&app, &image, "&state=open").await;
    assert_eq!(kinds(&open), [one("image_inactive", None)]);
    assert_eq!(open[0]["details"]["found"], "deactivated");
    assert_eq!(
        call(&rig, "admin", Method::POST, &format!("{actions}/reactivate"), None)
            .await
            .0,
        204
    );
    reconcile(&worker, &image).await;
    assert!(
        findings(&app, &image, "&state=open").await.is_empty(),
        "reactivated: resolved"
    );

    let image_url = glance(&format!("/v2/images/{image}"));
    let private = json!([{"op": "replace", "path": "/visibility", "value": "private"}]);
    patch_image(&rig, &image, private).await;
    reconcile(&worker, &image).await;
    let open = findings(&app, &image, "&state=open").await;
    assert_eq!(kinds(&open), [one("visibility_changed", None)]);
    assert_eq!(open[0]["details"], json!({"expected": "shared", "found": "private"}));
    assert_eq!(
        app.share_state(&share).await,
        "accepted",
        "hidden members are not missing ones"
    );

    // The deletion guard protected it while shared: the owner must unprotect it first.
    assert_eq!(call(&rig, "alice", Method::DELETE, &image_url, None).await.0, 403);
    let unprotect = json!([{"op": "replace", "path": "/protected", "value": false}]);
    patch_image(&rig, &image, unprotect).await;
    reconcile(&worker, &image).await;
    let open = findings(&app, &image, "&state=open").await;
    assert_eq!(
        kinds(&open),
        [one("protected_changed", None), one("visibility_changed", None)]
    );
    assert_eq!(
        open.iter().find(|f| f["kind"] == "protected_changed").unwrap()["details"],
        json!({"expected": true, "found": false})
    );

    assert_eq!(call(&rig, "alice", Method::DELETE, &image_url, None).await.0, 204);
    reconcile(&worker, &image).await;
    let open = findings(&app, &image, "&state=open").await;
    assert_eq!(
        kinds(&open),
        [
            one("image_missing", None),
            one("protected_changed", None),
            one("visibility_changed", None)
        ],
        "the image is gone: nothing else can be compared, so nothing else resolves"
    );
    assert_eq!(app.share_state(&share).await, "image_deleted");
}

#[tokio::test]
async fn a_target_project_deleted_from_keystone_is_found() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = drift_worker(&app, false, &[]);
    let project = rig
        .create_project(&format!("drift-gone-{}", uuid::Uuid::new_v4().simple()))
        .await;
    let image = active_image(&rig, "drift-project").await;
    let share = granted(&app, &worker, &image, &project).await;
    rig.delete_project(&project).await;
    reconcile(&worker, &image).await;
    let open = findings(&app, &image, "&state=open").await;
    assert_eq!(kinds(&open), [one("project_missing", Some(&project))]);
    assert_eq!(open[0]["share_id"], share.as_str());
}

#[tokio::test]
async fn under_enforcement_unmanaged_members_are_removed_and_visibility_restored() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let worker = drift_worker(&app, true, &[]);
    let image = active_image(&rig, "drift-enforce").await;
    let share = granted(&app, &worker, &image, &env("PROJ_B_ID")).await;
    let c = env("PROJ_C_ID");
    let members = glance(&format!("/v2/images/{image}/members"));
    add_member(&rig, &image, &c).await;
    reconcile(&worker, &image).await;
    let carol = call(&rig, "admin", Method::GET, &format!("{members}/{c}"), None).await;
    assert_eq!(carol.0, 404, "the member nobody approved is gone");
    let found = findings(&app, &image, "").await;
    assert_eq!(kinds(&found), [one("unmanaged_member", Some(&c))]);
    assert_eq!(
        (found[0]["state"].as_str(), found[0]["resolution"].as_str()),
        (Some("resolved"), Some("repaired"))
    );
    let reason: String = sqlx::query_scalar(
        "select reason from audit_events where action = 'revoke' and image_id = $1::uuid and project_id = $2",
    )
    .bind(&image)
    .bind(&c)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(reason, glance_share_broker::worker::UNAPPROVED);

    let private = json!([{"op": "replace", "path": "/visibility", "value": "private"}]);
    let image_url = glance(&format!("/v2/images/{image}"));
    patch_image(&rig, &image, private).await;
    reconcile(&worker, &image).await;
    let shown = call(&rig, "admin", Method::GET, &image_url, None).await.1;
    assert_eq!(shown["visibility"], "shared", "restored");
    let bob = call(&rig, "bob", Method::GET, &image_url, None).await;
    assert_eq!(bob.0, 200, "the consumer sees the image again");
    assert_eq!(app.share_state(&share).await, "accepted");
    assert!(findings(&app, &image, "&state=open").await.is_empty());
    let visibility = findings(&app, &image, "&kind=visibility_changed").await;
    assert_eq!(visibility[0]["resolution"], "repaired");

    // The owner unprotects the guarded image: protected again.
    let unprotect = json!([{"op": "replace", "path": "/protected", "value": false}]);
    patch_image(&rig, &image, unprotect).await;
    reconcile(&worker, &image).await;
    let shown = call(&rig, "admin", Method::GET, &image_url, None).await.1;
    assert_eq!(shown["protected"], true, "restored");
    let protection = findings(&app, &image, "&kind=protected_changed").await;
    assert_eq!(protection[0]["resolution"], "repaired", "{protection:?}");
    assert_eq!(
        audit_count(&app, "update/protect", &image).await,
        2,
        "set at the grant, and again"
    );
    assert_eq!(
        call(&rig, "alice", Method::DELETE, &image_url, None).await.0,
        403,
        "guarded again"
    );
}

#[tokio::test]
async fn members_made_by_hand_are_adopted_as_found_for_configured_owners_and_reported_otherwise() {
    let (app, rig) = (spawn_app().await, Rig::from_env());
    let (a, b) = (env("PROJ_A_ID"), env("PROJ_B_ID"));
    // The guide's CLI flow, by hand: shared, add bob's project, bob accepts.
    let image = active_image(&rig, "drift-adopt").await;
    let shared = json!([{"op": "replace", "path": "/visibility", "value": "shared"}]);
    patch_image(&rig, &image, shared).await;
    add_member(&rig, &image, &b).await;
    let bob_member = format!("/v2/images/{image}/members/{b}");
    assert_eq!(
        rig.glance_put(&rig.token("bob").await, &bob_member, json!({"status": "accepted"}))
            .await,
        200
    );

    reconcile(&drift_worker(&app, false, &[]), &image).await;
    assert_eq!(
        kinds(&findings(&app, &image, "&state=open").await),
        [one("unmanaged_member", Some(&b))]
    );

    reconcile(&drift_worker(&app, true, &[&a]), &image).await;
    let shares = app.read(&format!("/v1/shares?image_id={image}")).await;
    let adopted = &shares["items"][0];
    assert_eq!(adopted["state"], "accepted", "{shares}");
    assert_eq!(adopted["adopted"], true);
    assert_eq!(adopted["project_id"], b.as_str());
    assert!(adopted["granted_at"].is_string(), "the member's creation time");
    let request = app
        .read(&format!(
            "/v1/share-requests/{}",
            adopted["request_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(request["status"], "approved");
    assert!(request["decided_by"].is_null(), "no approver: {request}");
    let member = call(&rig, "admin", Method::GET, &glance(&bob_member), None).await;
    assert_eq!(member.0, 200, "adopted, not removed, even under enforcement");
    let found = findings(&app, &image, "").await;
    assert_eq!(found[0]["resolution"], "adopted");
    assert_eq!(audit_count(&app, "create/adopt", &image).await, 1);

    // Adopted, it is the broker's like any share: the next pass agrees with Glance.
    reconcile(&drift_worker(&app, true, &[&a]), &image).await;
    assert!(findings(&app, &image, "&state=open").await.is_empty());
    assert_eq!(audit_count(&app, "create/adopt", &image).await, 1, "adopted once");
}

#[tokio::test]
async fn only_admins_reconcile_and_only_auditors_and_admins_read_drift() {
    let app = spawn_app().await;
    for key in [&app.requester, &app.approver, &app.auditor] {
        let response = app.post(key, "/v1/reconcile", &json!({})).send().await.unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
    }
    let refused: i64 = sqlx::query_scalar(
        "select count(*) from audit_events where action = 'evaluate/reconcile' and outcome = 'failure'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(refused, 3, "each refusal is audited");
    for key in [&app.requester, &app.approver] {
        let response = app.get(key, "/v1/drift").send().await.unwrap();
        problem(response, StatusCode::FORBIDDEN).await;
    }
    for key in [&app.auditor, &app.admin] {
        assert_eq!(app.get(key, "/v1/drift").send().await.unwrap().status(), StatusCode::OK);
    }
    let response = app
        .client
        .post(app.url("/v1/reconcile"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED, "no body: every managed image");
    let queued: Value = response.json().await.unwrap();
    assert_eq!(queued, json!({"queued": [], "images": 0}));
    let image = uuid::Uuid::new_v4();
    let response = app
        .post(&app.admin, "/v1/reconcile", &json!({"image_id": image}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["queued"], json!([image]));
    let again = app
        .post(&app.admin, "/v1/reconcile", &json!({"image_id": image}))
        .send()
        .await
        .unwrap();
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["queued"], json!([]), "already queued: not twice");
}

#[tokio::test]
async fn bad_reconcile_bodies_and_drift_filters_are_named() {
    let app = spawn_app().await;
    for (body, field) in [
        (json!({"image_id": "nope"}), "image_id"),
        (json!({"image": "7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa"}), "image"),
    ] {
        let response = app.post(&app.admin, "/v1/reconcile", &body).send().await.unwrap();
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&problem), [field], "{body}");
    }
    for (query, field) in [
        ("kind=sideways", "kind"),
        ("state=closed", "state"),
        ("image_id=nope", "image_id"),
        ("colour=red", "colour"),
        ("limit=0", "limit"),
        ("cursor=junk", "cursor"),
    ] {
        let response = app
            .get(&app.auditor, &format!("/v1/drift?{query}"))
            .send()
            .await
            .unwrap();
        let problem = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&problem), [field], "{query}");
    }
}
