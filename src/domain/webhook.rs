//! Webhooks: the events the broker announces, which audit events announce them, and how a
//! delivery is signed. Pure: the deliveries are queued in `db::webhooks` and sent by the worker.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::ShareState;
use super::audit::{Action, Outcome};

/// Every event a webhook may subscribe to.
pub const EVENTS: [&str; 17] = [
    "request.created",
    "request.needs_approval",
    "request.approved",
    "request.denied",
    "request.expired",
    "request.cancelled",
    "share.granted",
    "share.pending_acceptance",
    "share.accepted",
    "share.rejected",
    "share.revoked",
    "share.failed",
    "share.revoke_stalled",
    "share.revocation_scheduled",
    "share.revocation_cancelled",
    "share.expiring",
    "drift.detected",
];

/// What the announcing side knows about one audit event.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    pub action: Action,
    pub outcome: Outcome,
    /// Whether the event is about one share (else about a request).
    pub about_share: bool,
    /// The share's state after the change, for share events.
    pub share_state: Option<ShareState>,
    /// Whether the broker itself did it (the worker, expiry), rather than a caller.
    pub by_broker: bool,
    pub details: &'a Value,
}

/// The webhook events an audit event announces, in order (most announce none or one).
/// A caller's failure is a refusal (the caller was not allowed, or the share's state did not
/// allow it): refusals announce nothing, whatever the share's state.
pub fn events_for(e: Recorded<'_>) -> Vec<&'static str> {
    let success = e.outcome == Outcome::Success;
    let broker_failed = e.by_broker && e.outcome == Outcome::Failure;
    match (e.about_share, e.action) {
        (false, Action::Create) if success => vec!["request.created"],
        (false, Action::Validate) if e.details["policy"]["decision"] == "require_approval" => {
            vec!["request.needs_approval"]
        }
        (false, Action::Approve) if success => vec!["request.approved"],
        (false, Action::Deny) if success => vec!["request.denied"],
        (false, Action::Expire) if success => vec!["request.expired"],
        (false, Action::Cancel) if success => vec!["request.cancelled"],
        (true, Action::Allow) if success && e.share_state == Some(ShareState::PendingAcceptance) => {
            vec!["share.granted", "share.pending_acceptance"]
        }
        (true, Action::Allow) if success => vec!["share.granted"],
        (true, Action::Accept) if success => vec!["share.accepted"],
        (true, Action::Reject) if success => vec!["share.rejected"],
        (true, Action::Revoke) if success => vec!["share.revoked"],
        (true, Action::Revoke)
            if e.outcome == Outcome::Pending && e.share_state == Some(ShareState::RevocationScheduled) =>
        {
            vec!["share.revocation_scheduled"]
        }
        (true, Action::Cancel) if success => vec!["share.revocation_cancelled"],
        (true, Action::Expire) if e.outcome == Outcome::Pending && e.details["notice"] == true => {
            vec!["share.expiring"]
        }
        (true, Action::Revoke) if broker_failed && e.details["stalled"] == true => vec!["share.revoke_stalled"],
        (_, Action::DriftDetected) if success => vec!["drift.detected"],
        (true, _) if broker_failed && e.share_state == Some(ShareState::Failed) => vec!["share.failed"],
        _ => Vec::new(),
    }
}

/// A new webhook secret as Standard Webhooks writes one: `whsec_` and the key's bytes in
/// base64 (standard alphabet, padded), so the spec's libraries take it as it is.
pub fn new_secret(key: &[u8]) -> String {
    format!("whsec_{}", STANDARD.encode(key))
}

/// The key a `whsec_<base64>` secret encodes. Secrets made before the broker followed
/// Standard Webhooks used the URL-safe alphabet unpadded: those decode too. A secret that
/// is not base64 at all signs with its own bytes.
pub fn secret_key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    STANDARD
        .decode(encoded)
        .or_else(|_| URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')))
        .unwrap_or_else(|_| secret.as_bytes().to_vec())
}

/// The `webhook-signature` header of a delivery, as Standard Webhooks defines it
/// (https://www.standardwebhooks.com/): `v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-
/// timestamp>.<body>">` under the secret's key.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret_key(secret)).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use Action::*;
    use Outcome::*;
    use ShareState::*;

    fn on_request(action: Action, outcome: Outcome, details: &Value) -> Vec<&'static str> {
        events_for(Recorded {
            action,
            outcome,
            about_share: false,
            share_state: None,
            by_broker: false,
            details,
        })
    }

    fn on_share(action: Action, outcome: Outcome, state: ShareState) -> Vec<&'static str> {
        events_for(Recorded {
            action,
            outcome,
            about_share: true,
            share_state: Some(state),
            by_broker: true,
            details: &Value::Null,
        })
    }

    /// A caller's audited refusal, as `AppState::refused` records it.
    fn refused(action: Action, state: ShareState) -> Vec<&'static str> {
        events_for(Recorded {
            action,
            outcome: Failure,
            about_share: true,
            share_state: Some(state),
            by_broker: false,
            details: &json!({"reason": "forbidden", "detail": "only the consumer project may accept"}),
        })
    }

    #[test]
    fn each_state_change_announces_its_event() {
        let none = Value::Null;
        assert_eq!(on_request(Create, Success, &none), ["request.created"]);
        let needs = json!({"policy": {"decision": "require_approval"}});
        assert_eq!(on_request(Validate, Success, &needs), ["request.needs_approval"]);
        let auto = json!({"policy": {"decision": "approve"}});
        assert!(on_request(Validate, Success, &auto).is_empty());
        assert_eq!(on_request(Approve, Success, &none), ["request.approved"]);
        assert!(
            on_request(Approve, Pending, &none).is_empty(),
            "a first of two approvals"
        );
        assert!(on_request(Create, Failure, &none).is_empty(), "a refused write");
        assert_eq!(
            on_share(Allow, Success, PendingAcceptance),
            ["share.granted", "share.pending_acceptance"]
        );
        assert_eq!(on_share(Allow, Success, Accepted), ["share.granted"]);
        assert_eq!(on_share(Accept, Pending, PendingAcceptance), Vec::<&str>::new());
        assert_eq!(on_share(Revoke, Success, Revoked), ["share.revoked"]);
        assert_eq!(on_share(Allow, Failure, Failed), ["share.failed"]);
        assert!(on_share(Accept, Failure, Accepted).is_empty(), "a refused accept");
        for e in EVENTS {
            assert!(e.starts_with("request.") || e.starts_with("share.") || e.starts_with("drift."));
        }
        assert_eq!(on_request(DriftDetected, Success, &none), ["drift.detected"]);
        assert_eq!(on_share(DriftDetected, Success, Accepted), ["drift.detected"]);
        assert!(on_request(DriftResolved, Success, &none).is_empty());
    }

    #[test]
    fn the_signature_is_the_standard_webhooks_hmac_of_id_time_and_body() {
        // As the spec's own library computes it: python -c "from standardwebhooks.webhooks
        // import Webhook; from datetime import datetime, timezone; print(Webhook(secret)
        // .sign('msg_1', datetime.fromtimestamp(1, tz=timezone.utc), 'what do ya want for nothing?'))"
        let secret = new_secret(&b"Jefe".repeat(8));
        assert_eq!(secret, "whsec_SmVmZUplZmVKZWZlSmVmZUplZmVKZWZlSmVmZUplZmU=");
        let got = signature(&secret, "msg_1", 1, b"what do ya want for nothing?");
        assert_eq!(got, "v1,6ZF1+MsnwBqonxOp+tL7CbfxpsSvordCxmdQBqdZ7lc=");
        assert_ne!(got, signature(&secret, "msg_2", 1, b"what do ya want for nothing?"));
        assert_ne!(got, signature(&secret, "msg_1", 2, b"what do ya want for nothing?"));
        assert_ne!(
            got,
            signature("whsec_b3RoZXI=", "msg_1", 1, b"what do ya want for nothing?")
        );
        // A secret of the URL-safe alphabet (made before) names the same key.
        assert_eq!(secret_key("whsec_-_8"), secret_key("whsec_+/8="));
    }

    #[test]
    fn refusals_announce_nothing() {
        for action in [Accept, Reject, Revoke, Allow] {
            for state in [Failed, Revoking, Accepted] {
                assert!(refused(action, state).is_empty(), "{action} refused on a {state} share");
            }
        }
        assert_eq!(
            on_share(Allow, Failure, Failed),
            ["share.failed"],
            "the worker's own failure"
        );
    }

    #[test]
    fn a_stalled_revoke_is_announced() {
        let stalled = json!({"stalled": true, "attempts": 8});
        let announced = events_for(Recorded {
            action: Revoke,
            outcome: Failure,
            about_share: true,
            share_state: Some(Revoking),
            by_broker: true,
            details: &stalled,
        });
        assert_eq!(announced, ["share.revoke_stalled"]);
        assert!(EVENTS.contains(&"share.revoke_stalled"));
        assert!(
            on_share(Revoke, Failure, Revoking).is_empty(),
            "one failed try is no stall"
        );
    }

    #[test]
    fn a_scheduled_revoke_its_cancellation_and_an_expiry_to_come_are_announced() {
        let scheduled = json!({"scheduled": true, "effective_at": "2026-12-03T00:00:00Z"});
        let by_person = |action, outcome, state, details: &Value| {
            events_for(Recorded {
                action,
                outcome,
                about_share: true,
                share_state: Some(state),
                by_broker: false,
                details,
            })
        };
        assert_eq!(
            by_person(Revoke, Pending, RevocationScheduled, &scheduled),
            ["share.revocation_scheduled"]
        );
        assert!(
            by_person(Revoke, Pending, Revoking, &Value::Null).is_empty(),
            "a revoke started now is announced when done"
        );
        assert_eq!(
            by_person(Cancel, Success, Accepted, &Value::Null),
            ["share.revocation_cancelled"]
        );
        assert!(by_person(Cancel, Failure, RevocationScheduled, &Value::Null).is_empty());
        let notice = json!({"notice": true, "expires_at": "2026-12-03T00:00:00Z"});
        assert_eq!(on_share_with(Expire, Pending, Accepted, &notice), ["share.expiring"]);
        for e in [
            "share.revocation_scheduled",
            "share.revocation_cancelled",
            "share.expiring",
        ] {
            assert!(EVENTS.contains(&e), "{e}");
        }
    }

    fn on_share_with(action: Action, outcome: Outcome, state: ShareState, details: &Value) -> Vec<&'static str> {
        events_for(Recorded {
            action,
            outcome,
            about_share: true,
            share_state: Some(state),
            by_broker: true,
            details,
        })
    }
}
