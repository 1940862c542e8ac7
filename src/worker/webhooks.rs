//! Webhook deliveries: claimed like jobs (a lease committed before the receiver is called),
//! POSTed with their own short timeout and signed, retried with backoff. They run in loops of
//! their own, apart from the share jobs, and hold no image: a slow or failing receiver never
//! holds up a share. Receivers are not OpenStack, so this part calls reqwest directly.
//! Unless GSB_WEBHOOK_ALLOW_PRIVATE, a receiver's name is resolved by a resolver that refuses
//! internal addresses (`domain::address`), and the connection goes to the addresses it
//! checked: a name that resolves elsewhere later (DNS rebinding) gains nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::header::CONTENT_TYPE;
use secrecy::ExposeSecret;

use super::{Outcome, Worker, retry};
use crate::db;
use crate::db::webhooks::{Attempt, ClaimedDelivery};
use crate::domain::address;
use crate::domain::webhook::signature;

/// How deliveries are sent.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Deliveries sent at once by one process.
    pub concurrency: usize,
    /// Longest wait for a receiver's answer.
    pub timeout: Duration,
    /// Tries before a delivery is `failed`.
    pub max_attempts: i32,
    /// Whether receivers may be at internal addresses (loopback, private, link-local...).
    pub allow_private: bool,
}

/// The HTTP client for receivers: their own timeout, and no redirects (a delivery goes only
/// where it was registered to go). Unless internal addresses are allowed, names resolve
/// through [`GuardedResolver`], and no proxy is used (a proxy would resolve the name itself,
/// out of the resolver's sight).
pub fn client(config: &WebhookConfig) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .user_agent(concat!("glance-share-broker/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.timeout)
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none());
    let builder = if config.allow_private {
        builder
    } else {
        builder.no_proxy().dns_resolver(Arc::new(GuardedResolver))
    };
    builder
        .build()
        .expect("building an HTTP client fails only without a TLS backend")
}

/// Resolves receivers' names, refusing a name any of whose addresses is internal. The client
/// connects only to the addresses returned here, so the check holds for the connection.
struct GuardedResolver;

/// A receiver at an address webhooks may not reach.
#[derive(Debug, thiserror::Error)]
#[error("the receiver's host is {0}, which webhooks may not reach (GSB_WEBHOOK_ALLOW_PRIVATE allows it)")]
struct Forbidden(&'static str);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if let Some((_, why)) = address::first_forbidden(addresses.iter().map(SocketAddr::ip)) {
                return Err(Box::new(Forbidden(why)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Why a receiver URL that names an IP address (which no resolver sees) may not be reached.
fn forbidden_literal(url: &str) -> Option<Forbidden> {
    let url = url::Url::parse(url).ok()?;
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    address::forbidden(ip).map(Forbidden)
}

/// The refusal of an internal address somewhere in a failed request's causes, if any.
fn forbidden_in(e: &reqwest::Error) -> Option<&Forbidden> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if let Some(forbidden) = error.downcast_ref::<Forbidden>() {
            return Some(forbidden);
        }
        cause = error.source();
    }
    None
}

/// How long after its event a delivery went through.
fn lag_of(delivery: &db::webhooks::ClaimedDelivery) -> std::time::Duration {
    delivery.payload["occurred_at"]
        .as_str()
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .and_then(|at| (Utc::now() - at.with_timezone(&Utc)).to_std().ok())
        .unwrap_or_default()
}

impl Worker {
    /// Claims and sends one due delivery. Tests call this until it returns [`Outcome::Idle`].
    pub async fn deliver_once(&self) -> anyhow::Result<Outcome> {
        let webhooks = &self.config.webhooks;
        let lease = self.config.lease.max(webhooks.timeout * 2);
        let Some(delivery) = db::webhooks::claim(&self.pool, lease).await? else {
            return Ok(Outcome::Idle);
        };
        let (status, error) = self.send(&delivery).await;
        crate::metrics::webhook_delivery(match (&error, status) {
            (None, _) => Ok(lag_of(&delivery)),
            (Some(_), Some(s)) if s >= 500 => Err("server"),
            (Some(_), Some(_)) => Err("client"),
            (Some(why), None) if why.contains("did not answer in time") => Err("timeout"),
            (Some(why), None) if why.contains("could not connect") => Err("connect"),
            (Some(why), None) if why.contains("may not reach") => Err("forbidden_address"),
            (Some(_), None) => Err("transport"),
        });
        let attempt = match &error {
            None => Attempt::Delivered {
                status: status.unwrap_or_default(),
            },
            Some(error) if delivery.attempts >= webhooks.max_attempts => Attempt::Failed { status, error },
            Some(error) => {
                let delay = retry::backoff(
                    delivery.attempts - 1,
                    self.config.retry_base,
                    self.config.retry_max,
                    rand::random(),
                );
                Attempt::Retry {
                    status,
                    error,
                    at: Utc::now() + delay,
                }
            }
        };
        if let Some(error) = &error {
            tracing::info!(delivery.id = %delivery.id, attempt = delivery.attempts, error = %error, "webhook delivery failed");
        }
        if !db::webhooks::finish(&self.pool, &delivery, attempt).await? {
            tracing::warn!(delivery.id = %delivery.id, "webhook delivery lease lost: another worker owns it");
        }
        Ok(Outcome::Ran)
    }

    /// POSTs the delivery: the receiver's status, and why it failed if it did. Errors never
    /// name the URL, which may carry credentials.
    async fn send(&self, delivery: &ClaimedDelivery) -> (Option<u16>, Option<String>) {
        if !self.config.webhooks.allow_private
            && let Some(forbidden) = forbidden_literal(&delivery.url)
        {
            return (None, Some(forbidden.to_string()));
        }
        let body = delivery.payload.to_string().into_bytes();
        let timestamp = Utc::now().timestamp();
        // Standard Webhooks: the id is the delivery's, the same on every retry, so a
        // receiver can drop duplicates.
        let id = delivery.id.to_string();
        let signed = signature(delivery.secret.expose_secret(), &id, timestamp, &body);
        let sent = self
            .webhook_http
            .post(&delivery.url)
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed)
            .header("x-gsb-event", &delivery.event)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
            Ok(response) => {
                let status = response.status();
                (Some(status.as_u16()), Some(format!("the receiver answered {status}")))
            }
            Err(e) => {
                let why = match forbidden_in(&e) {
                    Some(forbidden) => forbidden.to_string(),
                    None if e.is_timeout() => "the receiver did not answer in time".into(),
                    None if e.is_connect() => "could not connect to the receiver".into(),
                    None => "the request to the receiver failed".into(),
                };
                (None, Some(why))
            }
        }
    }
}
