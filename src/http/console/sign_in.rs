//! Signing in (Keystone user, password and project, or an API key) and out. The sign-in
//! form has its own CSRF token (a cookie and a hidden field that must match, since there is
//! no session yet); a wrong credential is a 401 page and no session; the password goes to
//! Keystone only and is never logged or stored.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::session::{self, Kind, SignedIn};
use super::{checked, form, pages};
use crate::http::AppState;

#[derive(Deserialize)]
struct SignInQuery {
    expired: Option<String>,
}

pub async fn page(RawQuery(query): RawQuery) -> Response {
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

pub async fn sign_in(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: SignInForm = match form(&body) {
        Ok(f) => f,
        Err(bad) => return bad.into_response(),
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
        .principal(issued.token.expose_secret(), "req-console-sign-in")
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
    let principal = crate::db::api_keys::authenticate(&state.pool, key.expose_secret().trim())
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

pub async fn sign_out(State(state): State<AppState>, s: Result<SignedIn, Response>, body: Bytes) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    if let Err(refused) = checked::<CsrfOnly>(&s, &body) {
        return refused.into_response();
    }
    if let Err(e) = crate::db::console_sessions::delete(&state.pool, &s.id_hash).await {
        return pages::error_page(e.into());
    }
    session::to_sign_in(false)
}
