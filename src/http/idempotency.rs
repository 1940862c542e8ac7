//! `Idempotency-Key` for every POST. A handler opens its transaction with [`begin`], does its
//! work in it, and ends with [`finish`], which saves the response in that same transaction:
//! the work and the saved response commit together or not at all.

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Postgres, Transaction};

use super::extract::{Caller, IdempotencyKey};
use super::{ApiError, AppState};
use crate::db;
use crate::domain::canonical_json;

/// A JSON response the API can also save and replay.
#[derive(Debug, Clone)]
pub struct Saved {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Vec<u8>,
}

impl Saved {
    pub fn json(status: StatusCode, body: &impl Serialize) -> Self {
        let body = serde_json::to_vec(body).expect("response bodies always serialize");
        Saved {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl IntoResponse for Saved {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(name, value);
            }
        }
        response
    }
}

/// The key a request is working under.
pub struct Claim {
    principal: String,
    key: String,
    hash: Vec<u8>,
}

/// What [`begin`] found.
pub enum Begun {
    /// Go ahead in this transaction.
    Proceed(Transaction<'static, Postgres>, Option<Claim>),
    /// The key was used before with the same request: answer as then.
    Replay(Response),
}

/// The request's identity for comparison: method, path and the body's meaning.
fn fingerprint(method: &Method, path: &str, document: &Value) -> Vec<u8> {
    Sha256::new()
        .chain_update(method.as_str())
        .chain_update([0])
        .chain_update(path)
        .chain_update([0])
        .chain_update(canonical_json(document))
        .finalize()
        .to_vec()
}

pub async fn begin(
    state: &AppState,
    caller: &Caller,
    key: IdempotencyKey,
    method: &Method,
    path: &str,
    document: &Value,
) -> Result<Begun, ApiError> {
    let mut tx = state.pool.begin().await?;
    // The jobs this call queues carry its request id to the worker, OpenStack and the events,
    // and its trace to the worker's spans.
    if let Some(request_id) = &caller.request_id {
        let trace = crate::telemetry::trace::current();
        db::jobs::carry_origin(&mut tx, db::jobs::Origin { request_id, trace }).await?;
    }
    let Some(key) = key.0 else {
        return Ok(Begun::Proceed(tx, None));
    };
    let principal = key_owner(caller);
    if !db::idempotency::try_lock(&mut tx, &principal, &key).await? {
        return Err(ApiError::IdempotencyKeyInFlight);
    }
    let hash = fingerprint(method, path, document);
    match db::idempotency::find(&mut tx, &principal, &key, state.config.idempotency_ttl_hours).await? {
        Some(saved) if saved.request_hash != hash => Err(ApiError::IdempotencyKeyReused),
        Some(saved) => Ok(Begun::Replay(replay(saved))),
        None => Ok(Begun::Proceed(tx, Some(Claim { principal, key, hash }))),
    }
}

/// Whose key space an `Idempotency-Key` lives in: the principal's, and for a key acting for
/// a user, that user's within it. A portal sends the same key for each user's form; one user's
/// answer must never be replayed to another.
fn key_owner(caller: &Caller) -> String {
    match &caller.on_behalf_of {
        // U+001F (unit separator): a control character no Keystone id and no key name holds.
        Some(_) => format!("{}\u{1f}{}", caller.principal.name, caller.subject),
        None => caller.principal.name.clone(),
    }
}

fn replay(saved: db::idempotency::Saved) -> Response {
    let headers = saved
        .response_headers
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((HeaderName::try_from(name.as_str()).ok()?, value.as_str()?.to_owned())))
        .collect();
    let status = StatusCode::from_u16(saved.response_status as u16).unwrap_or(StatusCode::OK);
    let mut response = Saved {
        status,
        headers,
        body: saved.response_body,
    }
    .into_response();
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

/// Saves `response` under the claimed key, inside the transaction that did the work.
pub async fn finish(tx: &mut PgConnection, claim: Option<Claim>, response: &Saved) -> Result<(), ApiError> {
    let Some(claim) = claim else { return Ok(()) };
    let headers: Map<String, Value> = response
        .headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), Value::String(v.clone())))
        .collect();
    db::idempotency::save(
        tx,
        &claim.principal,
        &claim.key,
        &claim.hash,
        response.status.as_u16(),
        &Value::Object(headers),
        &response.body,
    )
    .await?;
    Ok(())
}
