//! Callers' Keystone tokens (`X-Auth-Token`): validated against Keystone with the broker's
//! own token, and the answer kept briefly, keyed by the token's SHA-256 (never the token).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::domain::{KeystoneIdentity, Principal, RoleMap};
use crate::openstack::{CallError, OpenStack};

/// Most tokens remembered at once; past it, the cache starts over.
const MAX_ENTRIES: usize = 10_000;

/// Validates callers' tokens, remembering each answer for a short while.
#[derive(Clone)]
pub struct TokenValidator {
    cloud: Option<OpenStack>,
    roles: Arc<RoleMap>,
    ttl: Duration,
    cache: Arc<Mutex<HashMap<[u8; 32], Cached>>>,
}

struct Cached {
    principal: Principal,
    until: DateTime<Utc>,
}

impl TokenValidator {
    /// `cloud` is the broker's own client; without one, tokens are refused with a clear problem.
    pub fn new(cloud: Option<OpenStack>, roles: RoleMap, ttl: Duration) -> Self {
        TokenValidator {
            cloud,
            roles: Arc::new(roles),
            ttl,
            cache: Arc::default(),
        }
    }

    /// The principal holding `token`, or 401 when Keystone does not know it.
    pub async fn principal(&self, token: &str, request_id: &str) -> Result<Principal, ApiError> {
        let cloud = self.cloud.as_ref().ok_or(ApiError::Unauthorized(
            "Keystone authentication is not configured on this broker (no OpenStack cloud); use an API key",
        ))?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Utc::now();
        if let Some(hit) = self.lock().get(&key).filter(|c| c.until > now) {
            return Ok(hit.principal.clone());
        }
        let holder = match cloud.validate_token(token, request_id).await {
            Ok(Some(holder)) => holder,
            Ok(None) => return Err(ApiError::Unauthorized("the Keystone token is invalid or expired")),
            Err(CallError::Transient { message, .. }) => {
                return Err(ApiError::Upstream(format!(
                    "Keystone cannot validate the token now ({message}); retry later"
                )));
            }
            Err(e) => return Err(ApiError::Internal(anyhow::anyhow!("validating a caller's token: {e}"))),
        };
        let until = holder.expires_at.min(now + self.ttl);
        let principal = Principal::keystone(
            KeystoneIdentity {
                user_id: holder.user_id,
                user_name: holder.user_name,
                project_id: holder.project_id,
                project_domain_id: holder.project_domain_id,
                roles: holder.roles,
            },
            &self.roles,
        );
        let mut cache = self.lock();
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                principal: principal.clone(),
                until,
            },
        );
        Ok(principal)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Cached>> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
