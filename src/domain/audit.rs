//! Who did something, as the audit log records it.

use serde::Serialize;

use super::Principal;

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
}

impl Initiator {
    pub fn caller(principal: &Principal, address: Option<String>, user_agent: Option<String>) -> Self {
        Initiator {
            kind: "api_key",
            name: principal.name.clone(),
            role: Some(principal.role.to_string()),
            address,
            user_agent,
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
        }
    }
}
