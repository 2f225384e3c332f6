//! Request metrics and logs: a counter by route, method and status and a latency histogram
//! by route, recorded by one middleware around every route (5xx answers are logged as
//! warnings, the rest at debug). The route label is the matched pattern
//! (`/api/jobs/{id}`), never the raw path, so label cardinality stays bounded. Every metric
//! has its HELP line; a counter without labels is exported at 0 from the start.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Instant;

/// Requests answered, by `route`, `method` and `status`.
pub const REQUESTS: &str = "lanes_gateway_http_requests_total";
/// Request latency in seconds, by `route` and `method`.
pub const DURATION: &str = "lanes_gateway_http_request_duration_seconds";
/// Jobs created through the gateway, by `queue`.
pub const ENQUEUED: &str = "lanes_gateway_jobs_enqueued_total";
/// Agents woken by wake-worker.
pub const WOKEN: &str = "lanes_gateway_workers_woken_total";

/// Installs the process-wide Prometheus recorder.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let buckets = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DURATION.into()), &buckets)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

/// The HELP lines, and the label-free counters at 0 (so a scrape sees them before the
/// first event and `rate()` has a starting point).
fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "HTTP requests answered, by route pattern, method and status"
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "HTTP request handling time in seconds, by route pattern and method"
    );
    metrics::describe_counter!(
        ENQUEUED,
        "Jobs created through the gateway (an idempotent repeat is not counted), by queue"
    );
    metrics::describe_counter!(WOKEN, "Agents woken by POST /api/wake-worker");
    metrics::counter!(WOKEN).absolute(0);
}

/// Middleware: times the request and counts its answer.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status();
    let took = start.elapsed();
    if status.is_server_error() {
        tracing::warn!(%route, %method, status = status.as_u16(), ms = took.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(%route, %method, status = status.as_u16(), ms = took.as_millis() as u64, "request");
    }
    let status = status.as_u16().to_string();
    metrics::histogram!(DURATION, "route" => route.clone(), "method" => method.clone())
        .record(took.as_secs_f64());
    metrics::counter!(REQUESTS, "route" => route, "method" => method, "status" => status)
        .increment(1);
    resp
}
