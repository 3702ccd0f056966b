//! Checks of the requests that read the delegation graph: ResolveProvisionPlan and
//! ListDependents.

use super::ids;
use super::lifecycle::page_size;
use super::path::Path;
use super::plan::Direction;
use super::reason;
use super::tokens::DependentsPage;
use super::violations::Violations;
use crate::pb;

/// What a ResolveProvisionPlanRequest asks for.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and moved once; boxing would only add an allocation"
)]
pub enum PlanTarget {
    Stored(pb::EntitlementRef),
    Preview(pb::EntitlementProvisionPolicy),
}

/// The target and direction of a ResolveProvisionPlanRequest. A preview is checked by the
/// policy rules themselves, later; only its presence is checked here.
pub fn parse_resolve_request(
    request: pb::ResolveProvisionPlanRequest,
) -> Result<(PlanTarget, Direction), Vec<pb::PolicyViolation>> {
    let direction = match request.direction() {
        pb::ProvisionDirection::Deprovision => Direction::Deprovision,
        pb::ProvisionDirection::Provision | pb::ProvisionDirection::Unspecified => {
            Direction::Provision
        }
    };
    let mut violations = Violations::default();
    let target = match (request.entitlement, request.policy) {
        (None, None) => {
            violations.error(
                &Path::request_field("entitlement"),
                reason::REQUIRED,
                "must set entitlement (for its stored policy) or policy (a preview)",
            );
            None
        }
        (Some(_), Some(_)) => {
            violations.error(
                &Path::request_field("policy"),
                reason::CONFLICTING_FIELDS,
                "must not be set together with entitlement: resolve a stored policy or a \
                 preview, not both",
            );
            None
        }
        (Some(entitlement), None) => {
            let path = Path::request_field("entitlement");
            ids::check_entitlement(&mut violations, &path, Some(&entitlement));
            Some(PlanTarget::Stored(entitlement))
        }
        (None, Some(resource)) => Some(PlanTarget::Preview(resource)),
    };
    let violations = violations.finish();
    match target {
        Some(target) if violations.is_empty() => Ok((target, direction)),
        _ => Err(violations),
    }
}

/// A ListDependentsRequest, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DependentsQuery {
    pub of: pb::EntitlementRef,
    pub transitive: bool,
    /// The last dependent of the previous page.
    pub after: Option<pb::EntitlementRef>,
    pub size: usize,
}

pub fn parse_list_dependents_request(
    request: &pb::ListDependentsRequest,
) -> Result<DependentsQuery, Vec<pb::PolicyViolation>> {
    let mut violations = Violations::default();
    let path = Path::request_field("entitlement");
    ids::check_entitlement(&mut violations, &path, request.entitlement.as_ref());
    let size = page_size(&mut violations, request.page_size);
    let of = request.entitlement.clone().unwrap_or_default();
    let after = match request.page_token.as_str() {
        "" => None,
        token => {
            let page = DependentsPage::decode(token)
                .filter(|page| page.of == of && page.transitive == request.transitive);
            if page.is_none() {
                violations.error(
                    &Path::request_field("page_token"),
                    reason::INVALID_PAGE_TOKEN,
                    "must be a next_page_token returned for the same entitlement and transitive",
                );
            }
            page.map(|page| page.after)
        }
    };
    let violations = violations.finish();
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(DependentsQuery {
        of,
        transitive: request.transitive,
        after,
        size,
    })
}
