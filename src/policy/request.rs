//! Checks of request fields outside the policy resource.

use super::ids;
use super::path::Path;
use super::reason;
use super::violations::Violations;
use crate::pb;

/// The violations of a GetProvisionPolicyRequest: the entitlement must be named with valid ids
/// and the revision must not be negative.
pub fn check_get_request(request: &pb::GetProvisionPolicyRequest) -> Vec<pb::PolicyViolation> {
    let mut violations = Violations::default();
    ids::check_entitlement(
        &mut violations,
        &Path::request_field("entitlement"),
        request.entitlement.as_ref(),
    );
    if request.revision < 0 {
        violations.error(
            &Path::request_field("revision"),
            reason::INVALID_REVISION,
            format!(
                "must be 0 (the current revision) or a past revision, got {}",
                request.revision
            ),
        );
    }
    violations.finish()
}
