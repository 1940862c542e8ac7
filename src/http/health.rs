//! Liveness, readiness and metrics: for load balancers, orchestrators and Prometheus.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::db;

/// Health of one dependency, or of the process.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: String,
    /// What is wrong, when something is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The process is alive. Touches nothing else.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        detail: None,
    })
}

/// Ready for traffic: the database answers and every migration is applied.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = Health),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, axum::Json<Health>) {
    let unavailable = |detail: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health {
                status: "unavailable".into(),
                detail: Some(detail),
            }),
        )
    };
    match db::migrations_applied(&state.pool).await {
        Ok(true) => (
            StatusCode::OK,
            axum::Json(Health {
                status: "ok".into(),
                detail: None,
            }),
        ),
        Ok(false) => unavailable("database migrations are not all applied; run `glance-share-broker migrate`".into()),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            unavailable("the database does not answer".into())
        }
    }
}

/// Prometheus metrics (text format 0.0.4, every family with `# HELP` and `# TYPE`): requests
/// by route and status, latency, database pool use, shares by state, the job queue, webhook
/// deliveries, the audit chain, calls to OpenStack. See docs/operations.md.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let size = state.pool.size();
    let idle = state.pool.num_idle() as u32;
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("db_pool_connections", "state" => "in_use").set(f64::from(size.saturating_sub(idle)));
    metrics::gauge!("db_pool_max_connections").set(f64::from(state.pool.options().get_max_connections()));
    match crate::db::stats::read(&state.pool).await {
        Ok(stats) => crate::metrics::record_stats(&stats),
        // The process's own figures are still worth a scrape; the gauges keep their last value.
        Err(e) => tracing::warn!(error = %e, "metrics: reading the database's figures failed"),
    }
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
