//! Glance v2 images and members. Every write is safe to repeat: adding a member that exists
//! (409) and deleting one that is gone (404) both count as done.

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::client::{OpenStack, Service, error_of};
use super::error::CallError;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub owner: Option<String>,
    pub visibility: String,
    pub status: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub image_id: String,
    /// `pending`, `accepted` or `rejected`.
    pub status: String,
}

#[derive(Deserialize)]
struct Members {
    members: Vec<Member>,
}

const JSON_PATCH: &str = "application/openstack-images-v2.1-json-patch";

impl OpenStack {
    /// The image, or `None` when Glance has none with this id (or hides it from us).
    pub async fn image(&self, image_id: &str, request_id: &str) -> Result<Option<Image>, CallError> {
        let what = "get image";
        let path = format!("/v2/images/{image_id}");
        let response = self
            .send(Service::Glance, Method::GET, &path, what, request_id, |r| r)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response.json().await.map_err(|e| CallError::transport(what, &e))?)),
            _ => Err(error_of(what, response).await),
        }
    }

    /// Sets the image's visibility (`shared` or `private`).
    pub async fn set_visibility(&self, image_id: &str, visibility: &str, request_id: &str) -> Result<(), CallError> {
        let what = "set image visibility";
        let path = format!("/v2/images/{image_id}");
        let body = json!([{ "op": "replace", "path": "/visibility", "value": visibility }]).to_string();
        let response = self
            .send(Service::Glance, Method::PATCH, &path, what, request_id, |r| {
                r.header(reqwest::header::CONTENT_TYPE, JSON_PATCH).body(body.clone())
            })
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(error_of(what, response).await)
        }
    }

    /// Adds `project_id` as a member. An existing member counts as added.
    pub async fn add_member(&self, image_id: &str, project_id: &str, request_id: &str) -> Result<(), CallError> {
        let what = "add image member";
        let path = format!("/v2/images/{image_id}/members");
        let body = json!({ "member": project_id });
        let response = self
            .send(Service::Glance, Method::POST, &path, what, request_id, |r| {
                r.json(&body)
            })
            .await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
            StatusCode::PAYLOAD_TOO_LARGE => Err(CallError::permanent(
                Some(413),
                "the image has reached Glance's member quota (image_member_quota); pending and rejected members count",
            )),
            _ => Err(error_of(what, response).await),
        }
    }

    /// The membership of `project_id`, or `None` when there is none (or the image is gone).
    pub async fn member(
        &self,
        image_id: &str,
        project_id: &str,
        request_id: &str,
    ) -> Result<Option<Member>, CallError> {
        let what = "get image member";
        let path = format!("/v2/images/{image_id}/members/{project_id}");
        let response = self
            .send(Service::Glance, Method::GET, &path, what, request_id, |r| r)
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => Ok(Some(response.json().await.map_err(|e| CallError::transport(what, &e))?)),
            _ => Err(error_of(what, response).await),
        }
    }

    /// Every member of the image.
    pub async fn members(&self, image_id: &str, request_id: &str) -> Result<Vec<Member>, CallError> {
        let what = "list image members";
        let path = format!("/v2/images/{image_id}/members");
        let response = self
            .send(Service::Glance, Method::GET, &path, what, request_id, |r| r)
            .await?;
        if !response.status().is_success() {
            return Err(error_of(what, response).await);
        }
        Ok(response
            .json::<Members>()
            .await
            .map_err(|e| CallError::transport(what, &e))?
            .members)
    }

    /// Sets a member's status (`accepted` or `rejected`); needs admin credentials, since only
    /// the consumer project or an admin may.
    pub async fn set_member_status(
        &self,
        image_id: &str,
        project_id: &str,
        status: &str,
        request_id: &str,
    ) -> Result<(), CallError> {
        let what = "set image member status";
        let path = format!("/v2/images/{image_id}/members/{project_id}");
        let body = json!({ "status": status });
        let response = self
            .send(Service::Glance, Method::PUT, &path, what, request_id, |r| r.json(&body))
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(error_of(what, response).await)
        }
    }

    /// Removes `project_id` from the image's members. A member already gone counts as removed.
    pub async fn remove_member(&self, image_id: &str, project_id: &str, request_id: &str) -> Result<(), CallError> {
        let what = "remove image member";
        let path = format!("/v2/images/{image_id}/members/{project_id}");
        let response = self
            .send(Service::Glance, Method::DELETE, &path, what, request_id, |r| r)
            .await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(error_of(what, response).await),
        }
    }
}
