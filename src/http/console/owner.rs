//! Shared by me: the requests filed for the images of the projects a person requests for,
//! with their shares; cancel a pending request and revoke a share, each behind a
//! confirmation page. Both call the API's own handlers with the person's `Caller`.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::session::SignedIn;
use super::{checked, notice, pages, paging};
use crate::domain::filters::RequestFilter;
use crate::domain::{Capability, RequestStatus, ShareState};
use crate::http::extract::{Id, IdempotencyKey, IfMatch, Json, Listing, OptionalJson};
use crate::http::share_requests::{self, ShareRequestView, decide};
use crate::http::{AppState, revocation, shares};

/// Whether a share in `state` may still be revoked (as `ShareState::on` allows).
fn revocable(state: ShareState) -> bool {
    matches!(
        state,
        ShareState::PendingAcceptance | ShareState::Accepted | ShareState::Rejected | ShareState::Failed
    )
}

fn request_item(r: &ShareRequestView) -> Markup {
    let image = r
        .validation
        .image
        .as_ref()
        .and_then(|i| i.name.clone())
        .unwrap_or_else(|| r.image_id.to_string());
    html! {
        article.request aria-labelledby={ "r-" (r.id) } {
            h2 id={ "r-" (r.id) } { "Image " (image) " — " (r.status.as_ref()) }
            dl {
                dt { "Request" } dd { code { (r.id) } }
                dt { "Why" } dd { (r.reason) }
                @if let Some(by) = &r.decided_by { dt { "Decided by" } dd { (by) } }
            }
            ul.shares {
                @for share in &r.shares {
                    li.share {
                        (share.project_name.clone().unwrap_or_else(|| share.target.clone()))
                        " — " span.state { (share.state.as_ref()) }
                        @if revocable(share.state) {
                            " " a href={ "/console/shares/" (share.id) "/revoke" } { "Revoke…" }
                        }
                    }
                }
            }
            @if r.status == RequestStatus::PendingApproval {
                p { a href={ "/console/requests/" (r.id) "/cancel" } { "Cancel this request…" } }
            }
        }
    }
}

pub async fn shared_by_me(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    RawQuery(query): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let paging = match paging(&query) {
        Ok(p) => p,
        Err(bad) => return bad.into_response(),
    };
    let listing = Listing {
        filter: RequestFilter::default(),
        paging,
    };
    let page = match share_requests::list_share_requests(State(state), s.caller.clone(), listing).await {
        Ok(axum::Json(page)) => page,
        Err(e) => return pages::error_page(e),
    };
    let principal = &s.caller.principal;
    let mine: Vec<_> = page
        .items
        .iter()
        .filter(|r| {
            let owner = r.validation.image.as_ref().and_then(|i| i.owner.as_deref());
            principal.may(Capability::Request, owner) || r.requested_by == principal.name
        })
        .collect();
    let body = html! {
        @if mine.is_empty() { p { "Your projects have not shared anything." } }
        @for r in mine { (request_item(r)) }
        @if let Some(cursor) = &page.next_cursor {
            p { a href={ "/console/shared-by-me?cursor=" (cursor) } { "Next page" } }
        }
    };
    pages::page(
        StatusCode::OK,
        pages::layout("Shared by me", Some(&s), notice(&query), body),
    )
}

/// A confirmation page: what will happen, a form that does it, and a way out.
fn confirm(s: &SignedIn, title: &str, what: Markup, action: &str, reason: bool, button: &str) -> Response {
    let body = html! {
        (what)
        form method="post" action=(action) {
            input type="hidden" name="csrf" value=(s.csrf);
            @if reason {
                label for="reason" { "Why (required, shown in the audit log)" }
                textarea id="reason" name="reason" rows="2" maxlength="1000" required {}
            }
            div.actions {
                button.danger type="submit" { (button) }
                a href="/console/shared-by-me" { "Keep it" }
            }
        }
    };
    pages::page(StatusCode::OK, pages::layout(title, Some(s), None, body))
}

pub async fn confirm_cancel(State(state): State<AppState>, s: Result<SignedIn, Response>, Id(id): Id) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    // Shown only when the API shows the request to this person.
    if let Err(e) = share_requests::get_share_request(State(state), s.caller.clone(), Id(id)).await {
        return pages::error_page(e);
    }
    let what = html! { p { "Cancel request " code { (id) } "? No share of it will be granted." } };
    confirm(
        &s,
        "Cancel the request?",
        what,
        &format!("/console/requests/{id}/cancel"),
        false,
        "Cancel the request",
    )
}

pub async fn cancel(State(state): State<AppState>, s: Result<SignedIn, Response>, id: Id, body: Bytes) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    #[derive(Deserialize)]
    struct Form {}
    if let Err(refused) = checked::<Form>(&s, &body) {
        return refused.into_response();
    }
    let none = OptionalJson(Json {
        value: decide::Decision::default(),
        document: serde_json::Value::Null,
    });
    match decide::cancel_share_request(State(state), s.caller, id, IfMatch(None), IdempotencyKey(None), none).await {
        Ok(_) => Redirect::to("/console/shared-by-me?done=cancel").into_response(),
        Err(e) => pages::error_page(e),
    }
}

pub async fn confirm_revoke(State(state): State<AppState>, s: Result<SignedIn, Response>, Id(id): Id) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    if let Err(e) = shares::get_share(State(state), s.caller.clone(), Id(id)).await {
        return pages::error_page(e);
    }
    let what = html! {
        p { "Revoke share " code { (id) } "? The project loses access to the image in Glance." }
        p { "Servers and volumes the project made from it are not listed here yet." }
    };
    confirm(
        &s,
        "Revoke the share?",
        what,
        &format!("/console/shares/{id}/revoke"),
        true,
        "Revoke the share",
    )
}

pub async fn revoke(State(state): State<AppState>, s: Result<SignedIn, Response>, id: Id, body: Bytes) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    #[derive(Deserialize)]
    struct Form {
        #[serde(default)]
        reason: String,
    }
    let form: Form = match checked(&s, &body) {
        Ok(f) => f,
        Err(refused) => return refused.into_response(),
    };
    let input = Json {
        document: json!({ "reason": form.reason }),
        // A revoke from here is the API's safe one: refused (409, listing them) while
        // something in the consumer project depends on the image.
        value: revocation::RevokeInput {
            reason: form.reason,
            force: false,
            effective_at: None,
        },
    };
    match revocation::revoke_share(State(state), s.caller, id, IfMatch(None), IdempotencyKey(None), input).await {
        Ok(_) => Redirect::to("/console/shared-by-me?done=revoke").into_response(),
        Err(e) => pages::error_page(e),
    }
}
