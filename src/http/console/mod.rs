//! The browser console at `/console`: sign-in, the approvals inbox, Shared with me, and
//! one share's page. Served by the broker itself; its pages are HTML (not in the OpenAPI
//! document). Every action calls the API's own handler with the [`Caller`] the API would
//! have built from the same person's credential, so the console can show and do no more
//! than the API allows them. Forms are plain HTML (keyboard-friendly, no script needed);
//! each carries the session's CSRF token and each POST checks it first.
//!
//! [`Caller`]: crate::http::extract::Caller

mod pages;
mod session;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::extract::{Id, IdempotencyKey, IfMatch, Json, Listing, OptionalJson};
use super::pagination::{Cursor, Paging};
use super::share_requests::{self, decide};
use super::{ApiError, AppState, shares};
use crate::domain::filters::{RequestFilter, ShareFilter};
use crate::domain::{Capability, RequestStatus};
use session::{Kind, SignedIn};

/// The console's Content-Security-Policy: its own stylesheet and nothing else; no script
/// at all, no inline style, no framing, forms post only to the broker.
pub const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("../../../assets/console.css");

/// The console's routes, each answer carrying the security headers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/", get(home))
        .route("/console/assets/console.css", get(stylesheet))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/approvals", get(approvals))
        .route("/console/requests/{id}/decide", post(decide_request))
        .route("/console/shared-with-me", get(shared_with_me))
        .route("/console/shares/{id}", get(share))
        .route("/console/shares/{id}/respond", post(respond_to_share))
        .layer(axum::middleware::map_response(security_headers))
}

/// Marks a console answer: its error pages are HTML for people, not problem+json.
#[derive(Debug, Clone, Copy)]
pub struct OwnPage;

async fn security_headers(mut response: Response) -> Response {
    response.extensions_mut().insert(OwnPage);
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLESHEET).into_response()
}

async fn home(session: Result<SignedIn, Response>) -> Response {
    match session {
        Ok(s) if s.caller.principal.may_somewhere(Capability::Approve) => {
            Redirect::to("/console/approvals").into_response()
        }
        Ok(_) => Redirect::to("/console/shared-with-me").into_response(),
        Err(to_sign_in) => to_sign_in,
    }
}

/// A form body; a malformed one is a 400 page.
fn form<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_urlencoded::from_bytes(body)
        .map_err(|_| pages::message_page(StatusCode::BAD_REQUEST, "Bad form", "The form could not be read."))
}

/// A form posted by a signed-in person: refused (403 page, nothing done) unless it carries
/// the session's CSRF token.
fn checked<T: DeserializeOwned>(s: &SignedIn, body: &Bytes) -> Result<T, Response> {
    #[derive(Deserialize)]
    struct Token {
        csrf: Option<String>,
    }
    let Token { csrf } = serde_urlencoded::from_bytes(body).unwrap_or(Token { csrf: None });
    if !csrf.is_some_and(|given| session::same_token(&given, &s.csrf)) {
        return Err(pages::message_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This form did not come from your console session (its security token is missing or wrong). \
             Reload the page and try again.",
        ));
    }
    form(body)
}

#[derive(Deserialize)]
struct SignInQuery {
    expired: Option<String>,
}

async fn sign_in_page(RawQuery(query): RawQuery) -> Response {
    let expired =
        serde_urlencoded::from_str::<SignInQuery>(query.as_deref().unwrap_or("")).is_ok_and(|q| q.expired.is_some());
    let message = expired.then_some("Your session has ended. Sign in again.");
    sign_in_form(StatusCode::OK, message)
}

/// The sign-in page with a fresh sign-in CSRF token (in a cookie and in the forms).
fn sign_in_form(status: StatusCode, message: Option<&str>) -> Response {
    let token = session::Secret::random().encoded();
    let mut response = pages::page(status, pages::sign_in(&token, message));
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(session::SIGN_IN_COOKIE, &token, "/console/sign-in", 3600),
    );
    response
}

#[derive(Deserialize)]
struct SignInForm {
    csrf: String,
    method: String,
    user: Option<String>,
    password: Option<SecretString>,
    project: Option<String>,
    domain: Option<String>,
    api_key: Option<SecretString>,
}

const WRONG: &str = "Signing in failed: the user name, password, project or domain is wrong, \
                     or the user has no role on that project.";

async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: SignInForm = match form(&body) {
        Ok(f) => f,
        Err(bad) => return bad,
    };
    let expected = session::cookie(&headers, session::SIGN_IN_COOKIE);
    if !expected.is_some_and(|e| session::same_token(&form.csrf, &e)) {
        return pages::message_page(
            StatusCode::FORBIDDEN,
            "Form refused",
            "This sign-in form did not come from this console. Reload the sign-in page and try again.",
        );
    }
    let begun = match form.method.as_str() {
        "keystone" => keystone_session(&state, &form).await,
        "api_key" => key_session(&state, &form).await,
        _ => Err(Some("Choose how to sign in.")),
    };
    match begun {
        Ok(secret) => {
            let mut response = Redirect::to("/console").into_response();
            let headers = response.headers_mut();
            let max_age = session::MAX_HOURS * 3600;
            headers.append(
                header::SET_COOKIE,
                session::set_cookie(session::COOKIE, &secret.encoded(), session::PATH, max_age),
            );
            headers.append(
                header::SET_COOKIE,
                session::set_cookie(session::SIGN_IN_COOKIE, "", "/console/sign-in", 0),
            );
            response
        }
        Err(Some(message)) => sign_in_form(StatusCode::UNAUTHORIZED, Some(message)),
        Err(None) => pages::message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot sign in now",
            "Keystone or the database did not answer; try again shortly.",
        ),
    }
}

/// A session for a Keystone token issued for the form's user and project. `Err(Some)` is
/// the person's mistake (shown on the form); `Err(None)` ours.
async fn keystone_session(state: &AppState, form: &SignInForm) -> Result<session::Secret, Option<&'static str>> {
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
    let (Some(user), Some(password), Some(project)) = (given(&form.user), form.password.as_ref(), given(&form.project))
    else {
        return Err(Some("Fill in the user name, password and project."));
    };
    let domain = given(&form.domain).unwrap_or_else(|| "Default".into());
    let cloud = state
        .cloud
        .as_ref()
        .ok_or(Some("This broker has no Keystone configured: sign in with an API key."))?;
    let issued = match cloud
        .sign_in(&user, password, &project, &domain, "req-console-sign-in")
        .await
    {
        Ok(Some(issued)) => issued,
        Ok(None) => return Err(Some(WRONG)),
        Err(e) => {
            tracing::warn!(error = %e, "console sign-in: Keystone did not answer");
            return Err(None);
        }
    };
    // The principal exactly as the API would build it from this token.
    let principal = state
        .tokens
        .principal(
            secrecy::ExposeSecret::expose_secret(&issued.token),
            "req-console-sign-in",
        )
        .await
        .map_err(|_| Some(WRONG))?;
    let expires_at = issued
        .expires_at
        .min(chrono::Utc::now() + chrono::Duration::hours(session::MAX_HOURS));
    session::begin(state, Kind::Keystone, &issued.token, &principal.name, expires_at)
        .await
        .map_err(|_| None)
}

async fn key_session(state: &AppState, form: &SignInForm) -> Result<session::Secret, Option<&'static str>> {
    let key = form.api_key.as_ref().ok_or(Some("Fill in the API key."))?;
    let principal = crate::db::api_keys::authenticate(&state.pool, secrecy::ExposeSecret::expose_secret(key).trim())
        .await
        .map_err(|_| None)?
        .ok_or(Some("Signing in failed: the API key is unknown or revoked."))?;
    let expires_at = chrono::Utc::now() + chrono::Duration::hours(session::MAX_HOURS);
    session::begin(state, Kind::ApiKey, key, &principal.name, expires_at)
        .await
        .map_err(|_| None)
}

#[derive(Deserialize)]
struct CsrfOnly {}

async fn sign_out(State(state): State<AppState>, s: Result<SignedIn, Response>, body: Bytes) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    if let Err(refused) = checked::<CsrfOnly>(&s, &body) {
        return refused;
    }
    if let Err(e) = crate::db::console_sessions::delete(&state.pool, &s.id_hash).await {
        return pages::error_page(e.into());
    }
    session::to_sign_in(false)
}

/// A list page's cursor, from the console's query string.
fn paging(query: Option<String>) -> Result<Paging<Cursor>, Response> {
    serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|_| pages::message_page(StatusCode::BAD_REQUEST, "Bad link", "This page link is not valid."))
}

/// A short notice after an action, chosen from fixed texts (never echoed from the URL).
fn notice(query: &Option<String>) -> Option<&'static str> {
    let done = query.as_deref()?.strip_prefix("done=")?;
    Some(match done {
        "approve" => "Approved.",
        "deny" => "Denied.",
        "accept" => "Accepted: the share is being completed.",
        "reject" => "Rejected.",
        _ => return None,
    })
}

async fn approvals(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    RawQuery(query): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let notice = notice(&query);
    let paging = match paging(query.filter(|q| !q.starts_with("done="))) {
        Ok(p) => p,
        Err(bad) => return bad,
    };
    let filter = RequestFilter {
        status: Some(RequestStatus::PendingApproval),
        ..Default::default()
    };
    match share_requests::list_share_requests(State(state), s.caller.clone(), Listing { filter, paging }).await {
        Ok(axum::Json(page)) => pages::page(
            StatusCode::OK,
            pages::approvals(&s, &page.items, page.next_cursor.as_deref(), notice),
        ),
        Err(e) => pages::error_page(e),
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    decision: String,
    comment: Option<String>,
}

async fn decide_request(State(state): State<AppState>, s: Result<SignedIn, Response>, id: Id, body: Bytes) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let form: DecisionForm = match checked(&s, &body) {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let comment = form.comment.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    let decision = OptionalJson(Json {
        value: decide::Decision { comment },
        document: serde_json::Value::Null,
    });
    let (state, caller, none, key) = (State(state), s.caller, IfMatch(None), IdempotencyKey(None));
    let answer = match form.decision.as_str() {
        "approve" => decide::approve_share_request(state, caller, id, none, key, decision).await,
        "deny" => decide::deny_share_request(state, caller, id, none, key, decision).await,
        _ => Err(ApiError::field("decision", "must be approve or deny")),
    };
    match answer {
        Ok(_) => Redirect::to(&format!("/console/approvals?done={}", form.decision)).into_response(),
        Err(e) => pages::error_page(e),
    }
}

async fn shared_with_me(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    RawQuery(query): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let notice = notice(&query);
    let paging = match paging(query.filter(|q| !q.starts_with("done="))) {
        Ok(p) => p,
        Err(bad) => return bad,
    };
    // The shares made to the projects this person consumes for (the API filters what they see).
    let consumer_projects = s.caller.principal.projects_for(Capability::Consume);
    let filter = ShareFilter::default();
    match shares::list_shares(State(state), s.caller.clone(), Listing { filter, paging }).await {
        Ok(axum::Json(page)) => {
            let items: Vec<_> = page
                .items
                .into_iter()
                .filter(|share| match (&consumer_projects, &share.project_id) {
                    (None, _) => true,
                    (Some(projects), Some(p)) => projects.contains(p),
                    (Some(_), None) => false,
                })
                .collect();
            pages::page(
                StatusCode::OK,
                pages::shared_with_me(&s, &items, page.next_cursor.as_deref(), notice),
            )
        }
        Err(e) => pages::error_page(e),
    }
}

async fn share(State(state): State<AppState>, s: Result<SignedIn, Response>, id: Id) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let answer = match shares::get_share(State(state), s.caller.clone(), id).await {
        Ok(answer) => answer,
        Err(e) => return pages::error_page(e),
    };
    let body = match axum::body::to_bytes(answer.into_body(), super::BODY_LIMIT_BYTES).await {
        Ok(body) => body,
        Err(e) => return pages::error_page(ApiError::Internal(anyhow::anyhow!("reading a share: {e}"))),
    };
    let share: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    pages::page(StatusCode::OK, pages::share(&s, &share))
}

async fn respond_to_share(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    id: Id,
    body: Bytes,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let form: DecisionForm = match checked(&s, &body) {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let (state, caller, none, key) = (State(state), s.caller, IfMatch(None), IdempotencyKey(None));
    let answer = match form.decision.as_str() {
        "accept" => shares::accept_share(state, caller, id, none, key).await,
        "reject" => shares::reject_share(state, caller, id, none, key).await,
        _ => Err(ApiError::field("decision", "must be accept or reject")),
    };
    match answer {
        Ok(_) => Redirect::to(&format!("/console/shared-with-me?done={}", form.decision)).into_response(),
        Err(e) => pages::error_page(e),
    }
}
