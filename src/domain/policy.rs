//! The approval policy: rules tried in order, each deciding a validated request by itself
//! (approve, deny) or saying how many distinct approvers it needs, and whether the requester
//! may accept the share on the consumer's behalf (`auto_accept`); and how long a request may
//! wait for a decision. Written as TOML or YAML; parsed and checked here, so a bad file is
//! refused whole. Pure: `startup` reads the file and swaps the policy on SIGHUP.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, EnumString};
use utoipa::ToSchema;

/// A policy, checked. The default has no rules (every request needs one approver), lets
/// requests wait forever, and allows no `auto_accept`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Undecided requests expire this long after they were filed.
    pub expire_undecided_after: Option<Duration>,
    /// Whether a request may ask for `auto_accept` when the rule deciding it does not say
    /// (or no rule matches).
    pub auto_accept: AutoAccept,
    pub rules: Vec<Rule>,
    /// Whether the reconciler repairs the drift it finds (removes members no share stands
    /// for, makes the image `shared` again) rather than only report it. Off by default.
    pub enforce_drift: bool,
    /// `protect_shared_images = false` turns the deletion guard off for new grants (it is on
    /// when the file does not say, and GSB_PROTECT_SHARED_IMAGES allows it).
    pub protect_shared_images: Option<bool>,
}

/// Whether a request may accept its shares on the consumer's behalf (`auto_accept`): the
/// consumer never says yes itself, so only the operator's policy may allow it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoAccept {
    Allow,
    #[default]
    Forbid,
}

/// One rule: when every condition holds (a rule with none always holds), the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub when: Vec<Condition>,
    pub outcome: Outcome,
    /// Whether requests this rule decides may ask for `auto_accept`; `None`: as the policy says.
    pub auto_accept: Option<AutoAccept>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The owner project and every target are in the same Keystone domain.
    SameDomain,
    /// The owner project, or its domain, is listed.
    OwnerIn(Vec<String>),
    /// Every target project, or its domain, is listed.
    TargetsIn(Vec<String>),
    /// Some target project, or its domain, is listed.
    AnyTargetIn(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Approve,
    Deny,
    /// This many distinct approvers (1 or 2).
    Require(u8),
}

/// What validation learned about a request, as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub owner_project: Option<String>,
    pub owner_domain: Option<String>,
    pub targets: Vec<TargetFacts>,
    /// The requester asked to accept the shares for the consumers.
    pub auto_accept: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFacts {
    pub project_id: String,
    pub domain_id: Option<String>,
}

/// What the policy decided, and which rule decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approve {
        rule: String,
    },
    Deny {
        rule: String,
    },
    /// People decide: `approvals` distinct approvers; `rule` is `None` when no rule matched.
    Require {
        approvals: u8,
        rule: Option<String>,
    },
    /// The request asks for `auto_accept` and the rule deciding it (`None`: no rule matched)
    /// does not allow it: it is denied, never granted without the consumer's say.
    AutoAcceptForbidden {
        rule: Option<String>,
    },
}

/// What a [`Decision`] comes to, as it is stored with the request and shown to approvers
/// (with the rule and the approvals needed beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema, AsRefStr, EnumString)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Verdict {
    /// A rule approved it: its grants were queued at once.
    Approve,
    /// A rule denied it.
    Deny,
    /// People decide: as many distinct approvers as the request's `required` says.
    RequireApproval,
    /// Denied: it asked for `auto_accept`, which the deciding rule (or the policy) forbids.
    AutoAcceptForbidden,
}

impl Decision {
    /// What the decision comes to.
    pub fn verdict(&self) -> Verdict {
        match self {
            Decision::Approve { .. } => Verdict::Approve,
            Decision::Deny { .. } => Verdict::Deny,
            Decision::Require { .. } => Verdict::RequireApproval,
            Decision::AutoAcceptForbidden { .. } => Verdict::AutoAcceptForbidden,
        }
    }
}

impl Condition {
    fn holds(&self, facts: &Facts) -> bool {
        let listed = |list: &[String], project: Option<&str>, domain: Option<&str>| {
            [project, domain]
                .into_iter()
                .flatten()
                .any(|id| list.iter().any(|l| l == id))
        };
        let target_listed =
            |list: &[String], t: &TargetFacts| listed(list, Some(&t.project_id), t.domain_id.as_deref());
        match self {
            Condition::SameDomain => {
                facts.owner_domain.is_some()
                    && !facts.targets.is_empty()
                    && facts.targets.iter().all(|t| t.domain_id == facts.owner_domain)
            }
            Condition::OwnerIn(list) => listed(list, facts.owner_project.as_deref(), facts.owner_domain.as_deref()),
            Condition::TargetsIn(list) => {
                !facts.targets.is_empty() && facts.targets.iter().all(|t| target_listed(list, t))
            }
            Condition::AnyTargetIn(list) => facts.targets.iter().any(|t| target_listed(list, t)),
        }
    }
}

impl Policy {
    /// Whether the policy lets grants protect their image (the deletion guard).
    pub fn protects_shared_images(&self) -> bool {
        self.protect_shared_images != Some(false)
    }

    /// The first rule whose conditions all hold decides; with none, one approver. A request
    /// asking for `auto_accept` that the deciding rule (or, when it does not say, the policy)
    /// does not allow is denied.
    pub fn decide(&self, facts: &Facts) -> Decision {
        let rule = self.rules.iter().find(|r| r.when.iter().all(|c| c.holds(facts)));
        let auto_accept = rule.and_then(|r| r.auto_accept).unwrap_or(self.auto_accept);
        let denies = rule.is_some_and(|r| r.outcome == Outcome::Deny);
        if facts.auto_accept && auto_accept == AutoAccept::Forbid && !denies {
            return Decision::AutoAcceptForbidden {
                rule: rule.map(|r| r.name.clone()),
            };
        }
        let Some(rule) = rule else {
            return Decision::Require {
                approvals: 1,
                rule: None,
            };
        };
        let name = rule.name.clone();
        match rule.outcome {
            Outcome::Approve => Decision::Approve { rule: name },
            Outcome::Deny => Decision::Deny { rule: name },
            Outcome::Require(approvals) => Decision::Require {
                approvals,
                rule: Some(name),
            },
        }
    }

    /// Parses and checks a policy file; `file_name` picks the format (`.toml`, `.yaml`, `.yml`).
    /// The error names the rule and the field at fault.
    pub fn parse(file_name: &str, text: &str) -> Result<Policy, String> {
        let file: PolicyFile = if file_name.ends_with(".toml") {
            toml::from_str(text).map_err(|e| format!("not a valid policy: {}", e.message()))?
        } else if file_name.ends_with(".yaml") || file_name.ends_with(".yml") {
            serde_norway::from_str(text).map_err(|e| format!("not a valid policy: {e}"))?
        } else {
            return Err("a policy file must be .toml, .yaml or .yml".into());
        };
        file.check()
    }
}

/// The policy as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    /// `30m`, `72h`, `7d`...
    #[serde(default)]
    expire_undecided_after: Option<String>,
    /// `allow` or `forbid` (the default).
    #[serde(default)]
    auto_accept: AutoAccept,
    #[serde(default)]
    rules: Vec<RuleFile>,
    /// `true`: repair drift; `false` (the default): report it only.
    #[serde(default)]
    enforce_drift: bool,
    /// The deletion guard (default: on).
    #[serde(default)]
    protect_shared_images: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    #[serde(default)]
    same_domain: bool,
    #[serde(default)]
    owner_in: Vec<String>,
    #[serde(default)]
    targets_in: Vec<String>,
    #[serde(default)]
    any_target_in: Vec<String>,
    decision: FileDecision,
    #[serde(default)]
    approvals: Option<u8>,
    #[serde(default)]
    auto_accept: Option<AutoAccept>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FileDecision {
    Approve,
    Deny,
    RequireApproval,
}

impl PolicyFile {
    fn check(self) -> Result<Policy, String> {
        let expire_undecided_after = self
            .expire_undecided_after
            .as_deref()
            .map(|d| parse_duration(d).map_err(|e| format!("expire_undecided_after: {e}")))
            .transpose()?;
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.into_iter().enumerate() {
            let at = format!("rules[{i}]");
            let name = rule.name.trim().to_owned();
            if name.is_empty() {
                return Err(format!("{at}.name: every rule needs a name"));
            }
            if !names.insert(name.clone()) {
                return Err(format!("{at}.name: `{name}` names two rules"));
            }
            let outcome = match (rule.decision, rule.approvals) {
                (FileDecision::Approve, None) => Outcome::Approve,
                (FileDecision::Deny, None) => Outcome::Deny,
                (FileDecision::RequireApproval, None) => Outcome::Require(1),
                (FileDecision::RequireApproval, Some(n @ 1..=2)) => Outcome::Require(n),
                (FileDecision::RequireApproval, Some(n)) => {
                    return Err(format!("{at}.approvals: must be 1 or 2, not {n}"));
                }
                (_, Some(_)) => {
                    return Err(format!(
                        "{at}.approvals: only a `require_approval` rule takes approvals"
                    ));
                }
            };
            let mut when = Vec::new();
            if rule.same_domain {
                when.push(Condition::SameDomain);
            }
            for (field, list, condition) in [
                (
                    "owner_in",
                    rule.owner_in,
                    Condition::OwnerIn as fn(Vec<String>) -> Condition,
                ),
                ("targets_in", rule.targets_in, Condition::TargetsIn),
                ("any_target_in", rule.any_target_in, Condition::AnyTargetIn),
            ] {
                if list.iter().any(|id| id.trim().is_empty()) {
                    return Err(format!("{at}.{field}: ids must not be blank"));
                }
                if !list.is_empty() {
                    when.push(condition(list));
                }
            }
            if rule.auto_accept.is_some() && outcome == Outcome::Deny {
                return Err(format!("{at}.auto_accept: a `deny` rule grants nothing to accept"));
            }
            rules.push(Rule {
                name,
                when,
                outcome,
                auto_accept: rule.auto_accept,
            });
        }
        Ok(Policy {
            expire_undecided_after,
            auto_accept: self.auto_accept,
            rules,
            enforce_drift: self.enforce_drift,
            protect_shared_images: self.protect_shared_images,
        })
    }
}

/// `90s`, `30m`, `72h`, `7d`: a positive whole number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_at);
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("`{text}` is not a duration such as 90s, 30m, 72h or 7d")),
    };
    match number.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_secs(n.saturating_mul(seconds))),
        _ => Err(format!(
            "`{text}` is not a positive duration such as 90s, 30m, 72h or 7d"
        )),
    }
}

/// The policy in force, shared by everything that applies it and swapped whole on reload.
#[derive(Debug, Clone, Default)]
pub struct SharedPolicy(Arc<RwLock<Arc<Policy>>>);

impl SharedPolicy {
    pub fn new(policy: Policy) -> Self {
        SharedPolicy(Arc::new(RwLock::new(Arc::new(policy))))
    }

    pub fn current(&self) -> Arc<Policy> {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn replace(&self, policy: Policy) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(policy);
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
