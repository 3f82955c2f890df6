//! The orchestrator's HTTP port: `/metrics` (Prometheus text), `/health`
//! (JSON) and the trajectory viewer (`/trajectories`, see [`crate::viewer`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use rlm_common::server::Shutdown;

use crate::health::{HealthChecks, OverallStatus};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<HealthChecks>,
    pub shutdown: Shutdown,
    /// The trajectory viewer's store and API keys.
    pub viewer: crate::viewer::Viewer,
}

pub fn router(state: HttpState) -> Router {
    let viewer = crate::viewer::router(state.viewer.clone());
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
        .merge(viewer)
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// 200 when healthy or degraded, 503 when unhealthy (so plain HTTP probes work too).
async fn health(State(state): State<HttpState>) -> impl IntoResponse {
    let report = state.health.report(state.shutdown.is_announced()).await;
    state.metrics.sandbox_up.set(i64::from(
        report.components.sandbox == crate::health::ComponentStatus::Healthy,
    ));
    let code = if report.status == OverallStatus::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, axum::Json(report))
}
