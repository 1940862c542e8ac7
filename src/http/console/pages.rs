//! The console's HTML, rendered on the server with maud (every value escaped). No inline
//! script or style anywhere (the Content-Security-Policy forbids both); every form field has
//! a `<label>`; every form carries the session's CSRF token.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::session::SignedIn;
use crate::domain::{Capability, Credential, Principal};
use crate::http::ApiError;
use crate::http::shares::ShareView;

/// Who is signed in, as people read it: a user and project, or a key's name.
fn who(principal: &Principal) -> String {
    match &principal.credential {
        Credential::Keystone(id) => match &id.project_name {
            Some(project) => format!("{} ({project})", id.user_name),
            None => id.user_name.clone(),
        },
        Credential::ApiKey { role } => format!("API key {} ({})", principal.name, role.as_str()),
    }
}

/// A moment as people read it: `2026-12-02 16:08:22 UTC` (whole seconds).
pub fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A whole page: the navigation, who is signed in (with sign-out), and `body`.
pub fn layout(title: &str, session: Option<&SignedIn>, notice: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · glance-share-broker" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header {
                    p.brand { "glance-share-broker" }
                    @if let Some(s) = session {
                        nav aria-label="Console" {
                            ul {
                                li { a href="/console/approvals" { "Approvals" } }
                                li { a href="/console/shared-with-me" { "Shared with me" } }
                                li { a href="/console/shared-by-me" { "Shared by me" } }
                                @if s.caller.principal.may(Capability::Audit, None) {
                                    li { a href="/console/audit" { "Audit" } }
                                }
                            }
                        }
                        p.who { "Signed in as " strong { (who(&s.caller.principal)) } }
                        form method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    @if let Some(notice) = notice {
                        p.notice role="status" { (notice) }
                    }
                    (body)
                }
            }
        }
    }
}

/// An HTML answer with `status`.
pub fn page(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

/// A page saying what went wrong, with the status the API would have answered; nothing
/// was changed (the API's own rule for every refusal).
pub fn error_page(error: ApiError) -> Response {
    let (status, _) = error.status_and_slug();
    let detail = match &error {
        ApiError::Internal(e) => {
            tracing::error!(error = ?e, "console request failed");
            "The server failed to handle this request; it has been logged.".to_owned()
        }
        other => other.to_string(),
    };
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible now",
        _ => "Something went wrong",
    };
    let fields: Vec<String> = match &error {
        ApiError::Validation(errors) | ApiError::Conflict { errors, .. } => {
            errors.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect()
        }
        _ => Vec::new(),
    };
    let detail = std::iter::once(detail).chain(fields).collect::<Vec<_>>().join(" — ");
    message_page(status, title, &detail)
}

/// A page with one message and a way back.
pub fn message_page(status: StatusCode, title: &str, detail: &str) -> Response {
    page(
        status,
        layout(
            title,
            None,
            None,
            html! {
                p.problem { (detail) }
                p { "Nothing was changed." }
                p { a href="/console" { "Back to the console" } }
            },
        ),
    )
}

/// The sign-in page: Keystone (user, password, project, domain) or an API key.
pub fn sign_in(csrf: &str, message: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(message) = message {
            p.problem role="alert" { (message) }
        }
        form method="post" action="/console/sign-in" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="method" value="keystone";
            fieldset {
                legend { "With your OpenStack (Keystone) account" }
                label for="user" { "User name" }
                input id="user" name="user" type="text" autocomplete="username" required;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                label for="project" { "Project" }
                input id="project" name="project" type="text" required;
                label for="domain" { "Domain" }
                input id="domain" name="domain" type="text" value="Default" required;
                button type="submit" { "Sign in" }
            }
        }
        form method="post" action="/console/sign-in" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="method" value="api_key";
            fieldset {
                legend { "Or with an API key" }
                label for="api_key" { "API key" }
                input id="api_key" name="api_key" type="password" autocomplete="off" required;
                button type="submit" { "Sign in with the key" }
            }
        }
    };
    layout("Sign in", None, None, body)
}

/// A link to the next page of a list, when there is one.
pub fn more(path: &str, next: Option<&str>) -> Markup {
    html! {
        @if let Some(cursor) = next {
            p { a href={ (path) "?cursor=" (cursor) } { "Next page" } }
        }
    }
}

/// One share in a consumer's list, with accept/reject when it waits for them.
fn share_item(s: &SignedIn, share: &ShareView) -> Markup {
    html! {
        li.share {
            a href={ "/console/shares/" (share.id) } { "Image " code { (share.image_id) } }
            " to " (share.project_name.clone().unwrap_or_else(|| share.target.clone()))
            " — " span.state { (share.state.as_ref()) }
            @if share.state == crate::domain::ShareState::PendingAcceptance {
                form.inline method="post" action={ "/console/shares/" (share.id) "/respond" } {
                    input type="hidden" name="csrf" value=(s.csrf);
                    button type="submit" name="decision" value="accept" { "Accept" }
                    button type="submit" name="decision" value="reject" { "Reject" }
                }
            }
        }
    }
}

/// Shared with me: the shares made to the person's projects.
pub fn shared_with_me(s: &SignedIn, items: &[ShareView], next: Option<&str>, notice: Option<&str>) -> Markup {
    let body = html! {
        @if items.is_empty() {
            p { "Nothing is shared with your projects." }
        } @else {
            ul.shares { @for share in items { (share_item(s, share)) } }
        }
        (more("/console/shared-with-me", next))
    };
    layout("Shared with me", Some(s), notice, body)
}

/// One share, as the API shows it to this person.
pub fn share(s: &SignedIn, share: &serde_json::Value) -> Markup {
    let field = |name: &str| share[name].as_str().unwrap_or("—").to_owned();
    let body = html! {
        dl {
            dt { "Share" } dd { code { (field("id")) } }
            dt { "Image" } dd { code { (field("image_id")) } }
            dt { "Project" } dd { (field("project_name")) " (" code { (field("project_id")) } ")" }
            dt { "State" } dd { (field("state")) }
            dt { "Granted" } dd { (field("granted_at")) }
        }
        p { a href="/console/shared-with-me" { "Back to Shared with me" } }
    };
    layout("Share", Some(s), None, body)
}
