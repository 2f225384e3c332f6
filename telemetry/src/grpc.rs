//! A server span per gRPC call: [`ServerTraceLayer`] wraps a tonic server so that each call
//! runs in a span named after its method (`lanes.v1.ClientService/Enqueue`), the child of
//! the caller's context from the request metadata, with the gRPC status recorded. Health
//! checks and reflection get none (probes would flood the traces). While tracing is off the
//! layer only checks a flag.

use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tracing::Span;
use tracing::field::Empty;
use tracing::instrument::{Instrument as _, Instrumented};

/// The tower layer; add it with `Server::builder().layer(ServerTraceLayer)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl<S> tower::Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

/// The service made by [`ServerTraceLayer`].
#[derive(Debug, Clone)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for ServerTrace<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Traced<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = server_span(&req);
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Traced {
            inner: inner.instrument(span),
        }
    }
}

fn server_span<B>(req: &http::Request<B>) -> Span {
    if !crate::enabled() {
        return Span::none();
    }
    let path = req.uri().path();
    if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
        return Span::none();
    }
    let method = path.trim_start_matches('/');
    let span = tracing::info_span!(
        "grpc",
        otel.name = method,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
        trace_id = Empty,
    );
    crate::adopt(&span, crate::extract_headers(req.headers()));
    span
}

pin_project! {
    /// The call's future, run in its span; records the gRPC status of the answer.
    pub struct Traced<F> {
        #[pin]
        inner: Instrumented<F>,
    }
}

impl<F, R, E> Future for Traced<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let out = ready!(this.inner.as_mut().poll(cx));
        let span = this.inner.as_ref().get_ref().span();
        if !span.is_none()
            && let Ok(resp) = &out
        {
            // An error is answered "trailers-only": its status is in the headers. A success's
            // status comes later, in the trailers, and is 0.
            let code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            span.record("rpc.grpc.status_code", code);
            if code != 0 {
                span.record("otel.status_code", "ERROR");
            }
        }
        Poll::Ready(out)
    }
}
