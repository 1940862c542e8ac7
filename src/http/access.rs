//! Who may see and change which request or share. Another project's resource is answered
//! 404, as if it did not exist, so ids do not leak; every refused write is recorded in the
//! audit log, in a transaction of its own (the write's own transaction is rolled back).

use serde_json::json;

use super::extract::Caller;
use super::{ApiError, AppState};
use crate::db::audit::NewEvent;
use crate::db::share_requests::ShareRequest;
use crate::db::shares::{Share, Viewer};

use crate::domain::{Action, Capability, Credential, Outcome, Principal};
use crate::openstack::CallError;

/// What a principal may list: `None` when it sees everything.
pub fn viewer(principal: &Principal) -> Option<Viewer> {
    principal.readable().map(|r| Viewer {
        name: principal.name.clone(),
        projects: r.projects,
        domains: r.domains,
    })
}

fn owner(request: &ShareRequest) -> (Option<&str>, Option<&str>) {
    (request.image_owner.as_deref(), request.image_owner_domain.as_deref())
}

pub fn sees_request(principal: &Principal, request: &ShareRequest) -> bool {
    principal.sees_request(owner(request), &request.requested_by)
}

pub fn sees_share(principal: &Principal, share: &Share, request: &ShareRequest) -> bool {
    principal.sees_share(
        (share.project_id.as_deref(), share.project_domain.as_deref()),
        owner(request),
        &request.requested_by,
    )
}

impl AppState {
    /// Records that `caller` was refused `attempt` (outcome `failure`, reason `forbidden`)
    /// and returns `error` to answer with. A failure to record is logged: the write did not
    /// happen either way.
    pub(super) async fn refused(&self, caller: &Caller, attempt: NewEvent<'_>, error: ApiError) -> ApiError {
        let event = NewEvent {
            outcome: Outcome::Failure,
            correlation_id: caller.request_id.as_deref(),
            details: json!({ "reason": "forbidden", "detail": error.to_string() }),
            ..attempt
        };
        let recorded = async {
            let mut tx = self.pool.begin().await?;
            crate::events::record(&mut tx, &self.config.instance, event).await?;
            tx.commit().await
        };
        if let Err(e) = recorded.await {
            tracing::error!(error = %e, "recording a refused write in the audit log failed");
        }
        error
    }

    /// Refuses (and records) `action` unless the caller holds `capability` for some project.
    pub(super) async fn require(
        &self,
        caller: &Caller,
        capability: Capability,
        action: Action,
        request_id: Option<uuid::Uuid>,
    ) -> Result<(), ApiError> {
        match caller.require(capability) {
            Ok(()) => Ok(()),
            Err(error) => {
                let attempt = NewEvent {
                    request_id,
                    ..NewEvent::attempt(&caller.initiator, action)
                };
                Err(self.refused(caller, attempt, error).await)
            }
        }
    }

    /// The project owning `image_id` when the caller may file requests for it. Callers that may
    /// request for any project are not checked (the owner is learned later); others must act
    /// for the project Glance names as the image's `owner`.
    pub(super) async fn requestable_owner(
        &self,
        caller: &Caller,
        image_id: uuid::Uuid,
    ) -> Result<Option<String>, ApiError> {
        let Some(projects) = caller.principal.projects_for(Capability::Request) else {
            return Ok(None);
        };
        let cloud = self.cloud.as_ref().ok_or_else(|| {
            ApiError::Upstream(
                "checking who owns the image needs the broker's OpenStack cloud, and none is configured".into(),
            )
        })?;
        let rid = caller
            .request_id
            .clone()
            .unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4()));
        let owner = cloud
            .image(&image_id.to_string(), &rid)
            .await
            .map_err(|e| ApiError::openstack("Glance cannot say who owns the image now", e))?
            .and_then(|i| i.owner);
        match owner {
            Some(owner) if projects.contains(&owner) => Ok(Some(owner)),
            // The same answer whether the image is missing or another project's: ids do not leak.
            _ => {
                let attempt = NewEvent {
                    image_id: Some(image_id),
                    ..NewEvent::attempt(&caller.initiator, Action::Create)
                };
                let error = ApiError::Forbidden(format!(
                    "image {image_id} is not owned by a project you act for ({})",
                    projects.join(", ")
                ));
                Err(self.refused(caller, attempt, error).await)
            }
        }
    }

    /// The domains whose projects the caller may name as targets by name: those of the
    /// projects it requests for (a Keystone token's domain; a restricted key's projects'
    /// domains); `None` for a caller that requests for any project (the whole cloud).
    pub(super) async fn target_domains(&self, caller: &Caller) -> Result<Option<Vec<String>>, ApiError> {
        let Some(projects) = caller.principal.projects_for(Capability::Request) else {
            return Ok(None);
        };
        let mut domains: Vec<String> = Vec::new();
        for project in &projects {
            let known = match &caller.principal.credential {
                Credential::Keystone(k) if k.project_id.as_deref() == Some(project.as_str()) => {
                    k.project_domain_id.clone()
                }
                _ => None,
            };
            let domain = match known {
                Some(domain) => Some(domain),
                None => self.project_domain(project).await?,
            };
            if let Some(domain) = domain
                && !domains.contains(&domain)
            {
                domains.push(domain);
            }
        }
        Ok(Some(domains))
    }

    /// The domain of a project a key acts for (`None` when Keystone has no such project).
    async fn project_domain(&self, project: &str) -> Result<Option<String>, ApiError> {
        let cloud = self.cloud.as_ref().ok_or_else(|| {
            ApiError::Upstream(
                "finding the caller's domain needs the broker's OpenStack cloud, and none is configured".into(),
            )
        })?;
        let rid = format!("req-{}", uuid::Uuid::new_v4());
        match cloud.project(project, &rid).await {
            Ok(found) => Ok(found.map(|p| p.domain_id)),
            Err(CallError::Transient { message, .. }) => Err(ApiError::Upstream(format!(
                "Keystone cannot say which domain the caller's project is in now ({message}); retry later"
            ))),
            Err(e) => Err(ApiError::Internal(anyhow::anyhow!("looking up project {project}: {e}"))),
        }
    }
}
