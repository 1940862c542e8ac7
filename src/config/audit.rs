//! The `audit` commands: verify the chain, archive old partitions, verify an archive file.

use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use clap::Subcommand;

use super::DatabaseArgs;
use crate::domain::ChainLink;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain and compare it with every checkpoint; name the first broken link.
    /// Exits non-zero when the log was tampered with. Records a checkpoint when it holds.
    /// After an archive, the walk starts after the last archived event.
    Verify {
        #[command(flatten)]
        database: DatabaseArgs,
        /// An anchor kept outside the database, `<chain_pos>:<hash>` (a logged `audit.checkpoint`):
        /// fails unless the chain holds that hash at that place (repeat for more).
        #[arg(long = "expect", value_name = "CHAIN_POS:HASH")]
        expect: Vec<ChainLink>,
    },
    /// Move the partitions of the months before `--before` out of the log: write their
    /// events to a file (NDJSON, with its SHA-256 printed), record it with the chain's
    /// places it held, checkpoint its last event, and detach the partitions. Refuses unless
    /// their events are sealed, intact and the front of the chain. Run as the tables' owner
    /// (the role that runs `migrate`).
    Archive {
        #[command(flatten)]
        database: DatabaseArgs,
        /// `YYYY-MM`: archive every partition that ends by the start of that month (UTC), a
        /// month that has begun.
        #[arg(long, value_name = "YYYY-MM")]
        before: ArchiveMonth,
        /// The file to write; by default `audit-archive-before-<YYYY-MM>.ndjson` here.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Drop the partitions once detached (by default they stay as tables of their own,
        /// outside the log, for a `pg_dump` of your own).
        #[arg(long)]
        drop: bool,
    },
    /// Check an archive file against its record: its SHA-256, every event's digest and link,
    /// its first and last places and hashes, and the checkpoints that fall in it.
    VerifyArchive {
        #[command(flatten)]
        database: DatabaseArgs,
        /// The file `audit archive` wrote.
        file: PathBuf,
    },
}

/// A calendar month, `YYYY-MM` (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ArchiveMonth(NaiveDate);

impl ArchiveMonth {
    /// The month `at` falls in.
    pub fn of(at: DateTime<Utc>) -> Self {
        ArchiveMonth(at.date_naive().with_day(1).expect("every month has a first day"))
    }

    /// The instant the month begins, in UTC.
    pub fn start(self) -> DateTime<Utc> {
        self.0.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
    }
}

impl std::fmt::Display for ArchiveMonth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m"))
    }
}

impl FromStr for ArchiveMonth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wrong = || format!("`{text}` is not a month as YYYY-MM, e.g. 2027-01");
        let (year, month) = text.split_once('-').ok_or_else(wrong)?;
        let digits = |part: &str, len| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(year, 4) || !digits(month, 2) {
            return Err(wrong());
        }
        let (year, month) = (year.parse().map_err(|_| wrong())?, month.parse().map_err(|_| wrong())?);
        NaiveDate::from_ymd_opt(year, month, 1)
            .map(ArchiveMonth)
            .ok_or_else(wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_is_yyyy_mm_and_begins_at_midnight_utc() {
        let month: ArchiveMonth = "2027-01".parse().unwrap();
        assert_eq!(month.start().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert_eq!(month.to_string(), "2027-01");
        assert_eq!(ArchiveMonth::of("2027-01-31T23:59:59Z".parse().unwrap()), month);
        assert!(month < "2027-02".parse().unwrap());
        for bad in [
            "2027-1",
            "2027-13",
            "2027-00",
            "27-01",
            "2027/01",
            "2027-01-01",
            "",
            "abcd-ef",
            "+202-01",
        ] {
            let error = bad.parse::<ArchiveMonth>().unwrap_err();
            assert!(error.contains("YYYY-MM"), "{bad}: {error}");
        }
    }
}
