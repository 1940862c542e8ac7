//! The auditors' and approvers' console pages over plain HTTP: an image's access picture and
//! "who had access at T", the chain's state and a check made from it, exports through the
//! session, and the approvals inbox's verdict, facts and two-approver progress. Each is the
//! API's answer for the same person: a refusal is the API's, as a page, and changes nothing.
//! The real browser's story is in console_browser_audit.rs.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use glance_share_broker::db;
use glance_share_broker::domain::Role;
use glance_share_broker::domain::policy::{Policy, SharedPolicy};
use glance_share_broker::worker::{Worker, WorkerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::audit_views::revoke;
use crate::console::{Visitor, csrf_of};
use crate::faults::{Setup, approve_one, setup, until_state};
use crate::helpers::{IMAGE, PROJ_B, TestApp, spawn_app};
use crate::openstack::{broker_cloud_with_glance, env, worker_config};

async fn signed_in(app: &TestApp, key: &str) -> Visitor {
    let mut visitor = Visitor::new(app);
    visitor.sign_in_with_key(key).await;
    visitor
}

async fn verifications(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from audit_verifications")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn non_auditors_get_the_apis_403_page_for_the_picture_the_chain_and_exports_and_nothing_is_recorded() {
    let app = spawn_app().await;
    app.file(IMAGE, &[PROJ_B]).await;
    // proj-a's own key: even its own project's image, by URL, shows nothing (the log names
    // every project).
    let scoped = db::api_keys::create(&app.pool, "proj-a-portal", Role::Requester, &[env("PROJ_A_ID")])
        .await
        .unwrap()
        .1;
    for key in [&app.approver, &app.requester, &scoped] {
        let visitor = signed_in(&app, key).await;
        for path in [
            format!("/console/audit/images/{IMAGE}"),
            format!("/console/audit/images/{IMAGE}?at=2026-01-01"),
            "/console/audit/chain".to_owned(),
            format!("/console/audit/export?format=csv&image_id={IMAGE}"),
        ] {
            let (status, html) = visitor.page(&path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
            assert!(
                html.contains("needs the auditor role") && html.contains("Nothing was changed"),
                "{path}: {html}"
            );
            assert!(
                !html.contains(PROJ_B) && !html.contains("<svg"),
                "{path}: nothing of the image shows"
            );
        }
        // With the session's own token the form passes the CSRF check; the API refuses it.
        let (_, html) = visitor.page("/console/shared-with-me").await;
        let response = visitor
            .post("/console/audit/chain/verify", &[("csrf", &csrf_of(&html))])
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(verifications(&app).await, 0);
}

/// A moment between two others (20 ms from each).
pub async fn pause() -> DateTime<Utc> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let now = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    now
}

pub fn at(moment: DateTime<Utc>) -> String {
    moment.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[tokio::test]
async fn the_picture_draws_each_grant_with_its_approver_and_revoker_and_a_moment_lists_who_had_access() {
    let s = setup("shared").await;
    let app = &s.app;
    let before = pause().await;
    let share = approve_one(&s).await;
    until_state(&s, &share, "pending_acceptance").await;
    let during = pause().await;
    revoke(app, &share, "moved on").await;
    until_state(&s, &share, "revoked").await;
    let after = pause().await;

    let visitor = signed_in(app, &app.auditor).await;
    let path = format!("/console/audit/images/{}", s.image);
    let (status, html) = visitor.page(&path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(r#"<svg class="access""#) && html.contains(r#"role="img""#),
        "{html}"
    );
    let bar = html
        .split(r#"<g class="span"><title>"#)
        .nth(1)
        .expect("a bar for the grant")
        .split("</title>")
        .next()
        .unwrap()
        .to_owned();
    assert!(
        bar.contains(&s.proj_b) && bar.contains("approved by workflow") && bar.contains("by portal: “moved on”"),
        "{bar}"
    );
    assert_eq!(html.matches(r#"<g class="span">"#).count(), 1);
    // The same facts for keyboards and screen readers.
    assert!(html.contains("Every access change, oldest first"));
    assert!(
        html.contains(r#"<td>granted</td><td class="who">workflow</td>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<td>revoked</td><td class="who">portal</td><td>moved on</td>"#),
        "{html}"
    );

    let (status, html) = visitor.page(&format!("{path}?at={}", at(during))).await;
    assert_eq!(status, StatusCode::OK);
    let listed = html
        .split("Projects with access at")
        .nth(1)
        .expect("a table of who had access");
    assert!(listed.contains(&s.proj_b) && listed.contains("workflow"), "{listed}");
    assert!(html.contains(r#"class="at""#), "the moment is marked on the picture");
    for moment in [before, after] {
        let (status, html) = visitor.page(&format!("{path}?at={}", at(moment))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("No project had access at"), "{html}");
        assert!(!html.contains("Projects with access at"));
    }

    let (status, html) = visitor.page(&format!("{path}?at=yesterday")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains(r#"aria-invalid="true""#) && html.contains("at: `yesterday` is not a moment"),
        "{html}"
    );
    assert!(html.contains(r#"value="yesterday""#), "the field keeps what was typed");
    let (status, _) = visitor.page("/console/audit/images/not-an-image").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, html) = visitor.page(&format!("/console/audit/images/{}", Uuid::new_v4())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No project has had access to this image") && !html.contains("<svg"));
}

#[tokio::test]
async fn an_export_through_the_console_is_the_apis_export_of_the_same_filter() {
    let app = spawn_app().await;
    let filed = app.file(IMAGE, &[PROJ_B]).await;
    let id = filed["id"].as_str().unwrap();
    app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    let deny = format!("/v1/share-requests/{id}/deny");
    let response = app
        .post(&app.approver, &deny, &json!({"comment": "=1+1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let visitor = signed_in(&app, &app.auditor).await;
    for (format, media_type, extension) in [
        ("ndjson", "application/x-ndjson", ".ndjson\""),
        ("csv", "text/csv", ".csv\""),
        ("cadf", "application/cadf+json", ".cadf.json\""),
    ] {
        let filter = format!("format={format}&image_id={IMAGE}&outcome=success");
        let response = visitor.get(&format!("/console/audit/export?{filter}")).await;
        assert_eq!(response.status(), StatusCode::OK, "{format}");
        assert_eq!(response.headers()["content-type"], media_type);
        let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
        assert!(
            disposition.starts_with("attachment; filename=\"audit-events-") && disposition.ends_with(extension),
            "{disposition}"
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
        let console = response.text().await.unwrap();
        let api = app
            .get(&app.auditor, &format!("/v1/audit-events?{filter}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(console, api, "{format}");
        assert!(
            console.contains(id) && console.contains("update/deny"),
            "{format}: {console}"
        );
    }
    let ndjson = visitor
        .get("/console/audit/export?format=ndjson&action=create")
        .await
        .text()
        .await
        .unwrap();
    let actions: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["action"].clone())
        .collect();
    assert_eq!(actions, ["create", "create"], "the filter travels with the export");

    let (status, html) = visitor.page("/console/audit/export?format=xml").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("format: must be ndjson, csv or cadf"), "{html}");
    let (status, html) = visitor.page("/console/audit/export?format=csv&after=soon").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains("after: `soon` is not a moment"), "{html}");

    // The timeline offers the downloads of its own filter, and names a bad moment at its field.
    let (status, html) = visitor
        .page(&format!("/console/audit?image_id={IMAGE}&outcome=success"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&format!(
            "/console/audit/export?image_id={IMAGE}&amp;outcome=success&amp;format=csv"
        )),
        "{html}"
    );
    assert!(html.contains(r#"<option value="success" selected>success</option>"#));
    let (status, html) = visitor.page("/console/audit?before=tomorrow-ish").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains(r#"aria-invalid="true""#) && html.contains("is not a moment") && !html.contains("<table"),
        "{html}"
    );
}

#[tokio::test]
async fn the_chain_page_shows_the_head_and_a_check_made_from_it_only_with_the_sessions_token() {
    let app = spawn_app().await;
    let mut visitor = signed_in(&app, &app.auditor).await;
    let (status, html) = visitor.page("/console/audit/chain").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("The chain has never been checked"), "{html}");
    let chain = app.read("/v1/audit-chain").await;
    assert!(html.contains(chain["head"]["hash"].as_str().unwrap()), "{html}");

    let path = "/console/audit/chain/verify";
    let response = visitor.post(path, &[("csrf", "forged")]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let token = csrf_of(&html);
    let response = visitor.post(path, &[("csrf", &token), ("expect", "2:xyz")]).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await.unwrap().contains("expect: `2:xyz` is not"));
    assert_eq!(verifications(&app).await, 0, "nothing checked, nothing recorded");

    let response = visitor.post(path, &[("csrf", &token), ("expect", "")]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/audit/chain?done=verify");
    let (_, html) = visitor.page("/console/audit/chain?done=verify").await;
    assert!(
        html.contains("<strong>Intact</strong>") && html.contains("verify by auditor") && html.contains("Checked:"),
        "{html}"
    );

    let wrong = format!("2:{}", "ab".repeat(32));
    let response = visitor.post(path, &[("csrf", &token), ("expect", &wrong)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, html) = visitor.page("/console/audit/chain").await;
    assert!(
        html.contains("<strong>Broken</strong>") && html.contains("place 2"),
        "{html}"
    );
    assert_eq!(verifications(&app).await, 2);

    // Another session's token is refused too.
    let other = signed_in(&app, &app.admin).await;
    let (_, theirs) = other.page("/console/audit/chain").await;
    let response = visitor.post(path, &[("csrf", &csrf_of(&theirs))]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(verifications(&app).await, 2);
    visitor.cookie = None;
    let response = visitor.post(path, &[("csrf", &token)]).await;
    assert_eq!(location(&response), "/console/sign-in");
}

const TWO_EYES: &str = "[[rules]]\nname = \"two-eyes\"\ndecision = \"require_approval\"\napprovals = 2";

/// The setup's broker with a worker that applies a two-approver policy.
fn two_eyes_worker(s: &Setup) -> Worker {
    let config = WorkerConfig {
        policy: SharedPolicy::new(Policy::parse("policy.toml", TWO_EYES).unwrap()),
        ..worker_config()
    };
    Worker::new(
        s.app.pool.clone(),
        broker_cloud_with_glance(&s.url, Duration::from_millis(1500)),
        config,
    )
}

/// The inbox's article about request `id`.
fn article<'a>(html: &'a str, id: &str) -> &'a str {
    html.split("<article")
        .find(|a| a.contains(&format!("<code>{id}</code>")))
        .unwrap_or_else(|| panic!("no article about {id}: {html}"))
}

#[tokio::test]
async fn the_inbox_shows_the_policys_verdict_what_validation_found_and_two_approver_progress() {
    let s = setup("shared").await;
    let app = &s.app;
    let worker = two_eyes_worker(&s);
    let body = json!({"image_id": s.image, "targets": [s.proj_b], "reason": "two pairs of eyes"});
    let filed = app.file_as(&app.requester, &body).await;
    let id = filed["id"].as_str().unwrap().to_owned();
    let validated = app.validated(&id, Some(&worker)).await;
    assert_eq!(validated["approval"]["verdict"], "require_approval", "{validated}");
    // Filed after the worker ran: still waiting for validation.
    let waiting = app.file(&Uuid::new_v4().to_string(), &[PROJ_B]).await;
    let waiting = waiting["id"].as_str().unwrap();

    let approver = signed_in(app, &app.approver).await;
    let (status, html) = approver.page("/console/approvals").await;
    assert_eq!(status, StatusCode::OK);
    let mine = article(&html, &id);
    for text in [
        "<strong>Needs 2 approvals</strong> — rule <code>two-eyes</code>",
        r#"<progress value="0" max="2" aria-label="0 of 2 approvals given">"#,
        &format!("<code>{}</code>", s.image),
        &format!("<code>{}</code> in domain <code>", env("PROJ_A_ID")),
        &format!("(<code>{}</code>)", s.proj_b),
        "passed, ",
        r#"value="approve""#,
    ] {
        assert!(mine.contains(text), "{text} missing: {mine}");
    }
    let pending = article(&html, waiting);
    assert!(
        pending.contains("Not yet: the policy decides once validation has passed.")
            && !pending.contains(r#"value="approve""#),
        "{pending}"
    );

    let decide = format!("/console/requests/{id}/decide");
    let form = [
        ("csrf", csrf_of(&html)),
        ("decision", "approve".into()),
        ("comment", "first pair".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = approver.post(&decide, &form).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (_, html) = approver.page("/console/approvals").await;
    let mine = article(&html, &id);
    assert!(
        mine.contains(r#"<progress value="1" max="2""#) && mine.contains("first pair"),
        "{mine}"
    );
    assert!(
        mine.contains("You approved this already") && !mine.contains(r#"value="approve""#),
        "{mine}"
    );
    // The same approver posting again is refused by the API's rule, and nothing changes.
    let response = approver.post(&decide, &form).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);

    let admin = signed_in(app, &app.admin).await;
    let (_, html) = admin.page("/console/approvals").await;
    assert!(article(&html, &id).contains(r#"value="approve""#));
    let response = admin
        .post(&decide, &[("csrf", &csrf_of(&html)), ("decision", "approve")])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let request = app.read(&format!("/v1/share-requests/{id}")).await;
    assert_eq!(request["status"], "approved");
    assert_eq!(request["approval"]["approvals"].as_array().unwrap().len(), 2);
    let (_, html) = approver.page("/console/approvals").await;
    assert!(
        !html.contains(&format!("<code>{id}</code>")),
        "a decided request leaves the inbox"
    );
}
