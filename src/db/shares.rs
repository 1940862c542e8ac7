//! State changes of one share, as the worker and the API make them. Each function runs inside
//! the caller's transaction, next to the audit event that records the change.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::share_requests::{Share, ShareRequest};
use crate::domain::ShareState;

/// Moves a share to `state`, with the error that put it there (if any).
pub async fn set_state(
    tx: &mut PgConnection,
    id: Uuid,
    state: ShareState,
    last_error: Option<&str>,
) -> Result<Share, sqlx::Error> {
    sqlx::query_as(
        "update shares set state = $2, last_error = $3, version = version + 1, updated_at = now()
         where id = $1 returning *",
    )
    .bind(id)
    .bind(state.as_str())
    .bind(last_error)
    .fetch_one(tx)
    .await
}

/// Moves several shares to `state`, clearing their errors.
pub async fn set_states(tx: &mut PgConnection, ids: &[Uuid], state: ShareState) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as(
        "update shares set state = $2, last_error = null, version = version + 1, updated_at = now()
         where id = any($1) returning *",
    )
    .bind(ids)
    .bind(state.as_str())
    .fetch_all(tx)
    .await
}

/// A member created in Glance: the share, its resolved project id, its new state, and the
/// image's name and owner as Glance showed them.
#[derive(Debug, Clone)]
pub struct Granted<'a> {
    pub id: Uuid,
    pub project_id: &'a str,
    pub state: ShareState,
    pub image_name: Option<&'a str>,
    pub image_owner: Option<&'a str>,
}

/// Records members as created in Glance, in one statement; returns the shares as updated.
pub async fn set_granted_all(tx: &mut PgConnection, granted: &[Granted<'_>]) -> Result<Vec<Share>, sqlx::Error> {
    if granted.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = granted.iter().map(|g| g.id).collect();
    let project_ids: Vec<&str> = granted.iter().map(|g| g.project_id).collect();
    let states: Vec<&str> = granted.iter().map(|g| g.state.as_str()).collect();
    let names: Vec<Option<&str>> = granted.iter().map(|g| g.image_name).collect();
    let owners: Vec<Option<&str>> = granted.iter().map(|g| g.image_owner).collect();
    sqlx::query_as(
        "update shares s set state = g.state, project_id = g.project_id, last_error = null, granted_at = now(),
                image_name = g.image_name, image_owner = g.image_owner, version = s.version + 1, updated_at = now()
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
             as g (id, project_id, state, image_name, image_owner)
         where s.id = g.id
         returning s.*",
    )
    .bind(&ids)
    .bind(&project_ids)
    .bind(&states)
    .bind(&names)
    .bind(&owners)
    .fetch_all(tx)
    .await
}

/// Marks a share as being revoked, by whom and why.
pub async fn start_revoke(tx: &mut PgConnection, id: Uuid, by: &str, reason: &str) -> Result<Share, sqlx::Error> {
    sqlx::query_as(
        "update shares set state = 'revoking', revoked_by = $2, revoke_reason = $3,
                version = version + 1, updated_at = now()
         where id = $1 returning *",
    )
    .bind(id)
    .bind(by)
    .bind(reason)
    .fetch_one(tx)
    .await
}

/// Remembers that the broker made the image `shared` for this share, before it does so.
pub async fn mark_made_image_shared(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update shares set made_image_shared = true where id = $1")
        .bind(id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Whether the broker made this image `shared` and has not put it back yet.
pub async fn broker_made_image_shared(pool: &PgPool, image_id: Uuid, region: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from shares where image_id = $1 and region = $2 and made_image_shared)")
        .bind(image_id)
        .bind(region)
        .fetch_one(pool)
        .await
}

/// Forgets that the broker made the image `shared`: it is private again.
pub async fn clear_made_image_shared(tx: &mut PgConnection, image_id: Uuid, region: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update shares set made_image_shared = false where image_id = $1 and region = $2 and made_image_shared",
    )
    .bind(image_id)
    .bind(region)
    .execute(tx)
    .await?;
    Ok(())
}

/// A share with its request, locked for a change in this transaction.
pub async fn find_for_update(tx: &mut PgConnection, id: Uuid) -> Result<Option<(Share, ShareRequest)>, sqlx::Error> {
    let Some(share) = sqlx::query_as::<_, Share>("select * from shares where id = $1 for update")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let request = sqlx::query_as::<_, ShareRequest>("select * from share_requests where id = $1")
        .bind(share.request_id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(Some((share, request)))
}

/// The shares with these ids, locked for changes in this transaction (in id order, so that
/// two transactions locking overlapping sets cannot deadlock).
pub async fn lock_all(tx: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as("select * from shares where id = any($1) order by id for update")
        .bind(ids)
        .fetch_all(tx)
        .await
}

/// Shares whose request's `expires_at` has passed while access is in force, locked.
pub async fn expired_in_force(tx: &mut PgConnection, limit: i64) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as(
        "select s.* from shares s join share_requests r on r.id = s.request_id
         where r.expires_at <= now() and s.state in ('pending_acceptance', 'accepted', 'rejected')
         order by r.expires_at limit $1
         for update of s skip locked",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}
