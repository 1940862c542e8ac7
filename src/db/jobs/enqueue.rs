//! Queuing jobs, in the caller's transaction: grants, revokes and the rest, a request's
//! validation, an image's reconciliation, each waking the workers (`NOTIFY`), and the request
//! id and trace context a job carries to OpenStack.

use sqlx::PgConnection;
use uuid::Uuid;

use super::*;

/// Where the jobs a transaction queues come from: the call (or the job) they are queued for.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The call's request id, which the worker sends to OpenStack and writes on its events.
    pub request_id: &'a str,
    /// The trace context of the span that queues them (none when tracing is off), which the
    /// worker's spans for the jobs continue.
    pub trace: Option<TraceContext>,
}

/// Makes every job queued in `tx` from now on carry `origin`: the `jobs.origin_request_id`,
/// `origin_traceparent` and `origin_tracestate` columns default to the transaction's
/// `gsb.request_id`, `gsb.traceparent` and `gsb.tracestate` settings.
pub async fn carry_origin(tx: &mut PgConnection, origin: Origin<'_>) -> Result<(), sqlx::Error> {
    let trace = origin.trace.as_ref();
    sqlx::query(
        "select set_config('gsb.request_id', $1, true), set_config('gsb.traceparent', $2, true),
                set_config('gsb.tracestate', $3, true)",
    )
    .bind(origin.request_id)
    .bind(trace.map_or("", |t| &t.traceparent))
    .bind(trace.and_then(|t| t.tracestate.as_deref()).unwrap_or(""))
    .execute(tx)
    .await?;
    Ok(())
}

/// The request id `tx` carries, if [`carry_origin`] was called in it.
pub async fn carried_request_id(tx: &mut PgConnection) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select nullif(current_setting('gsb.request_id', true), '')")
        .fetch_one(tx)
        .await
}

/// Queues a job for a share unless an active one of the same kind exists. Wakes workers
/// when the transaction commits, if the job is due by then (idle workers poll for later ones).
pub async fn enqueue(
    tx: &mut PgConnection,
    kind: Kind,
    share_id: Uuid,
    image_id: Uuid,
    run_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    enqueue_all(tx, kind, &[(share_id, image_id)], run_at).await
}

/// Queues the grant of each approved share.
pub async fn enqueue_grants(tx: &mut PgConnection, shares: &[Share]) -> Result<(), sqlx::Error> {
    let subjects: Vec<(Uuid, Uuid)> = shares.iter().map(|s| (s.id, s.image_id)).collect();
    enqueue_all(tx, Kind::Grant, &subjects, Utc::now()).await
}

/// [`enqueue`] for several (share, image) pairs in one statement, which also wakes the
/// workers (once) when it queued something due.
pub async fn enqueue_all(
    tx: &mut PgConnection,
    kind: Kind,
    subjects: &[(Uuid, Uuid)],
    run_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = subjects.iter().map(|_| Uuid::now_v7()).collect();
    let (share_ids, image_ids): (Vec<Uuid>, Vec<Uuid>) = subjects.iter().copied().unzip();
    sqlx::query(
        "with queued as (
             insert into jobs (id, kind, share_id, image_id, run_at)
             select id, $2, share_id, image_id, $5 from unnest($1::uuid[], $3::uuid[], $4::uuid[])
                 as t (id, share_id, image_id)
             on conflict (kind, coalesce(share_id, request_id)) where state in ('queued', 'running') do nothing
             returning id)
         select pg_notify($6, '') where $7 and exists (select 1 from queued)",
    )
    .bind(&ids)
    .bind(kind.as_str())
    .bind(&share_ids)
    .bind(&image_ids)
    .bind(run_at)
    .bind(CHANNEL)
    .bind(run_at <= Utc::now())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Queues the validation of a new request and wakes the workers, in one statement. It
/// writes nothing to Glance, so it holds no image.
pub async fn enqueue_validation(tx: &mut PgConnection, request_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "with queued as (
             insert into jobs (id, kind, request_id) values ($1, $2, $3)
             on conflict (kind, coalesce(share_id, request_id)) where state in ('queued', 'running') do nothing
             returning id)
         select pg_notify($4, '') from queued",
    )
    .bind(Uuid::now_v7())
    .bind(VALIDATE)
    .bind(request_id)
    .bind(CHANNEL)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Queues the reconciliation of each of `images` not queued or running already, and wakes
/// the workers; returns the images queued now.
pub async fn enqueue_reconciles(tx: &mut PgConnection, images: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = images.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query_scalar(
        "with queued as (
             insert into jobs (id, kind, image_id)
             select id, $2, image_id from unnest($1::uuid[], $3::uuid[]) as t (id, image_id)
             on conflict (image_id) where kind = 'reconcile' and state in ('queued', 'running') do nothing
             returning image_id),
         woken as (select pg_notify($4, '') where exists (select 1 from queued))
         select image_id from queued left join woken on true order by image_id",
    )
    .bind(&ids)
    .bind(RECONCILE)
    .bind(images)
    .bind(CHANNEL)
    .fetch_all(&mut *tx)
    .await
}
