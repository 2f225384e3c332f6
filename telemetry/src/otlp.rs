//! The OTLP span exporter, configured by the standard OpenTelemetry variables:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns it on,
//! `OTEL_EXPORTER_OTLP_PROTOCOL` (or `…_TRACES_PROTOCOL`) picks `grpc` (default, port 4317)
//! or `http/protobuf` (port 4318), `OTEL_SERVICE_NAME` overrides the binary's default name.
//! The exporter itself reads the endpoint, headers, timeout and `OTEL_BSP_*` batch settings;
//! the SDK reads `OTEL_TRACES_SAMPLER` (default: parent-based, always on).

use anyhow::{Context as _, bail};
use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{SpanExporter, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::Arc;
use std::time::Duration;
use tracing::Subscriber;
use tracing_subscriber::Layer;
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
            .with_http_client(OnRuntime::new()?)
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

/// The HTTP client of the http/protobuf exporter: hyper, run on the Tokio runtime. The SDK
/// exports from a thread of its own, where hyper (which needs the runtime's reactor) cannot
/// run directly; the request is spawned onto the runtime and awaited from there.
#[derive(Debug)]
struct OnRuntime {
    client: Arc<dyn HttpClient>,
    rt: tokio::runtime::Handle,
}

impl OnRuntime {
    /// Fails outside a Tokio runtime.
    fn new() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Handle::try_current()
            .context("the OTLP HTTP exporter must be set up inside the Tokio runtime")?;
        let timeout = Duration::from_secs(10);
        let client = opentelemetry_http::hyper::HyperClient::with_default_connector(timeout, None);
        Ok(OnRuntime {
            client: Arc::new(client),
            rt,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        match self
            .rt
            .spawn(async move { client.send_bytes(request).await })
            .await
        {
            Ok(answer) => answer,
            Err(e) => Err(Box::new(e)),
        }
    }
}

/// The layer turning `tracing` spans (those `RUST_LOG` lets through; ours are `info`) into
/// OpenTelemetry spans, and the log events inside them into span events.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("lanes"))
        // Parents come from the `tracing` span tree, not from a thread-local OpenTelemetry
        // context: the tree is what async tasks carry across threads.
        .with_context_activation(false)
}
