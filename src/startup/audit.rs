//! The `audit` commands, printed in lines an operator reads: `verify` (the chain, from the
//! last archived event on), `archive` (old partitions out to a file, with the record that
//! keeps the rest verifiable) and `verify-archive` (a file against its record).

use std::path::PathBuf;

use anyhow::Context;
use chrono::Utc;

use super::connect;
use crate::config::{ArchiveMonth, AuditCommand, DatabaseArgs, instance_name};
use crate::db;
use crate::db::audit::archive::{ArchiveCheck, ArchiveError, ArchiveRecord, ArchiveRequest};
use crate::domain::{BrokenLink, ChainReport};

/// Runs one `audit` command.
pub(super) async fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify { database, expect } => {
            let pool = connect(&database, 2, None).await?;
            let report = db::audit::verify_anchored(&pool, "verify by the command line", &expect).await?;
            print_report(&report);
            if let Some(anchor) = &report.anchor_mismatch {
                anyhow::bail!(
                    "the audit log does not match the anchor --expect {}:{}: {}",
                    anchor.expected.chain_pos,
                    anchor.expected.hash,
                    anchor.detail
                );
            }
            anyhow::ensure!(
                report.ok,
                "the audit log does not verify: it was tampered with, or events wait unsealed"
            );
            Ok(())
        }
        AuditCommand::Archive {
            database,
            before,
            file,
            drop,
        } => archive(&database, before, file, drop).await,
        AuditCommand::VerifyArchive { database, file } => {
            let pool = connect(&database, 2, None).await?;
            let check = db::audit::archive::verify_file(&pool, &file)
                .await
                .with_context(|| format!("checking {}", file.display()))?;
            print_check(&file, &check);
            anyhow::ensure!(
                check.ok(),
                "{} is not the archive its record describes: it was changed, or the records were",
                file.display()
            );
            Ok(())
        }
    }
}

/// Archives the partitions that end by `before`, a month that has begun.
async fn archive(
    database: &DatabaseArgs,
    before: ArchiveMonth,
    file: Option<PathBuf>,
    drop: bool,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        before <= ArchiveMonth::of(Utc::now()),
        "--before {before}: that month has not begun; only the months before the current one can be archived"
    );
    let file = file.unwrap_or_else(|| PathBuf::from(format!("audit-archive-before-{before}.ndjson")));
    let pool = connect(database, 2, None).await?;
    let request = ArchiveRequest {
        before: before.start(),
        file,
        drop,
        by: instance_name(&None),
    };
    let record = match db::audit::archive::archive(&pool, &request).await {
        Ok(record) => record,
        Err(ArchiveError::Refused(why)) => anyhow::bail!("archive refused: {why}"),
        Err(ArchiveError::Database(e)) => {
            return Err(e).context("archiving (it needs the tables' owner: the role that runs `migrate`)");
        }
        Err(e) => return Err(e.into()),
    };
    print_record(&record);
    Ok(())
}

fn places(record: &ArchiveRecord) -> String {
    match (record.first_chain_pos, record.last_chain_pos, &record.last_hash) {
        (Some(first), Some(last), Some(hash)) => {
            format!("places {first} to {last} (last hash {})", hex::encode(hash))
        }
        _ => "no places".to_owned(),
    }
}

fn print_record(record: &ArchiveRecord) {
    println!(
        "archived {} events, {}, of {}",
        record.event_count,
        places(record),
        record.partitions.join(", ")
    );
    println!("{}  {}", hex::encode(&record.file_sha256), record.file_name);
    println!(
        "recorded as archive {}; {}",
        record.id,
        if record.dropped {
            "the partitions were detached and dropped"
        } else {
            "the partitions were detached (tables of their own now, outside the log)"
        }
    );
    if let Some(last) = record.last_chain_pos {
        println!("checkpoint recorded at place {last}");
    }
}

/// What `audit verify-archive` found.
fn print_check(file: &std::path::Path, check: &ArchiveCheck) {
    println!("{}  {}", check.file_sha256, file.display());
    if let Some(record) = &check.record {
        println!(
            "archive {} of {} by {}: {} events, {}, of {}",
            record.id,
            record.archived_at.to_rfc3339(),
            record.archived_by,
            record.event_count,
            places(record),
            record.partitions.join(", ")
        );
    }
    println!("{} events read", check.events_checked);
    if let Some(broken) = &check.first_broken_link {
        print_broken(broken);
    }
    if let Some(mismatch) = &check.mismatch {
        println!("MISMATCH: {mismatch}");
    }
    match &check.checkpoint_mismatch {
        Some(m) => println!(
            "CHECKPOINT MISMATCH at place {} (taken by {}): {}",
            m.checkpoint.chain_pos, m.taken_by, m.detail
        ),
        None => println!("{} checkpoints match the file", check.checkpoints_checked),
    }
    if check.ok() {
        println!("the file is the archive recorded, whole and unchanged");
    }
}

/// What `audit verify` found, in lines an operator reads.
fn print_report(report: &ChainReport) {
    if let Some(archived) = &report.archived {
        match &archived.head {
            Some(head) => println!(
                "{} events archived ({} archives) up to place {} (hash {}): the walk starts after it",
                archived.events, archived.archives, head.chain_pos, head.hash
            ),
            None => println!("{} archives, of no events", archived.archives),
        }
        if archived.checkpoints + archived.anchors > 0 {
            println!(
                "{} checkpoints and {} anchors fall in the archives: `audit verify-archive FILE` compares them",
                archived.checkpoints, archived.anchors
            );
        }
        if let Some(gap) = &archived.gap {
            println!("ARCHIVE GAP: {gap}");
        }
    }
    match &report.head {
        Some(head) => println!(
            "{} events read; the chain holds up to place {} (hash {})",
            report.events_checked, head.chain_pos, head.hash
        ),
        None if report.first_broken_link.is_none() => println!("the audit log is empty"),
        None => println!("{} events read; not even the first link holds", report.events_checked),
    }
    if let Some(broken) = &report.first_broken_link {
        print_broken(broken);
    }
    match &report.checkpoint_mismatch {
        Some(m) => println!(
            "CHECKPOINT MISMATCH at place {} (taken by {}): {}\n  hash: recorded {}, stored {}",
            m.checkpoint.chain_pos,
            m.taken_by,
            m.detail,
            m.checkpoint.hash,
            m.stored_hash.as_deref().unwrap_or("(no such event)")
        ),
        None => println!("{} checkpoints match the chain", report.checkpoints_checked),
    }
    println!("{} events not sealed yet", report.unsealed_events);
    if let Some(stale) = &report.stale_unsealed {
        println!("UNSEALED TOO LONG: {}", stale.detail);
    }
    match &report.anchor_mismatch {
        Some(m) => println!(
            "ANCHOR MISMATCH at place {}: {}\n  hash: expected {}, stored {}",
            m.expected.chain_pos,
            m.detail,
            m.expected.hash,
            m.stored_hash.as_deref().unwrap_or("(no such event)")
        ),
        None if report.anchors_checked > 0 => println!("{} anchors match the chain", report.anchors_checked),
        None => {}
    }
    if let Some(written) = &report.checkpoint_written {
        println!("checkpoint recorded at place {}", written.chain_pos);
    }
}

fn print_broken(broken: &BrokenLink) {
    println!(
        "BROKEN LINK at place {} (seq {}, event {}): {}\n  {}: expected {}, stored {}",
        broken.chain_pos, broken.seq, broken.id, broken.detail, broken.field, broken.expected, broken.stored
    );
}
