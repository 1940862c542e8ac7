//! The audit timeline for auditors: the API's `list_audit_events`, filtered by image,
//! request, share, project, actor, action, outcome and time, oldest first, as a table; and
//! the same filter exported (NDJSON, CSV, CADF) through the person's session, since a
//! browser holds a cookie, not an API key. The filter form is a GET that changes nothing (so
//! it carries no CSRF token). The other audit pages (`audit_access`, `audit_chain`) share the
//! moment parser and the section's navigation kept here.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;
use strum::VariantArray;
use uuid::Uuid;

use super::session::SignedIn;
use super::{Refused, pages};
use crate::domain::Outcome;
use crate::domain::filters::EventFilter;
use crate::http::audit::{self, AuditPaging, Format};
use crate::http::extract::Listing;
use crate::http::{ApiError, AppState};

/// How a moment is written in the console's forms (UTC).
pub const MOMENT_HINT: &str = "UTC, as 2026-12-02 16:08:22 (seconds and fractions optional), or RFC 3339";

/// A moment typed into a form: `2026-12-02 16:08:22` or `2026-12-02T16:08` (UTC, seconds and
/// fractions optional), a bare date (midnight UTC), or RFC 3339 with its offset.
pub fn moment(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let naive = text.replacen(' ', "T", 1);
    let naive = naive.trim_end_matches(['Z', 'z']);
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(naive, format).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(naive, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .map(|at| at.and_utc())
        .ok_or_else(|| format!("`{text}` is not a moment: write it in {MOMENT_HINT}"))
}

/// The audit section's own navigation, `current` marked for assistive technology.
pub fn audit_nav(current: &str) -> Markup {
    let links = [("/console/audit", "Timeline"), ("/console/audit/chain", "Chain")];
    html! {
        nav.sub aria-label="Audit" {
            ul {
                @for (href, text) in links {
                    li {
                        @if href == current {
                            a href=(href) aria-current="page" { (text) }
                        } @else {
                            a href=(href) { (text) }
                        }
                    }
                }
            }
        }
    }
}

/// The page's query: the filter form's fields (empty ones ignored), the cursor, and for
/// an export its format.
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
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    before: String,
    cursor: Option<String>,
    format: Option<String>,
}

/// The text fields of the filter form, in order: name, label.
const TEXT_FIELDS: [(&str, &str); 6] = [
    ("image_id", "Image id"),
    ("request_id", "Request id"),
    ("share_id", "Share id"),
    ("project_id", "Project id"),
    ("actor", "Actor"),
    ("action", "Action"),
];

/// The moment fields of the filter form: name, label.
const MOMENT_FIELDS: [(&str, &str); 2] = [("after", "At or after"), ("before", "Before")];

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
    fn parse(raw: &Option<String>) -> Result<Self, Refused> {
        serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).map_err(|_| Refused::BadLink)
    }

    /// The API's filter for this query; a bad moment is the API's own field error.
    fn filter(&self) -> Result<Result<EventFilter, ApiError>, Refused> {
        let when = |field: &str, text: &str| {
            given(text)
                .map(|t| moment(&t))
                .transpose()
                .map_err(|reason| ApiError::field(field, reason))
        };
        let outcome = given(&self.outcome)
            .map(|o| o.parse::<Outcome>())
            .transpose()
            .map_err(|_| Refused::BadLink)?;
        let (image_id, request_id, share_id) = (uuid(&self.image_id)?, uuid(&self.request_id)?, uuid(&self.share_id)?);
        let (after, before) = match (when("after", &self.after), when("before", &self.before)) {
            (Ok(after), Ok(before)) => (after, before),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        Ok(Ok(EventFilter {
            image_id,
            request_id,
            share_id,
            project_id: given(&self.project_id),
            actor: given(&self.actor),
            action: given(&self.action),
            outcome,
            after,
            before,
            ..Default::default()
        }))
    }

    fn paging(&self, format: Option<Format>) -> Result<AuditPaging, Refused> {
        let cursor = match (&self.cursor, format) {
            // An export is of the whole filter, wherever the page was.
            (Some(c), None) => format!("cursor={c}"),
            _ => String::new(),
        };
        let paging: AuditPaging = serde_urlencoded::from_str(&cursor).map_err(|_| Refused::BadLink)?;
        Ok(AuditPaging { format, ..paging })
    }

    /// The filled fields, as a query string (with `extra` after them).
    fn link(&self, path: &str, extra: &[(&str, &str)]) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in self.fields() {
            if !value.trim().is_empty() {
                query.append_pair(key, value);
            }
        }
        for (key, value) in extra {
            query.append_pair(key, value);
        }
        format!("{path}?{}", query.finish())
    }

    fn fields(&self) -> [(&'static str, &str); 9] {
        [
            ("image_id", &self.image_id),
            ("request_id", &self.request_id),
            ("share_id", &self.share_id),
            ("project_id", &self.project_id),
            ("actor", &self.actor),
            ("action", &self.action),
            ("outcome", &self.outcome),
            ("after", &self.after),
            ("before", &self.before),
        ]
    }

    fn value(&self, field: &str) -> &str {
        self.fields()
            .into_iter()
            .find(|(f, _)| *f == field)
            .map_or("", |(_, v)| v)
    }
}

/// The exports offered: the API's format, its name on the link, the file's extension.
const EXPORTS: [(Format, &str, &str); 3] = [
    (Format::Ndjson, "ndjson", "ndjson"),
    (Format::Csv, "csv", "csv"),
    (Format::Cadf, "cadf", "cadf.json"),
];

/// An RFC 3339 time as people read it: `2026-12-02 16:08:22` (UTC, whole seconds).
fn when(value: &Value) -> String {
    let text = value.as_str().unwrap_or_default();
    let text = text.split('.').next().unwrap_or(text).trim_end_matches('Z');
    format!("{} UTC", text.replacen('T', " ", 1))
}

fn filter_form(query: &AuditQuery, error: Option<&ApiError>) -> Markup {
    let problem = |field: &str| match error {
        Some(ApiError::Validation(errors)) => errors.iter().find(|e| e.field == field).map(|e| e.reason.clone()),
        _ => None,
    };
    html! {
        form.filters method="get" action="/console/audit" {
            fieldset {
                legend { "Filter" }
                @for (field, label) in TEXT_FIELDS {
                    div {
                        label for=(field) { (label) }
                        input id=(field) name=(field) type="text" value=(query.value(field));
                    }
                }
                div {
                    label for="outcome" { "Outcome" }
                    select id="outcome" name="outcome" {
                        option value="" { "any" }
                        @for outcome in Outcome::VARIANTS {
                            option value=(outcome.as_ref()) selected[query.outcome == outcome.as_ref()] { (outcome.as_ref()) }
                        }
                    }
                }
                @for (field, label) in MOMENT_FIELDS {
                    div {
                        label for=(field) { (label) " (UTC)" }
                        @if let Some(reason) = problem(field) {
                            input id=(field) name=(field) type="text" value=(query.value(field))
                                aria-invalid="true" aria-describedby={ (field) "-error" };
                            p.field-error id={ (field) "-error" } { (reason) }
                        } @else {
                            input id=(field) name=(field) type="text" value=(query.value(field))
                                placeholder="2026-12-02 16:08:22";
                        }
                    }
                }
                div { button type="submit" { "Show" } }
            }
        }
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
    let (query, filter, paging) = match AuditQuery::parse(&raw).and_then(|q| Ok((q.filter()?, q.paging(None)?, q))) {
        Ok((filter, paging, query)) => (query, filter, paging),
        Err(bad) => return bad.into_response(),
    };
    let filter = match filter {
        Ok(filter) => filter,
        // The page again, the bad moment named at its field.
        Err(error) => {
            let (status, _) = error.status_and_slug();
            let body = html! {
                (audit_nav("/console/audit"))
                p.problem role="alert" { "The filter has a bad moment: nothing was looked up." }
                (filter_form(&query, Some(&error)))
            };
            return pages::page(status, pages::layout("Audit", Some(&s), None, body));
        }
    };
    let listing = Listing { filter, paging };
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
        (audit_nav("/console/audit"))
        (filter_form(&query, None))
        p.exports {
            "Download every event this filter matches: "
            @for (i, (_, name, _)) in EXPORTS.iter().enumerate() {
                @if i > 0 { ", " }
                a href=(query.link("/console/audit/export", &[("format", name)])) download { (name.to_uppercase()) }
            }
        }
        @if let Ok(Some(image)) = uuid(&query.image_id) {
            p { a href={ "/console/audit/images/" (image) } { "The access picture of image " (image) } }
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
            p { a href=(query.link("/console/audit", &[("cursor", cursor)])) { "Next page" } }
        }
    };
    pages::page(StatusCode::OK, pages::layout("Audit", Some(&s), None, body))
}

/// Every event the filter matches, as the API's export in `format` streams it, saved by
/// the browser as a file.
pub async fn export(State(state): State<AppState>, s: Result<SignedIn, Response>, RawQuery(raw): RawQuery) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let query = match AuditQuery::parse(&raw) {
        Ok(q) => q,
        Err(bad) => return bad.into_response(),
    };
    let Some((format, _, extension)) = EXPORTS
        .iter()
        .find(|(_, name, _)| Some(*name) == query.format.as_deref())
    else {
        return pages::error_page(ApiError::field("format", "must be ndjson, csv or cadf"));
    };
    let (filter, paging) = match query.filter().and_then(|f| Ok((f, query.paging(Some(*format))?))) {
        Ok((Ok(filter), paging)) => (filter, paging),
        Ok((Err(error), _)) => return pages::error_page(error),
        Err(bad) => return bad.into_response(),
    };
    let listing = Listing { filter, paging };
    match audit::list_audit_events(State(state), s.caller, HeaderMap::new(), listing).await {
        Ok(mut answer) => {
            let name = format!(
                "attachment; filename=\"audit-events-{}.{extension}\"",
                Utc::now().format("%Y%m%dT%H%M%SZ")
            );
            let value = HeaderValue::try_from(name).expect("the file name is ASCII");
            answer.headers_mut().insert(header::CONTENT_DISPOSITION, value);
            answer
        }
        Err(e) => pages::error_page(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moment_is_read_in_utc_in_the_forms_people_type() {
        let at = |text: &str| moment(text).map(|m| m.to_rfc3339());
        let noon = Ok("2026-12-02T12:00:00+00:00".to_owned());
        for text in [
            "2026-12-02 12:00:00",
            "2026-12-02T12:00",
            " 2026-12-02 12:00 ",
            "2026-12-02T12:00:00Z",
            "2026-12-02T13:00:00+01:00",
        ] {
            assert_eq!(at(text), noon, "{text}");
        }
        assert_eq!(moment("2026-12-02 12:00:00.25").unwrap().timestamp_subsec_millis(), 250);
        assert_eq!(at("2026-12-02"), Ok("2026-12-02T00:00:00+00:00".to_owned()));
        for bad in ["", "yesterday", "2026-13-02 12:00", "02/12/2026", "2026-12-02 25:00"] {
            let error = moment(bad).unwrap_err();
            assert!(
                error.contains("is not a moment") && error.contains("UTC"),
                "{bad}: {error}"
            );
        }
    }
}
