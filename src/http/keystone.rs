//! Callers' Keystone tokens (`X-Auth-Token`) and the users named in `X-On-Behalf-Of`, both
//! looked up in Keystone with the broker's own token. Answers are kept briefly in bounded
//! caches, keyed by the token's SHA-256 (never the token); an invalid token is remembered
//! too, so junk does not reach Keystone on every call; concurrent misses for one key make
//! one call to Keystone (single flight).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use moka::Expiry;
use moka::future::Cache;
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::domain::{Principal, RoleMap};
use crate::openstack::keystone::User;
use crate::openstack::{CallError, OpenStack};

/// Most tokens, and most user names, remembered at once; past it the least used go first.
const MAX_ENTRIES: u64 = 10_000;

/// How long the broker trusts what Keystone said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTimes {
    /// A valid token (never past its own expiry), and a resolved `X-On-Behalf-Of`.
    pub valid: Duration,
    /// An invalid token, and an `X-On-Behalf-Of` that names no user.
    pub invalid: Duration,
}

/// Validates callers' tokens and resolves the users services act for, remembering each answer
/// for a short while.
#[derive(Clone)]
pub struct TokenValidator {
    cloud: Option<OpenStack>,
    roles: Arc<RoleMap>,
    times: CacheTimes,
    tokens: Cache<[u8; 32], Remembered<Option<Principal>>>,
    users: Cache<String, Remembered<Resolution>>,
}

/// An answer and how long it may be kept.
#[derive(Clone)]
struct Remembered<T> {
    value: T,
    lifetime: Duration,
}

struct Lifetime;

impl<K, T> Expiry<K, Remembered<T>> for Lifetime {
    fn expire_after_create(&self, _: &K, value: &Remembered<T>, _: Instant) -> Option<Duration> {
        Some(value.lifetime)
    }
}

/// What an `X-On-Behalf-Of` value stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolution {
    User(User),
    NoUser,
    Disabled,
    /// Several users in different domains have this name.
    Ambiguous(usize),
}

fn cache<K, T>() -> Cache<K, Remembered<T>>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    Cache::builder()
        .max_capacity(MAX_ENTRIES)
        .expire_after(Lifetime)
        .build()
}

/// Keystone did not answer: shared by every caller waiting on the same look-up, never kept.
#[derive(Debug)]
struct Unanswered {
    what: &'static str,
    error: CallError,
}

impl Unanswered {
    fn api_error(&self) -> ApiError {
        match &self.error {
            CallError::Transient { message, .. } => {
                ApiError::Upstream(format!("Keystone cannot {} now ({message}); retry later", self.what))
            }
            e => ApiError::Internal(anyhow::anyhow!("Keystone: {}: {e}", self.what)),
        }
    }
}

impl TokenValidator {
    /// `cloud` is the broker's own client; without one, tokens are refused with a clear problem.
    pub fn new(cloud: Option<OpenStack>, roles: RoleMap, times: CacheTimes) -> Self {
        TokenValidator {
            cloud,
            roles: Arc::new(roles),
            times,
            tokens: cache(),
            users: cache(),
        }
    }

    /// The principal holding `token`, or 401 when Keystone does not know it.
    pub async fn principal(&self, token: &str, request_id: &str) -> Result<Principal, ApiError> {
        let cloud = self.cloud.as_ref().ok_or(ApiError::Unauthorized(
            "Keystone authentication is not configured on this broker (no OpenStack cloud); use an API key",
        ))?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let ask = async {
            let holder = match cloud.validate_token(token, request_id).await {
                Ok(Some(holder)) => holder,
                Ok(None) => {
                    return Ok(Remembered {
                        value: None,
                        lifetime: self.times.invalid,
                    });
                }
                Err(error) => {
                    return Err(Unanswered {
                        what: "validate the token",
                        error,
                    });
                }
            };
            let left = (holder.expires_at - Utc::now()).to_std().unwrap_or_default();
            Ok(Remembered {
                value: Some(Principal::keystone(holder.identity, &self.roles)),
                lifetime: left.min(self.times.valid),
            })
        };
        // Errors are not remembered: Keystone being away says nothing about the token.
        let remembered = self
            .tokens
            .try_get_with(key, ask)
            .await
            .map_err(|e: Arc<Unanswered>| e.api_error())?;
        remembered
            .value
            .ok_or(ApiError::Unauthorized("the Keystone token is invalid or expired"))
    }

    /// The Keystone user `given` names: a user id, a name unique across domains, or
    /// `<name>@<domain name or id>`. Refused (naming `header`) when it names no enabled user
    /// or several.
    pub async fn user(&self, header: &str, given: &str, request_id: &str) -> Result<User, ApiError> {
        let cloud = self.cloud.as_ref().ok_or_else(|| {
            ApiError::field(
                header,
                "cannot be resolved to a Keystone user: this broker has no OpenStack cloud configured",
            )
        })?;
        let ask = async {
            let resolution = resolve_user(cloud, given, request_id)
                .await
                .map_err(|error| Unanswered {
                    what: "look up the user",
                    error,
                })?;
            let lifetime = match resolution {
                Resolution::User(_) => self.times.valid,
                _ => self.times.invalid,
            };
            Ok(Remembered {
                value: resolution,
                lifetime,
            })
        };
        let remembered = self
            .users
            .try_get_with(given.to_owned(), ask)
            .await
            .map_err(|e: Arc<Unanswered>| e.api_error())?;
        match remembered.value {
            Resolution::User(user) => Ok(user),
            Resolution::NoUser => Err(ApiError::field(header, "names no Keystone user")),
            Resolution::Disabled => Err(ApiError::field(header, "names a disabled Keystone user")),
            Resolution::Ambiguous(n) => Err(ApiError::field(
                header,
                format!("names {n} Keystone users (in different domains): send the user id, or `name@domain`"),
            )),
        }
    }
}

/// Every user `given` may stand for, by id, by name, and by `name@domain`; exactly one
/// must be found.
async fn resolve_user(cloud: &OpenStack, given: &str, rid: &str) -> Result<Resolution, CallError> {
    let mut found: Vec<User> = Vec::new();
    let mut add = |users: Vec<User>| {
        for user in users {
            if !found.iter().any(|f| f.id == user.id) {
                found.push(user);
            }
        }
    };
    // Keystone ids are hex (or other URL-safe text); anything else is no id.
    if given
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        add(cloud.user(given, rid).await?.into_iter().collect());
    }
    add(cloud.users_named(given, None, rid).await?);
    if let Some((name, domain)) = given.rsplit_once('@')
        && !name.is_empty()
        && !domain.is_empty()
    {
        let domain_id = match cloud.domain_named(domain, rid).await? {
            Some(id) => Some(id),
            // A domain given by id.
            None => Some(domain.to_owned()),
        };
        add(cloud.users_named(name, domain_id.as_deref(), rid).await?);
    }
    Ok(match found.len() {
        0 => Resolution::NoUser,
        1 => {
            let user = found.remove(0);
            if user.enabled {
                Resolution::User(user)
            } else {
                Resolution::Disabled
            }
        }
        n => Resolution::Ambiguous(n),
    })
}
