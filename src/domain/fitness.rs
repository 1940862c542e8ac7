//! Image fitness: whether a consumer could use the image at all (else validation refuses the
//! request, with the reason on `image_id`), and what is legal but risky (warnings shown to
//! approvers as `validation.warnings`). Pure rules over what Glance said about the image:
//! imports no axum, sqlx or reqwest.

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, Display, EnumString, IntoStaticStr, VariantArray};
use utoipa::ToSchema;

/// An image's facts as validation found them, stored on the request for approvers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub name: Option<String>,
    pub owner: Option<String>,
    pub owner_domain: Option<String>,
    pub visibility: String,
}

/// What fitness looks at: Glance's answer about the image, as plain data.
#[derive(Debug, Clone, Copy)]
pub struct ImageShape<'a> {
    pub status: &'a str,
    pub size: Option<i64>,
    /// Glance gave a checksum (`checksum` or `os_hash_value`).
    pub has_checksum: bool,
    pub hidden: bool,
    pub protected: bool,
    /// Nova's `block_device_mapping` property (JSON text), if any.
    pub block_device_mapping: Option<&'a str>,
}

/// Why an image cannot be shared usefully, if it cannot: the reason stands on `image_id`.
pub fn unfit(image: &ImageShape<'_>) -> Option<String> {
    if image.status != "active" {
        return Some(format!(
            "the image is `{}`, not `active`: a consumer cannot boot it (Glance serves the data of active \
             images only); share it once it is active",
            image.status
        ));
    }
    if image.size.unwrap_or(0) == 0 && snapshot_of_volumes(image.block_device_mapping) {
        return Some(
            "the image is a zero-byte snapshot of a volume-backed server: it holds no data, only pointers to \
             Cinder snapshots in the owner's project, which the consumer cannot reach, so it cannot boot it. \
             Share an image with data instead: `openstack image create --volume <volume> <name>` uploads a \
             volume to Glance"
                .into(),
        );
    }
    None
}

/// Whether a `block_device_mapping` property has an entry whose source is a Cinder snapshot
/// (what Nova writes when it snapshots a server booted from a volume).
fn snapshot_of_volumes(block_device_mapping: Option<&str>) -> bool {
    let Some(text) = block_device_mapping else { return false };
    let Ok(entries) = serde_json::from_str::<Vec<serde_json::Value>>(text) else {
        return false;
    };
    entries.iter().any(|e| {
        e.get("source_type").and_then(|s| s.as_str()) == Some("snapshot")
            || e.get("snapshot_id").is_some_and(|s| !s.is_null())
    })
}

/// What is legal but risky about sharing an image, in a fixed order. `guard_on`: the broker
/// will protect the image while it is shared (GSB_PROTECT_SHARED_IMAGES and the policy).
pub fn warnings(image: &ImageShape<'_>, guard_on: bool) -> Vec<Warning> {
    let mut found = Vec::new();
    if !image.protected && !guard_on {
        found.push(Warning::new(
            WarningCode::ImageUnprotected,
            "the image is not protected and the broker's deletion guard is off: its owner can delete it while \
             consumers use it, and their servers then cannot be rebuilt or migrated",
        ));
    }
    if image.hidden {
        found.push(Warning::new(
            WarningCode::ImageHidden,
            "the image is hidden (os_hidden): consumers will not see it in their image lists, only by id",
        ));
    }
    if !image.has_checksum {
        found.push(Warning::new(
            WarningCode::ImageWithoutChecksum,
            "Glance has no checksum for the image: consumers cannot verify its data",
        ));
    }
    if image.size.unwrap_or(0) == 0 && !snapshot_of_volumes(image.block_device_mapping) {
        found.push(Warning::new(
            WarningCode::ImageWithoutSize,
            "Glance gives the image no size: it may hold no data",
        ));
    }
    if image.block_device_mapping.is_some() && !snapshot_of_volumes(image.block_device_mapping) {
        found.push(Warning::new(
            WarningCode::ImageBlockDeviceMapping,
            "the image carries a block_device_mapping: booting it may need volumes in the owner's project",
        ));
    }
    found
}

/// A risk validation found, for approvers to weigh; never a reason to refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Warning {
    pub code: WarningCode,
    pub message: String,
}

impl Warning {
    fn new(code: WarningCode, message: &str) -> Self {
        Warning {
            code,
            message: message.to_owned(),
        }
    }
}

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum WarningCode {
    /// Not protected in Glance, and the broker will not protect it (guard off).
    ImageUnprotected,
    /// `os_hidden`: not in image lists.
    ImageHidden,
    /// No `checksum` or `os_hash_value`.
    ImageWithoutChecksum,
    /// No size, or 0, and not a volume snapshot (those are refused).
    ImageWithoutSize,
    /// A `block_device_mapping` that is not a snapshot of volumes.
    ImageBlockDeviceMapping,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active() -> ImageShape<'static> {
        ImageShape {
            status: "active",
            size: Some(1024),
            has_checksum: true,
            hidden: false,
            protected: false,
            block_device_mapping: None,
        }
    }

    const SNAPSHOT_BDM: &str = r#"[{"source_type": "snapshot", "destination_type": "volume", "snapshot_id": "5f1c", "boot_index": 0, "delete_on_termination": false}]"#;

    #[test]
    fn an_active_image_with_data_is_fit_and_warns_of_nothing_when_guarded() {
        assert_eq!(unfit(&active()), None);
        assert!(warnings(&active(), true).is_empty());
    }

    #[test]
    fn every_status_but_active_is_unfit_and_named() {
        for status in [
            "queued",
            "saving",
            "deactivated",
            "killed",
            "importing",
            "uploading",
            "deleted",
        ] {
            let reason = unfit(&ImageShape { status, ..active() }).expect(status);
            assert!(reason.contains(&format!("`{status}`")), "{reason}");
        }
    }

    #[test]
    fn a_zero_byte_snapshot_of_a_volume_backed_server_is_unfit_and_says_how_to_make_one() {
        for size in [None, Some(0)] {
            let image = ImageShape {
                size,
                has_checksum: false,
                block_device_mapping: Some(SNAPSHOT_BDM),
                ..active()
            };
            let reason = unfit(&image).expect("refused");
            assert!(reason.contains("openstack image create --volume"), "{reason}");
            // Refused, so not warned about as well.
            assert!(
                !warnings(&image, true)
                    .iter()
                    .any(|w| w.code == WarningCode::ImageWithoutSize)
            );
        }
        // With data of its own it boots anywhere.
        let with_data = ImageShape {
            block_device_mapping: Some(SNAPSHOT_BDM),
            ..active()
        };
        assert_eq!(unfit(&with_data), None);
    }

    #[test]
    fn risky_but_legal_images_are_warned_about_in_a_fixed_order() {
        let image = ImageShape {
            size: None,
            has_checksum: false,
            hidden: true,
            block_device_mapping: Some(r#"[{"source_type": "image", "boot_index": 0}]"#),
            ..active()
        };
        let codes: Vec<WarningCode> = warnings(&image, false).into_iter().map(|w| w.code).collect();
        assert_eq!(
            codes,
            [
                WarningCode::ImageUnprotected,
                WarningCode::ImageHidden,
                WarningCode::ImageWithoutChecksum,
                WarningCode::ImageWithoutSize,
                WarningCode::ImageBlockDeviceMapping,
            ]
        );
        // A protected image needs no guard.
        let protected = ImageShape {
            protected: true,
            ..active()
        };
        assert!(warnings(&protected, false).is_empty());
        assert_eq!(serde_json::to_value(WarningCode::ImageHidden).unwrap(), "image_hidden");
    }
}
