//! Saved responses for `Idempotency-Key`. A key belongs to one principal. While a request
//! with a key runs, its transaction holds an advisory lock derived from the key, so a second
//! request with that key learns at once that the first is still in flight. Keys past their
//! time are deleted by the retention purge (`db::retention`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Saved {
    pub request_hash: Vec<u8>,
    pub response_status: i16,
    pub response_headers: Value,
    pub response_body: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

fn lock_key(principal: &str, key: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(principal)
        .chain_update([0])
        .chain_update(key)
        .finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("a SHA-256 digest has 8 bytes to spare"))
}

/// Takes the key's lock for this transaction; `false` when another transaction holds it.
pub async fn try_lock(tx: &mut PgConnection, principal: &str, key: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(lock_key(principal, key))
        .fetch_one(tx)
        .await
}

/// The saved response for a key, unless it is older than `ttl_hours`.
pub async fn find(
    tx: &mut PgConnection,
    principal: &str,
    key: &str,
    ttl_hours: i64,
) -> Result<Option<Saved>, sqlx::Error> {
    sqlx::query_as(
        "select request_hash, response_status, response_headers, response_body, created_at
         from idempotency_keys
         where principal = $1 and key = $2 and created_at > now() - make_interval(hours => $3::int)",
    )
    .bind(principal)
    .bind(key)
    .bind(ttl_hours)
    .fetch_optional(tx)
    .await
}

/// Saves the response to a key (replacing an expired one).
pub async fn save(
    tx: &mut PgConnection,
    principal: &str,
    key: &str,
    request_hash: &[u8],
    status: u16,
    headers: &Value,
    body: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into idempotency_keys (principal, key, request_hash, response_status, response_headers, response_body)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (principal, key) do update set
            request_hash = excluded.request_hash, response_status = excluded.response_status,
            response_headers = excluded.response_headers, response_body = excluded.response_body,
            created_at = now()",
    )
    .bind(principal)
    .bind(key)
    .bind(request_hash)
    .bind(status as i16)
    .bind(headers)
    .bind(body)
    .execute(tx)
    .await?;
    Ok(())
}
