//! Nova (the catalog's `compute` service), read only: the servers booted from an image in
//! every project, and one server by id. Needs the broker's credentials to be admin in Nova
//! (`all_tenants`); a Nova that is absent from the catalog or does not answer is reported by
//! the caller as unchecked, never as "no servers".

use serde::Deserialize;

use super::client::{OpenStack, Service};
use super::error::CallError;
use crate::domain::impact::Server;

/// The microversion the broker reads servers with (Nova 2.47 and later show the same fields).
const COMPUTE_VERSION: &str = "compute 2.47";

/// How many servers one listing reads; a full page is reported as not wholly checked.
pub const PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
struct NovaServer {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    /// `{"id": ...}`, or `""` for a server booted from a volume.
    #[serde(default)]
    image: serde_json::Value,
}

impl From<NovaServer> for Server {
    fn from(s: NovaServer) -> Self {
        Server {
            image_id: s.image.get("id").and_then(|v| v.as_str()).map(str::to_owned),
            id: s.id,
            name: s.name,
            project: s.tenant_id.unwrap_or_default(),
            status: s.status,
        }
    }
}

#[derive(Deserialize)]
struct Servers {
    servers: Vec<NovaServer>,
}

#[derive(Deserialize)]
struct OneServer {
    server: NovaServer,
}

impl OpenStack {
    /// The servers of every project booted from `image_id` (at most [`PAGE`]).
    pub async fn servers_of_image(&self, image_id: &str, request_id: &str) -> Result<Vec<Server>, CallError> {
        let limit = PAGE.to_string();
        let query = [("all_tenants", "1"), ("image", image_id), ("limit", limit.as_str())];
        let found: Option<Servers> = self
            .get_versioned(
                Service::Nova,
                "/servers/detail",
                &query,
                COMPUTE_VERSION,
                "list servers",
                request_id,
            )
            .await?;
        let found = found.ok_or_else(|| CallError::permanent(Some(404), "list servers: 404 (not a Nova?)"))?;
        Ok(found.servers.into_iter().map(Server::from).collect())
    }

    /// One server of any project, or `None` when Nova has none with this id.
    pub async fn server(&self, server_id: &str, request_id: &str) -> Result<Option<Server>, CallError> {
        let path = format!("/servers/{server_id}");
        let found: Option<OneServer> = self
            .get_versioned(Service::Nova, &path, &[], COMPUTE_VERSION, "get server", request_id)
            .await?;
        Ok(found.map(|one| one.server.into()))
    }
}
