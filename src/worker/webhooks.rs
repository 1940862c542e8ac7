//! Webhook deliveries: claimed like jobs (a lease committed before the receiver is called),
//! POSTed with their own short timeout and signed, retried with backoff. They run in loops of
//! their own, apart from the share jobs, and hold no image: a slow or failing receiver never
//! holds up a share. Receivers are not OpenStack, so this part calls reqwest directly.

use std::time::Duration;

use chrono::Utc;
use reqwest::header::CONTENT_TYPE;
use secrecy::ExposeSecret;

use super::{Outcome, Worker, retry};
use crate::db;
use crate::db::webhooks::{Attempt, ClaimedDelivery};
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
}

/// The HTTP client for receivers: their own timeout, and no redirects (a delivery goes only
/// where it was registered to go).
pub fn client(config: &WebhookConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("glance-share-broker/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.timeout)
        .timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("building an HTTP client fails only without a TLS backend")
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
        let body = delivery.payload.to_string().into_bytes();
        let timestamp = Utc::now().timestamp();
        let signed = signature(delivery.secret.expose_secret().as_bytes(), timestamp, &body);
        let sent = self
            .webhook_http
            .post(&delivery.url)
            .header(CONTENT_TYPE, "application/json")
            .header("x-gsb-event", &delivery.event)
            .header("x-gsb-delivery", delivery.id.to_string())
            .header("x-gsb-signature", signed)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
            Ok(response) => {
                let status = response.status();
                (Some(status.as_u16()), Some(format!("the receiver answered {status}")))
            }
            Err(e) if e.is_timeout() => (None, Some("the receiver did not answer in time".into())),
            Err(e) if e.is_connect() => (None, Some("could not connect to the receiver".into())),
            Err(_) => (None, Some("the request to the receiver failed".into())),
        }
    }
}
