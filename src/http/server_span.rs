//! The span of one request: the context of every log line written while serving it (its
//! request id, method, path, and principal once known), and, when traces are exported, its
//! OpenTelemetry server span, named and described as OpenTelemetry's HTTP conventions say
//! (`POST /v1/share-requests/{id}/approve`; `http.route`, `http.response.status_code`,
//! `error.type`).
//!
//! A caller's W3C `traceparent` (and `tracestate`) makes the span a child of the caller's;
//! a malformed or repeated one is ignored (the span starts a new trace). The response
//! carries the span's own `traceparent`, so that a caller that sent none can still find the
//! trace, as it finds the request id in `X-Request-Id`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::Response;
use tower_http::trace::{DefaultOnResponse, OnResponse};
use tracing::Span;
use tracing::field::Empty;

use crate::telemetry::trace;

/// The span every log line of a request is written in: it carries the request id.
pub fn request_span(request: &Request<Body>) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        principal = Empty,
        http.route = Empty,
        http.response.status_code = Empty,
        error.type = Empty,
        otel.name = Empty,
        otel.kind = Empty,
        otel.status_code = Empty,
    );
    if trace::enabled() {
        // Named by its method until the route is known (`name_by_route`).
        span.record("otel.name", request.method().as_str());
        span.record("otel.kind", "server");
        trace::adopt_caller_trace(&span, request.headers());
    }
    span
}

/// Names the current request's server span after its route (a template such as
/// `/v1/shares/{id}`, never the raw path). Called before the handler runs: the span takes
/// its name when it starts, at its first child or its end.
pub fn name_by_route(method: &str, route: &str) {
    if trace::enabled() {
        let span = Span::current();
        span.record("http.route", route);
        span.record("otel.name", format!("{method} {route}"));
    }
}

/// Records the response's status on the request's span (an error status for a 5xx: a 4xx
/// is the caller's error, not the server's), then logs as tower-http does by default.
#[derive(Clone, Copy, Default)]
pub struct RecordStatus;

impl<B> OnResponse<B> for RecordStatus {
    fn on_response(self, response: &Response<B>, latency: Duration, span: &Span) {
        if trace::enabled() {
            let status = response.status();
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("error.type", status.as_str());
                span.record("otel.status_code", "ERROR");
            }
        }
        DefaultOnResponse::default().on_response(response, latency, span);
    }
}

/// Gives the response the `traceparent` of the request's span.
pub async fn echo_traceparent(mut response: axum::response::Response) -> axum::response::Response {
    trace::inject(&Span::current(), response.headers_mut());
    response
}
