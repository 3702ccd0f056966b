//! Load limits, a tower layer inside authentication (it needs the principal):
//! `--max-concurrent-rpcs` caps the RPCs being handled at once across all connections, and
//! `--max-watch-streams-per-principal` the open Watch streams of one caller. Past either the
//! call is answered RESOURCE_EXHAUSTED with RetryInfo at once, without queueing: a client
//! backs off instead of piling up. Health checks are never limited, so probes keep answering
//! under overload. Watch streams are limited only by their own cap: a stream is open for
//! hours and would otherwise hold an RPC slot all that time.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use super::principal::Principal;
use crate::error::Error;

const WATCH_PATH: &str = "/provision.v1.ProvisionPolicyService/WatchProvisionPolicies";
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";
/// Most RPCs take milliseconds: a slot is likely free again soon.
const RPC_RETRY: Duration = Duration::from_millis(100);
/// A watch slot frees only when one of the caller's streams ends.
const WATCH_RETRY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct LimitLayer {
    limits: Arc<Limits>,
}

struct Limits {
    rpcs: Arc<Semaphore>,
    max_rpcs: usize,
    watches: Arc<Mutex<HashMap<String, usize>>>,
    max_watches: usize,
}

impl LimitLayer {
    pub fn new(max_concurrent_rpcs: usize, max_watch_streams_per_principal: usize) -> Self {
        Self {
            limits: Arc::new(Limits {
                rpcs: Arc::new(Semaphore::new(max_concurrent_rpcs)),
                max_rpcs: max_concurrent_rpcs,
                watches: Arc::default(),
                max_watches: max_watch_streams_per_principal,
            }),
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Limit<S> {
        Limit {
            inner,
            limits: Arc::clone(&self.limits),
        }
    }
}

#[derive(Clone)]
pub struct Limit<S> {
    inner: S,
    limits: Arc<Limits>,
}

/// One open Watch stream of a principal; gives its place back when the stream's body drops.
pub struct WatchSlot {
    watches: Arc<Mutex<HashMap<String, usize>>>,
    principal: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = watches.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                watches.remove(&self.principal);
            }
        }
    }
}

impl Limits {
    fn watch_slot(&self, principal: &str) -> Option<WatchSlot> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let count = watches.entry(principal.to_owned()).or_insert(0);
        if *count >= self.max_watches {
            return None;
        }
        *count += 1;
        Some(WatchSlot {
            watches: Arc::clone(&self.watches),
            principal: principal.to_owned(),
        })
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for Limit<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<LimitedBody<ResBody>>;
    type Error = S::Error;
    type Future = Answer<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with(HEALTH_PREFIX) {
            let response = self.inner.call(request);
            return Box::pin(async move { Ok(response.await?.map(LimitedBody::new)) });
        }
        if path == WATCH_PATH {
            let principal = request
                .extensions()
                .get::<Principal>()
                .map_or(super::principal::ANONYMOUS, |p| p.name.as_str());
            let Some(slot) = self.limits.watch_slot(principal) else {
                return refuse(Error::Exhausted {
                    limit: "--max-watch-streams-per-principal",
                    value: self.limits.max_watches,
                    retry_after: WATCH_RETRY,
                });
            };
            let response = self.inner.call(request);
            return Box::pin(async move {
                let response = response.await?;
                Ok(response.map(|body| LimitedBody {
                    body,
                    _slot: Some(slot),
                }))
            });
        }
        let Ok(permit) = Arc::clone(&self.limits.rpcs).try_acquire_owned() else {
            return refuse(Error::Exhausted {
                limit: "--max-concurrent-rpcs",
                value: self.limits.max_rpcs,
                retry_after: RPC_RETRY,
            });
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(permit);
            Ok(response?.map(LimitedBody::new))
        })
    }
}

type Answer<B, E> = Pin<Box<dyn Future<Output = Result<http::Response<LimitedBody<B>>, E>> + Send>>;

fn refuse<ResBody: Default + Send + 'static, E: Send + 'static>(
    error: Error,
) -> Answer<ResBody, E> {
    let response = tonic::Status::from(error)
        .into_http::<ResBody>()
        .map(LimitedBody::new);
    Box::pin(async move { Ok(response) })
}

/// A response body that holds a Watch slot for as long as the stream is open.
pub struct LimitedBody<B> {
    body: B,
    _slot: Option<WatchSlot>,
}

impl<B> LimitedBody<B> {
    fn new(body: B) -> Self {
        Self { body, _slot: None }
    }
}

impl<B: Default> Default for LimitedBody<B> {
    fn default() -> Self {
        Self::new(B::default())
    }
}

impl<B: Body + Unpin> Body for LimitedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
