//! One log line per RPC, at the end of its response: method, gRPC code, duration, principal,
//! peer and a request id. The id comes from the caller's `x-request-id` when it is a plausible
//! id, else it is made here; either way the response carries it back in `x-request-id`, and
//! handlers find it in the request extensions. Nothing of a request's or response's body, and
//! no other header, is ever logged.
//!
//! The code of an OK unary call and of every stream is in the trailers, so the line is written
//! when the body ends (or, if the client went away first, when it is dropped: CANCELLED).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use super::connections::Peer;
use super::principal::{ANONYMOUS, Principal};

/// The header a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Longer ids from callers are replaced: a log field must stay small.
const MAX_REQUEST_ID_BYTES: usize = 128;
/// Health checks come every few seconds from every probe: logged below `info`.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The request id of an RPC, in its request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestLogLayer;

impl<S> Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> RequestLog<S> {
        RequestLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
}

impl<S, B, ResBody> Service<http::Request<B>> for RequestLog<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let request_id =
            given_request_id(request.headers()).unwrap_or_else(crate::store::changes::new_store_id);
        let entry = Entry {
            method: request.uri().path().to_owned(),
            peer: request
                .extensions()
                .get::<Peer>()
                .and_then(|peer| peer.addr),
            principal: None,
            request_id: request_id.clone(),
            started: Instant::now(),
            // The RPC's span (`trace.rs`, the layer outside this one): the line is written in
            // it, though the body ends outside it, so that it carries the trace id.
            span: tracing::Span::current(),
        };
        request.extensions_mut().insert(RequestId(request_id));
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            // The auth layer, inside this one, says who called (also when it refused them).
            let mut entry = entry;
            entry.principal = response
                .extensions()
                .get::<Principal>()
                .map(|principal| principal.name.clone());
            if let Ok(value) = HeaderValue::from_str(&entry.request_id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            // A trailers-only response (every error) has its status in the headers.
            let code = grpc_status(response.headers());
            let (parts, body) = response.into_parts();
            let body = LoggedBody {
                body,
                entry: Some(entry),
                code,
            };
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

/// The caller's id, if it is 1-128 bytes of `[A-Za-z0-9._:/+=-]` (a UUID, a trace id, …).
fn given_request_id(headers: &HeaderMap) -> Option<String> {
    let id = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let plausible = (1..=MAX_REQUEST_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:/+=-".contains(&b));
    plausible.then(|| id.to_owned())
}

fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    super::status::code_in(headers).map(|code| code as i32)
}

struct Entry {
    method: String,
    peer: Option<SocketAddr>,
    principal: Option<String>,
    request_id: String,
    started: Instant,
    span: tracing::Span,
}

impl Entry {
    fn write(self, code: i32) {
        let principal = self.principal.as_deref().unwrap_or(ANONYMOUS);
        super::trace::record_outcome(&self.span, tonic::Code::from_i32(code), principal);
        let _in_rpc = self.span.enter();
        let code = code_name(code);
        // Microsecond precision is plenty for a log line.
        let duration_ms = (self.started.elapsed().as_secs_f64() * 1_000_000.0).round() / 1000.0;
        let peer = self.peer.map(|peer| peer.to_string()).unwrap_or_default();
        if self.method.starts_with(HEALTH_PREFIX) {
            tracing::debug!(method = %self.method, code, duration_ms, principal, peer, request_id = %self.request_id, "rpc");
        } else {
            tracing::info!(method = %self.method, code, duration_ms, principal, peer, request_id = %self.request_id, "rpc");
        }
    }
}

/// The response body, which writes the RPC's log line once it ends or is dropped.
pub struct LoggedBody<B> {
    body: B,
    entry: Option<Entry>,
    code: Option<i32>,
}

impl<B> LoggedBody<B> {
    fn finish(&mut self, code: Option<i32>) {
        if let Some(entry) = self.entry.take() {
            entry.write(code.or(self.code).unwrap_or(tonic::Code::Unknown as i32));
        }
    }
}

impl<B: Body + Unpin> Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_status(trailers);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Some(tonic::Code::Internal as i32)),
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

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        // The client went away before the end (a cancelled stream), or a trailers-only
        // response was never polled to its end.
        let code = self.code.unwrap_or(tonic::Code::Cancelled as i32);
        self.finish(Some(code));
    }
}

/// The canonical name of a gRPC status code, as grpcurl and the gRPC docs spell it.
fn code_name(code: i32) -> &'static str {
    super::status::canonical_name(tonic::Code::from_i32(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plausible_ids_are_taken_from_the_caller() {
        let id = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID_HEADER, HeaderValue::from_str(value).unwrap());
            given_request_id(&headers)
        };
        assert_eq!(id("req-1"), Some("req-1".to_owned()));
        assert_eq!(
            id("0af7651916cd43dd8448eb211c80319c"),
            Some("0af7651916cd43dd8448eb211c80319c".to_owned())
        );
        assert_eq!(id(""), None);
        assert_eq!(id("has space"), None);
        assert_eq!(id(&"a".repeat(129)), None);
        assert_eq!(given_request_id(&HeaderMap::new()), None);
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(99), "UNKNOWN");
    }
}
