//! The new-request form of Shared by me: an image the person's project owns (a select filled
//! from the API's `list_project_images`; a text field for a credential that requests for any
//! project), target projects found by name (a search field whose Search button shows the form
//! again with the API's `search_projects` matches to tick), a reason and an expiry. Check runs
//! the API's dry run (`create_share_request` with `dry_run=true`: nothing stored) and shows
//! what it found on the form, every value kept; File request files it with the form's own
//! `Idempotency-Key` (made when the form is first shown), so a double submit files once, and
//! goes to the request's page. No script: each step is a round trip.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::fields::{Problems, utc_time};
use super::session::{Secret, SignedIn};
use super::{Refused, checked, pages, query};
use crate::domain::{Capability, FieldError, ShareRequestInput};
use crate::http::extract::{IdempotencyKey, Json, Query};
use crate::http::pagination::{Limit, Paging};
use crate::http::projects::{self, ProjectImage, ProjectMatches, ProjectSearch};
use crate::http::share_requests::{self, DryRunView, Filing};
use crate::http::{ApiError, AppState};

mod markup;

use self::markup::{Shown, render};

const FIELDS: &[&str] = &["image_id", "targets", "search", "reason", "expires_at"];
/// Images offered in the select, per project: the API's largest page.
const IMAGE_CHOICES: u32 = 200;
/// How long a filing waits for the same form's earlier filing (a double submit) to finish.
const IN_FLIGHT_WAITS: u32 = 50;
const IN_FLIGHT_PAUSE: Duration = Duration::from_millis(100);

/// A target ticked on the form: the project id it names and the name shown for it. The
/// checkbox carries both (`<id> <name>`) so that the name survives each round trip; only the
/// id reaches the API.
struct Chosen {
    id: String,
    name: String,
}

impl Chosen {
    fn value(&self) -> String {
        format!("{} {}", self.id, self.name)
    }
}

/// The form as posted (and shown again).
#[derive(Default)]
struct RequestForm {
    key: String,
    image_id: String,
    search: String,
    targets: Vec<Chosen>,
    reason: String,
    expires_at: String,
    action: String,
}

impl RequestForm {
    /// A new form, with a new `Idempotency-Key`.
    fn new(image_id: String) -> Self {
        RequestForm {
            key: Secret::random().encoded(),
            image_id,
            ..RequestForm::default()
        }
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Self {
        let mut form = RequestForm::default();
        for (name, value) in pairs {
            match name.as_str() {
                "key" => form.key = value,
                "image_id" => form.image_id = value.trim().to_owned(),
                "search" => form.search = value,
                "target" => {
                    let (id, name) = value.split_once(' ').unwrap_or((&value, &value));
                    if !form.targets.iter().any(|t| t.id == id) {
                        form.targets.push(Chosen {
                            id: id.to_owned(),
                            name: name.to_owned(),
                        });
                    }
                }
                "reason" => form.reason = value,
                "expires_at" => form.expires_at = value,
                "action" => form.action = value,
                _ => {}
            }
        }
        form
    }

    /// The request as the API takes it (`expires_at` already read from the form).
    fn body(&self, expires_at: Option<DateTime<Utc>>) -> Json<ShareRequestInput> {
        let targets: Vec<String> = self.targets.iter().map(|t| t.id.clone()).collect();
        let mut document = json!({ "image_id": self.image_id, "targets": targets, "reason": self.reason });
        if let Some(at) = expires_at {
            document["expires_at"] = json!(at);
        }
        let value = ShareRequestInput {
            image_id: self.image_id.clone(),
            targets,
            region: None,
            reason: self.reason.clone(),
            expires_at,
            auto_accept: false,
        };
        Json { value, document }
    }

    /// The API's field errors, a target's named by the project it stands for.
    fn problems(&self, problems: &mut Problems, errors: &[FieldError]) {
        for e in errors {
            let target = e
                .field
                .strip_prefix("targets[")
                .and_then(|rest| rest.trim_end_matches(']').parse::<usize>().ok())
                .and_then(|i| self.targets.get(i));
            match target {
                Some(t) => problems.add(&e.field, format!("{}: {}", t.name, e.reason)),
                None => problems.add(&e.field, e.reason.clone()),
            }
        }
    }
}

/// The images the select offers, by project: `None` for a credential that requests for any
/// project (it types an image id instead).
type Choices = Option<Vec<(String, Vec<ProjectImage>)>>;

async fn image_choices(state: &AppState, s: &SignedIn) -> Result<Choices, ApiError> {
    let Some(projects) = s.caller.principal.projects_for(Capability::Request) else {
        return Ok(None);
    };
    let mut choices = Vec::with_capacity(projects.len());
    for project in projects {
        let paging = Paging {
            cursor: None,
            limit: Some(Limit::clamped(IMAGE_CHOICES)),
        };
        let axum::Json(page) = projects::list_project_images(
            State(state.clone()),
            s.caller.clone(),
            Path(project.clone()),
            Query(paging),
        )
        .await?;
        let shareable = page.items.into_iter().filter(|i| i.shareable).collect();
        choices.push((project, shareable));
    }
    Ok(Some(choices))
}

fn offered(choices: &Choices, image_id: &str) -> bool {
    choices
        .iter()
        .flatten()
        .any(|(_, images)| images.iter().any(|i| i.id == image_id))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewQuery {
    image_id: Option<String>,
}

pub async fn new_request(
    State(state): State<AppState>,
    s: Result<SignedIn, Response>,
    RawQuery(raw): RawQuery,
) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let query: NewQuery = match query(&raw) {
        Ok(q) => q,
        Err(bad) => return bad.into_response(),
    };
    if let Err(e) = s.caller.require(Capability::Request) {
        return pages::error_page(e);
    }
    let choices = match image_choices(&state, &s).await {
        Ok(choices) => choices,
        Err(e) => return pages::error_page(e),
    };
    let form = RequestForm::new(query.image_id.unwrap_or_default());
    if choices.is_some() && !form.image_id.is_empty() && !offered(&choices, &form.image_id) {
        return pages::error_page(ApiError::NotFound(format!(
            "image {} is not one your project owns and can share (among its newest {IMAGE_CHOICES})",
            form.image_id
        )));
    }
    let problems = Problems::on(FIELDS);
    let shown = Shown {
        choices: &choices,
        matches: None,
        problems: &problems,
        dry_run: None,
    };
    render(&s, StatusCode::OK, &form, &shown)
}

/// The projects matching the form's search, when it holds one; a search the API refuses is
/// a problem on the field only when the person pressed Search.
async fn matches(
    state: &AppState,
    s: &SignedIn,
    form: &RequestForm,
    problems: &mut Problems,
) -> Option<ProjectMatches> {
    let search = form.search.trim();
    if search.is_empty() {
        if form.action == "search" {
            problems.add("search", "type part of a project's name");
        }
        return None;
    }
    let query = ProjectSearch {
        search: search.to_owned(),
        limit: None,
    };
    match projects::search_projects(State(state.clone()), s.caller.clone(), Query(query)).await {
        Ok(axum::Json(found)) => Some(found),
        Err(e) if form.action == "search" => {
            match e {
                ApiError::Validation(errors) => problems.extend(&errors),
                other => problems.add("search", other.to_string()),
            }
            None
        }
        Err(_) => None,
    }
}

/// Files (or, with `dry_run`, checks) the request as the API's `create_share_request`. A
/// filing that meets the same form's earlier one still running (a double submit) waits for
/// it, then gets its answer replayed.
async fn create(
    state: &AppState,
    s: &SignedIn,
    form: &RequestForm,
    expires_at: Option<DateTime<Utc>>,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let key = match dry_run {
        true => IdempotencyKey(None),
        false => IdempotencyKey::parse(&form.key).unwrap_or(IdempotencyKey(None)),
    };
    for _ in 0..IN_FLIGHT_WAITS {
        let answer = share_requests::create_share_request(
            State(state.clone()),
            s.caller.clone(),
            Query(Filing { dry_run }),
            IdempotencyKey(key.0.clone()),
            form.body(expires_at),
        )
        .await;
        match answer {
            Err(ApiError::IdempotencyKeyInFlight) => tokio::time::sleep(IN_FLIGHT_PAUSE).await,
            answer => return answer,
        }
    }
    Err(ApiError::IdempotencyKeyInFlight)
}

async fn dry_run_view(answer: Response) -> Result<DryRunView, ApiError> {
    let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("reading a dry run: {e}")))?;
    serde_json::from_slice(&body).map_err(|e| ApiError::Internal(anyhow::anyhow!("reading a dry run: {e}")))
}

/// Where a filed request lives, from the API's `Location` (`/v1/share-requests/<id>`).
fn filed_id(answer: &Response) -> Option<String> {
    let location = answer.headers().get(header::LOCATION)?.to_str().ok()?;
    Some(location.rsplit('/').next()?.to_owned())
}

pub async fn submit(State(state): State<AppState>, s: Result<SignedIn, Response>, body: Bytes) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let mut form = match checked::<Vec<(String, String)>>(&s, &body) {
        Ok(pairs) => RequestForm::from_pairs(pairs),
        Err(refused) => return refused.into_response(),
    };
    if !["search", "check", "file"].contains(&form.action.as_str()) {
        return Refused::BadForm.into_response();
    }
    let choices = match image_choices(&state, &s).await {
        Ok(choices) => choices,
        Err(e) => return pages::error_page(e),
    };
    let mut problems = Problems::on(FIELDS);
    let found = matches(&state, &s, &form, &mut problems).await;
    let mut status = StatusCode::OK;
    let mut dry_run = None;
    if form.action != "search" {
        let answer = match utc_time(&form.expires_at) {
            Ok(expires_at) => create(&state, &s, &form, expires_at, form.action == "check").await,
            Err(reason) => Err(ApiError::field("expires_at", reason)),
        };
        match answer {
            Ok(answer) if form.action == "file" => match filed_id(&answer) {
                Some(id) => return Redirect::to(&format!("/console/requests/{id}?done=filed")).into_response(),
                None => return pages::error_page(ApiError::Internal(anyhow::anyhow!("a filing without Location"))),
            },
            Ok(answer) => match dry_run_view(answer).await {
                Ok(view) => {
                    form.problems(&mut problems, &view.errors);
                    dry_run = Some(view);
                }
                Err(e) => return pages::error_page(e),
            },
            Err(ApiError::Validation(errors)) => {
                status = StatusCode::UNPROCESSABLE_ENTITY;
                form.problems(&mut problems, &errors);
            }
            Err(ApiError::Conflict { detail, errors }) => {
                status = StatusCode::CONFLICT;
                problems.add("form", detail);
                form.problems(&mut problems, &errors);
            }
            // The same form filed another request before: say so, and give the form a new
            // key so that filing this one is a deliberate second press.
            Err(ApiError::IdempotencyKeyReused) => {
                status = StatusCode::UNPROCESSABLE_ENTITY;
                problems.add(
                    "form",
                    "This form already filed a request with other values (see Shared by me). \
                     Press File request again to file this one as well.",
                );
                form.key = Secret::random().encoded();
            }
            Err(e) => return pages::error_page(e),
        }
    }
    if status == StatusCode::OK && form.action == "search" && !problems.is_empty() {
        status = StatusCode::UNPROCESSABLE_ENTITY;
    }
    let shown = Shown {
        choices: &choices,
        matches: found.as_ref(),
        problems: &problems,
        dry_run: dry_run.as_ref(),
    };
    render(&s, status, &form, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn ticked_targets_keep_their_names_and_only_their_ids_reach_the_api() {
        let form = RequestForm::from_pairs(pairs(&[
            ("image_id", " 7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa "),
            ("target", "2f0c6b8a9d3e4c1f8a7b6c5d4e3f2a1b proj b"),
            ("target", "2f0c6b8a9d3e4c1f8a7b6c5d4e3f2a1b proj b"),
            ("target", "bare"),
            ("reason", "CI"),
            ("action", "check"),
        ]));
        assert_eq!(form.targets.len(), 2, "a project ticked twice is one target");
        assert_eq!(form.targets[0].name, "proj b");
        assert_eq!(form.targets[1].value(), "bare bare");
        let at = utc_time("2099-01-01T00:00").unwrap();
        let body = form.body(at);
        assert_eq!(body.value.targets, ["2f0c6b8a9d3e4c1f8a7b6c5d4e3f2a1b", "bare"]);
        assert_eq!(body.document["image_id"], "7a5c5b6e-3f5d-4a57-9b0e-51c6a3b7f0aa");
        assert_eq!(body.document["expires_at"], "2099-01-01T00:00:00Z");
        assert_eq!(form.body(None).document.get("expires_at"), None);

        let mut problems = Problems::on(FIELDS);
        form.problems(&mut problems, &[FieldError::new("targets[0]", "no such project")]);
        assert!(
            problems
                .beside("targets")
                .into_string()
                .contains("proj b: no such project")
        );
    }
}
