//! The log layer: stderr, filtered by `RUST_LOG` (default `info`), as human text (colours only
//! on a terminal) or as JSON lines. A JSON line holds `timestamp`, `level`, `target`, the
//! event's fields (`message`, …) and the fields of every span it happened in, flattened to
//! the top level — so a log search for `job.id` or `trace_id` finds every line about a job.

use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::registry::LookupSpan;

/// `RUST_LOG`, or `info` when it is unset or unparsable. One global filter for logs and spans
/// alike (per-layer filters lost span context under load in our tests): spans are `info`, so
/// a `RUST_LOG` quieter than `info` for a crate also drops that crate's spans from traces.
pub fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The log layer: JSON lines when `json`, else text.
pub fn layer<S>(json: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    if json {
        let mut layer = json_subscriber::JsonLayer::stderr();
        layer
            .with_timer("timestamp", tracing_subscriber::fmt::time::SystemTime)
            .with_level("level")
            .with_target("target")
            .with_flattened_event()
            .with_top_level_flattened_span_list();
        layer.boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    }
}
