//! The hash chain over stored events: an event's digest (under the scheme it was written
//! with), the link that seals it to the event before, and the walk that checks each link.
//! Pure: the database seals (`audit_seal`, the same link formula) and reads; this computes.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Action, BrokenLink, ChainLink};
use crate::domain::canonical::{Member, canonical_json, jcs_object};

/// How an event's content became the bytes its digest is taken over. Stored with each
/// event (`digest_scheme`), so events written under an older scheme stay verifiable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestScheme {
    /// The broker's first canonical form ([`canonical_json`]): keys sorted by their UTF-8
    /// bytes, numbers as serde_json prints them. Every event written before JCS.
    Legacy = 1,
    /// RFC 8785 (JCS), with the scheme itself in the digested content, so that changing an
    /// event's stored scheme breaks its link.
    Jcs = 2,
}

impl DigestScheme {
    /// The scheme new events are written with.
    pub const CURRENT: DigestScheme = DigestScheme::Jcs;

    /// The number stored in `audit_events.digest_scheme`.
    pub fn number(self) -> i16 {
        self as i16
    }

    pub fn from_number(number: i16) -> Option<Self> {
        [DigestScheme::Legacy, DigestScheme::Jcs]
            .into_iter()
            .find(|scheme| scheme.number() == number)
    }
}

/// One audit event, as the log stores it and the API shows it. Action and outcome are the
/// text stored: a row changed by hand is still read, and found out by verify. Read back from
/// an archive file ([`super::archive`]), which adds the digest scheme the API leaves out.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = AuditEventView)]
pub struct Event {
    /// The event's number, from a sequence: unique, increasing in the order events were
    /// written (not committed), with gaps where a transaction rolled back. Webhook
    /// deliveries name events by it.
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// CADF action: `create`, `update/approve`, `update/deny`, `update/cancel`, `update/expire`,
    /// `update/grant`, `update/visibility`, `allow`, `accept`, `reject`, `revoke`; and for the
    /// broker itself `create/key`, `delete/key` (an API key made or revoked: `details.key`
    /// names it, never its secret) and `update/policy` (the approval policy loaded at start or
    /// reloaded: `details.digest`, `details.rules`; a refused file is a `failure`).
    pub action: String,
    /// `success`, `failure` or `pending` (asked for, the worker will carry it out).
    pub outcome: String,
    /// Who: `kind`, `name`, `role`, `user_id`, `project` (a Keystone token's), `on_behalf_of`,
    /// `address`, `user_agent`.
    #[schema(value_type = Object)]
    pub initiator: Value,
    /// What: `image_id`, `image_name`, `owner_project_id`, `project_id` (the member),
    /// `region`, `request_id`, `share_id`, as known.
    #[schema(value_type = Object)]
    pub target: Value,
    /// The broker instance that wrote the event.
    pub observer: String,
    pub request_id: Option<Uuid>,
    pub share_id: Option<Uuid>,
    pub image_id: Option<Uuid>,
    /// The member project.
    pub project_id: Option<String>,
    pub reason: Option<String>,
    /// The `X-Request-Id` of the API call, or the `X-OpenStack-Request-ID` of the worker's
    /// calls to Keystone and Glance.
    pub correlation_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
    /// [`DigestScheme::number`] of the scheme the writer digested the event with.
    #[serde(skip)]
    pub digest_scheme: i16,
    /// Its place in the hash chain: 1, 2, 3, ... with no gaps, in the order events were
    /// sealed (within `GSB_AUDIT_SEAL_MS` of their commit). Null until the event is sealed;
    /// the log lists sealed events only (a read seals what has committed first), so it is
    /// set here unless no sealer could run.
    pub chain_pos: Option<i64>,
    /// SHA-256 of the event before in the chain (hex; zeros for the first). Null until sealed.
    #[serde(serialize_with = "hex_or_null", deserialize_with = "hex_or_null_from")]
    #[schema(value_type = Option<String>)]
    pub prev_hash: Option<Vec<u8>>,
    /// SHA-256 of `prev_hash`, `chain_pos` and this event's canonical JSON (hex). Null until
    /// sealed.
    #[serde(serialize_with = "hex_or_null", deserialize_with = "hex_or_null_from")]
    #[schema(value_type = Option<String>)]
    pub hash: Option<Vec<u8>>,
}

fn hex_or_null<S: serde::Serializer>(bytes: &Option<Vec<u8>>, serializer: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(bytes) => serializer.serialize_str(&hex::encode(bytes)),
        None => serializer.serialize_none(),
    }
}

fn hex_or_null_from<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<u8>>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| hex::decode(text).map_err(serde::de::Error::custom))
        .transpose()
}

/// The hash the first event chains to.
pub const GENESIS: [u8; 32] = [0; 32];

/// The link that seals an event: SHA-256 of the hash before, its place (8 bytes,
/// big-endian) and its digest, as `audit_seal` computes it in the database.
pub fn link_hash(prev_hash: &[u8], chain_pos: i64, digest: &[u8]) -> [u8; 32] {
    let mut link = Sha256::new();
    link.update(prev_hash);
    link.update(chain_pos.to_be_bytes());
    link.update(digest);
    link.finalize().into()
}

impl Event {
    /// The recorded action; `None` only for text the broker never writes (a row written by
    /// hand).
    pub fn action(&self) -> Option<Action> {
        self.action.parse().ok()
    }

    /// The event's content (everything but its place in the chain), as the members of the
    /// document its digest is taken over; `occurred_at` is the time in that document's form.
    fn content<'a>(&'a self, occurred_at: &'a str) -> [(&'static str, Member<'a>); 14] {
        [
            ("id", Member::Id(Some(self.id))),
            ("occurred_at", Member::Text(Some(occurred_at))),
            ("action", Member::Text(Some(&self.action))),
            ("outcome", Member::Text(Some(&self.outcome))),
            ("initiator", Member::Json(&self.initiator)),
            ("target", Member::Json(&self.target)),
            ("observer", Member::Text(Some(&self.observer))),
            ("request_id", Member::Id(self.request_id)),
            ("share_id", Member::Id(self.share_id)),
            ("image_id", Member::Id(self.image_id)),
            ("project_id", Member::Text(self.project_id.as_deref())),
            ("reason", Member::Text(self.reason.as_deref())),
            ("correlation_id", Member::Text(self.correlation_id.as_deref())),
            ("details", Member::Json(&self.details)),
        ]
    }

    /// SHA-256 of the event's content (everything but its place in the chain) under its
    /// digest scheme; `None` when the stored scheme is none the broker knows. Computed for
    /// every event written and every event `audit verify` reads: the content is written
    /// out where it lies, never copied into a document first.
    pub fn content_digest(&self) -> Option<[u8; 32]> {
        let occurred_at = self.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true);
        let content = self.content(&occurred_at);
        let bytes = match DigestScheme::from_number(self.digest_scheme)? {
            DigestScheme::Legacy => canonical_json(&Value::Object(
                content
                    .into_iter()
                    .map(|(key, member)| (key.to_owned(), member.to_value()))
                    .collect(),
            )),
            DigestScheme::Jcs => {
                let scheme = ("digest_scheme", Member::Integer(self.digest_scheme.into()));
                let mut members: Vec<_> = content.into_iter().chain([scheme]).collect();
                jcs_object(&mut members)
            }
        };
        Some(Sha256::digest(bytes).into())
    }

    /// The hash this sealed event must carry ([`link_hash`] over its seal and
    /// [`Event::content_digest`]). None while unsealed, or under an unknown scheme.
    pub fn expected_hash(&self) -> Option<Vec<u8>> {
        self.hash_of(self.content_digest())
    }

    /// The hash this sealed event must carry given its content's `digest` (computed
    /// elsewhere, [`Event::content_digest`]).
    fn hash_of(&self, digest: Option<[u8; 32]>) -> Option<Vec<u8>> {
        let (Some(prev_hash), Some(chain_pos)) = (&self.prev_hash, self.chain_pos) else {
            return None;
        };
        Some(link_hash(prev_hash, chain_pos, &digest?).to_vec())
    }
}

/// An event read back with its content's digest ([`Event::content_digest`]), computed apart
/// from the walk: digests of many events can be computed at once, while links are checked
/// one after the other.
#[derive(Debug)]
pub struct Digested {
    pub event: Event,
    pub digest: Option<[u8; 32]>,
}

impl From<Event> for Digested {
    fn from(event: Event) -> Self {
        Digested {
            digest: event.content_digest(),
            event,
        }
    }
}

/// A walk over sealed events in chain order that stops believing at the first broken link.
#[derive(Debug, Default)]
pub struct Walk {
    /// Events read, the broken one included.
    pub checked: i64,
    /// The place and hash of the last event whose link held.
    pub head: Option<(i64, Vec<u8>)>,
    pub first_broken_link: Option<BrokenLink>,
}

impl Walk {
    /// A walk of a chain whose events up to `head` are elsewhere (archived): the first event
    /// read must be the one after it, chained to its hash. A hash that is not hex matches no
    /// event, so the walk then names the first event's link.
    pub fn after(head: &ChainLink) -> Self {
        Walk {
            head: Some((head.chain_pos, hex::decode(&head.hash).unwrap_or_default())),
            ..Walk::default()
        }
    }

    /// Checks the next event's link; `false` once a link is broken (walk no further).
    pub fn step(&mut self, event: Event) -> bool {
        self.step_digested(event.into())
    }

    /// [`Walk::step`] with the event's digest computed already.
    pub fn step_digested(&mut self, Digested { event, digest }: Digested) -> bool {
        self.checked += 1;
        if let Some(broken) = check_link(&event, digest, self.head.as_ref()) {
            self.first_broken_link = Some(broken);
            return false;
        }
        self.head = event.chain_pos.zip(event.hash);
        true
    }
}

/// What is wrong with sealed `event`'s link, given its content's `digest` and the link
/// before it (`None` for the first).
fn check_link(event: &Event, digest: Option<[u8; 32]>, before: Option<&(i64, Vec<u8>)>) -> Option<BrokenLink> {
    let (want_pos, want_prev) = before.map_or((1, &GENESIS[..]), |(pos, hash)| (pos + 1, &hash[..]));
    let pos = event.chain_pos.unwrap_or_default();
    let hex_of = |bytes: &Option<Vec<u8>>| bytes.as_deref().map(hex::encode).unwrap_or_default();
    let broken = |field, expected: String, stored: String, detail: String| BrokenLink {
        chain_pos: pos,
        seq: event.seq,
        id: event.id,
        field,
        expected,
        stored,
        detail,
    };
    if pos != want_pos {
        return Some(broken(
            "chain_pos",
            want_pos.to_string(),
            pos.to_string(),
            format!("the events at places {want_pos} to {} are missing", pos - 1),
        ));
    }
    if event.prev_hash.as_deref() != Some(want_prev) {
        return Some(broken(
            "prev_hash",
            hex::encode(want_prev),
            hex_of(&event.prev_hash),
            format!(
                "the event at place {pos} does not chain to the hash of the event at place {}",
                pos - 1
            ),
        ));
    }
    let expected = event.hash_of(digest);
    if event.hash != expected {
        return Some(broken(
            "hash",
            hex_of(&expected),
            hex_of(&event.hash),
            format!(
                "the event at place {pos} (seq {}) was changed after it was written: its content does not give its hash",
                event.seq
            ),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(seq: i64, scheme: DigestScheme) -> Event {
        Event {
            seq,
            id: Uuid::from_u128(seq as u128),
            occurred_at: DateTime::from_timestamp(1_800_000_000 + seq, 0).unwrap(),
            action: Action::Allow.to_string(),
            outcome: "success".into(),
            initiator: json!({"kind": "service", "name": "worker"}),
            target: json!({"image_id": Uuid::nil(), "region": "RegionOne"}),
            observer: "test-broker".into(),
            request_id: None,
            share_id: None,
            image_id: Some(Uuid::nil()),
            project_id: Some("proj-b".into()),
            reason: None,
            correlation_id: None,
            details: json!({"ratio": 1.0, "approved_by": "workflow"}),
            digest_scheme: scheme.number(),
            chain_pos: None,
            prev_hash: None,
            hash: None,
        }
    }

    /// Seals `events` in order, as `audit_seal` does.
    fn sealed(mut events: Vec<Event>) -> Vec<Event> {
        let mut prev = GENESIS.to_vec();
        for (i, e) in events.iter_mut().enumerate() {
            let pos = i as i64 + 1;
            let hash = link_hash(&prev, pos, &e.content_digest().unwrap()).to_vec();
            (e.chain_pos, e.prev_hash, e.hash) = (Some(pos), Some(prev), Some(hash.clone()));
            prev = hash;
        }
        events
    }

    fn walk(events: Vec<Event>) -> Walk {
        let mut walk = Walk::default();
        for e in events {
            if !walk.step(e) {
                break;
            }
        }
        walk
    }

    #[test]
    fn a_chain_mixing_legacy_and_jcs_events_verifies() {
        let chain = sealed(vec![
            event(1, DigestScheme::Legacy),
            event(2, DigestScheme::Legacy),
            event(3, DigestScheme::CURRENT),
        ]);
        assert_eq!(DigestScheme::CURRENT, DigestScheme::Jcs);
        // The two schemes give different bytes for the same content (`1.0` against `1`).
        assert_ne!(chain[1].content_digest(), event(2, DigestScheme::Jcs).content_digest());
        let walk = walk(chain);
        assert!(walk.first_broken_link.is_none(), "{:?}", walk.first_broken_link);
        assert_eq!((walk.checked, walk.head.unwrap().0), (3, 3));
    }

    #[test]
    fn a_legacy_digest_is_the_one_written_before_jcs() {
        // The digest the broker stored for this content before JCS existed.
        let e = event(1, DigestScheme::Legacy);
        let body = br#"{"action":"allow","correlation_id":null,"details":{"approved_by":"workflow","ratio":1.0},"id":"00000000-0000-0000-0000-000000000001","image_id":"00000000-0000-0000-0000-000000000000","initiator":{"kind":"service","name":"worker"},"observer":"test-broker","occurred_at":"2027-01-15T08:00:01.000000Z","outcome":"success","project_id":"proj-b","reason":null,"request_id":null,"share_id":null,"target":{"image_id":"00000000-0000-0000-0000-000000000000","region":"RegionOne"}}"#;
        assert_eq!(e.content_digest(), Some(Sha256::digest(body).into()));
    }

    /// The digest is RFC 8785's canonical form of the content as one document, with the
    /// scheme in it: written member by member, it must give the same bytes.
    #[test]
    fn a_jcs_digest_is_that_of_the_content_as_one_document() {
        let mut e = event(7, DigestScheme::Jcs);
        e.reason = Some("\u{e9}t\u{e9} \"quoted\"\n".into());
        e.details =
            json!({"targets": ["proj-b", "\u{1f600}"], "n": 1.5, "big": u64::MAX, "nested": {"b": null, "a": [true]}});
        let document = json!({
            "id": e.id, "occurred_at": "2027-01-15T08:00:07.000000Z", "action": e.action, "outcome": e.outcome,
            "initiator": e.initiator, "target": e.target, "observer": e.observer, "request_id": e.request_id,
            "share_id": e.share_id, "image_id": e.image_id, "project_id": e.project_id, "reason": e.reason,
            "correlation_id": e.correlation_id, "details": e.details, "digest_scheme": 2,
        });
        let reference = serde_json_canonicalizer::to_vec(&document).unwrap();
        assert_eq!(e.content_digest(), Some(Sha256::digest(reference).into()));
    }

    #[test]
    fn a_changed_event_or_scheme_breaks_its_link_and_the_walk_stops_there() {
        let mut chain = sealed((1..=4).map(|seq| event(seq, DigestScheme::Jcs)).collect());
        chain[2].reason = Some("rewritten".into());
        let walk = walk(chain.clone());
        let broken = walk.first_broken_link.unwrap();
        assert_eq!((broken.chain_pos, broken.field), (3, "hash"));
        assert_eq!((walk.checked, walk.head.unwrap().0), (3, 2));

        let mut chain = sealed((1..=2).map(|seq| event(seq, DigestScheme::Jcs)).collect());
        chain[1].digest_scheme = DigestScheme::Legacy.number();
        assert_eq!(self::walk(chain).first_broken_link.unwrap().field, "hash");

        let mut chain = sealed((1..=2).map(|seq| event(seq, DigestScheme::Legacy)).collect());
        chain[1].digest_scheme = 9;
        assert_eq!(self::walk(chain).first_broken_link.unwrap().field, "hash");
    }

    #[test]
    fn a_missing_event_or_a_wrong_prev_hash_is_named() {
        let mut chain = sealed((1..=3).map(|seq| event(seq, DigestScheme::Jcs)).collect());
        chain.remove(1);
        assert_eq!(walk(chain).first_broken_link.unwrap().field, "chain_pos");
        let mut chain = sealed((1..=2).map(|seq| event(seq, DigestScheme::Jcs)).collect());
        chain[1].prev_hash = Some(GENESIS.to_vec());
        assert_eq!(walk(chain).first_broken_link.unwrap().field, "prev_hash");
    }
}
