//! The audit log's vocabulary: who did something ([`Initiator`]), what ([`Action`]) and how
//! it ended ([`Outcome`]); a stored [`Event`] and the hash chain over events; what a check
//! of the log found. Pure: imports no axum, sqlx or reqwest.

mod archive;
mod chain;
mod state;
mod vocabulary;

use serde::Serialize;
use utoipa::ToSchema;

pub use self::archive::{ArchivedPrefix, archive_line, parse_archive_line};
pub use self::chain::{DigestScheme, Digested, Event, GENESIS, Walk, link_hash};
pub use self::state::{ChainHead, ChainState, Checkpoint, Verification};
pub use self::vocabulary::{Action, Outcome};
use super::Principal;
use super::principal::Credential;

/// The party behind an action: a caller of the API, or the broker itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Initiator {
    /// `api_key`, `keystone_user`, `service` (the broker's own worker, expiry, ...) or
    /// `database_user` (a change made from the command line with database credentials).
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A Keystone user's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The Keystone project a token is scoped to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The end user a service's key acts for (`X-On-Behalf-Of`), as the service names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

impl Initiator {
    pub fn caller(
        principal: &Principal,
        on_behalf_of: Option<String>,
        address: Option<String>,
        user_agent: Option<String>,
    ) -> Self {
        let (kind, user_id, project) = match &principal.credential {
            Credential::ApiKey { .. } => ("api_key", None, None),
            Credential::Keystone(k) => ("keystone_user", Some(k.user_id.clone()), k.project_id.clone()),
        };
        let name = match &principal.credential {
            Credential::Keystone(k) => k.user_name.clone(),
            Credential::ApiKey { .. } => principal.name.clone(),
        };
        Initiator {
            kind,
            name,
            role: Some(principal.role_names()),
            address,
            user_agent,
            user_id,
            project,
            on_behalf_of,
        }
    }

    /// The broker acting on its own (the worker, the expiry sweep).
    pub fn service(name: &str) -> Self {
        Initiator {
            kind: "service",
            name: name.to_owned(),
            role: None,
            address: None,
            user_agent: None,
            user_id: None,
            project: None,
            on_behalf_of: None,
        }
    }
}

/// What walking the audit chain found.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChainReport {
    /// True when every link holds (from the last archived event on), every checkpoint and
    /// every anchor given matches the chain, the archives follow one another, and no event
    /// waited too long for its seal.
    pub ok: bool,
    /// Sealed events read, in chain order, up to the first broken link.
    pub events_checked: i64,
    /// The last event whose link held (the last archived one when none is left).
    pub head: Option<ChainLink>,
    /// The first event whose link does not hold.
    pub first_broken_link: Option<BrokenLink>,
    /// What `audit archive` moved out of the database: the walk starts after its last event.
    /// Absent when nothing was archived.
    pub archived: Option<ArchivedPrefix>,
    /// Checkpoints compared with the chain (those after the archived events).
    pub checkpoints_checked: i64,
    /// The first checkpoint the chain no longer matches: a deleted tail, or rewritten history.
    pub checkpoint_mismatch: Option<CheckpointMismatch>,
    /// The checkpoint this check recorded (only when the chain is intact and has grown).
    pub checkpoint_written: Option<ChainLink>,
    /// Events committed but not sealed yet (the check seals what has committed first, so
    /// these are the newest, unless no sealer can run).
    pub unsealed_events: i64,
    /// The oldest event unsealed for more than 60 s: a working sealer seals within a
    /// second, so no sealer runs, or it fails. The check then fails.
    pub stale_unsealed: Option<UnsealedEvent>,
    /// Anchors the caller kept outside the database (`expect`) compared with the chain.
    pub anchors_checked: i64,
    /// The first anchor the chain does not hold (the check then fails): the event at its
    /// place has another hash, or is gone.
    pub anchor_mismatch: Option<AnchorMismatch>,
}

/// An anchor, `<chain_pos>:<hash>`, that the chain does not hold.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AnchorMismatch {
    /// The place and hash the caller expects.
    pub expected: ChainLink,
    /// The hash the chain holds at that place; absent when it has no event there.
    pub stored_hash: Option<String>,
    /// The finding in a sentence.
    pub detail: String,
}

/// An event that has no place in the chain yet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UnsealedEvent {
    pub seq: i64,
    pub id: uuid::Uuid,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// The finding in a sentence.
    pub detail: String,
}

/// One place in the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ChainLink {
    /// The place: 1, 2, 3, ... in sealing order.
    pub chain_pos: i64,
    /// SHA-256, hex.
    pub hash: String,
}

/// An anchor as an auditor writes it, `<chain_pos>:<hash>` (a logged checkpoint's
/// `chain_pos` and `hash`): a place from 1 and 64 hex digits.
impl std::str::FromStr for ChainLink {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wrong = || format!("`{text}` is not <chain_pos>:<hash>, a place from 1 and a SHA-256 in 64 hex digits");
        let (pos, hash) = text.trim().split_once(':').ok_or_else(wrong)?;
        let chain_pos = pos.parse::<i64>().ok().filter(|pos| *pos >= 1).ok_or_else(wrong)?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(wrong());
        }
        Ok(ChainLink {
            chain_pos,
            hash: hash.to_ascii_lowercase(),
        })
    }
}

/// Where the chain breaks, and how.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BrokenLink {
    /// The event's place in the chain.
    pub chain_pos: i64,
    /// The event's number.
    pub seq: i64,
    pub id: uuid::Uuid,
    /// `chain_pos` (events missing before this one), `prev_hash` (not the hash of the event
    /// before) or `hash` (the event's content does not give its stored hash).
    pub field: &'static str,
    pub expected: String,
    pub stored: String,
    /// The finding in a sentence.
    pub detail: String,
}

/// A checkpoint whose recorded head the chain no longer has.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckpointMismatch {
    pub taken_at: chrono::DateTime<chrono::Utc>,
    pub taken_by: String,
    /// The head the checkpoint recorded.
    pub checkpoint: ChainLink,
    /// The hash the chain holds at that place; absent when the event is gone.
    pub stored_hash: Option<String>,
    /// The finding in a sentence.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anchor_is_a_place_from_one_and_a_sha256_in_hex() {
        let hash = "AB".repeat(32);
        let anchor: ChainLink = format!("12:{hash}").parse().unwrap();
        assert_eq!(
            anchor,
            ChainLink {
                chain_pos: 12,
                hash: "ab".repeat(32)
            }
        );
        for bad in [
            format!("0:{hash}"),
            format!("-1:{hash}"),
            format!("x:{hash}"),
            "12:abcd".to_owned(),
            format!("12:{}", "zz".repeat(32)),
            hash.clone(),
            String::new(),
        ] {
            let error = bad.parse::<ChainLink>().unwrap_err();
            assert!(error.contains("<chain_pos>:<hash>"), "{bad}: {error}");
        }
    }
}
