//! The browser console over plain HTTP: sign-in (Keystone and API keys), the session cookie,
//! CSRF on every form, the security headers, and that a refusal changes nothing. The real
//! browser's story is in console_browser.rs.

use glance_share_broker::db;
use glance_share_broker::domain::Role;
use glance_share_broker::startup::Application;
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;

use crate::helpers::{IMAGE, PROJ_B, TestApp, serve_args, spawn_app, spawn_app_with_keystone};
use crate::openstack::{Rig, env};

/// A console visitor: no redirects followed, cookies kept by hand.
pub struct Visitor {
    /// Where the broker is (another replica's address may be set).
    pub base: String,
    http: reqwest::Client,
    pub cookie: Option<String>,
}

/// The value of `name=` in a response's `Set-Cookie` headers, with the whole header.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response.headers().get_all("set-cookie").iter().find_map(|v| {
        let text = v.to_str().ok()?.to_owned();
        let value = text.strip_prefix(&format!("{name}="))?.split(';').next()?.to_owned();
        Some((value, text))
    })
}

/// The CSRF token a page's forms carry.
pub fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("the page has a form with a CSRF token");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

impl Visitor {
    pub fn new(app: &TestApp) -> Self {
        Visitor {
            base: app.url(""),
            http: reqwest::Client::builder().redirect(Policy::none()).build().unwrap(),
            cookie: None,
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", format!("gsb_console={cookie}"));
        }
        request.send().await.unwrap()
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", format!("gsb_console={cookie}"));
        }
        request.send().await.unwrap()
    }

    /// Posts the sign-in form with `fields` (plus the sign-in page's CSRF token).
    pub async fn sign_in(&mut self, fields: &[(&str, &str)]) -> reqwest::Response {
        let page = self.get("/console/sign-in").await;
        assert_eq!(page.status(), StatusCode::OK);
        let (token, _) = set_cookie(&page, "gsb_console_sign_in").expect("the sign-in page sets its CSRF cookie");
        let html = page.text().await.unwrap();
        let mut form = vec![("csrf", csrf_of(&html))];
        form.extend(fields.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let response = self
            .http
            .post(format!("{}/console/sign-in", self.base))
            .header("cookie", format!("gsb_console_sign_in={token}"))
            .form(&form)
            .send()
            .await
            .unwrap();
        if let Some((value, _)) = set_cookie(&response, "gsb_console").filter(|(v, _)| !v.is_empty()) {
            self.cookie = Some(value);
        }
        response
    }

    pub async fn sign_in_with_key(&mut self, key: &str) {
        let response = self.sign_in(&[("method", "api_key"), ("api_key", key)]).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{:?}", response.text().await);
    }

    /// GET `path`; its status and HTML.
    pub async fn page(&self, path: &str) -> (StatusCode, String) {
        let response = self.get(path).await;
        (response.status(), response.text().await.unwrap())
    }
}

async fn session_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("select count(*) from console_sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn request_status(app: &TestApp, id: &str) -> String {
    app.read(&format!("/v1/share-requests/{id}")).await["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn location(response: &reqwest::Response) -> &str {
    response.headers()["location"].to_str().unwrap()
}

#[tokio::test]
async fn a_wrong_password_gets_a_clear_page_and_no_session_while_the_right_one_signs_in() {
    let app = spawn_app_with_keystone().await;
    let mut visitor = Visitor::new(&app);
    let response = visitor
        .sign_in(&[
            ("method", "keystone"),
            ("user", "alice"),
            ("password", "not-her-password"),
            ("project", "proj-a"),
            ("domain", "Default"),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&response, "gsb_console").is_none());
    let html = response.text().await.unwrap();
    assert!(html.contains("Signing in failed"), "{html}");
    assert!(!html.contains("not-her-password"));
    assert_eq!(session_count(&app).await, 0);
    assert!(visitor.cookie.is_none());

    // An unknown API key is refused alike.
    let response = visitor
        .sign_in(&[("method", "api_key"), ("api_key", "gsb_nothing")])
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(session_count(&app).await, 0);

    let password = env("ALICE_PASSWORD");
    let response = visitor
        .sign_in(&[
            ("method", "keystone"),
            ("user", "alice"),
            ("password", &password),
            ("project", "proj-a"),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console");
    assert_eq!(session_count(&app).await, 1);
    let (status, html) = visitor.page("/console/shared-with-me").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Signed in as <strong>alice (proj-a)</strong>"), "{html}");
}

#[tokio::test]
async fn the_session_cookie_is_http_only_strict_and_the_database_holds_neither_it_nor_the_key() {
    let app = spawn_app().await;
    let mut visitor = Visitor::new(&app);
    let response = visitor
        .sign_in(&[("method", "api_key"), ("api_key", &app.approver)])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (cookie, header) = set_cookie(&response, "gsb_console").unwrap();
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/console"] {
        assert!(header.contains(flag), "{header} lacks {flag}");
    }
    let (id_hash, sealed, principal): (Vec<u8>, Vec<u8>, String) =
        sqlx::query_as("select id_hash, sealed_credential, principal from console_sessions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(principal, "workflow");
    let contains = |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);
    assert!(
        !contains(&sealed, app.approver.as_bytes()),
        "the key is stored in clear"
    );
    assert!(!contains(&id_hash, cookie.as_bytes()) && !contains(&sealed, cookie.as_bytes()));

    // Every page carries the policy; none has inline script or style.
    for path in ["/console/sign-in", "/console/approvals", "/console/shared-with-me"] {
        let response = visitor.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("default-src 'none'") && !csp.contains("unsafe"), "{csp}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        let html = response.text().await.unwrap();
        assert!(!html.contains("<script") && !html.contains("style="), "{path}: {html}");
        // Every field has a label.
        for id in html
            .split(r#"<input id=""#)
            .skip(1)
            .chain(html.split(r#"<textarea id=""#).skip(1))
        {
            let id = &id[..id.find('"').unwrap()];
            assert!(
                html.contains(&format!(r#"<label for="{id}">"#)),
                "{path}: no label for {id}"
            );
        }
    }
}

#[tokio::test]
async fn a_forged_or_missing_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let filed = app.file(IMAGE, &[PROJ_B]).await;
    let id = filed["id"].as_str().unwrap();
    let mut visitor = Visitor::new(&app);
    visitor.sign_in_with_key(&app.approver).await;
    let (_, html) = visitor.page("/console/approvals").await;
    let csrf = csrf_of(&html);
    let path = format!("/console/requests/{id}/decide");

    for form in [
        vec![("decision", "deny")],
        vec![("decision", "deny"), ("csrf", "forged")],
        vec![("decision", "deny"), ("csrf", "")],
    ] {
        let response = visitor.post(&path, &form).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{form:?}");
        assert!(response.text().await.unwrap().contains("Nothing was changed"));
        assert_eq!(request_status(&app, id).await, "pending_approval");
    }
    // Another session's token is no better.
    let mut other = Visitor::new(&app);
    other.sign_in_with_key(&app.admin).await;
    let (_, html) = other.page("/console/approvals").await;
    let response = visitor
        .post(&path, &[("decision", "deny"), ("csrf", &csrf_of(&html))])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Sign-out needs it too.
    assert_eq!(
        visitor.post("/console/sign-out", &[]).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(session_count(&app).await, 2);

    let response = visitor
        .post(
            &path,
            &[("decision", "deny"), ("csrf", &csrf), ("comment", "not this one")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/approvals?done=deny");
    let request = app.read(&format!("/v1/share-requests/{id}")).await;
    assert_eq!(request["status"], "denied");
    assert_eq!(request["decision_comment"], "not this one");
}

#[tokio::test]
async fn an_unknown_or_expired_session_is_sent_to_sign_in_and_changes_nothing() {
    let app = spawn_app().await;
    let filed = app.file(IMAGE, &[PROJ_B]).await;
    let id = filed["id"].as_str().unwrap();
    let mut visitor = Visitor::new(&app);

    let response = visitor.get("/console/approvals").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/sign-in");

    visitor.cookie = Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let response = visitor.get("/console/approvals").await;
    assert_eq!(location(&response), "/console/sign-in?expired=1");

    visitor.sign_in_with_key(&app.approver).await;
    let (_, html) = visitor.page("/console/approvals").await;
    let csrf = csrf_of(&html);
    sqlx::query("update console_sessions set expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    let response = visitor
        .post(
            &format!("/console/requests/{id}/decide"),
            &[("decision", "deny"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/sign-in?expired=1");
    assert_eq!(request_status(&app, id).await, "pending_approval");
    let (status, html) = visitor.page("/console/sign-in?expired=1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Your session has ended"));
}

#[tokio::test]
async fn a_revoked_key_ends_its_console_session() {
    let app = spawn_app().await;
    let (_, key) = db::api_keys::create(&app.pool, "short-lived", Role::Approver, &[])
        .await
        .unwrap();
    let mut visitor = Visitor::new(&app);
    visitor.sign_in_with_key(&key).await;
    assert_eq!(visitor.page("/console/approvals").await.0, StatusCode::OK);
    sqlx::query("update api_keys set revoked_at = now() where name = 'short-lived'")
        .execute(&app.pool)
        .await
        .unwrap();
    let response = visitor.get("/console/approvals").await;
    assert_eq!(location(&response), "/console/sign-in?expired=1");
    assert_eq!(session_count(&app).await, 0);
}

#[tokio::test]
async fn sign_out_ends_the_session_on_every_replica() {
    let app = spawn_app().await;
    let replica = Application::build(&serve_args(&app.database_url), None).await.unwrap();
    let replica_addr = replica.local_addr();
    tokio::spawn(replica.run_until(std::future::pending()));
    let mut visitor = Visitor::new(&app);
    visitor.sign_in_with_key(&app.approver).await;
    // The same cookie is good on another broker on the same database.
    let mut elsewhere = Visitor::new(&app);
    elsewhere.base = format!("http://{replica_addr}");
    elsewhere.cookie = visitor.cookie.clone();
    let (status, html) = elsewhere.page("/console/approvals").await;
    assert_eq!(status, StatusCode::OK);

    let response = elsewhere.post("/console/sign-out", &[("csrf", &csrf_of(&html))]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/sign-in");
    let (_, cleared) = set_cookie(&response, "gsb_console").unwrap();
    assert!(
        cleared.starts_with("gsb_console=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(session_count(&app).await, 0);
    let response = visitor.get("/console/approvals").await;
    assert_eq!(location(&response), "/console/sign-in?expired=1");
}

#[tokio::test]
async fn another_projects_share_by_url_is_a_404_page_and_changes_nothing() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("console-404").await;
    let alice = rig.token("alice").await;
    let body = serde_json::json!({"image_id": image, "targets": [env("PROJ_B_ID")], "reason": "bob's CI"});
    let response = app.post_as(&alice, "/v1/share-requests", &body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let filed: Value = response.json().await.unwrap();
    let share = filed["shares"][0]["id"].as_str().unwrap();
    let before = app.share_state(share).await;

    let mut carol = Visitor::new(&app);
    let password = env("CAROL_PASSWORD");
    let response = carol
        .sign_in(&[
            ("method", "keystone"),
            ("user", "carol"),
            ("password", &password),
            ("project", "proj-c"),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let (status, html) = carol.page(&format!("/console/shares/{share}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        html.contains("no share with that id") && html.contains("Nothing was changed"),
        "{html}"
    );
    let (_, html) = carol.page("/console/shared-with-me").await;
    assert!(!html.contains(share));
    let response = carol
        .post(
            &format!("/console/shares/{share}/respond"),
            &[("decision", "accept"), ("csrf", &csrf_of(&html))],
        )
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.share_state(share).await, before);
    // And its request cannot be decided from her console either.
    let id = filed["id"].as_str().unwrap();
    let response = carol
        .post(
            &format!("/console/requests/{id}/decide"),
            &[("decision", "deny"), ("csrf", &csrf_of(&html))],
        )
        .await;
    assert!(matches!(
        response.status(),
        StatusCode::NOT_FOUND | StatusCode::FORBIDDEN
    ));
    assert_eq!(request_status(&app, id).await, "pending_approval");
}

#[tokio::test]
async fn shared_by_me_cancels_and_revokes_only_after_a_confirmation_with_its_token() {
    let app = spawn_app().await;
    let filed = app.file(IMAGE, &[PROJ_B]).await;
    let (id, share) = (
        filed["id"].as_str().unwrap(),
        filed["shares"][0]["id"].as_str().unwrap(),
    );
    let mut visitor = Visitor::new(&app);
    visitor.sign_in_with_key(&app.requester).await;
    let (status, html) = visitor.page("/console/shared-by-me").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(id) && html.contains(&format!("/console/requests/{id}/cancel")),
        "{html}"
    );

    // Following the link only asks; nothing happens until the confirmation is posted.
    let (status, confirm) = visitor.page(&format!("/console/requests/{id}/cancel")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(confirm.contains("Cancel the request?") && confirm.contains("Keep it"));
    assert_eq!(request_status(&app, id).await, "pending_approval");
    let path = format!("/console/requests/{id}/cancel");
    assert_eq!(
        visitor.post(&path, &[("csrf", "forged")]).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(request_status(&app, id).await, "pending_approval");

    // A revoke needs a reason, as the API says; this share is not granted, so it is refused.
    let (status, confirm) = visitor.page(&format!("/console/shares/{share}/revoke")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(confirm.contains(r#"<label for="reason">"#));
    let revoke = format!("/console/shares/{share}/revoke");
    let response = visitor
        .post(&revoke, &[("csrf", &csrf_of(&confirm)), ("reason", " ")])
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await.unwrap().contains("reason: is required"));
    let response = visitor
        .post(&revoke, &[("csrf", &csrf_of(&confirm)), ("reason", "no longer needed")])
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(app.share_state(share).await, "awaiting_approval");

    let response = visitor.post(&path, &[("csrf", &csrf_of(&confirm))]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&response), "/console/shared-by-me?done=cancel");
    assert_eq!(request_status(&app, id).await, "cancelled");
    // An auditor may read the requests but not cancel them: the API's own rule refuses it.
    let other = app.file(IMAGE, &[PROJ_B]).await;
    let other = other["id"].as_str().unwrap();
    let mut auditor = Visitor::new(&app);
    auditor.sign_in_with_key(&app.auditor).await;
    let (_, html) = auditor.page("/console/shared-with-me").await;
    let response = auditor
        .post(
            &format!("/console/requests/{other}/cancel"),
            &[("csrf", &csrf_of(&html))],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(request_status(&app, other).await, "pending_approval");
}

#[tokio::test]
async fn the_audit_timeline_shows_auditors_a_requests_events_and_refuses_everyone_else() {
    let app = spawn_app().await;
    let filed = app.file(IMAGE, &[PROJ_B]).await;
    let id = filed["id"].as_str().unwrap();
    let other = app.file("0b6f2a3c-1d4e-4f5a-8b9c-0d1e2f3a4b5c", &[PROJ_B]).await;
    let mut approver = Visitor::new(&app);
    approver.sign_in_with_key(&app.approver).await;
    let (_, html) = approver.page("/console/approvals").await;
    let response = approver
        .post(
            &format!("/console/requests/{id}/decide"),
            &[
                ("decision", "deny"),
                ("csrf", &csrf_of(&html)),
                ("comment", "wrong image"),
            ],
        )
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);

    let mut auditor = Visitor::new(&app);
    auditor.sign_in_with_key(&app.auditor).await;
    let (status, html) = auditor.page(&format!("/console/audit?request_id={id}&action=")).await;
    assert_eq!(status, StatusCode::OK);
    for text in [
        "<td>create</td>",
        "<td>update/deny</td>",
        "<td>workflow</td>",
        "<td>portal</td>",
    ] {
        assert!(html.contains(text), "{text} missing: {html}");
    }
    assert!(!html.contains(other["id"].as_str().unwrap()));
    assert!(html.contains(r#"<label for="request_id">"#));
    let (status, _) = auditor.page("/console/audit?request_id=not-a-uuid").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The API's rule: the audit log is for auditors and admins.
    let (status, html) = approver.page("/console/audit").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("needs the auditor role"), "{html}");
    assert!(!html.contains(r#"href="/console/audit""#));
}
