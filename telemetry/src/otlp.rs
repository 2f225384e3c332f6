//! The OTLP span exporter, configured by the standard OpenTelemetry variables:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns it on,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (or `…_TRACES_PROTOCOL`) picks `grpc` (default, port 4317)
//! or `http/protobuf` (port 4318), `OTEL_SERVICE_NAME` overrides the binary's default name.
//! The exporter itself reads the endpoint, headers, timeout and `OTEL_BSP_*` batch settings;
//! the SDK reads `OTEL_TRACES_SAMPLER` (default: parent-based, always on).

use anyhow::{Context as _, bail};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::SpanExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// Variables that turn export on.
const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];
/// Variables that choose the protocol, the traces-specific one first.
const PROTOCOL_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];

/// The first of `vars` that is set and not blank.
fn var(vars: &[&str]) -> Option<(String, String)> {
    vars.iter().find_map(|name| {
        let v = std::env::var(name).ok()?;
        (!v.trim().is_empty()).then(|| (name.to_string(), v.trim().to_owned()))
    })
}

/// The service name: `OTEL_SERVICE_NAME`, else `default`.
pub fn service_name(default: &str) -> String {
    var(&["OTEL_SERVICE_NAME"]).map_or_else(|| default.to_owned(), |(_, v)| v)
}

/// The tracer provider, or `None` when no endpoint is configured (tracing off).
pub fn provider(default_service: &str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if var(&ENDPOINT_VARS).is_none() {
        return Ok(None);
    }
    let exporter = match var(&PROTOCOL_VARS) {
        None => grpc()?,
        Some((_, p)) if p == "grpc" => grpc()?,
        Some((_, p)) if p == "http/protobuf" => SpanExporter::builder()
            .with_http()
            .build()
            .context("OTLP http/protobuf exporter")?,
        Some((name, p)) => bail!("{name} is {p:?}; supported: grpc, http/protobuf"),
    };
    let resource = Resource::builder()
        .with_service_name(service_name(default_service))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

fn grpc() -> anyhow::Result<SpanExporter> {
    SpanExporter::builder()
        .with_tonic()
        .build()
        .context("OTLP gRPC exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")
}

/// The layer turning `tracing` spans at INFO and above into OpenTelemetry spans. Its level is
/// fixed, independent of `RUST_LOG`, so quieter logs never break a trace.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("lanes"))
        .with_filter(Targets::new().with_default(LevelFilter::INFO))
}
