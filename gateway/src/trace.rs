//! The request span: while tracing is on, each HTTP request runs in a server span named
//! after its route (`POST /api/jobs`), the child of the caller's W3C `traceparent` if it sent
//! one. The coordinator calls made for the request carry it on (see `coordinator::Token`),
//! so a job's trace starts here. Off: one flag check per request.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;
use tracing::field::Empty;

/// Middleware: runs the request in its span and records the answer's status.
pub async fn request(req: Request, next: Next) -> Response {
    if !lanes_telemetry::enabled() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = Empty,
        otel.status_code = Empty,
        trace_id = Empty,
    );
    lanes_telemetry::adopt(&span, lanes_telemetry::extract_headers(req.headers()));
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", resp.status().as_u16());
    if resp.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    resp
}
