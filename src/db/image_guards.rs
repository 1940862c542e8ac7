//! The deletion guard's memory (`image_guards`): for each image (and region) the broker
//! keeps protected while it is shared, the value of Glance's `protected` it found, and when
//! it saw the image protected. Written only by the worker, under the lease of a job on the
//! image (such jobs run one at a time), so these statements never race each other.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// One guarded image.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Guard {
    pub image_id: Uuid,
    pub region: String,
    /// What `protected` was before the broker set it: the value put back at the end.
    pub found_protected: bool,
    /// When the image was seen protected under the guard; `None`: about to be set.
    pub protected_at: Option<DateTime<Utc>>,
    /// When the worker saw the image unprotected (outside the broker) while guarding it.
    pub unprotected_outside_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub async fn find(db: impl PgExecutor<'_>, image_id: Uuid, region: &str) -> Result<Option<Guard>, sqlx::Error> {
    sqlx::query_as("select * from image_guards where image_id = $1 and lower(region) = lower($2)")
        .bind(image_id)
        .bind(region)
        .fetch_optional(db)
        .await
}

/// Remembers the value found, before the broker changes it; a guard already remembered keeps
/// its value (the first one found is the owner's).
pub async fn remember(
    tx: &mut PgConnection,
    image_id: Uuid,
    region: &str,
    found_protected: bool,
) -> Result<Guard, sqlx::Error> {
    sqlx::query(
        "insert into image_guards (image_id, region, found_protected) values ($1, $2, $3) on conflict do nothing",
    )
    .bind(image_id)
    .bind(region)
    .bind(found_protected)
    .execute(&mut *tx)
    .await?;
    find(&mut *tx, image_id, region).await?.ok_or(sqlx::Error::RowNotFound)
}

/// Records that Glance shows the image protected under the guard (the first time only).
pub async fn mark_protected(tx: &mut PgConnection, image_id: Uuid, region: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update image_guards set protected_at = now(), unprotected_outside_at = null
         where image_id = $1 and lower(region) = lower($2) and protected_at is null",
    )
    .bind(image_id)
    .bind(region)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that the image was seen unprotected while guarded; `false` when already recorded.
pub async fn note_unprotected_outside(
    tx: &mut PgConnection,
    image_id: Uuid,
    region: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update image_guards set unprotected_outside_at = now()
         where image_id = $1 and lower(region) = lower($2) and protected_at is not null
           and unprotected_outside_at is null",
    )
    .bind(image_id)
    .bind(region)
    .execute(tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that the image is protected again after it was seen unprotected (the reconciler
/// repaired it under enforcement).
pub async fn clear_unprotected_outside(tx: &mut PgConnection, image_id: Uuid, region: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update image_guards set unprotected_outside_at = null
         where image_id = $1 and lower(region) = lower($2) and unprotected_outside_at is not null",
    )
    .bind(image_id)
    .bind(region)
    .execute(tx)
    .await?;
    Ok(())
}

/// Ends the guard; `None` when another pass ended it first.
pub async fn release(tx: &mut PgConnection, image_id: Uuid, region: &str) -> Result<Option<Guard>, sqlx::Error> {
    sqlx::query_as("delete from image_guards where image_id = $1 and lower(region) = lower($2) returning *")
        .bind(image_id)
        .bind(region)
        .fetch_optional(tx)
        .await
}

/// The shares of the image, other than `except`, that hold a member in Glance or may:
/// being granted, awaiting the consumer, accepted, or being revoked. While one is left the
/// image stays guarded. (A `queued` share holds nothing yet: its grant guards the image again.)
pub async fn holders_besides(
    db: impl PgExecutor<'_>,
    image_id: Uuid,
    region: &str,
    except: &[Uuid],
) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as(
        "select count(*) from shares
         where image_id = $1 and lower(region) = lower($2) and id <> all($3)
           and state in ('granting', 'pending_acceptance', 'accepted', 'rejected', 'revoking')",
    )
    .bind(image_id)
    .bind(region)
    .bind(except)
    .fetch_one(db)
    .await?;
    Ok(n)
}
