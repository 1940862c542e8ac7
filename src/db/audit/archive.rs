//! Archiving the front of the chain. [`archive`] writes the events of every partition that
//! ends by a given month to a file, records the file and the chain's places in
//! `audit_archives`, checkpoints the archived head and detaches (or drops) the partitions,
//! in one transaction; it refuses unless those events are sealed, intact, and the front of
//! what remains. [`prefix`] is where `audit verify` starts from afterwards; [`verify_file`]
//! ([`check`]) checks a file against its record. Archiving needs the tables' owner: the
//! application's role can neither detach, drop nor record.

use std::path::{Path, PathBuf};
use std::pin::pin;

use chrono::{DateTime, Utc};
use futures_util::{TryStreamExt, future};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio::fs::File;
use tokio::io::{AsyncWriteExt, BufWriter};
use uuid::Uuid;

mod check;

pub use self::check::{ArchiveCheck, verify_file};
use super::partitions;
use super::read::{EventFilter, LogReader, stream};
use crate::domain::audit::{ArchivedPrefix, GENESIS, Walk, archive_line};
use crate::domain::{BrokenLink, ChainLink};

/// What to archive, where to, and who asks.
#[derive(Debug, Clone)]
pub struct ArchiveRequest {
    /// Every partition whose range ends at or before this instant is archived (the default
    /// partition never is).
    pub before: DateTime<Utc>,
    /// The file the events are written to (replaced if it exists).
    pub file: PathBuf,
    /// Drop the partitions once detached, instead of leaving them as tables of their own.
    pub drop: bool,
    /// Where the archive was run from (recorded beside the database role).
    pub by: String,
}

/// One row of `audit_archives`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArchiveRecord {
    pub id: Uuid,
    pub archived_at: DateTime<Utc>,
    pub archived_by: String,
    pub before: DateTime<Utc>,
    pub partitions: Vec<String>,
    pub dropped: bool,
    pub file_name: String,
    pub file_sha256: Vec<u8>,
    pub event_count: i64,
    pub first_chain_pos: Option<i64>,
    pub last_chain_pos: Option<i64>,
    pub first_prev_hash: Option<Vec<u8>>,
    pub last_hash: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Archiving would lose or break part of the chain: nothing was changed.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the archive file: {0}")]
    File(#[from] std::io::Error),
}

fn refused<T>(why: String) -> Result<T, ArchiveError> {
    Err(ArchiveError::Refused(why))
}

/// The archived front of the chain, if anything was archived: its last event, the counts,
/// and whether the records follow one another (checkpoint and anchor counts are the
/// caller's to fill).
pub async fn prefix(pool: &PgPool) -> Result<Option<ArchivedPrefix>, sqlx::Error> {
    let (archives, events): (i64, i64) =
        sqlx::query_as("select count(*), coalesce(sum(event_count), 0)::bigint from audit_archives")
            .fetch_one(pool)
            .await?;
    if archives == 0 {
        return Ok(None);
    }
    let head: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "select last_chain_pos, last_hash from audit_archives where event_count > 0
         order by last_chain_pos desc limit 1",
    )
    .fetch_optional(pool)
    .await?;
    let gap: Option<(i64, Option<i64>)> = sqlx::query_as(
        "select first_chain_pos, prev_last from (
             select first_chain_pos, first_prev_hash,
                    lag(last_chain_pos) over w as prev_last, lag(last_hash) over w as prev_hash
             from audit_archives where event_count > 0 window w as (order by first_chain_pos)) a
         where first_chain_pos <> coalesce(prev_last, 0) + 1 or first_prev_hash <> coalesce(prev_hash, $1)
         order by first_chain_pos limit 1",
    )
    .bind(&GENESIS[..])
    .fetch_optional(pool)
    .await?;
    Ok(Some(ArchivedPrefix {
        head: head.map(|(chain_pos, hash)| ChainLink {
            chain_pos,
            hash: hex::encode(hash),
        }),
        archives,
        events,
        checkpoints: 0,
        anchors: 0,
        gap: gap.map(|(first, prev_last)| {
            let before = prev_last.map_or("the start of the chain".to_owned(), |last| {
                format!("the archive that ends at place {last}")
            });
            format!("the archive that starts at place {first} does not follow {before}: archive records were removed or changed")
        }),
    }))
}

/// `select_one` over each partition of `names`, joined by `union all`. The names are
/// Postgres's own (`regclass` text, quoted where SQL needs it).
fn each(names: &[String], select_one: impl Fn(&str) -> String) -> String {
    names
        .iter()
        .map(|name| select_one(name))
        .collect::<Vec<_>>()
        .join(" union all ")
}

/// Archives every partition that ends by `request.before`: refuses unless all their events
/// are sealed, their links hold from the last archive on, and no event left in the log has
/// a place before their last one; writes them to `request.file` (through a `.partial`
/// file, renamed once complete and flushed to disk); then, in one transaction, detaches the
/// partitions, checks that nothing entered them meanwhile, records the archive, checkpoints
/// its last event, and drops the partitions when asked.
pub async fn archive(pool: &PgPool, request: &ArchiveRequest) -> Result<ArchiveRecord, ArchiveError> {
    let (chosen, kept): (Vec<_>, Vec<_>) = partitions::list(pool)
        .await?
        .into_iter()
        .partition(|p| !p.is_default && p.to_at.is_some_and(|to| to <= request.before));
    let names: Vec<String> = chosen.into_iter().map(|p| p.name).collect();
    let kept: Vec<String> = kept.into_iter().map(|p| p.name).collect();
    if names.is_empty() {
        return refused(format!(
            "no partition of audit_events ends by {}: nothing to archive",
            request.before.to_rfc3339()
        ));
    }
    let start = prefix(pool).await?;
    if let Some(gap) = start.as_ref().and_then(|p| p.gap.clone()) {
        return refused(format!("{gap}; `audit verify` reports it"));
    }
    refuse_unsealed(pool, &names).await?;
    let span: Span = sqlx::query_as(&format!(
        "select count(*) as events, min(chain_pos) as first, max(chain_pos) as last
         from ({}) s",
        each(&names, |p| format!("select chain_pos from {p}"))
    ))
    .fetch_one(pool)
    .await?;
    if let Some(last) = span.last {
        refuse_interleaved(pool, &kept, last).await?;
    }
    let start = start.and_then(|p| p.head);
    let written = write_file(pool, start.as_ref(), &span, &request.file).await?;
    record(pool, request, &names, &written).await
}

/// How many events some partitions hold, and the first and last places among them.
#[derive(Debug, sqlx::FromRow)]
struct Span {
    events: i64,
    first: Option<i64>,
    last: Option<i64>,
}

async fn refuse_unsealed(db: impl sqlx::PgExecutor<'_>, names: &[String]) -> Result<(), ArchiveError> {
    let unsealed: Option<(i64, Uuid, DateTime<Utc>, String)> = sqlx::query_as(&format!(
        "select * from ({}) s order by seq limit 1",
        each(names, |p| format!(
            "select seq, id, occurred_at, tableoid::regclass::text from {p} where chain_pos is null"
        ))
    ))
    .fetch_optional(db)
    .await?;
    match unsealed {
        Some((seq, id, occurred_at, partition)) => refused(format!(
            "event {seq} ({id}, of {}) in {partition} is not sealed: only sealed events are archived \
             (a running sealer seals within a second; if it stays unsealed, `audit verify` says why)",
            occurred_at.to_rfc3339()
        )),
        None => Ok(()),
    }
}

/// Refuses when an event of a partition that stays has a place at or before `last`: the
/// archive would not be the front of the chain.
async fn refuse_interleaved(db: impl sqlx::PgExecutor<'_>, kept: &[String], last: i64) -> Result<(), ArchiveError> {
    if kept.is_empty() {
        return Ok(());
    }
    let inside: Option<(i64, String)> = sqlx::query_as(&format!(
        "select * from ({}) s order by 1 limit 1",
        each(kept, |p| format!(
            "(select chain_pos, tableoid::regclass::text from {p} where chain_pos <= $1 order by chain_pos limit 1)"
        ))
    ))
    .bind(last)
    .fetch_optional(db)
    .await?;
    match inside {
        Some((pos, partition)) => refused(format!(
            "the event at place {pos} stays in {partition}, before place {last}, the last one to archive: \
             the months' events interleave in the chain (events sealed out of their months' order near a \
             month's end); archive a later month with them (a later --before)"
        )),
        None => Ok(()),
    }
}

/// What went into an archive file.
struct Written {
    file_name: String,
    sha256: [u8; 32],
    events: i64,
    /// The first event's place and the hash it chains to.
    first: Option<(i64, Vec<u8>)>,
    /// The last event's place and hash.
    last: Option<(i64, Vec<u8>)>,
}

fn partial(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Writes every sealed event after `start` up to `span.last` to `file`, checking each link
/// as it goes; refuses (and leaves no file) unless they are exactly `span`'s events.
async fn write_file(
    pool: &PgPool,
    start: Option<&ChainLink>,
    span: &Span,
    file: &Path,
) -> Result<Written, ArchiveError> {
    let partial = partial(file);
    let written = write_events(pool, start, span, file, &partial).await;
    match written {
        Ok(written) => {
            tokio::fs::rename(&partial, file).await?;
            Ok(written)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(e)
        }
    }
}

async fn write_events(
    pool: &PgPool,
    start: Option<&ChainLink>,
    span: &Span,
    file: &Path,
    partial: &Path,
) -> Result<Written, ArchiveError> {
    let mut out = BufWriter::new(File::create(partial).await?);
    let mut sha256 = Sha256::new();
    let mut walk = start.map_or_else(Walk::default, Walk::after);
    let mut first = None;
    if let Some(last) = span.last {
        let after = start.map_or(0, |s| s.chain_pos);
        let events = stream(LogReader::primary(pool), EventFilter::default(), after)
            .try_take_while(|e| future::ready(Ok(e.chain_pos.is_some_and(|pos| pos <= last))));
        let mut events = pin!(events);
        while let Some(event) = events.try_next().await? {
            first.get_or_insert_with(|| {
                (
                    event.chain_pos.unwrap_or_default(),
                    event.prev_hash.clone().unwrap_or_default(),
                )
            });
            let line = archive_line(&event);
            sha256.update(&line);
            out.write_all(&line).await?;
            if !walk.step(event) {
                let broken: BrokenLink = walk.first_broken_link.expect("a walk that stops names its broken link");
                return refused(format!(
                    "the chain breaks at place {} (seq {}, field {}): {}; nothing archived (`audit verify` reports it)",
                    broken.chain_pos, broken.seq, broken.field, broken.detail
                ));
            }
        }
    }
    out.flush().await?;
    out.get_ref().sync_all().await?;
    let last = walk.head.filter(|_| walk.checked > 0);
    if walk.checked != span.events
        || first.as_ref().map(|f| f.0) != span.first
        || last.as_ref().map(|l| l.0) != span.last
    {
        return refused(format!(
            "the partitions hold {} events (places {:?} to {:?}) but the chain after the last archive up to there holds {}: nothing archived",
            span.events, span.first, span.last, walk.checked
        ));
    }
    Ok(Written {
        file_name: file.display().to_string(),
        sha256: sha256.finalize().into(),
        events: walk.checked,
        first,
        last,
    })
}

/// Detaches the partitions, checks nothing entered them since the file was written,
/// records the archive and checkpoints its last event, and drops them when asked: one
/// transaction. Detaching locks the log against writers until it commits: it waits at most
/// 5 s for that lock.
async fn record(
    pool: &PgPool,
    request: &ArchiveRequest,
    names: &[String],
    written: &Written,
) -> Result<ArchiveRecord, ArchiveError> {
    let mut tx = pool.begin().await?;
    sqlx::query("set local lock_timeout = '5s'").execute(&mut *tx).await?;
    for name in names {
        sqlx::query(&format!("alter table public.audit_events detach partition {name}"))
            .execute(&mut *tx)
            .await?;
    }
    refuse_changed(&mut tx, names, written).await?;
    // Recorded only when it follows the latest archive: another one recorded meanwhile (by a
    // second operator) makes this one refused, not a second record of the same places.
    let record: Option<ArchiveRecord> = sqlx::query_as(
        "insert into audit_archives (id, archived_by, before, partitions, dropped, file_name, file_sha256,
             event_count, first_chain_pos, last_chain_pos, first_prev_hash, last_hash)
         select $1, current_user || ' on ' || $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
         where $9::bigint is null
            or $9 = coalesce((select max(a.last_chain_pos) from audit_archives a), 0) + 1
         returning *",
    )
    .bind(Uuid::now_v7())
    .bind(&request.by)
    .bind(request.before)
    .bind(names)
    .bind(request.drop)
    .bind(&written.file_name)
    .bind(&written.sha256[..])
    .bind(written.events)
    .bind(written.first.as_ref().map(|f| f.0))
    .bind(written.last.as_ref().map(|l| l.0))
    .bind(written.first.as_ref().map(|f| &f.1))
    .bind(written.last.as_ref().map(|l| &l.1))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(record) = record else {
        return refused("another archive was recorded meanwhile: nothing archived; run it again".to_owned());
    };
    if let Some((chain_pos, hash)) = &written.last {
        // The archived events' entries in the index of projects named at filing.
        sqlx::query("delete from audit_event_targets where chain_pos <= $1")
            .bind(chain_pos)
            .execute(&mut *tx)
            .await?;
        sqlx::query("insert into audit_checkpoints (id, chain_pos, hash, taken_by) values ($1, $2, $3, $4)")
            .bind(Uuid::new_v4())
            .bind(chain_pos)
            .bind(hash)
            .bind(format!("archive {}", record.id))
            .execute(&mut *tx)
            .await?;
    }
    if request.drop {
        for name in names {
            sqlx::query(&format!("drop table {name}")).execute(&mut *tx).await?;
        }
    }
    tx.commit().await?;
    if let Some((chain_pos, hash)) = &written.last {
        tracing::info!(
            target: "audit.checkpoint",
            chain_pos,
            hash = %hex::encode(hash),
            taken_by = %format!("archive {}", record.id),
            "audit checkpoint"
        );
    }
    Ok(record)
}

/// After the partitions are detached (no event can enter them now): refuses when one holds
/// an unsealed event, or places other than those written (an event sealed since), or when
/// the log left holds a place up to the last one written.
async fn refuse_changed(tx: &mut PgConnection, names: &[String], written: &Written) -> Result<(), ArchiveError> {
    refuse_unsealed(&mut *tx, names).await?;
    let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(&format!(
        "select min(lo), max(hi) from ({}) s",
        each(names, |p| format!(
            "select (select min(chain_pos) from {p}) as lo, (select max(chain_pos) from {p}) as hi"
        ))
    ))
    .fetch_one(&mut *tx)
    .await?;
    if first != written.first.as_ref().map(|f| f.0) || last != written.last.as_ref().map(|l| l.0) {
        return refused(format!(
            "the partitions changed while they were written (places {first:?} to {last:?} now): nothing archived; run it again"
        ));
    }
    match last {
        Some(last) => refuse_interleaved(&mut *tx, &["public.audit_events".to_owned()], last).await,
        None => Ok(()),
    }
}
