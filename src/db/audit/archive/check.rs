//! Checking an archive file against its record (`audit verify-archive`): the file's
//! SHA-256 names the record; every event's digest and link are recomputed from the record's
//! first place and hash on, in constant memory; the count, the last place and hash, and the
//! checkpoints that fall in the file are compared.

use std::path::Path;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::{ArchiveError, ArchiveRecord};
use crate::domain::audit::{Event, Walk, parse_archive_line};
use crate::domain::{BrokenLink, ChainLink, CheckpointMismatch};

/// What checking an archive file against its record found.
#[derive(Debug)]
pub struct ArchiveCheck {
    /// SHA-256 of the file's bytes, hex.
    pub file_sha256: String,
    /// The archive recorded with that SHA-256.
    pub record: Option<ArchiveRecord>,
    /// Events read from the file, in order, up to the first broken link.
    pub events_checked: i64,
    pub first_broken_link: Option<BrokenLink>,
    /// What differs between the file and its record, or why the file is not an archive.
    pub mismatch: Option<String>,
    /// Checkpoints whose place is in the file, compared with its events.
    pub checkpoints_checked: i64,
    pub checkpoint_mismatch: Option<CheckpointMismatch>,
}

impl ArchiveCheck {
    /// The file is the archive recorded, whole and unchanged, and every checkpoint in its
    /// range matches it.
    pub fn ok(&self) -> bool {
        self.record.is_some()
            && self.first_broken_link.is_none()
            && self.mismatch.is_none()
            && self.checkpoint_mismatch.is_none()
    }
}

#[derive(sqlx::FromRow)]
struct Checkpoint {
    taken_at: DateTime<Utc>,
    taken_by: String,
    chain_pos: i64,
    hash: Vec<u8>,
}

/// Checks `file` against the archive recorded with its SHA-256: reads it line by line
/// (constant memory), recomputes every event's digest and link from the record's first
/// place and hash on, compares the count, the last place and hash with the record, and
/// every checkpoint whose place the file holds with the event there.
pub async fn verify_file(pool: &PgPool, file: &Path) -> Result<ArchiveCheck, ArchiveError> {
    let mut bytes = BufReader::new(File::open(file).await?);
    let mut sha256 = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = bytes.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        sha256.update(&buffer[..read]);
    }
    let digest: [u8; 32] = sha256.finalize().into();
    let record: Option<ArchiveRecord> = sqlx::query_as("select * from audit_archives where file_sha256 = $1")
        .bind(&digest[..])
        .fetch_optional(pool)
        .await?;
    let mut check = ArchiveCheck {
        file_sha256: hex::encode(digest),
        record,
        events_checked: 0,
        first_broken_link: None,
        mismatch: None,
        checkpoints_checked: 0,
        checkpoint_mismatch: None,
    };
    let Some(record) = check.record.clone() else {
        check.mismatch = Some(format!(
            "no archive of this log has a file with SHA-256 {}: the file was changed since it was written, or it is not an archive of this log",
            check.file_sha256
        ));
        return Ok(check);
    };
    let checkpoints: Vec<Checkpoint> = sqlx::query_as(
        "select taken_at, taken_by, chain_pos, hash from audit_checkpoints
         where chain_pos between $1 and $2 order by chain_pos",
    )
    .bind(record.first_chain_pos.unwrap_or(1))
    .bind(record.last_chain_pos.unwrap_or(0))
    .fetch_all(pool)
    .await?;
    let mut checkpoints = checkpoints.into_iter().peekable();
    let mut walk = match (record.first_chain_pos, &record.first_prev_hash) {
        (Some(first), Some(prev)) => Walk::after(&ChainLink {
            chain_pos: first - 1,
            hash: hex::encode(prev),
        }),
        _ => Walk::default(),
    };
    let mut lines = BufReader::new(File::open(file).await?).lines();
    let mut number = 0;
    while let Some(line) = lines.next_line().await? {
        number += 1;
        let event = match parse_archive_line(line.as_bytes()) {
            Ok(event) => event,
            Err(e) => {
                check.mismatch = Some(format!("line {number} is not an archived event: {e}"));
                break;
            }
        };
        while let Some(c) = checkpoints.next_if(|c| Some(c.chain_pos) <= event.chain_pos) {
            check.checkpoints_checked += 1;
            if check.checkpoint_mismatch.is_none()
                && (Some(c.chain_pos) != event.chain_pos || Some(&c.hash) != event.hash.as_ref())
            {
                check.checkpoint_mismatch = Some(checkpoint_mismatch(c, &event));
            }
        }
        if !walk.step(event) {
            break;
        }
    }
    check.events_checked = walk.checked;
    check.first_broken_link = walk.first_broken_link.take();
    let head = walk.head.filter(|_| walk.checked > 0);
    if check.mismatch.is_none() && check.first_broken_link.is_none() {
        let recorded = record.last_chain_pos.zip(record.last_hash.clone());
        if walk.checked != record.event_count || head != recorded {
            check.mismatch = Some(format!(
                "the file holds {} events ending at place {:?}; its record says {} ending at place {:?}",
                walk.checked,
                head.map(|h| h.0),
                record.event_count,
                record.last_chain_pos
            ));
        }
    }
    Ok(check)
}

fn checkpoint_mismatch(checkpoint: Checkpoint, event: &Event) -> CheckpointMismatch {
    let held = event.chain_pos == Some(checkpoint.chain_pos);
    CheckpointMismatch {
        taken_at: checkpoint.taken_at,
        taken_by: checkpoint.taken_by,
        checkpoint: ChainLink {
            chain_pos: checkpoint.chain_pos,
            hash: hex::encode(&checkpoint.hash),
        },
        stored_hash: event.hash.as_ref().filter(|_| held).map(hex::encode),
        detail: if held {
            format!(
                "the checkpoint of {} recorded another hash for the event at place {}: the archived history was rewritten",
                checkpoint.taken_at.to_rfc3339(),
                checkpoint.chain_pos
            )
        } else {
            format!(
                "the checkpoint of {} recorded the event at place {}, which the file does not hold",
                checkpoint.taken_at.to_rfc3339(),
                checkpoint.chain_pos
            )
        },
    }
}
