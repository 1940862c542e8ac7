//! Reading the log: sealed events, filtered, in chain order, in batches so memory stays
//! constant; every read seals what has committed first, so the newest events are there.

use futures_util::{Stream, TryStreamExt, stream};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::seal::seal_all;
use crate::db::conditions::{and_if, order_and_limit};
use crate::domain::audit::Event;
pub use crate::domain::filters::EventFilter;

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
/// project, the image's owner, the caller's own project, a target named when a request was
/// filed. Each has its index (`migrations/20261203000003_history_indexes.sql`): the first
/// three in chain order; the targets, a list, in a GIN index, which finds the few events
/// naming the project but in no order (`true`: read them all, then take the first).
const PROJECT_SIDES: [(&str, bool); 4] = [
    ("project_id = ", false),
    ("target ->> 'owner_project_id' = ", false),
    ("initiator ->> 'project' = ", false),
    ("details -> 'targets' ? ", true),
];

/// Paging by place in the chain never skips or repeats an event: places are given in
/// increasing order, once, and an event that commits late is placed after the others.
///
/// The statement holds the filters given and no others (`db::conditions`). A project filter
/// is one arm per side, each the first `limit` events of its side in chain order (one
/// index range each), and the page the first `limit` of their union: the same events as
/// one condition ORing the sides, which Postgres could only answer by reading every event
/// of the project and sorting them.
async fn sealed_batch(
    db: impl PgExecutor<'_>,
    filter: &EventFilter,
    after_pos: i64,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    let mut q = QueryBuilder::new("select * from audit_events where chain_pos > ");
    q.push_bind(after_pos);
    match &filter.project_id {
        None => narrow(&mut q, filter),
        Some(project) => {
            q.push(" and chain_pos in (");
            for (i, (side, unordered)) in PROJECT_SIDES.into_iter().enumerate() {
                q.push(if i == 0 { "(" } else { " union (" });
                // `offset 0` keeps Postgres from reading the whole log in chain order to find
                // the few events of an unordered side: it finds them first, then sorts them.
                q.push(if unordered { "select chain_pos from (" } else { "" });
                q.push("select chain_pos from audit_events where chain_pos > ")
                    .push_bind(after_pos);
                q.push(" and ").push(side).push_bind(project);
                narrow(&mut q, filter);
                q.push(if unordered { " offset 0) side" } else { "" });
                order_and_limit(&mut q, "chain_pos", limit);
                q.push(")");
            }
            q.push(")");
        }
    }
    order_and_limit(&mut q, "chain_pos", limit);
    q.build_query_as().fetch_all(db).await
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
