//! Shares: one image granted (or to be granted) to one project. The type, every read, and
//! the state changes the worker and the API make. Each change runs inside the caller's
//! transaction, next to the audit event that records it, and is guarded: it names the state
//! it moves the share from (`where state = $from`), and a share that moved on meanwhile is
//! left as it is (`None`, or left out of the result). Imports nothing of `share_requests`
//! (which imports this).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use super::conditions::{and_if, order_and_limit};
use crate::domain::filters::ShareFilter;
use crate::domain::{RevokeCause, ShareState};

mod notice;
pub use notice::*;

// As stored, and as the API shows it (`ShareView`: the doc below is its description), less
// the columns it keeps to itself.
/// One image granted (or to be granted) to one project.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[schema(as = ShareView)]
pub struct Share {
    pub id: Uuid,
    pub request_id: Uuid,
    pub image_id: Uuid,
    pub region: String,
    /// The target as filed: a project id or name.
    pub target: String,
    /// The Keystone project id; null until a target given by name is resolved by validation.
    pub project_id: Option<String>,
    /// The project's name and domain id, as validation found them in Keystone.
    pub project_name: Option<String>,
    pub project_domain: Option<String>,
    #[sqlx(try_from = "String")]
    pub state: ShareState,
    /// The last error the worker met, when it met one.
    pub last_error: Option<String>,
    /// When the member was created in Glance.
    pub granted_at: Option<DateTime<Utc>>,
    /// Who revoked the share (a principal, or `expiry`).
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    /// When a scheduled revoke is due (state `revocation_scheduled`).
    pub revoke_effective_at: Option<DateTime<Utc>>,
    /// The state a scheduled revoke was scheduled from (not shown).
    #[serde(skip)]
    pub revoke_scheduled_from: Option<String>,
    /// Recorded from a member found in Glance, made outside the broker (no approver).
    pub adopted: bool,
    /// The image's name and owner project in Glance, once granted (not shown).
    #[serde(skip)]
    pub image_name: Option<String>,
    #[serde(skip)]
    pub image_owner: Option<String>,
    #[serde(skip)]
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The shares of the given requests, in creation order.
pub async fn of_requests(db: impl PgExecutor<'_>, request_ids: &[Uuid]) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as("select * from shares where request_id = any($1) order by id")
        .bind(request_ids)
        .fetch_all(db)
        .await
}

/// The shares with these ids (in no particular order).
pub async fn by_ids(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as("select * from shares where id = any($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// One share.
pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<Share>, sqlx::Error> {
    sqlx::query_as("select * from shares where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// A caller who may see only some rows: what it filed, and what its projects own (and, for
/// shares, the shares made to its projects). `None` in a filter means it sees everything.
#[derive(Debug, Default, Clone)]
pub struct Viewer {
    pub name: String,
    pub projects: Vec<String>,
    /// Domains whose projects' requests and shares it sees.
    pub domains: Vec<String>,
}

/// Adds, as `ids`, the distinct `column`s (`id`, or `request_id`) of the shares to `project`
/// (as filed or as resolved) before `before`, newest first: each side read backwards from
/// the cursor on its index, merged in order, so a page joins only the rows it shows (one
/// condition ORing the sides reads every share of the project and sorts them).
pub(super) fn push_ids_for_project<'a>(
    query: &mut QueryBuilder<'a, Postgres>,
    column: &'static str,
    project: &'a str,
    before: Option<Uuid>,
) {
    query.push("(select distinct ").push(column).push(" as id from (");
    for (i, side) in ["project_id", "target"].into_iter().enumerate() {
        query.push(if i == 0 { "(" } else { " union all (" });
        query
            .push("select ")
            .push(column)
            .push(" from shares where ")
            .push(side)
            .push(" = ");
        query.push_bind(project);
        if let Some(before) = before {
            query.push(" and ").push(column).push(" < ").push_bind(before);
        }
        query.push(" order by ").push(column).push(" desc)");
    }
    query.push(") sides order by id desc) ids");
}

/// Adds what a [`Viewer`] sees of the request `r`: what it filed and what its projects or
/// domains own.
pub(super) fn viewer_sees_request<'a>(query: &mut QueryBuilder<'a, Postgres>, viewer: &'a Viewer) {
    query
        .push("(r.requested_by = ")
        .push_bind(&viewer.name)
        .push(" or r.image_owner = any(")
        .push_bind(&viewer.projects)
        .push(") or r.image_owner_domain = any(")
        .push_bind(&viewer.domains)
        .push("))");
}

/// The shares matching `filter` that `viewer` may see (`None`: it sees all), newest first,
/// keyset-paginated like [`super::share_requests::list`].
pub async fn list(
    db: impl PgExecutor<'_>,
    viewer: Option<&Viewer>,
    filter: &ShareFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Share>, sqlx::Error> {
    let mut q = QueryBuilder::new("select s.* from ");
    match &filter.project_id {
        Some(project) => {
            push_ids_for_project(&mut q, "id", project, before);
            q.push(" join shares s on s.id = ids.id where true");
        }
        None => {
            q.push("shares s where true");
        }
    }
    if let Some(viewer) = viewer {
        q.push(" and (s.project_id = any(")
            .push_bind(&viewer.projects)
            .push(") or s.project_domain = any(")
            .push_bind(&viewer.domains)
            .push(") or exists (select 1 from share_requests r where r.id = s.request_id and ");
        viewer_sees_request(&mut q, viewer);
        q.push("))");
    }
    and_if(&mut q, "s.state = ", filter.state.map(<&str>::from));
    and_if(&mut q, "s.image_id = ", filter.image_id);
    and_if(&mut q, "s.request_id = ", filter.request_id);
    if let Some(requester) = &filter.requested_by {
        q.push(" and s.request_id in (select r.id from share_requests r where r.requested_by = ")
            .push_bind(requester)
            .push(")");
    }
    and_if(&mut q, "s.created_at >= ", filter.created_after);
    and_if(&mut q, "s.created_at < ", filter.created_before);
    and_if(&mut q, "s.id < ", before);
    order_and_limit(&mut q, "s.id desc", limit);
    // Planned for its values each time, like `share_requests::list`.
    q.build_query_as().persistent(false).fetch_all(db).await
}

/// Moves a share from `from` to `to` (a move [`ShareState::on`] allowed), with the error that
/// put it there (if any). `None` when the share is no longer in `from`: someone else moved it
/// first, and this change lost the race (it is never written over theirs).
pub async fn transition(
    tx: &mut PgConnection,
    id: Uuid,
    from: ShareState,
    to: ShareState,
    last_error: Option<&str>,
) -> Result<Option<Share>, sqlx::Error> {
    sqlx::query_as(
        "update shares set state = $3, last_error = $4, version = version + 1, updated_at = now()
         where id = $1 and state = $2 returning *",
    )
    .bind(id)
    .bind(from.as_ref())
    .bind(to.as_ref())
    .bind(last_error)
    .fetch_optional(tx)
    .await
}

/// Moves those of the shares `ids` that are in `from` to `to`, clearing their errors; returns
/// the shares moved (the others moved on meanwhile).
pub async fn transition_all(
    tx: &mut PgConnection,
    ids: &[Uuid],
    from: ShareState,
    to: ShareState,
) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as(
        "update shares set state = $3, last_error = null, version = version + 1, updated_at = now()
         where id = any($1) and state = $2 returning *",
    )
    .bind(ids)
    .bind(from.as_ref())
    .bind(to.as_ref())
    .fetch_all(tx)
    .await
}

/// Records the error a job met on a share that is still in `state`; `None` when the share
/// has moved on (the error is about work nobody needs any more).
pub async fn note_error(
    tx: &mut PgConnection,
    id: Uuid,
    state: ShareState,
    error: &str,
) -> Result<Option<Share>, sqlx::Error> {
    transition(tx, id, state, state, Some(error)).await
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

/// Records members as created in Glance, in one statement, for the shares still `granting`;
/// returns the shares as updated (a share that moved on meanwhile is left as it is).
pub async fn set_granted_all(tx: &mut PgConnection, granted: &[Granted<'_>]) -> Result<Vec<Share>, sqlx::Error> {
    if granted.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = granted.iter().map(|g| g.id).collect();
    let project_ids: Vec<&str> = granted.iter().map(|g| g.project_id).collect();
    let states: Vec<&str> = granted.iter().map(|g| g.state.as_ref()).collect();
    let names: Vec<Option<&str>> = granted.iter().map(|g| g.image_name).collect();
    let owners: Vec<Option<&str>> = granted.iter().map(|g| g.image_owner).collect();
    sqlx::query_as(
        "update shares s set state = g.state, project_id = g.project_id, last_error = null, granted_at = now(),
                image_name = g.image_name, image_owner = g.image_owner, version = s.version + 1, updated_at = now()
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])
             as g (id, project_id, state, image_name, image_owner)
         where s.id = g.id and s.state = 'granting'
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

/// Who revokes a share, and why.
#[derive(Debug, Clone, Copy)]
pub struct RevokeStart<'a> {
    /// A principal's name, `expiry`, or the worker.
    pub by: &'a str,
    pub reason: &'a str,
    pub cause: RevokeCause,
    /// Why the share needs revoking, when an error is the reason (a failed grant).
    pub last_error: Option<&'a str>,
    /// What depended on the image when the revoke was asked for (`{"dependents",
    /// "unchecked"}`), when the asker looked; else the revoke job looks before it removes
    /// the member.
    pub dependents: Option<&'a serde_json::Value>,
}

/// Moves a share from `from` to `revoking`, saying by whom and why (a move [`ShareState::on`]
/// allowed); `None` when the share is no longer in `from`.
pub async fn start_revoke(
    tx: &mut PgConnection,
    id: Uuid,
    from: ShareState,
    start: RevokeStart<'_>,
) -> Result<Option<Share>, sqlx::Error> {
    sqlx::query_as(
        "update shares set state = 'revoking', revoked_by = $3, revoke_reason = $4, revoke_cause = $5,
                last_error = $6, revoke_started_at = now(), revoke_stalled_at = null, member_removed_at = null,
                revoke_dependents = $7, revoke_effective_at = null, revoke_scheduled_from = null,
                version = version + 1, updated_at = now()
         where id = $1 and state = $2 returning *",
    )
    .bind(id)
    .bind(from.as_ref())
    .bind(start.by)
    .bind(start.reason)
    .bind(start.cause.as_ref())
    .bind(start.last_error)
    .bind(start.dependents)
    .fetch_optional(tx)
    .await
}

/// How a revoke in progress stands.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// `None` for a revoke started before causes were recorded (a person's or expiry's).
    pub cause: Option<RevokeCause>,
    pub started_at: Option<DateTime<Utc>>,
    /// When the revoke was reported stalled (`share.revoke_stalled`), if it was.
    pub stalled_at: Option<DateTime<Utc>>,
    /// When the revoke last removed the member (to be confirmed gone a moment later).
    pub member_removed_at: Option<DateTime<Utc>>,
}

/// How the revoke of share `id` stands.
pub async fn revocation(db: impl PgExecutor<'_>, id: Uuid) -> Result<Revocation, sqlx::Error> {
    let (cause, started_at, stalled_at, member_removed_at): (Option<String>, _, _, _) = sqlx::query_as(
        "select revoke_cause, revoke_started_at, revoke_stalled_at, member_removed_at from shares where id = $1",
    )
    .bind(id)
    .fetch_one(db)
    .await?;
    Ok(Revocation {
        // The column's check constraint admits only the causes' names.
        cause: cause.as_deref().and_then(|c| c.parse().ok()),
        started_at,
        stalled_at,
        member_removed_at,
    })
}

/// Records that the revoke of share `id` removed its member just now.
pub async fn note_member_removed(tx: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update shares set member_removed_at = now() where id = $1 and state = 'revoking'")
        .bind(id)
        .execute(tx)
        .await?;
    Ok(())
}

/// Marks the revoke of share `id` as stalled, once; `None` when it is not `revoking` or was
/// marked already.
pub async fn mark_revoke_stalled(tx: &mut PgConnection, id: Uuid) -> Result<Option<Share>, sqlx::Error> {
    sqlx::query_as(
        "update shares set revoke_stalled_at = now(), updated_at = now()
         where id = $1 and state = 'revoking' and revoke_stalled_at is null returning *",
    )
    .bind(id)
    .fetch_optional(tx)
    .await
}

/// How many revokes are stalled now (reported, and not done yet).
pub async fn stalled_revokes(db: impl PgExecutor<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from shares where state = 'revoking' and revoke_stalled_at is not null")
        .fetch_one(db)
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

/// A share, locked for a change in this transaction.
pub async fn find_for_update(tx: &mut PgConnection, id: Uuid) -> Result<Option<Share>, sqlx::Error> {
    sqlx::query_as("select * from shares where id = $1 for update")
        .bind(id)
        .fetch_optional(tx)
        .await
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
         where r.expires_at <= now()
           and s.state in ('pending_acceptance', 'accepted', 'rejected', 'revocation_scheduled')
         order by r.expires_at limit $1
         for update of s skip locked",
    )
    .bind(limit)
    .fetch_all(tx)
    .await
}

/// Shares seen `rejected` in Glance before rejections removed the member (they still have
/// one), locked; the expiry sweep revokes them.
pub async fn rejected_with_member(tx: &mut PgConnection, limit: i64) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as("select * from shares where state = 'rejected' order by updated_at limit $1 for update skip locked")
        .bind(limit)
        .fetch_all(tx)
        .await
}
