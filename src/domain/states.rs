use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s).ok_or_else(|| format!("unknown {} `{s}`", stringify!($name)))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// Where a share request stands.
    RequestStatus {
        /// Waiting for an approver.
        PendingApproval => "pending_approval",
        /// Approved: its shares are being carried out.
        Approved => "approved",
        /// Denied by an approver or a policy.
        Denied => "denied",
        /// Withdrawn by its requester before a decision.
        Cancelled => "cancelled",
        /// Nobody decided in time.
        Expired => "expired",
        /// Validation found the request cannot be carried out (`validation.errors` says why).
        Invalid => "invalid",
    }
}

string_enum! {
    /// Whether the worker has checked a request against Keystone and Glance.
    Validation {
        /// Not checked yet, or Keystone or Glance did not answer (retried).
        Pending => "pending",
        /// The image and every target exist and can be shared; the facts are on the request.
        Passed => "passed",
        /// Something cannot be shared; the request is `invalid`.
        Failed => "failed",
    }
}

string_enum! {
    /// Where one share (one image granted to one project) stands.
    ShareState {
        /// Its request is not decided yet; nothing has reached Glance.
        AwaitingApproval => "awaiting_approval",
        /// Approved, waiting for the worker.
        Queued => "queued",
        /// The worker is adding the member in Glance.
        Granting => "granting",
        /// The member exists in Glance; the consumer has not accepted yet.
        PendingAcceptance => "pending_acceptance",
        /// The consumer accepted: the image is in its image list.
        Accepted => "accepted",
        /// Seen rejected in Glance before rejections removed the member; such a share is
        /// revoked by the worker. A rejection now goes `revoking`, then `revoked`.
        Rejected => "rejected",
        /// The worker is removing the member from Glance (revoked by a person, by expiry, after
        /// a rejection, or after a grant that failed); retried until done, with `last_error`.
        Revoking => "revoking",
        /// The member is gone from Glance.
        Revoked => "revoked",
        /// The request was denied.
        Denied => "denied",
        /// The request was cancelled.
        Cancelled => "cancelled",
        /// The request or the share expired.
        Expired => "expired",
        /// The grant failed for good, and no member is left in Glance; `last_error` says why.
        Failed => "failed",
        /// The member disappeared from Glance without the broker removing it.
        RemovedOutside => "removed_outside",
        /// The image was deleted from Glance.
        ImageDeleted => "image_deleted",
        /// Its request failed validation.
        Invalid => "invalid",
    }
}

string_enum! {
    /// Why a share is being revoked: what the end of the revoke records.
    RevokeCause {
        /// A person revoked it (its requester, a requester of the image's project, an admin).
        Requested => "requested",
        /// Its request's `expires_at` passed.
        Expiry => "expiry",
        /// The consumer rejected it through the broker: the end of the revoke also records the
        /// rejection as done.
        Rejected => "rejected",
        /// A poll saw the consumer reject it in Glance (the rejection is recorded already).
        RejectedInGlance => "rejected_in_glance",
        /// Its grant failed after Glance may have created the member: the share ends `failed`
        /// once the member is gone.
        FailedGrant => "failed_grant",
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_text_and_serde() {
        for s in ShareState::ALL {
            assert_eq!(ShareState::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in RequestStatus::ALL {
            assert_eq!(RequestStatus::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(ShareState::parse("nope"), None);
    }
}
