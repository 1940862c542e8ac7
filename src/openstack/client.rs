//! The authenticated client: one Keystone token, cached until shortly before it expires and
//! renewed once on a 401; Glance found in the token's catalog. Every call goes out in a
//! client span (`call_span`). It never follows a redirect
//! (a token or a password must not travel to wherever an answer points), trusts the CA that
//! clouds.yaml names (`cacert`), and says loudly when TLS is off or not verified.

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

use super::call_span;
use super::clouds::{CloudConfig, Credentials, Domain, Project};
use super::error::{CallError, retry_after};

/// A token is renewed this long before Keystone says it expires.
const TOKEN_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// A Keystone token. Deliberately not `Debug`: it is a secret.
struct Token {
    value: String,
    expires_at: DateTime<Utc>,
    glance_url: String,
    /// Nova's and Cinder's endpoints, when the catalog (or an override) has them.
    compute_url: Option<String>,
    volume_url: Option<String>,
    /// The regions whose Glance this client reaches, as the catalog spells them.
    regions: Vec<String>,
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
/// other replicas, and possibly a bound on calls in flight. A refusal means the right could
/// not be had (soon enough); the call is then not sent and fails as transient.
pub trait Pacer: Send + Sync {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<Pass, PaceRefused>> + Send + '_>>;
}

/// The right to send one call, held until its answer is in (a pacer that bounds the calls in
/// flight puts its permit here).
pub struct Pass {
    _held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Pass {
    /// A right that holds nothing.
    pub fn free() -> Self {
        Pass { _held: None }
    }

    /// A right that holds `permit` until the call is answered.
    pub fn holding(permit: impl std::any::Any + Send + Sync) -> Self {
        Pass {
            _held: Some(Box::new(permit)),
        }
    }
}

/// Why a pacer let no call go now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaceRefused {
    pub reason: String,
    /// When asking again makes sense, if the pacer knows.
    pub retry_after: Option<Duration>,
}

/// Talks to one cloud's Keystone and Glance as the broker.
#[derive(Clone)]
pub struct OpenStack {
    http: reqwest::Client,
    cloud: Arc<CloudConfig>,
    token: Arc<Mutex<Option<Arc<Token>>>>,
    /// Overrides the catalog's Glance URL (tests point it at a fake Glance).
    glance_override: Option<String>,
    /// Override the catalog's Nova and Cinder URLs.
    compute_override: Option<String>,
    volume_override: Option<String>,
    /// Paces Glance calls (none: as fast as they come).
    pacer: Option<Arc<dyn Pacer>>,
}

impl OpenStack {
    pub fn new(cloud: CloudConfig, timeout: Duration) -> anyhow::Result<Self> {
        let http = http_client(&cloud, timeout)?;
        Ok(OpenStack {
            http,
            cloud: Arc::new(cloud),
            token: Arc::default(),
            glance_override: None,
            compute_override: None,
            volume_override: None,
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

    /// The regions whose images this client can share, as the catalog spells them: its own
    /// region, when the catalog has a Glance there (it talks to that one Glance only, so a
    /// share in any other region would be carried out in the wrong place). Empty when the
    /// catalog has no Glance in the configured region.
    pub async fn regions(&self) -> Result<Vec<String>, CallError> {
        Ok(self.token(None).await?.regions.clone())
    }

    /// Sends Glance calls to `url` instead of the catalog's endpoint.
    pub fn with_glance_url(mut self, url: impl Into<String>) -> Self {
        self.glance_override = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Sends Nova calls to `url` (its `/v2.1` root) instead of the catalog's `compute` endpoint.
    pub fn with_compute_url(mut self, url: impl Into<String>) -> Self {
        self.compute_override = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Sends Cinder calls to `url` (its `/v3` root) instead of the catalog's `volumev3` or
    /// `block-storage` endpoint.
    pub fn with_volume_url(mut self, url: impl Into<String>) -> Self {
        self.volume_override = Some(url.into().trim_end_matches('/').to_owned());
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
        let request = self
            .http
            .post(format!("{}/auth/tokens", self.cloud.auth_url))
            .json(&self.auth_body())
            .build()
            .map_err(|e| CallError::transport(what, &e))?;
        let response = call_span::execute(&self.http, Service::Keystone, what, request)
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
        let catalog = &body.token.catalog;
        let compute_url = self
            .compute_override
            .clone()
            .or_else(|| self.find_endpoint(catalog, "compute").ok());
        let volume_url = self.volume_override.clone().or_else(|| {
            ["volumev3", "block-storage"]
                .iter()
                .find_map(|kind| self.find_endpoint(catalog, kind).ok())
        });
        tracing::debug!(expires_at = %body.token.expires_at, "keystone token issued");
        Ok(Arc::new(Token {
            value,
            expires_at: body.token.expires_at,
            glance_url,
            compute_url,
            volume_url,
            regions: self.served_regions(&body.token.catalog),
        }))
    }

    /// The configured region, spelled as in the catalog, if the catalog has a Glance there.
    fn served_regions(&self, catalog: &[CatalogEntry]) -> Vec<String> {
        catalog
            .iter()
            .filter(|e| e.kind == "image")
            .flat_map(|e| &e.endpoints)
            .filter(|e| e.interface == self.cloud.interface)
            .filter_map(|e| e.region_id.as_ref().or(e.region.as_ref()))
            .filter(|r| **r == self.cloud.region)
            .take(1)
            .cloned()
            .collect()
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
    /// The HTTP client and Keystone's URL, for calls made without the broker's token
    /// (a person signing in to the console: `sign_in`).
    pub(super) fn anonymous(&self) -> (&reqwest::Client, &str) {
        (&self.http, &self.cloud.auth_url)
    }

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
                Service::Nova => service.url_in(token.compute_url.as_deref(), &self.cloud)?,
                Service::Cinder => service.url_in(token.volume_url.as_deref(), &self.cloud)?,
            };
            // Held until the answer is in: a pacer may bound the calls in flight.
            let _pass = match (service, &self.pacer) {
                (Service::Glance, Some(pacer)) => pacer.wait().await.map_err(|e| CallError::Transient {
                    message: format!("{what}: {}", e.reason),
                    retry_after: e.retry_after,
                })?,
                _ => Pass::free(),
            };
            let request = self
                .http
                .request(method.clone(), format!("{base}{path}"))
                .header("x-auth-token", &token.value)
                .header("x-openstack-request-id", request_id)
                .header(reqwest::header::ACCEPT, "application/json");
            let request = build(request).build().map_err(|e| CallError::transport(what, &e))?;
            let started = std::time::Instant::now();
            let sent = call_span::execute(&self.http, service, what, request).await;
            let (status, failure) = match &sent {
                Ok(response) => (Some(response.status().as_u16()), None),
                Err(e) => (None, Some(e)),
            };
            crate::metrics::openstack_call(service.label(), method.as_str(), started.elapsed(), status, failure);
            let response = sent.map_err(|e| CallError::transport(what, &e))?;
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

/// The HTTP client for one cloud: no redirects, the cloud's CA if it names one (instead of
/// the built-in roots, as every OpenStack tool reads `cacert`), certificate checks off only
/// when `verify: false` says so, with a warning; a warning too for a plain-http Keystone.
fn http_client(cloud: &CloudConfig, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("glance-share-broker/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .timeout(timeout)
        // A redirect would carry the token (or, on authentication, the password) to another
        // place; an OpenStack API has no reason to send one.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = &cloud.cacert {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("reading cacert {} (clouds.yaml / OS_CACERT): {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("cacert {} is not a PEM bundle: {e}", path.display()))?;
        anyhow::ensure!(
            !certificates.is_empty(),
            "cacert {} holds no certificate",
            path.display()
        );
        builder = builder.tls_built_in_root_certs(false);
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    // The host alone: a URL may carry credentials.
    let keystone = url::Url::parse(&cloud.auth_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    if !cloud.verify {
        tracing::warn!(
            keystone.host = %keystone,
            "TLS CERTIFICATES ARE NOT VERIFIED (clouds.yaml `verify: false` / OS_INSECURE): anyone on \
             the path to Keystone and Glance can read the broker's password and tokens. Set `cacert` instead."
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    if cloud.auth_url.starts_with("http://") {
        tracing::warn!(
            keystone.host = %keystone,
            "Keystone is reached over plain http: the broker's password and tokens cross the network unencrypted"
        );
    }
    Ok(builder.build()?)
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Service {
    Glance,
    Keystone,
    Nova,
    Cinder,
}

impl Service {
    /// The endpoint of an optional service, or why there is none.
    fn url_in<'a>(self, url: Option<&'a str>, cloud: &CloudConfig) -> Result<&'a str, CallError> {
        url.ok_or_else(|| {
            let kind = match self {
                Service::Nova => "compute",
                Service::Cinder => "volumev3` or `block-storage",
                Service::Glance => "image",
                Service::Keystone => "identity",
            };
            CallError::permanent(
                None,
                format!(
                    "the catalog has no `{kind}` endpoint for interface {} in region {}",
                    cloud.interface, cloud.region
                ),
            )
        })
    }

    /// The `service` label of the call metrics, and the service's name in call spans.
    pub(super) fn label(self) -> &'static str {
        match self {
            Service::Glance => "glance",
            Service::Keystone => "keystone",
            Service::Nova => "nova",
            Service::Cinder => "cinder",
        }
    }
}

/// The body of an error response, for the error message.
pub(super) async fn error_of(what: &str, response: Response) -> CallError {
    let status = response.status();
    let after = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    CallError::status(what, status, after, &body)
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
