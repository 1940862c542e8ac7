//! The console in a real browser (headless Debian Chromium over WebDriver), keyboard only:
//! alice files a request through the new-request form (her image chosen, bob's project found
//! by name and ticked, checked by the dry run, filed); dave, the approver, signs in and
//! approves it from the inbox; bob signs in and accepts the share, then starts a server from
//! the image on the real Nova; alice follows Revoke… from her request, sees bob's server on
//! the confirmation page and forces the revoke; an auditor signs in with an API key and
//! finds each step in the image's audit timeline. Each page visited is checked with axe-core
//! and saved under docs/screenshots/.

use std::sync::Mutex;

use serde_json::Value;

use crate::compute::Made;
use crate::helpers::spawn_app_with_keystone;
use crate::impact::{revoke_details, with_cleanup};
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

async fn sign_out(browser: &Browser) {
    browser.tab_to("text", "Sign out").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("/console/sign-in").await;
}

/// Saves the page as docs/screenshots/<name>.png and fails on any serious accessibility
/// violation in it.
async fn shoot(browser: &Browser, name: &str) {
    browser.screenshot(name).await;
    browser.assert_accessible(name).await;
}

#[tokio::test]
async fn alice_files_by_form_dave_approves_bob_accepts_alice_sees_the_impact_and_an_auditor_finds_it_all_by_keyboard() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let worker = Worker::new(app.pool.clone(), broker_cloud(), worker_config());
    let image = rig.private_image("console-browser").await;
    let proj_b = env("PROJ_B_ID");
    let browser = Browser::start().await;
    let base = app.url("");

    // alice files the request through the form: her image, bob's project found by name.
    sign_in(&browser, &base, "alice", "proj-a", Some("sign-in")).await;
    browser
        .goto(&format!("{base}/console/requests/new?image_id={image}"))
        .await;
    browser.tab_to("id", "search").await;
    browser.keys("proj-b").await;
    browser.tab_to("text", "Search").await;
    browser.keys(ENTER).await;
    browser.wait_for_text(&format!(r#"id="target-{proj_b}""#)).await;
    browser.tab_to("id", &format!("target-{proj_b}")).await;
    browser.keys(" ").await;
    browser.tab_to("id", "reason").await;
    browser.keys("bob's CI runners need it").await;
    shoot(&browser, "new-request").await;
    browser.tab_to("text", "Check").await;
    browser.keys(ENTER).await;
    browser.wait_for_text("would pass validation").await;
    assert_eq!(app.request_count().await, 0, "a check files nothing");
    shoot(&browser, "new-request-checked").await;
    browser.tab_to("text", "File request").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("done=filed").await;
    shoot(&browser, "request-filed").await;
    let url = browser.url().await;
    let id = url
        .split("/console/requests/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let filed = app.validated(&id, Some(&worker)).await;
    assert_eq!(filed["validation"]["state"], "passed", "{filed}");
    assert_eq!(filed["reason"], "bob's CI runners need it");
    assert_eq!(filed["shares"][0]["project_id"], proj_b.as_str());
    let share = filed["shares"][0]["id"].as_str().unwrap().to_owned();
    sign_out(&browser).await;

    // dave approves it from the inbox, with a comment.
    sign_in(&browser, &base, "dave", "proj-d", None).await;
    browser.wait_for_url("/console/approvals").await;
    let inbox = browser.source().await;
    assert!(
        inbox.contains(&id) && inbox.contains("bob's CI runners need it"),
        "{inbox}"
    );
    shoot(&browser, "approvals").await;
    browser.tab_to("id", &format!("comment-{id}")).await;
    browser.keys("fine for CI").await;
    browser.tab_to("value", "approve").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("done=approve").await;
    assert!(browser.source().await.contains("Approved."));
    shoot(&browser, "approved").await;
    let request = app.read(&format!("/v1/share-requests/{id}")).await;
    assert_eq!(request["status"], "approved");
    assert_eq!(request["approval"]["approvals"][0]["comment"], "fine for CI");
    assert_eq!(request["decided_by"], format!("keystone:{}", env("DAVE_USER_ID")));
    sign_out(&browser).await;

    // bob accepts the share.
    until_share_state(&worker, &app.pool, &share, "pending_acceptance").await;
    sign_in(&browser, &base, "bob", "proj-b", None).await;
    browser.wait_for_url("/console/shared-with-me").await;
    assert!(browser.source().await.contains(&share));
    shoot(&browser, "shared-with-me").await;
    browser.tab_to("value", "accept").await;
    browser.keys(ENTER).await;
    browser.wait_for_url("done=accept").await;
    shoot(&browser, "accepted").await;
    sign_out(&browser).await;
    until_share_state(&worker, &app.pool, &share, "accepted").await;
    let seen: Value = app
        .get_as(&rig.token("bob").await, &format!("/v1/shares/{share}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["state"], "accepted");

    // bob starts a server from the image on the real Nova; alice goes to revoke the share,
    // sees the server on the confirmation page, and revokes anyway.
    let made = Mutex::new(Made::default());
    with_cleanup(&rig, &made, async {
        let mut m = Made::default();
        let server = rig.boot(&mut m, "console-browser-server", Some(&image), None).await;
        *made.lock().unwrap() = m;

        sign_in(&browser, &base, "alice", "proj-a", None).await;
        // Shared by me lists the image (on some page: other tests add images to proj-a)
        // with the request and its accepted share.
        browser.goto(&format!("{base}/console/shared-by-me")).await;
        for _ in 0..20 {
            let page = browser.source().await;
            if page.contains(&format!(r#"id="i-{image}""#)) {
                break;
            }
            let next = page
                .split(r#"<a href="/console/shared-by-me?project="#)
                .nth(1)
                .expect("our image on some page");
            let next = next[..next.find('"').unwrap()].replace("&amp;", "&");
            browser
                .goto(&format!("{base}/console/shared-by-me?project={next}"))
                .await;
        }
        browser
            .execute(&format!(
                "document.getElementById('i-{image}').scrollIntoView(); return true;"
            ))
            .await;
        let listed = browser.source().await;
        let article = listed.split(&format!(r#"id="i-{image}""#)).nth(1).unwrap();
        let article = &article[..article.find("</article>").unwrap()];
        assert!(article.contains(&id) && article.contains("accepted"), "{article}");
        shoot(&browser, "shared-by-me").await;
        browser.goto(&format!("{base}/console/requests/{id}")).await;
        browser.tab_to("text", "Revoke…").await;
        browser.keys(ENTER).await;
        browser.wait_for_url(&format!("/console/shares/{share}/revoke")).await;
        let page = browser.source().await;
        assert!(
            page.contains(&server)
                && page.contains("console-browser-server")
                && page.contains("Server booted from the image"),
            "the impact names bob's server: {page}"
        );
        browser.tab_to("id", "reason").await;
        browser.keys("the CI moved to another image").await;
        browser.tab_to("id", "force").await;
        browser.keys(" ").await;
        shoot(&browser, "revoke-impact").await;
        browser.tab_to("text", "Revoke the share").await;
        browser.keys(ENTER).await;
        browser.wait_for_url("done=revoke").await;
        until_share_state(&worker, &app.pool, &share, "revoked").await;
        let seen: Value = app.read(&format!("/v1/shares/{share}")).await;
        assert_eq!(seen["revoke_reason"], "the CI moved to another image");
        let details = revoke_details(&app.pool, &share, "pending").await;
        assert_eq!(details["forced"], true, "{details}");
        assert!(details["dependents"].to_string().contains(&server), "{details}");
        sign_out(&browser).await;
    })
    .await;

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
    shoot(&browser, "audit").await;
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
