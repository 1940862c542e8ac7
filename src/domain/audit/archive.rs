//! Archives: the front of the chain moved out of the database into files. An archive file
//! holds one event a line, as the NDJSON export shows it plus the event's `digest_scheme`,
//! so every digest and link can be recomputed from the file alone. What a check of the
//! chain reports about the archives ([`ArchivedPrefix`]). Pure.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ChainLink, Event};

/// One line of an archive file: the exported event and the scheme it was digested with.
#[derive(Serialize, Deserialize)]
struct ArchiveLine<E> {
    #[serde(flatten)]
    event: E,
    digest_scheme: i16,
}

/// `event` as one line of an archive file, newline included.
pub fn archive_line(event: &Event) -> Vec<u8> {
    let line = ArchiveLine {
        event,
        digest_scheme: event.digest_scheme,
    };
    let mut bytes = serde_json::to_vec(&line).expect("an event serializes");
    bytes.push(b'\n');
    bytes
}

/// The event one line of an archive file holds.
pub fn parse_archive_line(line: &[u8]) -> Result<Event, serde_json::Error> {
    let ArchiveLine::<Event> {
        mut event,
        digest_scheme,
    } = serde_json::from_slice(line)?;
    event.digest_scheme = digest_scheme;
    Ok(event)
}

/// The front of the chain that `audit archive` moved out of the database: the check walks
/// what remains from the place after the last archived event.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ArchivedPrefix {
    /// The last archived event (its place and hash, as its archive recorded them): the first
    /// event left must be the one after it and chain to this hash. Absent when the archives
    /// held no events.
    pub head: Option<ChainLink>,
    /// Archives recorded (`audit_archives`), each of one or more detached partitions.
    pub archives: i64,
    /// Events archived in all.
    pub events: i64,
    /// Checkpoints at or before `head`: their events are in the archive files, so they are
    /// not compared here (`audit verify-archive FILE` compares them with a file).
    pub checkpoints: i64,
    /// Anchors given at or before `head`, not compared for the same reason.
    pub anchors: i64,
    /// The first archive that does not follow the one before it (its first place is not the
    /// place after that one's last, or its first event does not chain to that one's hash):
    /// archive records were removed or changed. The check then fails.
    pub gap: Option<String>,
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::domain::audit::{DigestScheme, GENESIS, link_hash};

    fn sealed_event(scheme: DigestScheme) -> Event {
        let mut event = Event {
            seq: 7,
            id: Uuid::from_u128(7),
            occurred_at: DateTime::<Utc>::from_timestamp(1_800_000_000, 123_456_000).unwrap(),
            action: "allow".into(),
            outcome: "success".into(),
            initiator: json!({"kind": "service", "name": "worker"}),
            target: json!({"image_id": Uuid::nil(), "region": "RegionOne"}),
            observer: "test-broker".into(),
            request_id: Some(Uuid::from_u128(1)),
            share_id: None,
            image_id: Some(Uuid::nil()),
            project_id: Some("proj-b".into()),
            reason: Some("a \"quoted\" reason\n".into()),
            correlation_id: None,
            // Where the two schemes differ: legacy keeps `1.0`, JCS writes `1`.
            details: json!({"ratio": 1.0, "big": 12345678901234567u64, "nested": {"b": [1, null], "a": "é"}}),
            digest_scheme: scheme.number(),
            chain_pos: Some(3),
            prev_hash: Some(GENESIS.to_vec()),
            hash: None,
        };
        event.hash = Some(link_hash(&GENESIS, 3, &event.content_digest().unwrap()).to_vec());
        event
    }

    #[test]
    fn an_archived_line_gives_back_the_event_and_its_link_under_either_scheme() {
        for scheme in [DigestScheme::Legacy, DigestScheme::Jcs] {
            let event = sealed_event(scheme);
            let line = archive_line(&event);
            assert_eq!(line.last(), Some(&b'\n'));
            let back = parse_archive_line(&line).unwrap();
            assert_eq!(back.digest_scheme, scheme.number());
            assert_eq!(back.content_digest(), event.content_digest());
            assert_eq!(back.expected_hash(), event.hash, "the link holds when read back");
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&event).unwrap()
            );
        }
    }

    #[test]
    fn an_archived_line_is_the_exported_event_plus_its_digest_scheme() {
        let event = sealed_event(DigestScheme::Jcs);
        let mut exported = serde_json::to_value(&event).unwrap();
        assert!(exported.get("digest_scheme").is_none(), "the API leaves it out");
        exported["digest_scheme"] = json!(2);
        let archived: serde_json::Value = serde_json::from_slice(&archive_line(&event)).unwrap();
        assert_eq!(archived, exported);
    }

    #[test]
    fn a_line_without_its_scheme_or_with_a_bad_hash_is_refused() {
        let event = sealed_event(DigestScheme::Jcs);
        let exported = serde_json::to_vec(&event).unwrap();
        assert!(parse_archive_line(&exported).is_err(), "no digest_scheme");
        let mut line: serde_json::Value = serde_json::from_slice(&archive_line(&event)).unwrap();
        line["hash"] = json!("not hex");
        assert!(parse_archive_line(line.to_string().as_bytes()).is_err());
    }
}
