//! The worker's queue. A job is claimed (state `running`, a fresh lease token, a lease
//! expiry) in one committed statement before any call to OpenStack; everything the worker
//! writes afterwards is accepted only with that token, so a worker whose lease lapsed and
//! was taken over cannot complete the job a second time.
//!
//! A worker that claimed a grant may adopt more due grants of the same image under the same
//! lease token, to carry them out in one pass: they stay `queued` with `run_at` at the
//! lease's end (so nobody else runs them meanwhile, and they come due again if the lease
//! lapses), and are renewed and finished like the claimed job. A job is held by a worker
//! while it is `running` or `queued` with that worker's token.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::shares::Share;

mod enqueue;
pub use enqueue::{
    Origin, carried_request_id, carry_origin, enqueue, enqueue_all, enqueue_grants, enqueue_reconciles,
    enqueue_validation,
};

/// Channel the API and the worker use to wake workers when a job is queued.
pub const CHANNEL: &str = "gsb_jobs";

/// What is queued for a share (a request's validation is queued by [`enqueue_validation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Add the share's project as a member of the image.
    Grant,
    /// Check whether the consumer accepted or rejected.
    Poll,
    /// Set the member's status to `accepted` for the consumer.
    Accept,
    /// Carry out a rejection asked for before rejections were carried out as revokes.
    Reject,
    /// Remove the member.
    Revoke,
}

/// `jobs.kind` of a request's validation.
const VALIDATE: &str = "validate";

/// `jobs.kind` of an image's reconciliation (queued by [`enqueue_reconciles`]).
pub const RECONCILE: &str = "reconcile";

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Grant => "grant",
            Kind::Poll => "poll",
            Kind::Accept => "accept",
            Kind::Reject => "reject",
            Kind::Revoke => "revoke",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        [Kind::Grant, Kind::Poll, Kind::Accept, Kind::Reject, Kind::Revoke]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// A job on one share that runs alone (grants run in batches: [`Job::Grant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Poll,
    Accept,
    Reject,
    Revoke,
}

impl Step {
    /// How the step is queued.
    pub fn kind(self) -> Kind {
        match self {
            Step::Poll => Kind::Poll,
            Step::Accept => Kind::Accept,
            Step::Reject => Kind::Reject,
            Step::Revoke => Kind::Revoke,
        }
    }
}

/// What a claim asks the worker to do, parsed once from its rows: a job that cannot run (a
/// grant of a request, a validation of a share) cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Check a new request against Keystone and Glance.
    Validate { request: Uuid },
    /// Add the members of these shares of one image, in the order of [`Claim::held`].
    Grant { shares: Vec<Uuid> },
    /// One step on one share.
    Share { share: Uuid, step: Step },
    /// Compare one image in Glance with the broker's record of it.
    Reconcile { image: Uuid },
}

impl Job {
    /// The job's kind in logs and `jobs.kind`.
    pub fn name(&self) -> &'static str {
        match self {
            Job::Validate { .. } => VALIDATE,
            Job::Grant { .. } => Kind::Grant.as_str(),
            Job::Share { step, .. } => step.kind().as_str(),
            Job::Reconcile { .. } => RECONCILE,
        }
    }

    /// What the job works on, for logs: the request, or the (lead) share.
    pub fn subject(&self) -> String {
        match self {
            Job::Validate { request } => format!("request {request}"),
            Job::Grant { shares } => format!("share {}", shares[0]),
            Job::Share { share, .. } => format!("share {share}"),
            Job::Reconcile { image } => format!("image {image}"),
        }
    }
}

/// A job row held by this worker until its lease ends, renewable.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub attempts: i32,
    pub lease_token: Uuid,
    /// The image the job writes to (none for a validation).
    pub image_id: Option<Uuid>,
    /// The id of the API call that queued the job (see [`carry_origin`]).
    pub origin_request_id: Option<String>,
    /// The trace of the span that queued the job, which the job's span continues.
    pub origin_trace: Option<TraceContext>,
}

/// A W3C trace context as its two headers: `traceparent`, and `tracestate` when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

/// What one claim holds: the job rows under one lease token (the lead first, then the grants
/// adopted with it), and the job they make.
#[derive(Debug, Clone)]
pub struct Claim {
    pub held: Vec<Claimed>,
    pub job: Job,
}

impl Claim {
    /// The job that was claimed; the others were adopted under its lease.
    pub fn lead(&self) -> &Claimed {
        &self.held[0]
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    kind: String,
    share_id: Option<Uuid>,
    request_id: Option<Uuid>,
    attempts: i32,
    lease_token: Option<Uuid>,
    image_id: Option<Uuid>,
    origin_request_id: Option<String>,
    origin_traceparent: Option<String>,
    origin_tracestate: Option<String>,
}

/// The columns of a claimed row, as [`Row`] reads them.
const RETURNING: &str = "returning id, kind, share_id, request_id, attempts, lease_token, image_id, \
                         origin_request_id, origin_traceparent, origin_tracestate";

impl Row {
    /// The held row and the job it asks for; `None` for a row no job can be made of.
    fn parse(self) -> Option<(Claimed, Job)> {
        let job = match (self.kind.as_str(), self.share_id, self.request_id) {
            (VALIDATE, None, Some(request)) => Job::Validate { request },
            (RECONCILE, None, None) => Job::Reconcile { image: self.image_id? },
            (kind, Some(share), None) => {
                let step = match Kind::parse(kind)? {
                    Kind::Grant => return Some((self.held()?, Job::Grant { shares: vec![share] })),
                    Kind::Poll => Step::Poll,
                    Kind::Accept => Step::Accept,
                    Kind::Reject => Step::Reject,
                    Kind::Revoke => Step::Revoke,
                };
                Job::Share { share, step }
            }
            _ => return None,
        };
        Some((self.held()?, job))
    }

    fn held(&self) -> Option<Claimed> {
        Some(Claimed {
            id: self.id,
            attempts: self.attempts,
            lease_token: self.lease_token?,
            image_id: self.image_id,
            origin_request_id: self.origin_request_id.clone(),
            origin_trace: self.origin_traceparent.clone().map(|traceparent| TraceContext {
                traceparent,
                tracestate: self.origin_tracestate.clone(),
            }),
        })
    }
}

/// How many times a claim that lost a race for an image is tried again at once. Each lost
/// race means another claim won (and committed), so retrying always makes progress; when all
/// of one process's loops claim at the same moment, the last one may lose that many times.
const CLAIM_TRIES: usize = 32;

/// Claims the next due job (or one whose lease lapsed), skipping images another job is
/// writing to; for a grant, adopts up to `batch - 1` more due grants on the same image under
/// its lease token (see the module's docs). None when nothing is due. Commits at once, in
/// one transaction: the lease is visible to every replica before Glance is called.
///
/// Two workers can pick jobs on one image at the same moment; the unique index lets one win,
/// and the other tries again at once (it then sees the image taken and picks another job),
/// rather than sit idle until the next poll while work is due.
pub async fn claim(pool: &PgPool, lease: Duration, batch: i64) -> Result<Option<Claim>, sqlx::Error> {
    claim_of(pool, lease, batch, None).await
}

/// [`claim`], of jobs of one kind only when `kind` is given (`glance-share-broker reconcile`
/// runs reconciliations only).
pub async fn claim_of(
    pool: &PgPool,
    lease: Duration,
    batch: i64,
    kind: Option<&str>,
) -> Result<Option<Claim>, sqlx::Error> {
    for _ in 0..CLAIM_TRIES {
        let mut tx = pool.begin().await?;
        let lead = match claim_one(&mut tx, lease, kind).await {
            Err(e) if e.as_database_error().and_then(|d| d.constraint()) == Some("jobs_one_running_per_image_idx") => {
                continue;
            }
            Err(e) => return Err(e),
            Ok(None) => return Ok(None),
            Ok(Some(lead)) => lead,
        };
        // A row no job can be made of is not claimed (the transaction rolls back).
        let Some((lead, mut job)) = lead.parse() else {
            return Ok(None);
        };
        let mut held = vec![lead];
        if let Job::Grant { shares } = &mut job
            && batch > 1
        {
            for (claimed, share) in adopt(&mut tx, &held[0], lease, batch - 1).await? {
                held.push(claimed);
                shares.push(share);
            }
        }
        tx.commit().await?;
        return Ok(Some(Claim { held, job }));
    }
    Ok(None)
}

async fn claim_one(tx: &mut PgConnection, lease: Duration, kind: Option<&str>) -> Result<Option<Row>, sqlx::Error> {
    sqlx::query_as::<_, Row>(&format!(
        "update jobs set state = 'running', lease_token = $1, attempts = attempts + 1,
                lease_expires_at = now() + make_interval(secs => $2)
         where id = (
            select j.id from jobs j
            where ((j.state = 'queued' and j.run_at <= now()
                    -- the first due job of its image: a claimer that finds it locked moves
                    -- on to another image, not to the same image's next job
                    and not exists (select 1 from jobs e
                                    where e.image_id = j.image_id and e.state = 'queued'
                                      and e.run_at <= now() and (e.run_at, e.id) < (j.run_at, j.id)))
                   or (j.state = 'running' and j.lease_expires_at < now()))
              and not exists (select 1 from jobs r
                              where r.image_id = j.image_id and r.state = 'running' and r.id <> j.id)
              and ($3::text is null or j.kind = $3)
            order by j.run_at
            limit 1
            for update skip locked)
         {RETURNING}"
    ))
    .bind(Uuid::new_v4())
    .bind(lease.as_secs_f64())
    .bind(kind)
    .fetch_optional(tx)
    .await
}

/// Adopts up to `limit` more due grants on the same image as `lead` (a grant this worker
/// holds), under its lease token, with their shares. They stay `queued`, due at the lease's end.
async fn adopt(
    tx: &mut PgConnection,
    lead: &Claimed,
    lease: Duration,
    limit: i64,
) -> Result<Vec<(Claimed, Uuid)>, sqlx::Error> {
    let rows = sqlx::query_as::<_, Row>(&format!(
        "update jobs set lease_token = $1, attempts = attempts + 1,
                run_at = now() + make_interval(secs => $2)
         where id in (
            select id from jobs
            where image_id = $3 and kind = $4 and id <> $5 and state = 'queued' and run_at <= now()
              -- one claim, one call: the batch's calls and events carry the lead's request id
              and origin_request_id is not distinct from $7
            order by run_at
            limit $6
            for update skip locked)
         {RETURNING}"
    ))
    .bind(lead.lease_token)
    .bind(lease.as_secs_f64())
    .bind(lead.image_id)
    .bind(Kind::Grant.as_str())
    .bind(lead.id)
    .bind(limit)
    .bind(&lead.origin_request_id)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.held()?, row.share_id?)))
        .collect())
}

/// Extends the lease of every job held under `token` (a claimed job and those it adopted);
/// `false` when none is ours any more.
pub async fn heartbeat(pool: &PgPool, token: Uuid, lease: Duration) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update jobs set lease_expires_at = case when state = 'running' then now() + make_interval(secs => $2) end,
                run_at = case when state = 'queued' then now() + make_interval(secs => $2) else run_at end
         where lease_token = $1 and state in ('running', 'queued')",
    )
    .bind(token)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// How a job ends (or pauses).
#[derive(Debug, Clone)]
pub enum Finish {
    Done,
    Failed(String),
    /// Run again at this time (a retry, or the next poll).
    Later(DateTime<Utc>, Option<String>),
}

/// Ends the claim inside `tx`; `false` means the lease was lost and `tx` must be rolled back.
pub async fn finish(tx: &mut PgConnection, job: &Claimed, how: Finish) -> Result<bool, sqlx::Error> {
    finish_all(tx, vec![(job, how)]).await
}

/// Ends several claims inside `tx` in one statement; `false` means the lease of at least one
/// was lost and `tx` must be rolled back.
pub async fn finish_all(tx: &mut PgConnection, ends: Vec<(&Claimed, Finish)>) -> Result<bool, sqlx::Error> {
    let count = ends.len();
    let (mut ids, mut tokens, mut states, mut run_ats, mut errors) = (
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
        Vec::with_capacity(count),
    );
    for (job, how) in ends {
        let (state, run_at, error) = match how {
            Finish::Done => ("done", None, None),
            Finish::Failed(e) => ("failed", None, Some(e)),
            Finish::Later(at, e) => ("queued", Some(at), e),
        };
        ids.push(job.id);
        tokens.push(job.lease_token);
        states.push(state);
        run_ats.push(run_at);
        errors.push(error);
    }
    let done = sqlx::query(
        "update jobs j set state = e.state, run_at = coalesce(e.run_at, j.run_at),
                last_error = coalesce(e.error, j.last_error), lease_token = null, lease_expires_at = null,
                finished_at = case when e.state in ('done', 'failed') then now() end
         from unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[])
             as e (id, token, state, run_at, error)
         where j.id = e.id and j.lease_token = e.token and j.state in ('running', 'queued')",
    )
    .bind(&ids)
    .bind(&tokens)
    .bind(&states)
    .bind(&run_ats)
    .bind(&errors)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected() == count as u64)
}

/// Whether this worker still holds every one of `held` (jobs under one lease token); locks
/// their rows until `tx` ends.
pub async fn holds(tx: &mut PgConnection, held: &[Claimed]) -> Result<bool, sqlx::Error> {
    let ids: Vec<Uuid> = held.iter().map(|j| j.id).collect();
    let Some(token) = held.first().map(|j| j.lease_token) else {
        return Ok(true);
    };
    let rows: Vec<Uuid> = sqlx::query_scalar(
        "select id from jobs where id = any($1) and lease_token = $2 and state in ('running', 'queued')
         order by id for update",
    )
    .bind(&ids)
    .bind(token)
    .fetch_all(tx)
    .await?;
    Ok(rows.len() == ids.len())
}

/// Whether this worker still holds every one of `held` (jobs under one lease token) under a
/// lease that has not lapsed: the fence checked before each write to Glance. A lapsed lease
/// counts as lost even before another worker takes the job over, for that may happen at any
/// moment; a worker that finds its lease lost stops writing, so a stalled worker cannot
/// re-add a member that was revoked meanwhile.
pub async fn still_held(db: impl sqlx::PgExecutor<'_>, held: &[Claimed]) -> Result<bool, sqlx::Error> {
    let ids: Vec<Uuid> = held.iter().map(|j| j.id).collect();
    let Some(token) = held.first().map(|j| j.lease_token) else {
        return Ok(true);
    };
    // Adopted jobs stay `queued`, due at the lease's end (see the module's docs).
    let live: i64 = sqlx::query_scalar(
        "select count(*) from jobs
         where id = any($1) and lease_token = $2
           and ((state = 'running' and lease_expires_at > now()) or (state = 'queued' and run_at > now()))",
    )
    .bind(&ids)
    .bind(token)
    .fetch_one(db)
    .await?;
    Ok(live == ids.len() as i64)
}
