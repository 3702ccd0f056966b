//! Resolved provisioning plans: what actually runs when an entitlement is granted or revoked.
//! Multi-steps are flattened in order and each delegation is replaced by the target's policy
//! for the same direction, recursively, reading other entitlements from one [`Snapshot`].
//!
//! The walk is iterative (one frame per delegation followed, the steps still to visit on a
//! list), so neither the stack nor the work grows with the input beyond [`MAX_PLAN_NODES`]
//! nodes and [`MAX_DELEGATION_CHAIN`] delegations a chain.

use std::collections::HashMap;

use super::limits::{MAX_DELEGATION_CHAIN, MAX_PLAN_NODES};
use super::path::Path;
use super::{LookupError, Snapshot, reason};
use crate::pb;
use crate::pb::provision_policy::Typ;

/// Which of an entitlement's policies a plan follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Provision,
    Deprovision,
}

/// A resolved plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<pb::PlanStep>,
    /// Every branch resolved to steps.
    pub complete: bool,
    /// The root entitlement had no deprovision policy: its provision plan stands in.
    pub inferred_inverse: bool,
    /// The plan's own limits, when it hit them.
    pub violations: Vec<pb::PolicyViolation>,
}

/// The policy of `resource` a plan follows in `direction`, its path, and whether it is the
/// provision policy standing in for a missing deprovision policy.
fn select(
    resource: &pb::EntitlementProvisionPolicy,
    direction: Direction,
) -> Option<(Path, &pb::ProvisionPolicy, bool)> {
    let root = Path::resource();
    match (direction, &resource.deprovision_policy) {
        (Direction::Deprovision, Some(policy)) => {
            Some((root.field("deprovision_policy"), policy, false))
        }
        (direction, _) => resource.provision_policy.as_ref().map(|policy| {
            let inferred = direction == Direction::Deprovision;
            (root.field("provision_policy"), policy, inferred)
        }),
    }
}

/// One policy being walked: the entitlements it was reached through (itself last), and the
/// nodes still to visit, next one last.
struct Frame {
    via: Vec<pb::EntitlementRef>,
    pending: Vec<(Path, pb::ProvisionPolicy)>,
    inferred: bool,
}

/// The plan of `root` (stored, or a preview standing in for what is stored for its
/// entitlement). A branch under an inferred inverse follows provision policies all the way
/// down: the platform inverts that whole branch.
pub fn resolve(
    root: &pb::EntitlementProvisionPolicy,
    direction: Direction,
    snapshot: &dyn Snapshot,
) -> Result<Plan, LookupError> {
    let owner = root.entitlement.clone().unwrap_or_default();
    let mut plan = Plan {
        complete: true,
        ..Plan::default()
    };
    let Some((path, policy, inferred)) = select(root, direction) else {
        return Ok(plan);
    };
    plan.inferred_inverse = inferred;
    let mut resources: HashMap<pb::EntitlementRef, Option<pb::EntitlementProvisionPolicy>> =
        HashMap::from([(owner.clone(), Some(root.clone()))]);
    let mut stack = vec![Frame {
        via: vec![owner],
        pending: vec![(path, policy.clone())],
        inferred,
    }];
    let mut visited = 0;
    while let Some(frame) = stack.last_mut() {
        let Some((path, node)) = frame.pending.pop() else {
            stack.pop();
            continue;
        };
        visited += 1;
        if visited > MAX_PLAN_NODES {
            plan.complete = false;
            plan.violations.push(pb::PolicyViolation {
                field: "policy".to_owned(),
                reason: reason::TOO_MANY_NODES.to_owned(),
                description: format!(
                    "the plan visits more than {MAX_PLAN_NODES} policy nodes through its \
                     delegations; the steps after them are not listed"
                ),
                severity: pb::Severity::Error as i32,
            });
            break;
        }
        match node.typ {
            Some(Typ::MultiStep(multi_step)) => {
                let steps = path.field("multi_step").field("provision_steps");
                let children = multi_step.provision_steps.into_iter().enumerate().rev();
                frame
                    .pending
                    .extend(children.map(|(index, step)| (steps.index(index), step)));
            }
            Some(Typ::Delegated(delegated)) => {
                let target = pb::EntitlementRef {
                    app_id: delegated.app_id,
                    entitlement_id: delegated.entitlement_id,
                };
                let (via, inferred) = (frame.via.clone(), frame.inferred);
                let outcome = if via.contains(&target) {
                    Err(reason::DELEGATION_CYCLE)
                } else if via.len() > MAX_DELEGATION_CHAIN {
                    Err(reason::DELEGATION_TOO_DEEP)
                } else {
                    if !resources.contains_key(&target) {
                        let stored = snapshot.resource(&target)?;
                        resources.insert(target.clone(), stored);
                    }
                    // Under an inverted branch, targets keep to their provision policy: the
                    // platform inverts the whole branch.
                    let followed = if inferred {
                        Direction::Provision
                    } else {
                        direction
                    };
                    match resources[&target]
                        .as_ref()
                        .and_then(|resource| select(resource, followed))
                    {
                        None => Err(reason::DANGLING_DELEGATION),
                        Some((path, policy, inferred_here)) => {
                            let mut next_via = via.clone();
                            next_via.push(target.clone());
                            Ok(Frame {
                                via: next_via,
                                pending: vec![(path, policy.clone())],
                                inferred: inferred || inferred_here,
                            })
                        }
                    }
                };
                match outcome {
                    Ok(next) => stack.push(next),
                    Err(reason) => {
                        plan.complete = false;
                        plan.steps.push(pb::PlanStep {
                            step: None,
                            via,
                            field: path.field("delegated").as_str().to_owned(),
                            inferred_inverse: inferred,
                            unresolved_reason: reason.to_owned(),
                            unresolved_target: Some(target),
                        });
                    }
                }
            }
            // A policy with no typ is never stored; a preview with one is refused first.
            None => {}
            Some(leaf) => plan.steps.push(pb::PlanStep {
                step: Some(pb::ProvisionPolicy { typ: Some(leaf) }),
                via: frame.via.clone(),
                field: path.as_str().to_owned(),
                inferred_inverse: frame.inferred,
                unresolved_reason: String::new(),
                unresolved_target: None,
            }),
        }
    }
    Ok(plan)
}
