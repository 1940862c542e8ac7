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

use chrono::{DateTime, Utc};

use super::ShareState;

/// The reason a rejected share is revoked for.
pub const REJECTED_BY_CONSUMER: &str = "rejected by the consumer";

/// How far ahead a revoke may be scheduled.
pub const MAX_SCHEDULE_AHEAD_DAYS: i64 = 366;

/// What is wrong with `at` as the time of a scheduled revoke asked for at `now`, if
/// anything: it must be in the future, and at most [`MAX_SCHEDULE_AHEAD_DAYS`] ahead.
pub fn schedule_problem(at: DateTime<Utc>, now: DateTime<Utc>) -> Option<String> {
    if at <= now {
        return Some(format!(
            "must be in the future (it is {now} now); to revoke now, leave it out"
        ));
    }
    let limit = now + chrono::Duration::days(MAX_SCHEDULE_AHEAD_DAYS);
    (at > limit).then(|| format!("must be at most {MAX_SCHEDULE_AHEAD_DAYS} days ahead (before {limit})"))
}

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
    /// A person or the expiry of the request revokes the share (or a scheduled revoke
    /// comes due).
    Revoke,
    /// A person schedules the revoke for later: the share stays in force until then.
    ScheduleRevoke,
    /// A person cancels a scheduled revoke: the share goes back to where it was scheduled
    /// from (`accepted` when the consumer had accepted it, else `pending_acceptance`).
    CancelScheduledRevoke { accepted: bool },
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
            Trigger::ScheduleRevoke => "have its revoke scheduled",
            Trigger::CancelScheduledRevoke { .. } => "have a scheduled revoke cancelled",
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
            (ShareState::RevocationScheduled, Trigger::ScheduleRevoke) => {
                "; its revoke is scheduled already: cancel it first to choose another time"
            }
            (ShareState::RevocationScheduled, _) => "; its revoke is scheduled (cancel it, or revoke it now)",
            (_, Trigger::CancelScheduledRevoke { .. }) => "; no revoke is scheduled",
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
            // A consumer that rejects a share whose revoke is scheduled loses it now.
            (PendingAcceptance | Accepted | Rejected | RevocationScheduled, Trigger::Reject) => Revoking,
            // A `failed` share may come from before failed grants were cleaned up: revoking it
            // removes a member left behind (or finds none). A scheduled revoke is carried out
            // when it comes due, or sooner: by a person's revoke now, or by the expiry.
            (PendingAcceptance | Accepted | Rejected | Failed | RevocationScheduled, Trigger::Revoke) => Revoking,
            (PendingAcceptance | Accepted, Trigger::ScheduleRevoke) => RevocationScheduled,
            (RevocationScheduled, Trigger::CancelScheduledRevoke { accepted: true }) => Accepted,
            (RevocationScheduled, Trigger::CancelScheduledRevoke { accepted: false }) => PendingAcceptance,
            (PendingAcceptance | Accepted | RevocationScheduled, Trigger::MemberGoneOutside) => RemovedOutside,
            (PendingAcceptance | Accepted | RevocationScheduled, Trigger::ImageGone) => ImageDeleted,
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
        matches!(
            state,
            Granting | PendingAcceptance | Accepted | Rejected | RevocationScheduled | Revoking
        )
    }

    const TRIGGERS: [Trigger; 16] = [
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
        Trigger::ScheduleRevoke,
        Trigger::CancelScheduledRevoke { accepted: true },
        Trigger::CancelScheduledRevoke { accepted: false },
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

    #[test]
    fn a_scheduled_revoke_keeps_the_share_in_force_until_it_is_carried_out_or_cancelled() {
        assert_eq!(Accepted.on(Trigger::ScheduleRevoke), Ok(RevocationScheduled));
        assert_eq!(PendingAcceptance.on(Trigger::ScheduleRevoke), Ok(RevocationScheduled));
        assert!(
            member_may_exist(RevocationScheduled),
            "the member is kept until it is due"
        );
        // Due, revoked now by a person, or expired: all the same revoke.
        assert_eq!(RevocationScheduled.on(Trigger::Revoke), Ok(Revoking));
        assert_eq!(RevocationScheduled.on(Trigger::Reject), Ok(Revoking));
        assert_eq!(
            RevocationScheduled.on(Trigger::CancelScheduledRevoke { accepted: true }),
            Ok(Accepted)
        );
        assert_eq!(
            RevocationScheduled.on(Trigger::CancelScheduledRevoke { accepted: false }),
            Ok(PendingAcceptance)
        );
        let twice = RevocationScheduled.on(Trigger::ScheduleRevoke).unwrap_err();
        assert!(twice.to_string().contains("cancel it first"), "{twice}");
        assert!(
            RevocationScheduled.on(Trigger::Accept).is_err(),
            "an accept would lose the schedule"
        );
    }

    #[test]
    fn only_a_scheduled_revoke_can_be_cancelled_and_only_a_granted_share_scheduled() {
        for from in ShareState::VARIANTS {
            for accepted in [true, false] {
                let cancelled = from.on(Trigger::CancelScheduledRevoke { accepted });
                assert_eq!(cancelled.is_ok(), *from == RevocationScheduled, "{from}");
            }
            let scheduled = from.on(Trigger::ScheduleRevoke);
            assert_eq!(
                scheduled.is_ok(),
                matches!(from, PendingAcceptance | Accepted),
                "{from}"
            );
        }
        let refused = Revoked
            .on(Trigger::CancelScheduledRevoke { accepted: true })
            .unwrap_err();
        assert!(refused.to_string().ends_with("no revoke is scheduled"), "{refused}");
        assert!(Revoking.on(Trigger::ScheduleRevoke).is_err());
    }

    #[test]
    fn a_revoke_is_scheduled_in_the_future_and_not_absurdly_far() {
        let now = DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z").unwrap().to_utc();
        assert_eq!(schedule_problem(now + chrono::Duration::seconds(1), now), None);
        assert_eq!(schedule_problem(now + chrono::Duration::days(366), now), None);
        assert!(schedule_problem(now, now).unwrap().contains("future"));
        assert!(schedule_problem(now - chrono::Duration::days(1), now).is_some());
        let far = schedule_problem(now + chrono::Duration::days(367), now).unwrap();
        assert!(far.contains("366 days"), "{far}");
    }
}
