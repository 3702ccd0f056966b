//! The validation rules of a provision policy resource (DESIGN.md 2.4). No tonic, no SQL: the
//! rules read the protobuf types and, for the rules that span entitlements, a [`Lookup`] of what
//! is stored.
//!
//! `check_static` holds every rule that needs nothing but the resource; `check_graph` the rules
//! that follow stored delegations. The store runs `check_graph` inside its write transaction so
//! the check and the write are atomic; [`validate`] runs both.

mod cel;
mod connector;
pub mod consistency;
pub mod dependents;
pub mod graph;
mod ids;
pub mod limits;
mod lists;
mod manual;
mod node;
pub mod path;
pub mod plan;
pub mod reason;
mod resource;
mod text;
mod violations;
pub mod walk;

#[cfg(test)]
mod graph_tests;
#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod tests;

use crate::pb;

/// Why a lookup of stored state failed; the store's own error, boxed so `policy` stays free of it.
pub type LookupError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Read access to stored state, for the rules that span entitlements.
pub trait Lookup {
    /// The entitlements the current stored resource of `entitlement` delegates to (in either
    /// policy), or `None` when it has no stored resource.
    fn delegation_targets(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError>;

    /// Whether a proxy binding from `source` into `destination` is stored.
    fn binding_exists(
        &self,
        source: &pb::EntitlementRef,
        destination: &pb::EntitlementRef,
    ) -> Result<bool, LookupError>;

    /// The entitlements other than `entitlement` whose current stored resources delegate to it,
    /// ordered by app id then entitlement id.
    fn dependants(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Vec<pb::EntitlementRef>, LookupError>;
}

/// A consistent read view of everything stored: what the walks that read other entitlements'
/// policies (plans) need beyond [`Lookup`].
pub trait Snapshot: Lookup {
    /// The current stored resource of `entitlement` (without its output-only fields), if any.
    fn resource(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<pb::EntitlementProvisionPolicy>, LookupError>;

    /// The position of the change log this view shows.
    fn head(&self) -> Result<u64, LookupError>;
}

/// Whether `entitlement` names one with valid ids (what the rules require of a resource's
/// entitlement).
pub fn is_entitlement(entitlement: &pb::EntitlementRef) -> bool {
    ids::is_valid(&entitlement.app_id) && ids::is_valid(&entitlement.entitlement_id)
}

/// Runs every rule: the static ones, then those that need the store.
pub fn validate(
    resource: &pb::EntitlementProvisionPolicy,
    lookup: &dyn Lookup,
) -> Result<Vec<pb::PolicyViolation>, LookupError> {
    let mut violations = check_static(resource);
    violations.extend(check_graph(resource, lookup)?);
    Ok(violations)
}

/// Whether any violation blocks a write.
pub fn has_errors(violations: &[pb::PolicyViolation]) -> bool {
    violations
        .iter()
        .any(|v| v.severity == pb::Severity::Error as i32)
}

/// Every rule that needs nothing but the resource, every violation found, in field order. Paths
/// start at `policy`, the field that holds the resource in both SetProvisionPolicyRequest and
/// ValidateProvisionPolicyRequest (see [`path`]).
///
/// - A `ProvisionPolicy` with no `typ` is REQUIRED at its own path (`policy.provision_policy`,
///   `….provision_steps[1]`).
/// - A top-level `multi_step` is level 1, one among its steps level 2, and so on: a `multi_step`
///   at level 5 is TOO_DEEP at its own path (`….multi_step`), and its steps are not checked.
/// - TOO_MANY_NODES counts the `ProvisionPolicy` messages of `provision_policy` and
///   `deprovision_policy` together; it is reported once, at the first one past the limit, and
///   neither it nor any after it is checked.
/// - An empty CEL expression is INVALID_CEL; one longer than [`limits::MAX_CEL_BYTES`] TOO_LONG.
/// - A repeated value in a list is DUPLICATE_VALUE at its own index, and checked only once.
pub fn check_static(resource: &pb::EntitlementProvisionPolicy) -> Vec<pb::PolicyViolation> {
    resource::check(resource)
}

/// The rules that follow stored delegations and bindings (DESIGN.md 2.4, delegation rows).
pub fn check_graph(
    resource: &pb::EntitlementProvisionPolicy,
    lookup: &dyn Lookup,
) -> Result<Vec<pb::PolicyViolation>, LookupError> {
    graph::check(resource, lookup)
}

pub mod graph_requests;
pub mod lifecycle;
pub mod request;
pub mod tokens;
pub use request::check_get_request;

/// Whether [`check_graph`] can find anything in `resource`: every rule it holds starts from a
/// DelegatedProvision of the resource itself. Validate skips the read view of the store (a hop
/// to a blocking thread, most of a Validate's cost; see BENCHMARKS.md) when there is none. A
/// graph rule that does not start from a delegation must change this.
///
/// It looks at every node without building paths (the walk's paths cost more than the rest of
/// this check), and says true for a resource past [`limits::MAX_NODES`], which the rules refuse
/// anyway: it may only err towards running the check.
pub fn needs_graph_check(resource: &pb::EntitlementProvisionPolicy) -> bool {
    use pb::provision_policy::Typ;
    let mut pending: Vec<&pb::ProvisionPolicy> = resource
        .provision_policy
        .iter()
        .chain(&resource.deprovision_policy)
        .collect();
    let mut seen = 0;
    while let Some(policy) = pending.pop() {
        seen += 1;
        if seen > limits::MAX_NODES {
            return true;
        }
        match &policy.typ {
            Some(Typ::Delegated(_)) => return true,
            Some(Typ::MultiStep(multi_step)) => pending.extend(&multi_step.provision_steps),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod needs_graph_check_tests {
    use super::*;
    use crate::pb::provision_policy::Typ;

    fn with_steps(steps: Vec<Typ>) -> pb::EntitlementProvisionPolicy {
        pb::EntitlementProvisionPolicy {
            provision_policy: Some(pb::ProvisionPolicy {
                typ: Some(Typ::MultiStep(pb::MultiStep {
                    provision_steps: steps
                        .into_iter()
                        .map(|typ| pb::ProvisionPolicy { typ: Some(typ) })
                        .collect(),
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_resource_with_a_delegation_needs_the_graph_check() {
        let webhook = || {
            Typ::Webhook(pb::WebhookProvision {
                webhook_id: "wh".to_owned(),
            })
        };
        assert!(!needs_graph_check(&with_steps(vec![webhook()])));
        assert!(needs_graph_check(&with_steps(vec![
            webhook(),
            Typ::Delegated(pb::DelegatedProvision::default()),
        ])));
        let mut deprovision_only = with_steps(vec![webhook()]);
        deprovision_only.deprovision_policy = Some(pb::ProvisionPolicy {
            typ: Some(Typ::Delegated(pb::DelegatedProvision::default())),
        });
        assert!(needs_graph_check(&deprovision_only));
        let nested = with_steps(vec![
            webhook(),
            Typ::MultiStep(pb::MultiStep {
                provision_steps: vec![pb::ProvisionPolicy {
                    typ: Some(Typ::Delegated(pb::DelegatedProvision::default())),
                }],
            }),
        ]);
        assert!(needs_graph_check(&nested));
        assert_eq!(
            walk::delegations(&nested).count(),
            1,
            "the walk finds it too"
        );
    }

    #[test]
    fn a_resource_past_the_node_limit_is_checked() {
        let webhooks = (0..=limits::MAX_NODES)
            .map(|_| {
                Typ::Webhook(pb::WebhookProvision {
                    webhook_id: "wh".to_owned(),
                })
            })
            .collect();
        assert!(needs_graph_check(&with_steps(webhooks)));
    }
}
