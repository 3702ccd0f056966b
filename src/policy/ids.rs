//! Ids: every app, entitlement, connector, webhook, user, vault, schema, group and config id is
//! 1-64 bytes of `[A-Za-z0-9._:-]`, so ids can be keys, path segments and log fields as they are.

use super::limits::MAX_ID_BYTES;
use super::path::Path;
use super::reason;
use super::violations::{Violations, echo};
use crate::pb;

/// A required id: REQUIRED when empty, else INVALID_ID when malformed; never both.
pub(super) fn check_required(violations: &mut Violations<'_>, path: &Path, id: &str) {
    if id.is_empty() {
        violations.error(path, reason::REQUIRED, "must not be empty");
    } else {
        check(violations, path, id);
    }
}

/// An optional id: empty means unset.
pub(super) fn check_optional(violations: &mut Violations<'_>, path: &Path, id: &str) {
    if !id.is_empty() {
        check(violations, path, id);
    }
}

/// An id that is there, such as an element of a list: empty is malformed, not missing.
pub(super) fn check(violations: &mut Violations<'_>, path: &Path, id: &str) {
    if !is_valid(id) {
        violations.error(
            path,
            reason::INVALID_ID,
            format!(
                "must be 1-{MAX_ID_BYTES} characters of [A-Za-z0-9._:-], got {}",
                echo(id)
            ),
        );
    }
}

pub(super) fn is_valid(id: &str) -> bool {
    (1..=MAX_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// An entitlement reference: required, with both ids required.
pub(super) fn check_entitlement(
    violations: &mut Violations<'_>,
    path: &Path,
    entitlement: Option<&pb::EntitlementRef>,
) {
    match entitlement {
        None => violations.error(path, reason::REQUIRED, "must be set"),
        Some(entitlement) => {
            check_required(violations, &path.field("app_id"), &entitlement.app_id);
            check_required(
                violations,
                &path.field("entitlement_id"),
                &entitlement.entitlement_id,
            );
        }
    }
}
