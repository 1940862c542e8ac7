//! Revocation with notice: revokes scheduled for later (and their cancellation), the
//! `share.expiring` notice taken once per share, and what depended on the image when a
//! revoke was carried out. Each change is guarded like the others in `db::shares`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::Share;
use crate::domain::ShareState;

/// Who schedules a revoke, why, and for when.
#[derive(Debug, Clone, Copy)]
pub struct Schedule<'a> {
    pub by: &'a str,
    pub reason: &'a str,
    pub effective_at: DateTime<Utc>,
}

/// Moves a share from `from` to `revocation_scheduled` (a move [`ShareState::on`] allowed),
/// remembering `from` for a cancellation; `None` when the share is no longer in `from`.
pub async fn schedule_revoke(
    tx: &mut PgConnection,
    id: Uuid,
    from: ShareState,
    schedule: Schedule<'_>,
) -> Result<Option<Share>, sqlx::Error> {
    sqlx::query_as(
        "update shares set state = 'revocation_scheduled', revoke_scheduled_from = $2, revoke_effective_at = $3,
                revoked_by = $4, revoke_reason = $5, version = version + 1, updated_at = now()
         where id = $1 and state = $2 returning *",
    )
    .bind(id)
    .bind(from.as_ref())
    .bind(schedule.effective_at)
    .bind(schedule.by)
    .bind(schedule.reason)
    .fetch_optional(tx)
    .await
}

/// Cancels the scheduled revoke of share `id`, putting it back `to` (where it was scheduled
/// from); `None` when no revoke is scheduled any more (it came due, or someone moved first).
pub async fn cancel_scheduled_revoke(
    tx: &mut PgConnection,
    id: Uuid,
    to: ShareState,
) -> Result<Option<Share>, sqlx::Error> {
    sqlx::query_as(
        "update shares set state = $2, revoke_scheduled_from = null, revoke_effective_at = null,
                revoked_by = null, revoke_reason = null, version = version + 1, updated_at = now()
         where id = $1 and state = 'revocation_scheduled' and revoke_scheduled_from = $2 returning *",
    )
    .bind(id)
    .bind(to.as_ref())
    .fetch_optional(tx)
    .await
}

/// Shares whose scheduled revoke is due, locked (others' sweeps skip them).
pub async fn due_scheduled_revokes(tx: &mut PgConnection, limit: i64) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as(
        "select * from shares where state = 'revocation_scheduled' and revoke_effective_at <= now()
         order by revoke_effective_at limit $1 for update skip locked",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}

/// Shares in force whose request expires within `notice` and that were not given notice
/// yet, with their expiry; each is marked noticed here, in the caller's transaction, so that
/// one notice is recorded per share whatever the number of sweeps racing.
pub async fn take_expiry_notices(
    tx: &mut PgConnection,
    notice: std::time::Duration,
    limit: i64,
) -> Result<Vec<(Share, DateTime<Utc>)>, sqlx::Error> {
    let notice = chrono::Duration::from_std(notice).unwrap_or(chrono::Duration::MAX);
    let due: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
        "select s.id, r.expires_at from shares s join share_requests r on r.id = s.request_id
         where s.expiry_noticed_at is null and r.expires_at > now() and r.expires_at <= now() + $1
           and s.state in ('pending_acceptance', 'accepted', 'revocation_scheduled')
         order by r.expires_at limit $2
         for update of s skip locked",
    )
    .bind(notice)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let ids: Vec<Uuid> = due.iter().map(|(id, _)| *id).collect();
    let noticed: Vec<Share> = sqlx::query_as(
        "update shares set expiry_noticed_at = now() where id = any($1) and expiry_noticed_at is null returning *",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(noticed
        .into_iter()
        .filter_map(|s| due.iter().find(|(id, _)| *id == s.id).map(|(_, at)| (s, *at)))
        .collect())
}

/// What depended on the image when the revoke of share `id` started or was carried out,
/// if anyone looked.
pub async fn revoke_dependents(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar("select revoke_dependents from shares where id = $1")
        .bind(id)
        .fetch_one(db)
        .await
}

/// Records what depended on the image just before the revoke of share `id` removed its
/// member (when nobody looked when it started).
pub async fn note_revoke_dependents(
    tx: &mut PgConnection,
    id: Uuid,
    dependents: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update shares set revoke_dependents = $2 where id = $1 and state = 'revoking' and revoke_dependents is null",
    )
    .bind(id)
    .bind(dependents)
    .execute(tx)
    .await?;
    Ok(())
}

/// The live shares of an image (undecided or in force) that name a project, oldest first.
pub async fn live_of_image(db: impl PgExecutor<'_>, image_id: Uuid) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as(
        "select * from shares where image_id = $1 and share_is_live(state) and project_id is not null order by id",
    )
    .bind(image_id)
    .fetch_all(db)
    .await
}
