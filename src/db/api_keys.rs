//! API keys for services. A key is `gsb_` followed by 43 characters of randomness; only its
//! SHA-256 is stored, so a database dump does not hand out access. Creating and revoking a
//! key writes its audit event in the same transaction; the secret goes nowhere but to the
//! caller of [`create`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::audit::{self, NewEvent};
use crate::domain::{Action, Initiator, Principal, Role};

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

/// Creates a key and returns it with the only copy of its secret. The key and its audit
/// event (`create/key`: its id, name, role and projects, never the secret nor its hash)
/// are written in one transaction.
pub async fn create(
    pool: &PgPool,
    name: &str,
    role: Role,
    projects: &[String],
) -> Result<(ApiKey, String), sqlx::Error> {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as::<_, ApiKey>(
        "insert into api_keys (id, name, role, projects, key_hash) values ($1, $2, $3, $4, $5)
         returning id, name, role, projects, created_at, revoked_at",
    )
    .bind(Uuid::now_v7())
    .bind(name)
    .bind(role.as_str())
    .bind(projects)
    .bind(hash(&key))
    .fetch_one(&mut *tx)
    .await?;
    record(&mut tx, Action::CreateKey, &row).await?;
    tx.commit().await?;
    Ok((row, key))
}

/// Who changes keys: they are changed from the command line (`glance-share-broker keys`),
/// with database credentials, so the database user the change was made as.
async fn operator(tx: &mut PgConnection) -> Result<Initiator, sqlx::Error> {
    let user: String = sqlx::query_scalar("select session_user::text")
        .fetch_one(&mut *tx)
        .await?;
    Ok(Initiator {
        kind: "database_user",
        ..Initiator::service(&user)
    })
}

/// Records `action` on `key` in the audit log, inside `tx`. What identifies the key and
/// what it may do; nothing that would let anyone use it.
async fn record(tx: &mut PgConnection, action: Action, key: &ApiKey) -> Result<(), sqlx::Error> {
    let initiator = operator(tx).await?;
    let event = NewEvent {
        details: json!({
            "key": {
                "id": key.id,
                "name": key.name,
                "role": key.role.0.as_str(),
                "projects": key.projects,
            }
        }),
        ..NewEvent::attempt(&initiator, action)
    };
    // Keys are announced to no webhook: storing the event is all there is to record.
    audit::insert(tx, OBSERVER, event).await?;
    Ok(())
}

/// The observer of key changes: the command line, not a broker instance.
pub const OBSERVER: &str = "glance-share-broker keys";

pub async fn list(pool: &PgPool) -> Result<Vec<ApiKey>, sqlx::Error> {
    sqlx::query_as("select id, name, role, projects, created_at, revoked_at from api_keys order by created_at, name")
        .fetch_all(pool)
        .await
}

/// Revokes a key by name; returns whether a live key was revoked. The revocation and its
/// audit event (`delete/key`) are written in one transaction.
pub async fn revoke(pool: &PgPool, name: &str) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let revoked = sqlx::query_as::<_, ApiKey>(
        "update api_keys set revoked_at = now() where name = $1 and revoked_at is null
         returning id, name, role, projects, created_at, revoked_at",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(key) = revoked else {
        return Ok(false);
    };
    record(&mut tx, Action::DeleteKey, &key).await?;
    tx.commit().await?;
    Ok(true)
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
