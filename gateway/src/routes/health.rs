//! Liveness, readiness, Prometheus metrics and this API's OpenAPI document. Open routes:
//! they reveal no job data.

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok` (healthz) or `ready` (readyz).
    pub status: String,
}

/// The process is up (no coordinator call).
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Probe)))]
pub async fn healthz() -> Json<Probe> {
    Json(Probe {
        status: "ok".into(),
    })
}

/// Ready while the coordinator answers its gRPC health check SERVING; 503 (the JSON error
/// shape, Retry-After) while it is unreachable, does not answer within 2 s, or reports
/// NOT_SERVING (its graceful drain, or its database out of reach).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, body = Probe),
        (status = 503, description = "Not ready (coordinator_unavailable); Retry-After set",
            body = ErrorBody, headers(("Retry-After" = u32, description = "Seconds to wait")))))]
pub async fn readyz(State(st): State<AppState>) -> Result<Json<Probe>, ApiError> {
    st.coord.ready().await.map_err(ApiError::unavailable)?;
    Ok(Json(Probe {
        status: "ready".into(),
    }))
}

/// This document: every route, body and answer of the gateway (OpenAPI 3.1).
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn openapi(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.openapi.get().cloned().unwrap_or_default(),
    )
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
