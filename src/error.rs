//! The service's errors and their one mapping to a gRPC status (AIP-193): every status carries an
//! `ErrorInfo { reason, domain: "provisiond", metadata }` plus at most one more specific detail,
//! and a message that is useful without the details.

use std::collections::HashMap;

use tonic::Code;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::pb;
use crate::store::StoreError;

/// The `ErrorInfo.domain` of every error this service returns.
pub const DOMAIN: &str = "provisiond";

/// The `ResourceInfo.resource_type` of a provision policy resource.
pub const RESOURCE_TYPE: &str = "provision.v1.EntitlementProvisionPolicy";

/// How many violations the status message spells out; the details list the rest.
const VIOLATIONS_IN_MESSAGE: usize = 3;

/// The BadRequest detail travels base64-encoded in the `grpc-status-details-bin` trailer, and
/// gRPC clients refuse metadata past 8 KiB (soft) / 16 KiB (hard) by default (grpc core, as
/// Python's grpcio): list violations while their text stays under this, and say how many were
/// left out.
const MAX_DETAIL_TEXT_BYTES: usize = 4 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy has violations of severity ERROR; holds only those.
    #[error("the provision policy has {} error(s)", .0.len())]
    InvalidPolicy(Vec<pb::PolicyViolation>),
    /// The request itself is malformed (outside the policy).
    #[error("the request has {} invalid field(s)", .0.len())]
    InvalidRequest(Vec<pb::PolicyViolation>),
    /// No resource for the entitlement, or no such revision of it.
    #[error("no provision policy found")]
    NotFound {
        entitlement: pb::EntitlementRef,
        revision: Option<i64>,
    },
    /// The request's etag is not the current one.
    #[error("etag mismatch")]
    EtagMismatch {
        entitlement: pb::EntitlementRef,
        given: String,
        current: Option<String>,
    },
    /// The store failed.
    #[error("store failure")]
    Store(#[from] StoreError),
}

/// `apps/{app_id}/entitlements/{entitlement_id}`: how errors name a resource.
pub fn resource_name(entitlement: &pb::EntitlementRef) -> String {
    format!(
        "apps/{}/entitlements/{}",
        entitlement.app_id, entitlement.entitlement_id
    )
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let mut details = ErrorDetails::new();
        let (code, reason, message, metadata) = match error {
            Error::InvalidPolicy(violations) => {
                let message = violations_message("the provision policy is invalid", &violations);
                details.set_bad_request(field_violations(&violations));
                let metadata = [("violations", violations.len().to_string())];
                (
                    Code::InvalidArgument,
                    "INVALID_PROVISION_POLICY",
                    message,
                    metadata_of(metadata),
                )
            }
            Error::InvalidRequest(violations) => {
                let message = violations_message("the request is invalid", &violations);
                details.set_bad_request(field_violations(&violations));
                let metadata = [("violations", violations.len().to_string())];
                (
                    Code::InvalidArgument,
                    "INVALID_REQUEST",
                    message,
                    metadata_of(metadata),
                )
            }
            Error::NotFound {
                entitlement,
                revision,
            } => {
                let name = resource_name(&entitlement);
                let (message, mut metadata) = match revision {
                    None => (format!("{name} has no provision policy"), HashMap::new()),
                    Some(revision) => (
                        format!("{name} has no provision policy revision {revision}"),
                        HashMap::from([("revision".to_owned(), revision.to_string())]),
                    ),
                };
                metadata.extend(entitlement_metadata(&entitlement));
                details.set_resource_info(RESOURCE_TYPE, name, "", message.clone());
                (
                    Code::NotFound,
                    "PROVISION_POLICY_NOT_FOUND",
                    message,
                    metadata,
                )
            }
            Error::EtagMismatch {
                entitlement,
                given,
                current,
            } => {
                let name = resource_name(&entitlement);
                let now = match &current {
                    Some(etag) => format!("the current etag is {etag}"),
                    None => "it has no provision policy yet".to_owned(),
                };
                let message = format!(
                    "etag {given} does not match {name}: {now}; get the policy again, re-apply the change and retry"
                );
                details.add_precondition_failure_violation("ETAG", name, message.clone());
                let mut metadata = entitlement_metadata(&entitlement);
                metadata.insert("etag".to_owned(), given);
                if let Some(current) = current {
                    metadata.insert("current_etag".to_owned(), current);
                }
                (Code::Aborted, "ETAG_MISMATCH", message, metadata)
            }
            Error::Store(store_error) => match store_error {
                StoreError::RevisionMismatch { expected, actual } => {
                    // The service turns this into EtagMismatch; kept exhaustive all the same.
                    let message = format!(
                        "revision {expected} is not the current revision ({})",
                        actual.map_or("none".to_owned(), |a| a.to_string())
                    );
                    (Code::Aborted, "ETAG_MISMATCH", message, HashMap::new())
                }
                StoreError::Unavailable(source) => {
                    tracing::warn!(error = %chain(&*source), "store unavailable");
                    let message = "the store is unavailable; retry with backoff".to_owned();
                    (
                        Code::Unavailable,
                        "STORAGE_UNAVAILABLE",
                        message,
                        HashMap::new(),
                    )
                }
                StoreError::Internal(source) => {
                    tracing::error!(error = %chain(&*source), "store failure");
                    (
                        Code::Internal,
                        "INTERNAL",
                        "internal error".to_owned(),
                        HashMap::new(),
                    )
                }
            },
        };
        details.set_error_info(reason, DOMAIN, metadata);
        tonic::Status::with_error_details(code, message, details)
    }
}

fn field_violations(violations: &[pb::PolicyViolation]) -> Vec<FieldViolation> {
    let mut budget = MAX_DETAIL_TEXT_BYTES;
    let mut listed = Vec::new();
    for v in violations {
        let size = v.field.len() + v.description.len() + v.reason.len();
        if size > budget {
            let left_out = violations.len() - listed.len();
            listed.push(FieldViolation::new(
                "policy",
                format!(
                    "{left_out} more violation(s) not listed here, to keep the error small; \
                     ValidateProvisionPolicy returns them as data"
                ),
            ));
            break;
        }
        budget -= size;
        let mut listed_violation = FieldViolation::new(&v.field, &v.description);
        listed_violation.reason = v.reason.clone();
        listed.push(listed_violation);
    }
    listed
}

/// The first few violations in one line, so the message stands on its own.
fn violations_message(what: &str, violations: &[pb::PolicyViolation]) -> String {
    let mut message = format!("{what}: ");
    let shown: Vec<String> = violations
        .iter()
        .take(VIOLATIONS_IN_MESSAGE)
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect();
    message.push_str(&shown.join("; "));
    if violations.len() > VIOLATIONS_IN_MESSAGE {
        message.push_str(&format!(
            "; and {} more (see the BadRequest details)",
            violations.len() - VIOLATIONS_IN_MESSAGE
        ));
    }
    message
}

fn entitlement_metadata(entitlement: &pb::EntitlementRef) -> HashMap<String, String> {
    HashMap::from([
        ("app_id".to_owned(), entitlement.app_id.clone()),
        (
            "entitlement_id".to_owned(),
            entitlement.entitlement_id.clone(),
        ),
    ])
}

fn metadata_of<const N: usize>(pairs: [(&str, String); N]) -> HashMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// An error and its sources on one line, for the log.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
