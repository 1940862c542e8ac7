//! Where the audit chain stands, as auditors read it without walking it: the sealed head,
//! what waits for a seal, the last checkpoint, and what the last check found.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ChainLink, ChainReport};

/// The chain's state. Read, not checked: `GET /v1/audit-events/verify` checks it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChainState {
    /// The newest sealed event; absent while the log is empty.
    pub head: Option<ChainHead>,
    /// Events committed but not sealed yet (a read seals what has committed first, so these
    /// are the ones committed since).
    pub unsealed_events: i64,
    /// Checkpoints recorded so far.
    pub checkpoints: i64,
    /// The newest checkpoint: the head as recorded then.
    pub last_checkpoint: Option<Checkpoint>,
    /// What the last check of the chain found, by any replica or the command line.
    pub last_verification: Option<Verification>,
}

/// The newest sealed event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChainHead {
    /// The place: 1, 2, 3, ... in sealing order.
    pub chain_pos: i64,
    /// SHA-256, hex.
    pub hash: String,
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
}

/// A checkpoint: the sealed head recorded at a moment, which later checks compare with.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Checkpoint {
    pub taken_at: DateTime<Utc>,
    /// The broker instance, or `verify by <principal>`.
    pub taken_by: String,
    pub chain_pos: i64,
    pub hash: String,
}

/// One check of the chain, as recorded when it ran.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Verification {
    pub verified_at: DateTime<Utc>,
    /// `verify by <principal>`, or `verify by the command line`.
    pub verified_by: String,
    pub ok: bool,
    pub events_checked: i64,
    /// The last event whose link held.
    pub head: Option<ChainLink>,
    pub checkpoints_checked: i64,
    pub unsealed_events: i64,
    /// The first thing the check found wrong, in a sentence; absent when `ok`.
    pub problem: Option<String>,
}

impl ChainReport {
    /// The first thing the check found wrong, in a sentence: a broken link, then a
    /// checkpoint or an anchor the chain no longer holds, then an event left unsealed.
    pub fn problem(&self) -> Option<&str> {
        let link = self.first_broken_link.as_ref().map(|l| l.detail.as_str());
        let checkpoint = self.checkpoint_mismatch.as_ref().map(|c| c.detail.as_str());
        let anchor = self.anchor_mismatch.as_ref().map(|a| a.detail.as_str());
        let unsealed = self.stale_unsealed.as_ref().map(|u| u.detail.as_str());
        link.or(checkpoint).or(anchor).or(unsealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AnchorMismatch, UnsealedEvent};

    fn report() -> ChainReport {
        ChainReport {
            ok: true,
            events_checked: 3,
            head: None,
            first_broken_link: None,
            archived: None,
            checkpoints_checked: 0,
            checkpoint_mismatch: None,
            checkpoint_written: None,
            unsealed_events: 0,
            stale_unsealed: None,
            anchors_checked: 0,
            anchor_mismatch: None,
        }
    }

    #[test]
    fn a_report_names_its_first_problem_and_an_intact_one_none() {
        assert_eq!(report().problem(), None);
        let link = ChainLink {
            chain_pos: 2,
            hash: "ab".repeat(32),
        };
        let both = ChainReport {
            ok: false,
            anchor_mismatch: Some(AnchorMismatch {
                expected: link,
                stored_hash: None,
                detail: "anchor".into(),
            }),
            stale_unsealed: Some(UnsealedEvent {
                seq: 1,
                id: Uuid::nil(),
                occurred_at: Utc::now(),
                detail: "unsealed".into(),
            }),
            ..report()
        };
        assert_eq!(both.problem(), Some("anchor"));
    }
}
