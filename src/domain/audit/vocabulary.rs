//! What an audit event says was done (`Action`) and how it ended (`Outcome`): the one place
//! that names them, on the wire (the stored text, the API, the exports) and in CADF.

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, Display, EnumString, IntoStaticStr, VariantArray};
use utoipa::ToSchema;

/// What an audit event records. Its wire name follows the CADF action taxonomy
/// (DSP0262: a verb, refined after a `/`); [`Action::cadf`] is the name a strict CADF
/// consumer accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Display, EnumString, AsRefStr, IntoStaticStr, VariantArray)]
pub enum Action {
    /// A share request filed.
    #[strum(serialize = "create")]
    Create,
    /// A request checked against Keystone and Glance (and the approval policy's answer).
    #[strum(serialize = "update/validate")]
    Validate,
    /// A request approved (or one approval of two given: outcome `pending`).
    #[strum(serialize = "update/approve")]
    Approve,
    #[strum(serialize = "update/deny")]
    Deny,
    /// A request withdrawn by its requester; about a share, a scheduled revoke cancelled.
    #[strum(serialize = "update/cancel")]
    Cancel,
    /// A request, or a share, whose time ran out (`pending` with `details.notice`: a share's
    /// expiry announced ahead).
    #[strum(serialize = "update/expire")]
    Expire,
    /// The worker starting to add a member in Glance.
    #[strum(serialize = "update/grant")]
    Grant,
    /// The image's visibility changed by the broker (private to shared, and back).
    #[strum(serialize = "update/visibility")]
    Visibility,
    /// The deletion guard: the broker set Glance's `protected` on an image with a live share
    /// (`details.protected` says what it found), or saw it unprotected outside the broker.
    #[strum(serialize = "update/protect")]
    Protect,
    /// The deletion guard lifted after the last share ended: `protected` put back as found.
    #[strum(serialize = "update/unprotect")]
    Unprotect,
    /// Access granted: the member exists in Glance.
    #[strum(serialize = "allow")]
    Allow,
    /// The consumer accepted the share.
    #[strum(serialize = "accept")]
    Accept,
    /// The consumer rejected the share.
    #[strum(serialize = "reject")]
    Reject,
    /// Access taken away: the member is removed from Glance.
    #[strum(serialize = "revoke")]
    Revoke,
    /// An API key made (`details.key` names it, never its secret).
    #[strum(serialize = "create/key")]
    CreateKey,
    /// An API key revoked.
    #[strum(serialize = "delete/key")]
    DeleteKey,
    /// The approval policy loaded at start or reloaded.
    #[strum(serialize = "update/policy")]
    Policy,
    #[strum(serialize = "create/webhook")]
    CreateWebhook,
    #[strum(serialize = "update/webhook")]
    UpdateWebhook,
    #[strum(serialize = "delete/webhook")]
    DeleteWebhook,
    /// The reconciler found Glance differing from the broker: a drift finding opened
    /// (`details.kind`, `details.finding_id`; announced as `drift.detected`).
    #[strum(serialize = "evaluate/drift")]
    DriftDetected,
    /// A drift finding resolved: no longer seen, repaired, or adopted (`details.resolution`).
    #[strum(serialize = "update/drift")]
    DriftResolved,
    /// A member made outside the broker recorded as a share, as found in Glance (no approver).
    #[strum(serialize = "create/adopt")]
    Adopt,
    /// Reconciliation asked for (`POST /v1/reconcile`): which images were queued.
    #[strum(serialize = "evaluate/reconcile")]
    Reconcile,
}

impl Action {
    /// The action as a CADF event names it. The taxonomy (DSP0262, and OpenStack's
    /// `pycadf`) has `allow`, `revoke` and refinements of `create`, `update` and `delete`,
    /// but no `accept` or `reject`: those are updates of the member's status.
    pub fn cadf(self) -> &'static str {
        match self {
            Action::Accept => "update/accept",
            Action::Reject => "update/reject",
            other => other.into(),
        }
    }
}

/// How the recorded action ended; the wire names are CADF's outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    Success,
    /// Refused (the caller was not allowed, or the state did not allow it), or failed.
    Failure,
    /// Asked for: the worker will carry it out.
    Pending,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_through_its_wire_name_and_is_a_cadf_action() {
        // pycadf's ACTION_TAXONOMY: a CADF action is one of these, or one refined after a `/`.
        const CADF: [&str; 27] = [
            "backup",
            "capture",
            "create",
            "configure",
            "read",
            "read/list",
            "update",
            "delete",
            "monitor",
            "start",
            "stop",
            "deploy",
            "undeploy",
            "enable",
            "disable",
            "send",
            "receive",
            "authenticate",
            "authenticate/login",
            "revoke",
            "renew",
            "restore",
            "evaluate",
            "allow",
            "deny",
            "notify",
            "unknown",
        ];
        for action in Action::VARIANTS {
            assert_eq!(action.as_ref().parse::<Action>(), Ok(*action));
            let cadf = action.cadf();
            assert!(
                CADF.iter()
                    .any(|verb| cadf == *verb || cadf.starts_with(&format!("{verb}/"))),
                "{action} -> {cadf}"
            );
        }
        assert_eq!(Action::Approve.to_string(), "update/approve");
        assert_eq!(Action::Accept.as_ref(), "accept");
        assert_eq!(Action::Accept.cadf(), "update/accept");
        assert!("update/nothing".parse::<Action>().is_err());
    }

    #[test]
    fn outcomes_are_cadf_outcomes_on_the_wire_and_in_json() {
        for (outcome, text) in [
            (Outcome::Success, "success"),
            (Outcome::Failure, "failure"),
            (Outcome::Pending, "pending"),
        ] {
            assert_eq!(outcome.as_ref(), text);
            assert_eq!(serde_json::to_value(outcome).unwrap(), text);
            assert_eq!(text.parse::<Outcome>(), Ok(outcome));
        }
    }
}
