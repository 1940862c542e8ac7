//! Glance v2 images and members. Every write is safe to repeat: adding a member that exists
//! (409) and deleting one that is gone (404) both count as done.

use reqwest::{Method, RequestBuilder, StatusCode};
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
    /// Glance refuses to delete a protected image (403).
    #[serde(default)]
    pub protected: bool,
    /// Bytes of image data; `None` (or 0) when the image has none.
    #[serde(default)]
    pub size: Option<i64>,
    /// MD5 of the data (legacy), and the multihash Glance computes since Rocky.
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub os_hash_value: Option<String>,
    /// Hidden from image lists (still usable by id).
    #[serde(default)]
    pub os_hidden: bool,
    /// Nova's `block_device_mapping` property (a JSON text), set on a snapshot of a server
    /// booted from a volume: the image holds no data, only pointers to Cinder snapshots.
    #[serde(default)]
    pub block_device_mapping: Option<String>,
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub image_id: String,
    /// `pending`, `accepted` or `rejected`.
    pub status: String,
    /// When the member was created (adoption records it as the grant's time).
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Deserialize)]
struct Images {
    images: Vec<Image>,
}

/// Images listed per page when listing an owner's images.
const IMAGES_PAGE: usize = 200;

#[derive(Deserialize)]
struct Members {
    members: Vec<Member>,
}

const JSON_PATCH: &str = "application/openstack-images-v2.1-json-patch";

impl OpenStack {
    /// The image, or `None` when Glance has none with this id (or hides it from us).
    pub async fn image(&self, image_id: &str, request_id: &str) -> Result<Option<Image>, CallError> {
        self.find(
            Service::Glance,
            &format!("/v2/images/{image_id}"),
            "get image",
            request_id,
        )
        .await
    }

    /// Sets the image's visibility (`shared` or `private`).
    pub async fn set_visibility(&self, image_id: &str, visibility: &str, request_id: &str) -> Result<(), CallError> {
        let path = format!("/v2/images/{image_id}");
        let body = json!([{ "op": "replace", "path": "/visibility", "value": visibility }]).to_string();
        self.glance_change(Method::PATCH, &path, "set image visibility", request_id, None, |r| {
            r.header(reqwest::header::CONTENT_TYPE, JSON_PATCH).body(body.clone())
        })
        .await
    }

    /// The `shared` images `owner` owns (every page), for adoption.
    pub async fn shared_images_of(&self, owner: &str, request_id: &str) -> Result<Vec<Image>, CallError> {
        let limit = IMAGES_PAGE.to_string();
        let mut all: Vec<Image> = Vec::new();
        loop {
            let marker = all.last().map(|i| i.id.clone()).unwrap_or_default();
            let mut query = vec![("owner", owner), ("visibility", "shared"), ("limit", limit.as_str())];
            if !marker.is_empty() {
                query.push(("marker", marker.as_str()));
            }
            let page: Images = self
                .list(Service::Glance, "/v2/images", &query, "list images", request_id)
                .await?;
            let done = page.images.len() < IMAGES_PAGE;
            all.extend(page.images);
            if done {
                return Ok(all);
            }
        }
    }

    /// Up to `limit` of the images `owner` owns, newest first (Glance's order), after the image
    /// `marker` when given; `None` when Glance knows no image `marker` (it answers 400; an
    /// image deleted but not yet purged still serves as one).
    pub async fn images_of(
        &self,
        owner: &str,
        limit: usize,
        marker: Option<&str>,
        request_id: &str,
    ) -> Result<Option<Vec<Image>>, CallError> {
        let what = "list images";
        let limit = limit.to_string();
        let mut query = vec![("owner", owner), ("limit", limit.as_str())];
        query.extend(marker.map(|m| ("marker", m)));
        let response = self
            .send(Service::Glance, Method::GET, "/v2/images", what, request_id, |r| {
                r.query(&query)
            })
            .await?;
        match response.status() {
            StatusCode::BAD_REQUEST if marker.is_some() => Ok(None),
            s if s.is_success() => {
                let page: Images = response.json().await.map_err(|e| CallError::transport(what, &e))?;
                Ok(Some(page.images))
            }
            _ => Err(error_of(what, response).await),
        }
    }

    /// Sets the image's `protected` flag (Glance refuses to delete a protected image).
    pub async fn set_protected(&self, image_id: &str, protected: bool, request_id: &str) -> Result<(), CallError> {
        let path = format!("/v2/images/{image_id}");
        let body = json!([{ "op": "replace", "path": "/protected", "value": protected }]).to_string();
        self.glance_change(Method::PATCH, &path, "set image protected", request_id, None, |r| {
            r.header(reqwest::header::CONTENT_TYPE, JSON_PATCH).body(body.clone())
        })
        .await
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
        let path = format!("/v2/images/{image_id}/members/{project_id}");
        self.find(Service::Glance, &path, "get image member", request_id).await
    }

    /// Every member of the image.
    pub async fn members(&self, image_id: &str, request_id: &str) -> Result<Vec<Member>, CallError> {
        let path = format!("/v2/images/{image_id}/members");
        let many: Members = self
            .list(Service::Glance, &path, &[], "list image members", request_id)
            .await?;
        Ok(many.members)
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
        let path = format!("/v2/images/{image_id}/members/{project_id}");
        let body = json!({ "status": status });
        self.glance_change(Method::PUT, &path, "set image member status", request_id, None, |r| {
            r.json(&body)
        })
        .await
    }

    /// Removes `project_id` from the image's members. A member already gone counts as removed.
    pub async fn remove_member(&self, image_id: &str, project_id: &str, request_id: &str) -> Result<(), CallError> {
        let path = format!("/v2/images/{image_id}/members/{project_id}");
        let gone = Some(StatusCode::NOT_FOUND);
        self.glance_change(Method::DELETE, &path, "remove image member", request_id, gone, |r| r)
            .await
    }

    /// A Glance write whose answer carries nothing we read: done on success, or on `done_too`.
    async fn glance_change(
        &self,
        method: Method,
        path: &str,
        what: &str,
        request_id: &str,
        done_too: Option<StatusCode>,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<(), CallError> {
        let response = self
            .send(Service::Glance, method, path, what, request_id, build)
            .await?;
        let status = response.status();
        if status.is_success() || done_too == Some(status) {
            Ok(())
        } else {
            Err(error_of(what, response).await)
        }
    }
}
