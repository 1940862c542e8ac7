//! Drift findings (`drift_findings`): what the reconciler saw differ between Glance and the
//! broker, one open finding per image, project and kind; and the images it reconciles, and
//! the shares it adopts. Every change runs inside the caller's transaction, next to its audit
//! event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use utoipa::ToSchema;
use uuid::Uuid;

use super::shares::Share;
use crate::domain::ShareState;
use crate::domain::drift::{DriftKind, FindingState};
use crate::domain::filters::DriftFilter;

/// One difference between Glance and the broker, as the reconciler last saw it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, ToSchema)]
#[schema(as = DriftFindingView)]
pub struct DriftFinding {
    pub id: Uuid,
    #[sqlx(try_from = "String")]
    pub kind: DriftKind,
    pub image_id: Uuid,
    pub region: String,
    /// The member project it is about; absent for what is about the image itself.
    pub project_id: Option<String>,
    /// The broker's share it is about, when there is one.
    pub share_id: Option<Uuid>,
    /// What was expected and what was found.
    #[schema(value_type = Object)]
    pub details: Value,
    #[sqlx(try_from = "String")]
    pub state: FindingState,
    /// How it was resolved: `repaired` (enforcement), `not_seen` (a pass no longer saw it) or
    /// `adopted`.
    pub resolution: Option<String>,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// A finding as a pass sees it.
#[derive(Debug, Clone)]
pub struct Sighting<'a> {
    pub image_id: Uuid,
    pub region: &'a str,
    pub kind: DriftKind,
    pub project_id: Option<&'a str>,
    pub share_id: Option<Uuid>,
    pub details: &'a Value,
}

#[derive(sqlx::FromRow)]
struct Seen {
    #[sqlx(flatten)]
    finding: DriftFinding,
    opened: bool,
}

/// Records a sighting: opens a finding, or moves the open one's `last_seen_at` (one open
/// finding per image, project and kind, whoever sees it at the same moment). `true` when
/// this sighting opened it.
pub async fn see(tx: &mut PgConnection, s: &Sighting<'_>) -> Result<(DriftFinding, bool), sqlx::Error> {
    let seen: Seen = sqlx::query_as(
        "insert into drift_findings (id, kind, image_id, region, project_id, share_id, details)
         values ($1, $2, $3, $4, $5, $6, $7)
         on conflict (image_id, coalesce(project_id, ''), kind) where state = 'open'
         do update set last_seen_at = now(), details = excluded.details,
                       share_id = coalesce(excluded.share_id, drift_findings.share_id)
         returning *, (xmax = 0) as opened",
    )
    .bind(Uuid::now_v7())
    .bind(s.kind.as_ref())
    .bind(s.image_id)
    .bind(s.region)
    .bind(s.project_id)
    .bind(s.share_id)
    .bind(s.details)
    .fetch_one(tx)
    .await?;
    Ok((seen.finding, seen.opened))
}

/// Resolves the open findings of `image` of the `checked` kinds that are not in `seen`
/// (project, kind): a pass looked and no longer saw them. Returns those resolved.
pub async fn resolve_unseen(
    tx: &mut PgConnection,
    image_id: Uuid,
    checked: &[DriftKind],
    seen: &[(Option<String>, DriftKind)],
) -> Result<Vec<DriftFinding>, sqlx::Error> {
    let checked: Vec<&str> = checked.iter().map(AsRef::as_ref).collect();
    let (projects, kinds): (Vec<String>, Vec<&str>) = seen
        .iter()
        .map(|(p, k)| (p.clone().unwrap_or_default(), k.as_ref()))
        .unzip();
    sqlx::query_as(
        "update drift_findings set state = 'resolved', resolution = 'not_seen', resolved_at = now()
         where image_id = $1 and state = 'open' and kind = any($2)
           and (coalesce(project_id, ''), kind) not in (select * from unnest($3::text[], $4::text[]))
         returning *",
    )
    .bind(image_id)
    .bind(&checked)
    .bind(&projects)
    .bind(&kinds)
    .fetch_all(tx)
    .await
}

/// Resolves the open finding of `image`, `project` and `kind` as `resolution` (`repaired`,
/// `adopted`); `None` when none is open (another pass resolved it first).
pub async fn resolve(
    tx: &mut PgConnection,
    image_id: Uuid,
    project_id: Option<&str>,
    kind: DriftKind,
    resolution: &str,
) -> Result<Option<DriftFinding>, sqlx::Error> {
    sqlx::query_as(
        "update drift_findings set state = 'resolved', resolution = $4, resolved_at = now()
         where image_id = $1 and coalesce(project_id, '') = coalesce($2, '') and kind = $3 and state = 'open'
         returning *",
    )
    .bind(image_id)
    .bind(project_id)
    .bind(kind.as_ref())
    .bind(resolution)
    .fetch_optional(tx)
    .await
}

/// The findings matching `filter`, newest first, keyset-paginated by id (UUIDv7).
pub async fn list(
    db: impl PgExecutor<'_>,
    filter: &DriftFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DriftFinding>, sqlx::Error> {
    sqlx::query_as(
        "select * from drift_findings
         where ($1::uuid is null or image_id = $1) and ($2::text is null or project_id = $2)
           and ($3::text is null or kind = $3) and ($4::text is null or state = $4)
           and ($5::uuid is null or id < $5)
         order by id desc limit $6",
    )
    .bind(filter.image_id)
    .bind(&filter.project_id)
    .bind(filter.kind.map(<&str>::from))
    .bind(filter.state.map(<&str>::from))
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The findings seen or resolved at or after `since` (a reconciliation pass's), oldest first.
pub async fn touched_since(db: impl PgExecutor<'_>, since: DateTime<Utc>) -> Result<Vec<DriftFinding>, sqlx::Error> {
    sqlx::query_as("select * from drift_findings where last_seen_at >= $1 or resolved_at >= $1 order by id")
        .bind(since)
        .fetch_all(db)
        .await
}

/// The finding as a webhook announces it.
pub async fn resource(tx: &mut PgConnection, id: Uuid) -> Result<Option<Value>, sqlx::Error> {
    sqlx::query_scalar(
        "select jsonb_build_object('type', 'drift_finding', 'id', id, 'kind', kind, 'image_id', image_id,
                'region', region, 'project_id', project_id, 'share_id', share_id, 'details', details,
                'state', state, 'first_seen_at', first_seen_at, 'last_seen_at', last_seen_at)
         from drift_findings where id = $1",
    )
    .bind(id)
    .fetch_optional(tx)
    .await
}

/// The images the broker manages: those with a live share, with a share that ended less than
/// `ended_within` ago (its member must not come back), or with an open finding.
pub async fn managed_images(db: impl PgExecutor<'_>, ended_within: Duration) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "select image_id from shares
         where share_is_live(state) or updated_at > now() - make_interval(secs => $1)
         union
         select image_id from drift_findings where state = 'open'
         order by 1",
    )
    .bind(ended_within.as_secs_f64())
    .fetch_all(db)
    .await
}

/// The shares of `image` a pass compares: live ones, and those that ended less than
/// `ended_within` ago.
pub async fn shares_of_image(
    db: impl PgExecutor<'_>,
    image_id: Uuid,
    ended_within: Duration,
) -> Result<Vec<Share>, sqlx::Error> {
    sqlx::query_as(
        "select * from shares
         where image_id = $1 and (share_is_live(state) or updated_at > now() - make_interval(secs => $2))
         order by id",
    )
    .bind(image_id)
    .bind(ended_within.as_secs_f64())
    .fetch_all(db)
    .await
}

/// Whether `project` has a live share of `image` now (a grant queued since the pass looked).
pub async fn has_live_share(db: impl PgExecutor<'_>, image_id: Uuid, project_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists (select 1 from shares
                        where image_id = $1 and (project_id = $2 or target = $2) and share_is_live(state))",
    )
    .bind(image_id)
    .bind(project_id)
    .fetch_one(db)
    .await
}

/// A member found in Glance, to record as a share the broker did not make.
#[derive(Debug, Clone)]
pub struct Adopted<'a> {
    pub image_id: Uuid,
    pub region: &'a str,
    pub project_id: &'a str,
    pub state: ShareState,
    pub image_name: Option<&'a str>,
    pub image_owner: Option<&'a str>,
    pub image_visibility: &'a str,
    /// When Glance says the member was created.
    pub member_created_at: Option<DateTime<Utc>>,
    /// Who records it (the worker's name).
    pub by: &'a str,
}

/// What the request of an adopted share says it is for.
pub const ADOPTED_REASON: &str = "adopted: a member made in Glance outside the broker";

/// Records an adopted member: a request (approved, by nobody) and its share, as found. `None`
/// when a live share of the project appeared meanwhile (the caller rolls back).
pub async fn adopt(tx: &mut PgConnection, a: &Adopted<'_>) -> Result<Option<Share>, sqlx::Error> {
    let request_id = Uuid::now_v7();
    sqlx::query(
        "insert into share_requests (id, image_id, region, reason, requested_by, requested_by_subject, status,
                                     validation, validated_at, image_name, image_owner, image_visibility, adopted)
         values ($1, $2, $3, $4, $5, $5, 'approved', 'passed', now(), $6, $7, $8, true)",
    )
    .bind(request_id)
    .bind(a.image_id)
    .bind(a.region)
    .bind(ADOPTED_REASON)
    .bind(a.by)
    .bind(a.image_name)
    .bind(a.image_owner)
    .bind(a.image_visibility)
    .execute(&mut *tx)
    .await?;
    sqlx::query_as(
        "insert into shares (id, request_id, image_id, region, target, project_id, state, granted_at,
                             image_name, image_owner, adopted)
         values ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, true)
         on conflict (image_id, lower(region), target) where share_is_live(state) do nothing
         returning *",
    )
    .bind(Uuid::now_v7())
    .bind(request_id)
    .bind(a.image_id)
    .bind(a.region)
    .bind(a.project_id)
    .bind(a.state.as_ref())
    .bind(a.member_created_at)
    .bind(a.image_name)
    .bind(a.image_owner)
    .fetch_optional(tx)
    .await
}
