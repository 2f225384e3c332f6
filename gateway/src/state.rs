//! What every handler shares: the coordinator clients, the keys, the limits, the stats
//! cache and the metrics handle. Nothing here is a source of truth.

use crate::auth::Keys;
use crate::config::Cli;
use crate::coordinator::{Coordinator, StatsCache};
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Room for the fields around a payload in one enqueue body.
const ENVELOPE_BYTES: usize = 64 * 1024;

/// Size and count limits of requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload of one job (serialized JSON), bytes.
    pub max_payload: usize,
    /// Largest body of POST /api/jobs.
    pub enqueue_body: usize,
    /// Largest body of POST /api/jobs/batch.
    pub batch_body: usize,
    /// Largest body of every other route.
    pub small_body: usize,
    /// Most agents one wake-worker call wakes.
    pub max_wake: u32,
}

impl Limits {
    /// The limits configured on the command line.
    pub fn from_cli(cli: &Cli) -> Self {
        Limits {
            max_payload: cli.max_payload_bytes,
            enqueue_body: cli.max_payload_bytes.saturating_add(ENVELOPE_BYTES),
            batch_body: cli.max_batch_bytes,
            small_body: ENVELOPE_BYTES,
            max_wake: cli.max_wake,
        }
    }
}

/// The handlers' shared state. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The coordinator.
    pub coord: Coordinator,
    /// API keys.
    pub keys: Arc<Keys>,
    /// Request limits.
    pub limits: Limits,
    /// Recent stats for estimates.
    pub stats: Arc<StatsCache>,
    /// Renders /metrics.
    pub metrics: PrometheusHandle,
    /// The OpenAPI document, as served (set once the router is assembled).
    pub openapi: Arc<OnceLock<String>>,
}

impl AppState {
    /// Builds the state from the command line.
    pub fn new(cli: &Cli, metrics: PrometheusHandle) -> anyhow::Result<Self> {
        Ok(AppState {
            coord: Coordinator::connect(cli)?,
            keys: Arc::new(cli.keys()?),
            limits: Limits::from_cli(cli),
            stats: Arc::new(StatsCache::new(Duration::from_millis(cli.stats_cache_ms))),
            metrics,
            openapi: Arc::new(OnceLock::new()),
        })
    }
}
