//! Shared by me: the images of the project a person requests for (from Glance, through the
//! API's `list_project_images`), each with the requests filed for it and their shares' states;
//! for a credential that requests for any project, the requests it may see instead. One
//! request's page, and cancelling a pending request behind a confirmation. Every read and
//! change is a call to the API's own handler with the person's `Caller`; filing is
//! `new_request`, revoking `revoke`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::session::SignedIn;
use super::{checked, notice, pages, query};
use crate::domain::filters::RequestFilter;
use crate::domain::{Capability, Credential, RequestStatus, ShareState};
use crate::http::extract::{Id, IdempotencyKey, IfMatch, Json, Listing, OptionalJson, Query};
use crate::http::pagination::{Cursor, Limit, Paging};
use crate::http::projects::{self, ProjectImage};
use crate::http::share_requests::{self, ShareRequestView, decide};
use crate::http::shares::ShareView;
use crate::http::{ApiError, AppState};

/// Images per page of Shared by me, and the newest requests shown for each.
const IMAGES_PER_PAGE: u32 = 20;
const REQUESTS_PER_IMAGE: u32 = 10;

/// Whether a share in `state` may still be revoked (as `ShareState::on` allows).
fn revocable(state: ShareState) -> bool {
    matches!(
        state,
        ShareState::PendingAcceptance | ShareState::Accepted | ShareState::Rejected | ShareState::Failed
    )
}

/// A time as people read it: `2026-12-02 16:08 UTC`.
pub(super) fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The image's name as validation found it, else its id.
fn image_label(r: &ShareRequestView) -> String {
    r.validation
        .image
        .as_ref()
        .and_then(|i| i.name.clone())
        .unwrap_or_else(|| r.image_id.to_string())
}

/// The project a share is made to, as people read it.
pub(super) fn project_label(share: &ShareView) -> String {
    share.project_name.clone().unwrap_or_else(|| share.target.clone())
}

/// One share of a request: its project and state, with Revoke… while it may be revoked.
fn share_line(share: &ShareView) -> Markup {
    html! {
        li.share {
            (project_label(share)) " — " span.state { (share.state.as_ref()) }
            @if let Some(at) = share.revoke_effective_at { " (revoke due " (utc(at)) ")" }
            @if revocable(share.state) {
                " " a href={ "/console/shares/" (share.id) "/revoke" } { "Revoke…" }
            }
        }
    }
}

/// A request's facts and shares, with Cancel… while it waits for a decision.
fn request_facts(r: &ShareRequestView) -> Markup {
    html! {
        dl {
            dt { "Request" } dd { a href={ "/console/requests/" (r.id) } { code { (r.id) } } }
            dt { "Why" } dd { (r.reason) }
            @if let Some(at) = r.expires_at { dt { "Expires" } dd { (utc(at)) } }
            @if let Some(by) = &r.decided_by { dt { "Decided by" } dd { (by) } }
        }
        ul.shares { @for share in &r.shares { (share_line(share)) } }
        @if r.status == RequestStatus::PendingApproval {
            p { a href={ "/console/requests/" (r.id) "/cancel" } { "Cancel this request…" } }
        }
    }
}

/// The page's query: which of the person's projects, where the page starts, and a notice.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SharedQuery {
    project: Option<String>,
    cursor: Option<Cursor>,
    /// The notice after an action (`notice` reads it).
    #[serde(rename = "done")]
    _done: Option<String>,
}

pub async fn shared_by_me(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    RawQuery(raw): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let query: SharedQuery = match query(&raw) {
        Ok(q) => q,
        Err(bad) => return bad.into_response(),
    };
    let projects = s.caller.principal.projects_for(Capability::Request).unwrap_or_default();
    let body = if projects.is_empty() {
        requests_view(&state, &s, query.cursor).await
    } else {
        images_view(&state, &s, &projects, &query).await
    };
    match body {
        Ok(body) => pages::page(
            StatusCode::OK,
            pages::layout("Shared by me", Some(&s), notice(&raw), body),
        ),
        Err(e) => pages::error_page(e),
    }
}

/// A project as people read it: its name when the person's token names it.
pub(super) fn project_name(s: &SignedIn, project: &str) -> String {
    match &s.caller.principal.credential {
        Credential::Keystone(k) if k.project_id.as_deref() == Some(project) => {
            k.project_name.clone().unwrap_or_else(|| project.to_owned())
        }
        _ => project.to_owned(),
    }
}

/// The images of one of the person's projects (`?project=`, else the first), each with the
/// requests filed for it. Another project named in the URL is the API's 403.
async fn images_view(
    state: &AppState,
    s: &SignedIn,
    projects: &[String],
    query: &SharedQuery,
) -> Result<Markup, ApiError> {
    let project = query.project.clone().unwrap_or_else(|| projects[0].clone());
    let paging = Paging {
        cursor: query.cursor,
        limit: Some(Limit::clamped(IMAGES_PER_PAGE)),
    };
    let axum::Json(page) = projects::list_project_images(
        State(state.clone()),
        s.caller.clone(),
        Path(project.clone()),
        Query(paging),
    )
    .await?;
    let mut images = Vec::with_capacity(page.items.len());
    for image in &page.items {
        images.push((image, requests_of(state, s, &image.id).await?));
    }
    let name = project_name(s, &project);
    Ok(html! {
        p { a href="/console/requests/new" { "New request…" } }
        @if projects.len() > 1 {
            nav aria-label="Your projects" {
                ul { @for p in projects {
                    li { a href={ "/console/shared-by-me?project=" (p) } aria-current=[(p == &project).then_some("page")] { "Project " (p) } }
                } }
            }
        }
        p { "The images project " strong { (name) } " owns, newest first, each with the requests filed for it." }
        @if images.is_empty() { p { "The project owns no image." } }
        @for (image, (requests, more)) in &images { (image_item(image, requests, *more)) }
        @if let Some(cursor) = &page.next_cursor {
            p { a href={ "/console/shared-by-me?project=" (project) "&cursor=" (cursor) } { "Next page" } }
        }
    })
}

/// The newest requests for `image_id` the person may see, and whether there are more.
async fn requests_of(
    state: &AppState,
    s: &SignedIn,
    image_id: &str,
) -> Result<(Vec<ShareRequestView>, bool), ApiError> {
    let Ok(image_id) = Uuid::try_parse(image_id) else {
        return Ok((Vec::new(), false));
    };
    let listing = Listing {
        filter: RequestFilter {
            image_id: Some(image_id),
            ..Default::default()
        },
        paging: Paging {
            cursor: None,
            limit: Some(Limit::clamped(REQUESTS_PER_IMAGE)),
        },
    };
    let axum::Json(page) = share_requests::list_share_requests(State(state.clone()), s.caller.clone(), listing).await?;
    Ok((page.items, page.next_cursor.is_some()))
}

fn image_item(image: &ProjectImage, requests: &[ShareRequestView], more: bool) -> Markup {
    let name = image.name.clone().unwrap_or_else(|| image.id.clone());
    html! {
        article.request aria-labelledby={ "i-" (image.id) } {
            h2 id={ "i-" (image.id) } { "Image " (name) }
            dl {
                dt { "Image id" } dd { code { (image.id) } }
                dt { "Status" } dd { (image.status) }
                dt { "Visibility" } dd { (image.visibility) }
            }
            @if image.shareable {
                p { a href={ "/console/requests/new?image_id=" (image.id) } { "Share " (name) "…" } }
            } @else {
                p { "Cannot be shared: " (image.refusals.join("; ")) }
            }
            @if requests.is_empty() {
                p { "No request was filed for it." }
            }
            @for r in requests {
                section.filed aria-labelledby={ "r-" (r.id) } {
                    h3 id={ "r-" (r.id) } { "Request " (utc(r.created_at)) " — " (r.status.as_ref()) }
                    (request_facts(r))
                }
            }
            @if more { p { "Only the newest " (REQUESTS_PER_IMAGE) " requests are shown." } }
        }
    }
}

/// For a credential that requests for any project (or none): the requests it may see,
/// newest first, that are of its projects or that it filed.
async fn requests_view(state: &AppState, s: &SignedIn, cursor: Option<Cursor>) -> Result<Markup, ApiError> {
    let listing = Listing {
        filter: RequestFilter::default(),
        paging: Paging { cursor, limit: None },
    };
    let axum::Json(page) = share_requests::list_share_requests(State(state.clone()), s.caller.clone(), listing).await?;
    let principal = &s.caller.principal;
    let mine: Vec<_> = page
        .items
        .iter()
        .filter(|r| {
            let owner = r.validation.image.as_ref().and_then(|i| i.owner.as_deref());
            principal.may(Capability::Request, owner) || r.requested_by == principal.name
        })
        .collect();
    Ok(html! {
        @if principal.may_somewhere(Capability::Request) {
            p { a href="/console/requests/new" { "New request…" } }
        }
        @if mine.is_empty() { p { "Your projects have not shared anything." } }
        @for r in mine {
            article.request aria-labelledby={ "r-" (r.id) } {
                h2 id={ "r-" (r.id) } { "Image " (image_label(r)) " — " (r.status.as_ref()) }
                (request_facts(r))
            }
        }
        @if let Some(cursor) = &page.next_cursor {
            p { a href={ "/console/shared-by-me?cursor=" (cursor) } { "Next page" } }
        }
    })
}

/// One request as the API shows it to this person: what was asked, what validation found,
/// who decided, and its shares.
pub async fn request_page(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    Id(id): Id,
    RawQuery(raw): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let r = match share_requests::view_share_request(&state, &s.caller, id).await {
        Ok(r) => r,
        Err(e) => return pages::error_page(e),
    };
    let v = &r.validation;
    let body = html! {
        dl {
            dt { "Status" } dd { span.state { (r.status.as_ref()) } }
            dt { "Image" } dd { (image_label(&r)) " (" code { (r.image_id) } ", " (r.region) ")" }
            dt { "Asked by" } dd { (r.requested_by) " at " (utc(r.created_at)) }
            dt { "Why" } dd { (r.reason) }
            dt { "Expires" } dd { (r.expires_at.map(utc).unwrap_or_else(|| "never".into())) }
            dt { "Validation" } dd {
                (v.state.as_ref())
                @if let Some(e) = &v.last_error { " — " (e) }
                @if !v.errors.is_empty() {
                    ul { @for e in &v.errors { li { code { (e.field) } ": " (e.reason) } } }
                }
            }
            @if !v.warnings.is_empty() {
                dt { "Warnings" } dd { ul { @for w in &v.warnings { li { (w.message) } } } }
            }
            dt { "Approvals" } dd {
                (r.approval.approvals.len()) " of " (r.approval.required) " needed"
                @for a in &r.approval.approvals { " · " (a.approver) }
            }
            @if let Some(by) = &r.decided_by {
                dt { "Decided by" } dd {
                    (by) @if let Some(at) = r.decided_at { " at " (utc(at)) }
                    @if let Some(c) = &r.decision_comment { " — " (c) }
                }
            }
        }
        h2 { "Shares" }
        ul.shares { @for share in &r.shares { (share_line(share)) } }
        @if r.status == RequestStatus::PendingApproval {
            p { a href={ "/console/requests/" (r.id) "/cancel" } { "Cancel this request…" } }
        }
        p { a href="/console/shared-by-me" { "Back to Shared by me" } }
    };
    let title = format!("Request for image {}", image_label(&r));
    pages::page(StatusCode::OK, pages::layout(&title, Some(&s), notice(&raw), body))
}

pub async fn confirm_cancel(State(state): State<AppState>, s: Result<SignedIn, Response>, Id(id): Id) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    // Shown only when the API shows the request to this person.
    if let Err(e) = share_requests::view_share_request(&state, &s.caller, id).await {
        return pages::error_page(e);
    }
    let body = html! {
        p { "Cancel request " code { (id) } "? No share of it will be granted." }
        form method="post" action={ "/console/requests/" (id) "/cancel" } {
            input type="hidden" name="csrf" value=(s.csrf);
            div.actions {
                button.danger type="submit" { "Cancel the request" }
                a href="/console/shared-by-me" { "Keep it" }
            }
        }
    };
    pages::page(
        StatusCode::OK,
        pages::layout("Cancel the request?", Some(&s), None, body),
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
