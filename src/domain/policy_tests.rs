//! Unit tests of `domain::policy`.

use super::*;

fn facts(owner: (&str, &str), targets: &[(&str, &str)]) -> Facts {
    Facts {
        owner_project: Some(owner.0.into()),
        owner_domain: Some(owner.1.into()),
        targets: targets
            .iter()
            .map(|(p, d)| TargetFacts {
                project_id: (*p).into(),
                domain_id: Some((*d).into()),
            })
            .collect(),
        auto_accept: false,
    }
}

const EXAMPLE: &str = r#"
expire_undecided_after = "72h"

[[rules]]
name = "blocked-targets"
any_target_in = ["p-blocked", "d-quarantine"]
decision = "deny"

[[rules]]
name = "same-domain"
same_domain = true
decision = "approve"

[[rules]]
name = "trusted-owner"
owner_in = ["p-golden"]
decision = "approve"

[[rules]]
name = "trusted-targets"
targets_in = ["p-ci", "d-partners"]
decision = "approve"

[[rules]]
name = "two-eyes"
decision = "require_approval"
approvals = 2
"#;

fn example() -> Policy {
    Policy::parse("policy.toml", EXAMPLE).unwrap()
}

fn approve(rule: &str) -> Decision {
    Decision::Approve { rule: rule.into() }
}

#[test]
fn same_domain_requests_are_approved() {
    assert_eq!(
        example().decide(&facts(("p1", "d1"), &[("p2", "d1"), ("p3", "d1")])),
        approve("same-domain")
    );
    assert_ne!(
        example().decide(&facts(("p1", "d1"), &[("p2", "d1"), ("p3", "d2")])),
        approve("same-domain")
    );
}

#[test]
fn allow_lists_approve_by_owner_or_by_every_target() {
    assert_eq!(
        example().decide(&facts(("p-golden", "d1"), &[("p2", "d2")])),
        approve("trusted-owner")
    );
    assert_eq!(
        example().decide(&facts(("p1", "d1"), &[("p-ci", "d2"), ("p9", "d-partners")])),
        approve("trusted-targets"),
        "a target is listed by its project or its domain"
    );
    assert_ne!(
        example().decide(&facts(("p1", "d1"), &[("p-ci", "d2"), ("p9", "d3")])),
        approve("trusted-targets"),
        "every target must be listed"
    );
}

#[test]
fn a_denied_target_denies_the_request() {
    let denied = Decision::Deny {
        rule: "blocked-targets".into(),
    };
    assert_eq!(
        example().decide(&facts(("p1", "d1"), &[("p2", "d1"), ("p-blocked", "d1")])),
        denied
    );
    assert_eq!(
        example().decide(&facts(("p1", "d1"), &[("p2", "d-quarantine")])),
        denied
    );
}

#[test]
fn rules_are_tried_in_order() {
    // Same domain would approve, but the deny rule comes first.
    let f = facts(("p1", "d1"), &[("p-blocked", "d1")]);
    assert_eq!(
        example().decide(&f),
        Decision::Deny {
            rule: "blocked-targets".into()
        }
    );
    let mut reordered = example();
    reordered.rules.rotate_left(1);
    assert_eq!(reordered.decide(&f), approve("same-domain"));
}

#[test]
fn the_rest_needs_two_approvers_and_no_rule_needs_one() {
    assert_eq!(
        example().decide(&facts(("p1", "d1"), &[("p2", "d2")])),
        Decision::Require {
            approvals: 2,
            rule: Some("two-eyes".into())
        }
    );
    assert_eq!(
        Policy::default().decide(&facts(("p1", "d1"), &[("p2", "d1")])),
        Decision::Require {
            approvals: 1,
            rule: None
        }
    );
}

#[test]
fn unknown_domains_never_count_as_the_same() {
    let f = Facts {
        owner_project: Some("p1".into()),
        owner_domain: None,
        targets: vec![TargetFacts {
            project_id: "p2".into(),
            domain_id: None,
        }],
        auto_accept: false,
    };
    assert_ne!(example().decide(&f), approve("same-domain"));
}

#[test]
fn yaml_says_the_same_as_toml() {
    let yaml = r#"
expire_undecided_after: 72h
rules:
  - {name: blocked-targets, any_target_in: [p-blocked, d-quarantine], decision: deny}
  - {name: same-domain, same_domain: true, decision: approve}
  - {name: trusted-owner, owner_in: [p-golden], decision: approve}
  - {name: trusted-targets, targets_in: [p-ci, d-partners], decision: approve}
  - {name: two-eyes, decision: require_approval, approvals: 2}
"#;
    assert_eq!(Policy::parse("policy.yaml", yaml).unwrap(), example());
    assert_eq!(example().expire_undecided_after, Some(Duration::from_secs(72 * 3600)));
}

#[test]
fn bad_files_are_refused_with_the_place_at_fault() {
    let cases = [
        ("p.json", "{}", "must be .toml"),
        ("p.toml", "rules = 3", "not a valid policy"),
        (
            "p.toml",
            "[[rules]]\nname = \"a\"\ndecision = \"maybe\"",
            "not a valid policy",
        ),
        (
            "p.toml",
            "[[rules]]\nname = \"a\"\ndecision = \"approve\"\ncolour = 1",
            "not a valid policy",
        ),
        (
            "p.toml",
            "[[rules]]\nname = \" \"\ndecision = \"approve\"",
            "rules[0].name",
        ),
        (
            "p.toml",
            "[[rules]]\nname = \"a\"\ndecision = \"approve\"\n[[rules]]\nname = \"a\"\ndecision = \"deny\"",
            "rules[1].name",
        ),
        (
            "p.toml",
            "[[rules]]\nname = \"a\"\ndecision = \"require_approval\"\napprovals = 3",
            "rules[0].approvals",
        ),
        (
            "p.toml",
            "[[rules]]\nname = \"a\"\ndecision = \"deny\"\napprovals = 2",
            "rules[0].approvals",
        ),
        (
            "p.toml",
            "[[rules]]\nname = \"a\"\nowner_in = [\"\"]\ndecision = \"deny\"",
            "rules[0].owner_in",
        ),
        (
            "p.toml",
            "[[rules]]\nname = \"a\"\ndecision = \"deny\"\nauto_accept = \"allow\"",
            "rules[0].auto_accept",
        ),
        ("p.toml", "auto_accept = \"sometimes\"", "not a valid policy"),
        ("p.toml", "expire_undecided_after = \"soon\"", "expire_undecided_after"),
        ("p.toml", "expire_undecided_after = \"0h\"", "expire_undecided_after"),
    ];
    for (name, text, wanted) in cases {
        let error = Policy::parse(name, text).unwrap_err();
        assert!(error.contains(wanted), "{text:?}: {error}");
    }
}

#[test]
fn auto_accept_needs_the_policy_to_allow_it() {
    let asking = Facts {
        auto_accept: true,
        ..facts(("p1", "d1"), &[("p2", "d2")])
    };
    assert_eq!(
        Policy::default().decide(&asking),
        Decision::AutoAcceptForbidden { rule: None },
        "by default nobody accepts for the consumer"
    );
    let allowed = Policy {
        auto_accept: AutoAccept::Allow,
        ..Policy::default()
    };
    assert_eq!(
        allowed.decide(&asking),
        Decision::Require {
            approvals: 1,
            rule: None
        }
    );
    let policy = Policy::parse(
        "policy.toml",
        r#"
auto_accept = "allow"

[[rules]]
name = "blocked"
any_target_in = ["p-blocked"]
decision = "deny"

[[rules]]
name = "same-domain"
same_domain = true
decision = "approve"
auto_accept = "forbid"

[[rules]]
name = "people"
decision = "require_approval"
"#,
    )
    .unwrap();
    let within = Facts {
        auto_accept: true,
        ..facts(("p1", "d1"), &[("p2", "d1")])
    };
    assert_eq!(
        policy.decide(&within),
        Decision::AutoAcceptForbidden {
            rule: Some("same-domain".into())
        },
        "a rule may forbid what the policy allows"
    );
    assert_eq!(
        policy.decide(&asking),
        Decision::Require {
            approvals: 1,
            rule: Some("people".into())
        }
    );
    let blocked = Facts {
        auto_accept: true,
        ..facts(("p1", "d1"), &[("p-blocked", "d1")])
    };
    assert_eq!(
        policy.decide(&blocked),
        Decision::Deny { rule: "blocked".into() },
        "a deny rule denies for its own reason"
    );
    assert_eq!(
        policy.decide(&Facts {
            auto_accept: false,
            ..within
        }),
        approve("same-domain")
    );
}

#[test]
fn a_replaced_policy_is_seen_by_every_holder() {
    let shared = SharedPolicy::default();
    let other = shared.clone();
    shared.replace(example());
    assert_eq!(*other.current(), example());
}

#[test]
fn each_decision_has_its_verdict_and_each_verdict_its_stored_name() {
    let rule = || "r".to_owned();
    let decisions = [
        (Decision::Approve { rule: rule() }, Verdict::Approve, "approve"),
        (Decision::Deny { rule: rule() }, Verdict::Deny, "deny"),
        (
            Decision::Require {
                approvals: 2,
                rule: None,
            },
            Verdict::RequireApproval,
            "require_approval",
        ),
        (
            Decision::AutoAcceptForbidden { rule: None },
            Verdict::AutoAcceptForbidden,
            "auto_accept_forbidden",
        ),
    ];
    for (decision, verdict, name) in decisions {
        assert_eq!(decision.verdict(), verdict);
        assert_eq!(verdict.as_ref(), name);
        assert_eq!(name.parse::<Verdict>().unwrap(), verdict);
        assert_eq!(serde_json::to_value(verdict).unwrap(), name);
    }
}
