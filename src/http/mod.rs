//! The HTTP API: routes, extractors, errors and the OpenAPI document they generate.
//! Imports `domain` and `db`, `validation` for dry runs, and `openstack` only to validate
//! callers' Keystone tokens, to check who owns an image, and to read what filing needs (a
//! project's images, projects to name as targets); nothing else in the crate imports
//! it but `startup`.

mod access;
mod access_report;
mod audit;
mod console;
mod drift;
mod error;
mod extract;
mod health;
mod idempotency;
mod impact;
mod keystone;
mod middleware;
mod pagination;
mod projects;
mod region;
mod request_id;
mod revocation;
mod serve;
mod server_span;
mod share_requests;
mod shares;
mod spec_limits;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::{PgConnection, PgPool};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::OpenApi as Spec;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use error::CommonProblems;
pub use error::{ApiError, Problem};
pub use keystone::{CacheTimes, TokenValidator};
pub use middleware::RateLimitConfig;
pub use serve::serve;

use crate::db::{self, audit::NewEvent, share_requests::ShareRequest};
use crate::domain::{Action, FieldError, Limits};
use crate::openstack::OpenStack;
use extract::Caller;

/// Largest request body the API reads.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Settings the API needs at run time.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub limits: Limits,
    /// How long a saved `Idempotency-Key` response is replayed.
    pub idempotency_ttl_hours: i64,
    /// Longest time a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// This broker instance's name, as the audit log's observer.
    pub instance: String,
    /// Each authenticated principal's request budget; `None` means unlimited.
    pub rate_limit: Option<RateLimitConfig>,
    /// Each client address's request budget, before authentication; `None` means unlimited.
    pub address_rate_limit: Option<RateLimitConfig>,
    /// Whether webhook URLs may point at internal addresses (GSB_WEBHOOK_ALLOW_PRIVATE).
    pub webhook_allow_private: bool,
    /// How long after a share ended its image is still reconciled (`POST /v1/reconcile`).
    pub reconcile_ended_within: Duration,
    /// How a dry run checks a request (as the worker's validation does).
    pub validation: crate::validation::Settings,
}

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Where auditors' reads and exports go: a standby when `GSB_DATABASE_READ_URL` names
    /// one, else `pool`.
    pub audit_reads: PgPool,
    pub config: Arc<ApiConfig>,
    pub metrics: PrometheusHandle,
    /// The broker's own OpenStack client, when a cloud is configured.
    pub cloud: Option<OpenStack>,
    /// Validates callers' Keystone tokens.
    pub tokens: TokenValidator,
}

impl AppState {
    /// The audit log as auditors read it (sealed on the primary, read from `audit_reads`).
    fn log(&self) -> db::audit::LogReader {
        db::audit::LogReader {
            primary: self.pool.clone(),
            reads: self.audit_reads.clone(),
        }
    }

    /// An audit event about `request`, done by `caller`; callers fill in the rest.
    fn event<'a>(caller: &'a Caller, request: &'a ShareRequest, action: Action) -> NewEvent<'a> {
        NewEvent {
            correlation_id: caller.request_id.as_deref(),
            ..NewEvent::about_request(&caller.initiator, request, action)
        }
    }

    /// Appends `event` inside `tx`, the transaction that made the change it records.
    pub(super) async fn audit(&self, tx: &mut PgConnection, event: NewEvent<'_>) -> Result<(), ApiError> {
        crate::events::record(tx, &self.config.instance, event).await?;
        Ok(())
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "glance-share-broker",
        description = "Brokers OpenStack Glance image shares between projects: requests, approval, \
                       grants carried out by a worker, and an audit log. Errors are RFC 9457 \
                       `application/problem+json`."
    ),
    modifiers(&BearerKey),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "share-requests", description = "Asking for an image to be shared, and deciding"),
        (name = "shares", description = "One image granted to one project"),
        (name = "webhooks", description = "Endpoints told of every request and share change (admins)"),
        (name = "audit", description = "The audit log, its verification, and who had access when"),
        (name = "projects", description = "A project's images, and projects to share with, for filing requests"),
        (name = "drift", description = "Where Glance differs from the broker, and reconciling them"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, spec: &mut Spec) {
        let components = spec.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key made with `glance-share-broker keys create`"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "keystone_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Auth-Token",
                "A Keystone token of an OpenStack user, validated against Keystone; its roles map to the broker's",
            ))),
        );
    }
}

fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            share_requests::create_share_request,
            share_requests::list_share_requests
        ))
        .routes(routes!(share_requests::get_share_request))
        .routes(routes!(share_requests::decide::cancel_share_request))
        .routes(routes!(share_requests::decide::approve_share_request))
        .routes(routes!(share_requests::decide::deny_share_request))
        .routes(routes!(shares::list_shares))
        .routes(routes!(shares::get_share))
        .routes(routes!(shares::accept_share))
        .routes(routes!(shares::reject_share))
        .routes(routes!(revocation::revoke_share))
        .routes(routes!(revocation::cancel_revocation))
        .routes(routes!(impact::get_share_impact))
        .routes(routes!(impact::get_image_dependents))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(audit::list_audit_events))
        .routes(routes!(audit::verify_audit_chain))
        .routes(routes!(audit::get_audit_chain))
        .routes(routes!(drift::reconcile))
        .routes(routes!(drift::list_drift))
        .routes(routes!(access_report::image_access))
        .routes(routes!(access_report::image_access_history))
        .routes(routes!(access_report::project_access_history))
        .routes(routes!(projects::search_projects))
        .routes(routes!(projects::list_project_images))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::metrics))
}

/// The routes and the OpenAPI document they generate, with the problems every operation
/// can answer added to each.
fn routes_and_spec() -> (Router<AppState>, serde_json::Value) {
    let (routes, mut spec) = api_routes().split_for_parts();
    CommonProblems.modify(&mut spec);
    (routes, spec_limits::with_limits(&spec))
}

/// The OpenAPI document, as generated from the routes, with the limits the handlers enforce.
pub fn openapi() -> serde_json::Value {
    routes_and_spec().1
}

/// The whole application: routes, docs and the middleware every request passes through.
pub fn router(state: AppState) -> Router {
    let (routes, spec) = routes_and_spec();
    let request_id = HeaderName::from_static("x-request-id");
    let timeout = state.config.request_timeout;
    let address_limit = state.config.address_rate_limit.map(middleware::RateLimit::new);
    let principal_limit = middleware::PrincipalRateLimit(state.config.rate_limit.map(middleware::RateLimit::new));
    routes
        .route_layer(axum::middleware::from_fn(middleware::record_metrics))
        .merge(SwaggerUi::new("/docs").external_url_unchecked("/openapi.json", spec))
        .merge(console::routes())
        .fallback(|| async { ApiError::NotFound("no such route; see /openapi.json".into()) })
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(axum::Extension(principal_limit))
        .layer(axum::middleware::from_fn_with_state(
            address_limit,
            middleware::limit_rate,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([
                    header::AUTHORIZATION,
                    HeaderName::from_static("x-auth-token"),
                ]))
                .layer(axum::middleware::map_response(request_id::echo_openstack_id))
                .layer(axum::middleware::map_request(request_id::adopt_openstack_id))
                .layer(axum::middleware::map_request(request_id::drop_unacceptable))
                .layer(SetRequestIdLayer::new(
                    request_id.clone(),
                    request_id::MakeOsloRequestId,
                ))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(server_span::request_span)
                        .on_response(server_span::RecordStatus),
                )
                .layer(axum::middleware::map_response(server_span::echo_traceparent))
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(axum::middleware::from_fn(middleware::problem_for_bare_errors))
                .layer(CatchPanicLayer::new())
                .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, timeout)),
        )
}
