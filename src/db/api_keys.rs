//! API keys for services. A key is `gsb_` followed by 43 characters of randomness; only its
//! SHA-256 is stored, so a database dump does not hand out access.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{Principal, Role};

const PREFIX: &str = "gsb_";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: RoleText,
    pub projects: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A role as stored; the column's check constraint keeps it valid.
#[derive(Debug, Clone, Copy)]
pub struct RoleText(pub Role);

impl TryFrom<String> for RoleText {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map(RoleText)
    }
}

fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Creates a key and returns it with the only copy of its secret.
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: Role,
    projects: &[String],
) -> Result<(ApiKey, String), sqlx::Error> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let row = sqlx::query_as::<_, ApiKey>(
        "insert into api_keys (id, name, role, projects, key_hash) values ($1, $2, $3, $4, $5)
         returning id, name, role, projects, created_at, revoked_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(role.as_str())
    .bind(projects)
    .bind(hash(&key))
    .fetch_one(pool)
    .await?;
    Ok((row, key))
}

pub async fn list(pool: &PgPool) -> Result<Vec<ApiKey>, sqlx::Error> {
    sqlx::query_as("select id, name, role, projects, created_at, revoked_at from api_keys order by created_at, name")
        .fetch_all(pool)
        .await
}

/// Revokes a key by name; returns whether a live key was revoked.
pub async fn revoke(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update api_keys set revoked_at = now() where name = $1 and revoked_at is null")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The principal a presented key stands for, if it is a live key.
pub async fn authenticate(pool: &PgPool, key: &str) -> Result<Option<Principal>, sqlx::Error> {
    if !key.starts_with(PREFIX) {
        return Ok(None);
    }
    let row = sqlx::query_as::<_, ApiKey>(
        "select id, name, role, projects, created_at, revoked_at from api_keys
         where key_hash = $1 and revoked_at is null",
    )
    .bind(hash(key))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|k| Principal::api_key(k.name, k.role.0, &k.projects)))
}
