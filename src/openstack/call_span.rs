//! The client span of one call to Keystone, Glance, Nova or Cinder, as OpenTelemetry's HTTP
//! conventions name it (`http.request.method`, `url.full`, `server.address`,
//! `http.response.status_code`, `error.type`), and the `traceparent` the call carries, so
//! that OpenStack's own tracing (osprofiler aside, any W3C-aware proxy or middleware) can
//! join the broker's trace. A span for traces only (`telemetry::trace::TRACE_ONLY`): when
//! tracing is off it is never made, and the call goes out as before.
//!
//! Nothing secret reaches the span: no header is recorded (tokens and the subject token
//! travel in headers), no body (passwords and application credential secrets do), and the
//! URL loses any credentials and the values of its query.

use reqwest::{Request, Response};
use tracing::Instrument;
use tracing::field::Empty;

use super::client::Service;
use crate::telemetry::trace::{self, TRACE_ONLY};

/// Sends `request` (for the operation `what`, e.g. "add image member") in a client span,
/// with the span's `traceparent`.
pub(super) async fn execute(
    http: &reqwest::Client,
    service: Service,
    what: &str,
    mut request: Request,
) -> reqwest::Result<Response> {
    let span = tracing::info_span!(
        target: TRACE_ONLY,
        "openstack call",
        otel.name = %format_args!("{} {}", request.method(), service.label()),
        otel.kind = "client",
        otel.status_code = Empty,
        http.request.method = %request.method(),
        url.full = %redacted(request.url()),
        server.address = request.url().host_str().unwrap_or_default(),
        server.port = request.url().port_or_known_default().unwrap_or_default(),
        http.response.status_code = Empty,
        error.type = Empty,
        openstack.service = service.label(),
        openstack.operation = what,
    );
    if span.is_disabled() {
        return http.execute(request).await;
    }
    trace::inject(&span, request.headers_mut());
    let sent = http.execute(request).instrument(span.clone()).await;
    match &sent {
        Ok(response) => {
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            if status.is_client_error() || status.is_server_error() {
                span.record("error.type", status.as_str());
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(e) => {
            span.record("error.type", transport_error_type(e));
            span.record("otel.status_code", "ERROR");
        }
    }
    sent
}

/// `url` without credentials, and with each query value replaced by `REDACTED` (the names
/// say what was asked; a value may name what a trace should not hold).
fn redacted(url: &url::Url) -> String {
    let mut clean = url.clone();
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    if url.query().is_some() {
        let names: Vec<String> = url.query_pairs().map(|(name, _)| name.into_owned()).collect();
        clean
            .query_pairs_mut()
            .clear()
            .extend_pairs(names.iter().map(|name| (name, "REDACTED")));
    }
    clean.set_fragment(None);
    clean.to_string()
}

/// `error.type` of a call that got no answer: a few low-cardinality words.
fn transport_error_type(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "transport"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_spans_lose_credentials_and_query_values() {
        let url = |s: &str| redacted(&url::Url::parse(s).unwrap());
        assert_eq!(
            url("https://admin:secret@keystone:5000/v3/users?name=alice&domain_id=default#x"),
            "https://keystone:5000/v3/users?name=REDACTED&domain_id=REDACTED"
        );
        assert_eq!(
            url("http://glance:9292/v2/images/7a5c/members"),
            "http://glance:9292/v2/images/7a5c/members"
        );
    }
}
