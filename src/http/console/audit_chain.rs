//! The audit chain's state for auditors (the API's `get_audit_chain`): the sealed head, what
//! waits for a seal, the last checkpoint and what the last check found; and a form that
//! checks the chain now (the API's `verify_audit_chain`, which records a checkpoint when the
//! chain holds, so it is a POST with the session's CSRF token).

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::audit::audit_nav;
use super::pages::{self, utc};
use super::session::SignedIn;
use super::{checked, notice};
use crate::domain::{ChainState, Verification};
use crate::http::audit::{self, Anchors, VerifyAuditChain};
use crate::http::extract::Query;
use crate::http::{ApiError, AppState};

pub async fn page(State(state): State<AppState>, s: Result<SignedIn, Response>, RawQuery(query): RawQuery) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    match audit::get_audit_chain(State(state), s.caller.clone()).await {
        Ok(axum::Json(chain)) => pages::page(
            StatusCode::OK,
            pages::layout("Audit chain", Some(&s), notice(&query), body(&s, &chain)),
        ),
        Err(e) => pages::error_page(e),
    }
}

fn body(s: &SignedIn, chain: &ChainState) -> Markup {
    html! {
        (audit_nav("/console/audit/chain"))
        section aria-labelledby="last-check" {
            h2 id="last-check" { "Last check" }
            @match &chain.last_verification {
                Some(v) => (verification(v, chain)),
                None => p { "The chain has never been checked." },
            }
        }
        section aria-labelledby="head" {
            h2 id="head" { "Head" }
            dl.chain {
                @match &chain.head {
                    Some(head) => {
                        dt { "Position" } dd { (head.chain_pos) }
                        dt { "Hash" } dd { code.hash { (head.hash) } }
                        dt { "Sealed event" } dd { code { (head.event_id) } ", " (utc(head.occurred_at)) }
                    },
                    None => { dt { "Position" } dd { "none: the log is empty" } },
                }
                dt { "Waiting for a seal" } dd { (chain.unsealed_events) " events" }
            }
        }
        section aria-labelledby="checkpoint" {
            h2 id="checkpoint" { "Last checkpoint" }
            @match &chain.last_checkpoint {
                Some(c) => dl.chain {
                    dt { "Position" } dd { (c.chain_pos) }
                    dt { "Hash" } dd { code.hash { (c.hash) } }
                    dt { "Taken" } dd { (utc(c.taken_at)) " (" (c.taken_by) ")" }
                    dt { "Checkpoints" } dd { (chain.checkpoints) " in all" }
                },
                None => p { "No checkpoint yet." },
            }
        }
        form.verify method="post" action="/console/audit/chain/verify" {
            input type="hidden" name="csrf" value=(s.csrf);
            fieldset {
                legend { "Check the chain now" }
                label for="expect" { "Anchors kept outside the database (optional)" }
                p.hint id="expect-hint" { "<chain_pos>:<hash>, comma-separated, e.g. from an earlier head or a logged checkpoint." }
                input id="expect" name="expect" type="text" aria-describedby="expect-hint";
                button type="submit" { "Check the chain" }
            }
        }
    }
}

fn verification(v: &Verification, chain: &ChainState) -> Markup {
    let grown = match (&v.head, &chain.head) {
        (Some(then), Some(now)) => now.chain_pos - then.chain_pos,
        (None, Some(now)) => now.chain_pos,
        _ => 0,
    };
    html! {
        @if v.ok {
            p.notice.intact { strong { "Intact" } ": every link held and every checkpoint matched." }
        } @else {
            p.problem.broken role="alert" { strong { "Broken" } ": " (v.problem.as_deref().unwrap_or("")) }
        }
        dl.chain {
            dt { "When" } dd { (utc(v.verified_at)) " (" (v.verified_by) ")" }
            dt { "Events checked" } dd { (v.events_checked) }
            @if let Some(head) = &v.head {
                dt { "Head then" } dd { (head.chain_pos) " " code.hash { (head.hash) } }
            }
            dt { "Checkpoints compared" } dd { (v.checkpoints_checked) }
            dt { "Since then" } dd { (grown) " more events sealed" }
        }
    }
}

#[derive(Deserialize)]
struct VerifyForm {
    #[serde(default)]
    expect: String,
}

pub async fn verify(State(state): State<AppState>, s: Result<SignedIn, Response>, body: Bytes) -> Response {
    let s = match s {
        Ok(s) => s,
        Err(to_sign_in) => return to_sign_in,
    };
    let form: VerifyForm = match checked(&s, &body) {
        Ok(f) => f,
        Err(refused) => return refused.into_response(),
    };
    let expect = form.expect.trim();
    let expect = match (!expect.is_empty())
        .then(|| Anchors::try_from(expect.to_owned()))
        .transpose()
    {
        Ok(anchors) => anchors,
        Err(reason) => return pages::error_page(ApiError::field("expect", reason)),
    };
    match audit::verify_audit_chain(State(state), s.caller, Query(VerifyAuditChain { expect })).await {
        // What it found is recorded: the chain's page shows it as the last check.
        Ok(_) => Redirect::to("/console/audit/chain?done=verify").into_response(),
        Err(e) => pages::error_page(e),
    }
}
