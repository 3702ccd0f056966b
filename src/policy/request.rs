//! Checks of request fields outside the policy resource.

use crate::pb;

/// Why a Get names no revision that can exist.
pub const INVALID_REVISION: &str = "INVALID_REVISION";

/// The violations of a GetProvisionPolicyRequest: the entitlement must be named with valid ids
/// and the revision must not be negative.
pub fn check_get_request(request: &pb::GetProvisionPolicyRequest) -> Vec<pb::PolicyViolation> {
    let mut violations = Vec::new();
    match &request.entitlement {
        None => violations.push(error(
            "entitlement",
            super::reason::REQUIRED,
            "must be set".into(),
        )),
        Some(entitlement) => {
            for (field, id) in [
                ("entitlement.app_id", &entitlement.app_id),
                ("entitlement.entitlement_id", &entitlement.entitlement_id),
            ] {
                if id.is_empty() {
                    violations.push(error(
                        field,
                        super::reason::REQUIRED,
                        "must not be empty".into(),
                    ));
                } else if id.len() > 64
                    || !id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b))
                {
                    violations.push(error(
                        field,
                        super::reason::INVALID_ID,
                        "must be 1-64 characters of [A-Za-z0-9._:-]".into(),
                    ));
                }
            }
        }
    }
    if request.revision < 0 {
        violations.push(error(
            "revision",
            INVALID_REVISION,
            format!(
                "must be 0 (current) or a positive revision, got {}",
                request.revision
            ),
        ));
    }
    violations
}

fn error(field: &str, reason: &str, description: String) -> pb::PolicyViolation {
    pb::PolicyViolation {
        field: field.to_owned(),
        reason: reason.to_owned(),
        description,
        severity: pb::Severity::Error as i32,
    }
}
