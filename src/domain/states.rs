//! The states of share requests and shares, and why a share is revoked: each an enum whose
//! wire name (in the API, the database and the logs) is its variant's name in snake_case,
//! derived once by strum (text) and serde (JSON). Pure: imports no axum, sqlx or reqwest.

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, Display, EnumString, IntoStaticStr, VariantArray};
use utoipa::ToSchema;

/// Where a share request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for an approver.
    PendingApproval,
    /// Approved: its shares are being carried out.
    Approved,
    /// Denied by an approver or a policy.
    Denied,
    /// Withdrawn by its requester before a decision.
    Cancelled,
    /// Nobody decided in time.
    Expired,
    /// Validation found the request cannot be carried out (`validation.errors` says why).
    Invalid,
}

/// Whether the worker has checked a request against Keystone and Glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Validation {
    /// Not checked yet, or Keystone or Glance did not answer (retried).
    Pending,
    /// The image and every target exist and can be shared; the facts are on the request.
    Passed,
    /// Something cannot be shared; the request is `invalid`.
    Failed,
}

/// Where one share (one image granted to one project) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ShareState {
    /// Its request is not decided yet; nothing has reached Glance.
    AwaitingApproval,
    /// Approved, waiting for the worker.
    Queued,
    /// The worker is adding the member in Glance.
    Granting,
    /// The member exists in Glance; the consumer has not accepted yet.
    PendingAcceptance,
    /// The consumer accepted: the image is in its image list.
    Accepted,
    /// Seen rejected in Glance before rejections removed the member; such a share is
    /// revoked by the worker. A rejection now goes `revoking`, then `revoked`.
    Rejected,
    /// In force until `revoke_effective_at`, when the worker starts revoking it: a revoke
    /// scheduled ahead (`share.revocation_scheduled` told the consumer); it can be cancelled.
    RevocationScheduled,
    /// The worker is removing the member from Glance (revoked by a person, by expiry, after
    /// a rejection, or after a grant that failed); retried until done, with `last_error`.
    Revoking,
    /// The member is gone from Glance.
    Revoked,
    /// The request was denied.
    Denied,
    /// The request was cancelled.
    Cancelled,
    /// The request or the share expired.
    Expired,
    /// The grant failed for good, and no member is left in Glance; `last_error` says why.
    Failed,
    /// The member disappeared from Glance without the broker removing it.
    RemovedOutside,
    /// The image was deleted from Glance.
    ImageDeleted,
    /// Its request failed validation.
    Invalid,
}

/// Why a share is being revoked: what the end of the revoke records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum RevokeCause {
    /// A person revoked it (its requester, a requester of the image's project, an admin).
    Requested,
    /// A revoke a person scheduled came due.
    Scheduled,
    /// Its request's `expires_at` passed.
    Expiry,
    /// The consumer rejected it through the broker: the end of the revoke also records the
    /// rejection as done.
    Rejected,
    /// A poll saw the consumer reject it in Glance (the rejection is recorded already).
    RejectedInGlance,
    /// Its grant failed after Glance may have created the member: the share ends `failed`
    /// once the member is gone.
    FailedGrant,
}

impl RequestStatus {
    /// The state each share of a request takes when the request reaches this status.
    pub fn share_state(self) -> ShareState {
        match self {
            RequestStatus::PendingApproval => ShareState::AwaitingApproval,
            RequestStatus::Approved => ShareState::Queued,
            RequestStatus::Denied => ShareState::Denied,
            RequestStatus::Cancelled => ShareState::Cancelled,
            RequestStatus::Expired => ShareState::Expired,
            RequestStatus::Invalid => ShareState::Invalid,
        }
    }
}

/// Rows read by sqlx (`#[sqlx(try_from = "String")]`) take their states from the text stored.
macro_rules! from_stored_text {
    ($($name:ident),+) => {$(
        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                text.parse().map_err(|_| format!("unknown {} `{text}`", stringify!($name)))
            }
        }
    )+};
}

from_stored_text!(RequestStatus, Validation, ShareState, RevokeCause);
use super::drift::{DriftKind, FindingState};
from_stored_text!(DriftKind, FindingState);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_text_and_serde() {
        for s in ShareState::VARIANTS {
            assert_eq!(s.as_ref().parse::<ShareState>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_ref());
            assert_eq!(s.to_string(), s.as_ref());
        }
        for s in RequestStatus::VARIANTS {
            assert_eq!(s.as_ref().parse::<RequestStatus>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_ref());
        }
        for s in RevokeCause::VARIANTS {
            assert_eq!(RevokeCause::try_from(s.as_ref().to_owned()), Ok(*s));
        }
        assert!("nope".parse::<ShareState>().is_err());
        assert_eq!(ShareState::RemovedOutside.as_ref(), "removed_outside");
        assert_eq!(RequestStatus::PendingApproval.as_ref(), "pending_approval");
        assert_eq!(RevokeCause::RejectedInGlance.as_ref(), "rejected_in_glance");
        assert_eq!(ShareState::RevocationScheduled.as_ref(), "revocation_scheduled");
    }
}
