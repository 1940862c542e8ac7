//! What depends on a shared image in a consumer project: the servers booted from it, the
//! volumes made from it (Cinder keeps the image id in `volume_image_metadata`, and a clone
//! inherits it), the servers booted from or using those volumes (Nova shows `image: ""` for
//! them), and the images derived from it (a server's snapshot carries `base_image_ref`).
//! Once the image's member is removed, a rebuild of such a server answers 400 and a new boot
//! from it fails; on a real hypervisor migrate, evacuate and unshelve may need it too.
//!
//! Pure: [`Findings`] is what Nova, Cinder and Glance answered (the `openstack` module reads
//! them), [`Findings::impact`] classifies it for the consumer projects. A service that could
//! not be asked is [`Unchecked`], never "no dependents". Imports no axum, sqlx or reqwest.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How something depends on the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependentKind {
    /// A Nova server booted from the image.
    Server,
    /// A Cinder volume made from the image (or cloned from one that was).
    Volume,
    /// A Nova server booted from (or using) such a volume; `via` names the volume.
    VolumeServer,
    /// A Glance image derived from it (a server's snapshot: `base_image_ref`).
    Snapshot,
}

/// One thing in a consumer project that depends on the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Dependent {
    pub kind: DependentKind,
    pub id: String,
    pub name: Option<String>,
    /// The project it belongs to.
    pub project: String,
    /// Its status as its service reports it (`ACTIVE`, `in-use`, `active`...).
    pub status: Option<String>,
    /// For a `volume_server`: the volume through which it depends on the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// A service the broker could not ask: what depends on the image there is unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Unchecked {
    /// `compute` (Nova), `volume` (Cinder) or `image` (Glance).
    pub service: String,
    pub reason: String,
}

/// What depends on the image, and what could not be checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Impact {
    pub dependents: Vec<Dependent>,
    /// Services that could not be checked: an empty `dependents` with entries here means
    /// "unknown", not "nothing depends on it".
    pub unchecked: Vec<Unchecked>,
}

impl Impact {
    /// Nothing depends on the image, as far as every service could tell.
    pub fn is_clear(&self) -> bool {
        self.dependents.is_empty() && self.unchecked.is_empty()
    }
}

/// A Nova server as the broker read it (`image: ""` for one booted from a volume: `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub id: String,
    pub name: Option<String>,
    pub project: String,
    pub status: Option<String>,
    pub image_id: Option<String>,
}

/// A Cinder volume: the image it was made from (`volume_image_metadata.image_id`), and the
/// servers it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub id: String,
    pub name: Option<String>,
    pub project: String,
    pub status: Option<String>,
    pub image_id: Option<String>,
    pub attached_to: Vec<String>,
}

/// A Glance image and the images it names as its origin (`base_image_ref`, `image_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedImage {
    pub id: String,
    pub name: Option<String>,
    pub owner: Option<String>,
    pub status: Option<String>,
    pub derived_from: Vec<String>,
}

/// What the services answered about one image, across projects.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Servers Nova lists for the image.
    pub servers: Vec<Server>,
    /// Volumes Cinder lists for the image.
    pub volumes: Vec<Volume>,
    /// The servers those volumes are attached to, as Nova showed them.
    pub volume_servers: Vec<Server>,
    /// Images Glance lists as derived from it.
    pub images: Vec<DerivedImage>,
    pub unchecked: Vec<Unchecked>,
}

impl Findings {
    /// What in `projects` depends on `image_id`, each thing once, in a stable order; and
    /// every service that could not be checked.
    pub fn impact(&self, image_id: &str, projects: &[&str]) -> Impact {
        let ours = |project: &str| projects.contains(&project);
        let mut dependents: Vec<Dependent> = Vec::new();
        for s in &self.servers {
            if s.image_id.as_deref() == Some(image_id) && ours(&s.project) {
                dependents.push(server(DependentKind::Server, s, None));
            }
        }
        for v in &self.volumes {
            if v.image_id.as_deref() != Some(image_id) || !ours(&v.project) {
                continue;
            }
            dependents.push(Dependent {
                kind: DependentKind::Volume,
                id: v.id.clone(),
                name: v.name.clone(),
                project: v.project.clone(),
                status: v.status.clone(),
                via: None,
            });
            for attached in &v.attached_to {
                let known = self.volume_servers.iter().find(|s| &s.id == attached);
                dependents.push(match known {
                    Some(s) => server(DependentKind::VolumeServer, s, Some(&v.id)),
                    // Attached, but Nova did not show it (deleted meanwhile, or Nova away: then
                    // `unchecked` says so): still a dependent, as Cinder names it.
                    None => Dependent {
                        kind: DependentKind::VolumeServer,
                        id: attached.clone(),
                        name: None,
                        project: v.project.clone(),
                        status: None,
                        via: Some(v.id.clone()),
                    },
                });
            }
        }
        for i in &self.images {
            let owned = i.owner.as_deref().is_some_and(ours);
            if owned && i.id != image_id && i.derived_from.iter().any(|d| d == image_id) {
                dependents.push(Dependent {
                    kind: DependentKind::Snapshot,
                    id: i.id.clone(),
                    name: i.name.clone(),
                    project: i.owner.clone().unwrap_or_default(),
                    status: i.status.clone(),
                    via: None,
                });
            }
        }
        dependents.sort_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
        dependents.dedup_by(|a, b| a.kind == b.kind && a.id == b.id);
        Impact {
            dependents,
            unchecked: self.unchecked.clone(),
        }
    }
}

fn server(kind: DependentKind, s: &Server, via: Option<&str>) -> Dependent {
    Dependent {
        kind,
        id: s.id.clone(),
        name: s.name.clone(),
        project: s.project.clone(),
        status: s.status.clone(),
        via: via.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "img-1";

    fn server_of(id: &str, project: &str, image: Option<&str>) -> Server {
        Server {
            id: id.into(),
            name: Some(format!("{id}-name")),
            project: project.into(),
            status: Some("ACTIVE".into()),
            image_id: image.map(str::to_owned),
        }
    }

    fn volume_of(id: &str, project: &str, image: &str, attached: &[&str]) -> Volume {
        Volume {
            id: id.into(),
            name: None,
            project: project.into(),
            status: Some("in-use".into()),
            image_id: Some(image.into()),
            attached_to: attached.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn kinds(impact: &Impact) -> Vec<(DependentKind, &str)> {
        impact.dependents.iter().map(|d| (d.kind, d.id.as_str())).collect()
    }

    #[test]
    fn servers_volumes_their_servers_and_snapshots_of_the_consumer_are_dependents() {
        let findings = Findings {
            servers: vec![server_of("s1", "b", Some(IMAGE)), server_of("s2", "c", Some(IMAGE))],
            volumes: vec![volume_of("v1", "b", IMAGE, &["bfv"]), volume_of("v2", "c", IMAGE, &[])],
            volume_servers: vec![server_of("bfv", "b", None)],
            images: vec![DerivedImage {
                id: "snap".into(),
                name: None,
                owner: Some("b".into()),
                status: Some("active".into()),
                derived_from: vec![IMAGE.into()],
            }],
            unchecked: Vec::new(),
        };
        let impact = findings.impact(IMAGE, &["b"]);
        assert_eq!(
            kinds(&impact),
            [
                (DependentKind::Server, "s1"),
                (DependentKind::Volume, "v1"),
                (DependentKind::VolumeServer, "bfv"),
                (DependentKind::Snapshot, "snap"),
            ]
        );
        assert_eq!(impact.dependents[2].via.as_deref(), Some("v1"));
        assert_eq!(impact.dependents[0].name.as_deref(), Some("s1-name"));
        assert!(!impact.is_clear());
        assert_eq!(kinds(&findings.impact(IMAGE, &["c"])).len(), 2, "project c: s2 and v2");
        assert!(findings.impact(IMAGE, &["d"]).is_clear(), "nothing in d");
    }

    #[test]
    fn what_points_at_another_image_or_belongs_to_another_project_is_no_dependent() {
        let findings = Findings {
            // Nova's filter is trusted only as far as the image id it shows.
            servers: vec![server_of("s1", "b", Some("other")), server_of("bfv", "b", None)],
            volumes: vec![volume_of("v1", "b", "other", &["x"])],
            images: vec![
                DerivedImage {
                    id: IMAGE.into(),
                    name: None,
                    owner: Some("b".into()),
                    status: None,
                    derived_from: vec![IMAGE.into()],
                },
                DerivedImage {
                    id: "alice-copy".into(),
                    name: None,
                    owner: Some("a".into()),
                    status: None,
                    derived_from: vec![IMAGE.into()],
                },
            ],
            ..Findings::default()
        };
        assert!(findings.impact(IMAGE, &["b"]).is_clear());
    }

    #[test]
    fn an_attached_server_nova_did_not_show_is_still_named_from_cinder() {
        let findings = Findings {
            volumes: vec![volume_of("v1", "b", IMAGE, &["gone"]), volume_of("v1", "b", IMAGE, &[])],
            ..Findings::default()
        };
        let impact = findings.impact(IMAGE, &["b"]);
        assert_eq!(
            kinds(&impact),
            [(DependentKind::Volume, "v1"), (DependentKind::VolumeServer, "gone")],
            "each thing once"
        );
        assert_eq!(impact.dependents[1].project, "b");
    }

    #[test]
    fn a_service_not_checked_is_unknown_not_clear() {
        let findings = Findings {
            unchecked: vec![Unchecked {
                service: "compute".into(),
                reason: "the catalog has no compute endpoint".into(),
            }],
            ..Findings::default()
        };
        let impact = findings.impact(IMAGE, &["b"]);
        assert!(impact.dependents.is_empty());
        assert!(!impact.is_clear(), "unknown is not none");
        let json = serde_json::to_value(&impact).unwrap();
        assert_eq!(json["unchecked"][0]["service"], "compute");
    }
}
