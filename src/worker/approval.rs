//! The approval policy, applied the moment validation has the facts, inside the transaction
//! that records the validation: a rule approves the request (its grants are queued) or denies
//! it, or the request waits for as many distinct approvers as the policy requires. A request
//! asking for `auto_accept` that the policy does not allow is denied here, before anyone
//! approves it and before anything reaches Glance.

use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::db;
use crate::db::audit::NewEvent;
use crate::db::share_requests::ShareRequest;
use crate::db::shares::Share;
use crate::domain::decisions::{self, Standing};
use crate::domain::policy::{Decision, Facts, TargetFacts};
use crate::domain::{Action, Initiator, RequestStatus};

/// The facts the policy decides on: the image's owner and each target, with their domains.
pub fn facts(request: &ShareRequest, shares: &[Share]) -> Facts {
    Facts {
        owner_project: request.image_owner.clone(),
        owner_domain: request.image_owner_domain.clone(),
        targets: shares
            .iter()
            .filter_map(|s| {
                Some(TargetFacts {
                    project_id: s.project_id.clone()?,
                    domain_id: s.project_domain.clone(),
                })
            })
            .collect(),
        auto_accept: request.auto_accept,
    }
}

/// What the policy decided, as the audit log records it.
pub fn details(decision: &Decision) -> Value {
    match decision {
        Decision::Approve { rule } => json!({ "decision": "approve", "rule": rule }),
        Decision::Deny { rule } => json!({ "decision": "deny", "rule": rule }),
        Decision::Require { approvals, rule } => {
            json!({ "decision": "require_approval", "approvals": approvals, "rule": rule })
        }
        Decision::AutoAcceptForbidden { rule } => {
            json!({ "decision": "deny", "reason": "auto_accept_forbidden", "rule": rule })
        }
    }
}

/// Records what the policy decided for `request`, just validated: the approvers it needs,
/// or, when a rule decides, the decision, its grants and its audit event, all in `tx`.
pub async fn apply(
    tx: &mut PgConnection,
    instance: &str,
    decision: &Decision,
    request: &ShareRequest,
) -> Result<(), sqlx::Error> {
    let rule = match decision {
        Decision::Approve { rule } | Decision::Deny { rule } => Some(rule),
        Decision::Require { rule, .. } | Decision::AutoAcceptForbidden { rule } => rule.as_ref(),
    };
    let to = match decisions::by_policy(decision) {
        Standing::Waiting { required, .. } => {
            // The policy's own count, a u8, came back unchanged.
            let required = u8::try_from(required).unwrap_or(u8::MAX);
            db::share_requests::set_policy(tx, request.id, decision.verdict(), required, rule.map(String::as_str))
                .await?;
            return Ok(());
        }
        Standing::Decided(to) => to,
    };
    db::share_requests::set_policy(tx, request.id, decision.verdict(), 1, rule.map(String::as_str)).await?;
    // Why, as the request and the audit log show it.
    let comment = match (decision, rule) {
        (Decision::AutoAcceptForbidden { .. }, rule) => format!(
            "auto_accept is not allowed by the approval policy ({}): the consumer must accept the share \
             itself; file the request again without auto_accept",
            rule.map_or("no rule allows it".to_owned(), |r| format!("rule `{r}`"))
        ),
        (_, rule) => format!(
            "decided by the approval policy's rule `{}`",
            rule.map_or("", String::as_str)
        ),
    };
    let (request, decided) = db::share_requests::decide(tx, request.id, to, "policy", Some(&comment)).await?;
    if to == RequestStatus::Approved {
        db::jobs::enqueue_grants(tx, &decided).await?;
    }
    let actor = Initiator::service("policy");
    let action = if to == RequestStatus::Approved {
        Action::Approve
    } else {
        Action::Deny
    };
    let event = NewEvent {
        reason: Some(&comment),
        details: details(decision),
        ..NewEvent::about_request(&actor, &request, action)
    };
    crate::events::record(tx, instance, event).await?;
    Ok(())
}
