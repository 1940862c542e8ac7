//! Cinder (the catalog's `volumev3` or `block-storage` service), read only: the volumes of
//! every project made from an image (Cinder keeps its id in `volume_image_metadata`, which a
//! clone inherits), with the servers they are attached to. Needs the broker's credentials to
//! be admin in Cinder (`all_tenants`), and `glance_metadata` among Cinder's volume filters
//! (`resource_filters.json`; the default file has it).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::json;

use super::client::{OpenStack, Service};
use super::error::CallError;
use crate::domain::impact::Volume;

/// The microversion the broker reads volumes with (filters by `glance_metadata` since 3.4).
const VOLUME_VERSION: &str = "volume 3.34";

/// How many volumes one listing reads; a full page is reported as not wholly checked.
pub const PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
struct CinderVolume {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, rename = "os-vol-tenant-attr:tenant_id")]
    project: Option<String>,
    #[serde(default)]
    volume_image_metadata: Option<HashMap<String, serde_json::Value>>,
    #[serde(default)]
    attachments: Vec<Attachment>,
}

#[derive(Debug, Deserialize)]
struct Attachment {
    #[serde(default)]
    server_id: Option<String>,
}

#[derive(Deserialize)]
struct Volumes {
    volumes: Vec<CinderVolume>,
}

impl From<CinderVolume> for Volume {
    fn from(v: CinderVolume) -> Self {
        let image_id = v
            .volume_image_metadata
            .as_ref()
            .and_then(|m| m.get("image_id"))
            .and_then(|id| id.as_str())
            .map(str::to_owned);
        Volume {
            id: v.id,
            name: v.name.filter(|n| !n.is_empty()),
            project: v.project.unwrap_or_default(),
            status: v.status,
            image_id,
            attached_to: v.attachments.into_iter().filter_map(|a| a.server_id).collect(),
        }
    }
}

impl OpenStack {
    /// The volumes of every project whose `volume_image_metadata.image_id` is `image_id`
    /// (at most [`PAGE`]).
    pub async fn volumes_of_image(&self, image_id: &str, request_id: &str) -> Result<Vec<Volume>, CallError> {
        let metadata = json!({ "image_id": image_id }).to_string();
        let limit = PAGE.to_string();
        let query = [
            ("all_tenants", "1"),
            ("glance_metadata", metadata.as_str()),
            ("limit", limit.as_str()),
        ];
        let found: Option<Volumes> = self
            .get_versioned(
                Service::Cinder,
                "/volumes/detail",
                &query,
                VOLUME_VERSION,
                "list volumes",
                request_id,
            )
            .await?;
        let found = found.ok_or_else(|| CallError::permanent(Some(404), "list volumes: 404 (not a Cinder v3?)"))?;
        Ok(found.volumes.into_iter().map(Volume::from).collect())
    }
}
