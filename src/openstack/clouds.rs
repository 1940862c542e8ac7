//! Credentials the way every OpenStack tool takes them: a cloud from `clouds.yaml`
//! (`OS_CLOUD`, `OS_CLIENT_CONFIG_FILE` or the standard search path), else `OS_*` variables.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use secrecy::SecretString;
use serde::Deserialize;

/// How the broker proves who it is to Keystone.
#[derive(Debug, Clone)]
pub enum Credentials {
    Password {
        username: String,
        user_domain: Domain,
        password: SecretString,
        project: Project,
    },
    ApplicationCredential {
        id: String,
        secret: SecretString,
    },
}

/// A domain by id or name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Domain {
    Id(String),
    Name(String),
}

/// The project a password token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Project {
    Id(String),
    Name { name: String, domain: Domain },
}

/// Everything needed to reach one cloud.
#[derive(Debug, Clone)]
pub struct CloudConfig {
    /// Keystone's v3 URL, e.g. `https://keystone.example.com/v3`.
    pub auth_url: String,
    pub credentials: Credentials,
    pub region: String,
    /// Catalog interface: `public`, `internal` or `admin`.
    pub interface: String,
    /// A PEM bundle of the CAs to trust instead of the built-in ones (`cacert`, `OS_CACERT`).
    pub cacert: Option<PathBuf>,
    /// Whether TLS certificates are checked (`verify: false` or `OS_INSECURE=true` turn it off).
    pub verify: bool,
}

#[derive(Debug, Deserialize)]
struct CloudsFile {
    clouds: HashMap<String, CloudEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct CloudEntry {
    #[serde(default)]
    auth: AuthEntry,
    region_name: Option<String>,
    interface: Option<String>,
    auth_type: Option<String>,
    cacert: Option<PathBuf>,
    verify: Option<bool>,
    /// The older spelling of `verify: false`.
    insecure: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    auth_url: Option<String>,
    username: Option<String>,
    password: Option<String>,
    project_id: Option<String>,
    project_name: Option<String>,
    user_domain_id: Option<String>,
    user_domain_name: Option<String>,
    project_domain_id: Option<String>,
    project_domain_name: Option<String>,
    domain_name: Option<String>,
    application_credential_id: Option<String>,
    application_credential_secret: Option<String>,
}

impl CloudConfig {
    /// Reads the cloud named by `OS_CLOUD` from clouds.yaml, or the `OS_*` variables.
    pub fn from_env() -> anyhow::Result<CloudConfig> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<CloudConfig> {
        let entry = match env("OS_CLOUD") {
            Some(cloud) => {
                let path = clouds_file(&env)?;
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let mut file: CloudsFile =
                    serde_norway::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
                file.clouds
                    .remove(&cloud)
                    .ok_or_else(|| anyhow!("OS_CLOUD={cloud}: no such cloud in {}", path.display()))?
            }
            None => CloudEntry {
                auth: AuthEntry {
                    auth_url: env("OS_AUTH_URL"),
                    username: env("OS_USERNAME"),
                    password: env("OS_PASSWORD"),
                    project_id: env("OS_PROJECT_ID"),
                    project_name: env("OS_PROJECT_NAME"),
                    user_domain_id: env("OS_USER_DOMAIN_ID"),
                    user_domain_name: env("OS_USER_DOMAIN_NAME"),
                    project_domain_id: env("OS_PROJECT_DOMAIN_ID"),
                    project_domain_name: env("OS_PROJECT_DOMAIN_NAME"),
                    domain_name: None,
                    application_credential_id: env("OS_APPLICATION_CREDENTIAL_ID"),
                    application_credential_secret: env("OS_APPLICATION_CREDENTIAL_SECRET"),
                },
                region_name: env("OS_REGION_NAME"),
                interface: env("OS_INTERFACE"),
                auth_type: env("OS_AUTH_TYPE"),
                cacert: env("OS_CACERT").map(PathBuf::from),
                verify: None,
                insecure: env("OS_INSECURE").map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes")),
            },
        };
        entry.into_config()
    }
}

fn clouds_file(env: &impl Fn(&str) -> Option<String>) -> anyhow::Result<PathBuf> {
    if let Some(path) = env("OS_CLIENT_CONFIG_FILE") {
        return Ok(PathBuf::from(path));
    }
    let mut candidates = vec![PathBuf::from("clouds.yaml")];
    if let Some(home) = env("HOME") {
        candidates.push(PathBuf::from(home).join(".config/openstack/clouds.yaml"));
    }
    candidates.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("OS_CLOUD is set but no clouds.yaml was found (set OS_CLIENT_CONFIG_FILE)"))
}

fn domain(id: Option<String>, name: Option<String>) -> Domain {
    match (id, name) {
        (Some(id), _) => Domain::Id(id),
        (None, Some(name)) => Domain::Name(name),
        (None, None) => Domain::Id("default".into()),
    }
}

impl CloudEntry {
    fn into_config(self) -> anyhow::Result<CloudConfig> {
        let a = self.auth;
        let auth_url = a.auth_url.ok_or_else(|| anyhow!("auth_url (OS_AUTH_URL) is not set"))?;
        let auth_url = auth_url.trim_end_matches('/').to_owned();
        let auth_url = if auth_url.ends_with("/v3") {
            auth_url
        } else {
            format!("{auth_url}/v3")
        };
        let app_cred = self
            .auth_type
            .as_deref()
            .is_some_and(|t| t.starts_with("v3applicationcredential"))
            || a.application_credential_id.is_some();
        let credentials = if app_cred {
            Credentials::ApplicationCredential {
                id: a
                    .application_credential_id
                    .ok_or_else(|| anyhow!("application_credential_id is not set"))?,
                secret: a
                    .application_credential_secret
                    .ok_or_else(|| anyhow!("application_credential_secret is not set"))?
                    .into(),
            }
        } else {
            let Some(username) = a.username else {
                bail!("username (OS_USERNAME) is not set")
            };
            let Some(password) = a.password else {
                bail!("password (OS_PASSWORD) is not set")
            };
            let project = match (a.project_id, a.project_name) {
                (Some(id), _) => Project::Id(id),
                (None, Some(name)) => Project::Name {
                    name,
                    domain: domain(a.project_domain_id, a.project_domain_name.or(a.domain_name.clone())),
                },
                (None, None) => bail!("project_name or project_id (OS_PROJECT_NAME) is not set"),
            };
            Credentials::Password {
                username,
                user_domain: domain(a.user_domain_id, a.user_domain_name.or(a.domain_name)),
                password: password.into(),
                project,
            }
        };
        Ok(CloudConfig {
            auth_url,
            credentials,
            region: self.region_name.unwrap_or_else(|| "RegionOne".into()),
            interface: self
                .interface
                .unwrap_or_else(|| "public".into())
                .trim_end_matches("URL")
                .to_owned(),
            cacert: self.cacert,
            verify: self.verify.unwrap_or(true) && !self.insecure.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_is_read_from_clouds_yaml() {
        let dir = std::env::temp_dir().join(format!("gsb-clouds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("clouds.yaml");
        std::fs::write(
            &path,
            "clouds:\n  broker:\n    auth:\n      auth_url: http://127.0.0.1:35357\n      username: admin\n      password: s3cret\n      project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionTwo\n    interface: internal\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "OS_CLOUD" => Some("broker".to_owned()),
            "OS_CLIENT_CONFIG_FILE" => Some(path.display().to_string()),
            _ => None,
        };
        let cloud = CloudConfig::from_lookup(env).unwrap();
        assert_eq!(cloud.auth_url, "http://127.0.0.1:35357/v3");
        assert_eq!(cloud.region, "RegionTwo");
        assert_eq!(cloud.interface, "internal");
        match cloud.credentials {
            Credentials::Password { username, project, .. } => {
                assert_eq!(username, "admin");
                assert_eq!(
                    project,
                    Project::Name {
                        name: "admin".into(),
                        domain: Domain::Name("Default".into())
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            !format!("{:?}", CloudConfig::from_lookup(env).unwrap()).contains("s3cret"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn application_credentials_come_from_os_variables() {
        let env = |k: &str| match k {
            "OS_AUTH_URL" => Some("https://keystone.example.com/v3/".to_owned()),
            "OS_AUTH_TYPE" => Some("v3applicationcredential".to_owned()),
            "OS_APPLICATION_CREDENTIAL_ID" => Some("abc".to_owned()),
            "OS_APPLICATION_CREDENTIAL_SECRET" => Some("xyz".to_owned()),
            _ => None,
        };
        let cloud = CloudConfig::from_lookup(env).unwrap();
        assert_eq!(cloud.auth_url, "https://keystone.example.com/v3");
        assert!(matches!(cloud.credentials, Credentials::ApplicationCredential { ref id, .. } if id == "abc"));
    }

    #[test]
    fn cacert_and_verify_are_read_from_clouds_yaml_and_os_variables() {
        let dir = std::env::temp_dir().join(format!("gsb-clouds-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("clouds.yaml");
        std::fs::write(
            &path,
            "clouds:\n  tls:\n    auth:\n      auth_url: https://keystone.example.com/v3\n      application_credential_id: a\n      application_credential_secret: s\n    cacert: /etc/ssl/cloud-ca.pem\n  insecure:\n    auth:\n      auth_url: https://keystone.example.com/v3\n      application_credential_id: a\n      application_credential_secret: s\n    verify: false\n",
        )
        .unwrap();
        let file = path.display().to_string();
        let cloud = |name: &'static str| {
            CloudConfig::from_lookup(|k| match k {
                "OS_CLOUD" => Some(name.to_owned()),
                "OS_CLIENT_CONFIG_FILE" => Some(file.clone()),
                _ => None,
            })
            .unwrap()
        };
        let tls = cloud("tls");
        assert_eq!(tls.cacert, Some(PathBuf::from("/etc/ssl/cloud-ca.pem")));
        assert!(tls.verify);
        let insecure = cloud("insecure");
        assert_eq!(insecure.cacert, None);
        assert!(!insecure.verify);

        let from_env = CloudConfig::from_lookup(|k| match k {
            "OS_AUTH_URL" => Some("https://k/v3".to_owned()),
            "OS_APPLICATION_CREDENTIAL_ID" => Some("a".to_owned()),
            "OS_APPLICATION_CREDENTIAL_SECRET" => Some("s".to_owned()),
            "OS_CACERT" => Some("/ca.pem".to_owned()),
            "OS_INSECURE" => Some("true".to_owned()),
            _ => None,
        })
        .unwrap();
        assert_eq!(from_env.cacert, Some(PathBuf::from("/ca.pem")));
        assert!(!from_env.verify);
    }

    #[test]
    fn a_missing_setting_is_named() {
        let err = CloudConfig::from_lookup(|k| (k == "OS_AUTH_URL").then(|| "http://k/v3".to_owned())).unwrap_err();
        assert!(err.to_string().contains("OS_USERNAME"), "{err}");
    }
}
