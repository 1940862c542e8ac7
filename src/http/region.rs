//! A request's region, checked against the cloud's catalog and stored as the catalog spells
//! it: one region has one spelling, so the one-live-share indexes see every share of it.

use super::{ApiError, AppState};
use crate::domain::{NewShareRequest, catalog_region};
use crate::openstack::CallError;

impl AppState {
    /// Puts `new.region` in the catalog's spelling, or refuses it (422 naming `region`) when
    /// the broker's cloud has no Glance there that the broker reaches. Without a cloud the
    /// region stays as given (trimmed when parsed).
    pub(super) async fn check_region(&self, new: &mut NewShareRequest) -> Result<(), ApiError> {
        let Some(cloud) = &self.cloud else { return Ok(()) };
        let regions = cloud.regions().await.map_err(|e| match e {
            CallError::Transient { message, .. } => ApiError::Upstream(format!(
                "Keystone cannot list the cloud's regions now ({message}); retry later"
            )),
            CallError::Permanent { message, .. } => {
                ApiError::Internal(anyhow::anyhow!("reading the cloud's regions: {message}"))
            }
        })?;
        new.region = catalog_region(&new.region, &regions).map_err(|reason| ApiError::field("region", reason))?;
        Ok(())
    }
}
