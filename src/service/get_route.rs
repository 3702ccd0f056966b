//! GetProvisionPolicy as tonic's generated server cannot serve it: with the encoded answer sent
//! as it is. The generated server's codec encodes a `GetProvisionPolicyResponse` message, so
//! the ready bytes memory holds (`store/current.rs`) would have to be decoded only to be encoded
//! again; decoding a five-step policy was a tenth of a Get's instructions (callgrind). This
//! wrapper answers that one path with a codec whose encoder copies bytes and hands every other
//! path to the generated server. It has the generated server's name, so it takes its place in
//! the router, under the same layers (auth, limits, metrics, logs see no difference).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes};
use tonic::body::Body;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstDecoder;

use super::{PolicyService, policies};
use crate::pb;
use crate::pb::provision_policy_service_server::{ProvisionPolicyServiceServer, SERVICE_NAME};
use crate::store::Store;

const GET_PATH: &str = "/provision.v1.ProvisionPolicyService/GetProvisionPolicy";

/// The generated server of `PolicyService`, with its Get answered from ready bytes.
pub struct WithEncodedGet<S: Store> {
    inner: ProvisionPolicyServiceServer<PolicyService<S>>,
    store: Arc<S>,
    /// The largest request accepted, as the generated server's own limit.
    max_decoding: usize,
}

impl<S: Store> WithEncodedGet<S> {
    /// `store` must be the one `inner`'s service reads.
    pub fn new(
        inner: ProvisionPolicyServiceServer<PolicyService<S>>,
        store: Arc<S>,
        max_decoding: usize,
    ) -> Self {
        Self {
            inner,
            store,
            max_decoding,
        }
    }
}

impl<S: Store> Clone for WithEncodedGet<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: Arc::clone(&self.store),
            max_decoding: self.max_decoding,
        }
    }
}

impl<S: Store> NamedService for WithEncodedGet<S> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<S, B> Service<http::Request<B>> for WithEncodedGet<S>
where
    S: Store,
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != GET_PATH {
            return self.inner.call(request);
        }
        let (store, max_decoding) = (Arc::clone(&self.store), self.max_decoding);
        Box::pin(async move {
            let mut grpc =
                Grpc::new(EncodedGetCodec).apply_max_message_size_config(Some(max_decoding), None);
            Ok(grpc.unary(Get(store), request).await)
        })
    }
}

struct Get<S>(Arc<S>);

impl<S: Store> UnaryService<pb::GetProvisionPolicyRequest> for Get<S> {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<pb::GetProvisionPolicyRequest>) -> Self::Future {
        let store = Arc::clone(&self.0);
        Box::pin(async move {
            policies::get(&*store, request.into_inner())
                .await
                .map(Response::new)
                .map_err(Status::from)
        })
    }
}

/// Decodes the request as prost does; encodes an already encoded response by copying it.
#[derive(Default)]
struct EncodedGetCodec;

impl Codec for EncodedGetCodec {
    type Encode = Bytes;
    type Decode = pb::GetProvisionPolicyRequest;
    type Encoder = CopyEncoder;
    type Decoder = ProstDecoder<pb::GetProvisionPolicyRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        CopyEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

struct CopyEncoder;

impl Encoder for CopyEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}
