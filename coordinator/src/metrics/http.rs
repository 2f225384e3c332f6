//! The metrics listener: `GET /metrics` in the Prometheus text format on its own port
//! (`--metrics-listen`), apart from the gRPC port. Unauthenticated, as Prometheus scrapes
//! are; it reveals counts and queue names only. Also runs the exporter's upkeep (draining
//! histogram samples) on a timer, so memory stays flat when nobody scrapes.

use super::sampler::Sampler;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often the exporter's upkeep runs between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

struct Scrape {
    handle: PrometheusHandle,
    sampler: Sampler,
}

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    sampler: Sampler,
    stop: CancellationToken,
) {
    let state = Arc::new(Scrape { handle, sampler });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    let shutdown = stop.clone();
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await });
    let upkeep = async {
        let mut ticker = tokio::time::interval(UPKEEP);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => state.handle.run_upkeep(),
            }
        }
    };
    let (served, ()) = tokio::join!(server, upkeep);
    if let Err(e) = served {
        tracing::warn!(error = %e, "metrics listener failed");
    }
}

async fn metrics(State(s): State<Arc<Scrape>>) -> impl IntoResponse {
    s.sampler.refresh().await;
    s.handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.handle.render(),
    )
}
