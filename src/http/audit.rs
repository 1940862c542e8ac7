//! `/v1/audit-events`: the audit log for auditors: filtered pages, exports streamed as
//! NDJSON, CSV or CADF JSON, and the check of the hash chain.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use futures_util::{StreamExt, TryStreamExt};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

mod export;

use super::extract::{Caller, Listing, PageQuery, Query};
use super::pagination::{Limit, Page, SeqCursor};
use super::{ApiError, AppState};
use crate::db::{self, audit::Event, audit::EventFilter};
use crate::domain::{Capability, ChainLink, ChainReport, ChainState};

/// Refuses the call unless the caller audits the whole cloud (or is an admin): the log
/// names every project, so project-scoped auditors are not enough.
pub(super) fn require_auditor(caller: &Caller) -> Result<(), ApiError> {
    if caller.principal.may(Capability::Audit, None) {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "the audit log needs the auditor role for the whole cloud, or admin (the caller has `{}`)",
        caller.principal.role_names()
    )))
}

/// How the events come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A page: `{"items": [...], "next_cursor": ...}`.
    Json,
    /// Every matching event, one JSON object a line.
    Ndjson,
    /// Every matching event, one row a line, after a header row.
    Csv,
    /// Every matching event as a DMTF CADF event, in one JSON array.
    Cadf,
}

impl Format {
    const MEDIA_TYPES: [(Format, &'static str); 5] = [
        (Format::Json, "application/json"),
        (Format::Ndjson, "application/x-ndjson"),
        (Format::Ndjson, "application/jsonl"),
        (Format::Csv, "text/csv"),
        (Format::Cadf, "application/cadf+json"),
    ];

    fn media_type(self) -> &'static str {
        Format::MEDIA_TYPES
            .iter()
            .find(|(f, _)| *f == self)
            .map(|(_, m)| *m)
            .expect("every format has a media type")
    }

    /// The first media type in `Accept` that names a format; JSON otherwise.
    fn from_accept(headers: &HeaderMap) -> Format {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        accept
            .split(',')
            .filter_map(|item| item.split(';').next())
            .find_map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                Format::MEDIA_TYPES.iter().find(|(_, m)| *m == mime).map(|(f, _)| *f)
            })
            .unwrap_or(Format::Json)
    }
}

/// How an audit listing comes back, and from where: the page (JSON) or the export's form.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditPaging {
    /// `json` (a page; the default), `ndjson`, `csv` or `cadf` (exports of every matching
    /// event, streamed). Overrides `Accept`.
    #[param(inline)]
    pub format: Option<Format>,
    /// The `next_cursor` of the previous page; an export starts after it.
    #[param(value_type = Option<String>, pattern = "^[A-Za-z0-9_-]{10}[AEIMQUYcgkosw048]$")]
    pub cursor: Option<SeqCursor>,
    /// Page size, 1 to 200 (default 50); exports are not paged.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<Limit>,
}

impl PageQuery for AuditPaging {
    const PARAMETERS: &'static [&'static str] = &["format", "cursor", "limit"];
}

/// List or export audit events (auditors and admins), in chain order, oldest first.
///
/// JSON comes in pages; `format=ndjson|csv|cadf` (or `Accept: application/x-ndjson`,
/// `text/csv`, `application/cadf+json`) exports every matching event in one response,
/// streamed as it is read: memory stays constant however long the log is. The log lists
/// sealed events: each read first seals the events committed before it. Events appended
/// while a caller pages or exports never make it skip or repeat one (the cursor is a place
/// in the chain, and an event that commits late is placed after the others). In CSV, a cell
/// that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so a
/// spreadsheet shows the caller-written text instead of running it as a formula.
#[utoipa::path(
    get, path = "/v1/audit-events", tag = "audit",
    params(EventFilter, AuditPaging),
    responses(
        (status = 200, description = "A page, or an export", content(
            (Page<Event> = "application/json"),
            (Event = "application/x-ndjson"),
            (String = "text/csv"),
            (Vec<Object> = "application/cadf+json"),
        )),
        (status = 403, description = "Not an auditor"),
    ),
    security(("api_key" = []))
)]
pub async fn list_audit_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Listing { filter, paging }: Listing<EventFilter, AuditPaging>,
) -> Result<Response, ApiError> {
    require_auditor(&caller)?;
    let format = paging.format.unwrap_or_else(|| Format::from_accept(&headers));
    let after = paging.cursor.map_or(0, |c| c.0);
    if format == Format::Json {
        let limit = paging.limit.unwrap_or_default();
        let rows = db::audit::page(&state.log(), &filter, after, limit.fetch()).await?;
        return Ok(axum::Json(Page::new(rows, limit, SeqCursor::after, |e| e)).into_response());
    }
    let mut batches = Box::pin(db::audit::batches(state.log(), filter, after).peekable());
    // A database that fails at once is a 503 problem, not a 200 with a broken body.
    if let Some(Err(_)) = batches.as_mut().peek().await {
        let Some(Err(e)) = batches.next().await else {
            unreachable!("peeked an error")
        };
        return Err(e.into());
    }
    let body = export::body(format, batches).inspect_err(|e| tracing::error!(error = %e, "audit export failed midway"));
    Ok(([(header::CONTENT_TYPE, format.media_type())], Body::from_stream(body)).into_response())
}

/// What the check of the chain compares it with, besides its checkpoints.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct VerifyAuditChain {
    /// Anchors kept outside the database (logged `audit.checkpoint` lines, an earlier
    /// report's `head`), `<chain_pos>:<hash>`, comma-separated: the check fails unless the
    /// chain holds each hash at its place.
    #[param(value_type = Option<String>, example = "12:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        pattern = "^ *[1-9][0-9]{0,17}:[0-9A-Fa-f]{64} *(, *[1-9][0-9]{0,17}:[0-9A-Fa-f]{64} *)*$")]
    pub expect: Option<Anchors>,
}

/// `<chain_pos>:<hash>`, comma-separated.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "String")]
pub struct Anchors(Vec<ChainLink>);

impl TryFrom<String> for Anchors {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.split(',').map(str::parse).collect::<Result<_, _>>().map(Anchors)
    }
}

/// Verify the audit chain (auditors and admins).
///
/// Seals the events committed so far, walks every sealed event in chain order (in constant
/// memory) and names the first broken link: a missing place, a `prev_hash` that is not the
/// hash of the event before, or content that no longer gives the stored hash. Then compares
/// every checkpoint with the chain, which also catches a deleted tail and history rewritten
/// with fresh hashes, and with the anchors given in `expect`, which live outside the
/// database, and counts the events still unsealed: one unsealed for more than 60 s
/// (no sealer runs) fails the check. When all holds, records a new checkpoint of the sealed
/// head. A broken chain is a 200 with `ok: false`. After `audit archive`, the walk starts
/// after the last archived event (`archived`): the first event left must chain to its
/// recorded hash, so a partition removed without an archive is a broken link; checkpoints
/// and anchors up to it are counted as archived, not compared.
#[utoipa::path(
    get, path = "/v1/audit-events/verify", tag = "audit",
    params(VerifyAuditChain),
    responses(
        (status = 200, description = "What the check found", body = ChainReport),
        (status = 403, description = "Not an auditor"),
        (status = 422, description = "A bad anchor in `expect`"),
    ),
    security(("api_key" = []))
)]
pub async fn verify_audit_chain(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<VerifyAuditChain>,
) -> Result<axum::Json<ChainReport>, ApiError> {
    require_auditor(&caller)?;
    let taken_by = format!("verify by {}", caller.principal.name);
    let anchors = q.expect.unwrap_or_default().0;
    Ok(axum::Json(
        db::audit::verify_anchored(&state.pool, &taken_by, &anchors).await?,
    ))
}

/// Where the audit chain stands (auditors and admins): its sealed head, the events waiting
/// for a seal, the last checkpoint, and what the last check found (by any replica, or
/// `audit verify`).
///
/// Reads, does not check: it walks nothing and records nothing (it seals what has committed
/// first, as every read of the log does). `GET /v1/audit-events/verify` checks the chain,
/// and each check is what a later call shows as `last_verification`.
#[utoipa::path(
    get, path = "/v1/audit-chain", tag = "audit",
    responses(
        (status = 200, description = "The chain's state", body = ChainState),
        (status = 403, description = "Not an auditor"),
    ),
    security(("api_key" = []))
)]
pub async fn get_audit_chain(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<ChainState>, ApiError> {
    require_auditor(&caller)?;
    Ok(axum::Json(db::audit::state(&state.pool).await?))
}
