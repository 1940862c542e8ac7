use strum::VariantArray;

use super::*;
use ShareState::*;

const B: &str = "proj-b";
const C: &str = "proj-c";

fn share(n: u128, project: &str, state: ShareState) -> ShareFacts {
    ShareFacts {
        id: Uuid::from_u128(n),
        project_id: Some(project.to_owned()),
        state,
    }
}

fn image(status: &str, visibility: &str) -> ImageFacts {
    ImageFacts {
        status: status.into(),
        visibility: visibility.into(),
        owner: Some("proj-a".into()),
        protected: Some(false),
    }
}

fn member(project: &str, status: &str) -> MemberFacts {
    MemberFacts {
        project_id: project.into(),
        status: status.into(),
    }
}

fn seen(members: Vec<MemberFacts>) -> Observed {
    Observed {
        image: Some(image("active", "shared")),
        members: Some(members),
        missing_projects: Vec::new(),
    }
}

fn expect(shares: Vec<ShareFacts>) -> Expected {
    Expected {
        shares,
        ..Expected::default()
    }
}

fn kinds(c: &Comparison) -> Vec<(DriftKind, Option<&str>)> {
    c.findings.iter().map(|f| (f.kind, f.project_id.as_deref())).collect()
}

#[test]
fn glance_and_the_broker_agreeing_is_no_drift() {
    let c = compare(
        &expect(vec![share(1, B, Accepted), share(2, C, PendingAcceptance)]),
        &seen(vec![member(B, "accepted"), member(C, "pending")]),
    );
    assert!(c.findings.is_empty(), "{c:?}");
    assert!(c.repairs.is_empty() && c.adoptions.is_empty() && c.moves.is_empty());
    for kind in DriftKind::VARIANTS {
        assert!(c.checked.contains(kind), "{kind} not checked");
    }
}

#[test]
fn a_member_with_no_live_share_is_unmanaged_and_removed_under_enforcement() {
    let c = compare(&expect(vec![share(1, B, Revoked)]), &seen(vec![member(B, "accepted")]));
    assert_eq!(kinds(&c), [(DriftKind::UnmanagedMember, Some(B))]);
    assert_eq!(
        c.findings[0].share_id,
        Some(Uuid::from_u128(1)),
        "names the ended share"
    );
    assert_eq!(
        c.repairs,
        [(
            DriftKind::UnmanagedMember,
            Repair::RemoveMember { project_id: B.into() }
        )]
    );
}

#[test]
fn members_of_grants_in_flight_and_revokes_under_way_are_managed() {
    // A grant's member may exist before its grant settles; a revoke's until it is done.
    for state in [Queued, Granting, Revoking, Rejected, AwaitingApproval] {
        let c = compare(&expect(vec![share(1, B, state)]), &seen(vec![member(B, "pending")]));
        assert!(
            !kinds(&c).contains(&(DriftKind::UnmanagedMember, Some(B))),
            "{state}: {c:?}"
        );
        assert!(c.repairs.is_empty(), "{state}: nothing to remove");
    }
}

#[test]
fn a_granted_share_without_its_member_is_missing_and_moves_as_the_poll_moves_it() {
    for state in [PendingAcceptance, Accepted] {
        let c = compare(&expect(vec![share(1, B, state)]), &seen(vec![]));
        assert_eq!(kinds(&c), [(DriftKind::MemberMissing, Some(B))]);
        assert_eq!(c.moves, [(Uuid::from_u128(1), Trigger::MemberGoneOutside)]);
        assert_eq!(state.on(Trigger::MemberGoneOutside), Ok(RemovedOutside));
    }
    // Not granted yet, or being revoked: no member is owed.
    for state in [Queued, Granting, Revoking, AwaitingApproval] {
        let c = compare(&expect(vec![share(1, B, state)]), &seen(vec![]));
        assert!(c.findings.is_empty() && c.moves.is_empty(), "{state}: {c:?}");
    }
}

#[test]
fn a_share_already_removed_outside_keeps_one_missing_finding_and_moves_no_more() {
    let c = compare(&expect(vec![share(1, B, RemovedOutside)]), &seen(vec![]));
    assert_eq!(kinds(&c), [(DriftKind::MemberMissing, Some(B))]);
    assert!(c.moves.is_empty());
    // A newer live share of the project replaces it: nothing missing about the old one.
    let c = compare(
        &expect(vec![share(1, B, RemovedOutside), share(2, B, Queued)]),
        &seen(vec![]),
    );
    assert!(c.findings.is_empty(), "{c:?}");
}

#[test]
fn an_accepted_share_whose_member_is_not_accepted_changed_status() {
    for status in ["pending", "rejected"] {
        let c = compare(&expect(vec![share(1, B, Accepted)]), &seen(vec![member(B, status)]));
        assert_eq!(kinds(&c), [(DriftKind::StatusChanged, Some(B))]);
        assert_eq!(c.findings[0].details["found"], status);
        assert!(c.repairs.is_empty(), "the consumer's say is not repaired");
    }
    // Awaiting the consumer: its answer in Glance is the poll's business, not drift.
    let c = compare(
        &expect(vec![share(1, B, PendingAcceptance)]),
        &seen(vec![member(B, "rejected")]),
    );
    assert!(c.findings.is_empty());
}

#[test]
fn a_deleted_image_is_missing_and_its_granted_shares_lose_it() {
    let observed = Observed::default();
    let c = compare(&expect(vec![share(1, B, Accepted), share(2, C, Queued)]), &observed);
    assert_eq!(kinds(&c), [(DriftKind::ImageMissing, None)]);
    assert_eq!(c.moves, [(Uuid::from_u128(1), Trigger::ImageGone)]);
    assert_eq!(c.checked, [DriftKind::ImageMissing], "nothing else can be compared");
    let c = compare(&expect(vec![share(1, B, Revoked)]), &observed);
    assert!(c.findings.is_empty(), "no live share: nothing is owed");
}

#[test]
fn a_deactivated_image_is_inactive() {
    let observed = Observed {
        image: Some(image("deactivated", "shared")),
        ..seen(vec![member(B, "accepted")])
    };
    let c = compare(&expect(vec![share(1, B, Accepted)]), &observed);
    assert_eq!(kinds(&c), [(DriftKind::ImageInactive, None)]);
    assert!(c.repairs.is_empty());
}

#[test]
fn an_image_made_private_or_public_under_granted_shares_changed_visibility() {
    for visibility in ["private", "public", "community"] {
        let observed = Observed {
            image: Some(image("active", visibility)),
            members: None,
            missing_projects: Vec::new(),
        };
        let c = compare(&expect(vec![share(1, B, Accepted)]), &observed);
        assert_eq!(kinds(&c), [(DriftKind::VisibilityChanged, None)], "{visibility}");
        assert_eq!(c.repairs, [(DriftKind::VisibilityChanged, Repair::RestoreVisibility)]);
        assert!(
            !c.checked.contains(&DriftKind::MemberMissing),
            "hidden members are neither missing nor resolved"
        );
    }
    // Before any grant the broker owes no visibility.
    let observed = Observed {
        image: Some(image("active", "private")),
        ..Observed::default()
    };
    assert!(
        compare(&expect(vec![share(1, B, Queued)]), &observed)
            .findings
            .is_empty()
    );
}

#[test]
fn protection_is_compared_only_where_the_guard_set_it() {
    let mut expected = expect(vec![share(1, B, Accepted)]);
    let c = compare(&expected, &seen(vec![member(B, "accepted")]));
    assert!(c.findings.is_empty(), "no guard, no expectation");
    expected.protected = Some(true);
    let c = compare(&expected, &seen(vec![member(B, "accepted")]));
    assert_eq!(kinds(&c), [(DriftKind::ProtectedChanged, None)]);
    assert_eq!(
        c.repairs,
        [(
            DriftKind::ProtectedChanged,
            Repair::RestoreProtected { protected: true }
        )]
    );
}

#[test]
fn a_live_share_whose_project_is_gone_from_keystone_is_project_missing() {
    let observed = Observed {
        missing_projects: vec![C.into()],
        ..seen(vec![member(B, "accepted"), member(C, "pending")])
    };
    let c = compare(
        &expect(vec![share(1, B, Accepted), share(2, C, PendingAcceptance)]),
        &observed,
    );
    assert_eq!(kinds(&c), [(DriftKind::ProjectMissing, Some(C))]);
    assert_eq!(c.findings[0].share_id, Some(Uuid::from_u128(2)));
}

#[test]
fn members_made_by_hand_are_adopted_as_found_for_adopting_owners() {
    let mut expected = expect(vec![]);
    expected.adopt = true;
    let c = compare(
        &expected,
        &seen(vec![
            member(B, "pending"),
            member(C, "accepted"),
            member("proj-d", "rejected"),
        ]),
    );
    assert!(c.findings.is_empty() && c.repairs.is_empty(), "{c:?}");
    let states: Vec<_> = c.adoptions.iter().map(|a| (a.project_id.as_str(), a.state)).collect();
    assert_eq!(states, [(B, PendingAcceptance), (C, Accepted), ("proj-d", Rejected)]);
}

#[test]
fn a_member_back_after_the_broker_revoked_it_is_never_adopted() {
    let mut expected = expect(vec![share(1, B, Revoked)]);
    expected.adopt = true;
    let c = compare(&expected, &seen(vec![member(B, "accepted")]));
    assert!(c.adoptions.is_empty());
    assert_eq!(kinds(&c), [(DriftKind::UnmanagedMember, Some(B))]);
}

#[test]
fn kinds_and_states_have_their_wire_names() {
    for kind in DriftKind::VARIANTS {
        assert_eq!(kind.as_ref().parse::<DriftKind>(), Ok(*kind));
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_ref());
    }
    assert_eq!(DriftKind::UnmanagedMember.as_ref(), "unmanaged_member");
    assert_eq!(FindingState::Resolved.as_ref(), "resolved");
    for state in ShareState::VARIANTS {
        let ended = [
            Denied,
            Cancelled,
            Expired,
            Failed,
            Revoked,
            RemovedOutside,
            ImageDeleted,
            Invalid,
        ];
        assert_eq!(is_live(*state), !ended.contains(state), "{state}");
    }
}
