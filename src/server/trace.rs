//! The span of each RPC, outermost of the layers: its parent is the caller's W3C `traceparent`
//! when there is one, and everything below (the other layers, the handler, the store) runs
//! inside it. The request log (`request_log.rs`) learns the code and the principal and records
//! them here through [`record_outcome`], once the response has ended.
//!
//! The span is a `tracing` span: with `--otlp-endpoint` the binary adds the OpenTelemetry layer
//! that exports it (see [`otlp_tracer_provider`]); without it the span still carries `trace_id`
//! (the caller's), so log lines of the RPC name the trace they belong to.

use std::task::{Context, Poll};

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Health checks come every few seconds from every probe: below `info`, so that the default
/// filter neither logs nor exports them.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The span's field for the gRPC code (OTel semantic conventions, `rpc.grpc.status_code`).
const STATUS_CODE_FIELD: &str = "rpc.grpc.status_code";
/// The caller as the auth layer named it (OTel `enduser.id`).
const PRINCIPAL_FIELD: &str = "enduser.id";

#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Traced<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = rpc_span(request.uri().path(), request.headers());
        // Entered for the call too, not only for the future: the layers below read
        // `Span::current()` in their `call` (the request log keeps it for its line).
        let response = span.in_scope(|| self.inner.call(request));
        response.instrument(span)
    }
}

/// The RPC's span, `rpc` (exported as `/service/Method`), with the caller's trace as its parent.
fn rpc_span(path: &str, headers: &HeaderMap) -> tracing::Span {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", path));
    macro_rules! rpc_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "rpc",
                otel.name = path,
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                rpc.grpc.status_code = Empty,
                enduser.id = Empty,
                trace_id = Empty,
            )
        };
    }
    let span = if path.starts_with(HEALTH_PREFIX) {
        rpc_span!(tracing::Level::DEBUG)
    } else {
        rpc_span!(tracing::Level::INFO)
    };
    if span.is_disabled() {
        return span;
    }
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    // Fails only when no OpenTelemetry layer is installed: nothing is exported then.
    let _ = span.set_parent(parent.clone());
    // Our own span's trace when exporting (the caller's, or a new one), else the caller's.
    let own = span.context();
    let trace_id = [own.span().span_context(), parent.span().span_context()]
        .into_iter()
        .find(|context| context.is_valid())
        .map(|context| context.trace_id());
    if let Some(trace_id) = trace_id {
        span.record("trace_id", tracing::field::display(trace_id));
    }
    span
}

/// Puts the outcome of an RPC on its span (made by [`TraceLayer`]; a span without these
/// fields ignores them).
pub(super) fn record_outcome(span: &tracing::Span, code: tonic::Code, principal: &str) {
    span.record(STATUS_CODE_FIELD, code as i64);
    span.record(PRINCIPAL_FIELD, principal);
    // The server-side error codes of the OTel gRPC conventions; the others are the caller's.
    if matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    ) {
        span.record("otel.status_code", "error");
    }
}

/// The request headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The tracer provider of `--otlp-endpoint`: spans batched (every 5 s by default, or
/// `OTEL_BSP_SCHEDULE_DELAY` ms) and sent over OTLP/gRPC with tonic. Must be called inside the
/// tokio runtime, whose reactor the exporter's channel uses. Shut it down (blocking) before the
/// process exits, or the last batch is lost.
pub fn otlp_tracer_provider(
    endpoint: &str,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(env!("CARGO_PKG_NAME"))
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traceparent_header_is_read_as_the_parent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let parent = TraceContextPropagator::new().extract(&Headers(&headers));
        assert_eq!(
            parent.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let none = TraceContextPropagator::new().extract(&Headers(&HeaderMap::new()));
        assert!(!none.span().span_context().is_valid());
    }
}
