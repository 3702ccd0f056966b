//! Prometheus metrics: the [`Metrics`] handle, the [`MetricsLayer`] that counts every RPC, and
//! the `/metrics` endpoint ([`spawn_endpoint`]).
//!
//! The RPC series follow go-grpc-prometheus (`grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_handling_seconds`, `grpc_server_msg_sent_total`,
//! codes spelled as Go spells them: `OK`, `InvalidArgument`), so that existing dashboards and
//! alerts for gRPC servers work unchanged. The layer sits outside every layer that may refuse a
//! request (auth, limits), so a refused RPC is counted with its code.
//!
//! Labels come only from the method path, and only for methods the server has (read from the
//! services' descriptors): any other path is `unknown/unknown`, so a scanner cannot grow the
//! series without bound. Nothing of a request's headers or body ever becomes a label.
//!
//! The registry is per server, not global: two servers in one test process keep their own
//! counts.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::{Layer, Service};

use crate::pb;
use crate::policy::reason;
use crate::store::metrics::{StoreBackend, StoreMetrics};

/// The policy service's streaming method, whose open streams are a gauge of their own.
const WATCH_PATH: &str = "/provision.v1.ProvisionPolicyService/WatchProvisionPolicies";
/// What an RPC to a path the server does not serve is counted as.
const UNKNOWN: &str = "unknown";

/// The go-grpc-prometheus labels of one method.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_type: &'static str,
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// Every method the server serves, by path. Built once per process from the static descriptor
/// sets; the names are leaked once so that labels are `&'static str` (no allocation per RPC).
fn methods() -> &'static HashMap<String, MethodLabels> {
    static METHODS: OnceLock<HashMap<String, MethodLabels>> = OnceLock::new();
    METHODS.get_or_init(|| {
        let sets = [
            pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut methods = HashMap::new();
        for set in sets {
            let set = prost_types::FileDescriptorSet::decode(set)
                .expect("the compiled-in descriptor sets decode");
            for file in set.file {
                let package = file.package();
                for service in &file.service {
                    let service_name: &'static str =
                        Box::leak(format!("{package}.{}", service.name()).into_boxed_str());
                    for method in &service.method {
                        let grpc_method: &'static str =
                            Box::leak(method.name().to_owned().into_boxed_str());
                        let grpc_type = match (method.client_streaming(), method.server_streaming())
                        {
                            (false, false) => "unary",
                            (false, true) => "server_stream",
                            (true, false) => "client_stream",
                            (true, true) => "bidi_stream",
                        };
                        methods.insert(
                            format!("/{service_name}/{grpc_method}"),
                            MethodLabels {
                                grpc_type,
                                grpc_service: service_name,
                                grpc_method,
                            },
                        );
                    }
                }
            }
        }
        methods
    })
}

fn method_labels(path: &str) -> MethodLabels {
    methods().get(path).copied().unwrap_or(MethodLabels {
        grpc_type: "unary",
        grpc_service: UNKNOWN,
        grpc_method: UNKNOWN,
    })
}

/// Every reason a violation can carry; any other string is counted as `OTHER`, so that the
/// label set stays the documented one.
const REASONS: &[&str] = reason::POLICY;

struct Inner {
    registry: Registry,
    /// Each served method's series, resolved once, by path; `unknown` for any other path.
    by_path: HashMap<String, Arc<MethodSeries>>,
    unknown: Arc<MethodSeries>,
    handled: Family<HandledLabels, Counter>,
    handling_seconds: Family<MethodLabels, Histogram>,
    msg_sent: Family<MethodLabels, Counter>,
    watch_streams: Gauge,
    violations: Family<ReasonLabels, Counter>,
    auth_failures: Family<CodeLabels, Counter>,
    health_serving: Gauge,
    store: StoreMetrics,
}

/// The series of one method, resolved from the families once: a call then touches atomics
/// only. Looking each of its four series up per call (hashing the labels under the family's
/// lock) cost about a twelfth of a Get's instructions (callgrind). The series other than
/// `started` are made on first use, so that the exposition shows what it showed before.
struct MethodSeries {
    labels: MethodLabels,
    started: Counter,
    handling_seconds: OnceLock<Histogram>,
    msg_sent: OnceLock<Counter>,
    /// By code (0-16).
    handled: [OnceLock<Counter>; 17],
}

impl MethodSeries {
    fn new(labels: MethodLabels, started: &Family<MethodLabels, Counter>) -> Self {
        Self {
            labels,
            started: started.get_or_create(&labels).clone(),
            handling_seconds: OnceLock::new(),
            msg_sent: OnceLock::new(),
            handled: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn handled(&self, inner: &Inner, code: tonic::Code) -> &Counter {
        let index = usize::try_from(i32::from(code)).map_or(2, |index| index.min(16));
        self.handled[index].get_or_init(|| {
            inner
                .handled
                .get_or_create(&handled_labels(self.labels, code))
                .clone()
        })
    }

    fn handling_seconds(&self, inner: &Inner) -> &Histogram {
        self.handling_seconds
            .get_or_init(|| inner.handling_seconds.get_or_create(&self.labels).clone())
    }

    fn msg_sent(&self, inner: &Inner) -> &Counter {
        self.msg_sent
            .get_or_init(|| inner.msg_sent.get_or_create(&self.labels).clone())
    }
}

/// The server's metrics. Cheap to clone: every clone shares one registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// 1 ms to about 33 s, doubling: a cached Get is well under the first bucket's bound, a
/// Set with a group commit a few ms, a slow PostgreSQL write seconds.
fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 17))
}

impl Metrics {
    /// A registry with every series; the store's (`store`, with those of its `backend`) under
    /// the same `provisiond_` prefix as the domain's.
    pub fn new(store: StoreMetrics, backend: StoreBackend) -> Self {
        let mut registry = Registry::default();
        let started = Family::<MethodLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        let handling_seconds = Family::new_with_constructor(rpc_histogram as fn() -> Histogram);
        let msg_sent = Family::<MethodLabels, Counter>::default();
        // As go-grpc-prometheus's InitializeMetrics: every method's series exist at 0 from the
        // start, so that a rate over a quiet method is 0, not absent.
        for labels in methods().values() {
            let _ = started.get_or_create(labels);
            let _ = handled.get_or_create(&handled_labels(*labels, tonic::Code::Ok));
        }
        let by_path = methods()
            .iter()
            .map(|(path, labels)| (path.clone(), Arc::new(MethodSeries::new(*labels, &started))))
            .collect();
        let unknown = Arc::new(MethodSeries::new(method_labels(""), &started));
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server",
            started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure",
            handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Histogram of response latency of RPCs handled by the server, until the last message",
            Unit::Seconds,
            handling_seconds.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Total number of gRPC messages sent by the server",
            msg_sent.clone(),
        );

        let domain = registry.sub_registry_with_prefix("provisiond");
        let watch_streams = Gauge::default();
        domain.register(
            "watch_streams",
            "Open WatchProvisionPolicies streams",
            watch_streams.clone(),
        );
        let violations = Family::<ReasonLabels, Counter>::default();
        domain.register(
            "policy_violations",
            "Violations returned by Validate and Set, by reason",
            violations.clone(),
        );
        let auth_failures = Family::<CodeLabels, Counter>::default();
        for code in ["UNAUTHENTICATED", "PERMISSION_DENIED"] {
            let _ = auth_failures.get_or_create(&CodeLabels { code });
        }
        domain.register(
            "auth_failures",
            "Requests refused by authentication or authorisation, by gRPC code",
            auth_failures.clone(),
        );
        let health_serving = Gauge::default();
        health_serving.set(1);
        domain.register(
            "health_serving",
            "1 while the store probes pass and gRPC health is SERVING, else 0",
            health_serving.clone(),
        );
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        domain.register(
            "build_info",
            "Always 1; the version of the running build",
            build_info,
        );
        store.register(domain, backend);

        Self {
            inner: Arc::new(Inner {
                registry,
                by_path,
                unknown,
                handled,
                handling_seconds,
                msg_sent,
                watch_streams,
                violations,
                auth_failures,
                health_serving,
                store,
            }),
        }
    }

    /// Counts a request the auth layer refused with `code` (UNAUTHENTICATED or
    /// PERMISSION_DENIED; any code is accepted, under its canonical name).
    pub fn auth_failure(&self, code: tonic::Code) {
        self.inner
            .auth_failures
            .get_or_create(&CodeLabels {
                code: super::status::canonical_name(code),
            })
            .inc();
    }

    /// Counts the violations a Validate or Set returned, by reason.
    pub fn violations(&self, violations: &[pb::PolicyViolation]) {
        for violation in violations {
            let reason = REASONS
                .iter()
                .find(|known| **known == violation.reason)
                .copied()
                .unwrap_or("OTHER");
            self.inner
                .violations
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// What the health probe found: serving or not.
    pub fn health(&self, serving: bool) {
        self.inner.health_serving.set(i64::from(serving));
    }

    pub fn store(&self) -> &StoreMetrics {
        &self.inner.store
    }

    /// The registry in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn handled_labels(method: MethodLabels, code: tonic::Code) -> HandledLabels {
    HandledLabels {
        grpc_type: method.grpc_type,
        grpc_service: method.grpc_service,
        grpc_method: method.grpc_method,
        grpc_code: go_code(code),
    }
}

/// A code as Go's `codes.Code.String()` spells it: what go-grpc-prometheus puts in `grpc_code`.
fn go_code(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, ResBody> Service<http::Request<B>> for MetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let inner = &self.metrics.inner;
        let call = Call {
            metrics: self.metrics.clone(),
            series: Arc::clone(inner.by_path.get(path).unwrap_or(&inner.unknown)),
            watch: path == WATCH_PATH,
            started: Instant::now(),
        };
        call.series.started.inc();
        if call.watch {
            call.metrics.inner.watch_streams.inc();
        }
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    // The transport answers a failed service with a reset stream.
                    call.finish(tonic::Code::Unknown);
                    return Err(error);
                }
            };
            // A trailers-only response (every error) has its status in the headers.
            let code = super::status::code_in(response.headers());
            let (parts, body) = response.into_parts();
            let body = MeteredBody {
                body,
                call: Some(call),
                code,
                frames: MessageFrames::default(),
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// One RPC being counted: finished once, when its response ends.
struct Call {
    metrics: Metrics,
    series: Arc<MethodSeries>,
    watch: bool,
    started: Instant,
}

impl Call {
    fn finish(self, code: tonic::Code) {
        let inner = &self.metrics.inner;
        self.series.handled(inner, code).inc();
        self.series
            .handling_seconds(inner)
            .observe(self.started.elapsed().as_secs_f64());
        if self.watch {
            inner.watch_streams.dec();
        }
    }
}

/// Counts the gRPC messages in a response body: each is a 5-byte prefix (compressed flag,
/// 4-byte big-endian length) and its bytes, split across data frames in any way.
#[derive(Debug, Default)]
struct MessageFrames {
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message not seen yet.
    remaining: u64,
}

impl MessageFrames {
    /// The number of messages whose prefix ends in `data`.
    fn count(&mut self, mut data: &[u8]) -> u64 {
        let mut messages = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let skip = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= skip as u64;
                data = &data[skip..];
                continue;
            }
            let take = (5 - self.prefix_len).min(data.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
            self.prefix_len += take;
            data = &data[take..];
            if self.prefix_len == 5 {
                messages += 1;
                let length = [
                    self.prefix[1],
                    self.prefix[2],
                    self.prefix[3],
                    self.prefix[4],
                ];
                self.remaining = u64::from(u32::from_be_bytes(length));
                self.prefix_len = 0;
            }
        }
        messages
    }
}

/// The response body, which counts its messages and finishes the RPC's series when it ends or
/// is dropped.
pub struct MeteredBody<B> {
    body: B,
    call: Option<Call>,
    code: Option<tonic::Code>,
    frames: MessageFrames,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: Option<tonic::Code>) {
        if let Some(call) = self.call.take() {
            call.finish(code.or(self.code).unwrap_or(tonic::Code::Unknown));
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
    B::Data: AsRef<[u8]>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let messages = self.frames.count(data.as_ref());
                    // Counted as sent, not when the stream ends: a Watch runs for hours.
                    if let (Some(call), true) = (&self.call, messages > 0) {
                        call.series.msg_sent(&call.metrics.inner).inc_by(messages);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    let code = super::status::code_in(trailers);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Some(tonic::Code::Internal)),
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // The client went away before the end (a cancelled stream), or a trailers-only
        // response was never polled to its end.
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        self.finish(Some(code));
    }
}

/// Runs before each scrape: brings the gauges read from the store up to date.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The running endpoint; dropping it stops it, and every scrape connection with it.
pub struct Endpoint {
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` on `listener` (HTTP/1.1) until the returned [`Endpoint`] is dropped.
/// Scrapes need no draining: a cut scrape is retried at the next interval.
pub fn spawn_endpoint(
    listener: TcpListener,
    metrics: Metrics,
    refresh: Refresh,
) -> std::io::Result<Endpoint> {
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        // Dropped with the task when the endpoint stops: that aborts every connection.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Reap finished connections so the set does not grow.
            while connections.try_join_next().is_some() {}
            let metrics = metrics.clone();
            let refresh = refresh.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    scrape(request, metrics.clone(), refresh.clone())
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(error) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(%error, "metrics endpoint: connection ended");
                }
            });
        }
    });
    Ok(Endpoint { address, task })
}

async fn scrape(
    request: http::Request<hyper::body::Incoming>,
    metrics: Metrics,
    refresh: Refresh,
) -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    let response = http::Response::builder();
    let response = if request.uri().path() != "/metrics" {
        response
            .status(http::StatusCode::NOT_FOUND)
            .body("not found: the metrics are at /metrics\n".into())
    } else if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        response
            .status(http::StatusCode::METHOD_NOT_ALLOWED)
            .header(http::header::ALLOW, "GET, HEAD")
            .body(http_body_util::Full::default())
    } else {
        refresh().await;
        response
            .header(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(metrics.encode().into())
    };
    Ok(response.expect("a response of fixed parts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_counted_across_any_split() {
        // Three messages: 3 bytes, 0 bytes, 300 bytes.
        let mut stream = vec![0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 1, 44];
        stream.extend(std::iter::repeat_n(7, 300));
        for split in [1, 2, 4, 5, 7, 64, stream.len()] {
            let mut frames = MessageFrames::default();
            let counted: u64 = stream.chunks(split).map(|chunk| frames.count(chunk)).sum();
            assert_eq!(counted, 3, "chunks of {split}");
        }
    }

    #[test]
    fn only_served_methods_get_their_own_labels() {
        let get = method_labels("/provision.v1.ProvisionPolicyService/GetProvisionPolicy");
        assert_eq!(get.grpc_service, "provision.v1.ProvisionPolicyService");
        assert_eq!(get.grpc_method, "GetProvisionPolicy");
        assert_eq!(get.grpc_type, "unary");
        assert_eq!(method_labels(WATCH_PATH).grpc_type, "server_stream");
        assert_eq!(
            method_labels("/grpc.health.v1.Health/Check").grpc_method,
            "Check"
        );
        let unknown = method_labels("/provision.v1.ProvisionPolicyService/Nope");
        assert_eq!(
            (unknown.grpc_service, unknown.grpc_method),
            (UNKNOWN, UNKNOWN)
        );
        assert_eq!(method_labels("/a/secret-token").grpc_method, UNKNOWN);
    }

    #[test]
    fn auth_failures_start_at_zero_and_count_by_code() {
        let metrics = Metrics::new(StoreMetrics::new(), StoreBackend::Sqlite);
        let text = metrics.encode();
        assert!(text.contains("provisiond_auth_failures_total{code=\"UNAUTHENTICATED\"} 0"));
        assert!(text.contains("provisiond_auth_failures_total{code=\"PERMISSION_DENIED\"} 0"));
        metrics.auth_failure(tonic::Code::PermissionDenied);
        assert!(
            metrics
                .encode()
                .contains("provisiond_auth_failures_total{code=\"PERMISSION_DENIED\"} 1")
        );
    }
}
