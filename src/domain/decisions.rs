//! Separation of duties: who may approve, deny, cancel and revoke, decided on [`Subject`]s
//! (one per person: a Keystone user id, or a key acting for nobody), never on names or on
//! header text; and where a request stands once approvals or the approval policy have
//! spoken. Pure; the API and the worker ask these rules, the database holds them too (one
//! approval per subject and request).

use super::policy::Decision;
use super::{RequestStatus, Subject};

/// Why a rule refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Only the person the request is for (or an admin) may cancel it.
    NotTheRequester,
    /// Nobody decides a request filed by or for themselves.
    OwnRequest,
    /// The request was filed for a user the broker never resolved (before subjects were
    /// recorded): who filed it cannot be told apart from the approver, so it cannot be approved.
    RequesterUnknown,
    /// This person has already approved; the request needs someone else.
    AlreadyApproved,
    /// Only the person the request is for, a requester of the image's project, or an admin
    /// may revoke.
    MayNotRevoke,
    /// Only a requester of the image's project, or an admin, may revoke a share that
    /// something depends on (`force`).
    MayNotForce,
    /// Only the image's project, the consumer project, approvers, auditors and admins may
    /// read what depends on a share.
    MayNotReadImpact,
}

impl Refusal {
    /// What the caller is told.
    pub fn detail(self) -> &'static str {
        match self {
            Refusal::NotTheRequester => {
                "only the requester who filed it (or the user it was filed for), or an admin, may cancel a request"
            }
            Refusal::OwnRequest => "nobody may decide a request filed by or for themselves",
            Refusal::RequesterUnknown => {
                "this request was filed for a user the broker could not identify; it can be denied or cancelled, not approved"
            }
            Refusal::AlreadyApproved => "you have already approved this request; it needs another approver",
            Refusal::MayNotRevoke => {
                "only the requester who filed the share, its image's project, or an admin may revoke it"
            }
            Refusal::MayNotForce => {
                "only a requester of the image's project, or an admin, may force the revoke of a share in use"
            }
            Refusal::MayNotReadImpact => {
                "only the image's project, the consumer project, approvers, auditors and admins may read what depends on a share"
            }
        }
    }
}

/// What a caller asks of an undecided request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Approve,
    Deny,
    Cancel,
}

/// Whether `actor` may make `ask` on a request filed for `requester`, after `earlier`
/// approvals (their subjects). `admin` lets one cancel anything; nobody, admins included,
/// decides a request filed by or for themselves, nor approves twice.
pub fn may_decide(
    actor: &Subject,
    admin: bool,
    requester: &Subject,
    earlier: &[Subject],
    ask: Ask,
) -> Result<(), Refusal> {
    match ask {
        Ask::Cancel if admin || actor.same_as(requester) => Ok(()),
        Ask::Cancel => Err(Refusal::NotTheRequester),
        _ if actor.same_as(requester) => Err(Refusal::OwnRequest),
        Ask::Approve if matches!(requester, Subject::Unresolved(_)) => Err(Refusal::RequesterUnknown),
        Ask::Approve if earlier.iter().any(|e| actor.same_as(e)) => Err(Refusal::AlreadyApproved),
        Ask::Approve | Ask::Deny => Ok(()),
    }
}

/// Whether `actor` may revoke a share of a request filed for `requester`: as that requester,
/// as a requester of the image's project (`owner_requester`), or as an admin.
pub fn may_revoke(actor: &Subject, admin: bool, requester: &Subject, owner_requester: bool) -> Result<(), Refusal> {
    if admin || owner_requester || actor.same_as(requester) {
        Ok(())
    } else {
        Err(Refusal::MayNotRevoke)
    }
}

/// Whether `actor` may revoke a share anyway while something depends on it (`force`): as a
/// requester of the image's project (`owner_requester`) or an admin. The requester who filed
/// it may revoke it, but not break what the consumer runs.
pub fn may_force_revoke(admin: bool, owner_requester: bool) -> Result<(), Refusal> {
    if admin || owner_requester {
        Ok(())
    } else {
        Err(Refusal::MayNotForce)
    }
}

/// Who reads what depends on a share: the roles a caller holds towards it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImpactReader {
    pub admin: bool,
    pub auditor: bool,
    pub approver: bool,
    /// A requester of the image's project.
    pub owner_requester: bool,
    /// A member of the consumer project.
    pub consumer: bool,
}

/// Whether a caller may read what depends on a share (it names the consumer's servers and
/// volumes): the image's project, the consumer, approvers, auditors and admins.
pub fn may_read_impact(reader: ImpactReader) -> Result<(), Refusal> {
    let ImpactReader {
        admin,
        auditor,
        approver,
        owner_requester,
        consumer,
    } = reader;
    if admin || auditor || approver || owner_requester || consumer {
        Ok(())
    } else {
        Err(Refusal::MayNotReadImpact)
    }
}

/// Where a request stands once a decision on it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It waits for more approvers: `given` distinct approvals of the `required`.
    Waiting { given: usize, required: usize },
    /// It is decided: approved or denied.
    Decided(RequestStatus),
}

/// Where a request needing `required` distinct approvers stands when `approver` approves it
/// after `earlier` approvals (their subjects): approved once enough distinct people said yes.
/// One person approves once, whatever credential they use.
pub fn approve(approver: &Subject, earlier: &[Subject], required: usize) -> Result<Standing, Refusal> {
    if earlier.iter().any(|e| approver.same_as(e)) {
        return Err(Refusal::AlreadyApproved);
    }
    let given = earlier.len() + 1;
    Ok(if given < required {
        Standing::Waiting { given, required }
    } else {
        Standing::Decided(RequestStatus::Approved)
    })
}

/// Where the approval policy's `decision` leaves a request just validated: decided by a
/// rule, or waiting for as many approvers as it requires.
pub fn by_policy(decision: &Decision) -> Standing {
    match decision {
        Decision::Require { approvals, .. } => Standing::Waiting {
            given: 0,
            required: usize::from(*approvals),
        },
        Decision::Approve { .. } => Standing::Decided(RequestStatus::Approved),
        Decision::Deny { .. } | Decision::AutoAcceptForbidden { .. } => Standing::Decided(RequestStatus::Denied),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Subject {
        Subject::User(id.into())
    }

    #[test]
    fn nobody_decides_for_themselves_whatever_credential_they_use() {
        // alice filed with her token; a key acting for alice is alice.
        let alice = user("a1ice-id");
        for ask in [Ask::Approve, Ask::Deny] {
            assert_eq!(may_decide(&alice, true, &alice, &[], ask), Err(Refusal::OwnRequest));
        }
        assert_eq!(may_decide(&user("bob-id"), false, &alice, &[], Ask::Approve), Ok(()));
        let portal = Subject::Key("portal".into());
        assert_eq!(
            may_decide(&portal, false, &portal, &[], Ask::Approve),
            Err(Refusal::OwnRequest)
        );
    }

    #[test]
    fn one_person_approves_once() {
        let (alice, dave, carol) = (user("a"), user("d"), user("c"));
        assert_eq!(
            may_decide(&dave, false, &alice, std::slice::from_ref(&dave), Ask::Approve),
            Err(Refusal::AlreadyApproved)
        );
        assert_eq!(
            may_decide(&carol, false, &alice, std::slice::from_ref(&dave), Ask::Approve),
            Ok(())
        );
        assert_eq!(
            may_decide(&dave, false, &alice, std::slice::from_ref(&dave), Ask::Deny),
            Ok(()),
            "an approver may still deny what it approved while it waits for a second"
        );
    }

    #[test]
    fn a_request_for_an_unknown_user_can_be_denied_or_cancelled_but_not_approved() {
        let erin = Subject::Unresolved("erin".into());
        let dave = user("d");
        assert_eq!(
            may_decide(&dave, false, &erin, &[], Ask::Approve),
            Err(Refusal::RequesterUnknown)
        );
        assert_eq!(may_decide(&dave, false, &erin, &[], Ask::Deny), Ok(()));
        assert_eq!(may_decide(&dave, true, &erin, &[], Ask::Cancel), Ok(()));
        assert_eq!(
            may_decide(&erin, false, &erin, &[], Ask::Cancel),
            Err(Refusal::NotTheRequester)
        );
    }

    #[test]
    fn only_the_requester_or_an_admin_cancels() {
        let (alice, bob) = (user("a"), user("b"));
        assert_eq!(may_decide(&alice, false, &alice, &[], Ask::Cancel), Ok(()));
        assert_eq!(
            may_decide(&bob, false, &alice, &[], Ask::Cancel),
            Err(Refusal::NotTheRequester)
        );
        assert_eq!(may_decide(&bob, true, &alice, &[], Ask::Cancel), Ok(()));
    }

    #[test]
    fn a_request_is_approved_once_enough_distinct_people_approve() {
        let (dave, carol) = (user("d"), user("c"));
        assert_eq!(approve(&dave, &[], 1), Ok(Standing::Decided(RequestStatus::Approved)));
        assert_eq!(approve(&dave, &[], 2), Ok(Standing::Waiting { given: 1, required: 2 }));
        assert_eq!(
            approve(&carol, std::slice::from_ref(&dave), 2),
            Ok(Standing::Decided(RequestStatus::Approved))
        );
        assert_eq!(
            approve(&dave, std::slice::from_ref(&dave), 2),
            Err(Refusal::AlreadyApproved)
        );
    }

    #[test]
    fn the_policy_decides_by_a_rule_or_leaves_the_request_to_its_approvers() {
        let rule = || "r".to_owned();
        assert_eq!(
            by_policy(&Decision::Approve { rule: rule() }),
            Standing::Decided(RequestStatus::Approved)
        );
        for denial in [
            Decision::Deny { rule: rule() },
            Decision::AutoAcceptForbidden { rule: None },
        ] {
            assert_eq!(by_policy(&denial), Standing::Decided(RequestStatus::Denied));
        }
        assert_eq!(
            by_policy(&Decision::Require {
                approvals: 2,
                rule: None
            }),
            Standing::Waiting { given: 0, required: 2 }
        );
    }

    #[test]
    fn revoking_takes_the_requester_its_project_or_an_admin() {
        let (alice, bob) = (user("a"), user("b"));
        assert_eq!(may_revoke(&alice, false, &alice, false), Ok(()));
        assert_eq!(may_revoke(&bob, false, &alice, true), Ok(()));
        assert_eq!(may_revoke(&bob, true, &alice, false), Ok(()));
        assert_eq!(may_revoke(&bob, false, &alice, false), Err(Refusal::MayNotRevoke));
        // A user whose name is a key's name is not that key.
        assert_eq!(
            may_revoke(&user("portal"), false, &Subject::Key("portal".into()), false),
            Err(Refusal::MayNotRevoke)
        );
    }

    #[test]
    fn forcing_a_revoke_takes_the_image_project_or_an_admin_not_the_filer_alone() {
        assert_eq!(may_force_revoke(false, true), Ok(()));
        assert_eq!(may_force_revoke(true, false), Ok(()));
        assert_eq!(may_force_revoke(false, false), Err(Refusal::MayNotForce));
    }

    #[test]
    fn the_impact_is_read_by_both_projects_approvers_auditors_and_admins_only() {
        assert_eq!(may_read_impact(ImpactReader::default()), Err(Refusal::MayNotReadImpact));
        for reader in [
            ImpactReader {
                admin: true,
                ..Default::default()
            },
            ImpactReader {
                auditor: true,
                ..Default::default()
            },
            ImpactReader {
                approver: true,
                ..Default::default()
            },
            ImpactReader {
                owner_requester: true,
                ..Default::default()
            },
            ImpactReader {
                consumer: true,
                ..Default::default()
            },
        ] {
            assert_eq!(may_read_impact(reader), Ok(()), "{reader:?}");
        }
    }
}
