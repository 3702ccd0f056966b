//! The service's errors and their one mapping to a gRPC status (AIP-193): every status carries an
//! `ErrorInfo { reason, domain: "provisiond", metadata }` plus at most one more specific detail,
//! and a message that is useful without the details.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Code;
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::pb;
use crate::server::principal::Role;
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
    /// CreateProxyBinding of a binding that exists.
    #[error("proxy binding exists already")]
    BindingExists {
        source_entitlement: pb::EntitlementRef,
        destination: pb::EntitlementRef,
    },
    /// DeleteProxyBinding of a binding that does not exist.
    #[error("no such proxy binding")]
    BindingNotFound {
        source_entitlement: pb::EntitlementRef,
        destination: pb::EntitlementRef,
    },
    /// DeleteProxyBinding of a binding that current policies delegate through.
    #[error("proxy binding in use")]
    BindingInUse {
        // Not `source`: thiserror would take a field of that name for the error's cause.
        source_entitlement: pb::EntitlementRef,
        destination: pb::EntitlementRef,
        dependents: Vec<pb::EntitlementRef>,
    },
    /// A create-only Set of an entitlement that has a policy.
    #[error("provision policy exists already")]
    AlreadyExists { entitlement: pb::EntitlementRef },
    /// A delete of a policy that other current policies delegate to.
    #[error("provision policy has dependants")]
    HasDependants {
        entitlement: pb::EntitlementRef,
        dependents: Vec<pb::EntitlementRef>,
    },
    /// A rollback to a revision that is a delete.
    #[error("revision is a delete")]
    RevisionDeleted {
        entitlement: pb::EntitlementRef,
        revision: i64,
    },
    /// A change cursor that is malformed or from another store.
    #[error("invalid cursor")]
    InvalidCursor(Vec<pb::PolicyViolation>),
    /// A change cursor past the head of the log.
    #[error("cursor ahead of the log")]
    CursorAhead {
        given: u64,
        head: u64,
        head_cursor: String,
    },
    /// The server is stopping; the stream ends after a final checkpoint.
    #[error("shutting down")]
    ShuttingDown,
    /// No credentials, or ones no principal has. What was wrong is said without echoing it.
    #[error("unauthenticated")]
    Unauthenticated { why: &'static str },
    /// A known principal whose role does not cover the method.
    #[error("permission denied")]
    PermissionDenied {
        principal: String,
        /// None: a verified client certificate the tokens file gives no role.
        role: Option<Role>,
        method: String,
        needed: Role,
    },
    /// A server limit is reached; retry after the delay.
    #[error("resource exhausted")]
    Exhausted {
        limit: &'static str,
        value: usize,
        retry_after: Duration,
    },
    /// The store failed.
    #[error("store failure")]
    Store(#[from] StoreError),
}

/// The `ResourceInfo.resource_type` of a proxy binding.
pub const BINDING_RESOURCE_TYPE: &str = "provision.v1.ProxyBinding";

/// `apps/{s…}/entitlements/{s…}/bindings/apps/{d…}/entitlements/{d…}`: how errors name a binding.
pub fn binding_name(source: &pb::EntitlementRef, destination: &pb::EntitlementRef) -> String {
    format!(
        "{}/bindings/{}",
        resource_name(source),
        resource_name(destination)
    )
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
            Error::BindingExists {
                source_entitlement: source,
                destination,
            } => {
                let name = binding_name(&source, &destination);
                let message = format!("proxy binding {name} exists already");
                details.set_resource_info(BINDING_RESOURCE_TYPE, &name, "", message.clone());
                let metadata = binding_metadata(&source, &destination);
                (
                    Code::AlreadyExists,
                    "PROXY_BINDING_ALREADY_EXISTS",
                    message,
                    metadata,
                )
            }
            Error::BindingNotFound {
                source_entitlement: source,
                destination,
            } => {
                let name = binding_name(&source, &destination);
                let message = format!("no proxy binding {name}");
                details.set_resource_info(BINDING_RESOURCE_TYPE, &name, "", message.clone());
                let metadata = binding_metadata(&source, &destination);
                (Code::NotFound, "PROXY_BINDING_NOT_FOUND", message, metadata)
            }
            Error::BindingInUse {
                source_entitlement: source,
                destination,
                dependents,
            } => {
                let name = binding_name(&source, &destination);
                for dependent in &dependents {
                    details.add_precondition_failure_violation(
                        "DELEGATION",
                        resource_name(dependent),
                        format!(
                            "the current provision policy of {} delegates to {} through this binding",
                            resource_name(dependent),
                            resource_name(&source)
                        ),
                    );
                }
                let names: Vec<String> = dependents.iter().map(resource_name).collect();
                let message = format!(
                    "proxy binding {name} is in use by the provision policy of {}; change that policy first",
                    names.join(", ")
                );
                let mut metadata = binding_metadata(&source, &destination);
                metadata.insert("dependents".to_owned(), names.join(","));
                (
                    Code::FailedPrecondition,
                    "PROXY_BINDING_IN_USE",
                    message,
                    metadata,
                )
            }
            Error::AlreadyExists { entitlement } => {
                let name = resource_name(&entitlement);
                let message = format!(
                    "{name} has a provision policy already; a create-only write stands only for \
                     an entitlement without one (set it with its etag instead)"
                );
                details.set_resource_info(RESOURCE_TYPE, name, "", message.clone());
                (
                    Code::AlreadyExists,
                    "PROVISION_POLICY_ALREADY_EXISTS",
                    message,
                    entitlement_metadata(&entitlement),
                )
            }
            Error::HasDependants {
                entitlement,
                dependents,
            } => {
                let name = resource_name(&entitlement);
                for dependent in &dependents {
                    details.add_precondition_failure_violation(
                        "DELEGATION",
                        resource_name(dependent),
                        format!(
                            "the current provision policy of {} delegates to {name}",
                            resource_name(dependent)
                        ),
                    );
                }
                let names: Vec<String> = dependents.iter().map(resource_name).collect();
                let message = format!(
                    "{name} cannot be deleted while the provision policies of {} delegate to it; \
                     change those policies first",
                    names.join(", ")
                );
                let mut metadata = entitlement_metadata(&entitlement);
                metadata.insert("dependents".to_owned(), names.join(","));
                (
                    Code::FailedPrecondition,
                    "POLICY_HAS_DEPENDANTS",
                    message,
                    metadata,
                )
            }
            Error::RevisionDeleted {
                entitlement,
                revision,
            } => {
                let name = resource_name(&entitlement);
                let message = format!(
                    "revision {revision} of {name} is a delete; roll back to a revision that holds \
                     a policy"
                );
                let mut violation = FieldViolation::new("revision", message.clone());
                violation.reason = "REVISION_DELETED".to_owned();
                details.set_bad_request(vec![violation]);
                let mut metadata = entitlement_metadata(&entitlement);
                metadata.insert("revision".to_owned(), revision.to_string());
                (Code::InvalidArgument, "REVISION_DELETED", message, metadata)
            }
            Error::InvalidCursor(violations) => {
                let message = violations_message("the cursor is invalid", &violations);
                details.set_bad_request(field_violations(&violations));
                (
                    Code::InvalidArgument,
                    "INVALID_CURSOR",
                    message,
                    HashMap::new(),
                )
            }
            Error::CursorAhead {
                given,
                head,
                head_cursor,
            } => {
                let message = format!(
                    "the cursor names position {given} of the change log, past its head ({head}): \
                     was the store restored from an older backup? Take a new cursor: list again \
                     and watch from the new read_at, or read without `at_least_as_fresh`"
                );
                let metadata = HashMap::from([("head_cursor".to_owned(), head_cursor)]);
                (Code::OutOfRange, "CURSOR_AHEAD", message, metadata)
            }
            Error::ShuttingDown => (
                Code::Unavailable,
                "SHUTTING_DOWN",
                "the server is shutting down; resume the watch from the last cursor received"
                    .to_owned(),
                HashMap::new(),
            ),
            Error::Unauthenticated { why } => (
                Code::Unauthenticated,
                "UNAUTHENTICATED",
                format!(
                    "{why}: send `authorization: Bearer <token>` with a token of the server's \
                     tokens file, or a client certificate it knows"
                ),
                HashMap::new(),
            ),
            Error::PermissionDenied {
                principal,
                role,
                method,
                needed,
            } => {
                let held = role.map_or("no role in the tokens file".to_owned(), |role| {
                    format!("role {role}")
                });
                let message = format!(
                    "{principal} ({held}) may not call {method}: it needs the {needed} role"
                );
                let mut metadata = metadata_of([
                    ("principal", principal),
                    ("method", method),
                    ("required_role", needed.to_string()),
                ]);
                if let Some(role) = role {
                    metadata.insert("role".to_owned(), role.to_string());
                }
                (
                    Code::PermissionDenied,
                    "PERMISSION_DENIED",
                    message,
                    metadata,
                )
            }
            Error::Exhausted {
                limit,
                value,
                retry_after,
            } => {
                details.set_retry_info(Some(retry_after));
                let message = format!(
                    "the server is at its limit of {value} ({limit}); retry in {} ms",
                    retry_after.as_millis()
                );
                let metadata =
                    metadata_of([("limit", limit.to_owned()), ("value", value.to_string())]);
                (
                    Code::ResourceExhausted,
                    "RESOURCE_EXHAUSTED",
                    message,
                    metadata,
                )
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
                // The service turns these into the Binding* errors, with the names; kept
                // exhaustive all the same.
                StoreError::AlreadyExists => (
                    Code::AlreadyExists,
                    "PROXY_BINDING_ALREADY_EXISTS",
                    "the proxy binding exists already".to_owned(),
                    HashMap::new(),
                ),
                StoreError::NotFound => (
                    Code::NotFound,
                    "PROXY_BINDING_NOT_FOUND",
                    "no such proxy binding".to_owned(),
                    HashMap::new(),
                ),
                // The service turns this into PolicyHasDependants, with the names.
                StoreError::HasDependants { .. } => (
                    Code::FailedPrecondition,
                    "POLICY_HAS_DEPENDANTS",
                    "other policies delegate to this one".to_owned(),
                    HashMap::new(),
                ),
                StoreError::InUse { .. } => (
                    Code::FailedPrecondition,
                    "PROXY_BINDING_IN_USE",
                    "the proxy binding is in use".to_owned(),
                    HashMap::new(),
                ),
                // The service turns this into CursorAhead, with the head's cursor; kept
                // exhaustive all the same.
                StoreError::CursorAhead { given, head } => (
                    Code::OutOfRange,
                    "CURSOR_AHEAD",
                    format!(
                        "the cursor names position {given} of the change log, past its head ({head})"
                    ),
                    HashMap::new(),
                ),
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

fn binding_metadata(
    source: &pb::EntitlementRef,
    destination: &pb::EntitlementRef,
) -> HashMap<String, String> {
    HashMap::from([
        ("source_app_id".to_owned(), source.app_id.clone()),
        (
            "source_entitlement_id".to_owned(),
            source.entitlement_id.clone(),
        ),
        ("destination_app_id".to_owned(), destination.app_id.clone()),
        (
            "destination_entitlement_id".to_owned(),
            destination.entitlement_id.clone(),
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
