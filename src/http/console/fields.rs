//! What a form page says about its fields: each problem beside its field (the field names
//! it with `aria-describedby` and is `aria-invalid`), all of them in a summary at the top of
//! the form linking to each, and those that belong to no field in the summary alone. The
//! problems are the API's own (`FieldError`s), or the console's for what it reads itself
//! (a date and time).

use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{Markup, html};

use crate::domain::FieldError;

/// The problems of one form, each on one of its `fields` (an HTML id) or on none.
pub struct Problems {
    fields: &'static [&'static str],
    items: Vec<(Option<&'static str>, String)>,
}

impl Problems {
    /// No problems yet, on a form with these field ids.
    pub fn on(fields: &'static [&'static str]) -> Self {
        Problems {
            fields,
            items: Vec::new(),
        }
    }

    /// A problem with `field` (an API path such as `targets[2]` counts for `targets`).
    pub fn add(&mut self, field: &str, reason: impl Into<String>) {
        let base = field.split('[').next().unwrap_or(field);
        let known = self.fields.iter().copied().find(|f| *f == base);
        self.items.push((known, reason.into()));
    }

    /// The API's field errors.
    pub fn extend(&mut self, errors: &[FieldError]) {
        for e in errors {
            self.add(&e.field, e.reason.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn of(&self, field: &str) -> impl Iterator<Item = &str> {
        self.items
            .iter()
            .filter(move |(f, _)| *f == Some(field))
            .map(|(_, reason)| reason.as_str())
    }

    fn has(&self, field: &str) -> bool {
        self.of(field).next().is_some()
    }

    /// The id of `field`'s error text, for its `aria-describedby`, when it has one.
    pub fn described_by(&self, field: &str) -> Option<String> {
        self.has(field).then(|| format!("{field}-error"))
    }

    /// `aria-invalid` of `field`.
    pub fn invalid(&self, field: &str) -> Option<&'static str> {
        self.has(field).then_some("true")
    }

    /// The error text shown beside `field`.
    pub fn beside(&self, field: &str) -> Markup {
        let reasons: Vec<&str> = self.of(field).collect();
        html! {
            @if !reasons.is_empty() {
                p.field-error id={ (field) "-error" } { (reasons.join(" ")) }
            }
        }
    }

    /// Every problem, at the top of the form: those of a field link to it.
    pub fn summary(&self) -> Markup {
        html! {
            @if !self.items.is_empty() {
                div.problem role="alert" {
                    p { strong { "Nothing was filed or changed. Correct this first:" } }
                    ul {
                        @for (field, reason) in &self.items {
                            li { @match field {
                                Some(f) => a href={ "#" (f) } { (reason) },
                                None => (reason),
                            } }
                        }
                    }
                }
            }
        }
    }
}

/// The UTC time an `<input type="datetime-local">` holds (`2026-12-31T14:30`, seconds
/// optional); `Ok(None)` when it is empty.
pub fn utc_time(text: &str) -> Result<Option<DateTime<Utc>>, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|t| Some(t.and_utc()))
        .ok_or("give a date and time (UTC), such as 2027-06-30 12:00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_sit_beside_their_field_and_all_are_in_the_summary() {
        let mut problems = Problems::on(&["reason", "targets"]);
        assert!(problems.is_empty() && problems.described_by("reason").is_none());
        problems.extend(&[
            FieldError::new("targets[1]", "no such project"),
            FieldError::new("region", "unknown"),
        ]);
        assert_eq!(problems.described_by("targets").as_deref(), Some("targets-error"));
        assert_eq!(problems.invalid("reason"), None);
        let beside = problems.beside("targets").into_string();
        assert!(beside.contains(r#"id="targets-error""#) && beside.contains("no such project"));
        let summary = problems.summary().into_string();
        assert!(
            summary.contains("href=\"#targets\"") && summary.contains("unknown"),
            "{summary}"
        );
    }

    #[test]
    fn a_datetime_local_value_is_read_as_utc() {
        assert_eq!(utc_time(" "), Ok(None));
        let t = utc_time("2027-06-30T12:00").unwrap().unwrap();
        assert_eq!(t.to_rfc3339(), "2027-06-30T12:00:00+00:00");
        assert!(utc_time("2027-06-30T12:00:05").unwrap().is_some());
        assert!(utc_time("tomorrow").is_err());
    }
}
