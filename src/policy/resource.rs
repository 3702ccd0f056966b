//! The static rules of a whole resource: its entitlement, then every node of the walk.

use super::limits::MAX_NODES;
use super::path::Path;
use super::violations::Violations;
use super::walk::Walk;
use super::{ids, node, reason};
use crate::pb;

pub(super) fn check(resource: &pb::EntitlementProvisionPolicy) -> Vec<pb::PolicyViolation> {
    let mut violations = Violations::default();
    let root = Path::resource();
    ids::check_entitlement(
        &mut violations,
        &root.field("entitlement"),
        resource.entitlement.as_ref(),
    );
    if resource.provision_policy.is_none() {
        violations.error(
            &root.field("provision_policy"),
            reason::REQUIRED,
            "must be set",
        );
    }
    let owner = resource.entitlement.as_ref();
    let mut walk = Walk::new(resource);
    for node in walk.by_ref() {
        node::check(&mut violations, &node, owner);
    }
    if let Some(path) = walk.first_unvisited() {
        violations.limit_error(
            path,
            reason::TOO_MANY_NODES,
            format!(
                "provision_policy and deprovision_policy together must hold at most \
                 {MAX_NODES} policies; this is policy {}, not checked, nor any after it",
                MAX_NODES + 1
            ),
        );
    }
    violations.finish()
}
