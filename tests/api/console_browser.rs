//! The console in a real browser (headless Debian Chromium over WebDriver), keyboard only:
//! a request filed through the API for alice's image; dave, the approver, signs in and
//! approves it from the inbox; bob signs in and accepts the share; the API shows it
//! accepted; alice revokes it from Shared by me after its confirmation page; an auditor
//! signs in with an API key and finds each step in the image's audit timeline. Each page
//! visited is saved under docs/screenshots/.

use serde_json::{Value, json};

use crate::helpers::spawn_app_with_keystone;
use crate::openstack::{Rig, broker_cloud, env, until_share_state, worker_config};
use crate::webdriver::{Browser, ENTER};
use glance_share_broker::worker::Worker;

/// Signs in through the form, keyboard only.
async fn sign_in(browser: &Browser, base: &str, user: &str, project: &str, shot: Option<&str>) {
    browser.goto(&format!("{base}/console/sign-in")).await;
    browser.tab_to("id", "user").await;
    browser.keys(user).await;
    browser.tab_to("id", "password").await;
    browser.keys(&env(&format!("{}_PASSWORD", user.to_uppercase()))).await;
    browser.tab_to("id", "project").await;
    browser.keys(project).await;
    if let Some(name) = shot {
        browser.screenshot(name).await;
        browser.assert_accessible(name).await;
    }
    browser.tab_to("text", "Sign in").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("/console/").await;
}

#[tokio::test]
async fn dave_approves_bob_accepts_alice_revokes_and_an_auditor_finds_it_all_by_keyboard_alone() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("console-browser").await;
    let (alice, bob) = (rig.token("alice").await, rig.token("bob").await);
    let body = json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "bob's CI runners need it"});
    let response = app.post_as(&alice, "/v1/share-requests", &body).send().await.unwrap();
    assert_eq!(response.status(), 201);
    let filed: Value = response.json().await.unwrap();
    let (id, share) = (
        filed["id"].as_str().unwrap(),
        filed["shares"][0]["id"].as_str().unwrap(),
    );
    let validated = app.validated(id, Some(&worker)).await;
    assert_eq!(validated["validation"]["state"], "passed", "{validated}");

    let browser = Browser::start().await;
    let base = app.url("");
    sign_in(&browser, &base, "dave", "proj-d", Some("sign-in")).await;
    browser.wait_for_url("/console/approvals").await;
    let inbox = browser.source().await;
    assert!(
        inbox.contains(id) && inbox.contains("bob's CI runners need it"),
        "{inbox}"
    );
    browser.screenshot("approvals").await;
    browser.assert_accessible("approvals").await;

    browser.tab_to("id", &format!("comment-{id}")).await;
    browser.keys("fine for CI").await;
    browser.tab_to("value", "approve").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("done=approve").await;
    assert!(browser.source().await.contains("Approved."));
    browser.screenshot("approved").await;
    browser.assert_accessible("approved").await;
    let request = app.read(&format!("/v1/share-requests/{id}")).await;
    assert_eq!(request["status"], "approved");
    assert_eq!(request["approval"]["approvals"][0]["comment"], "fine for CI");
    assert_eq!(request["decided_by"], format!("keystone:{}", env("DAVE_USER_ID")));

    browser.tab_to("text", "Sign out").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("/console/sign-in").await;

    until_share_state(&worker, &app.pool, share, "pending_acceptance").await;
    sign_in(&browser, &base, "bob", "proj-b", None).await;
    browser.wait_for_url("/console/shared-with-me").await;
    assert!(browser.source().await.contains(share));
    browser.screenshot("shared-with-me").await;
    browser.assert_accessible("shared-with-me").await;
    browser.tab_to("value", "accept").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("done=accept").await;
    browser.screenshot("accepted").await;
    browser.assert_accessible("accepted").await;
    browser.tab_to("text", "Sign out").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("/console/sign-in").await;

    until_share_state(&worker, &app.pool, share, "accepted").await;
    let seen: Value = app
        .get_as(&bob, &format!("/v1/shares/{share}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["state"], "accepted");

    // alice revokes it from Shared by me, through the confirmation page.
    sign_in(&browser, &base, "alice", "proj-a", None).await;
    browser.goto(&format!("{base}/console/shared-by-me")).await;
    browser.screenshot("shared-by-me").await;
    browser.assert_accessible("shared-by-me").await;
    browser.tab_to("text", "Revoke…").await;
    browser.keys(ENTER).await;
    browser.wait_for_url(&format!("/console/shares/{share}/revoke")).await;
    browser.tab_to("id", "reason").await;
    browser.keys("the CI moved to another image").await;
    browser.screenshot("revoke-confirm").await;
    browser.assert_accessible("revoke-confirm").await;
    browser.tab_to("text", "Revoke the share").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("done=revoke").await;
    until_share_state(&worker, &app.pool, share, "revoked").await;
    let seen: Value = app.read(&format!("/v1/shares/{share}")).await;
    assert_eq!(seen["revoke_reason"], "the CI moved to another image");
    browser.tab_to("text", "Sign out").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("/console/sign-in").await;

    // An auditor signs in with an API key and finds every step in the image's timeline.
    browser.tab_to("id", "api_key").await;
    browser.keys(&app.auditor).await;
    browser.tab_to("text", "Sign in with the key").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("/console/").await;
    browser.tab_to("text", "Audit").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("/console/audit").await;
    browser.tab_to("id", "image_id").await;
    browser.keys(&image).await;
    browser.keys(ENTER).await;
    browser.wait_for_url("image_id=").await;
    let timeline = browser.source().await;
    for action in ["create", "update/approve", "allow", "accept", "revoke"] {
        assert!(
            timeline.contains(&format!("<td>{action}</td>")),
            "{action} missing: {timeline}"
        );
    }
    browser.screenshot("audit").await;
    browser.assert_accessible("audit").await;
    // The check can fail: an unlabelled field added to the page is found.
    browser
        .execute(
            "document.querySelector('main').insertAdjacentHTML('beforeend', '<input type=\"text\">'); return true;",
        )
        .await;
    let found = browser.violations().await;
    assert!(found.iter().any(|v| v.contains("critical label")), "{found:?}");
    browser.quit().await;
}
