//! The RPCs that read the delegation graph: resolved provisioning plans and dependents. Each
//! reads one consistent snapshot of the store.

use crate::error::Error;
use crate::pb;
use crate::policy;
use crate::policy::consistency::Freshness;
use crate::policy::dependents::{self, key};
use crate::policy::graph_requests::{self, PlanTarget};
use crate::policy::plan::{self, Plan};
use crate::policy::tokens::DependentsPage;
use crate::store::Store;
use crate::store::record::clear_output_fields;

use super::cursor_of;

pub(super) async fn resolve(
    store: &impl Store,
    request: pb::ResolveProvisionPlanRequest,
) -> Result<pb::ResolveProvisionPlanResponse, Error> {
    let (target, direction) =
        graph_requests::parse_resolve_request(request).map_err(Error::InvalidRequest)?;
    match target {
        PlanTarget::Stored(entitlement) => {
            let wanted = entitlement.clone();
            let resolved = store
                .read_snapshot(Box::new(move |snapshot| {
                    let Some(resource) = snapshot.resource(&wanted)? else {
                        return Ok(None);
                    };
                    let plan = plan::resolve(&resource, direction, snapshot)?;
                    Ok(Some((plan, snapshot.head()?)))
                }))
                .await?;
            let (plan, head) = resolved.ok_or(Error::NotFound {
                entitlement,
                revision: None,
            })?;
            Ok(response(store, plan, Vec::new(), head))
        }
        PlanTarget::Preview(mut resource) => {
            clear_output_fields(&mut resource);
            let static_violations = policy::check_static(&resource);
            let (plan, violations, head) = store
                .read_snapshot(Box::new(move |snapshot| {
                    let mut violations = static_violations;
                    if !policy::has_errors(&violations) {
                        violations.extend(policy::check_graph(&resource, snapshot)?);
                    }
                    // A preview the rules refuse has no plan: nothing of it would ever run.
                    let plan = if policy::has_errors(&violations) {
                        Plan::default()
                    } else {
                        plan::resolve(&resource, direction, snapshot)?
                    };
                    Ok((plan, violations, snapshot.head()?))
                }))
                .await?;
            Ok(response(store, plan, violations, head))
        }
    }
}

fn response(
    store: &impl Store,
    plan: Plan,
    mut violations: Vec<pb::PolicyViolation>,
    head: u64,
) -> pb::ResolveProvisionPlanResponse {
    let complete = plan.complete && !policy::has_errors(&violations);
    violations.extend(plan.violations);
    pb::ResolveProvisionPlanResponse {
        steps: plan.steps,
        complete,
        inferred_inverse: plan.inferred_inverse,
        violations,
        read_at: cursor_of(store, head),
    }
}

pub(super) async fn dependents(
    store: &impl Store,
    request: pb::ListDependentsRequest,
) -> Result<pb::ListDependentsResponse, Error> {
    let query =
        graph_requests::parse_list_dependents_request(&request).map_err(Error::InvalidRequest)?;
    let (of, transitive) = (query.of.clone(), query.transitive);
    let found = store
        .read_snapshot(Box::new(move |snapshot| {
            dependents::dependents(&of, transitive, snapshot)
        }))
        .await?;
    let mut page: Vec<dependents::Dependent> = found
        .dependents
        .into_iter()
        .filter(|d| {
            query
                .after
                .as_ref()
                .is_none_or(|after| key(&d.entitlement) > key(after))
        })
        .take(query.size + 1)
        .collect();
    let next_page_token = if page.len() > query.size {
        page.truncate(query.size);
        DependentsPage {
            of: query.of.clone(),
            transitive: query.transitive,
            after: page.last().expect("a full page").entitlement.clone(),
        }
        .encode()
    } else {
        String::new()
    };
    Ok(pb::ListDependentsResponse {
        dependents: page
            .into_iter()
            .map(|d| pb::Dependent {
                entitlement: Some(d.entitlement),
                chain: d.chain,
            })
            .collect(),
        next_page_token,
    })
}

/// How many entitlements depend on `entitlement`, directly or through chains, as stored now:
/// one point read when none does (the common case), the full walk in a read view otherwise.
/// How many entitlements depend on `entitlement`, as this replica's memory has them: a Set's
/// own write never changes who delegates to its entitlement (only whom it delegates to), so
/// waiting for memory to reach that write, or asking the database for its head, would only
/// make the Set's answer later (on SQLite memory is exact in any case).
pub(super) async fn count_dependents(
    store: &impl Store,
    entitlement: Option<&pb::EntitlementRef>,
) -> Result<i32, Error> {
    let Some(entitlement) = entitlement.filter(|e| policy::is_entitlement(e)) else {
        return Ok(0);
    };
    let entitlement = entitlement.clone();
    let served = store
        .read_current(
            Freshness::Any,
            Box::new(move |snapshot| dependent_count(Some(&entitlement), snapshot)),
        )
        .await?;
    Ok(served.value)
}

/// How many entitlements depend on `entitlement`, directly or through chains; 0 for a resource
/// that names no valid entitlement.
pub(super) fn dependent_count(
    entitlement: Option<&pb::EntitlementRef>,
    lookup: &dyn policy::Lookup,
) -> Result<i32, policy::LookupError> {
    let Some(entitlement) = entitlement.filter(|e| policy::is_entitlement(e)) else {
        return Ok(0);
    };
    let found = dependents::dependents(entitlement, true, lookup)?;
    Ok(i32::try_from(found.dependents.len()).unwrap_or(i32::MAX))
}
