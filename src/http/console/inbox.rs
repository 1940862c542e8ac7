//! The approvals inbox (approvers decide pending requests) and Shared with me (consumers
//! accept or reject shares made to their projects), each a call to the API's own handler
//! with the person's [`Caller`](crate::http::extract::Caller).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::session::SignedIn;
use super::{checked, notice, pages, paging};
use crate::domain::filters::{RequestFilter, ShareFilter};
use crate::domain::{Capability, RequestStatus};
use crate::http::extract::{Id, IdempotencyKey, IfMatch, Json, Listing, OptionalJson};
use crate::http::share_requests::{self, decide};
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
