//! Unit tests of `domain::principal`.

use super::*;

fn user(project: &str, roles: &[&str]) -> Principal {
    let identity = KeystoneIdentity {
        user_id: "u1".into(),
        user_name: "alice".into(),
        project_id: Some(project.into()),
        project_domain_id: Some("default".into()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        ..KeystoneIdentity::default()
    };
    let map = RoleMap {
        cloud_projects: vec!["ops-id".into(), "admin@Default".into()],
        ..RoleMap::default()
    };
    Principal::keystone(identity, &map)
}

const NOWHERE: (Option<&str>, Option<&str>) = (None, None);

fn at(project: &str) -> (Option<&str>, Option<&str>) {
    (Some(project), None)
}

#[test]
fn a_member_requests_and_consumes_in_its_own_project_only() {
    let alice = user("proj-a", &["member", "reader"]);
    assert!(alice.may(Capability::Request, Some("proj-a")));
    assert!(alice.may(Capability::Consume, Some("proj-a")));
    assert!(!alice.may(Capability::Request, Some("proj-b")));
    assert!(!alice.may(Capability::Request, None));
    assert!(!alice.may_somewhere(Capability::Approve));
    assert_eq!(alice.readable_projects(), Some(vec!["proj-a".to_owned()]));
    assert!(alice.sees_request(at("proj-a"), "someone"));
    assert!(!alice.sees_request(at("proj-b"), "someone"));
    assert!(alice.sees_share(at("proj-a"), at("proj-b"), "someone"));
    assert!(!alice.sees_share(at("proj-c"), at("proj-b"), "someone"));
    assert_eq!(alice.subject(), Subject::User("u1".into()));
}

#[test]
fn a_reader_reads_and_changes_nothing() {
    let reader = user("proj-a", &["reader"]);
    assert!(reader.sees_request(at("proj-a"), "x"));
    for c in [Capability::Request, Capability::Consume, Capability::Approve] {
        assert!(!reader.may_somewhere(c), "{c:?}");
    }
}

#[test]
fn an_approver_can_be_limited_to_its_project_or_its_domain() {
    let approver = |scope| {
        let identity = KeystoneIdentity {
            user_id: "u".into(),
            user_name: "dave".into(),
            project_id: Some("proj-d".into()),
            project_domain_id: Some("dom-1".into()),
            roles: vec!["image_share_approver".into()],
            ..KeystoneIdentity::default()
        };
        let map = RoleMap {
            approver_scope: scope,
            ..RoleMap::default()
        };
        Principal::keystone(identity, &map)
    };
    let project = approver(ApproverScope::Project);
    assert!(project.may_in(Capability::Approve, Some("proj-d"), Some("dom-1")));
    assert!(!project.may_in(Capability::Approve, Some("proj-a"), Some("dom-1")));
    let domain = approver(ApproverScope::Domain);
    assert!(domain.may_in(Capability::Approve, Some("proj-a"), Some("dom-1")));
    assert!(!domain.may_in(Capability::Approve, Some("proj-x"), Some("dom-2")));
    assert!(
        !domain.may(Capability::Approve, Some("proj-a")),
        "the domain must be known"
    );
    let everywhere = approver(ApproverScope::Everywhere);
    assert!(
        !everywhere.may_in(Capability::Approve, Some("proj-x"), Some("dom-2")),
        "outside the cloud's projects, an approver holds in its own domain only"
    );
    assert!(everywhere.may_in(Capability::Approve, Some("proj-x"), Some("dom-1")));
    assert!(everywhere.sees_request((Some("proj-x"), Some("dom-1")), "x"));
    assert!(!everywhere.sees_request((Some("proj-y"), Some("dom-2")), "x"));
    assert_eq!("domain".parse(), Ok(ApproverScope::Domain));
    assert!("galaxy".parse::<ApproverScope>().is_err());
}

#[test]
fn cloud_wide_roles_hold_everywhere() {
    let approver = user("ops-id", &["image_share_approver"]);
    assert!(approver.may(Capability::Approve, Some("proj-a")));
    assert!(approver.may(Capability::Approve, None));
    assert_eq!(approver.readable_projects(), None);
    assert!(!approver.may_somewhere(Capability::Request));
    let admin = user("ops-id", &["admin", "member", "reader"]);
    assert!(admin.is_admin() && admin.may(Capability::Consume, Some("anything")));
    let by_name = KeystoneIdentity {
        project_id: Some("some-id".into()),
        project_name: Some("admin".into()),
        project_domain_name: Some("Default".into()),
        roles: vec!["admin".into()],
        ..KeystoneIdentity::default()
    };
    assert!(Principal::keystone(by_name.clone(), &RoleMap::default()).is_admin());
    let elsewhere = KeystoneIdentity {
        project_domain_name: Some("Customer".into()),
        ..by_name
    };
    assert!(
        !Principal::keystone(elsewhere, &RoleMap::default()).is_admin(),
        "a project named admin in another domain is not the cloud's"
    );
    let system = KeystoneIdentity {
        system: true,
        roles: vec!["admin".into(), "image_share_approver".into()],
        ..KeystoneIdentity::default()
    };
    let system = Principal::keystone(system, &RoleMap::default());
    assert!(system.is_admin() && system.may(Capability::Approve, None));
}

#[test]
fn a_customers_admin_is_no_broker_admin_and_decides_in_its_domain_only() {
    let roles = vec![
        "admin".into(),
        "member".into(),
        "reader".into(),
        "image_share_approver".into(),
    ];
    let domain_scoped = KeystoneIdentity {
        user_id: "mallory".into(),
        domain_id: Some("customer".into()),
        roles: roles.clone(),
        ..KeystoneIdentity::default()
    };
    let project_scoped = KeystoneIdentity {
        user_id: "mallory".into(),
        project_id: Some("customer-proj".into()),
        project_name: Some("admin".into()),
        project_domain_id: Some("customer".into()),
        project_domain_name: Some("Customer".into()),
        roles,
        ..KeystoneIdentity::default()
    };
    for identity in [domain_scoped, project_scoped] {
        let mallory = Principal::keystone(identity, &RoleMap::default());
        assert!(!mallory.is_admin());
        assert!(!mallory.may_somewhere(Capability::Audit));
        assert!(!mallory.may(Capability::Approve, None));
        assert!(!mallory.may_in(Capability::Approve, Some("proj-a"), Some("default")));
        assert!(mallory.may_in(Capability::Approve, Some("p"), Some("customer")));
        assert!(!mallory.sees_request((Some("proj-a"), Some("default")), "portal"));
        assert_ne!(mallory.readable(), None);
    }
}

#[test]
fn the_role_map_is_configurable() {
    let map = RoleMap {
        approver: vec!["share-boss".into()],
        ..RoleMap::default()
    };
    let identity = |role: &str| KeystoneIdentity {
        user_id: "u".into(),
        user_name: "u".into(),
        project_id: Some("p".into()),
        project_domain_id: Some("d".into()),
        roles: vec![role.into()],
        ..KeystoneIdentity::default()
    };
    assert!(Principal::keystone(identity("share-boss"), &map).may_somewhere(Capability::Approve));
    assert!(!Principal::keystone(identity("image_share_approver"), &map).may_somewhere(Capability::Approve));
}

#[test]
fn api_keys_keep_their_meaning() {
    let portal = Principal::api_key("portal".into(), Role::Requester, &[]);
    assert!(portal.may(Capability::Request, None));
    assert!(
        !portal.may_somewhere(Capability::Consume),
        "an unrestricted key consumes for nobody"
    );
    assert_eq!(portal.readable_projects(), None);

    let b = Principal::api_key("b".into(), Role::Requester, &["proj-b".into()]);
    assert!(b.may(Capability::Consume, Some("proj-b")));
    assert!(!b.may(Capability::Request, Some("proj-a")));
    assert!(b.sees_request(at("proj-x"), "b"), "a caller sees what it filed");
    assert!(!b.sees_request(NOWHERE, "c"));

    let approver = Principal::api_key("w".into(), Role::Approver, &["proj-a".into()]);
    assert!(approver.may(Capability::Approve, Some("proj-a")));
    assert!(!approver.may(Capability::Approve, Some("proj-b")));
    assert_eq!(approver.readable_projects(), None);

    let auditor = Principal::api_key("a".into(), Role::Auditor, &[]);
    assert_eq!(auditor.readable_projects(), None);
    assert!(!auditor.may_somewhere(Capability::Request));
}
