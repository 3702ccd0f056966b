//! The ceiling: `provision.v1.ProvisionPolicyService` on bare tonic, answering each RPC with a
//! pre-built reply of the size provisiond sends. No store, no validation, no layers.
//!
//! It routes the three benchmarked methods itself, the way tonic's generated server does
//! (`tonic::server::Grpc::unary` with the prost codec, so requests are decoded and replies encoded
//! exactly as in provisiond), instead of implementing the generated trait: RPCs added to the
//! service later (proxy bindings) then need no stub here, and the ceiling stays the same code.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use crate::fixtures;
use provisiond::pb;

const SERVICE: &str = "provision.v1.ProvisionPolicyService";

/// The replies, built once.
#[derive(Clone)]
pub struct EchoService {
    get: Arc<pb::GetProvisionPolicyResponse>,
    set: Arc<pb::SetProvisionPolicyResponse>,
    validate: Arc<pb::ValidateProvisionPolicyResponse>,
}

impl Default for EchoService {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoService {
    pub fn new() -> Self {
        Self {
            get: Arc::new(get_reply()),
            set: Arc::new(pb::SetProvisionPolicyResponse {
                policy: get_reply().policy,
                warnings: Vec::new(),
                change_cursor: cursor(),
                dependent_count: 0,
            }),
            validate: Arc::new(pb::ValidateProvisionPolicyResponse {
                valid: true,
                violations: Vec::new(),
                dependent_count: 0,
                served_at: cursor(),
            }),
        }
    }
}

/// A change cursor of the size provisiond's are (`change_cursor`, `served_at`), so that the
/// ceiling answers as many bytes.
fn cursor() -> String {
    provisiond::policy::tokens::Cursor {
        store_id: "0".repeat(32),
        seq: 1_000_000,
    }
    .encode()
}

/// What the echo server answers to Get, whatever the consistency asked: the stored benchmark
/// policy with its output fields, and a `served_at`.
pub fn get_reply() -> pb::GetProvisionPolicyResponse {
    pb::GetProvisionPolicyResponse {
        policy: Some(fixtures::as_stored(fixtures::five_step(
            fixtures::entitlement(0),
            0,
        ))),
        served_at: cursor(),
    }
}

impl NamedService for EchoService {
    const NAME: &'static str = SERVICE;
}

/// A unary handler that answers a copy of `reply`, whatever the request.
struct Fixed<Req, Resp> {
    reply: Arc<Resp>,
    request: PhantomData<fn(Req)>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<Req, Resp> UnaryService<Req> for Fixed<Req, Resp>
where
    Req: Send + 'static,
    Resp: Clone + Send + Sync + 'static,
{
    type Response = Resp;
    // Boxed like the generated handlers (and async_trait in provisiond), so the ceiling pays the
    // same allocation per call.
    type Future = BoxFuture<Result<Response<Resp>, Status>>;

    fn call(&mut self, _request: Request<Req>) -> Self::Future {
        let reply = Arc::clone(&self.reply);
        Box::pin(async move { Ok(Response::new((*reply).clone())) })
    }
}

async fn unary<Req, Resp>(reply: Arc<Resp>, request: http::Request<Body>) -> http::Response<Body>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Clone + Send + Sync + 'static,
{
    let handler = Fixed::<Req, Resp> {
        reply,
        request: PhantomData,
    };
    Grpc::new(ProstCodec::<Resp, Req>::default())
        .unary(handler, request)
        .await
}

impl Service<http::Request<Body>> for EchoService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match request.uri().path() {
            "/provision.v1.ProvisionPolicyService/GetProvisionPolicy" => {
                let reply = Arc::clone(&self.get);
                Box::pin(async move {
                    Ok(unary::<pb::GetProvisionPolicyRequest, _>(reply, request).await)
                })
            }
            "/provision.v1.ProvisionPolicyService/SetProvisionPolicy" => {
                let reply = Arc::clone(&self.set);
                Box::pin(async move {
                    Ok(unary::<pb::SetProvisionPolicyRequest, _>(reply, request).await)
                })
            }
            "/provision.v1.ProvisionPolicyService/ValidateProvisionPolicy" => {
                let reply = Arc::clone(&self.validate);
                Box::pin(async move {
                    Ok(unary::<pb::ValidateProvisionPolicyRequest, _>(reply, request).await)
                })
            }
            other => {
                let status =
                    Status::unimplemented(format!("the echo server does not serve {other}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Serves the echo service and health (so readiness is checked the same way as provisiond's) on
/// `listener` until `shutdown` completes. TCP_NODELAY as provisiond sets it; nothing else.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SERVICE, tonic_health::ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(EchoService::new())
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
