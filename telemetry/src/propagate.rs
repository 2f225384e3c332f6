//! W3C trace-context propagation: inject the current span's context into outgoing gRPC
//! metadata or HTTP headers, extract a caller's context from incoming ones, and make a
//! `tracing` span the child of such a context (recording its `trace_id` field for the logs).
//!
//! Every function is a no-op (one atomic load) while tracing is off.

use crate::enabled;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Longest `tracestate` accepted from outside (W3C: 32 members of at most 256 bytes; real
/// ones are far shorter).
const MAX_TRACESTATE: usize = 512;

fn propagator() -> TraceContextPropagator {
    TraceContextPropagator::new()
}

/// Puts the current span's `traceparent` (and `tracestate`) into gRPC request metadata.
pub fn inject_metadata(metadata: &mut MetadataMap) {
    if enabled() {
        let cx = Span::current().context();
        propagator().inject_context(&cx, &mut MetadataInjector(metadata));
    }
}

/// Puts the current span's `traceparent` (and `tracestate`) into HTTP headers.
pub fn inject_headers(headers: &mut http::HeaderMap) {
    if enabled() {
        let cx = Span::current().context();
        propagator().inject_context(&cx, &mut HeaderInjector(headers));
    }
}

/// The caller's context from HTTP headers (empty when none, malformed, or tracing is off).
pub fn extract_headers(headers: &http::HeaderMap) -> Context {
    if !enabled() {
        return Context::new();
    }
    propagator().extract(&HeaderExtractor(headers))
}

/// The caller's context from gRPC metadata (empty when none, malformed, or tracing is off).
pub fn extract_metadata(metadata: &MetadataMap) -> Context {
    if !enabled() {
        return Context::new();
    }
    propagator().extract(&MetadataExtractor(metadata))
}

/// Makes `span` a child of `parent` (when it holds a span) and records the span's
/// `trace_id` field. Call before the span is first entered: once entered, its parent is
/// fixed.
pub fn adopt(span: &Span, parent: Context) {
    if !enabled() || span.is_none() {
        return;
    }
    if parent.span().span_context().is_valid() {
        // Fails only for a span already started or filtered out: it then keeps its own trace.
        let _ = span.set_parent(parent);
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
}

/// [`adopt`] with a context stored as text (a job's `traceparent` and `tracestate`).
pub fn adopt_traceparent(span: &Span, traceparent: &str, tracestate: &str) {
    if !enabled() {
        return;
    }
    let carrier = Stored {
        traceparent,
        tracestate,
    };
    adopt(span, propagator().extract(&carrier));
}

/// The current span's `traceparent` and `tracestate` (empty when none), when tracing is on
/// and the current span belongs to a trace.
pub fn current_traceparent() -> Option<(String, String)> {
    if !enabled() {
        return None;
    }
    let mut out = std::collections::HashMap::new();
    propagator().inject_context(&Span::current().context(), &mut out);
    let traceparent = out.remove("traceparent")?;
    Some((traceparent, out.remove("tracestate").unwrap_or_default()))
}

/// True for a well-formed W3C `traceparent` (version 00 layout: 55 characters).
pub fn valid_traceparent(t: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = t.split('-').collect();
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

/// True for a `tracestate` worth storing: printable ASCII, at most 512 bytes.
pub fn valid_tracestate(t: &str) -> bool {
    t.len() <= MAX_TRACESTATE && t.bytes().all(|b| (0x20..0x7f).contains(&b))
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                tonic::metadata::KeyRef::Ascii(k) => Some(k.as_str()),
                tonic::metadata::KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// A context stored with a job.
struct Stored<'a> {
    traceparent: &'a str,
    tracestate: &'a str,
}

impl Extractor for Stored<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(self.traceparent),
            "tracestate" if !self.tracestate.is_empty() => Some(self.tracestate),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent("garbage"));
        assert!(!valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"
        ));
        assert!(valid_tracestate("congo=t61rcWkgMzE"));
        assert!(!valid_tracestate("a=\u{e9}"));
        assert!(!valid_tracestate(&"a".repeat(600)));
    }

    #[test]
    fn off_means_nothing_is_injected() {
        let mut md = MetadataMap::new();
        inject_metadata(&mut md);
        assert!(md.is_empty());
        assert!(current_traceparent().is_none());
    }
}
