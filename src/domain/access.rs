//! Who had access to an image at a moment, replayed from the grants, status changes and
//! revokes the audit log recorded up to it. Pure: the caller reads the events, in chain
//! order, and feeds them in.
//!
//! Access begins with a grant (the member was created in Glance: even a pending member can
//! use the image) and ends with a revoke (the broker removed the member, or saw it or the
//! image gone). Accepting and rejecting change only the member's status.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::audit::Action;

/// What one event did to a project's access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Granted,
    Accepted,
    Rejected,
    Revoked,
}

impl Change {
    /// The audit actions that grant, change or end access.
    pub const ACTIONS: [Action; 4] = [Action::Allow, Action::Accept, Action::Reject, Action::Revoke];

    /// The change an audit action (as stored) makes; none for the actions that do not touch
    /// access, and for text that names no action.
    pub fn of_action(action: &str) -> Option<Change> {
        match action.parse().ok()? {
            Action::Allow => Some(Change::Granted),
            Action::Accept => Some(Change::Accepted),
            Action::Reject => Some(Change::Rejected),
            Action::Revoke => Some(Change::Revoked),
            _ => None,
        }
    }

    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Granted => "granted",
            Change::Accepted => "accepted",
            Change::Rejected => "rejected",
            Change::Revoked => "revoked",
        }
    }
}

/// One project's access to an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProjectAccess {
    pub project_id: String,
    pub region: String,
    /// When the member was created in Glance: the grant this access comes from.
    pub since: DateTime<Utc>,
    /// The consumer's answer then: `pending`, `accepted` or `rejected`. Each gives access
    /// (Glance lets any member use the image by id); `accepted` also lists it.
    pub member_status: String,
    pub share_id: Option<Uuid>,
    pub request_id: Option<Uuid>,
    /// Who filed the request the grant carried out.
    pub requested_by: Option<String>,
    /// Who approved it.
    pub approved_by: Option<String>,
}

/// One change of a project's access to an image, as the replay reads it.
#[derive(Debug, Clone)]
pub struct AccessEvent {
    pub change: Change,
    pub at: DateTime<Utc>,
    pub project_id: String,
    pub region: String,
    pub share_id: Option<Uuid>,
    pub request_id: Option<Uuid>,
    /// For a grant: who filed the request, and who approved it.
    pub requested_by: Option<String>,
    pub approved_by: Option<String>,
}

/// The projects with access so far, by region and project id.
#[derive(Debug, Default)]
pub struct Replay(BTreeMap<(String, String), ProjectAccess>);

impl Replay {
    /// Applies the next event, in the order the log holds them.
    pub fn apply(&mut self, event: AccessEvent) {
        let key = (event.region, event.project_id);
        let status = match event.change {
            Change::Granted => {
                let (region, project_id) = key.clone();
                let access = ProjectAccess {
                    project_id,
                    region,
                    since: event.at,
                    member_status: "pending".into(),
                    share_id: event.share_id,
                    request_id: event.request_id,
                    requested_by: event.requested_by,
                    approved_by: event.approved_by,
                };
                self.0.insert(key, access);
                return;
            }
            Change::Revoked => {
                self.0.remove(&key);
                return;
            }
            Change::Accepted => "accepted",
            Change::Rejected => "rejected",
        };
        if let Some(access) = self.0.get_mut(&key) {
            access.member_status = status.into();
        }
    }

    /// The projects with access after the events applied, by region and project id.
    pub fn projects(self) -> Vec<ProjectAccess> {
        self.0.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(change: Change, project: &str, minute: u32) -> AccessEvent {
        AccessEvent {
            change,
            at: DateTime::from_timestamp(i64::from(minute) * 60, 0).unwrap(),
            project_id: project.into(),
            region: "RegionOne".into(),
            share_id: None,
            request_id: None,
            requested_by: Some("portal".into()),
            approved_by: Some("dave".into()),
        }
    }

    fn replay(events: impl IntoIterator<Item = AccessEvent>) -> Vec<(String, String, i64)> {
        let mut replay = Replay::default();
        events.into_iter().for_each(|e| replay.apply(e));
        replay
            .projects()
            .into_iter()
            .map(|p| (p.project_id, p.member_status, p.since.timestamp() / 60))
            .collect()
    }

    #[test]
    fn access_runs_from_the_grant_to_the_revoke_whatever_the_consumer_answered() {
        use Change::*;
        let granted = replay([event(Granted, "b", 1), event(Granted, "c", 2), event(Rejected, "c", 3)]);
        assert_eq!(
            granted,
            [("b".into(), "pending".into(), 1), ("c".into(), "rejected".into(), 2)]
        );
        let revoked = replay([event(Granted, "b", 1), event(Accepted, "b", 2), event(Revoked, "b", 3)]);
        assert!(revoked.is_empty());
    }

    #[test]
    fn a_grant_after_a_revoke_starts_access_again_and_answers_without_a_grant_are_ignored() {
        use Change::*;
        let regranted = replay([
            event(Accepted, "b", 0),
            event(Granted, "b", 1),
            event(Revoked, "b", 2),
            event(Granted, "b", 5),
        ]);
        assert_eq!(regranted, [("b".into(), "pending".into(), 5)]);
    }

    #[test]
    fn every_access_action_has_its_change_and_no_other_action_has_one() {
        for action in Change::ACTIONS {
            assert!(Change::of_action(action.as_ref()).is_some(), "{action}");
        }
        assert_eq!(Change::of_action("update/approve"), None);
    }
}
