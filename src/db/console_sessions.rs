//! The browser console's sessions: a row per signed-in browser, keyed by the SHA-256 of the
//! cookie's secret, holding the caller's credential sealed under a key only the cookie
//! yields (see `http::console::session`). Rows past `expires_at` are never returned.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// A session as stored: what the cookie's secret unseals.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredSession {
    pub kind: String,
    pub sealed_credential: Vec<u8>,
    pub nonce: Vec<u8>,
    pub principal: String,
    pub expires_at: DateTime<Utc>,
}

/// Records a new session.
pub async fn insert(pool: &PgPool, id_hash: &[u8], session: &StoredSession) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into console_sessions (id_hash, kind, sealed_credential, nonce, principal, expires_at)
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id_hash)
    .bind(&session.kind)
    .bind(&session.sealed_credential)
    .bind(&session.nonce)
    .bind(&session.principal)
    .bind(session.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The live session whose secret hashes to `id_hash`, if any.
pub async fn find(pool: &PgPool, id_hash: &[u8]) -> Result<Option<StoredSession>, sqlx::Error> {
    sqlx::query_as(
        "select kind, sealed_credential, nonce, principal, expires_at from console_sessions
         where id_hash = $1 and expires_at > now()",
    )
    .bind(id_hash)
    .fetch_optional(pool)
    .await
}

/// Ends a session (sign-out, or a credential the API no longer takes), and forgets every
/// expired one on the way; whether this one existed.
pub async fn delete(pool: &PgPool, id_hash: &[u8]) -> Result<bool, sqlx::Error> {
    let ended = sqlx::query("delete from console_sessions where id_hash = $1")
        .bind(id_hash)
        .execute(pool)
        .await?
        .rows_affected();
    sqlx::query("delete from console_sessions where expires_at <= now()")
        .execute(pool)
        .await?;
    Ok(ended > 0)
}
