//! The deletion guard: while an image has a live share the broker keeps Glance's `protected`
//! on, so that its owner cannot delete it by accident (Glance answers the delete 403) and break
//! the consumers' servers; after the last share ends it puts back the value it found. Done by
//! the jobs on the image (which run one at a time): a grant guards the image before it adds the
//! first member; the revoke (or the poll that finds the member gone) of the last share holding a
//! member lifts the guard. Each write to Glance comes after the fence, and is remembered in a
//! short transaction under the lease with its audit event (`update/protect`,
//! `update/unprotect`); each step is safe to repeat after a crash. The broker does not fight
//! an owner who unprotects a guarded image: it records it once (audit, and
//! `image_guards.unprotected_outside_at`) and leaves the flag as the owner set it.

use serde_json::json;
use uuid::Uuid;

use super::Worker;
use crate::db;
use crate::db::image_guards::Guard;
use crate::db::jobs::Claimed;
use crate::db::shares::Share;
use crate::domain::{Action, Outcome as AuditOutcome};
use crate::openstack::CallError;
use crate::openstack::glance::Image;

impl Worker {
    /// Whether new grants guard their image: GSB_PROTECT_SHARED_IMAGES and the policy's
    /// `protect_shared_images` both allow it. (A guard already set is lifted either way.)
    pub(super) fn guards_images(&self) -> bool {
        self.config.protect_images && self.config.policy.current().protects_shared_images()
    }

    /// Makes sure `image` (as just read) is protected before a member of `share`'s grant is
    /// added. The outer error is ours (database, lost lease); the inner one Glance's.
    pub(super) async fn guard(
        &self,
        held: &[Claimed],
        share: &Share,
        image: &Image,
        rid: &str,
    ) -> anyhow::Result<Result<(), CallError>> {
        let guard = match db::image_guards::find(&self.pool, share.image_id, &share.region).await? {
            Some(guard) if guard.protected_at.is_some() => {
                if !image.protected {
                    self.note_unprotected_outside(held, share, &guard, rid).await?;
                }
                return Ok(Ok(()));
            }
            Some(guard) => guard,
            None if !self.guards_images() => return Ok(Ok(())),
            None => {
                // Remembered first: a crash right after the change must not lose the value found.
                let mut tx = self.lease_tx(held).await?;
                let guard = db::image_guards::remember(&mut tx, share.image_id, &share.region, image.protected).await?;
                tx.commit().await?;
                guard
            }
        };
        if !image.protected {
            self.fence(held).await?;
            if let Err(e) = self.cloud.set_protected(&image.id, true, rid).await {
                return Ok(Err(e));
            }
        }
        let mut tx = self.lease_tx(held).await?;
        if db::image_guards::mark_protected(&mut tx, share.image_id, &share.region).await? {
            let event = crate::db::audit::NewEvent {
                details: json!({
                    "protected": { "from": image.protected, "to": true },
                    "found": guard.found_protected,
                }),
                ..self.event(share, Action::Protect, AuditOutcome::Success, rid)
            };
            crate::events::record(&mut tx, &self.config.instance, event).await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// The owner (or someone) unprotected a guarded image: recorded once, not undone.
    async fn note_unprotected_outside(
        &self,
        held: &[Claimed],
        share: &Share,
        guard: &Guard,
        rid: &str,
    ) -> anyhow::Result<()> {
        let mut tx = self.lease_tx(held).await?;
        if db::image_guards::note_unprotected_outside(&mut tx, share.image_id, &share.region).await? {
            metrics::counter!("gsb_guards_unprotected_outside_total").increment(1);
            tracing::warn!(image.id = %share.image_id, "a guarded image was unprotected outside the broker: left as it is");
            let event = crate::db::audit::NewEvent {
                reason: Some("the image was unprotected outside the broker while shared; the broker leaves it so"),
                details: json!({
                    "protected": { "expected": true, "seen": false },
                    "found": guard.found_protected,
                    "changed_outside": true,
                }),
                ..self.event(share, Action::Protect, AuditOutcome::Failure, rid)
            };
            crate::events::record(&mut tx, &self.config.instance, event).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Lifts the guard of `share`'s image once no share but those in `ending` holds a member:
    /// puts back `protected: false` if that is what the broker found (an image found protected
    /// stays so). A deleted image, or one unprotected outside, needs no write.
    pub(super) async fn release_guard(
        &self,
        held: &[Claimed],
        share: &Share,
        ending: &[Uuid],
        rid: &str,
    ) -> anyhow::Result<Result<(), CallError>> {
        let Some(guard) = db::image_guards::find(&self.pool, share.image_id, &share.region).await? else {
            return Ok(Ok(()));
        };
        if db::image_guards::holders_besides(&self.pool, share.image_id, &share.region, ending).await? > 0 {
            return Ok(Ok(()));
        }
        let seen = match self.cloud.image(&share.image_id.to_string(), rid).await {
            Ok(image) => image.map(|i| i.protected),
            Err(e) => return Ok(Err(e)),
        };
        let restore = !guard.found_protected && seen == Some(true);
        if restore {
            self.fence(held).await?;
            if let Err(e) = self.cloud.set_protected(&share.image_id.to_string(), false, rid).await {
                return Ok(Err(e));
            }
        }
        let mut tx = self.lease_tx(held).await?;
        // Another pass lifted it first, or the image was never protected (its grant failed
        // before): nothing to record.
        if let Some(guard) = db::image_guards::release(&mut tx, share.image_id, &share.region).await?
            && guard.protected_at.is_some()
        {
            let event = crate::db::audit::NewEvent {
                details: json!({
                    "protected": { "from": seen, "to": if restore { Some(false) } else { seen } },
                    "found": guard.found_protected,
                    "changed_outside": guard.unprotected_outside_at.is_some() || (guard.found_protected && seen == Some(false)),
                    "image_deleted": seen.is_none(),
                }),
                ..self.event(share, Action::Unprotect, AuditOutcome::Success, rid)
            };
            crate::events::record(&mut tx, &self.config.instance, event).await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }
}
