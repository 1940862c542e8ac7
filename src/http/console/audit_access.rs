//! One image's access for auditors: its history drawn as a picture (`access_picture`), the
//! same changes as a table, and "who had access at T" (a GET form, changing nothing, whose
//! moment is also marked on the picture). Every figure comes from the API's own handlers,
//! called with the person's `Caller`: `image_access_history` for the picture,
//! `image_access` for the moment, `list_shares` only to put names on project ids. So a
//! person the API refuses gets its refusal as a page, and sees nothing.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use uuid::Uuid;

use super::Refused;
use super::access_picture;
use super::audit::{MOMENT_HINT, audit_nav, moment};
use super::pages::{self, utc};
use super::session::SignedIn;
use crate::domain::filters::ShareFilter;
use crate::http::access_report::{self, AccessAt, AccessChange, ImageAccess};
use crate::http::extract::{Caller, Id, Listing, Query};
use crate::http::pagination::{Limit, MAX_LIMIT, Paging, SeqCursor, SeqPaging};
use crate::http::{ApiError, AppState, shares};

/// Pages of history read for one picture (of the API's largest, 200 changes each): an image
/// changed hands more often than this is drawn up to there, and says so.
const MOST_PAGES: usize = 25;

#[derive(Debug, Default, Deserialize)]
struct AtQuery {
    at: Option<String>,
}

/// Every access change of the image, oldest first, as the API pages them; `true` when
/// there were more than [`MOST_PAGES`] pages.
async fn history(state: &AppState, caller: &Caller, image: Uuid) -> Result<(Vec<AccessChange>, bool), ApiError> {
    let mut changes = Vec::new();
    let mut cursor: Option<SeqCursor> = None;
    for _ in 0..MOST_PAGES {
        let q = SeqPaging {
            cursor,
            limit: Some(Limit::MAX),
        };
        let axum::Json(page) =
            access_report::image_access_history(State(state.clone()), caller.clone(), Id(image), Query(q)).await?;
        changes.extend(page.items);
        match page.next_cursor {
            Some(next) => {
                let next = serde_json::from_value(next.into())
                    .map_err(|e| ApiError::Internal(anyhow::anyhow!("the API's own cursor: {e}")))?;
                cursor = Some(next);
            }
            None => return Ok((changes, false)),
        }
    }
    Ok((changes, true))
}

/// Project names, as the image's shares recorded them (the API's list, one page).
async fn names(state: &AppState, caller: &Caller, image: Uuid) -> HashMap<String, String> {
    let filter = ShareFilter {
        image_id: Some(image),
        ..Default::default()
    };
    let paging = Paging {
        cursor: None,
        limit: Some(Limit::MAX),
    };
    match shares::list_shares(State(state.clone()), caller.clone(), Listing { filter, paging }).await {
        Ok(axum::Json(page)) => page
            .items
            .into_iter()
            .filter_map(|s| Some((s.project_id?, s.project_name?)))
            .collect(),
        // Names are a courtesy: the ids stand without them.
        Err(_) => HashMap::new(),
    }
}

pub async fn page(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    Path(image): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let (Ok(image), Ok(query)) = (
        Uuid::try_parse(&image),
        serde_urlencoded::from_str::<AtQuery>(raw.as_deref().unwrap_or("")),
    ) else {
        return Refused::BadLink.into_response();
    };
    // The history first: it is the API's check that this person audits the whole cloud.
    let (changes, cut) = match history(&state, &s.caller, image).await {
        Ok(found) => found,
        Err(e) => return pages::error_page(e),
    };
    let typed = query.at.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let at = typed.map(moment).transpose();
    let moment_access = match &at {
        Ok(Some(at)) => {
            let q = AccessAt { at: Some(*at) };
            match access_report::image_access(State(state.clone()), s.caller.clone(), Id(image), Query(q)).await {
                Ok(axum::Json(found)) => Some(found),
                Err(e) => return pages::error_page(e),
            }
        }
        _ => None,
    };
    let names = names(&state, &s.caller, image).await;
    let now = Utc::now();
    let rows = access_picture::rows(&changes);
    let image_name = changes.iter().find_map(|c| c.image_name.clone());
    let body = html! {
        (audit_nav(""))
        p {
            "Image " code { (image) }
            @if let Some(name) = &image_name { " (" (name) ")" }
            " · " a href={ "/console/audit?image_id=" (image) } { "its events in the timeline" }
        }
        @if rows.is_empty() {
            p { "No project has had access to this image through the broker: no grant is recorded." }
        }
        @else {
            (access_picture::svg(&rows, &names, now, at.as_ref().ok().copied().flatten()))
            (legend())
        }
        @if cut {
            p.problem { "Only the first " (MOST_PAGES * MAX_LIMIT as usize) " changes are drawn." }
        }
        (at_form(image, typed, at.as_ref().err()))
        @if let (Some(found), Ok(Some(at))) = (&moment_access, &at) {
            (moment_table(found, *at, &names))
        }
        (changes_table(&changes, &names))
    };
    let status = if at.is_err() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    pages::page(status, pages::layout("Access to an image", Some(&s), None, body))
}

fn legend() -> Markup {
    html! {
        ul.legend aria-label="What the picture's colours mean" {
            li { span.swatch.pending {} "granted, the consumer has not answered (the image is usable by id)" }
            li { span.swatch.accepted {} "accepted" }
            li { span.swatch.rejected {} "rejected (still usable by id until revoked)" }
            li { span.swatch.revoke {} "revoked" }
            li { span.swatch.open-end {} "still has access" }
        }
    }
}

/// The "who had access at T" form; `error`, a bad moment, is shown at the field.
fn at_form(image: Uuid, typed: Option<&str>, error: Option<&String>) -> Markup {
    let value = typed.map_or_else(|| utc(Utc::now()).trim_end_matches(" UTC").to_owned(), str::to_owned);
    html! {
        // The answer comes back scrolled to here (a GET keeps the action's fragment).
        section id="moment" aria-labelledby="at-heading" {
            h2 id="at-heading" { "Who had access at a moment" }
            form.at method="get" action={ "/console/audit/images/" (image) "#moment" } {
                label for="at" { "Moment" }
                p.hint id="at-hint" { (MOMENT_HINT) }
                @if let Some(reason) = error {
                    input id="at" name="at" type="text" value=(value) required
                        aria-invalid="true" aria-describedby="at-hint at-error";
                    p.field-error id="at-error" role="alert" { "at: " (reason) }
                } @else {
                    input id="at" name="at" type="text" value=(value) required aria-describedby="at-hint";
                }
                button type="submit" { "Show who had access" }
            }
        }
    }
}

/// The projects with access at the moment, as the API's replay found them.
fn moment_table(found: &ImageAccess, at: DateTime<Utc>, names: &HashMap<String, String>) -> Markup {
    html! {
        @if found.projects.is_empty() {
            p.moment role="status" { "No project had access at " (utc(at)) "." }
        } @else {
            table.moment {
                caption { "Projects with access at " (utc(at)) }
                thead { tr {
                    th scope="col" { "Project" } th scope="col" { "Region" } th scope="col" { "Since" }
                    th scope="col" { "Member status" } th scope="col" { "Approved by" } th scope="col" { "Requested by" }
                } }
                tbody {
                    @for p in &found.projects {
                        tr {
                            th scope="row" { (project(&p.project_id, names)) }
                            td { (p.region) }
                            td { (utc(p.since)) }
                            td { (p.member_status) }
                            td.who { (p.approved_by.as_deref().unwrap_or("—")) }
                            td.who { (p.requested_by.as_deref().unwrap_or("—")) }
                        }
                    }
                }
            }
        }
    }
}

fn project(id: &str, names: &HashMap<String, String>) -> Markup {
    html! {
        @if let Some(name) = names.get(id) { (name) " (" code { (id) } ")" } @else { code { (id) } }
    }
}

/// The picture's facts for keyboards and screen readers: every change, oldest first.
fn changes_table(changes: &[AccessChange], names: &HashMap<String, String>) -> Markup {
    html! {
        @if !changes.is_empty() {
            table.changes {
                caption { "Every access change, oldest first (the picture's facts)" }
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Project" } th scope="col" { "Region" }
                    th scope="col" { "Change" } th scope="col" { "By" } th scope="col" { "Reason" }
                } }
                tbody {
                    @for c in changes {
                        tr {
                            td { (utc(c.at)) }
                            td { @if let Some(p) = &c.project_id { (project(p, names)) } }
                            td { (c.region.as_deref().unwrap_or("")) }
                            td { (c.change) @if c.observed_in_glance { " (seen in Glance)" } }
                            td.who { (c.by.as_deref().unwrap_or("")) }
                            td { (c.reason.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}
