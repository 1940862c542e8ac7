//! Settle: the one transaction that records what a share job (or a batch of grants) found,
//! with its audit events and the jobs' ends, committed only while the lease holds. Each
//! outcome is a transition the share's state machine must allow against the share as it is
//! now; one it refuses lost its race and is discarded.

use std::collections::HashMap;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

mod failure;

use super::share::{Effect, Failure, Seen, revoked_details};
use super::{Worker, retry};
use crate::db;
use crate::db::audit::NewEvent;
use crate::db::jobs::{self, Claimed, Finish, Kind, Origin};
use crate::db::share_requests::ShareRequest;
use crate::db::shares::RevokeStart;
use crate::db::shares::Share;
use crate::domain::{Action, Outcome as AuditOutcome};
use crate::domain::{REJECTED_BY_CONSUMER, RevokeCause, ShareState, Trigger};
use crate::telemetry;

/// The requests `shares` belong to, by id.
pub(super) async fn requests_of(
    db: impl sqlx::PgExecutor<'_>,
    shares: &HashMap<Uuid, Share>,
) -> Result<HashMap<Uuid, ShareRequest>, sqlx::Error> {
    let ids: Vec<Uuid> = shares.values().map(|s| s.request_id).collect();
    let requests = db::share_requests::find_many(db, &ids).await?;
    Ok(requests.into_iter().map(|r| (r.id, r)).collect())
}

/// Logs an outcome that lost its race to a newer change of its share, and counts it.
fn discarded(share_id: Uuid, refusal: &crate::domain::Refusal) {
    metrics::counter!("gsb_outcomes_discarded_total").increment(1);
    tracing::info!(share.id = %share_id, %refusal, "the share moved on: this outcome lost its race and is discarded");
}

/// What settling a batch of jobs (all of `kind`) collects besides its state changes: the
/// audit events, in order, and the (share, image) of each member whose acceptance is to be
/// checked.
struct Settled {
    kind: Kind,
    events: Vec<ShareEvent>,
    polls: Vec<(Uuid, Uuid)>,
}

/// An audit event about a share, to be written once the rest of the transaction is.
struct ShareEvent {
    share: Share,
    action: Action,
    outcome: AuditOutcome,
    reason: Option<String>,
    details: serde_json::Value,
}

impl ShareEvent {
    fn new(share: Share, action: Action, outcome: AuditOutcome) -> Self {
        ShareEvent {
            share,
            action,
            outcome,
            reason: None,
            details: json!({}),
        }
    }
}

impl Worker {
    /// Records the outcomes of share jobs (held under one lease) in one transaction with
    /// their audit events (after the changes they record); commits only if every job is
    /// still ours. `rid` correlates the events with the jobs' OpenStack calls. Each outcome
    /// is checked against its share as it is now (locked): one the share's state machine
    /// refuses lost a race and is discarded. The jobs are all of `kind`.
    pub(super) async fn settle(
        &self,
        kind: Kind,
        mut outcomes: Vec<(&Claimed, Uuid, Result<Effect, Failure>)>,
        rid: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        // Follow-up jobs (acceptance checks, revokes) carry the same request id, and continue
        // this job's trace.
        let trace = telemetry::trace::current();
        jobs::carry_origin(&mut tx, Origin { request_id: rid, trace }).await?;
        let ids: Vec<Uuid> = outcomes.iter().map(|(_, id, _)| *id).collect();
        let mut shares: HashMap<Uuid, Share> = db::shares::lock_all(&mut tx, &ids)
            .await?
            .into_iter()
            .map(|s| (s.id, s))
            .collect();
        let requests = requests_of(&mut *tx, &shares).await?;
        // A member added for a share that moved on meanwhile lost its race. (Nothing but its
        // grant moves a `granting` share, yet the rule is the same everywhere.)
        for (_, id, result) in &mut outcomes {
            if let Ok(Effect::Granted { accepted, .. }) = result {
                let share = shares.get(id).ok_or_else(|| anyhow::anyhow!("share {id} is gone"))?;
                if let Err(refusal) = share.state.on(Trigger::Granted { accepted: *accepted }) {
                    discarded(*id, &refusal);
                    *result = Ok(Effect::Nothing);
                }
            }
        }
        // The members created in Glance (a grant batch's usual outcome) in one statement.
        let granted: Vec<db::shares::Granted> = outcomes
            .iter()
            .filter_map(|(_, id, result)| match result {
                Ok(Effect::Granted {
                    project_id,
                    accepted,
                    image,
                }) => Some(db::shares::Granted {
                    id: *id,
                    project_id,
                    state: shares[id].state.on(Trigger::Granted { accepted: *accepted }).ok()?,
                    image_name: image.name.as_deref(),
                    image_owner: image.owner.as_deref(),
                }),
                _ => None,
            })
            .collect();
        let updated = db::shares::set_granted_all(&mut tx, &granted).await?;
        anyhow::ensure!(updated.len() == granted.len(), "a locked share moved during its grant");
        for share in updated {
            shares.insert(share.id, share);
        }

        let mut settled = Settled {
            kind,
            events: Vec::new(),
            polls: Vec::new(),
        };
        let mut ends = Vec::with_capacity(outcomes.len());
        for (job, share_id, result) in outcomes {
            let share = shares
                .remove(&share_id)
                .ok_or_else(|| anyhow::anyhow!("share {share_id} is gone"))?;
            let request = requests
                .get(&share.request_id)
                .ok_or_else(|| anyhow::anyhow!("request {} is gone", share.request_id))?;
            let end = self
                .record_outcome(&mut tx, job, share, request, result, &mut settled)
                .await?;
            ends.push((job, end));
        }
        let first_job = ends.first().map(|(job, _)| job.id);
        if !jobs::finish_all(&mut tx, ends).await? {
            tx.rollback().await?;
            tracing::warn!(job.id = ?first_job, "lease lost before completion: outcome discarded, another worker owns the job");
            return Ok(());
        }
        if !settled.polls.is_empty() {
            let first = Utc::now() + self.config.accept_poll_first;
            jobs::enqueue_all(&mut tx, Kind::Poll, &settled.polls, first).await?;
        }
        let events = settled
            .events
            .iter()
            .map(|e| NewEvent {
                reason: e.reason.as_deref(),
                details: e.details.clone(),
                ..self.event(&e.share, e.action, e.outcome, rid)
            })
            .collect();
        crate::events::record_all(&mut tx, &self.config.instance, events).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves `share` (as it is now, locked) on `trigger` if its state machine allows, guarded
    /// by its state, with the error that put it there (if any); `None` when the outcome lost
    /// its race to a newer change (it is discarded, never written over that change).
    pub(super) async fn apply(
        &self,
        tx: &mut sqlx::PgConnection,
        share: &Share,
        trigger: Trigger,
        last_error: Option<&str>,
    ) -> anyhow::Result<Option<Share>> {
        let to = match share.state.on(trigger) {
            Ok(to) => to,
            Err(refusal) => {
                discarded(share.id, &refusal);
                return Ok(None);
            }
        };
        Ok(db::shares::transition(tx, share.id, share.state, to, last_error).await?)
    }

    /// Starts revoking `share` (as it is now, locked) on `trigger`, and queues the revoke;
    /// `None` when the share's state machine refuses (the outcome lost its race).
    pub(super) async fn start_revoke(
        &self,
        tx: &mut sqlx::PgConnection,
        share: &Share,
        trigger: Trigger,
        start: RevokeStart<'_>,
    ) -> anyhow::Result<Option<Share>> {
        match share.state.on(trigger) {
            Ok(ShareState::Revoking) => {}
            Ok(other) => anyhow::bail!("{trigger:?} moves a share to {other}, not to revoking"),
            Err(refusal) => {
                discarded(share.id, &refusal);
                return Ok(None);
            }
        }
        let revoking = db::shares::start_revoke(tx, share.id, share.state, start).await?;
        if let Some(revoking) = &revoking {
            jobs::enqueue(tx, Kind::Revoke, revoking.id, revoking.image_id, Utc::now()).await?;
        }
        Ok(revoking)
    }

    /// Records one job's outcome inside `tx` (a granted member is already recorded, and
    /// `share` shows it), adding its audit events and acceptance checks to `settled`;
    /// returns how the job ends.
    async fn record_outcome(
        &self,
        tx: &mut sqlx::PgConnection,
        job: &Claimed,
        share: Share,
        request: &ShareRequest,
        result: Result<Effect, Failure>,
        settled: &mut Settled,
    ) -> anyhow::Result<Finish> {
        let now = Utc::now();
        let (kind, events) = (settled.kind, &mut settled.events);
        Ok(match result {
            Ok(Effect::Nothing) => Finish::Done,
            Ok(Effect::Expired) => {
                if let Some(share) = self.apply(tx, &share, Trigger::ExpireBeforeGrant, None).await? {
                    events.push(ShareEvent::new(share, Action::Expire, AuditOutcome::Success));
                }
                Finish::Done
            }
            Ok(Effect::Granted { accepted, .. }) => {
                if !accepted {
                    settled.polls.push((share.id, share.image_id));
                }
                // Who asked and who approved: what an access report answers with.
                events.push(ShareEvent {
                    details: json!({ "requested_by": request.requested_by, "approved_by": request.decided_by }),
                    ..ShareEvent::new(share.clone(), Action::Allow, AuditOutcome::Success)
                });
                if accepted {
                    events.push(ShareEvent {
                        details: json!({ "auto_accept": true }),
                        ..ShareEvent::new(share, Action::Accept, AuditOutcome::Success)
                    });
                }
                Finish::Done
            }
            // The poll started on a share awaiting the consumer; one that moved on needs none.
            Ok(Effect::StillPending | Effect::Seen(_)) if share.state != ShareState::PendingAcceptance => {
                tracing::info!(share.id = %share.id, state = %share.state, "the share moved on during the poll: its finding is discarded");
                Finish::Done
            }
            Ok(Effect::StillPending) => {
                let next = retry::poll_delay(
                    job.attempts - 1,
                    self.config.accept_poll_first,
                    self.config.accept_poll_max,
                );
                Finish::Later(now + next, None)
            }
            Ok(Effect::Seen(Seen::Rejected)) => {
                let start = RevokeStart {
                    by: &self.actor.name,
                    reason: REJECTED_BY_CONSUMER,
                    cause: RevokeCause::RejectedInGlance,
                    last_error: None,
                    dependents: None,
                };
                if let Some(share) = self.start_revoke(tx, &share, Trigger::Reject, start).await? {
                    events.push(ShareEvent {
                        details: json!({ "observed_in_glance": true }),
                        ..ShareEvent::new(share.clone(), Action::Reject, AuditOutcome::Success)
                    });
                    events.push(ShareEvent {
                        reason: share.revoke_reason.clone(),
                        ..ShareEvent::new(share, Action::Revoke, AuditOutcome::Pending)
                    });
                }
                Finish::Done
            }
            Ok(Effect::Seen(seen)) => {
                let (trigger, action) = match seen {
                    Seen::Accepted => (Trigger::Accept, Action::Accept),
                    Seen::MemberGone => (Trigger::MemberGoneOutside, Action::Revoke),
                    Seen::ImageGone => (Trigger::ImageGone, Action::Revoke),
                    Seen::Rejected => unreachable!("handled above"),
                };
                if let Some(share) = self.apply(tx, &share, trigger, None).await? {
                    events.push(ShareEvent {
                        details: json!({ "observed_in_glance": true }),
                        ..ShareEvent::new(share, action, AuditOutcome::Success)
                    });
                }
                Finish::Done
            }
            Ok(Effect::Accepted) => {
                if let Some(share) = self.apply(tx, &share, Trigger::Accept, None).await? {
                    events.push(ShareEvent::new(share, Action::Accept, AuditOutcome::Success));
                }
                Finish::Done
            }
            Ok(Effect::RejectAsked) => {
                let start = RevokeStart {
                    by: &self.actor.name,
                    reason: REJECTED_BY_CONSUMER,
                    cause: RevokeCause::Rejected,
                    last_error: None,
                    dependents: None,
                };
                if let Some(share) = self.start_revoke(tx, &share, Trigger::Reject, start).await? {
                    events.push(ShareEvent {
                        reason: share.revoke_reason.clone(),
                        ..ShareEvent::new(share, Action::Revoke, AuditOutcome::Pending)
                    });
                }
                Finish::Done
            }
            Ok(Effect::Removed(_)) if share.state != ShareState::Revoking => Finish::Done,
            Ok(Effect::Removed(confirm_at)) => Finish::Later(confirm_at, None),
            Ok(Effect::Revoked) => {
                self.record_revoked(tx, share, events).await?;
                Finish::Done
            }
            Err(failure) => self.record_error(tx, kind, job, share, failure, events).await?,
        })
    }

    /// Records that the member of a `revoking` share is gone: the share ends `revoked`, or
    /// `failed` when the revoke cleaned up after a failed grant; a rejection through the
    /// broker is recorded as done as well.
    async fn record_revoked(
        &self,
        tx: &mut sqlx::PgConnection,
        share: Share,
        events: &mut Vec<ShareEvent>,
    ) -> anyhow::Result<()> {
        let cause = db::shares::revocation(&mut *tx, share.id).await?.cause;
        let after_failed_grant = cause == Some(RevokeCause::FailedGrant);
        // A failed share shows why its grant failed.
        let last_error = share.revoke_reason.clone().filter(|_| after_failed_grant);
        let trigger = Trigger::MemberRemoved { after_failed_grant };
        let Some(share) = self.apply(tx, &share, trigger, last_error.as_deref()).await? else {
            return Ok(());
        };
        if after_failed_grant {
            events.push(ShareEvent {
                reason: share.revoke_reason.clone(),
                details: json!({ "member_removed": true }),
                ..ShareEvent::new(share, Action::Allow, AuditOutcome::Failure)
            });
            return Ok(());
        }
        if cause == Some(RevokeCause::Rejected) {
            events.push(ShareEvent::new(share.clone(), Action::Reject, AuditOutcome::Success));
        }
        let details = revoked_details(tx, &share, cause).await?;
        events.push(ShareEvent {
            reason: share.revoke_reason.clone(),
            details,
            ..ShareEvent::new(share, Action::Revoke, AuditOutcome::Success)
        });
        Ok(())
    }
}
