//! One error type for the whole API and one response shape: RFC 9457 problem+json.
//! Server-side failures are logged here and answered with an opaque body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::openapi::path::{HttpMethod, Operation, ParameterIn};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi as Spec, Ref, RefOr, ResponseBuilder, Type};
use utoipa::{Modify, ToSchema};

use crate::domain::FieldError;
use crate::domain::impact::{Dependent, Impact, Unchecked};

pub const PROBLEM_JSON: &str = "application/problem+json";
const TYPE_PREFIX: &str = "urn:glance-share-broker:problem:";

/// An RFC 9457 problem document: every error the API returns has this shape.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem, e.g. `urn:glance-share-broker:problem:validation-failed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Each field that broke a rule, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// What depends on the share's image in the consumer project, for `share-in-use` and
    /// `dependents-unchecked` problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependents: Option<Vec<Dependent>>,
    /// The services that could not be checked, for the same problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchecked: Option<Vec<Unchecked>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    MalformedBody(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("the body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{detail}")]
    Conflict { detail: String, errors: Vec<FieldError> },
    /// Something in the consumer project depends on the share's image.
    #[error("{detail}")]
    InUse { detail: String, impact: Impact },
    /// Nova, Cinder or Glance could not say what depends on the share's image.
    #[error("{detail}")]
    DependentsUnchecked { detail: String, impact: Impact },
    #[error("the resource changed: its ETag no longer matches If-Match")]
    PreconditionFailed,
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still being processed; retry later")]
    IdempotencyKeyInFlight,
    #[error("the database is unavailable; retry later")]
    Unavailable,
    #[error("too many requests from this caller; retry in {0} s")]
    TooManyRequests(u64),
    /// Keystone or Glance cannot answer (or no cloud is configured to ask).
    #[error("{0}")]
    Upstream(String),
    /// Keystone or Glance cannot answer now, or the API's budget for them is spent: come
    /// back after `retry_after` seconds (sent as Retry-After).
    #[error("{detail}")]
    UpstreamLater { detail: String, retry_after: u64 },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// How long a caller refused for want of an answer from Nova, Cinder or Glance is told to
/// wait (Retry-After).
const DEPENDENTS_RETRY_SECS: u64 = 30;

impl ApiError {
    /// Keystone or Glance did not answer (`what` says what could not be done): 503, with
    /// Retry-After when the answer (or the API's own Glance budget) says when to come back;
    /// any other failure is ours (500).
    pub fn openstack(what: &str, error: crate::openstack::CallError) -> Self {
        match error {
            crate::openstack::CallError::Transient { message, retry_after } => {
                let detail = format!("{what} ({message}); retry later");
                match retry_after {
                    // Whole seconds, at least one: Retry-After takes no fractions.
                    Some(after) => ApiError::UpstreamLater {
                        detail,
                        retry_after: after.as_secs_f64().ceil().max(1.0) as u64,
                    },
                    None => ApiError::Upstream(detail),
                }
            }
            e => ApiError::Internal(anyhow::anyhow!("{what}: {e}")),
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("no {what} with that id"))
    }

    pub fn field(field: &str, reason: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, reason)])
    }

    pub(super) fn status_and_slug(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation-failed"),
            ApiError::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed-body"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
            ApiError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            ApiError::InUse { .. } => (StatusCode::CONFLICT, "share-in-use"),
            ApiError::DependentsUnchecked { .. } => (StatusCode::SERVICE_UNAVAILABLE, "dependents-unchecked"),
            ApiError::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, "precondition-failed"),
            ApiError::IdempotencyKeyReused => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-key-reused"),
            ApiError::IdempotencyKeyInFlight => (StatusCode::CONFLICT, "idempotency-key-in-flight"),
            ApiError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited"),
            ApiError::Upstream(_) | ApiError::UpstreamLater { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "upstream-unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // SQLSTATE class 08 is a broken connection; 57P01-57P03 a server shutting down or
        // starting; 25006 a standby (or a demoted primary) refusing a write during a
        // failover: the database is away, not the request wrong.
        let database_away = e.as_database_error().and_then(|d| d.code()).is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "25006")
        });
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            _ if database_away => {
                tracing::warn!(error = %e, "database unavailable");
                ApiError::Unavailable
            }
            other => ApiError::Internal(other.into()),
        }
    }
}

/// Builds a problem response for a status with no more specific story (404 route, 405, 408...).
pub fn problem_for_status(status: StatusCode, detail: String) -> Response {
    let slug = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase()
        .replace(' ', "-");
    problem_response(status, &slug, detail, Vec::new(), None)
}

fn problem_response(
    status: StatusCode,
    slug: &str,
    detail: String,
    errors: Vec<FieldError>,
    impact: Option<Impact>,
) -> Response {
    let (dependents, unchecked) = match impact {
        Some(impact) => (Some(impact.dependents), Some(impact.unchecked)),
        None => (None, None),
    };
    let problem = Problem {
        kind: format!("{TYPE_PREFIX}{slug}"),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        errors,
        dependents,
        unchecked,
    };
    let mut response = (status, axum::Json(problem)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug) = self.status_and_slug();
        let detail = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = ?e, "request failed");
                "the server failed to handle this request; it has been logged".to_owned()
            }
            other => other.to_string(),
        };
        let unauthorized = matches!(self, ApiError::Unauthorized(_));
        let retry_after = match self {
            ApiError::TooManyRequests(secs) | ApiError::UpstreamLater { retry_after: secs, .. } => Some(secs),
            ApiError::DependentsUnchecked { .. } => Some(DEPENDENTS_RETRY_SECS),
            _ => None,
        };
        let (errors, impact) = match self {
            ApiError::Validation(errors) | ApiError::Conflict { errors, .. } => (errors, None),
            ApiError::InUse { impact, .. } | ApiError::DependentsUnchecked { impact, .. } => (Vec::new(), Some(impact)),
            _ => (Vec::new(), None),
        };
        let mut response = problem_response(status, slug, detail, errors, impact);
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="glance-share-broker""#),
            );
        }
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Adds to every operation of the spec the problems any of them can answer, so that each
/// handler documents only its own: 500 and 503 for all; under `/v1/`, 422 (a bad path,
/// query or header) and 429 (the caller's rate limit); 401 where a credential is needed;
/// 400, 413 and 415 where a body is read; 404 where the path names a resource; 412 where
/// `If-Match` is taken (the `IfMatch` extractor lists it). A handler
/// that declares one of these itself (a 422 naming its body's fields) keeps its own, and the
/// problems a handler declares by status and description alone are given the `Problem` body.
pub struct CommonProblems;

impl CommonProblems {
    /// What the problem means wherever it is answered.
    fn description(status: StatusCode) -> &'static str {
        match status {
            StatusCode::BAD_REQUEST => "Malformed JSON",
            StatusCode::UNAUTHORIZED => "No credential, or a bad one (an unknown or revoked API key, an invalid token)",
            StatusCode::NOT_FOUND => "No such resource (or not one the caller may see)",
            StatusCode::PAYLOAD_TOO_LARGE => "Body too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Not JSON",
            StatusCode::UNPROCESSABLE_ENTITY => "A bad path, query or header value",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests from this caller or address",
            StatusCode::PRECONDITION_FAILED => "The ETag changed",
            StatusCode::SERVICE_UNAVAILABLE => {
                "The database, Keystone or Glance is unavailable, the request took too long, or the API's \
                 budget for Glance is spent; retry later"
            }
            other => other.canonical_reason().unwrap_or("Error"),
        }
    }

    fn statuses(method: &HttpMethod, operation: &Operation, path: &str) -> Vec<StatusCode> {
        let mut statuses = vec![StatusCode::INTERNAL_SERVER_ERROR, StatusCode::SERVICE_UNAVAILABLE];
        if path.starts_with("/v1/") {
            statuses.extend([StatusCode::UNPROCESSABLE_ENTITY, StatusCode::TOO_MANY_REQUESTS]);
        }
        if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
            statuses.push(StatusCode::UNAUTHORIZED);
        }
        if matches!(method, HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch) {
            statuses.extend([
                StatusCode::BAD_REQUEST,
                StatusCode::PAYLOAD_TOO_LARGE,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ]);
        }
        if path.contains('{') {
            statuses.push(StatusCode::NOT_FOUND);
        }
        let conditional = operation
            .parameters
            .iter()
            .flatten()
            .any(|p| p.name == "If-Match" && p.parameter_in == ParameterIn::Header);
        if conditional {
            statuses.push(StatusCode::PRECONDITION_FAILED);
        }
        statuses
    }
}

impl Modify for CommonProblems {
    fn modify(&self, spec: &mut Spec) {
        for (path, item) in spec.paths.paths.iter_mut() {
            let operations = [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Put, item.put.as_mut()),
                (HttpMethod::Patch, item.patch.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                // A handler names its own problems by status and description only: each is
                // a problem+json `Problem`.
                for (code, response) in operation.responses.responses.iter_mut() {
                    if let (true, RefOr::T(response)) = (code.parse::<u16>().is_ok_and(|c| c >= 400), response)
                        && response.content.is_empty()
                    {
                        response.content.insert(
                            PROBLEM_JSON.to_owned(),
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("Problem")))
                                .build(),
                        );
                    }
                }
                for status in Self::statuses(&method, operation, path) {
                    let code = status.as_str().to_owned();
                    if operation.responses.responses.contains_key(&code) {
                        continue;
                    }
                    let mut response = ResponseBuilder::new().description(Self::description(status)).content(
                        PROBLEM_JSON,
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("Problem")))
                            .build(),
                    );
                    // Sent with every 429, and with a 503 whenever the wait is known.
                    if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
                        response = response.header(
                            "Retry-After",
                            HeaderBuilder::new()
                                .schema(utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer))
                                .description(Some("Seconds to wait before the next request"))
                                .build(),
                        );
                    }
                    operation.responses.responses.insert(code, response.build().into());
                }
            }
        }
    }
}
