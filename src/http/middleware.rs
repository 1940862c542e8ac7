//! Request-wide concerns: Prometheus metrics (and the server span's route), rate limits (per client
//! address before authentication, per authenticated principal after it), and turning bare
//! error responses (unknown method, timeout, panic) into problem+json.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::ApiError;
use super::error::{PROBLEM_JSON, problem_for_status};

/// The route label of a request that matched no route: one value, whatever the path.
const UNMATCHED_ROUTE: &str = "unmatched";

/// The method label: a standard method, or `other` for anything a caller made up (each new
/// label value is a new series in every scrape, so callers must not choose them).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts requests and times them, by route template (not by raw path: ids would explode the
/// label set), method and status; every label takes a bounded set of values. Names the
/// request's server span after the route too (only here is the route known).
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, |p| p.as_str())
        .to_owned();
    let method = method_label(request.method());
    super::server_span::name_by_route(method, &route);
    let response = next.run(request).await;
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// Gives every error response the API's one shape, whoever produced it.
pub async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    // The console's pages answer errors in HTML, for people (`console::OwnPage`).
    let is_page = response.extensions().get::<super::console::OwnPage>().is_some();
    if status.as_u16() < 400 || is_problem || is_page {
        return response;
    }
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => "this route does not take that method; see /openapi.json".to_owned(),
        StatusCode::SERVICE_UNAVAILABLE => "the request took too long and was abandoned; retry later".to_owned(),
        StatusCode::INTERNAL_SERVER_ERROR => "the server failed to handle this request; it has been logged".to_owned(),
        other => other.canonical_reason().unwrap_or("error").to_owned(),
    };
    let (parts, _) = response.into_parts();
    let mut problem = problem_for_status(status, detail);
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().insert(name, value.clone());
        }
    }
    problem
}

/// How fast one caller may call the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per_sec: NonZeroU32,
    pub burst: NonZeroU32,
}

/// A token bucket per key (a client address, or an authenticated principal's subject, kept
/// only as a hash); one replica's limit, not the fleet's.
#[derive(Clone)]
pub struct RateLimit(Arc<DefaultKeyedRateLimiter<u64>>);

/// Buckets kept before idle ones (full again) are dropped.
const MAX_TRACKED_CALLERS: usize = 10_000;

impl RateLimit {
    pub fn new(config: RateLimitConfig) -> Self {
        let quota = Quota::per_second(config.per_sec).allow_burst(config.burst);
        RateLimit(Arc::new(DefaultKeyedRateLimiter::dashmap(quota)))
    }

    /// Takes one request from `key`'s budget, or says how long to wait (429).
    pub fn check(&self, key: impl Hash) -> Result<(), ApiError> {
        if self.0.len() > MAX_TRACKED_CALLERS {
            self.0.retain_recent();
        }
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        self.0.check_key(&hasher.finish()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }
}

/// The per-principal limit, checked by the `Caller` extractor once the caller is known
/// (the credential headers cannot key it: a caller chooses them freely).
#[derive(Clone)]
pub struct PrincipalRateLimit(pub Option<RateLimit>);

/// Answers 429 with `Retry-After` to a client address over its budget, before any
/// authentication (so junk credentials cost the broker and Keystone little). Health,
/// readiness and metrics are never limited: probes must see the truth.
pub async fn limit_rate(State(limit): State<Option<RateLimit>>, request: Request, next: Next) -> Response {
    let Some(limit) = limit.filter(|_| request.uri().path().starts_with("/v1/")) else {
        return next.run(request).await;
    };
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    match limit.check(address) {
        Ok(()) => next.run(request).await,
        Err(too_many) => too_many.into_response(),
    }
}
