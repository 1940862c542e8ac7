//! The approvals inbox (approvers decide pending requests, seeing what validation found,
//! the approval policy's verdict and the approvals so far) and Shared with me (consumers
//! accept or reject shares made to their projects), each a call to the API's own handler
//! with the person's [`Caller`](crate::http::extract::Caller). Everything shown comes from
//! the API's answer: nothing here calls OpenStack.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::session::SignedIn;
use super::{checked, notice, pages, paging};
use crate::domain::filters::{RequestFilter, ShareFilter};
use crate::domain::policy::Verdict;
use crate::domain::{Capability, RequestStatus, Validation};
use crate::http::extract::{Id, IdempotencyKey, IfMatch, Json, Listing, OptionalJson};
use crate::http::share_requests::{self, ShareRequestView, decide};
use crate::http::{ApiError, AppState, shares};

pub async fn approvals(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    RawQuery(query): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let notice = notice(&query);
    let paging = match paging(&query) {
        Ok(p) => p,
        Err(bad) => return bad.into_response(),
    };
    let filter = RequestFilter {
        status: Some(RequestStatus::PendingApproval),
        ..Default::default()
    };
    match share_requests::list_share_requests(State(state), s.caller.clone(), Listing { filter, paging }).await {
        Ok(axum::Json(page)) => pages::page(
            StatusCode::OK,
            approvals_page(&s, &page.items, page.next_cursor.as_deref(), notice),
        ),
        Err(e) => pages::error_page(e),
    }
}

/// The approvals inbox: each request waiting for a decision with the facts validation
/// found, the policy's verdict and the approvals so far, and the decision form.
fn approvals_page(s: &SignedIn, items: &[ShareRequestView], next: Option<&str>, notice: Option<&str>) -> Markup {
    let may_approve = s.caller.principal.may_somewhere(Capability::Approve);
    let subject = s.caller.subject.to_string();
    let body = html! {
        @if !may_approve {
            p { "You hold no approver role: you see the requests you may read, and cannot decide them." }
        }
        @if items.is_empty() {
            p { "No request is waiting for a decision." }
        }
        @for r in items {
            article.request aria-labelledby={ "r-" (r.id) } {
                h2 id={ "r-" (r.id) } {
                    "Image " (r.validation.image.as_ref().and_then(|i| i.name.clone()).unwrap_or_else(|| r.image_id.to_string()))
                }
                dl {
                    dt { "Policy verdict" } dd.verdict { (verdict(r)) }
                    dt { "Approvals" } dd { (progress(r)) }
                    dt { "Request" } dd { code { (r.id) } }
                    dt { "Asked by" } dd {
                        (r.requested_by) @if let Some(u) = &r.on_behalf_of { " for " (u) }
                        ", " (pages::utc(r.created_at))
                    }
                    dt { "Why" } dd { (r.reason) }
                    (facts(r))
                }
                @if !may_approve {
                } @else if r.requested_by_subject == subject {
                    p { "You asked for this: someone else must decide it." }
                } @else {
                    (decide_form(s, r, &subject))
                }
            }
        }
        (pages::more("/console/approvals", next))
    };
    pages::layout("Approvals", Some(s), notice, body)
}

/// What the approval policy decided for the request, and by which rule; or why it has not.
fn verdict(r: &ShareRequestView) -> Markup {
    let rule = |rule: &Option<String>| match rule {
        Some(rule) => html! { "rule " code { (rule) } },
        None => html! { "no rule matched: the policy's default" },
    };
    let a = &r.approval;
    match (a.verdict, r.validation.state) {
        (Some(Verdict::RequireApproval), _) => html! {
            strong { "Needs " (a.required) @if a.required == 1 { " approval" } @else { " approvals" } }
            " — " (rule(&a.rule))
        },
        (Some(Verdict::Approve), _) => html! { strong { "Approve" } " — " (rule(&a.rule)) },
        (Some(Verdict::Deny), _) => html! { strong { "Deny" } " — " (rule(&a.rule)) },
        (Some(Verdict::AutoAcceptForbidden), _) => html! {
            strong { "Deny" } ": it asks for auto_accept, which " (rule(&a.rule)) " does not allow"
        },
        (None, Validation::Pending) => html! { "Not yet: the policy decides once validation has passed." },
        (None, Validation::Failed) => html! {
            "None: validation failed, so the policy did not apply. It can be denied, not approved."
        },
        (None, Validation::Passed) => html! { "Not recorded (validated before the broker kept verdicts)." },
    }
}

/// Approvals given of those needed, as a bar and in words, with who gave each.
fn progress(r: &ShareRequestView) -> Markup {
    let (given, required) = (r.approval.approvals.len(), r.approval.required);
    let label = format!("{given} of {required} approvals given");
    html! {
        progress value=(given) max=(required) aria-label=(label) { (label) }
        " " (given) " of " (required) " given"
        @if !r.approval.approvals.is_empty() {
            ul.approvals {
                @for a in &r.approval.approvals {
                    li {
                        (a.approver) @if let Some(u) = &a.on_behalf_of { " for " (u) }
                        ", " (pages::utc(a.approved_at))
                        @if let Some(c) = &a.comment { ": “" (c) "”" }
                    }
                }
            }
        }
    }
}

/// What validation found: the image and its owner, each target as resolved, the warnings,
/// and what the request asks besides.
fn facts(r: &ShareRequestView) -> Markup {
    let v = &r.validation;
    html! {
        dt { "Image" } dd {
            @if let Some(image) = &v.image {
                (image.name.as_deref().unwrap_or("(no name)")) ", " (image.visibility) " — "
            }
            code { (r.image_id) } " in " (r.region)
        }
        dt { "Owner project" } dd {
            @match v.image.as_ref().and_then(|i| i.owner.as_deref()) {
                Some(owner) => {
                    code { (owner) }
                    @if let Some(domain) = v.image.as_ref().and_then(|i| i.owner_domain.as_deref()) {
                        " in domain " code { (domain) }
                    }
                },
                None => "not known yet",
            }
        }
        dt { "Targets" } dd {
            ul.targets { @for share in &r.shares {
                li {
                    (share.project_name.clone().unwrap_or_else(|| share.target.clone()))
                    @if let Some(p) = &share.project_id { " (" code { (p) } ")" }
                    @if let Some(d) = &share.project_domain { " in domain " code { (d) } }
                    @if share.project_id.is_none() { " — not resolved yet" }
                }
            } }
        }
        dt { "Validation" } dd {
            (v.state.as_ref())
            @if let Some(at) = v.validated_at { ", " (pages::utc(at)) }
            @if let Some(e) = &v.last_error { " — " (e) }
            @if !v.errors.is_empty() {
                ul { @for e in &v.errors { li { code { (e.field) } ": " (e.reason) } } }
            }
        }
        @if !v.warnings.is_empty() {
            dt { "Warnings" } dd {
                ul.warnings { @for w in &v.warnings { li { (w.message) } } }
            }
        }
        dt { "Asks" } dd {
            @if r.auto_accept { "auto_accept (the consumer's acceptance is given for it)" } @else { "the consumer accepts" }
            @if let Some(at) = r.expires_at { "; access ends " (pages::utc(at)) } @else { "; no end date" }
        }
    }
}

/// The decision form for one request, with its comment: **Approve** only while approving
/// is possible for this person (validation passed, not approved by them already).
fn decide_form(s: &SignedIn, r: &ShareRequestView, subject: &str) -> Markup {
    let id = r.id;
    let comment_id = format!("comment-{id}");
    let approved_already = r.approval.approvals.iter().any(|a| a.approver_subject == subject);
    let may_approve = r.validation.state == Validation::Passed && !approved_already;
    html! {
        form method="post" action={ "/console/requests/" (id) "/decide" } {
            input type="hidden" name="csrf" value=(s.csrf);
            label for=(comment_id) { "Comment (optional)" }
            textarea id=(comment_id) name="comment" rows="2" maxlength="1000" {}
            @if approved_already {
                p { "You approved this already: it needs another approver." }
            }
            div.actions {
                @if may_approve {
                    button type="submit" name="decision" value="approve" { "Approve" }
                }
                button type="submit" name="decision" value="deny" { "Deny" }
            }
        }
    }
}

#[derive(Deserialize)]
struct DecisionForm {
    decision: String,
    comment: Option<String>,
}

pub async fn decide_request(
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
        Err(refused) => return refused.into_response(),
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

pub async fn shared_with_me(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    RawQuery(query): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let notice = notice(&query);
    let paging = match paging(&query) {
        Ok(p) => p,
        Err(bad) => return bad.into_response(),
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

pub async fn share(State(state): State<AppState>, s: Result<SignedIn, Response>, id: Id) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let answer = match shares::get_share(State(state), s.caller.clone(), id).await {
        Ok(answer) => answer,
        Err(e) => return pages::error_page(e),
    };
    let body = match axum::body::to_bytes(answer.into_body(), crate::http::BODY_LIMIT_BYTES).await {
        Ok(body) => body,
        Err(e) => return pages::error_page(ApiError::Internal(anyhow::anyhow!("reading a share: {e}"))),
    };
    let share: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    pages::page(StatusCode::OK, pages::share(&s, &share))
}

pub async fn respond_to_share(
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
        Err(refused) => return refused.into_response(),
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
