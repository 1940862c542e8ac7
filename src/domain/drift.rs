//! Drift: how Glance (and Keystone) can differ from what the broker recorded for an image, and
//! the one comparison that finds it. [`compare`] takes what the broker expects (its shares of
//! the image, the protection it set) and what Glance showed, and says what differs, what the
//! broker would repair under enforcement, which members it adopts, and which shares lost
//! their member or image (the poll's rule, [`Trigger::MemberGoneOutside`] and
//! [`Trigger::ImageGone`], applied by whoever sees it first). Pure: imports no axum, sqlx or
//! reqwest.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strum::{AsRefStr, Display, EnumString, IntoStaticStr, VariantArray};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ShareState, Trigger};

/// What differs between Glance and the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum DriftKind {
    /// A member in Glance with no live share: added outside the broker, or back after a revoke.
    UnmanagedMember,
    /// A granted share whose member is gone from Glance (removed outside the broker).
    MemberMissing,
    /// An accepted share whose member is `pending` or `rejected` in Glance.
    StatusChanged,
    /// The image of a live share is gone from Glance.
    ImageMissing,
    /// The image of a live share is not `active` (deactivated, or otherwise unusable).
    ImageInactive,
    /// The image of granted shares is not `shared` any more (its members are hidden).
    VisibilityChanged,
    /// The image's `protected` is not what the broker's deletion guard set.
    ProtectedChanged,
    /// The target project of a live share is gone from Keystone.
    ProjectMissing,
}

/// Whether a finding still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum FindingState {
    /// Seen by the last pass that looked.
    Open,
    /// No longer seen, repaired, or adopted.
    Resolved,
}

/// Whether a share in this state is undecided or in force: the SQL function `share_is_live`.
pub fn is_live(state: ShareState) -> bool {
    !matches!(
        state,
        ShareState::Denied
            | ShareState::Cancelled
            | ShareState::Expired
            | ShareState::Failed
            | ShareState::Revoked
            | ShareState::RemovedOutside
            | ShareState::ImageDeleted
            | ShareState::Invalid
    )
}

/// Whether the broker holds a member in Glance for a share in this state, and it must be there.
fn granted(state: ShareState) -> bool {
    matches!(state, ShareState::PendingAcceptance | ShareState::Accepted)
}

/// One of the broker's shares of the image: live ones, and those ended recently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareFacts {
    pub id: Uuid,
    pub project_id: Option<String>,
    pub state: ShareState,
}

/// The image as Glance showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub status: String,
    pub visibility: String,
    pub owner: Option<String>,
    pub protected: Option<bool>,
}

/// A member as Glance showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    pub project_id: String,
    pub status: String,
}

/// What the broker expects of the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub shares: Vec<ShareFacts>,
    /// The `protected` the deletion guard set and keeps, when it guards the image.
    pub protected: Option<bool>,
    /// Members found without a share are adopted rather than reported (the image's owner is
    /// one of the projects configured for adoption).
    pub adopt: bool,
}

/// What Glance and Keystone showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// `None`: Glance has no such image (or hides it from the broker).
    pub image: Option<ImageFacts>,
    /// `None`: not listed (the image is gone, or not `shared`, which hides its members).
    pub members: Option<Vec<MemberFacts>>,
    /// Projects of live shares that Keystone no longer has.
    pub missing_projects: Vec<String>,
}

/// One difference.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: DriftKind,
    pub project_id: Option<String>,
    pub share_id: Option<Uuid>,
    /// What was expected and what was found.
    pub details: Value,
}

/// What the broker does about a finding when enforcement is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// Remove a member no live share stands for (an audited revoke, reason `unapproved`).
    RemoveMember { project_id: String },
    /// Make the image `shared` again.
    RestoreVisibility,
    /// Put the image's `protected` back to what the deletion guard set.
    RestoreProtected { protected: bool },
}

/// A member to record as a share the broker did not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adoption {
    pub project_id: String,
    /// The share's state, as the member's status says: `pending_acceptance`, `accepted`,
    /// or `rejected` (which the broker then revokes, as every rejected share).
    pub state: ShareState,
}

/// What one comparison found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    pub findings: Vec<Finding>,
    /// The kinds the comparison could look for: an open finding of one of these kinds that
    /// is not in `findings` is no longer seen. (Members are not compared when Glance did not
    /// list them, so member findings are then neither seen nor resolved.)
    pub checked: Vec<DriftKind>,
    /// Repairs, applied only under enforcement, each with the kind it puts right.
    pub repairs: Vec<(DriftKind, Repair)>,
    pub adoptions: Vec<Adoption>,
    /// Shares that move on what was seen (the poll's rule), with the trigger.
    pub moves: Vec<(Uuid, Trigger)>,
}

impl Comparison {
    fn find(&mut self, kind: DriftKind, project_id: Option<&str>, share_id: Option<Uuid>, details: Value) {
        self.findings.push(Finding {
            kind,
            project_id: project_id.map(str::to_owned),
            share_id,
            details,
        });
    }
}

/// The member status an adopted share's state follows; `None` for a status Glance does not have.
fn adopted_state(status: &str) -> Option<ShareState> {
    match status {
        "pending" => Some(ShareState::PendingAcceptance),
        "accepted" => Some(ShareState::Accepted),
        "rejected" => Some(ShareState::Rejected),
        _ => None,
    }
}

/// Compares what the broker expects of one image with what Glance and Keystone showed.
pub fn compare(expected: &Expected, observed: &Observed) -> Comparison {
    use DriftKind::*;
    let mut out = Comparison::default();
    let live: Vec<&ShareFacts> = expected.shares.iter().filter(|s| is_live(s.state)).collect();
    let Some(image) = &observed.image else {
        out.checked = vec![ImageMissing];
        if !live.is_empty() {
            let ids: Vec<Uuid> = live.iter().map(|s| s.id).collect();
            out.find(ImageMissing, None, None, json!({ "live_shares": ids }));
        }
        out.moves = live
            .iter()
            .filter(|s| granted(s.state))
            .map(|s| (s.id, Trigger::ImageGone))
            .collect();
        return out;
    };
    out.checked = vec![
        ImageMissing,
        ImageInactive,
        VisibilityChanged,
        ProtectedChanged,
        ProjectMissing,
    ];
    if !live.is_empty() && image.status != "active" {
        out.find(
            ImageInactive,
            None,
            None,
            json!({ "expected": "active", "found": image.status }),
        );
    }
    let holds_members = live.iter().any(|s| granted(s.state) || s.state == ShareState::Rejected);
    if holds_members && image.visibility != "shared" {
        out.find(
            VisibilityChanged,
            None,
            None,
            json!({ "expected": "shared", "found": image.visibility }),
        );
        out.repairs.push((VisibilityChanged, Repair::RestoreVisibility));
    }
    if let Some(protected) = expected.protected
        && image.protected != Some(protected)
    {
        out.find(
            ProtectedChanged,
            None,
            None,
            json!({ "expected": protected, "found": image.protected }),
        );
        out.repairs
            .push((ProtectedChanged, Repair::RestoreProtected { protected }));
    }
    for share in &live {
        if let Some(project) = &share.project_id
            && observed.missing_projects.contains(project)
        {
            out.find(
                ProjectMissing,
                Some(project),
                Some(share.id),
                json!({ "state": share.state }),
            );
        }
    }
    if let Some(members) = &observed.members {
        compare_members(expected, &live, members, &mut out);
    }
    out
}

/// The member kinds: each member against the live share of its project, and each granted
/// share against its member.
fn compare_members(expected: &Expected, live: &[&ShareFacts], members: &[MemberFacts], out: &mut Comparison) {
    use DriftKind::*;
    out.checked.extend([UnmanagedMember, MemberMissing, StatusChanged]);
    fn of_project<'a>(expected: &'a Expected, project: &'a str) -> impl Iterator<Item = &'a ShareFacts> {
        expected
            .shares
            .iter()
            .filter(move |s| s.project_id.as_deref() == Some(project))
    }
    for member in members {
        let project = member.project_id.as_str();
        // Any live share stands for the member, grants in flight (`queued`, `granting`) and
        // revokes under way included: those are the jobs' business, not drift.
        match of_project(expected, project).find(|s| is_live(s.state)) {
            None => {
                let ended = of_project(expected, project).next();
                match (expected.adopt, ended, adopted_state(&member.status)) {
                    (true, None, Some(state)) => out.adoptions.push(Adoption {
                        project_id: project.to_owned(),
                        state,
                    }),
                    _ => {
                        let details =
                            json!({ "member_status": member.status, "ended_share_state": ended.map(|s| s.state) });
                        out.find(UnmanagedMember, Some(project), ended.map(|s| s.id), details);
                        out.repairs.push((
                            UnmanagedMember,
                            Repair::RemoveMember {
                                project_id: project.to_owned(),
                            },
                        ));
                    }
                }
            }
            Some(share) if share.state == ShareState::Accepted && member.status != "accepted" => {
                let details = json!({ "expected": "accepted", "found": member.status });
                out.find(StatusChanged, Some(project), Some(share.id), details);
            }
            Some(_) => {}
        }
    }
    let has_member = |project: &str| members.iter().any(|m| m.project_id == project);
    for share in &expected.shares {
        let Some(project) = share.project_id.as_deref() else {
            continue;
        };
        if has_member(project) {
            continue;
        }
        if live.iter().any(|s| s.id == share.id) && granted(share.state) {
            out.find(
                MemberMissing,
                Some(project),
                Some(share.id),
                json!({ "state": share.state }),
            );
            out.moves.push((share.id, Trigger::MemberGoneOutside));
        } else if share.state == ShareState::RemovedOutside
            && !live.iter().any(|s| s.project_id.as_deref() == Some(project))
        {
            // Recorded as removed outside (by the poll or an earlier pass): still missing, one
            // finding, kept open while the share is among the recently ended.
            out.find(
                MemberMissing,
                Some(project),
                Some(share.id),
                json!({ "state": share.state }),
            );
        }
    }
}

#[cfg(test)]
#[path = "drift_tests.rs"]
mod tests;
