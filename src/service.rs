//! The gRPC adapter: parse the request, run the rules in `policy`, call the `Store`, shape the
//! response. No rules live here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::pb;
use crate::pb::provision_policy_service_server::ProvisionPolicyService;
use crate::policy;
use crate::store::record::{clear_output_fields, etag, revision_of_etag};
use crate::store::{BindingQuery, Store, StoreError, Write, WriteOutcome};

/// `ProvisionPolicyService` over any [`Store`].
pub struct PolicyService<S> {
    store: Arc<S>,
}

impl<S: Store> PolicyService<S> {
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }

    /// `static_violations` of `resource` plus those against stored state, through a read view.
    async fn with_graph_violations(
        &self,
        resource: &pb::EntitlementProvisionPolicy,
        mut violations: Vec<pb::PolicyViolation>,
    ) -> Result<Vec<pb::PolicyViolation>, Error> {
        if !policy::needs_graph_check(resource) {
            return Ok(violations);
        }
        let snapshot = resource.clone();
        let graph = self
            .store
            .check(Box::new(move |lookup| {
                policy::check_graph(&snapshot, lookup)
            }))
            .await?;
        violations.extend(graph);
        Ok(violations)
    }
}

#[tonic::async_trait]
impl<S: Store> ProvisionPolicyService for PolicyService<S> {
    async fn get_provision_policy(
        &self,
        request: Request<pb::GetProvisionPolicyRequest>,
    ) -> Result<Response<pb::GetProvisionPolicyResponse>, Status> {
        let request = request.into_inner();
        let problems = policy::check_get_request(&request);
        if !problems.is_empty() {
            return Err(Error::InvalidRequest(problems).into());
        }
        let entitlement = request.entitlement.unwrap_or_default();
        let revision = (request.revision > 0).then_some(request.revision);
        let record = self
            .store
            .get(&entitlement, revision)
            .await
            .map_err(Error::from)?;
        let record = record.ok_or(Error::NotFound {
            entitlement,
            revision,
        })?;
        Ok(Response::new(pb::GetProvisionPolicyResponse {
            policy: Some(record.into_resource()),
        }))
    }

    async fn set_provision_policy(
        &self,
        request: Request<pb::SetProvisionPolicyRequest>,
    ) -> Result<Response<pb::SetProvisionPolicyResponse>, Status> {
        let request = request.into_inner();
        let mut resource = request.policy.unwrap_or_default();
        clear_output_fields(&mut resource);
        let entitlement = resource.entitlement.clone().unwrap_or_default();
        let static_violations = policy::check_static(&resource);
        if policy::has_errors(&static_violations) {
            // Invalid policies never reach the writer; a read view still finds the graph errors.
            let violations = self
                .with_graph_violations(&resource, static_violations)
                .await?;
            return Err(Error::InvalidPolicy(errors_only(violations)).into());
        }
        let expected_revision = match request.etag.as_str() {
            "" => None,
            given => Some(revision_of_etag(given).ok_or_else(|| Error::EtagMismatch {
                entitlement: entitlement.clone(),
                given: given.to_owned(),
                current: None,
            })?),
        };
        let checked = resource.clone();
        let edges = policy::graph::edges(&resource);
        let write = Write {
            resource,
            delegation_targets: edges.targets,
            implicit_binding_sources: edges.implicit_sources,
            expected_revision,
            create_only: request.create_only,
            validate_only: request.validate_only,
            check: Box::new(move |lookup| {
                let mut violations = static_violations;
                violations.extend(policy::check_graph(&checked, lookup)?);
                Ok(violations)
            }),
        };
        match self.store.write(write).await {
            Ok(WriteOutcome::Written { record, violations }) => {
                Ok(Response::new(pb::SetProvisionPolicyResponse {
                    policy: Some(record.into_resource()),
                    warnings: violations,
                    change_cursor: String::new(),
                }))
            }
            Ok(WriteOutcome::Rejected { violations }) => {
                Err(Error::InvalidPolicy(errors_only(violations)).into())
            }
            Err(StoreError::RevisionMismatch { actual, .. }) => Err(Error::EtagMismatch {
                entitlement,
                given: request.etag,
                current: actual.map(etag),
            }
            .into()),
            Err(other) => Err(Error::from(other).into()),
        }
    }

    async fn create_proxy_binding(
        &self,
        request: Request<pb::CreateProxyBindingRequest>,
    ) -> Result<Response<pb::CreateProxyBindingResponse>, Status> {
        let request = request.into_inner();
        let problems = policy::request::check_create_binding_request(&request);
        if !problems.is_empty() {
            return Err(Error::InvalidRequest(problems).into());
        }
        let binding = request.binding.unwrap_or_default();
        let (source, destination) = (
            binding.source.unwrap_or_default(),
            binding.destination.unwrap_or_default(),
        );
        let created = self
            .store
            .create_binding(source.clone(), destination.clone(), binding.implicit)
            .await
            .map_err(|error| match error {
                StoreError::AlreadyExists => Error::BindingExists {
                    source_entitlement: source,
                    destination,
                },
                other => Error::from(other),
            })?;
        Ok(Response::new(pb::CreateProxyBindingResponse {
            binding: Some(created.into_binding()),
        }))
    }

    async fn delete_proxy_binding(
        &self,
        request: Request<pb::DeleteProxyBindingRequest>,
    ) -> Result<Response<pb::DeleteProxyBindingResponse>, Status> {
        let request = request.into_inner();
        let problems = policy::request::check_delete_binding_request(&request);
        if !problems.is_empty() {
            return Err(Error::InvalidRequest(problems).into());
        }
        let (source, destination) = (
            request.source.unwrap_or_default(),
            request.destination.unwrap_or_default(),
        );
        self.store
            .delete_binding(source.clone(), destination.clone())
            .await
            .map_err(|error| match error {
                StoreError::NotFound => Error::BindingNotFound {
                    source_entitlement: source,
                    destination,
                },
                StoreError::InUse { dependents } => Error::BindingInUse {
                    source_entitlement: source,
                    destination,
                    dependents,
                },
                other => Error::from(other),
            })?;
        Ok(Response::new(pb::DeleteProxyBindingResponse {}))
    }

    async fn list_proxy_bindings(
        &self,
        request: Request<pb::ListProxyBindingsRequest>,
    ) -> Result<Response<pb::ListProxyBindingsResponse>, Status> {
        let page = policy::request::parse_list_bindings_request(&request.into_inner())
            .map_err(Error::InvalidRequest)?;
        // One more than the page holds tells whether another page follows.
        let query = BindingQuery {
            source: page.source.clone(),
            destination: page.destination.clone(),
            after: page.after.clone(),
            limit: page.size + 1,
        };
        let mut bindings = self.store.list_bindings(query).await.map_err(Error::from)?;
        let next_page_token = if bindings.len() > page.size {
            bindings.truncate(page.size);
            let last = bindings.last().expect("a full page");
            policy::request::next_page_token(&page, &last.source, &last.destination)
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListProxyBindingsResponse {
            bindings: bindings.into_iter().map(|b| b.into_binding()).collect(),
            next_page_token,
        }))
    }

    async fn list_provision_policies(
        &self,
        _request: Request<pb::ListProvisionPoliciesRequest>,
    ) -> Result<Response<pb::ListProvisionPoliciesResponse>, Status> {
        Err(Status::unimplemented("wip"))
    }

    async fn delete_provision_policy(
        &self,
        _request: Request<pb::DeleteProvisionPolicyRequest>,
    ) -> Result<Response<pb::DeleteProvisionPolicyResponse>, Status> {
        Err(Status::unimplemented("wip"))
    }

    async fn list_provision_policy_revisions(
        &self,
        _request: Request<pb::ListProvisionPolicyRevisionsRequest>,
    ) -> Result<Response<pb::ListProvisionPolicyRevisionsResponse>, Status> {
        Err(Status::unimplemented("wip"))
    }

    async fn rollback_provision_policy(
        &self,
        _request: Request<pb::RollbackProvisionPolicyRequest>,
    ) -> Result<Response<pb::RollbackProvisionPolicyResponse>, Status> {
        Err(Status::unimplemented("wip"))
    }

    type WatchProvisionPoliciesStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::WatchProvisionPoliciesResponse, Status>>;

    async fn watch_provision_policies(
        &self,
        _request: Request<pb::WatchProvisionPoliciesRequest>,
    ) -> Result<Response<Self::WatchProvisionPoliciesStream>, Status> {
        Err(Status::unimplemented("wip"))
    }

    async fn validate_provision_policy(
        &self,
        request: Request<pb::ValidateProvisionPolicyRequest>,
    ) -> Result<Response<pb::ValidateProvisionPolicyResponse>, Status> {
        let mut resource = request.into_inner().policy.unwrap_or_default();
        clear_output_fields(&mut resource);
        let static_violations = policy::check_static(&resource);
        let violations = self
            .with_graph_violations(&resource, static_violations)
            .await?;
        Ok(Response::new(pb::ValidateProvisionPolicyResponse {
            valid: !policy::has_errors(&violations),
            violations,
        }))
    }
}

fn errors_only(violations: Vec<pb::PolicyViolation>) -> Vec<pb::PolicyViolation> {
    violations
        .into_iter()
        .filter(|v| v.severity == pb::Severity::Error as i32)
        .collect()
}
