//! Share requests: the ask, its validation and approvals, and its decision (which moves its
//! shares with it). A request has one share per target project; the share itself, its reads
//! and its own changes live in `shares`.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor, QueryBuilder};
use uuid::Uuid;

use super::conditions::{and_if, order_and_limit};
use super::shares::{Share, Viewer, push_ids_for_project, viewer_sees_request};
use crate::domain::filters::RequestFilter;
use crate::domain::policy::Verdict;
use crate::domain::{FieldError, NewShareRequest, RequestStatus, ShareState, Validation, Warning};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ShareRequest {
    pub id: Uuid,
    pub image_id: Uuid,
    pub region: String,
    pub reason: String,
    pub requested_by: String,
    /// Who the request is for in separation-of-duties rules (see `domain::Subject`).
    pub requested_by_subject: String,
    /// The domains target names resolve in; `None`: the whole cloud.
    pub target_domains: Option<Vec<String>>,
    #[sqlx(try_from = "String")]
    pub status: RequestStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub auto_accept: bool,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_comment: Option<String>,
    /// The end user a service filed the request for.
    pub on_behalf_of: Option<String>,
    /// Distinct approvers the request needs (1 or 2), as the approval policy said.
    pub required_approvals: i16,
    /// The policy rule that decided the request or set its approvers.
    pub policy_rule: Option<String>,
    /// The policy's verdict (a `domain::policy::Verdict`); null until validation passed.
    pub policy_decision: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    pub validation: Validation,
    pub validated_at: Option<DateTime<Utc>>,
    pub validation_errors: Json<Vec<FieldError>>,
    pub validation_last_error: Option<String>,
    /// What validation found legal but risky, for approvers.
    pub validation_warnings: Json<Vec<Warning>>,
    pub image_name: Option<String>,
    pub image_owner: Option<String>,
    pub image_owner_domain: Option<String>,
    pub image_visibility: Option<String>,
}

/// The unique indexes that keep one live share per image, region and project: by the target
/// as filed, and by the project id it is or resolved to.
pub const ONE_LIVE_GRANT: [&str; 2] = ["shares_one_live_grant_idx", "shares_one_live_project_idx"];

/// Who files a request, for whom, and for which owner project.
#[derive(Debug, Clone, Copy)]
pub struct Filer<'a> {
    pub requested_by: &'a str,
    /// The subject the request is for: the user a key acts for, else the principal's own.
    pub subject: &'a str,
    pub on_behalf_of: Option<&'a str>,
    /// The domains target names may resolve in; `None`: the whole cloud.
    pub target_domains: Option<&'a [String]>,
    /// The project owning the image, when checked at filing (validation fills it otherwise).
    pub image_owner: Option<&'a str>,
}

/// Inserts a request in `pending_approval` with one `awaiting_approval` share per target.
pub async fn insert(
    tx: &mut PgConnection,
    new: &NewShareRequest,
    filer: Filer<'_>,
) -> Result<(ShareRequest, Vec<Share>), sqlx::Error> {
    let request = sqlx::query_as::<_, ShareRequest>(
        "insert into share_requests (id, image_id, region, reason, requested_by, status, expires_at, auto_accept,
                                     image_owner, on_behalf_of, requested_by_subject, target_domains)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) returning *",
    )
    .bind(Uuid::now_v7())
    .bind(new.image_id)
    .bind(&new.region)
    .bind(&new.reason)
    .bind(filer.requested_by)
    .bind(RequestStatus::PendingApproval.as_ref())
    .bind(new.expires_at)
    .bind(new.auto_accept)
    .bind(filer.image_owner)
    .bind(filer.on_behalf_of)
    .bind(filer.subject)
    .bind(filer.target_domains)
    .fetch_one(&mut *tx)
    .await?;

    let ids: Vec<Uuid> = new.targets.iter().map(|_| Uuid::now_v7()).collect();
    let targets: Vec<&str> = new.targets.iter().map(|t| t.as_str()).collect();
    let project_ids: Vec<Option<&str>> = new.targets.iter().map(|t| t.project_id()).collect();
    let shares = sqlx::query_as::<_, Share>(
        "insert into shares (id, request_id, image_id, region, target, project_id, state)
         select id, $2, $3, $4, target, project_id, $5
         from unnest($1::uuid[], $6::text[], $7::text[]) as t (id, target, project_id)
         returning *",
    )
    .bind(&ids)
    .bind(request.id)
    .bind(request.image_id)
    .bind(&request.region)
    .bind(ShareState::AwaitingApproval.as_ref())
    .bind(&targets)
    .bind(&project_ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok((request, sort_shares(shares)))
}

fn sort_shares(mut shares: Vec<Share>) -> Vec<Share> {
    shares.sort_by_key(|s| s.id);
    shares
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> Result<Option<ShareRequest>, sqlx::Error> {
    sqlx::query_as("select * from share_requests where id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// The requests with these ids (in no particular order).
pub async fn find_many(db: impl PgExecutor<'_>, ids: &[Uuid]) -> Result<Vec<ShareRequest>, sqlx::Error> {
    sqlx::query_as("select * from share_requests where id = any($1)")
        .bind(ids)
        .fetch_all(db)
        .await
}

/// Locks a request for a decision made in this transaction.
pub async fn find_for_update(tx: &mut PgConnection, id: Uuid) -> Result<Option<ShareRequest>, sqlx::Error> {
    sqlx::query_as("select * from share_requests where id = $1 for update")
        .bind(id)
        .fetch_optional(tx)
        .await
}

/// Moves a request to a decided status and its undecided shares with it.
pub async fn decide(
    tx: &mut PgConnection,
    id: Uuid,
    status: RequestStatus,
    decided_by: &str,
    comment: Option<&str>,
) -> Result<(ShareRequest, Vec<Share>), sqlx::Error> {
    let request = sqlx::query_as::<_, ShareRequest>(
        "update share_requests
         set status = $2, decided_by = $3, decided_at = now(), decision_comment = $4,
             version = version + 1, updated_at = now()
         where id = $1 returning *",
    )
    .bind(id)
    .bind(status.as_ref())
    .bind(decided_by)
    .bind(comment)
    .fetch_one(&mut *tx)
    .await?;
    let shares = sqlx::query_as::<_, Share>(
        "update shares set state = $3, version = version + 1, updated_at = now()
         where request_id = $1 and state = $2 returning *",
    )
    .bind(id)
    .bind(ShareState::AwaitingApproval.as_ref())
    .bind(status.share_state().as_ref())
    .fetch_all(&mut *tx)
    .await?;
    Ok((request, sort_shares(shares)))
}

/// The image as Glance described it when the request was validated.
pub use crate::domain::ImageFacts;

/// The Keystone project one share's target resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub share_id: Uuid,
    pub project_id: String,
    pub project_name: String,
    pub project_domain: String,
}

/// Records a passed validation: the image's facts on the request, each target's project on
/// its share. Fails with a unique violation on `shares_one_live_project_idx` when a resolved
/// project already holds a live share of the image.
pub async fn pass_validation(
    tx: &mut PgConnection,
    id: Uuid,
    image: &ImageFacts,
    targets: &[ResolvedTarget],
    warnings: &[Warning],
) -> Result<(ShareRequest, Vec<Share>), sqlx::Error> {
    let request = sqlx::query_as::<_, ShareRequest>(
        "update share_requests
         set validation = 'passed', validated_at = now(), validation_errors = '[]', validation_last_error = null,
             image_name = $2, image_owner = $3, image_owner_domain = $4, image_visibility = $5,
             validation_warnings = $6, version = version + 1, updated_at = now()
         where id = $1 returning *",
    )
    .bind(id)
    .bind(&image.name)
    .bind(&image.owner)
    .bind(&image.owner_domain)
    .bind(&image.visibility)
    .bind(Json(warnings))
    .fetch_one(&mut *tx)
    .await?;
    let share_ids: Vec<Uuid> = targets.iter().map(|t| t.share_id).collect();
    let project_ids: Vec<&str> = targets.iter().map(|t| t.project_id.as_str()).collect();
    let names: Vec<&str> = targets.iter().map(|t| t.project_name.as_str()).collect();
    let domains: Vec<&str> = targets.iter().map(|t| t.project_domain.as_str()).collect();
    sqlx::query(
        "update shares s set project_id = t.project_id, project_name = t.name, project_domain = t.domain,
                version = s.version + 1, updated_at = now()
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) as t (id, project_id, name, domain)
         where s.id = t.id",
    )
    .bind(&share_ids)
    .bind(&project_ids)
    .bind(&names)
    .bind(&domains)
    .execute(&mut *tx)
    .await?;
    let shares = super::shares::of_requests(&mut *tx, &[id]).await?;
    Ok((request, shares))
}

/// Records a failed validation: the request becomes `invalid`, and so does each share.
pub async fn fail_validation(
    tx: &mut PgConnection,
    id: Uuid,
    image: Option<&ImageFacts>,
    errors: &[FieldError],
    warnings: &[Warning],
) -> Result<(ShareRequest, Vec<Share>), sqlx::Error> {
    let request = sqlx::query_as::<_, ShareRequest>(
        "update share_requests
         set validation = 'failed', validated_at = now(), validation_errors = $2, validation_last_error = null,
             status = 'invalid',
             image_name = $3, image_owner = $4, image_owner_domain = $5, image_visibility = $6,
             validation_warnings = $7, version = version + 1, updated_at = now()
         where id = $1 returning *",
    )
    .bind(id)
    .bind(Json(errors))
    .bind(image.and_then(|i| i.name.as_deref()))
    .bind(image.and_then(|i| i.owner.as_deref()))
    .bind(image.and_then(|i| i.owner_domain.as_deref()))
    .bind(image.map(|i| i.visibility.as_str()))
    .bind(Json(warnings))
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "update shares set state = 'invalid', version = version + 1, updated_at = now()
         where request_id = $1 and state = 'awaiting_approval'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let shares = super::shares::of_requests(&mut *tx, &[id]).await?;
    Ok((request, shares))
}

/// Notes why validation could not finish yet (Keystone or Glance did not answer); it is retried.
pub async fn note_validation_error(tx: &mut PgConnection, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query("update share_requests set validation_last_error = $2 where id = $1 and validation = 'pending'")
        .bind(id)
        .bind(error)
        .execute(tx)
        .await?;
    Ok(())
}

/// Live shares of `image_id` in `region` to any of `project_ids`, outside request `except`:
/// `(project id, request id)`.
pub async fn live_grants_to(
    db: impl PgExecutor<'_>,
    image_id: Uuid,
    region: &str,
    project_ids: &[&str],
    except: Uuid,
) -> Result<Vec<(String, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        "select project_id, request_id from shares
         where image_id = $1 and lower(region) = lower($2) and project_id = any($3) and request_id <> $4
           and share_is_live(state)",
    )
    .bind(image_id)
    .bind(region)
    .bind(project_ids)
    .bind(except)
    .fetch_all(db)
    .await
}

/// The requests matching `filter` that `viewer` may see (`None`: it sees all), newest
/// first. `before` is the keyset cursor: the id of the last row already seen.
/// Ids are UUIDv7, so id order is creation order and rows inserted while a caller pages
/// land ahead of its cursor: nothing already there is skipped or repeated.
pub async fn list(
    db: impl PgExecutor<'_>,
    viewer: Option<&Viewer>,
    filter: &RequestFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ShareRequest>, sqlx::Error> {
    let mut q = QueryBuilder::new("select r.* from ");
    match (&filter.project_id, filter.created_after, filter.created_before) {
        (Some(project), _, _) => {
            push_ids_for_project(&mut q, "request_id", project, before);
            q.push(" join share_requests r on r.id = ids.id where true");
        }
        (None, Some(after), Some(until)) => {
            // Ids are in creation order, nearly: Postgres takes the range's requests to lie
            // anywhere along the primary key and walks it backwards from the newest until
            // the page is full, reading every newer request. The range's ids come from its
            // index alone instead (`offset 0` keeps them apart), then the page of them.
            q.push("(select id from share_requests where created_at >= ")
                .push_bind(after)
                .push(" and created_at < ")
                .push_bind(until)
                .push(" offset 0) ids join share_requests r on r.id = ids.id where true");
        }
        (None, _, _) => {
            q.push("share_requests r where true");
        }
    }
    if let Some(viewer) = viewer {
        q.push(" and ");
        viewer_sees_request(&mut q, viewer);
    }
    and_if(&mut q, "r.status = ", filter.status.map(<&str>::from));
    and_if(&mut q, "r.image_id = ", filter.image_id);
    and_if(&mut q, "r.requested_by = ", filter.requested_by.as_deref());
    and_if(&mut q, "r.created_at >= ", filter.created_after);
    and_if(&mut q, "r.created_at < ", filter.created_before);
    and_if(&mut q, "r.id < ", before);
    order_and_limit(&mut q, "r.id desc", limit);
    // Planned for its values each time (an unnamed statement), never with a generic plan:
    // how many rows a value matches varies by thousands (a portal's requests against a
    // person's), and a plan made for none of them walked the whole table for a rare one.
    q.build_query_as().persistent(false).fetch_all(db).await
}

/// Undecided requests whose `expires_at` has passed, or filed longer than `wait` ago, locked.
pub async fn undecided_past_expiry(
    tx: &mut PgConnection,
    limit: i64,
    wait: Option<std::time::Duration>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "select id from share_requests
         where status = 'pending_approval'
           and (expires_at <= now() or created_at <= now() - make_interval(secs => $2))
         order by created_at limit $1 for update skip locked",
    )
    .bind(limit)
    .bind(wait.map(|w| w.as_secs_f64()))
    .fetch_all(tx)
    .await
}

/// Records what the approval policy said: its verdict, how many approvers, and which rule
/// said so.
pub async fn set_policy(
    tx: &mut PgConnection,
    id: Uuid,
    verdict: Verdict,
    required_approvals: u8,
    rule: Option<&str>,
) -> Result<ShareRequest, sqlx::Error> {
    sqlx::query_as(
        "update share_requests set policy_decision = $4, required_approvals = $2, policy_rule = $3,
                version = version + 1, updated_at = now()
         where id = $1 returning *",
    )
    .bind(id)
    .bind(i16::from(required_approvals))
    .bind(rule)
    .bind(verdict.as_ref())
    .fetch_one(tx)
    .await
}

/// One approver's approval of a request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Approval {
    pub request_id: Uuid,
    pub approver: String,
    /// Who approved in separation-of-duties rules (see `domain::Subject`): one approval each.
    pub approver_subject: String,
    pub on_behalf_of: Option<String>,
    pub comment: Option<String>,
    pub approved_at: DateTime<Utc>,
}

/// Who gives an approval.
#[derive(Debug, Clone, Copy)]
pub struct Approver<'a> {
    /// The principal's name (an API key's, or `keystone:<user id>`).
    pub name: &'a str,
    /// The subject: one approval per subject and request.
    pub subject: &'a str,
    pub on_behalf_of: Option<&'a str>,
}

/// Records `approver`'s approval; `None` when its subject had already approved. Bumps the
/// request's version, since its approvals are part of it.
pub async fn add_approval(
    tx: &mut PgConnection,
    request_id: Uuid,
    approver: Approver<'_>,
    comment: Option<&str>,
) -> Result<Option<Approval>, sqlx::Error> {
    let added = sqlx::query_as::<_, Approval>(
        "insert into approvals (request_id, approver, approver_subject, on_behalf_of, comment)
         values ($1, $2, $3, $4, $5)
         on conflict (request_id, approver_subject) do nothing returning *",
    )
    .bind(request_id)
    .bind(approver.name)
    .bind(approver.subject)
    .bind(approver.on_behalf_of)
    .bind(comment)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query("update share_requests set version = version + 1, updated_at = now() where id = $1")
        .bind(request_id)
        .execute(&mut *tx)
        .await?;
    Ok(added)
}

/// The approvals of the given requests, oldest first.
pub async fn approvals_of(db: impl PgExecutor<'_>, request_ids: &[Uuid]) -> Result<Vec<Approval>, sqlx::Error> {
    sqlx::query_as("select * from approvals where request_id = any($1) order by approved_at, approver")
        .bind(request_ids)
        .fetch_all(db)
        .await
}
