//! Revoking a share from the console. The confirmation page first asks the API what depends
//! on the image in the consumer project (`get_share_impact`: servers, volumes, servers booted
//! from those volumes, snapshots; or the services that could not be checked), requires a
//! reason, lets the revoke be scheduled (`effective_at`, the consumer given notice), and
//! offers `force` only when the API would need it (something depends on the image, or could
//! not be checked) and would let this person force (`revocation::may_force`). The POST is the
//! API's `revoke_share`; its refusals (409 `share-in-use`, 503 `dependents-unchecked`, 422)
//! show the page again with what the API found and the values kept.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::fields::{Problems, utc_time};
use super::owner::{project_label, utc};
use super::session::SignedIn;
use super::{checked, pages};
use crate::domain::impact::{Dependent, DependentKind, Impact, Unchecked};
use crate::http::extract::{Id, IdempotencyKey, IfMatch, Json};
use crate::http::shares::{self, ShareView};
use crate::http::{ApiError, AppState, impact, revocation};

const FIELDS: &[&str] = &["reason", "effective_at", "force"];

/// The confirmation form as posted (and shown again).
#[derive(Debug, Default, Deserialize)]
struct RevokeForm {
    #[serde(default)]
    reason: String,
    /// A checkbox: present (`on`) when ticked.
    #[serde(default)]
    force: Option<String>,
    #[serde(default)]
    effective_at: String,
}

/// What the page shows: the share, what depends on its image and when that was asked, and
/// the API's answer to a revoke that was refused.
struct Shown<'a> {
    share: &'a ShareView,
    impact: Impact,
    checked_at: Option<DateTime<Utc>>,
    may_force: bool,
    form: &'a RevokeForm,
    problems: &'a Problems,
    refusal: Option<String>,
}

fn kind(kind: DependentKind) -> &'static str {
    match kind {
        DependentKind::Server => "Server booted from the image",
        DependentKind::Volume => "Volume made from the image",
        DependentKind::VolumeServer => "Server using such a volume",
        DependentKind::Snapshot => "Image derived from it (snapshot)",
    }
}

fn service(name: &str) -> String {
    match name {
        "compute" => "compute (Nova: servers)".into(),
        "volume" => "volume (Cinder: volumes)".into(),
        "image" => "image (Glance: snapshots)".into(),
        other => other.to_owned(),
    }
}

fn dependent_row(d: &Dependent) -> Markup {
    html! {
        tr {
            td { (kind(d.kind)) }
            td { (d.name.as_deref().unwrap_or("—")) }
            td { code { (d.id) } @if let Some(via) = &d.via { " (via volume " code { (via) } ")" } }
            td { (d.status.as_deref().unwrap_or("—")) }
        }
    }
}

fn impact_section(project: &str, impact: &Impact, checked_at: Option<DateTime<Utc>>) -> Markup {
    let when = checked_at.map(utc).unwrap_or_else(|| "just now".into());
    html! {
        section aria-labelledby="impact" {
            h2 id="impact" { "What depends on the image in " (project) }
            @if !impact.dependents.is_empty() {
                table {
                    caption { (impact.dependents.len()) " in use, as Nova, Cinder and Glance said at " (when) }
                    thead { tr { th scope="col" { "What" } th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Status" } } }
                    tbody { @for d in &impact.dependents { (dependent_row(d)) } }
                }
                p { "Revoking now leaves these unable to rebuild, or to boot again from the image." }
            }
            @if !impact.unchecked.is_empty() {
                div.problem {
                    p { "Could not be checked, so what depends on the image there is unknown:" }
                    ul { @for u in &impact.unchecked { li { (service(&u.service)) ": " (u.reason) } } }
                }
            }
            @if impact.is_clear() {
                p { "Nothing in " (project) " depends on the image: Nova, Cinder and Glance were asked at " (when) "." }
            }
        }
    }
}

fn render(s: &SignedIn, status: StatusCode, shown: Shown<'_>) -> Response {
    let Shown {
        share,
        impact,
        checked_at,
        may_force,
        form,
        problems,
        refusal,
    } = shown;
    let project = project_label(share);
    let offer_force = may_force && !impact.is_clear();
    let body = html! {
        p {
            "Revoke the share of image " code { (share.image_id) } " with project " strong { (project) }
            " (" span.state { (share.state.as_ref()) } ")? The project loses access to the image in Glance."
        }
        (impact_section(&project, &impact, checked_at))
        @if let Some(refusal) = &refusal { p.problem role="alert" { "Not revoked: " (refusal) } }
        form method="post" action={ "/console/shares/" (share.id) "/revoke" } {
            input type="hidden" name="csrf" value=(s.csrf);
            (problems.summary())
            label for="reason" { "Why (required, shown in the audit log)" }
            (problems.beside("reason"))
            textarea id="reason" name="reason" rows="2" maxlength="1000" required
                aria-describedby=[problems.described_by("reason")] aria-invalid=[problems.invalid("reason")] { (form.reason) }
            label for="effective_at" { "Revoke at (optional, UTC): leave empty to revoke now" }
            p.hint id="effective_at-hint" { "A later time gives the project notice: it keeps access until then." }
            (problems.beside("effective_at"))
            input id="effective_at" name="effective_at" type="datetime-local" value=(form.effective_at)
                aria-describedby=(problems.described_by("effective_at").map_or("effective_at-hint".to_owned(), |e| format!("{e} effective_at-hint")))
                aria-invalid=[problems.invalid("effective_at")];
            @if offer_force {
                div.check {
                    input id="force" name="force" type="checkbox" value="on" checked[form.force.is_some()]
                        aria-describedby=[problems.described_by("force")];
                    label for="force" { "Revoke now anyway, breaking what is listed above (force: the audit log records what it breaks)" }
                }
                (problems.beside("force"))
            } @else if !impact.is_clear() {
                p { "Only a requester of the image's project, or an admin, may revoke while something depends on the image: schedule the revoke to give the project notice." }
            }
            div.actions {
                button.danger type="submit" { "Revoke the share" }
                a href="/console/shared-by-me" { "Keep it" }
            }
        }
    };
    pages::page(status, pages::layout("Revoke the share?", Some(s), None, body))
}

/// What depends on the share's image, as the API answers this person, and when it was asked;
/// an answer it could not give is shown as unchecked.
async fn look(state: &AppState, s: &SignedIn, id: Uuid) -> (Impact, Option<DateTime<Utc>>) {
    match impact::get_share_impact(State(state.clone()), s.caller.clone(), Id(id)).await {
        Ok(axum::Json(found)) => (
            Impact {
                dependents: found.dependents,
                unchecked: found.unchecked,
            },
            Some(found.checked_at),
        ),
        Err(e) => {
            let unchecked = Unchecked {
                service: "all".into(),
                reason: format!("the broker could not say ({e})"),
            };
            (
                Impact {
                    dependents: Vec::new(),
                    unchecked: vec![unchecked],
                },
                None,
            )
        }
    }
}

pub async fn confirm_revoke(State(state): State<AppState>, s: Result<SignedIn, Response>, Id(id): Id) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let share = match shares::view_share(&state, &s.caller, id).await {
        Ok(share) => share,
        Err(e) => return pages::error_page(e),
    };
    page(
        &state,
        &s,
        &share,
        &RevokeForm::default(),
        Answer::plain(StatusCode::OK),
    )
    .await
}

pub async fn revoke(State(state): State<AppState>, s: Result<SignedIn, Response>, Id(id): Id, body: Bytes) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let form: RevokeForm = match checked(&s, &body) {
        Ok(f) => f,
        Err(refused) => return refused.into_response(),
    };
    let share = match shares::view_share(&state, &s.caller, id).await {
        Ok(share) => share,
        Err(e) => return pages::error_page(e),
    };
    let asked = match utc_time(&form.effective_at) {
        Ok(effective_at) => ask(&state, &s, id, &form, effective_at).await,
        Err(reason) => Err(ApiError::field("effective_at", reason)),
    };
    let answer = match asked {
        Ok(_) => {
            let done = if form.effective_at.trim().is_empty() {
                "revoke"
            } else {
                "schedule"
            };
            return Redirect::to(&format!("/console/shared-by-me?done={done}")).into_response();
        }
        Err(ApiError::Validation(errors)) => {
            let mut answer = Answer::plain(StatusCode::UNPROCESSABLE_ENTITY);
            answer.problems.extend(&errors);
            answer
        }
        Err(ApiError::InUse { detail, impact }) => Answer::refused(StatusCode::CONFLICT, detail, impact),
        Err(ApiError::DependentsUnchecked { detail, impact }) => {
            Answer::refused(StatusCode::SERVICE_UNAVAILABLE, detail, impact)
        }
        Err(e) => return pages::error_page(e),
    };
    page(&state, &s, &share, &form, answer).await
}

/// How the page answers: its status, the form's problems, the API's refusal of a revoke and
/// what it found then (else what depends on the image is asked for the page).
struct Answer {
    status: StatusCode,
    problems: Problems,
    refusal: Option<String>,
    found: Option<Impact>,
}

impl Answer {
    fn plain(status: StatusCode) -> Self {
        Answer {
            status,
            problems: Problems::on(FIELDS),
            refusal: None,
            found: None,
        }
    }

    /// The API refused a plain revoke, having found `impact`.
    fn refused(status: StatusCode, detail: String, impact: Impact) -> Self {
        Answer {
            refusal: Some(detail),
            found: Some(impact),
            ..Answer::plain(status)
        }
    }
}

async fn page(state: &AppState, s: &SignedIn, share: &ShareView, form: &RevokeForm, answer: Answer) -> Response {
    let (impact, checked_at) = match answer.found {
        Some(impact) => (impact, Some(Utc::now())),
        None => look(state, s, share.id).await,
    };
    let may_force = revocation::may_force(state, &s.caller, share.id).await.unwrap_or(false);
    let shown = Shown {
        share,
        impact,
        checked_at,
        may_force,
        form,
        problems: &answer.problems,
        refusal: answer.refusal,
    };
    render(s, answer.status, shown)
}

/// The API's revoke, with the form's values.
async fn ask(
    state: &AppState,
    s: &SignedIn,
    id: Uuid,
    form: &RevokeForm,
    effective_at: Option<DateTime<Utc>>,
) -> Result<Response, ApiError> {
    let force = form.force.is_some();
    let mut document = json!({ "reason": form.reason, "force": force });
    if let Some(at) = effective_at {
        document["effective_at"] = json!(at);
    }
    let input = Json {
        document,
        value: revocation::RevokeInput {
            reason: form.reason.clone(),
            force,
            effective_at,
        },
    };
    revocation::revoke_share(
        State(state.clone()),
        s.caller.clone(),
        Id(id),
        IfMatch(None),
        IdempotencyKey(None),
        input,
    )
    .await
}
