//! The audit timeline for auditors: the API's `list_audit_events`, filtered by image,
//! request, share, project, actor or action, newest pages last, as a table. The filter form
//! is a GET that changes nothing (so it carries no CSRF token).

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::session::SignedIn;
use super::{Refused, pages};
use crate::domain::filters::EventFilter;
use crate::http::audit::{self, AuditPaging};
use crate::http::extract::Listing;
use crate::http::{ApiError, AppState};

/// The page's query: the filter form's fields (empty ones ignored) and the cursor.
#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    image_id: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    share_id: String,
    #[serde(default)]
    project_id: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    cursor: Option<String>,
}

fn given(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

fn uuid(text: &str) -> Result<Option<Uuid>, Refused> {
    given(text)
        .map(|t| Uuid::try_parse(&t))
        .transpose()
        .map_err(|_| Refused::BadLink)
}

impl AuditQuery {
    fn listing(&self) -> Result<Listing<EventFilter, AuditPaging>, Refused> {
        let filter = EventFilter {
            image_id: uuid(&self.image_id)?,
            request_id: uuid(&self.request_id)?,
            share_id: uuid(&self.share_id)?,
            project_id: given(&self.project_id),
            actor: given(&self.actor),
            action: given(&self.action),
            ..Default::default()
        };
        let cursor = self
            .cursor
            .as_deref()
            .map(|c| format!("cursor={c}"))
            .unwrap_or_default();
        let paging = serde_urlencoded::from_str(&cursor).map_err(|_| Refused::BadLink)?;
        Ok(Listing { filter, paging })
    }

    /// This query with another cursor: the next page's link.
    fn next(&self, cursor: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in self.fields() {
            if !value.is_empty() {
                query.append_pair(key, value);
            }
        }
        query.append_pair("cursor", cursor);
        format!("/console/audit?{}", query.finish())
    }

    fn fields(&self) -> [(&'static str, &str); 6] {
        [
            ("image_id", &self.image_id),
            ("request_id", &self.request_id),
            ("share_id", &self.share_id),
            ("project_id", &self.project_id),
            ("actor", &self.actor),
            ("action", &self.action),
        ]
    }
}

/// An RFC 3339 time as people read it: `2026-12-02 16:08:22` (UTC, whole seconds).
fn when(value: &Value) -> String {
    let text = value.as_str().unwrap_or_default();
    let text = text.split('.').next().unwrap_or(text).trim_end_matches('Z');
    format!("{} UTC", text.replacen('T', " ", 1))
}

fn label(field: &str) -> &'static str {
    match field {
        "image_id" => "Image id",
        "request_id" => "Request id",
        "share_id" => "Share id",
        "project_id" => "Project id",
        "actor" => "Actor",
        _ => "Action",
    }
}

pub async fn timeline(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    RawQuery(raw): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let query: AuditQuery = match serde_urlencoded::from_str(raw.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(_) => return Refused::BadLink.into_response(),
    };
    let listing = match query.listing() {
        Ok(l) => l,
        Err(bad) => return bad.into_response(),
    };
    let answer = match audit::list_audit_events(State(state), s.caller.clone(), HeaderMap::new(), listing).await {
        Ok(answer) => answer,
        Err(e) => return pages::error_page(e),
    };
    let page: Value = match axum::body::to_bytes(answer.into_body(), usize::MAX).await {
        Ok(body) => serde_json::from_slice(&body).unwrap_or_default(),
        Err(e) => return pages::error_page(ApiError::Internal(anyhow::anyhow!("reading audit events: {e}"))),
    };
    let events = page["items"].as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_default();
    let body = html! {
        form.filters method="get" action="/console/audit" {
            fieldset {
                legend { "Filter" }
                @for (field, value) in query.fields() {
                    div {
                        label for=(field) { (label(field)) }
                        input id=(field) name=(field) type="text" value=(value);
                    }
                }
                div { button type="submit" { "Show" } }
            }
        }
        @if events.is_empty() {
            p { "No event matches." }
        } @else {
            table {
                caption { "Audit events, oldest first" }
                thead { tr { th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "Outcome" }
                             th scope="col" { "Who" } th scope="col" { "Project" } th scope="col" { "Reason" } } }
                tbody {
                    @for e in &events {
                        tr {
                            td { (when(&e["occurred_at"])) }
                            td { (text(&e["action"])) }
                            td { (text(&e["outcome"])) }
                            td { (text(&e["initiator"]["name"])) }
                            td { (text(&e["project_id"])) }
                            td { (text(&e["reason"])) }
                        }
                    }
                }
            }
        }
        @if let Some(cursor) = page["next_cursor"].as_str() {
            p { a href=(query.next(cursor)) { "Next page" } }
        }
    };
    pages::page(StatusCode::OK, pages::layout("Audit", Some(&s), None, body))
}
