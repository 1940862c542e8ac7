//! Reading the log: sealed events, filtered, in chain order, in batches so memory stays
//! constant; every read seals what has committed first, so the newest events are there.

use futures_util::{Stream, TryStreamExt, stream};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::seal::seal_all;
use crate::db::conditions::{and_if, order_and_limit};
use crate::domain::audit::{Digested, Event};
pub use crate::domain::filters::EventFilter;
use crate::tasks::on_cores_in_order;

impl FromRow<'_, PgRow> for Event {
    fn from_row(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Event {
            seq: row.try_get("seq")?,
            id: row.try_get("id")?,
            occurred_at: row.try_get("occurred_at")?,
            action: row.try_get("action")?,
            outcome: row.try_get("outcome")?,
            initiator: row.try_get("initiator")?,
            target: row.try_get("target")?,
            observer: row.try_get("observer")?,
            request_id: row.try_get("request_id")?,
            share_id: row.try_get("share_id")?,
            image_id: row.try_get("image_id")?,
            project_id: row.try_get("project_id")?,
            reason: row.try_get("reason")?,
            correlation_id: row.try_get("correlation_id")?,
            details: row.try_get("details")?,
            digest_scheme: row.try_get("digest_scheme")?,
            chain_pos: row.try_get("chain_pos")?,
            prev_hash: row.try_get("prev_hash")?,
            hash: row.try_get("hash")?,
        })
    }
}

/// Every sealed event about one share request, in chain order (after sealing what has
/// committed).
pub async fn for_request(pool: &PgPool, request_id: Uuid) -> Result<Vec<Event>, sqlx::Error> {
    let filter = EventFilter {
        request_id: Some(request_id),
        ..EventFilter::default()
    };
    stream(LogReader::primary(pool), filter, 0).try_collect().await
}

/// Up to `limit` sealed events matching `filter` placed after `after_pos`, in chain order.
/// Seals what has committed first, so the newest events are there.
pub async fn page(
    log: &LogReader,
    filter: &EventFilter,
    after_pos: i64,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    seal_all(&log.primary).await?;
    sealed_batch(&log.reads, filter, after_pos, limit).await
}

/// Where the log is read from: what has committed is sealed on the primary, then read from
/// `reads`, a standby when `GSB_DATABASE_READ_URL` names one. A standby shows a prefix of the
/// chain (events are sealed in chain order and replayed in commit order), so a page or an
/// export from it never skips an event: it may end earlier, by the standby's replay lag.
#[derive(Debug, Clone)]
pub struct LogReader {
    pub primary: PgPool,
    pub reads: PgPool,
}

impl LogReader {
    /// Reads from the primary itself.
    pub fn primary(pool: &PgPool) -> Self {
        LogReader {
            primary: pool.clone(),
            reads: pool.clone(),
        }
    }
}

/// The sides a project can be on in an event, each a condition on `project`: the member
/// project, the image's owner, the caller's own project. Each has its index in chain order
/// (`migrations/20261203000003_history_indexes.sql`). The fourth side, a target named when
/// a request was filed (`details.targets`, a list), has a table of its own,
/// `audit_event_targets` (`migrations/20261203000007_audit_event_targets.sql`).
const PROJECT_SIDES: [&str; 3] = [
    "project_id = ",
    "target ->> 'owner_project_id' = ",
    "initiator ->> 'project' = ",
];

/// Paging by place in the chain never skips or repeats an event: places are given in
/// increasing order, once, and an event that commits late is placed after the others.
///
/// The statement holds the filters given and no others (`db::conditions`). A project filter
/// is one arm per side, each the first `limit` events of its side in chain order (one
/// index range each), and the page the first `limit` of them, each event once: the same
/// events as one condition ORing the sides, which Postgres could only answer by reading
/// every event of the project and sorting them.
///
/// The log is partitioned by month, so a statement on it reaches dozens of partitions, and
/// planning it costs more than running it (some 15-30 ms for a project's page against 3 ms
/// to run it, with three years of partitions). The page is read with a generic plan
/// (`plan_cache_mode`, for this transaction only): planned once per connection and
/// statement, its partitions pruned by time when it runs. Every condition is written so that
/// a generic plan reads the same index ranges a plan for the values would.
async fn sealed_batch(
    pool: &PgPool,
    filter: &EventFilter,
    after_pos: i64,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    let mut q = QueryBuilder::new("select ");
    match &filter.project_id {
        None if only_times(filter) => {
            // A time range's events are found by time, not in chain order: the page's
            // places are taken from the index alone (`(occurred_at, chain_pos)`, all of a
            // day's entries, then the first `limit`), and only the page's events are read,
            // each from the one partition its time names.
            q.push("e.* from (select occurred_at, chain_pos from audit_events where chain_pos > ")
                .push_bind(after_pos);
            narrow(&mut q, filter);
            order_and_limit(&mut q, "chain_pos", limit);
            q.push(") page");
            push_event_at(&mut q, "page");
            q.push(") e order by page.chain_pos");
            return read_generic(pool, q).await;
        }
        None => {
            q.push("* from audit_events where chain_pos > ").push_bind(after_pos);
            narrow(&mut q, filter);
        }
        Some(project) => {
            q.push("distinct on (chain_pos) * from (");
            for side in PROJECT_SIDES {
                q.push("(select * from audit_events where chain_pos > ")
                    .push_bind(after_pos)
                    .push(" and ")
                    .push(side)
                    .push_bind(project);
                narrow(&mut q, filter);
                order_and_limit(&mut q, "chain_pos", limit);
                q.push(") union all ");
            }
            // The events naming the project as a target, from its entries in chain order,
            // each read from the one partition its time names.
            q.push("(select e.* from audit_event_targets t");
            push_event_at(&mut q, "t");
            narrow(&mut q, filter);
            q.push(") e where t.project = ")
                .push_bind(project)
                .push(" and t.chain_pos > ")
                .push_bind(after_pos);
            order_and_limit(&mut q, "t.chain_pos", limit);
            q.push(")");
            q.push(") sides");
        }
    }
    order_and_limit(&mut q, "chain_pos", limit);
    read_generic(pool, q).await
}

/// Adds the lateral read of the event whose place and time `at` (an alias) gives, from the
/// one partition its time names, as `e`, its conditions left open for more.
fn push_event_at(q: &mut QueryBuilder<'_, Postgres>, at: &str) {
    q.push(" cross join lateral (select * from audit_events e where e.occurred_at = ")
        .push(at)
        .push(".occurred_at and e.chain_pos = ")
        .push(at)
        .push(".chain_pos");
}

/// Whether `filter` names a time range and nothing else.
fn only_times(filter: &EventFilter) -> bool {
    let EventFilter {
        image_id,
        project_id,
        actor,
        action,
        outcome,
        after,
        before,
        request_id,
        share_id,
        actions,
        member_project_id,
    } = filter;
    (after.is_some() || before.is_some())
        && image_id.is_none()
        && project_id.is_none()
        && actor.is_none()
        && action.is_none()
        && outcome.is_none()
        && request_id.is_none()
        && share_id.is_none()
        && actions.is_empty()
        && member_project_id.is_none()
}

/// Runs a page's statement with a generic plan and no parallel workers (for this
/// transaction only): a page is a few index ranges, which workers only delay (starting two
/// took 7 ms, for a scan of 1 ms).
async fn read_generic(pool: &PgPool, mut q: QueryBuilder<'_, Postgres>) -> Result<Vec<Event>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "select set_config('plan_cache_mode', 'force_generic_plan', true), \
                set_config('max_parallel_workers_per_gather', '0', true)",
    )
    .execute(&mut *tx)
    .await?;
    let events = q.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    Ok(events)
}

/// Adds every condition of `filter` but the project's.
fn narrow<'a>(q: &mut QueryBuilder<'a, Postgres>, filter: &'a EventFilter) {
    and_if(q, "image_id = ", filter.image_id);
    and_if(q, "initiator ->> 'name' = ", filter.actor.as_deref());
    if !filter.actions.is_empty() {
        q.push(" and action = any(").push_bind(&filter.actions).push(")");
    }
    and_if(q, "outcome = ", filter.outcome.map(<&str>::from));
    and_if(q, "occurred_at >= ", filter.after);
    and_if(q, "occurred_at < ", filter.before);
    and_if(q, "request_id = ", filter.request_id);
    and_if(q, "share_id = ", filter.share_id);
    and_if(q, "project_id = ", filter.member_project_id.as_deref());
    and_if(q, "action = ", filter.action.as_deref());
}

/// Rows read per query when streaming: enough that a query's round trip is small beside
/// reading its rows, few enough that the batches in hand stay a few megabytes.
const BATCH: i64 = 1000;

/// Every sealed event matching `filter` placed after `after_pos`, in chain order, in
/// batches of up to [`BATCH`], after sealing what has committed; events sealed meanwhile are
/// included. A task reads each batch while the caller works on the one before (it waits
/// once it is a batch ahead), so reading and the caller's work overlap, and memory stays
/// constant however long the log is. It stops when the caller drops the stream.
pub fn batches(
    log: LogReader,
    filter: EventFilter,
    after_pos: i64,
) -> impl Stream<Item = Result<Vec<Event>, sqlx::Error>> + Send + 'static {
    let (ahead, batches) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let LogReader { primary, reads } = log;
        if let Err(e) = seal_all(&primary).await {
            let _ = ahead.send(Err(e)).await;
            return;
        }
        let mut after = after_pos;
        loop {
            let batch = sealed_batch(&reads, &filter, after, BATCH).await;
            let next = match &batch {
                Ok(rows) if rows.len() as i64 == BATCH => rows.last().and_then(|last| last.chain_pos),
                _ => None,
            };
            // An empty batch ends the stream without being sent.
            let empty = batch.as_ref().is_ok_and(Vec::is_empty);
            if empty || ahead.send(batch).await.is_err() {
                return;
            }
            match next {
                Some(next) => after = next,
                None => return,
            }
        }
    });
    stream::unfold(batches, |mut batches| async move {
        batches.recv().await.map(|batch| (batch, batches))
    })
}

/// [`batches`], each event with its content's digest ([`Digested`]), in chain order: the
/// digests of a few batches are computed at once on the blocking threads (one batch per
/// core) while the next batches are read, so a walk over the chain checks links as fast as
/// the cores digest and Postgres sends, in constant memory.
pub fn digested(
    log: LogReader,
    filter: EventFilter,
    after_pos: i64,
) -> impl Stream<Item = Result<Vec<Digested>, sqlx::Error>> + Send + 'static {
    on_cores_in_order(batches(log, filter, after_pos), |_, batch: Vec<Event>| {
        batch.into_iter().map(Digested::from).collect()
    })
}

/// [`batches`], one event at a time.
pub fn stream(
    log: LogReader,
    filter: EventFilter,
    after_pos: i64,
) -> impl Stream<Item = Result<Event, sqlx::Error>> + Send + 'static {
    batches(log, filter, after_pos)
        .map_ok(|batch| stream::iter(batch.into_iter().map(Ok)))
        .try_flatten()
}
