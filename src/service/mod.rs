//! The gRPC adapter: parse the request, run the rules in `policy`, call the `Store`, shape the
//! response. No rules live here. One module per resource; the trait impl below only routes.

mod bindings;
mod feed;
mod get_route;
mod plans;
mod policies;
mod watch;

use std::sync::Arc;

use prost::Message;
use tokio::sync::watch as signal;
use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::pb;
use crate::pb::provision_policy_service_server::ProvisionPolicyService;
use crate::policy::tokens::Cursor;
use crate::server::metrics::Metrics;
use crate::server::principal::Principal;
use crate::store::Store;

pub use get_route::WithEncodedGet;

/// `ProvisionPolicyService` over any [`Store`].
pub struct PolicyService<S> {
    store: Arc<S>,
    /// The change log as the watch streams read it: one store read per entry for all of them.
    feed: Arc<feed::ChangeFeed<S>>,
    /// Turns true when the server starts shutting down: watch streams then end.
    shutdown: signal::Receiver<bool>,
    /// Where the violations of Validate and Set are counted, when the server has metrics.
    metrics: Option<Metrics>,
}

impl<S: Store> PolicyService<S> {
    /// A service whose watch streams end only when the client goes away.
    pub fn new(store: Arc<S>) -> Self {
        let (never, shutdown) = signal::channel(false);
        // Dropped senders leave the value as it is: streams never see a shutdown.
        drop(never);
        Self::with_shutdown(store, shutdown)
    }

    /// A service whose watch streams end with a final checkpoint and UNAVAILABLE
    /// (SHUTTING_DOWN) once `shutdown` turns true.
    pub fn with_shutdown(store: Arc<S>, shutdown: signal::Receiver<bool>) -> Self {
        Self {
            feed: Arc::new(feed::ChangeFeed::new(Arc::clone(&store))),
            store,
            shutdown,
            metrics: None,
        }
    }

    /// Counts the violations its Validate and Set responses carry in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count_violations(&self, violations: &[pb::PolicyViolation]) {
        if let Some(metrics) = &self.metrics {
            metrics.violations(violations);
        }
    }
}

/// The cursor of log position `seq` of `store` (0: before the first write).
fn cursor_of(store: &impl Store, seq: u64) -> String {
    Cursor {
        store_id: store.store_id().to_owned(),
        seq,
    }
    .encode()
}

fn respond<T>(result: Result<T, Error>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl<S: Store> ProvisionPolicyService for PolicyService<S> {
    async fn get_provision_policy(
        &self,
        request: Request<pb::GetProvisionPolicyRequest>,
    ) -> Result<Response<pb::GetProvisionPolicyResponse>, Status> {
        // The network reaches `get_route.rs`, which sends the encoded answer as it is; this is
        // the same answer for callers of the trait.
        let encoded = policies::get(&*self.store, request.into_inner()).await;
        respond(encoded.and_then(|bytes| {
            pb::GetProvisionPolicyResponse::decode(bytes)
                .map_err(|error| Error::from(crate::store::StoreError::Internal(Box::new(error))))
        }))
    }

    async fn set_provision_policy(
        &self,
        request: Request<pb::SetProvisionPolicyRequest>,
    ) -> Result<Response<pb::SetProvisionPolicyResponse>, Status> {
        // The actor comes from the auth layer's extensions, never from the body.
        let actor = Principal::name_of(&request);
        let result = policies::set(&*self.store, request.into_inner(), actor).await;
        match &result {
            Ok(response) => self.count_violations(&response.warnings),
            Err(Error::InvalidPolicy(violations)) => self.count_violations(violations),
            Err(_) => {}
        }
        respond(result)
    }

    async fn validate_provision_policy(
        &self,
        request: Request<pb::ValidateProvisionPolicyRequest>,
    ) -> Result<Response<pb::ValidateProvisionPolicyResponse>, Status> {
        let result = policies::validate(&*self.store, request.into_inner()).await;
        if let Ok(response) = &result {
            self.count_violations(&response.violations);
        }
        respond(result)
    }

    async fn list_provision_policies(
        &self,
        request: Request<pb::ListProvisionPoliciesRequest>,
    ) -> Result<Response<pb::ListProvisionPoliciesResponse>, Status> {
        respond(policies::list(&*self.store, request.into_inner()).await)
    }

    async fn delete_provision_policy(
        &self,
        request: Request<pb::DeleteProvisionPolicyRequest>,
    ) -> Result<Response<pb::DeleteProvisionPolicyResponse>, Status> {
        let actor = Principal::name_of(&request);
        respond(policies::delete(&*self.store, request.into_inner(), actor).await)
    }

    async fn list_provision_policy_revisions(
        &self,
        request: Request<pb::ListProvisionPolicyRevisionsRequest>,
    ) -> Result<Response<pb::ListProvisionPolicyRevisionsResponse>, Status> {
        respond(policies::history(&*self.store, request.into_inner()).await)
    }

    async fn rollback_provision_policy(
        &self,
        request: Request<pb::RollbackProvisionPolicyRequest>,
    ) -> Result<Response<pb::RollbackProvisionPolicyResponse>, Status> {
        let actor = Principal::name_of(&request);
        respond(policies::rollback(&*self.store, request.into_inner(), actor).await)
    }

    async fn create_proxy_binding(
        &self,
        request: Request<pb::CreateProxyBindingRequest>,
    ) -> Result<Response<pb::CreateProxyBindingResponse>, Status> {
        respond(bindings::create(&*self.store, request.into_inner()).await)
    }

    async fn delete_proxy_binding(
        &self,
        request: Request<pb::DeleteProxyBindingRequest>,
    ) -> Result<Response<pb::DeleteProxyBindingResponse>, Status> {
        respond(bindings::delete(&*self.store, request.into_inner()).await)
    }

    async fn list_proxy_bindings(
        &self,
        request: Request<pb::ListProxyBindingsRequest>,
    ) -> Result<Response<pb::ListProxyBindingsResponse>, Status> {
        respond(bindings::list(&*self.store, request.into_inner()).await)
    }

    async fn resolve_provision_plan(
        &self,
        request: Request<pb::ResolveProvisionPlanRequest>,
    ) -> Result<Response<pb::ResolveProvisionPlanResponse>, Status> {
        respond(plans::resolve(&*self.store, request.into_inner()).await)
    }

    async fn list_dependents(
        &self,
        request: Request<pb::ListDependentsRequest>,
    ) -> Result<Response<pb::ListDependentsResponse>, Status> {
        respond(plans::dependents(&*self.store, request.into_inner()).await)
    }

    type WatchProvisionPoliciesStream = watch::ChangeStream;

    async fn watch_provision_policies(
        &self,
        request: Request<pb::WatchProvisionPoliciesRequest>,
    ) -> Result<Response<Self::WatchProvisionPoliciesStream>, Status> {
        let (store, shutdown) = (Arc::clone(&self.store), self.shutdown.clone());
        let feed = Arc::clone(&self.feed);
        respond(watch::open(store, feed, request.into_inner(), shutdown).await)
    }
}
