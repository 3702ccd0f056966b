//! The gRPC adapter: parse the request, run the rules in `policy`, call the `Store`, shape the
//! response. No rules live here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::error::Error;
use crate::pb;
use crate::pb::provision_policy_service_server::ProvisionPolicyService;
use crate::policy;
use crate::store::record::{clear_output_fields, etag, revision_of_etag};
use crate::store::{Store, StoreError, Write, WriteOutcome};

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
        let write = Write {
            resource,
            expected_revision,
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
