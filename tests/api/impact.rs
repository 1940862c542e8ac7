//! What depends on a shared image, and revokes that break nobody by surprise, against the
//! real Keystone, Glance, Nova and Cinder: bob (proj-b) boots servers from alice's shared
//! image and makes volumes from it; the broker lists them, refuses a plain revoke, records
//! what a forced one broke, schedules and cancels revokes, and gives notice of expiries.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use glance_share_broker::worker::Worker;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::compute::Made;
use crate::helpers::{TestApp, fields, problem, share_state, spawn_app_with_cloud};
use crate::openstack::{Rig, broker_cloud, drain, drive_until, env, until_share_state, worker_config};

/// A broker whose API asks the rig's Nova, Cinder and Glance, and a worker.
pub(crate) async fn broker() -> (TestApp, Worker, Rig) {
    let app = spawn_app_with_cloud(Some(broker_cloud()), |_| {}).await;
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    (app, worker, Rig::from_env())
}

/// A share of `image` to proj-b, granted and accepted (`expires_at` if given); its id.
pub(crate) async fn accepted_share(app: &TestApp, worker: &Worker, image: &str, expires_at: Option<String>) -> String {
    let mut body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "impact", "auto_accept": true});
    if let Some(at) = expires_at {
        body["expires_at"] = json!(at);
    }
    let request = app.file_and_approve(body, Some(worker)).await;
    let share = request["shares"][0]["id"].as_str().unwrap().to_owned();
    until_share_state(worker, &app.pool, &share, "accepted").await;
    share
}

/// Runs `body`, then deletes what it made in Nova, Cinder and Glance, even when it failed.
pub(crate) async fn with_cleanup<F: Future<Output = ()>>(rig: &Rig, made: &std::sync::Mutex<Made>, body: F) {
    let outcome = AssertUnwindSafe(body).catch_unwind().await;
    let made = std::mem::take(&mut *made.lock().unwrap());
    made.clean(rig).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The audit events about `share`: (action, outcome, details), in order.
pub(crate) async fn share_events(pool: &PgPool, share: &str) -> Vec<(String, String, Value)> {
    sqlx::query_as("select action, outcome, details from audit_events where share_id = $1::uuid order by seq")
        .bind(share)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The details of the first `revoke` event about `share` with `outcome`.
pub(crate) async fn revoke_details(pool: &PgPool, share: &str, outcome: &str) -> Value {
    let events = share_events(pool, share).await;
    let found = events.into_iter().find(|(a, o, _)| a == "revoke" && o == outcome);
    found.unwrap_or_else(|| panic!("no revoke {outcome} event")).2
}

/// The ids of the dependents listed in `value` (an impact or a problem).
fn ids(value: &Value) -> Vec<String> {
    value["dependents"]
        .as_array()
        .unwrap_or_else(|| panic!("no dependents in {value}"))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) async fn revoke(app: &TestApp, key: &str, share: &str, body: Value) -> reqwest::Response {
    app.post(key, &format!("/v1/shares/{share}/revoke"), &body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_share_in_use_lists_its_dependents_refuses_a_plain_revoke_and_a_forced_one_records_what_it_broke() {
    let (app, worker, rig) = broker().await;
    let image = rig.active_image("impact-in-use").await;
    let share = accepted_share(&app, &worker, &image, None).await;
    let made = std::sync::Mutex::new(Made::default());
    with_cleanup(&rig, &made, async {
        let mut m = Made::default();
        let server = rig.boot(&mut m, "impact-server", Some(&image), None).await;
        let volume = rig.volume_from(&mut m, "impact-volume", &image).await;
        let from_volume = rig.boot(&mut m, "impact-bfv", None, Some(&volume)).await;
        let snapshot = rig.snapshot_of(&mut m, "impact-snapshot", &image).await;
        *made.lock().unwrap() = m;

        // The impact names each, with its kind, project and status.
        let impact = app.read(&format!("/v1/shares/{share}/impact")).await;
        assert_eq!(impact["unchecked"], json!([]), "{impact}");
        let kinds: Vec<(String, String)> = impact["dependents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_owned(),
                    d["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for expected in [
            ("server", &server),
            ("volume", &volume),
            ("volume_server", &from_volume),
            ("snapshot", &snapshot),
        ] {
            assert!(
                kinds.contains(&(expected.0.to_owned(), expected.1.clone())),
                "{expected:?} in {impact}"
            );
        }
        let listed = |id: &str| {
            impact["dependents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["id"] == id)
                .unwrap()
                .clone()
        };
        assert_eq!(listed(&server)["project"], env("PROJ_B_ID").as_str());
        assert_eq!(listed(&server)["status"], "ACTIVE");
        assert_eq!(listed(&server)["name"], "impact-server");
        assert_eq!(listed(&from_volume)["via"], volume.as_str());
        // Across the image's shares, for an auditor.
        let across = app
            .read_as(&app.auditor, &format!("/v1/images/{image}/dependents"))
            .await;
        assert_eq!(across["shares"][0]["share_id"], share.as_str());
        assert_eq!(ids(&across["shares"][0]).len(), 4, "{across}");

        // A plain revoke is refused, names them, and changes nothing.
        let before: Value = app.read(&format!("/v1/shares/{share}")).await;
        let refused = problem(
            revoke(&app, &app.requester, &share, json!({"reason": "done"})).await,
            StatusCode::CONFLICT,
        )
        .await;
        assert!(refused["type"].as_str().unwrap().ends_with("share-in-use"), "{refused}");
        assert!(ids(&refused).contains(&server), "{refused}");
        let after: Value = app.read(&format!("/v1/shares/{share}")).await;
        assert_eq!(after, before, "nothing changed");
        drain(&worker).await;
        let alice = rig.token("alice").await;
        let (_, members) = rig.glance_get(&alice, &format!("/v2/images/{image}/members")).await;
        assert_eq!(members["members"][0]["member_id"], env("PROJ_B_ID").as_str());
        let events = share_events(&app.pool, &share).await;
        let (action, outcome, details) = events.last().unwrap();
        assert_eq!((action.as_str(), outcome.as_str()), ("revoke", "failure"));
        assert_eq!(details["reason"], "share-in-use");
        assert!(ids(details).contains(&volume), "{details}");

        // The consumer may read the impact but not revoke, forced or not.
        let bob = rig.token("bob").await;
        let response = app
            .get_as(&bob, &format!("/v1/shares/{share}/impact"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = json!({"reason": "mine now", "force": true});
        let response = app
            .post_as(&bob, &format!("/v1/shares/{share}/revoke"), &body)
            .send()
            .await
            .unwrap();
        problem(response, StatusCode::FORBIDDEN).await;

        // Forced by the image's project: revoked, and the audit trail names what it broke.
        let response = revoke(
            &app,
            &app.requester,
            &share,
            json!({"reason": "image retired", "force": true}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        until_share_state(&worker, &app.pool, &share, "revoked").await;
        assert_eq!(revoke_details(&app.pool, &share, "pending").await["forced"], true);
        let done = revoke_details(&app.pool, &share, "success").await;
        for id in [&server, &volume, &from_volume, &snapshot] {
            assert!(ids(&done).contains(id), "{id} in {done}");
        }
        // What the broker warned about: bob's server can no longer be rebuilt.
        assert_eq!(rig.rebuild(&server, &image).await, 400);
    })
    .await;
}

#[tokio::test]
async fn a_scheduled_revoke_keeps_the_member_until_it_is_due_then_revokes_and_records_the_dependents() {
    let (app, worker, rig) = broker().await;
    let image = rig.active_image("impact-scheduled").await;
    let share = accepted_share(&app, &worker, &image, None).await;
    let hook = json!({"url": "http://127.0.0.1:9/hook", "events": []});
    assert_eq!(
        app.post(&app.admin, "/v1/webhooks", &hook)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::CREATED
    );
    let made = std::sync::Mutex::new(Made::default());
    with_cleanup(&rig, &made, async {
        let mut m = Made::default();
        let server = rig.boot(&mut m, "impact-scheduled-server", Some(&image), None).await;
        *made.lock().unwrap() = m;

        let at = chrono::Utc::now() + chrono::Duration::seconds(4);
        let body = json!({"reason": "moving to a new image", "effective_at": at.to_rfc3339()});
        let response = revoke(&app, &app.requester, &share, body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let scheduled: Value = response.json().await.unwrap();
        assert_eq!(scheduled["state"], "revocation_scheduled");
        assert!(scheduled["revoke_effective_at"].is_string(), "{scheduled}");
        let announced: Vec<String> = sqlx::query_scalar("select event from webhook_deliveries order by audit_seq")
            .fetch_all(&app.pool)
            .await
            .unwrap();
        assert!(
            announced.contains(&"share.revocation_scheduled".to_owned()),
            "{announced:?}"
        );

        // Until it is due, the member stays and the consumer keeps its access.
        worker.sweep_expired().await.unwrap();
        drain(&worker).await;
        assert_eq!(share_state(&app.pool, &share).await, "revocation_scheduled");
        let bob = rig.token("bob").await;
        assert_eq!(rig.glance_get(&bob, &format!("/v2/images/{image}")).await.0, 200);

        let id = share.clone();
        let sweeper = worker.clone();
        drive_until(
            &worker,
            &app.pool,
            "the scheduled revoke is done",
            async move |pool: &PgPool| {
                sweeper.sweep_expired().await.unwrap();
                share_state(pool, &id).await == "revoked"
            },
        )
        .await;
        assert!(chrono::Utc::now() >= at);
        assert_eq!(rig.glance_get(&bob, &format!("/v2/images/{image}")).await.0, 404);
        let done = revoke_details(&app.pool, &share, "success").await;
        assert_eq!(done["cause"], "scheduled");
        assert!(ids(&done).contains(&server), "{done}");
        let view: Value = app.read(&format!("/v1/shares/{share}")).await;
        assert_eq!(view["revoke_reason"], "moving to a new image");
    })
    .await;
}

#[tokio::test]
async fn a_scheduled_revoke_can_be_cancelled_once_and_only_by_those_who_may_revoke() {
    let (app, worker, rig) = broker().await;
    let image = rig.private_image("impact-cancel").await;
    let share = accepted_share(&app, &worker, &image, None).await;
    let at = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let response = revoke(
        &app,
        &app.requester,
        &share,
        json!({"reason": "later", "effective_at": at}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Scheduling again is refused: cancel first.
    let again = revoke(
        &app,
        &app.requester,
        &share,
        json!({"reason": "later", "effective_at": at}),
    )
    .await;
    let again = problem(again, StatusCode::CONFLICT).await;
    assert!(again["detail"].as_str().unwrap().contains("cancel it first"), "{again}");

    let cancel = |key: &str| {
        app.client
            .delete(app.url(&format!("/v1/shares/{share}/revocation")))
            .bearer_auth(key)
            .send()
    };
    // The consumer may not cancel it (nor revoke).
    let bob = rig.token("bob").await;
    let response = app
        .client
        .delete(app.url(&format!("/v1/shares/{share}/revocation")))
        .header("x-auth-token", &bob)
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
    assert_eq!(share_state(&app.pool, &share).await, "revocation_scheduled");

    let response = cancel(&app.requester).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let back: Value = response.json().await.unwrap();
    assert_eq!(back["state"], "accepted");
    assert_eq!(back["revoke_effective_at"], Value::Null);
    let events = share_events(&app.pool, &share).await;
    let (action, outcome, _) = events.last().unwrap();
    assert_eq!((action.as_str(), outcome.as_str()), ("update/cancel", "success"));
    // Once: there is nothing left to cancel.
    let twice = problem(cancel(&app.requester).await.unwrap(), StatusCode::CONFLICT).await;
    assert!(
        twice["detail"].as_str().unwrap().contains("no revoke is scheduled"),
        "{twice}"
    );
    // The member was kept all along.
    let (_, members) = rig
        .glance_get(&rig.token("alice").await, &format!("/v2/images/{image}/members"))
        .await;
    assert_eq!(members["members"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_nova_that_cannot_be_asked_is_unchecked_not_empty_and_a_plain_revoke_is_refused() {
    let app = spawn_app_with_cloud(Some(broker_cloud().with_compute_url("http://127.0.0.1:9/v2.1")), |_| {}).await;
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let rig = Rig::from_env();
    let image = rig.private_image("impact-no-nova").await;
    let share = accepted_share(&app, &worker, &image, None).await;

    let impact = app.read(&format!("/v1/shares/{share}/impact")).await;
    assert_eq!(impact["dependents"], json!([]));
    let unchecked = impact["unchecked"].as_array().unwrap();
    assert_eq!(unchecked.len(), 1, "{impact}");
    assert_eq!(unchecked[0]["service"], "compute");
    assert!(
        unchecked[0]["reason"].as_str().unwrap().contains("could not connect"),
        "{impact}"
    );

    let response = revoke(&app, &app.requester, &share, json!({"reason": "done"})).await;
    assert!(response.headers().contains_key("retry-after"));
    let refused = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        refused["type"].as_str().unwrap().ends_with("dependents-unchecked"),
        "{refused}"
    );
    assert_eq!(refused["unchecked"][0]["service"], "compute");
    assert_eq!(share_state(&app.pool, &share).await, "accepted");

    // Forced: revoked, recording that Nova was not checked.
    let response = revoke(&app, &app.admin, &share, json!({"reason": "done", "force": true})).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    until_share_state(&worker, &app.pool, &share, "revoked").await;
    let done = revoke_details(&app.pool, &share, "success").await;
    assert_eq!(done["unchecked"][0]["service"], "compute", "{done}");
}

#[tokio::test]
async fn bad_revoke_input_is_refused_on_its_field() {
    let (app, worker, rig) = broker().await;
    let image = rig.private_image("impact-bad-input").await;
    let share = accepted_share(&app, &worker, &image, None).await;
    let now = chrono::Utc::now();
    let cases = [
        (
            json!({"reason": "x", "effective_at": (now - chrono::Duration::minutes(1)).to_rfc3339()}),
            "effective_at",
        ),
        (
            json!({"reason": "x", "effective_at": (now + chrono::Duration::days(400)).to_rfc3339()}),
            "effective_at",
        ),
        (json!({"reason": "x", "effective_at": "next tuesday"}), "effective_at"),
        (
            json!({"reason": "x", "effective_at": (now + chrono::Duration::days(1)).to_rfc3339(), "force": true}),
            "force",
        ),
        (json!({"reason": "x", "force": "yes"}), "force"),
        (json!({"reason": " ", "force": true}), "reason"),
    ];
    for (body, field) in cases {
        let response = revoke(&app, &app.requester, &share, body.clone()).await;
        let refused = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(fields(&refused), [field], "{body}: {refused}");
    }
    assert_eq!(share_state(&app.pool, &share).await, "accepted");
}

#[tokio::test]
async fn only_the_projects_approvers_auditors_and_admins_read_the_impact() {
    let (app, worker, rig) = broker().await;
    let image = rig.private_image("impact-readers").await;
    let share = accepted_share(&app, &worker, &image, None).await;
    let path = format!("/v1/shares/{share}/impact");
    for key in [&app.requester, &app.approver, &app.auditor, &app.admin] {
        assert_eq!(app.get(key, &path).send().await.unwrap().status(), StatusCode::OK);
    }
    // carol's project neither owns the image nor receives it: the share does not exist for her.
    let carol = rig.token("carol").await;
    let response = app.get_as(&carol, &path).send().await.unwrap();
    problem(response, StatusCode::NOT_FOUND).await;
    let response = app
        .get_as(&carol, &format!("/v1/images/{image}/dependents"))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::NOT_FOUND).await;
    // A reader of the owner project sees the share, but not what the consumer runs.
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    let reader = rig
        .create_user(
            &format!("impact-reader-{}", uuid::Uuid::new_v4().simple()),
            "default",
            &password,
        )
        .await;
    rig.grant(&format!("projects/{}", env("PROJ_A_ID")), &reader, "reader")
        .await;
    let token = rig
        .token_for(&reader, &password, json!({"project": {"id": env("PROJ_A_ID")}}))
        .await;
    assert_eq!(
        app.get_as(&token, &format!("/v1/shares/{share}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let response = app.get_as(&token, &path).send().await.unwrap();
    problem(response, StatusCode::FORBIDDEN).await;
}
