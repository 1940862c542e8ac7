//! The real Nova and Cinder beside the rig (`scripts/openstack/compute`, `ensure_compute`),
//! used as a consumer uses them: bob (proj-b) boots servers from an image shared with him,
//! makes volumes from it and boots from those. Everything a test makes is listed in a
//! [`Made`] and deleted by [`Made::clean`], servers first (a volume in use cannot go).

use std::time::Duration;

use serde_json::{Value, json};

use crate::openstack::{Rig, env};

const NOVA_VERSION: &str = "compute 2.37";
const CINDER_VERSION: &str = "volume 3.34";
/// The rig's tiny flavor (`demo.sh` makes the same one).
const FLAVOR: &str = "rig-tiny";

/// What a test made in Nova and Cinder (as bob), to delete at its end.
#[derive(Default)]
pub struct Made {
    pub servers: Vec<String>,
    pub volumes: Vec<String>,
    /// Images bob made (snapshot records).
    pub images: Vec<String>,
}

impl Rig {
    fn nova(&self) -> String {
        env("NOVA_URL")
    }

    fn cinder(&self) -> String {
        env("CINDER_URL")
    }

    /// A new image of alice's project with a little data, `active`, so that Nova can boot it
    /// and Cinder copy it (`Rig::private_image` uploads its data).
    pub async fn active_image(&self, name: &str) -> String {
        self.private_image(name).await
    }

    /// Makes the tiny flavor if nobody has yet (as admin).
    async fn ensure_flavor(&self) {
        let admin = self.token("admin").await;
        let url = format!("{}/flavors/{FLAVOR}", self.nova());
        let found = self.http.get(&url).header("x-auth-token", &admin).send().await.unwrap();
        if found.status() == 404 {
            let body = json!({"flavor": {"name": "rig.tiny", "id": FLAVOR, "ram": 64, "vcpus": 1, "disk": 1}});
            let made = self
                .http
                .post(format!("{}/flavors", self.nova()))
                .header("x-auth-token", &admin)
                .header("openstack-api-version", NOVA_VERSION)
                .json(&body)
                .send()
                .await
                .unwrap();
            // 409: another test made it meanwhile.
            assert!(
                made.status() == 200 || made.status() == 409,
                "flavor: {}",
                made.status()
            );
        }
    }

    /// Bob boots a server (from `image`, or from `volume`) and waits until it is ACTIVE.
    pub async fn boot(&self, made: &mut Made, name: &str, image: Option<&str>, volume: Option<&str>) -> String {
        self.ensure_flavor().await;
        let mut server = json!({"name": name, "flavorRef": FLAVOR, "networks": "none"});
        if let Some(image) = image {
            server["imageRef"] = json!(image);
        }
        if let Some(volume) = volume {
            server["block_device_mapping_v2"] = json!([{"boot_index": 0, "uuid": volume,
                "source_type": "volume", "destination_type": "volume"}]);
        }
        let bob = self.token("bob").await;
        let response = self
            .http
            .post(format!("{}/servers", self.nova()))
            .header("x-auth-token", &bob)
            .header("openstack-api-version", NOVA_VERSION)
            .json(&json!({ "server": server }))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 202, "boot {name}: {body}");
        let id = body["server"]["id"].as_str().unwrap().to_owned();
        made.servers.push(id.clone());
        let path = format!("{}/servers/{id}", self.nova());
        self.wait_for(&bob, &path, "server", &["ACTIVE"]).await;
        id
    }

    /// Bob makes a 1 GiB volume from `image` and waits until it is available.
    pub async fn volume_from(&self, made: &mut Made, name: &str, image: &str) -> String {
        let bob = self.token("bob").await;
        let response = self
            .http
            .post(format!("{}/volumes", self.cinder()))
            .header("x-auth-token", &bob)
            .header("openstack-api-version", CINDER_VERSION)
            .json(&json!({"volume": {"size": 1, "imageRef": image, "name": name}}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 202, "volume {name}: {body}");
        let id = body["volume"]["id"].as_str().unwrap().to_owned();
        made.volumes.push(id.clone());
        let path = format!("{}/volumes/{id}", self.cinder());
        self.wait_for(&bob, &path, "volume", &["available"]).await;
        id
    }

    /// Polls `path` as `token` until `.{key}.status` is one of `wanted` (a minute at most).
    async fn wait_for(&self, token: &str, path: &str, key: &str, wanted: &[&str]) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            let response = self
                .http
                .get(path)
                .header("x-auth-token", token)
                .header(
                    "openstack-api-version",
                    if key == "server" { NOVA_VERSION } else { CINDER_VERSION },
                )
                .send()
                .await
                .unwrap();
            last = response.json().await.unwrap_or_default();
            let status = last[key]["status"].as_str().unwrap_or_default();
            if wanted.contains(&status) {
                return last;
            }
            assert!(!["ERROR", "error"].contains(&status), "{path} went {status}: {last}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{path} never reached {wanted:?}: {last}");
    }

    /// Bob records an image derived from `image`, as Nova's snapshot of a server booted
    /// from it would be (`base_image_ref`).
    pub async fn snapshot_of(&self, made: &mut Made, name: &str, image: &str) -> String {
        let response = self
            .http
            .post(format!("{}/v2/images", self.glance))
            .header("x-auth-token", self.token("bob").await)
            .json(&json!({"name": name, "visibility": "private", "disk_format": "raw",
                "container_format": "bare", "base_image_ref": image, "image_type": "snapshot"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "snapshot record {name}");
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        made.images.push(id.clone());
        id
    }

    /// Bob asks Nova to rebuild `server` from `image`: the status Nova answers.
    pub async fn rebuild(&self, server: &str, image: &str) -> u16 {
        let response = self
            .http
            .post(format!("{}/servers/{server}/action", self.nova()))
            .header("x-auth-token", self.token("bob").await)
            .header("openstack-api-version", NOVA_VERSION)
            .json(&json!({"rebuild": {"imageRef": image}}))
            .send()
            .await
            .unwrap();
        response.status().as_u16()
    }
}

impl Made {
    /// Deletes what the test made, as bob: servers (waiting until they are gone), then volumes.
    pub async fn clean(&self, rig: &Rig) {
        let bob = rig.token("bob").await;
        for id in &self.servers {
            let url = format!("{}/servers/{id}", rig.nova());
            rig.http.delete(&url).header("x-auth-token", &bob).send().await.unwrap();
            for _ in 0..300 {
                let response = rig.http.get(&url).header("x-auth-token", &bob).send().await.unwrap();
                if response.status() == 404 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        for id in &self.images {
            let url = format!("{}/v2/images/{id}", rig.glance);
            rig.http.delete(&url).header("x-auth-token", &bob).send().await.unwrap();
        }
        for id in &self.volumes {
            let url = format!("{}/volumes/{id}", rig.cinder());
            // A volume is `available` again a moment after its server is gone.
            for _ in 0..150 {
                let response = rig.http.delete(&url).header("x-auth-token", &bob).send().await.unwrap();
                if response.status().is_success() || response.status() == 404 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
