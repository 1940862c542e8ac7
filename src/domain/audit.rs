//! Who did something, as the audit log records it.

use serde::Serialize;

use super::Principal;
use super::principal::Credential;

/// The party behind an action: a caller of the API, or the broker itself.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Initiator {
    /// `api_key`, `keystone_user` or `service` (the broker's own worker, expiry, ...).
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// A Keystone user's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The Keystone project a token is scoped to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The end user a service's key acts for (`X-On-Behalf-Of`), as the service names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

impl Initiator {
    pub fn caller(
        principal: &Principal,
        on_behalf_of: Option<String>,
        address: Option<String>,
        user_agent: Option<String>,
    ) -> Self {
        let (kind, user_id, project) = match &principal.credential {
            Credential::ApiKey { .. } => ("api_key", None, None),
            Credential::Keystone(k) => ("keystone_user", Some(k.user_id.clone()), k.project_id.clone()),
        };
        let name = match &principal.credential {
            Credential::Keystone(k) => k.user_name.clone(),
            Credential::ApiKey { .. } => principal.name.clone(),
        };
        Initiator {
            kind,
            name,
            role: Some(principal.role_names()),
            address,
            user_agent,
            user_id,
            project,
            on_behalf_of,
        }
    }

    /// The broker acting on its own (the worker, the expiry sweep).
    pub fn service(name: &str) -> Self {
        Initiator {
            kind: "service",
            name: name.to_owned(),
            role: None,
            address: None,
            user_agent: None,
            user_id: None,
            project: None,
            on_behalf_of: None,
        }
    }
}
