//! An image's access history drawn as a picture: one row per project, one bar per grant from
//! the grant to its revoke (or on to now), coloured by the member's status, on a time axis.
//! Server-rendered inline SVG: the approver, the revoker and the reasons are in each bar's
//! `<title>` (shown on hover, no script), and the same facts are in the table the page puts
//! beneath it for keyboards and screen readers. Pure: it draws what the API's access history
//! said.

use std::collections::HashMap;
use std::fmt::Write;

use chrono::{DateTime, Duration, Utc};
use maud::{Markup, html};

use super::pages::utc;
use crate::http::access_report::AccessChange;

/// One grant: access from `granted` until `revoked` (or still).
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub granted: DateTime<Utc>,
    /// Who approved the request the grant carried out.
    pub approved_by: Option<String>,
    /// The member's status from each moment on: `pending` from the grant, then the
    /// consumer's answers.
    pub statuses: Vec<(DateTime<Utc>, &'static str)>,
    pub revoked: Option<Ended>,
}

/// How a grant ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub at: DateTime<Utc>,
    pub by: Option<String>,
    pub reason: Option<String>,
}

/// One project's grants in one region, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub project_id: String,
    pub region: String,
    pub spans: Vec<Span>,
}

/// The rows `changes` (oldest first) make, in the order the projects first got access. As
/// the API's replay reads them: access starts with a grant and ends with a revoke; an
/// answer or a revoke with no grant open is ignored; a grant while one is open ends it.
pub fn rows(changes: &[AccessChange]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for c in changes {
        let (Some(project), Some(region)) = (&c.project_id, &c.region) else {
            continue;
        };
        let at = rows
            .iter()
            .position(|r| r.project_id == *project && r.region == *region);
        let open = at
            .and_then(|i| rows[i].spans.last_mut())
            .filter(|s| s.revoked.is_none());
        match (c.change.as_str(), open) {
            ("granted", open) => {
                if let Some(open) = open {
                    open.revoked = Some(Ended {
                        at: c.at,
                        by: None,
                        reason: None,
                    });
                }
                let span = Span {
                    granted: c.at,
                    approved_by: c.by.clone(),
                    statuses: vec![(c.at, "pending")],
                    revoked: None,
                };
                match at {
                    Some(i) => rows[i].spans.push(span),
                    None => rows.push(Row {
                        project_id: project.clone(),
                        region: region.clone(),
                        spans: vec![span],
                    }),
                }
            }
            ("accepted", Some(open)) => open.statuses.push((c.at, "accepted")),
            ("rejected", Some(open)) => open.statuses.push((c.at, "rejected")),
            ("revoked", Some(open)) => {
                open.revoked = Some(Ended {
                    at: c.at,
                    by: c.by.clone(),
                    reason: c.reason.clone(),
                });
            }
            _ => {}
        }
    }
    rows
}

/// The picture's geometry, in SVG user units (the picture scales to the page's width).
const WIDTH: f64 = 960.0;
const LABELS: f64 = 250.0;
const RIGHT: f64 = 60.0;
const ROW: f64 = 40.0;
const BAR: f64 = 18.0;
const TOP: f64 = 14.0;
const AXIS: f64 = 62.0;
const TICKS: i32 = 5;

/// The time axis: from a little before the first grant to now.
struct Axis {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

impl Axis {
    fn x(&self, at: DateTime<Utc>) -> f64 {
        let whole = (self.to - self.from).num_milliseconds().max(1) as f64;
        let part = (at - self.from).num_milliseconds() as f64;
        LABELS + (WIDTH - LABELS - RIGHT) * (part / whole).clamp(0.0, 1.0)
    }
}

/// How a project is labelled: its name when known, else its id.
fn label(row: &Row, names: &HashMap<String, String>) -> String {
    let text = names
        .get(&row.project_id)
        .cloned()
        .unwrap_or_else(|| row.project_id.clone());
    if text.chars().count() > 30 {
        format!("{}…", text.chars().take(29).collect::<String>())
    } else {
        text
    }
}

/// What a bar's tooltip says: the whole grant in one sentence.
fn describe(row: &Row, span: &Span, names: &HashMap<String, String>) -> String {
    let mut text = format!(
        "{} ({}) in {}: granted {}",
        names.get(&row.project_id).map_or("project", String::as_str),
        row.project_id,
        row.region,
        utc(span.granted)
    );
    if let Some(by) = &span.approved_by {
        let _ = write!(text, ", approved by {by}");
    }
    for (at, status) in span.statuses.iter().skip(1) {
        let _ = write!(text, "; {status} {}", utc(*at));
    }
    match &span.revoked {
        Some(end) => {
            let _ = write!(text, "; revoked {}", utc(end.at));
            if let Some(by) = &end.by {
                let _ = write!(text, " by {by}");
            }
            if let Some(reason) = &end.reason {
                let _ = write!(text, ": “{reason}”");
            }
        }
        None => text.push_str("; still has access"),
    }
    text
}

/// The picture of `rows` up to `now`, with a marker at `at` when one is asked about.
/// `names` labels projects by name where the API named them.
pub fn svg(rows: &[Row], names: &HashMap<String, String>, now: DateTime<Utc>, at: Option<DateTime<Utc>>) -> Markup {
    let first = rows
        .iter()
        .flat_map(|r| r.spans.first())
        .map(|s| s.granted)
        .chain(at)
        .min()
        .unwrap_or(now);
    let last = now.max(at.unwrap_or(now));
    let pad = ((last - first) / 30).max(Duration::seconds(1));
    let axis = Axis {
        from: first - pad,
        to: last + pad,
    };
    let height = TOP + ROW * rows.len() as f64 + AXIS;
    let bottom = TOP + ROW * rows.len() as f64;
    let f = |v: f64| format!("{v:.1}");
    html! {
        svg.access xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (f(height)) }
            role="img" aria-labelledby="picture-title picture-desc" {
            title id="picture-title" { "Access to the image, one row per project" }
            desc id="picture-desc" {
                "Each bar runs from a grant to its revoke, or to now; the table below lists the same changes."
            }
            @for tick in 0..=TICKS {
                @let t = axis.from + (axis.to - axis.from) * tick / TICKS;
                @let x = f(axis.x(t));
                g.tick {
                    line x1=(x) x2=(x) y1=(f(TOP - 6.0)) y2=(f(bottom)) {}
                    text x=(x) y=(f(bottom + 18.0)) { (t.format("%Y-%m-%d")) }
                    text x=(x) y=(f(bottom + 34.0)) { (t.format("%H:%M:%S")) }
                }
            }
            @for (i, row) in rows.iter().enumerate() {
                @let y = TOP + ROW * i as f64;
                g.row {
                    text.label x="8" y=(f(y + 15.0)) { (label(row, names)) }
                    text.region x="8" y=(f(y + 30.0)) { (row.region) }
                    @for span in &row.spans {
                        @let end = span.revoked.as_ref().map_or(now, |e| e.at);
                        g.span {
                            title { (describe(row, span, names)) }
                            @for (k, (from, status)) in span.statuses.iter().enumerate() {
                                @let to = span.statuses.get(k + 1).map_or(end, |next| next.0);
                                @let (x1, x2) = (axis.x(*from), axis.x(to));
                                rect class={ "seg " (status) } x=(f(x1)) y=(f(y + 6.0))
                                    width=(f((x2 - x1).max(2.0))) height=(BAR) {}
                            }
                            @match &span.revoked {
                                Some(end) => {
                                    @let x = f(axis.x(end.at));
                                    line.revoke x1=(x) x2=(x) y1=(f(y + 2.0)) y2=(f(y + 6.0 + BAR + 4.0)) {}
                                }
                                None => {
                                    @let x = axis.x(now);
                                    @let points = format!(
                                        "{},{} {},{} {},{}",
                                        f(x), f(y + 3.0), f(x + 9.0), f(y + 6.0 + BAR / 2.0), f(x), f(y + 9.0 + BAR)
                                    );
                                    polygon.open-end points=(points) {}
                                }
                            }
                        }
                    }
                }
            }
            @let x = f(axis.x(now));
            line.now x1=(x) x2=(x) y1=(f(TOP - 10.0)) y2=(f(bottom)) {}
            text.marker x=(x) y=(f(TOP - 2.0)) { "now" }
            @if let Some(at) = at {
                @let x = f(axis.x(at));
                line.at x1=(x) x2=(x) y1=(f(TOP - 10.0)) y2=(f(bottom)) {}
                text.marker x=(x) y=(f(bottom + 52.0)) { "the moment asked about" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(minute: i64, change: &str, project: &str, by: Option<&str>) -> AccessChange {
        AccessChange {
            at: DateTime::from_timestamp(minute * 60, 0).unwrap(),
            change: change.into(),
            image_id: None,
            image_name: None,
            owner_project_id: None,
            project_id: Some(project.into()),
            region: Some("RegionOne".into()),
            share_id: None,
            request_id: None,
            by: by.map(str::to_owned),
            reason: (change == "revoked").then(|| "moved on".to_owned()),
            observed_in_glance: false,
            event_id: uuid::Uuid::nil(),
        }
    }

    fn minute(m: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(m * 60, 0).unwrap()
    }

    #[test]
    fn each_grant_is_a_bar_to_its_revoke_and_a_regrant_a_second_bar_on_the_same_row() {
        let rows = rows(&[
            change(1, "granted", "b", Some("dave")),
            change(2, "granted", "c", Some("erin")),
            change(3, "accepted", "b", Some("worker")),
            change(4, "revoked", "b", Some("alice")),
            change(5, "accepted", "b", Some("worker")),
            change(6, "granted", "b", Some("dave")),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].project_id.as_str(), rows[0].spans.len()), ("b", 2));
        let first = &rows[0].spans[0];
        assert_eq!(first.statuses, [(minute(1), "pending"), (minute(3), "accepted")]);
        assert_eq!(first.approved_by.as_deref(), Some("dave"));
        let end = first.revoked.as_ref().unwrap();
        assert_eq!(
            (end.at, end.by.as_deref(), end.reason.as_deref()),
            (minute(4), Some("alice"), Some("moved on"))
        );
        // The answer after the revoke changed nothing; the regrant is open.
        assert_eq!(rows[0].spans[1].statuses, [(minute(6), "pending")]);
        assert_eq!(rows[0].spans[1].revoked, None);
        assert_eq!(rows[1].spans[0].revoked, None);
    }

    #[test]
    fn the_picture_has_a_titled_bar_per_grant_the_revoker_and_reason_and_a_marker_at_the_moment() {
        let rows = rows(&[
            change(1, "granted", "b", Some("dave")),
            change(4, "revoked", "b", Some("alice")),
            change(6, "granted", "c", Some("erin")),
        ]);
        let names = HashMap::from([("b".to_owned(), "proj-b".to_owned())]);
        let svg = svg(&rows, &names, minute(10), Some(minute(2))).into_string();
        assert_eq!(svg.matches("<g class=\"span\">").count(), 2);
        assert!(svg.contains("<title>proj-b (b) in RegionOne: granted 1970-01-01 00:01:00 UTC, approved by dave; revoked 1970-01-01 00:04:00 UTC by alice: “moved on”</title>"), "{svg}");
        assert!(svg.contains("approved by erin; still has access"), "{svg}");
        assert!(svg.contains(r#"class="seg pending""#) && svg.contains("class=\"revoke\"") && svg.contains("open-end"));
        assert!(svg.contains("class=\"at\"") && svg.contains(">proj-b</text>") && svg.contains(">c</text>"));
        assert!(!svg.contains("style="), "the CSP allows no inline style");
    }

    #[test]
    fn bars_lie_on_the_axis_in_time_order_and_a_picture_without_grants_still_draws() {
        let axis = Axis {
            from: minute(0),
            to: minute(10),
        };
        assert_eq!(axis.x(minute(0)), LABELS);
        assert_eq!(axis.x(minute(10)), WIDTH - RIGHT);
        assert!(axis.x(minute(3)) < axis.x(minute(4)));
        assert_eq!(axis.x(minute(20)), WIDTH - RIGHT, "clamped to the axis");
        let empty = svg(&[], &HashMap::new(), minute(10), None).into_string();
        assert!(empty.contains("now") && !empty.contains("class=\"span\""));
    }
}
