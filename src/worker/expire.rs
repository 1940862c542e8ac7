//! The expiry sweep: starts revoking shares whose request expired, whose scheduled revoke
//! came due (and shares seen `rejected` in Glance before rejections removed the member),
//! gives notice of expiries to come (`share.expiring`, once per share), expires undecided
//! requests, and keeps the `gsb_revokes_stalled` gauge. Run by the sweeper loop (`run.rs`);
//! several sweeps at once skip each other's shares (`skip locked`), and every move is
//! guarded by the state it starts from.

use chrono::Utc;

use super::Worker;
use crate::db;
use crate::db::audit::NewEvent;
use crate::db::jobs::{self, Kind};
use crate::db::shares::RevokeStart;
use crate::domain::{Action, Outcome as AuditOutcome};
use crate::domain::{Initiator, REJECTED_BY_CONSUMER, RequestStatus, RevokeCause, ShareState, Trigger};

impl Worker {
    /// Starts revoking shares whose request expired or whose scheduled revoke is due, and
    /// shares seen `rejected` before rejections removed the member; gives notice of expiries
    /// to come; expires undecided requests; and sets the `gsb_revokes_stalled` gauge. A share
    /// being revoked already is left to that revoke. Returns how many revokes and request
    /// expiries it started (notices not counted).
    pub async fn sweep_expired(&self) -> anyhow::Result<usize> {
        let expiry = Initiator::service("expiry");
        let mut tx = self.pool.begin().await?;
        let instance = self.config.instance.as_str();
        let expired = db::shares::expired_in_force(&mut tx, 100).await?;
        let rejected = db::shares::rejected_with_member(&mut tx, 100).await?;
        let due = db::shares::due_scheduled_revokes(&mut tx, 100).await?;
        let by_expiry = RevokeStart {
            by: "expiry",
            reason: "the share expired",
            cause: RevokeCause::Expiry,
            last_error: None,
            dependents: None,
        };
        let by_rejection = RevokeStart {
            by: &self.actor.name,
            reason: REJECTED_BY_CONSUMER,
            cause: RevokeCause::RejectedInGlance,
            last_error: None,
            dependents: None,
        };
        // A scheduled revoke is carried out as scheduled: by whom and why it was asked.
        fn scheduled(s: &db::shares::Share) -> RevokeStart<'_> {
            RevokeStart {
                by: s.revoked_by.as_deref().unwrap_or("schedule"),
                reason: s.revoke_reason.as_deref().unwrap_or("a scheduled revoke"),
                cause: RevokeCause::Scheduled,
                last_error: None,
                dependents: None,
            }
        }
        let schedule = Initiator::service("schedule");
        let starts = (expired.iter().map(|s| (s, &expiry, Trigger::Revoke, by_expiry)))
            .chain(
                rejected
                    .iter()
                    .map(|s| (s, &*self.actor, Trigger::Reject, by_rejection)),
            )
            .chain(due.iter().map(|s| (s, &schedule, Trigger::Revoke, scheduled(s))));
        let mut started = 0;
        for (share, initiator, trigger, start) in starts {
            // The queries pick states a revoke may start from; a share picked twice (expired
            // and rejected) is started once, by the guard.
            if share.state.on(trigger) != Ok(ShareState::Revoking) {
                continue;
            }
            let Some(share) = db::shares::start_revoke(&mut tx, share.id, share.state, start).await? else {
                continue;
            };
            let event = NewEvent {
                reason: share.revoke_reason.as_deref(),
                ..NewEvent::about_share(initiator, &share, Action::Revoke, AuditOutcome::Pending)
            };
            crate::events::record(&mut tx, instance, event).await?;
            jobs::enqueue(&mut tx, Kind::Revoke, share.id, share.image_id, Utc::now()).await?;
            started += 1;
        }
        self.give_expiry_notice(&mut tx).await?;
        let wait = self.config.policy.current().expire_undecided_after;
        let requests = db::share_requests::undecided_past_expiry(&mut tx, 100, wait).await?;
        for id in &requests {
            let (request, _) = db::share_requests::decide(&mut tx, *id, RequestStatus::Expired, "expiry", None).await?;
            crate::events::record(
                &mut tx,
                instance,
                NewEvent::about_request(&expiry, &request, Action::Expire),
            )
            .await?;
        }
        tx.commit().await?;
        let stalled = db::shares::stalled_revokes(&self.pool).await?;
        metrics::gauge!("gsb_revokes_stalled").set(stalled as f64);
        Ok(started + requests.len())
    }

    /// Records a `share.expiring` notice for each share in force whose request expires within
    /// `expiry_notice` (none when it is zero): once per share, marked in the same transaction.
    async fn give_expiry_notice(&self, tx: &mut sqlx::PgConnection) -> anyhow::Result<usize> {
        if self.config.expiry_notice.is_zero() {
            return Ok(0);
        }
        let expiry = Initiator::service("expiry");
        let noticed = db::shares::take_expiry_notices(tx, self.config.expiry_notice, 100).await?;
        for (share, expires_at) in &noticed {
            let event = NewEvent {
                details: serde_json::json!({ "notice": true, "expires_at": expires_at }),
                ..NewEvent::about_share(&expiry, share, Action::Expire, AuditOutcome::Pending)
            };
            crate::events::record(tx, &self.config.instance, event).await?;
        }
        Ok(noticed.len())
    }
}
