//! Liveness, readiness and Prometheus metrics. Open routes: they reveal no job data.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// Why not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The process is up (no coordinator call).
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Probe)))]
pub async fn healthz() -> Json<Probe> {
    Json(Probe {
        status: "ok".into(),
        error: None,
    })
}

/// The coordinator answers its gRPC health check; 503 otherwise.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Probe), (status = 503, body = Probe)))]
pub async fn readyz(State(st): State<AppState>) -> (StatusCode, Json<Probe>) {
    match st.coord.ready().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Probe {
                status: "ready".into(),
                error: None,
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Probe {
                status: "unavailable".into(),
                error: Some(e),
            }),
        ),
    }
}

/// Prometheus text exposition: requests by route and status, latency histogram, jobs
/// enqueued, workers woken.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    st.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}
