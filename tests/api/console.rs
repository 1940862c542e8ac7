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
    hidden_of(html, "csrf")
}

/// The value of the page's hidden field `name`.
pub fn hidden_of(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("the page has a form with {name}: {html}"));
    let rest = &html[at + marker.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Every field of the page (input, textarea, select) has a `<label for=…>`.
fn assert_labelled(path: &str, html: &str) {
    for tag in ["<input", "<textarea", "<select"] {
        for rest in html.split(tag).skip(1) {
            let element = &rest[..rest.find('>').unwrap()];
            if element.contains(r#"type="hidden""#) {
                continue;
            }
            let id = element
                .split(r#"id=""#)
                .nth(1)
                .unwrap_or_else(|| panic!("{path}: a field without an id: {tag}{element}"));
            let id = &id[..id.find('"').unwrap()];
            assert!(
                html.contains(&format!(r#"<label for="{id}">"#)),
                "{path}: no label for {id}"
            );
        }
    }
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
        assert_labelled(path, &html);
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

    let carol = keystone_visitor(&app, "carol", "proj-c").await;
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
    let html = response.text().await.unwrap();
    assert!(
        html.contains(r#"<p class="field-error" id="reason-error">is required"#)
            && html.contains(r#"aria-describedby="reason-error""#),
        "{html}"
    );
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

/// A visitor signed in through the form as a seeded Keystone user of `project`.
async fn keystone_visitor(app: &TestApp, user: &str, project: &str) -> Visitor {
    let mut visitor = Visitor::new(app);
    let password = env(&format!("{}_PASSWORD", user.to_uppercase()));
    let response = visitor
        .sign_in(&[
            ("method", "keystone"),
            ("user", user),
            ("password", &password),
            ("project", project),
        ])
        .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "{user} signs in");
    visitor
}

/// Rows of `table` (what a dry run must not write).
async fn rows(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(&format!("select count(*) from {table}"))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The new-request form of `visitor`, its fields filled with `fields` and its own CSRF
/// token and Idempotency-Key, posted with `action`.
async fn post_request_form(
    visitor: &Visitor,
    form: &str,
    fields: &[(&str, &str)],
    action: &str,
) -> (StatusCode, String, Option<String>) {
    let mut posted = vec![
        ("csrf", csrf_of(form)),
        ("key", hidden_of(form, "key")),
        ("action", action.to_owned()),
    ];
    posted.extend(fields.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let posted: Vec<(&str, &str)> = posted.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = visitor.post("/console/requests/new", &posted).await;
    let status = response.status();
    let to = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned());
    (status, response.text().await.unwrap(), to)
}

#[tokio::test]
async fn the_new_request_form_finds_projects_by_name_checks_storing_nothing_and_files_once_when_posted_twice() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("console-form").await;
    let alice = keystone_visitor(&app, "alice", "proj-a").await;
    let (status, form) = alice.page(&format!("/console/requests/new?image_id={image}")).await;
    assert_eq!(status, StatusCode::OK, "{form}");
    assert!(
        form.contains(&format!(r#"<option value="{image}" selected>"#)),
        "{form}"
    );
    assert_labelled("/console/requests/new", &form);
    let proj_b = env("PROJ_B_ID");
    let target = format!("{proj_b} proj-b");
    let filled = [
        ("image_id", image.as_str()),
        ("reason", "CI runners of proj-b"),
        ("search", "proj-b"),
    ];

    // Search: proj-b offered to tick, every value kept.
    let tables = ["share_requests", "shares", "jobs", "idempotency_keys", "audit_events"];
    let mut before = Vec::new();
    for table in tables {
        before.push(rows(&app, table).await);
    }
    let (status, html, _) = post_request_form(&alice, &form, &filled, "search").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(&format!(r#"name="target" value="{target}">"#))
            && html.contains(&format!(r#"<label for="target-{proj_b}">proj-b</label>"#))
            && html.contains(">CI runners of proj-b</textarea>")
            && html.contains(&format!(r#"<option value="{image}" selected>"#)),
        "{html}"
    );

    // Check: the API's dry run, shown on the form; nothing stored anywhere.
    let chosen = [filled.as_slice(), &[("target", target.as_str())]].concat();
    let (status, html, _) = post_request_form(&alice, &form, &chosen, "check").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Check: the request would pass validation")
            && html.contains(&format!("<td><code>{proj_b}</code></td><td>proj-b</td>"))
            && html.contains(&format!(r#"name="target" value="{target}" checked>"#)),
        "{html}"
    );
    for (table, before) in tables.into_iter().zip(before) {
        assert_eq!(rows(&app, table).await, before, "a search or dry run wrote to {table}");
    }
    assert_eq!(app.request_count().await, 0);

    // File, twice at once (a double click): one request, both answers lead to it.
    let (first, second) = tokio::join!(
        post_request_form(&alice, &form, &chosen, "file"),
        post_request_form(&alice, &form, &chosen, "file"),
    );
    assert_eq!((first.0, second.0), (StatusCode::SEE_OTHER, StatusCode::SEE_OTHER));
    let to = first.2.unwrap();
    assert_eq!(second.2.as_deref(), Some(to.as_str()));
    assert!(
        to.starts_with("/console/requests/") && to.ends_with("?done=filed"),
        "{to}"
    );
    assert_eq!(app.request_count().await, 1);
    let (status, page) = alice.page(&to).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Filed:") && page.contains("CI runners of proj-b") && page.contains("pending_approval"),
        "{page}"
    );
    let id = to
        .trim_start_matches("/console/requests/")
        .trim_end_matches("?done=filed");
    let filed = app.read(&format!("/v1/share-requests/{id}")).await;
    assert_eq!(filed["shares"][0]["target"], proj_b.as_str());
    assert_eq!(filed["requested_by"], format!("keystone:{}", env("ALICE_USER_ID")));
}

#[tokio::test]
async fn bad_input_on_the_new_request_form_is_shown_beside_each_field_and_files_nothing() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("console-bad-form").await;
    let alice = keystone_visitor(&app, "alice", "proj-a").await;
    let (_, form) = alice.page("/console/requests/new").await;
    let target = format!("{} proj-b", env("PROJ_B_ID"));
    let beside = |html: &str, field: &str, text: &str| {
        assert!(
            html.contains(&format!(r#"<p class="field-error" id="{field}-error">"#))
                && html.contains(&format!(r#"aria-describedby="{field}-error""#))
                && html.contains(&format!("href=\"#{field}\""))
                && html.contains(text),
            "{field}: {text}: {html}"
        );
    };

    // What the API refuses: no image, no target, no reason; each beside its field.
    let (status, html, _) = post_request_form(&alice, &form, &[("reason", " ")], "file").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    for field in ["image_id", "targets", "reason"] {
        beside(&html, field, "Nothing was filed or changed");
    }
    assert!(html.contains(r#"aria-invalid="true""#));

    // What the console reads itself: a time that is no time; then one in the past (the API's).
    let good = [
        ("image_id", image.as_str()),
        ("target", target.as_str()),
        ("reason", "CI"),
    ];
    for (at, says) in [("soon", "give a date and time"), ("2020-01-01T00:00", "future")] {
        let fields = [good.as_slice(), &[("expires_at", at)]].concat();
        let (status, html, _) = post_request_form(&alice, &form, &fields, "file").await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{at}");
        beside(&html, "expires_at", says);
        assert!(html.contains(&format!(r#"value="{at}""#)), "the value is kept: {html}");
    }
    // A search too short to run.
    let (status, html, _) = post_request_form(&alice, &form, &[("search", "pr")], "search").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    beside(&html, "search", "3 to 64 characters");
    // A project Keystone does not have: Check says so beside the targets, named as shown.
    let ghost = format!("{} ghost", uuid::Uuid::new_v4().simple());
    let fields = [
        ("image_id", image.as_str()),
        ("target", ghost.as_str()),
        ("reason", "CI"),
    ];
    let (status, html, _) = post_request_form(&alice, &form, &fields, "check").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("would not pass validation"), "{html}");
    beside(&html, "targets", "ghost: Keystone has no project with id");
    // An action the form does not have.
    let (status, _, _) = post_request_form(&alice, &form, &good, "approve").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.request_count().await, 0);
}

#[tokio::test]
async fn another_projects_image_by_url_or_form_and_a_forged_form_file_nothing() {
    let (app, rig) = (spawn_app_with_keystone().await, Rig::from_env());
    let image = rig.private_image("console-not-carols").await;
    let target = format!("{} proj-b", env("PROJ_B_ID"));
    let fields = [
        ("image_id", image.as_str()),
        ("target", target.as_str()),
        ("reason", "mine now"),
    ];

    let carol = keystone_visitor(&app, "carol", "proj-c").await;
    let (status, html) = carol.page(&format!("/console/requests/new?image_id={image}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        html.contains("not one your project owns") && html.contains("Nothing was changed"),
        "{html}"
    );
    let (_, form) = carol.page("/console/requests/new").await;
    assert!(!form.contains(&image));
    let (status, html, _) = post_request_form(&carol, &form, &fields, "file").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("is not owned by a project you act for") && html.contains("Nothing was changed"));
    // Nor are alice's project's images hers to list.
    let (status, html) = carol
        .page(&format!("/console/shared-by-me?project={}", env("PROJ_A_ID")))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(html.contains("requester of project"), "{html}");

    // alice's own form, posted without its token or with another session's.
    let alice = keystone_visitor(&app, "alice", "proj-a").await;
    let (_, own) = alice.page("/console/requests/new").await;
    let mut forged = vec![("key", hidden_of(&own, "key")), ("action", "file".to_owned())];
    forged.extend(fields.iter().map(|(k, v)| (*k, (*v).to_owned())));
    for csrf in [None, Some(csrf_of(&form))] {
        let mut posted: Vec<(&str, &str)> = forged.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if let Some(csrf) = &csrf {
            posted.push(("csrf", csrf));
        }
        let response = alice.post("/console/requests/new", &posted).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.text().await.unwrap().contains("Form refused"));
    }
    assert_eq!(app.request_count().await, 0);
}

#[tokio::test]
async fn revoke_lists_what_could_not_be_checked_and_offers_force_only_to_who_may_force() {
    // No OpenStack cloud: Nova, Cinder and Glance cannot be asked, as the API reports.
    let app = spawn_app().await;
    let (_, share, _) = crate::matrix::fixture(&app).await;
    let (_, other, _) = crate::matrix::fixture(&app).await;
    let path = format!("/console/shares/{share}/revoke");
    let mut portal = Visitor::new(&app);
    portal.sign_in_with_key(&app.requester).await;
    let (status, page) = portal.page(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Could not be checked")
            && page.contains("compute (Nova: servers)")
            && page.contains(r#"id="force""#),
        "{page}"
    );
    assert_labelled(&path, &page);
    let csrf = csrf_of(&page);
    let revoke = async |fields: &[(&str, &str)]| {
        let mut posted = vec![("csrf", csrf.as_str())];
        posted.extend_from_slice(fields);
        let response = portal.post(&path, &posted).await;
        (response.status(), response.text().await.unwrap())
    };

    // Without force, the API's 503: the page again with its answer, the reason kept.
    let (status, html) = revoke(&[("reason", "moved on")]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        html.contains("Not revoked: what depends on the image") && html.contains(">moved on</textarea>"),
        "{html}"
    );
    // A time that is no time; a schedule with force (the API's rule).
    let (status, html) = revoke(&[("reason", "x"), ("effective_at", "later")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(html.contains(r#"id="effective_at-error""#), "{html}");
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string();
    let (status, html) = revoke(&[("reason", "x"), ("effective_at", &tomorrow), ("force", "on")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains(r#"id="force-error""#) && html.contains(r#"aria-describedby="force-error""#),
        "{html}"
    );
    // A forged form.
    let response = portal
        .post(&path, &[("csrf", "forged"), ("reason", "x"), ("force", "on")])
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.share_state(&share.to_string()).await, "pending_acceptance");

    // Scheduled: the share keeps access until then.
    let (status, _) = revoke(&[("reason", "moving on"), ("effective_at", &tomorrow)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(app.share_state(&share.to_string()).await, "revocation_scheduled");
    // Forced, on the other share: revoked now.
    let other_path = format!("/console/shares/{other}/revoke");
    let response = portal
        .post(&other_path, &[("csrf", &csrf), ("reason", "now"), ("force", "on")])
        .await;
    assert_eq!(location(&response), "/console/shared-by-me?done=revoke");
    assert_eq!(app.share_state(&other.to_string()).await, "revoking");

    // An approver sees the share but may neither revoke nor force: no force is offered, and
    // the API refuses the revoke.
    let third = crate::matrix::fixture(&app).await.1;
    let mut approver = Visitor::new(&app);
    approver.sign_in_with_key(&app.approver).await;
    let third_path = format!("/console/shares/{third}/revoke");
    let (status, page) = approver.page(&third_path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !page.contains(r#"id="force""#) && page.contains("Only a requester of the image's project"),
        "{page}"
    );
    let response = approver
        .post(
            &third_path,
            &[("csrf", &csrf_of(&page)), ("reason", "x"), ("force", "on")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.share_state(&third.to_string()).await, "pending_acceptance");
    // Nor may an approver file: the form is the API's 403.
    let (status, page) = approver.page("/console/requests/new").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(page.contains("needs the requester role"), "{page}");
}

#[tokio::test]
async fn revoke_says_nothing_depends_on_an_unused_image_and_then_offers_no_force() {
    let (app, worker, rig) = crate::impact::broker().await;
    let image = rig.active_image("console-unused").await;
    let share = crate::impact::accepted_share(&app, &worker, &image, None).await;
    let alice = keystone_visitor(&app, "alice", "proj-a").await;
    let path = format!("/console/shares/{share}/revoke");
    let (status, page) = alice.page(&path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Nothing in proj-b depends on the image") && !page.contains(r#"id="force""#),
        "{page}"
    );
    let response = alice
        .post(&path, &[("csrf", &csrf_of(&page)), ("reason", "unused")])
        .await;
    assert_eq!(location(&response), "/console/shared-by-me?done=revoke");
    assert_eq!(app.share_state(&share).await, "revoking");
}
