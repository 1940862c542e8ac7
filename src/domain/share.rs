//! The life of one share as a state machine: [`ShareState::on`] says where a share goes when
//! something happens to it, or refuses. The API asks it before accepting an action, and the
//! worker asks it again, against the share as it is when the outcome is recorded, before
//! writing anything: an outcome that lost a race (an acceptance seen by a poll that ran while
//! the share was being revoked) is refused there and discarded, never written over the newer
//! state. Pure: nothing here imports axum, sqlx or reqwest.
//!
//! The rules that carry the broker's promises:
//! - a revoke wins: once `revoking`, only the removal of the member moves the share on, and
//!   accepts, rejects, polls and expiry are refused;
//! - a rejected share loses its member: Glance lets a `rejected` (or `pending`) member boot
//!   the image, so a rejection is carried out as a revoke (`revoking`, then `revoked`);
//! - a share is never `failed` while its member may exist: a grant that failed after Glance
//!   may have created the member is revoked first, and ends `failed` once it is gone.

use super::ShareState;

/// The reason a rejected share is revoked for.
pub const REJECTED_BY_CONSUMER: &str = "rejected by the consumer";

/// What happens to a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The worker starts (or retries) adding the member.
    StartGrant,
    /// Glance holds the member; `accepted` when the worker also accepted it for the consumer.
    Granted { accepted: bool },
    /// The request expired before the member was added.
    ExpireBeforeGrant,
    /// The grant failed for good. `member_may_exist` when Glance may have created the member
    /// anyway (the add timed out or failed with a server error, or a call after it failed).
    GrantFailed { member_may_exist: bool },
    /// The consumer accepts (through the broker, or as seen in Glance).
    Accept,
    /// The consumer rejects (through the broker, or as seen in Glance).
    Reject,
    /// A person or the expiry of the request revokes the share.
    Revoke,
    /// A poll found the member removed outside the broker.
    MemberGoneOutside,
    /// A poll found the image deleted.
    ImageGone,
    /// The revoke job removed the member (or found it already gone). `after_failed_grant`
    /// when the revoke cleaned up after a failed grant.
    MemberRemoved { after_failed_grant: bool },
}

impl Trigger {
    fn verb(self) -> &'static str {
        match self {
            Trigger::StartGrant => "start granting",
            Trigger::Granted { .. } => "be granted",
            Trigger::ExpireBeforeGrant => "expire before its grant",
            Trigger::GrantFailed { .. } => "fail its grant",
            Trigger::Accept => "be accepted",
            Trigger::Reject => "be rejected",
            Trigger::Revoke => "be revoked",
            Trigger::MemberGoneOutside => "lose its member outside the broker",
            Trigger::ImageGone => "lose its image",
            Trigger::MemberRemoved { .. } => "have its member removed",
        }
    }
}

/// A trigger the share's state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub state: ShareState,
    pub trigger: Trigger,
}

impl Refusal {
    /// What the caller could do instead, when there is something.
    pub fn hint(&self) -> &'static str {
        match (self.state, self.trigger) {
            (ShareState::AwaitingApproval, _) => "; cancel or deny its request instead",
            (ShareState::Queued | ShareState::Granting, _) => "; retry once it is granted",
            (ShareState::Revoking, _) => "; it is being revoked",
            _ => "",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a share in state {} cannot {}{}",
            self.state,
            self.trigger.verb(),
            self.hint()
        )
    }
}

impl std::error::Error for Refusal {}

impl ShareState {
    /// The state a share in this state takes when `trigger` happens, or a refusal.
    pub fn on(self, trigger: Trigger) -> Result<ShareState, Refusal> {
        use ShareState::*;
        let next = match (self, trigger) {
            (Queued | Granting, Trigger::StartGrant) => Granting,
            (Granting, Trigger::Granted { accepted: true }) => Accepted,
            (Granting, Trigger::Granted { accepted: false }) => PendingAcceptance,
            (Queued | Granting, Trigger::ExpireBeforeGrant) => Expired,
            (Queued | Granting, Trigger::GrantFailed { member_may_exist: true }) => Revoking,
            (
                Queued | Granting,
                Trigger::GrantFailed {
                    member_may_exist: false,
                },
            ) => Failed,
            (PendingAcceptance | Accepted, Trigger::Accept) => Accepted,
            // `rejected` is what a share seen rejected in Glance was before rejections removed
            // the member: such a share still has one, and is revoked like the others.
            (PendingAcceptance | Accepted | Rejected, Trigger::Reject) => Revoking,
            // A `failed` share may come from before failed grants were cleaned up: revoking it
            // removes a member left behind (or finds none).
            (PendingAcceptance | Accepted | Rejected | Failed, Trigger::Revoke) => Revoking,
            (PendingAcceptance | Accepted, Trigger::MemberGoneOutside) => RemovedOutside,
            (PendingAcceptance | Accepted, Trigger::ImageGone) => ImageDeleted,
            (
                Revoking,
                Trigger::MemberRemoved {
                    after_failed_grant: true,
                },
            ) => Failed,
            (
                Revoking,
                Trigger::MemberRemoved {
                    after_failed_grant: false,
                },
            ) => Revoked,
            (state, trigger) => return Err(Refusal { state, trigger }),
        };
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ShareState::*;
    use strum::VariantArray;

    /// Whether Glance may hold a member for a share in this state.
    fn member_may_exist(state: ShareState) -> bool {
        matches!(state, Granting | PendingAcceptance | Accepted | Rejected | Revoking)
    }

    const TRIGGERS: [Trigger; 13] = [
        Trigger::StartGrant,
        Trigger::Granted { accepted: true },
        Trigger::Granted { accepted: false },
        Trigger::ExpireBeforeGrant,
        Trigger::GrantFailed { member_may_exist: true },
        Trigger::GrantFailed {
            member_may_exist: false,
        },
        Trigger::Accept,
        Trigger::Reject,
        Trigger::Revoke,
        Trigger::MemberGoneOutside,
        Trigger::ImageGone,
        Trigger::MemberRemoved {
            after_failed_grant: true,
        },
        Trigger::MemberRemoved {
            after_failed_grant: false,
        },
    ];

    #[test]
    fn a_revoke_wins_over_accepts_rejects_polls_and_expiry() {
        for trigger in [
            Trigger::Accept,
            Trigger::Reject,
            Trigger::Revoke,
            Trigger::MemberGoneOutside,
            Trigger::ImageGone,
            Trigger::Granted { accepted: true },
            Trigger::ExpireBeforeGrant,
        ] {
            let refused = Revoking.on(trigger).unwrap_err();
            assert_eq!(refused.state, Revoking);
            assert!(refused.to_string().contains("being revoked"), "{refused}");
        }
        assert_eq!(
            Revoking.on(Trigger::MemberRemoved {
                after_failed_grant: false
            }),
            Ok(Revoked)
        );
    }

    #[test]
    fn only_the_removal_of_the_member_leaves_revoking() {
        for trigger in TRIGGERS {
            match Revoking.on(trigger) {
                Ok(next) => {
                    assert!(matches!(trigger, Trigger::MemberRemoved { .. }), "{trigger:?}");
                    assert!(!member_may_exist(next), "{next}");
                }
                Err(refusal) => assert_eq!(refusal.trigger, trigger),
            }
        }
    }

    #[test]
    fn a_rejection_removes_the_member() {
        for from in [PendingAcceptance, Accepted, Rejected] {
            assert_eq!(from.on(Trigger::Reject), Ok(Revoking), "{from}");
        }
        assert!(Revoked.on(Trigger::Reject).is_err());
        assert!(
            Rejected.on(Trigger::Accept).is_err(),
            "a rejected share is revoked, not accepted again"
        );
    }

    #[test]
    fn no_share_fails_while_its_member_may_exist() {
        assert_eq!(
            Granting.on(Trigger::GrantFailed { member_may_exist: true }),
            Ok(Revoking)
        );
        assert_eq!(
            Granting.on(Trigger::GrantFailed {
                member_may_exist: false
            }),
            Ok(Failed)
        );
        assert_eq!(
            Revoking.on(Trigger::MemberRemoved {
                after_failed_grant: true
            }),
            Ok(Failed)
        );
        // Every way into `failed` starts where no member can exist, or removes it first.
        for from in ShareState::VARIANTS {
            for trigger in TRIGGERS {
                if from.on(trigger) == Ok(Failed) && member_may_exist(*from) {
                    assert!(
                        matches!(
                            trigger,
                            Trigger::MemberRemoved { .. }
                                | Trigger::GrantFailed {
                                    member_may_exist: false
                                }
                        ),
                        "{from} -> failed on {trigger:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn finished_shares_refuse_everything() {
        for from in [
            Revoked,
            Denied,
            Cancelled,
            Expired,
            RemovedOutside,
            ImageDeleted,
            Invalid,
        ] {
            for trigger in TRIGGERS {
                assert!(from.on(trigger).is_err(), "{from} on {trigger:?}");
            }
        }
    }

    #[test]
    fn grants_move_forward_only() {
        assert_eq!(Queued.on(Trigger::StartGrant), Ok(Granting));
        assert_eq!(Granting.on(Trigger::StartGrant), Ok(Granting), "a retried grant");
        assert_eq!(Granting.on(Trigger::Granted { accepted: false }), Ok(PendingAcceptance));
        assert_eq!(Granting.on(Trigger::Granted { accepted: true }), Ok(Accepted));
        assert!(
            AwaitingApproval.on(Trigger::StartGrant).is_err(),
            "nothing before approval"
        );
        assert!(PendingAcceptance.on(Trigger::StartGrant).is_err());
        let refused = Queued.on(Trigger::Revoke).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "a share in state queued cannot be revoked; retry once it is granted"
        );
    }
}
