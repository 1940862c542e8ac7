//! Settling a share job whose OpenStack call failed: retried with backoff while its work is
//! still wanted, given up (grants and accepts) after a permanent error or the last try, never
//! given up (polls and revokes), and a revoke that keeps failing reported stalled once.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use super::ShareEvent;
use crate::db;
use crate::db::jobs::{Claimed, Finish, Kind};
use crate::db::shares::{RevokeStart, Share};
use crate::domain::{Action, Outcome as AuditOutcome};
use crate::domain::{RevokeCause, ShareState, Trigger};
use crate::openstack::CallError;
use crate::worker::share::Failure;
use crate::worker::{Worker, retry};

impl Worker {
    pub(super) async fn record_error(
        &self,
        tx: &mut sqlx::PgConnection,
        kind: Kind,
        job: &Claimed,
        share: Share,
        failure: Failure,
        events: &mut Vec<ShareEvent>,
    ) -> anyhow::Result<Finish> {
        let Failure {
            error,
            member_may_exist,
        } = failure;
        let message = error.to_string();
        let retry_after = match &error {
            CallError::Transient { retry_after, .. } => *retry_after,
            CallError::Permanent { .. } => None,
        };
        // The job's work is still wanted only while the share is where the job found it.
        let wanted = match kind {
            Kind::Grant => share.state.on(Trigger::StartGrant).is_ok(),
            Kind::Poll => share.state == ShareState::PendingAcceptance,
            Kind::Accept => share.state.on(Trigger::Accept).is_ok(),
            Kind::Revoke => share.state == ShareState::Revoking,
            Kind::Reject => false,
        };
        if !wanted {
            tracing::info!(error = %message, state = %share.state, "OpenStack call failed, but the share moved on: the job ends");
            return Ok(Finish::Done);
        }
        // Polls and revokes never give up; grants and accepts do, after a permanent error or
        // their last try.
        let gives_up = matches!(kind, Kind::Grant | Kind::Accept)
            && (!error.is_transient() || job.attempts >= self.config.max_attempts);
        tracing::warn!(error = %message, gives_up, "OpenStack call failed");
        let backoff = retry::next_delay(
            job.attempts - 1,
            self.config.retry_base,
            self.config.retry_max,
            retry_after,
            rand::random(),
        );
        let finish = match kind {
            Kind::Poll => {
                // Tracking never gives up: the next check may well succeed.
                let next = retry::poll_delay(
                    job.attempts - 1,
                    self.config.accept_poll_first,
                    self.config.accept_poll_max,
                );
                db::shares::note_error(&mut *tx, share.id, share.state, &message).await?;
                Finish::Later(Utc::now() + next.max(retry_after.unwrap_or_default()), Some(message))
            }
            Kind::Revoke => return self.revoke_failed(tx, job, share, error, backoff, events).await,
            _ if !gives_up => {
                db::shares::note_error(&mut *tx, share.id, share.state, &message).await?;
                Finish::Later(Utc::now() + backoff, Some(message))
            }
            Kind::Grant => {
                // An earlier try may have got as far as the add, too.
                let member_may_exist = member_may_exist || job.attempts > 1;
                let trigger = Trigger::GrantFailed { member_may_exist };
                if member_may_exist {
                    let reason = format!("the grant failed: {message}");
                    let start = RevokeStart {
                        by: &self.actor.name,
                        reason: &reason,
                        cause: RevokeCause::FailedGrant,
                        last_error: Some(&message),
                        dependents: None,
                    };
                    if let Some(share) = self.start_revoke(tx, &share, trigger, start).await? {
                        events.push(ShareEvent {
                            reason: share.revoke_reason.clone(),
                            ..ShareEvent::new(share, Action::Revoke, AuditOutcome::Pending)
                        });
                    }
                } else if let Some(share) = self.apply(tx, &share, trigger, Some(&message)).await? {
                    events.push(ShareEvent {
                        reason: Some(message.clone()),
                        ..ShareEvent::new(share, Action::Allow, AuditOutcome::Failure)
                    });
                }
                Finish::Failed(message)
            }
            _ => {
                if let Some(share) = db::shares::note_error(&mut *tx, share.id, share.state, &message).await? {
                    events.push(ShareEvent {
                        reason: Some(message.clone()),
                        ..ShareEvent::new(share, Action::Accept, AuditOutcome::Failure)
                    });
                }
                Finish::Failed(message)
            }
        };
        Ok(finish)
    }

    /// A revoke that failed is tried again, however it failed: with backoff after a transient
    /// error, and at the longest interval (`retry_max`) after a permanent one (a role taken
    /// from the broker, say, which an operator may give back); "already gone" is success and
    /// never comes here. It stays `revoking` with the error in `last_error`, and is reported
    /// stalled once (a `revoke` failure with `details.stalled`, announced as
    /// `share.revoke_stalled`) after `max_attempts` tries or `revoke_stalled_after`.
    async fn revoke_failed(
        &self,
        tx: &mut sqlx::PgConnection,
        job: &Claimed,
        share: Share,
        error: CallError,
        backoff: Duration,
        events: &mut Vec<ShareEvent>,
    ) -> anyhow::Result<Finish> {
        let message = error.to_string();
        let delay = if error.is_transient() {
            backoff
        } else {
            self.config.retry_max
        };
        let Some(share) = db::shares::note_error(&mut *tx, share.id, ShareState::Revoking, &message).await? else {
            return Ok(Finish::Done);
        };
        let revocation = db::shares::revocation(&mut *tx, share.id).await?;
        let limit = chrono::Duration::from_std(self.config.revoke_stalled_after).unwrap_or(chrono::Duration::MAX);
        let too_long = revocation.started_at.is_some_and(|at| Utc::now() - at >= limit);
        if revocation.stalled_at.is_none()
            && (job.attempts >= self.config.max_attempts || too_long)
            && let Some(stalled) = db::shares::mark_revoke_stalled(tx, share.id).await?
        {
            metrics::counter!("gsb_revoke_stalls_total").increment(1);
            tracing::error!(share.id = %share.id, attempts = job.attempts, error = %message, "a revoke is stalled: the member may still be in Glance; retrying");
            events.push(ShareEvent {
                reason: Some(message.clone()),
                details: json!({ "stalled": true, "attempts": job.attempts, "revoking_since": revocation.started_at }),
                ..ShareEvent::new(stalled, Action::Revoke, AuditOutcome::Failure)
            });
        }
        Ok(Finish::Later(Utc::now() + delay, Some(message)))
    }
}
