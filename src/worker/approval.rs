//! The approval policy, applied the moment validation has the facts, inside the transaction
//! that records the validation: a rule approves the request (its grants are queued) or denies
//! it, or the request waits for as many distinct approvers as the policy requires.

use serde_json::{Value, json};
use sqlx::PgConnection;

use crate::db;
use crate::db::audit::NewEvent;
use crate::db::share_requests::{Share, ShareRequest};
use crate::domain::policy::{Decision, Facts, TargetFacts};
use crate::domain::{Initiator, RequestStatus};

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
    let (to, rule) = match decision {
        Decision::Require { approvals, rule } => {
            db::share_requests::set_policy(tx, request.id, *approvals, rule.as_deref()).await?;
            return Ok(());
        }
        Decision::Approve { rule } => (RequestStatus::Approved, rule),
        Decision::Deny { rule } => (RequestStatus::Denied, rule),
    };
    db::share_requests::set_policy(tx, request.id, 1, Some(rule)).await?;
    let comment = format!("decided by the approval policy's rule `{rule}`");
    let (request, decided) = db::share_requests::decide(tx, request.id, to, "policy", Some(&comment)).await?;
    if to == RequestStatus::Approved {
        db::jobs::enqueue_grants(tx, &decided).await?;
    }
    let actor = Initiator::service("policy");
    let action = if to == RequestStatus::Approved {
        "update/approve"
    } else {
        "update/deny"
    };
    let event = NewEvent {
        reason: Some(&comment),
        details: json!({ "rule": rule }),
        ..NewEvent::about_request(&actor, &request, action)
    };
    db::audit::record(tx, instance, event).await?;
    Ok(())
}
