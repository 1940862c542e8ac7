//! Keystone v3 projects: is a target real, and which id does a name stand for.

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

impl OpenStack {
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
