//! The approver's and the auditor's console in a real browser (headless Debian Chromium over
//! WebDriver), keyboard only, against the real Keystone and Glance: alice files a request;
//! dave reads the policy's verdict in his inbox and approves it with Tab and Enter; bob
//! accepts and alice revokes his share through the API, carol never answers hers; an auditor
//! signs in with an API key, finds the events in the timeline, opens the image's access
//! picture (a bar for bob's project with its approver and revoker, an open one for carol's),
//! asks who had access during and after, and checks the chain.
//! axe-core finds no serious or critical violation on any page; screenshots go to
//! docs/screenshots/ (access-picture, access-at, audit-chain, approvals-verdict).

use std::time::Duration;

use glance_share_broker::domain::policy::{Policy, SharedPolicy};
use glance_share_broker::worker::{Worker, WorkerConfig};
use serde_json::{Value, json};

use crate::console_audit::{at, pause};
use crate::helpers::{TestApp, spawn_app_with_keystone};
use crate::openstack::{Rig, broker_cloud, env, until_share_state, worker_config};
use crate::webdriver::{Browser, ENTER};

/// Signs in as a rig user, keyboard only.
async fn keystone_sign_in(browser: &Browser, base: &str, user: &str, project: &str) {
    browser.goto(&format!("{base}/console/sign-in")).await;
    let password = env(&format!("{}_PASSWORD", user.to_uppercase()));
    for (field, text) in [("user", user), ("password", &password), ("project", project)] {
        browser.tab_to("id", field).await;
        browser.keys(text).await;
    }
    browser.tab_to("text", "Sign in").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("/console/").await;
}

/// Presses the control whose visible text is `text`, and waits for a URL with `then`.
async fn press(browser: &Browser, text: &str, then: &str) {
    browser.tab_to("text", text).await;
    browser.keys(ENTER).await;
    browser.wait_for_url(then).await;
}

/// Types `moment` into the "who had access" field and submits it; the page it brings.
async fn ask_about(browser: &Browser, moment: &str) -> String {
    // Tab selects the field's text, so typing replaces the moment shown before.
    browser.tab_to("id", "at").await;
    browser.keys(moment).await;
    browser.keys(ENTER).await;
    for _ in 0..100 {
        let page = browser.source().await;
        if page.contains(&format!("value=\"{moment}\"")) {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page for {moment} never came");
}

async fn post_ok(app: &TestApp, token: &str, path: &str, body: Value) {
    let response = app.post_as(token, path, &body).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {:?}", response.text().await);
}

#[tokio::test]
async fn an_approver_decides_from_the_verdict_and_an_auditor_reads_the_access_picture_by_keyboard_alone() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let policy = "[[rules]]\nname = \"people-decide\"\ndecision = \"require_approval\"";
    let config = WorkerConfig {
        policy: SharedPolicy::new(Policy::parse("policy.toml", policy).unwrap()),
        ..worker_config()
    };
    let worker = Worker::new(app.pool.clone(), broker_cloud(), config);
    let image = rig.private_image("console-audit").await;
    let (alice, bob) = (rig.token("alice").await, rig.token("bob").await);
    let (proj_b, proj_c) = (env("PROJ_B_ID"), env("PROJ_C_ID"));
    let body = json!({"image_id": image, "targets": [proj_b, proj_c], "reason": "bob's and carol's builds need it"});
    let response = app.post_as(&alice, "/v1/share-requests", &body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let filed: Value = response.json().await.unwrap();
    let id = filed["id"].as_str().unwrap().to_owned();
    let share_to = |project: &str| {
        let shares = filed["shares"].as_array().unwrap();
        let share = shares.iter().find(|s| s["target"] == project).unwrap();
        share["id"].as_str().unwrap().to_owned()
    };
    let (share, carols) = (share_to(&proj_b), share_to(&proj_c));
    let validated = app.validated(&id, Some(&worker)).await;
    assert_eq!(validated["approval"]["verdict"], "require_approval", "{validated}");

    // dave decides from the verdict and the facts, keyboard only.
    let browser = Browser::start().await;
    let base = app.url("");
    keystone_sign_in(&browser, &base, "dave", "proj-d").await;
    browser.wait_for_url("/console/approvals").await;
    let inbox = browser.source().await;
    for text in [
        id.as_str(),
        "<strong>Needs 1 approval</strong> — rule <code>people-decide</code>",
        r#"<progress value="0" max="1""#,
        &format!("(<code>{proj_b}</code>) in domain"),
    ] {
        assert!(inbox.contains(text), "{text} missing: {inbox}");
    }
    browser.screenshot("approvals-verdict").await;
    browser.assert_accessible("approvals-verdict").await;
    browser.tab_to("id", &format!("comment-{id}")).await;
    browser.keys("the facts check out").await;
    browser.tab_to("value", "approve").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("done=approve").await;
    let request = app.read(&format!("/v1/share-requests/{id}")).await;
    assert_eq!(request["status"], "approved");
    assert_eq!(request["approval"]["approvals"][0]["comment"], "the facts check out");
    press(&browser, "Sign out", "/console/sign-in").await;

    // The shares' lives through the API: bob's granted, accepted, revoked by alice; carol's
    // granted and never answered.
    until_share_state(&worker, &app.pool, &share, "pending_acceptance").await;
    until_share_state(&worker, &app.pool, &carols, "pending_acceptance").await;
    post_ok(&app, &bob, &format!("/v1/shares/{share}/accept"), json!({})).await;
    until_share_state(&worker, &app.pool, &share, "accepted").await;
    let during = pause().await;
    let revoke = json!({"force": true, "reason": "bob moved to his own image"});
    post_ok(&app, &alice, &format!("/v1/shares/{share}/revoke"), revoke).await;
    until_share_state(&worker, &app.pool, &share, "revoked").await;
    let after = pause().await;

    // An auditor finds it all: the timeline, the picture, who had access when, the chain.
    browser.tab_to("id", "api_key").await;
    browser.keys(&app.auditor).await;
    press(&browser, "Sign in with the key", "/console/").await;
    press(&browser, "Audit", "/console/audit").await;
    browser.tab_to("id", "image_id").await;
    browser.keys(&image).await;
    browser.keys(ENTER).await;
    browser.wait_for_url("image_id=").await;
    let timeline = browser.source().await;
    for action in [
        "create",
        "update/validate",
        "update/approve",
        "allow",
        "accept",
        "revoke",
    ] {
        assert!(
            timeline.contains(&format!("<td>{action}</td>")),
            "{action} missing: {timeline}"
        );
    }
    browser.assert_accessible("audit timeline").await;

    press(
        &browser,
        &format!("The access picture of image {image}"),
        "/console/audit/images/",
    )
    .await;
    let picture = browser.source().await;
    let (dave, alice_id) = (env("DAVE_USER_ID"), env("ALICE_USER_ID"));
    let bar = picture
        .split(r#"<g class="span"><title>"#)
        .skip(1)
        .filter_map(|rest| rest.split("</title>").next())
        .find(|title| title.contains(&format!("({proj_b})")))
        .unwrap_or_else(|| panic!("no bar for bob's project: {picture}"));
    for text in [
        proj_b.as_str(),
        &format!("approved by keystone:{dave}"),
        "; accepted ",
        &format!("by keystone:{alice_id}: “bob moved to his own image”"),
    ] {
        assert!(bar.contains(text), "{text} missing from the bar's title: {bar}");
    }
    assert!(picture.contains(r#"class="seg accepted""#), "{picture}");
    assert_eq!(
        picture.matches(r#"<g class="span">"#).count(),
        2,
        "a bar for each project"
    );
    assert!(
        picture.contains("; still has access</title>"),
        "carol's bar is open: {picture}"
    );
    browser.screenshot("access-picture").await;
    browser.assert_accessible("access-picture").await;

    let then = ask_about(&browser, &at(during)).await;
    let listed = then
        .split("Projects with access at")
        .nth(1)
        .unwrap_or_else(|| panic!("nobody listed: {then}"));
    assert!(
        listed.contains(&proj_b)
            && listed.contains(&proj_c)
            && listed.contains("accepted")
            && listed.contains("pending")
            && listed.contains(&format!("keystone:{dave}")),
        "{listed}"
    );
    browser.screenshot("access-at").await;
    browser.assert_accessible("access-at").await;
    let later = ask_about(&browser, &at(after)).await;
    let listed = later
        .split("Projects with access at")
        .nth(1)
        .unwrap_or_else(|| panic!("{later}"));
    let listed = listed.split("</table>").next().unwrap();
    assert!(
        listed.contains(&proj_c) && !listed.contains(&proj_b),
        "only carol's project now: {listed}"
    );

    press(&browser, "Chain", "/console/audit/chain").await;
    press(&browser, "Check the chain", "done=verify").await;
    let chain = browser.source().await;
    assert!(
        chain.contains("<strong>Intact</strong>") && chain.contains("verify by auditor"),
        "{chain}"
    );
    let head = app.read("/v1/audit-chain").await;
    assert!(chain.contains(head["head"]["hash"].as_str().unwrap()), "{chain}");
    browser.screenshot("audit-chain").await;
    browser.assert_accessible("audit-chain").await;
    browser.quit().await;
}
