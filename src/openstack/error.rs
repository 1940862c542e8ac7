use std::time::Duration;

use reqwest::StatusCode;

/// Why an OpenStack call did not do what was asked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CallError {
    /// Worth another try later: 5xx, 429, timeouts, refused connections.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Trying again will not help: the message says why, in plain words.
    #[error("{message}")]
    Permanent { status: Option<u16>, message: String },
}

impl CallError {
    pub fn permanent(status: Option<u16>, message: impl Into<String>) -> Self {
        CallError::Permanent {
            status,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Transient { .. })
    }

    /// Classifies a transport failure (no HTTP answer).
    pub fn transport(what: &str, e: &reqwest::Error) -> Self {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "failed"
        };
        CallError::Transient {
            message: format!("{what}: {kind}"),
            retry_after: None,
        }
    }

    /// Classifies an HTTP error status.
    pub fn status(what: &str, status: StatusCode, retry_after: Option<Duration>, body: &str) -> Self {
        let message = format!(
            "{what}: {status}{}",
            summary(body).map(|s| format!(": {s}")).unwrap_or_default()
        );
        // A 401 that survived a fresh token is Keystone or the broker's account having a bad
        // moment more often than a lasting refusal: retry it, within the attempt budget.
        let transient = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::UNAUTHORIZED
            || status.is_server_error();
        if transient {
            CallError::Transient { message, retry_after }
        } else {
            CallError::Permanent {
                status: Some(status.as_u16()),
                message,
            }
        }
    }
}

/// Glance and Keystone errors carry `{"message": "...<br /><br />..."}` or
/// `{"error": {"message": "..."}}`; keep the human part, short.
fn summary(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let message = value
        .get("message")
        .or_else(|| value.get("error").and_then(|e| e.get("message")))?
        .as_str()?;
    let clean = message.split("<br").next().unwrap_or(message).trim();
    let clean: String = clean.chars().take(300).collect();
    (!clean.is_empty()).then_some(clean)
}

/// Parses `Retry-After` as seconds (the form OpenStack services and proxies send).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once() {
        assert!(CallError::status("x", StatusCode::SERVICE_UNAVAILABLE, None, "").is_transient());
        assert!(CallError::status("x", StatusCode::TOO_MANY_REQUESTS, None, "").is_transient());
        assert!(!CallError::status("x", StatusCode::FORBIDDEN, None, "").is_transient());
        assert!(!CallError::status("x", StatusCode::PAYLOAD_TOO_LARGE, None, "").is_transient());
        assert!(CallError::status("x", StatusCode::UNAUTHORIZED, None, "").is_transient());
    }

    #[test]
    fn glance_error_bodies_are_cleaned() {
        let body = r#"{"message": "Image member limit exceeded for image x<br /><br />\n\n\n", "code": "413 Request Entity Too Large", "title": "x"}"#;
        let e = CallError::status("add member", StatusCode::PAYLOAD_TOO_LARGE, None, body);
        assert_eq!(
            e.to_string(),
            "add member: 413 Payload Too Large: Image member limit exceeded for image x"
        );
    }
}
