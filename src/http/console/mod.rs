//! The browser console at `/console`: sign-in, the approvals inbox, Shared with me, Shared
//! by me (with the new-request form and revokes that show their impact), one request's and
//! one share's page, and the auditors' pages (timeline, exports, an image's access picture,
//! the chain's state). Served by the broker itself; its pages are HTML (not in the OpenAPI
//! document). Every action calls the API's own handler with the [`Caller`] the API would
//! have built from the same person's credential, so the console can show and do no more
//! than the API allows them. Forms are plain HTML (keyboard-friendly, no script needed);
//! each carries the session's CSRF token and each POST checks it first.
//!
//! [`Caller`]: crate::http::extract::Caller

mod access_picture;
mod audit;
mod audit_access;
mod audit_chain;
mod fields;
mod inbox;
mod new_request;
mod owner;
mod pages;
mod revoke;
mod session;
mod sign_in;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::AppState;
use super::pagination::{Cursor, Paging};
use crate::domain::Capability;
use session::SignedIn;

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
        .route("/console/sign-in", get(sign_in::page).post(sign_in::sign_in))
        .route("/console/sign-out", post(sign_in::sign_out))
        .route("/console/approvals", get(inbox::approvals))
        .route("/console/requests/{id}/decide", post(inbox::decide_request))
        .route("/console/shared-with-me", get(inbox::shared_with_me))
        .route("/console/shares/{id}", get(inbox::share))
        .route("/console/shares/{id}/respond", post(inbox::respond_to_share))
        .route("/console/shared-by-me", get(owner::shared_by_me))
        .route("/console/audit", get(audit::timeline))
        .route("/console/audit/export", get(audit::export))
        .route("/console/audit/images/{image_id}", get(audit_access::page))
        .route("/console/audit/chain", get(audit_chain::page))
        .route("/console/audit/chain/verify", post(audit_chain::verify))
        .route(
            "/console/requests/new",
            get(new_request::new_request).post(new_request::submit),
        )
        .route("/console/requests/{id}", get(owner::request_page))
        .route(
            "/console/requests/{id}/cancel",
            get(owner::confirm_cancel).post(owner::cancel),
        )
        .route(
            "/console/shares/{id}/revoke",
            get(revoke::confirm_revoke).post(revoke::revoke),
        )
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

/// Why the console refused a form or a link before doing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The body is not a form the page sent.
    BadForm,
    /// The form lacks this session's CSRF token.
    Forged,
    /// A list's cursor is not one the console made.
    BadLink,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::BadForm => pages::message_page(StatusCode::BAD_REQUEST, "Bad form", "The form could not be read."),
            Refused::Forged => pages::message_page(
                StatusCode::FORBIDDEN,
                "Form refused",
                "This form did not come from your console session (its security token is missing or wrong). \
                 Reload the page and try again.",
            ),
            Refused::BadLink => {
                pages::message_page(StatusCode::BAD_REQUEST, "Bad link", "This page link is not valid.")
            }
        }
    }
}

/// A form body.
fn form<T: DeserializeOwned>(body: &Bytes) -> Result<T, Refused> {
    serde_urlencoded::from_bytes(body).map_err(|_| Refused::BadForm)
}

/// A form posted by a signed-in person: refused (403 page, nothing done) unless it carries
/// the session's CSRF token.
fn checked<T: DeserializeOwned>(s: &SignedIn, body: &Bytes) -> Result<T, Refused> {
    #[derive(Deserialize)]
    struct Token {
        csrf: Option<String>,
    }
    let Token { csrf } = serde_urlencoded::from_bytes(body).unwrap_or(Token { csrf: None });
    if !csrf.is_some_and(|given| session::same_token(&given, &s.csrf)) {
        return Err(Refused::Forged);
    }
    form(body)
}

/// A page's query string as `T`: a link the console did not make is refused.
fn query<T: DeserializeOwned>(raw: &Option<String>) -> Result<T, Refused> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).map_err(|_| Refused::BadLink)
}

/// A list page's cursor, from the console's query string (less the notice).
fn paging(query: &Option<String>) -> Result<Paging<Cursor>, Refused> {
    let query = query.as_deref().filter(|q| !q.starts_with("done=")).unwrap_or("");
    serde_urlencoded::from_str(query).map_err(|_| Refused::BadLink)
}

/// A short notice after an action, chosen from fixed texts (never echoed from the URL).
fn notice(query: &Option<String>) -> Option<&'static str> {
    let done = query.as_deref()?.strip_prefix("done=")?;
    Some(match done {
        "approve" => "Approved.",
        "deny" => "Denied.",
        "accept" => "Accepted: the worker completes it in Glance shortly.",
        "reject" => "Rejected.",
        "cancel" => "Cancelled.",
        "revoke" => "Revoke asked: the worker removes the member in Glance shortly.",
        "schedule" => "Revoke scheduled: the project keeps access until then, and is told.",
        "filed" => "Filed: the worker validates it against Keystone and Glance, then approvers decide.",
        "verify" => "Checked: what the check found is the last check below.",
        _ => return None,
    })
}
