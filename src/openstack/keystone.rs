//! Keystone v3: is a target project real, which id does a name stand for, and who holds a
//! token a caller presents.

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::client::{OpenStack, Service, error_of};
use super::error::CallError;

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

/// What Keystone says about a caller's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHolder {
    pub user_id: String,
    pub user_name: String,
    /// The project the token is scoped to, if it is project-scoped, and that project's domain.
    pub project_id: Option<String>,
    pub project_domain_id: Option<String>,
    pub roles: Vec<String>,
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
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct ScopedProject {
    id: String,
    domain: Option<DomainRef>,
}

#[derive(Deserialize)]
struct DomainRef {
    id: String,
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
                Ok(Some(TokenHolder {
                    user_id: token.user.id,
                    user_name: token.user.name,
                    project_domain_id: token.project.as_ref().and_then(|p| Some(p.domain.as_ref()?.id.clone())),
                    project_id: token.project.map(|p| p.id),
                    roles: token.roles.into_iter().map(|r| r.name).collect(),
                    expires_at: token.expires_at,
                }))
            }
            _ => Err(error_of(what, response).await),
        }
    }

    /// The project with this id, or `None` when Keystone has none.
    pub async fn project(&self, id: &str, request_id: &str) -> Result<Option<Project>, CallError> {
        let what = "get project";
        let path = format!("/projects/{id}");
        let response = self
            .send(Service::Keystone, Method::GET, &path, what, request_id, |r| r)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(
                response
                    .json::<One>()
                    .await
                    .map_err(|e| CallError::transport(what, &e))?
                    .project,
            )),
            _ => Err(error_of(what, response).await),
        }
    }

    /// Every project with this name (one per domain at most).
    pub async fn projects_named(&self, name: &str, request_id: &str) -> Result<Vec<Project>, CallError> {
        let what = "find project by name";
        let response = self
            .send(Service::Keystone, Method::GET, "/projects", what, request_id, |r| {
                r.query(&[("name", name)])
            })
            .await?;
        if !response.status().is_success() {
            return Err(error_of(what, response).await);
        }
        Ok(response
            .json::<Many>()
            .await
            .map_err(|e| CallError::transport(what, &e))?
            .projects)
    }
}
