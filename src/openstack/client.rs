//! The authenticated client: one Keystone token, cached until shortly before it expires and
//! renewed once on a 401; Glance found in the token's catalog.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::clouds::{CloudConfig, Credentials, Domain, Project};
use super::error::{CallError, retry_after};

/// A token is renewed this long before Keystone says it expires.
const TOKEN_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// A Keystone token. Deliberately not `Debug`: it is a secret.
struct Token {
    value: String,
    expires_at: DateTime<Utc>,
    glance_url: String,
}

#[derive(Debug, Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Debug, Deserialize)]
struct TokenInfo {
    expires_at: DateTime<Utc>,
    #[serde(default)]
    catalog: Vec<CatalogEntry>,
}

#[derive(Debug, Deserialize)]
struct CatalogEntry {
    #[serde(rename = "type")]
    kind: String,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize)]
struct Endpoint {
    interface: String,
    #[serde(default)]
    region_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
    url: String,
}

/// Waits for the right to send one Glance call: an outbound rate limit, possibly shared with
/// other replicas. An error means the right could not be had; the call is then not sent and
/// fails as transient.
pub trait Pacer: Send + Sync {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

/// Talks to one cloud's Keystone and Glance as the broker.
#[derive(Clone)]
pub struct OpenStack {
    http: reqwest::Client,
    cloud: Arc<CloudConfig>,
    token: Arc<Mutex<Option<Arc<Token>>>>,
    /// Overrides the catalog's Glance URL (tests point it at a fake Glance).
    glance_override: Option<String>,
    /// Paces Glance calls (none: as fast as they come).
    pacer: Option<Arc<dyn Pacer>>,
}

impl OpenStack {
    pub fn new(cloud: CloudConfig, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("glance-share-broker/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .timeout(timeout)
            .build()?;
        Ok(OpenStack {
            http,
            cloud: Arc::new(cloud),
            token: Arc::default(),
            glance_override: None,
            pacer: None,
        })
    }

    /// Makes every Glance call wait for `pacer` first.
    pub fn with_pacer(mut self, pacer: Arc<dyn Pacer>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// Names the cloud and region this client talks to (the scope of a rate limit).
    pub fn cloud_key(&self) -> String {
        format!("{} {}", self.cloud.auth_url, self.cloud.region)
    }

    /// Sends Glance calls to `url` instead of the catalog's endpoint.
    pub fn with_glance_url(mut self, url: impl Into<String>) -> Self {
        self.glance_override = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    fn auth_body(&self) -> Value {
        fn domain(d: &Domain) -> Value {
            match d {
                Domain::Id(id) => json!({ "id": id }),
                Domain::Name(name) => json!({ "name": name }),
            }
        }
        match &self.cloud.credentials {
            Credentials::Password {
                username,
                user_domain,
                password,
                project,
            } => {
                let scope = match project {
                    Project::Id(id) => json!({ "project": { "id": id } }),
                    Project::Name { name, domain: d } => json!({ "project": { "name": name, "domain": domain(d) } }),
                };
                json!({ "auth": {
                    "identity": { "methods": ["password"], "password": { "user": {
                        "name": username, "domain": domain(user_domain), "password": password.expose_secret() } } },
                    "scope": scope } })
            }
            Credentials::ApplicationCredential { id, secret } => json!({ "auth": { "identity": {
                "methods": ["application_credential"],
                "application_credential": { "id": id, "secret": secret.expose_secret() } } } }),
        }
    }

    async fn authenticate(&self) -> Result<Arc<Token>, CallError> {
        let what = "Keystone authentication";
        let response = self
            .http
            .post(format!("{}/auth/tokens", self.cloud.auth_url))
            .json(&self.auth_body())
            .send()
            .await
            .map_err(|e| CallError::transport(what, &e))?;
        let status = response.status();
        if !status.is_success() {
            let after = retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            return Err(CallError::status(what, status, after, &body));
        }
        let value = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| CallError::permanent(None, "Keystone returned no X-Subject-Token"))?;
        let body: TokenBody = response.json().await.map_err(|e| CallError::transport(what, &e))?;
        let glance_url = match &self.glance_override {
            Some(url) => url.clone(),
            None => self.find_endpoint(&body.token.catalog, "image")?,
        };
        tracing::debug!(expires_at = %body.token.expires_at, "keystone token issued");
        Ok(Arc::new(Token {
            value,
            expires_at: body.token.expires_at,
            glance_url,
        }))
    }

    fn find_endpoint(&self, catalog: &[CatalogEntry], kind: &str) -> Result<String, CallError> {
        catalog
            .iter()
            .filter(|e| e.kind == kind)
            .flat_map(|e| &e.endpoints)
            .find(|e| {
                e.interface == self.cloud.interface
                    && (e.region_id.as_deref() == Some(&self.cloud.region)
                        || e.region.as_deref() == Some(&self.cloud.region))
            })
            .map(|e| e.url.trim_end_matches('/').to_owned())
            .ok_or_else(|| {
                CallError::permanent(
                    None,
                    format!(
                        "the catalog has no `{kind}` endpoint for interface {} in region {}",
                        self.cloud.interface, self.cloud.region
                    ),
                )
            })
    }

    async fn token(&self, stale: Option<&Arc<Token>>) -> Result<Arc<Token>, CallError> {
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref() {
            let is_stale = stale.is_some_and(|s| Arc::ptr_eq(s, token));
            if !is_stale && token.expires_at - TOKEN_MARGIN > Utc::now() {
                return Ok(token.clone());
            }
        }
        let fresh = self.authenticate().await?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// Sends one call, re-authenticating once on 401. `what` names the call in errors;
    /// `request_id` travels as `X-OpenStack-Request-ID`.
    pub(super) async fn send(
        &self,
        service: Service,
        method: Method,
        path: &str,
        what: &str,
        request_id: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, CallError> {
        let mut token = self.token(None).await?;
        for attempt in 0..2 {
            let base = match service {
                Service::Glance => token.glance_url.as_str(),
                Service::Keystone => self.cloud.auth_url.as_str(),
            };
            if let (Service::Glance, Some(pacer)) = (service, &self.pacer) {
                pacer.wait().await.map_err(|e| CallError::Transient {
                    message: format!("{what}: outbound rate limit unavailable: {e}"),
                    retry_after: None,
                })?;
            }
            let request = self
                .http
                .request(method.clone(), format!("{base}{path}"))
                .header("x-auth-token", &token.value)
                .header("x-openstack-request-id", request_id)
                .header(reqwest::header::ACCEPT, "application/json");
            let response = build(request)
                .send()
                .await
                .map_err(|e| CallError::transport(what, &e))?;
            if response.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                tracing::info!(glance.op = what, "token refused; re-authenticating once");
                token = self.token(Some(&token)).await?;
                continue;
            }
            return Ok(response);
        }
        unreachable!("the loop returns on its second pass")
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Service {
    Glance,
    Keystone,
}

/// The body of an error response, for the error message.
pub(super) async fn error_of(what: &str, response: Response) -> CallError {
    let status = response.status();
    let after = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    CallError::status(what, status, after, &body)
}
