//! Keystone v3: is a target project real, which id does a name stand for, who holds a
//! token a caller presents, and which user a name or id stands for. Also the reads every
//! service's calls share (`find`, `list`, and `get_versioned` for Nova and Cinder).

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::client::{OpenStack, Service, error_of};
use super::error::CallError;
use crate::domain::KeystoneIdentity;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub domain_id: String,
}

#[derive(Deserialize)]
struct One {
    project: Project,
}

#[derive(Deserialize)]
struct Many {
    projects: Vec<Project>,
}

/// A Keystone user.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

#[derive(Deserialize)]
struct OneUser {
    user: User,
}

#[derive(Deserialize)]
struct ManyUsers {
    users: Vec<User>,
}

#[derive(Deserialize)]
struct ManyDomains {
    domains: Vec<Named>,
}

/// What Keystone says about a caller's token: who holds it, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHolder {
    pub identity: KeystoneIdentity,
    pub expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Validated {
    token: ValidatedToken,
}

#[derive(Deserialize)]
struct ValidatedToken {
    expires_at: DateTime<Utc>,
    user: Named,
    #[serde(default)]
    project: Option<ScopedProject>,
    #[serde(default)]
    domain: Option<Named>,
    #[serde(default)]
    system: Option<SystemScope>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct ScopedProject {
    id: String,
    name: Option<String>,
    domain: Option<DomainRef>,
}

#[derive(Deserialize)]
struct DomainRef {
    id: String,
    name: Option<String>,
}

#[derive(Deserialize)]
struct SystemScope {
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    name: String,
}

impl OpenStack {
    /// Who holds `subject` (a token a caller presented), checked with the broker's own token;
    /// `None` when Keystone does not know it (invalid, expired or revoked).
    pub async fn validate_token(&self, subject: &str, request_id: &str) -> Result<Option<TokenHolder>, CallError> {
        let what = "validate token";
        let response = self
            .send(Service::Keystone, Method::GET, "/auth/tokens", what, request_id, |r| {
                r.header("x-subject-token", subject).query(&[("nocatalog", "1")])
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let token = response
                    .json::<Validated>()
                    .await
                    .map_err(|e| CallError::transport(what, &e))?
                    .token;
                let project = token.project;
                let domain = project.as_ref().and_then(|p| p.domain.as_ref());
                Ok(Some(TokenHolder {
                    identity: KeystoneIdentity {
                        user_id: token.user.id,
                        user_name: token.user.name,
                        project_domain_id: domain.map(|d| d.id.clone()),
                        project_domain_name: domain.and_then(|d| d.name.clone()),
                        project_name: project.as_ref().and_then(|p| p.name.clone()),
                        project_id: project.map(|p| p.id),
                        domain_id: token.domain.map(|d| d.id),
                        system: token.system.is_some_and(|s| s.all),
                        roles: token.roles.into_iter().map(|r| r.name).collect(),
                    },
                    expires_at: token.expires_at,
                }))
            }
            _ => Err(error_of(what, response).await),
        }
    }

    /// The project with this id, or `None` when Keystone has none.
    pub async fn project(&self, id: &str, request_id: &str) -> Result<Option<Project>, CallError> {
        let found: Option<One> = self
            .find(Service::Keystone, &format!("/projects/{id}"), "get project", request_id)
            .await?;
        Ok(found.map(|one| one.project))
    }

    /// Every project with this name (one per domain at most).
    pub async fn projects_named(&self, name: &str, request_id: &str) -> Result<Vec<Project>, CallError> {
        let many: Many = self
            .list(
                Service::Keystone,
                "/projects",
                &[("name", name)],
                "find project by name",
                request_id,
            )
            .await?;
        Ok(many.projects)
    }

    /// The enabled projects (not domains) whose name holds `text`, ignoring case, in
    /// `domain_id` (or the whole cloud): Keystone's inexact filter `name__icontains`.
    pub async fn projects_containing(
        &self,
        text: &str,
        domain_id: Option<&str>,
        request_id: &str,
    ) -> Result<Vec<Project>, CallError> {
        let mut query = vec![("name__icontains", text), ("enabled", "true"), ("is_domain", "false")];
        query.extend(domain_id.map(|domain| ("domain_id", domain)));
        let many: Many = self
            .list(
                Service::Keystone,
                "/projects",
                &query,
                "search projects by name",
                request_id,
            )
            .await?;
        Ok(many.projects)
    }

    /// The user with this id, or `None` when Keystone has none.
    pub async fn user(&self, id: &str, request_id: &str) -> Result<Option<User>, CallError> {
        let found: Option<OneUser> = self
            .find(Service::Keystone, &format!("/users/{id}"), "get user", request_id)
            .await?;
        Ok(found.map(|one| one.user))
    }

    /// Every user with this name (one per domain at most), or only the one in `domain_id`.
    pub async fn users_named(
        &self,
        name: &str,
        domain_id: Option<&str>,
        request_id: &str,
    ) -> Result<Vec<User>, CallError> {
        let mut query = vec![("name", name)];
        query.extend(domain_id.map(|domain| ("domain_id", domain)));
        let many: ManyUsers = self
            .list(Service::Keystone, "/users", &query, "find user by name", request_id)
            .await?;
        Ok(many.users)
    }

    /// The id of the domain with this name, if there is one.
    pub async fn domain_named(&self, name: &str, request_id: &str) -> Result<Option<String>, CallError> {
        let many: ManyDomains = self
            .list(
                Service::Keystone,
                "/domains",
                &[("name", name)],
                "find domain by name",
                request_id,
            )
            .await?;
        Ok(many.domains.into_iter().next().map(|d| d.id))
    }

    /// GET one resource of `service` (Glance's too): `None` when it has none (404).
    pub(super) async fn find<T: DeserializeOwned>(
        &self,
        service: Service,
        path: &str,
        what: &str,
        request_id: &str,
    ) -> Result<Option<T>, CallError> {
        let response = self.send(service, Method::GET, path, what, request_id, |r| r).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response.json().await.map_err(|e| CallError::transport(what, &e))?)),
            _ => Err(error_of(what, response).await),
        }
    }

    /// GET a collection of `service` (Glance's too) filtered by `query`.
    pub(super) async fn list<T: DeserializeOwned>(
        &self,
        service: Service,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
        request_id: &str,
    ) -> Result<T, CallError> {
        let response = self
            .send(service, Method::GET, path, what, request_id, |r| r.query(query))
            .await?;
        if !response.status().is_success() {
            return Err(error_of(what, response).await);
        }
        response.json().await.map_err(|e| CallError::transport(what, &e))
    }

    /// GET on an API with microversions (Nova, Cinder): `version` is the
    /// `OpenStack-API-Version` header's value (`compute 2.47`). `None` on 404.
    pub(super) async fn get_versioned<T: DeserializeOwned>(
        &self,
        service: Service,
        path: &str,
        query: &[(&str, &str)],
        version: &str,
        what: &str,
        request_id: &str,
    ) -> Result<Option<T>, CallError> {
        let response = self
            .send(service, Method::GET, path, what, request_id, |r| {
                r.query(query).header("openstack-api-version", version)
            })
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response.json().await.map_err(|e| CallError::transport(what, &e))?)),
            _ => Err(error_of(what, response).await),
        }
    }
}
