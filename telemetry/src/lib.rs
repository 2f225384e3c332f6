//! Logging and tracing for the three Lanes binaries (coordinator, agent, gateway), set up the
//! same way by one call to [`init`]:
//!
//! - logs on stderr filtered by `RUST_LOG` (default `info`): human text, or JSON lines with
//!   `LOG_FORMAT=json` — event and span fields flattened to the top level, so a line inside a
//!   job's span carries `job.id`, `queue`, `lane` and `trace_id` ([`logs`]);
//! - OpenTelemetry traces exported over OTLP ([`otlp`]) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set;
//! - W3C trace-context propagation over gRPC metadata and HTTP headers ([`propagate`]) and a
//!   server span per gRPC call ([`grpc`]).
//!
//! Must never: cost more than an atomic load per call when tracing is off, or lose spans at a
//! clean exit (call [`Telemetry::shutdown`]).

pub mod grpc;
pub mod logs;
pub mod otlp;
pub mod propagate;

pub use propagate::{
    adopt, adopt_traceparent, current_traceparent, extract_headers, extract_metadata,
    inject_headers, inject_metadata, valid_traceparent, valid_tracestate,
};

use std::sync::atomic::{AtomicBool, Ordering};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// True once OTLP export is on; every propagation helper checks it first.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// True when spans are exported (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// How to set up logging and tracing.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `service.name` when `OTEL_SERVICE_NAME` is unset (`lanes-coordinator`, …).
    pub service: &'static str,
    /// JSON lines instead of text.
    pub json: bool,
}

impl Settings {
    /// Settings from the environment: `LOG_FORMAT=json` asks for JSON lines.
    pub fn from_env(service: &'static str) -> Self {
        let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
        Settings { service, json }
    }
}

/// Keeps the span exporter alive; [`Telemetry::shutdown`] flushes it.
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. Runs the blocking SDK call
    /// off the async threads: the export itself needs the runtime (tonic, hyper) to progress,
    /// which a current-thread runtime blocked in `shutdown` could not.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            eprintln!("flushing traces at exit failed: {e}");
        }
    }
}

/// Installs the global subscriber: logs always, the OpenTelemetry layer when an OTLP endpoint
/// is configured. Call once, early, inside the Tokio runtime (the exporter's channel needs
/// it). Fails on an unusable OTLP setting (unknown protocol, malformed endpoint).
pub fn init(settings: Settings) -> anyhow::Result<Telemetry> {
    let provider = otlp::provider(settings.service)?;
    let otel = provider.as_ref().map(otlp::layer);
    tracing_subscriber::registry()
        .with(logs::filter())
        .with(logs::layer(settings.json))
        .with(otel)
        .try_init()?;
    if provider.is_some() {
        ENABLED.store(true, Ordering::Relaxed);
        tracing::info!(service = %otlp::service_name(settings.service), "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}
