//! The new-request page's markup: the form with its values kept, the problems beside their
//! fields, the targets found by name to tick, and what the dry run found.

use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::{Choices, RequestForm};
use crate::http::console::fields::Problems;
use crate::http::console::owner::project_name;
use crate::http::console::pages;
use crate::http::console::session::SignedIn;
use crate::http::projects::{self, ProjectImage, ProjectMatches};
use crate::http::share_requests::DryRunView;

/// What the page shows besides the form's own values.
pub(super) struct Shown<'a> {
    pub(super) choices: &'a Choices,
    pub(super) matches: Option<&'a ProjectMatches>,
    pub(super) problems: &'a Problems,
    pub(super) dry_run: Option<&'a DryRunView>,
}

fn image_field(s: &SignedIn, form: &RequestForm, shown: &Shown<'_>) -> Markup {
    let problems = shown.problems;
    let option = |image: &ProjectImage| {
        let name = image.name.clone().unwrap_or_else(|| "(no name)".into());
        html! {
            option value=(image.id) selected[image.id == form.image_id] {
                (name) " — " (image.visibility) ", " (image.id)
            }
        }
    };
    html! {
        @match shown.choices {
            None => {
                label for="image_id" { "Image id (a Glance image your project owns)" }
                (problems.beside("image_id"))
                input id="image_id" name="image_id" type="text" value=(form.image_id) required
                    aria-describedby=[problems.described_by("image_id")] aria-invalid=[problems.invalid("image_id")];
            }
            Some(projects) => {
                label for="image_id" { "Image (one your project owns and can share)" }
                (problems.beside("image_id"))
                select id="image_id" name="image_id" required
                    aria-describedby=[problems.described_by("image_id")] aria-invalid=[problems.invalid("image_id")] {
                    option value="" { "Choose an image" }
                    @if let [(_, images)] = projects.as_slice() {
                        @for image in images { (option(image)) }
                    } @else {
                        @for (project, images) in projects {
                            optgroup label={ "Project " (project_name(s, project)) } {
                                @for image in images { (option(image)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn checkbox(value: &str, id: &str, label: &str, checked: bool) -> Markup {
    html! {
        div.check {
            input type="checkbox" id={ "target-" (id) } name="target" value=(value) checked[checked];
            label for={ "target-" (id) } { (label) }
        }
    }
}

fn targets_field(form: &RequestForm, shown: &Shown<'_>) -> Markup {
    let problems = shown.problems;
    let fresh: Vec<_> = shown
        .matches
        .map(|m| {
            m.items
                .iter()
                .filter(|p| !form.targets.iter().any(|t| t.id == p.id))
                .collect()
        })
        .unwrap_or_default();
    let same_name = |name: &str| fresh.iter().filter(|p| p.name == name).count() > 1;
    html! {
        fieldset id="targets" aria-describedby=[problems.described_by("targets")] {
            legend { "Share with these projects" }
            (problems.beside("targets"))
            @if form.targets.is_empty() {
                p.hint { "None chosen yet: find projects by name, then tick them." }
            }
            @for t in &form.targets { (checkbox(&t.value(), &t.id, &t.name, true)) }
            label for="search" { "Find projects by name (at least " (projects::MIN_SEARCH_CHARS) " characters)" }
            (problems.beside("search"))
            div.search {
                input id="search" name="search" type="search" value=(form.search) maxlength=(projects::MAX_SEARCH_CHARS)
                    aria-describedby=[problems.described_by("search")] aria-invalid=[problems.invalid("search")];
                button type="submit" name="action" value="search" formnovalidate { "Search" }
            }
            @if let Some(m) = shown.matches {
                @if fresh.is_empty() {
                    p.hint { "No other project matches “" (form.search.trim()) "”." }
                } @else {
                    p.hint { "Projects matching “" (form.search.trim()) "”: tick those to share with." }
                    @for p in &fresh {
                        @let label = if same_name(&p.name) { format!("{} (domain {})", p.name, p.domain_id) } else { p.name.clone() };
                        (checkbox(&format!("{} {}", p.id, p.name), &p.id, &label, false))
                    }
                }
                @if m.truncated { p.hint { "More projects match: type more of the name." } }
            }
        }
    }
}

fn dry_run_section(dry: &DryRunView) -> Markup {
    html! {
        section.dry-run aria-labelledby="check-title" {
            h2 id="check-title" {
                @if dry.valid { "Check: the request would pass validation" }
                @else { "Check: the request would not pass validation" }
            }
            p { "Nothing was filed: this is what Keystone and Glance say now." }
            dl {
                dt { "Image" } dd {
                    @match &dry.image {
                        Some(i) => { (i.name.as_deref().unwrap_or("(no name)")) " (" (i.visibility) ")" }
                        None => "not found",
                    }
                }
                dt { "Region" } dd { (dry.region) }
            }
            @if !dry.targets.is_empty() {
                table {
                    caption { "The targets, as Keystone resolves them" }
                    thead { tr { th scope="col" { "Target" } th scope="col" { "Project" } th scope="col" { "Domain" } } }
                    tbody {
                        @for t in &dry.targets {
                            tr {
                                td { code { (t.target) } }
                                td { (t.project_name.as_deref().unwrap_or("not resolved")) }
                                td { (t.domain_id.as_deref().unwrap_or("—")) }
                            }
                        }
                    }
                }
            }
            @if !dry.warnings.is_empty() {
                h3 { "Warnings approvers will see" }
                ul { @for w in &dry.warnings { li { (w.message) } } }
            }
        }
    }
}

pub(super) fn render(s: &SignedIn, status: StatusCode, form: &RequestForm, shown: &Shown<'_>) -> Response {
    let problems = shown.problems;
    let body = html! {
        p { "Ask for an image of your project to be shared with other projects. "
            "Check shows what validation would find; nothing is filed until File request." }
        @if let Some(dry) = shown.dry_run { (dry_run_section(dry)) }
        form.request method="post" action="/console/requests/new" {
            input type="hidden" name="csrf" value=(s.csrf);
            input type="hidden" name="key" value=(form.key);
            (problems.summary())
            (image_field(s, form, shown))
            (targets_field(form, shown))
            label for="reason" { "Why (required: approvers read it, the audit log keeps it)" }
            (problems.beside("reason"))
            textarea id="reason" name="reason" rows="3" maxlength="1000" required
                aria-describedby=[problems.described_by("reason")] aria-invalid=[problems.invalid("reason")] { (form.reason) }
            label for="expires_at" { "Expires (optional, UTC): the shares end on their own then" }
            (problems.beside("expires_at"))
            input id="expires_at" name="expires_at" type="datetime-local" value=(form.expires_at)
                aria-describedby=[problems.described_by("expires_at")] aria-invalid=[problems.invalid("expires_at")];
            div.actions {
                button type="submit" name="action" value="check" { "Check" }
                button type="submit" name="action" value="file" { "File request" }
                a href="/console/shared-by-me" { "Back" }
            }
        }
    };
    pages::page(status, pages::layout("New share request", Some(s), None, body))
}
