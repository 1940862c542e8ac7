//! Asks Nova, Cinder and Glance what depends on an image, across projects, and hands the
//! answers to [`Findings`] (in `domain::impact`) to classify. Each service that is absent
//! from the catalog, does not answer, or answers more than one page is recorded as
//! unchecked, so that "unknown" never reads as "nothing depends on it".

use serde::Deserialize;

use super::client::{OpenStack, Service};
use super::error::CallError;
use crate::domain::impact::{DerivedImage, Findings, Unchecked};

/// How many derived images one Glance listing reads (Glance's usual `api_limit_max`).
const IMAGE_PAGE: usize = 1000;

/// The image properties that name the image another one was made from: a server's
/// snapshot carries `base_image_ref`; images uploaded from a volume made from the image
/// carry its `image_id`.
const ORIGIN_PROPERTIES: [&str; 2] = ["base_image_ref", "image_id"];

#[derive(Deserialize)]
struct Images {
    images: Vec<serde_json::Map<String, serde_json::Value>>,
}

fn text(map: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    map.get(key).and_then(|v| v.as_str()).map(str::to_owned)
}

fn unchecked(service: &str, error: &CallError) -> Unchecked {
    Unchecked {
        service: service.to_owned(),
        reason: error.to_string(),
    }
}

fn page_full(service: &str, what: &str, page: usize) -> Unchecked {
    Unchecked {
        service: service.to_owned(),
        reason: format!("more than {page} {what}: only the first {page} were read"),
    }
}

impl OpenStack {
    /// What Nova, Cinder and Glance say depends on `image_id`, in every project.
    pub async fn findings(&self, image_id: &str, request_id: &str) -> Findings {
        let (servers, volumes, images) = tokio::join!(
            self.servers_of_image(image_id, request_id),
            self.volumes_of_image(image_id, request_id),
            self.derived_images(image_id, request_id),
        );
        let mut findings = Findings::default();
        let nova_answers = servers.is_ok();
        match servers {
            Ok(servers) if servers.len() >= super::nova::PAGE => {
                findings
                    .unchecked
                    .push(page_full("compute", "servers", super::nova::PAGE));
                findings.servers = servers;
            }
            Ok(servers) => findings.servers = servers,
            Err(e) => findings.unchecked.push(unchecked("compute", &e)),
        }
        match volumes {
            Ok(volumes) => {
                if volumes.len() >= super::cinder::PAGE {
                    findings
                        .unchecked
                        .push(page_full("volume", "volumes", super::cinder::PAGE));
                }
                findings.volumes = volumes;
            }
            Err(e) => findings.unchecked.push(unchecked("volume", &e)),
        }
        match images {
            Ok(images) => findings.images = images,
            Err(e) => findings.unchecked.push(unchecked("image", &e)),
        }
        // The servers using those volumes, as Nova shows them (a Nova that did not answer
        // is unchecked already: Cinder's attachments still name them).
        if nova_answers {
            let mut attached: Vec<&String> = findings.volumes.iter().flat_map(|v| &v.attached_to).collect();
            attached.sort();
            attached.dedup();
            let mut servers = Vec::new();
            for id in attached {
                match self.server(id, request_id).await {
                    Ok(Some(server)) => servers.push(server),
                    Ok(None) => {}
                    Err(e) => {
                        findings.unchecked.push(unchecked("compute", &e));
                        break;
                    }
                }
            }
            findings.volume_servers = servers;
        }
        findings
    }

    /// The images of every project that name `image_id` as their origin.
    async fn derived_images(&self, image_id: &str, request_id: &str) -> Result<Vec<DerivedImage>, CallError> {
        let limit = IMAGE_PAGE.to_string();
        let mut derived: Vec<DerivedImage> = Vec::new();
        for property in ORIGIN_PROPERTIES {
            let query = [(property, image_id), ("limit", limit.as_str())];
            let found: Images = self
                .list(Service::Glance, "/v2/images", &query, "list derived images", request_id)
                .await?;
            if found.images.len() >= IMAGE_PAGE {
                return Err(CallError::permanent(
                    None,
                    format!("more than {IMAGE_PAGE} images name the image in `{property}`: only some were read"),
                ));
            }
            for image in found.images {
                let Some(id) = text(&image, "id") else { continue };
                if derived.iter().any(|d| d.id == id) {
                    continue;
                }
                derived.push(DerivedImage {
                    id,
                    name: text(&image, "name"),
                    owner: text(&image, "owner"),
                    status: text(&image, "status"),
                    derived_from: ORIGIN_PROPERTIES.iter().filter_map(|p| text(&image, p)).collect(),
                });
            }
        }
        Ok(derived)
    }
}
