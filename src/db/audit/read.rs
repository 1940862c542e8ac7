//! Reading the log: sealed events, filtered, in chain order, in batches so memory stays
//! constant; every read seals what has committed first, so the newest events are there.

use futures_util::{Stream, TryStreamExt, stream};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgExecutor, PgPool, Row};
use uuid::Uuid;

use super::seal::seal_all;
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

/// Paging by place in the chain never skips or repeats an event: places are given in
/// increasing order, once, and an event that commits late is placed after the others.
async fn sealed_batch(
    db: impl PgExecutor<'_>,
    filter: &EventFilter,
    after_pos: i64,
    limit: i64,
) -> Result<Vec<Event>, sqlx::Error> {
    sqlx::query_as(
        "select * from audit_events
         where chain_pos > $1
           and ($2::uuid is null or image_id = $2)
           and ($3::text is null or project_id = $3 or target ->> 'owner_project_id' = $3
                or initiator ->> 'project' = $3 or details -> 'targets' ? $3)
           and ($4::text is null or initiator ->> 'name' = $4)
           and (cardinality($5::text[]) = 0 or action = any($5))
           and ($6::text is null or outcome = $6)
           and ($7::timestamptz is null or occurred_at >= $7)
           and ($8::timestamptz is null or occurred_at < $8)
           and ($9::uuid is null or request_id = $9)
           and ($10::uuid is null or share_id = $10)
           and ($11::text is null or project_id = $11)
           and ($12::text is null or action = $12)
         order by chain_pos
         limit $13",
    )
    .bind(after_pos)
    .bind(filter.image_id)
    .bind(&filter.project_id)
    .bind(&filter.actor)
    .bind(&filter.actions)
    .bind(filter.outcome.map(<&str>::from))
    .bind(filter.after)
    .bind(filter.before)
    .bind(filter.request_id)
    .bind(filter.share_id)
    .bind(&filter.member_project_id)
    .bind(&filter.action)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Rows read per query when streaming.
const BATCH: i64 = 500;

/// Every sealed event matching `filter` placed after `after_pos`, in chain order, after
/// sealing what has committed. Read in batches of [`BATCH`], so memory stays constant
/// however long the log is; events sealed meanwhile are included.
pub fn stream(
    log: LogReader,
    filter: EventFilter,
    after_pos: i64,
) -> impl Stream<Item = Result<Event, sqlx::Error>> + Send + 'static {
    let LogReader { primary, reads: pool } = log;
    let sealed = async move { seal_all(&primary).await };
    stream::once(sealed)
        .map_ok(move |_| {
            stream::try_unfold(
                (pool.clone(), filter.clone(), Some(after_pos)),
                |(pool, filter, after)| async move {
                    let Some(after) = after else {
                        return Ok::<_, sqlx::Error>(None);
                    };
                    let batch = sealed_batch(&pool, &filter, after, BATCH).await?;
                    let next = match batch.last() {
                        Some(last) if batch.len() as i64 == BATCH => last.chain_pos,
                        Some(_) => None,
                        None => return Ok(None),
                    };
                    Ok(Some((batch, (pool, filter, next))))
                },
            )
        })
        .try_flatten()
        .map_ok(|batch| stream::iter(batch.into_iter().map(Ok)))
        .try_flatten()
}
