//! The delegation rules that read stored state: proxy bindings, dangling targets, cycles and
//! chain length. They follow the stored delegation edges of other entitlements, with this
//! resource's own delegations standing in for whatever is stored for it (the write replaces it).

use std::collections::HashMap;

use super::limits::{MAX_DELEGATION_CHAIN, MAX_DELEGATION_LOOKUPS};
use super::path::Path;
use super::violations::Violations;
use super::{Lookup, LookupError, ids, reason, walk};
use crate::pb;

/// What a resource adds to the delegation graph when it is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Edges {
    /// Every entitlement it delegates to, in either policy, sorted, without repeats.
    pub targets: Vec<pb::EntitlementRef>,
    /// The targets of its delegations with `implicit: true`: the sources of the proxy bindings
    /// into this entitlement that storing it creates.
    pub implicit_sources: Vec<pb::EntitlementRef>,
}

/// The edges of `resource`, counting only delegations with valid ids to another entitlement.
pub fn edges(resource: &pb::EntitlementProvisionPolicy) -> Edges {
    let mut edges = Edges::default();
    for (_, delegated) in targets(resource) {
        let target = target_of(delegated);
        if delegated.implicit {
            edges.implicit_sources.push(target.clone());
        }
        edges.targets.push(target);
    }
    for list in [&mut edges.targets, &mut edges.implicit_sources] {
        list.sort_by_key(key);
        list.dedup();
    }
    edges
}

pub(super) fn check(
    resource: &pb::EntitlementProvisionPolicy,
    lookup: &dyn Lookup,
) -> Result<Vec<pb::PolicyViolation>, LookupError> {
    let mut violations = Violations::default();
    let Some(owner) = resource.entitlement.as_ref() else {
        return Ok(Vec::new());
    };
    if !ids::is_valid(&owner.app_id) || !ids::is_valid(&owner.entitlement_id) {
        return Ok(Vec::new());
    }
    let mut graph = StoredGraph {
        lookup,
        targets: HashMap::new(),
    };
    // Storing the resource creates these bindings first (the write does it before the check):
    // another delegation to the same target needs no binding of its own, as in the write.
    let implicitly_bound = edges(resource).implicit_sources;
    for (path, delegated) in targets(resource) {
        let target = target_of(delegated);
        let bound = delegated.implicit || implicitly_bound.contains(&target);
        if !bound && !lookup.binding_exists(&target, owner)? {
            violations.error(
                &path,
                reason::MISSING_PROXY_BINDING,
                format!(
                    "needs a proxy binding from {} into {}: create it with CreateProxyBinding, \
                     or set implicit: true to create it with this policy",
                    name(&target),
                    name(owner)
                ),
            );
        }
        if graph.targets_of(&target)?.is_none() {
            violations.warning(
                &path,
                reason::DANGLING_DELEGATION,
                format!(
                    "delegates to {}, which has no provision policy yet; set one there before \
                     this entitlement is granted",
                    name(&target)
                ),
            );
        }
        match graph.follow(owner, &target)? {
            Chain::Fine => {}
            Chain::Cycle(cycle) => violations.error(
                &path,
                reason::DELEGATION_CYCLE,
                format!(
                    "must not close a delegation cycle: {}; remove one of these delegations",
                    names(&cycle)
                ),
            ),
            Chain::TooDeep(chain) => violations.error(
                &path,
                reason::DELEGATION_TOO_DEEP,
                format!(
                    "must lead to at most {MAX_DELEGATION_CHAIN} delegations in a row, got \
                     {} (and maybe more); delegate closer to where provisioning happens",
                    names(&chain)
                ),
            ),
            Chain::TooWide => violations.error(
                &path,
                reason::DELEGATION_TOO_DEEP,
                format!(
                    "leads to more than {MAX_DELEGATION_LOOKUPS} entitlements through stored \
                     delegations; delegate closer to where provisioning happens"
                ),
            ),
        }
    }
    Ok(violations.finish())
}

/// The delegations of the resource that the delegation rules look at: valid ids, another
/// entitlement (the static rules report the rest).
fn targets(
    resource: &pb::EntitlementProvisionPolicy,
) -> impl Iterator<Item = (Path, &pb::DelegatedProvision)> {
    let owner = resource.entitlement.as_ref();
    walk::delegations(resource).filter(move |(_, delegated)| {
        ids::is_valid(&delegated.app_id)
            && ids::is_valid(&delegated.entitlement_id)
            && owner.is_none_or(|owner| {
                owner.app_id != delegated.app_id || owner.entitlement_id != delegated.entitlement_id
            })
    })
}

enum Chain {
    Fine,
    /// From the owner back to the owner.
    Cycle(Vec<pb::EntitlementRef>),
    /// From the owner, one entitlement past the limit.
    TooDeep(Vec<pb::EntitlementRef>),
    TooWide,
}

/// The stored delegation edges, looked up once each.
struct StoredGraph<'l> {
    lookup: &'l dyn Lookup,
    targets: HashMap<(String, String), Option<Vec<pb::EntitlementRef>>>,
}

impl StoredGraph<'_> {
    fn targets_of(
        &mut self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<&Vec<pb::EntitlementRef>>, LookupError> {
        let key = key(entitlement);
        if !self.targets.contains_key(&key) {
            let found = self.lookup.delegation_targets(entitlement)?;
            self.targets.insert(key.clone(), found);
        }
        Ok(self.targets[&key].as_ref())
    }

    /// Depth-first from `owner → first`, iteratively. An entitlement is expanded again only
    /// when reached by a longer chain than before (the longest chain is what the limit is
    /// about), and never past the limit, so the work is bounded by entitlements × limit.
    fn follow(
        &mut self,
        owner: &pb::EntitlementRef,
        first: &pb::EntitlementRef,
    ) -> Result<Chain, LookupError> {
        // The chain so far, owner first; for each entitlement after the owner, the index of
        // its next stored target to try.
        let mut chain = vec![owner.clone(), first.clone()];
        let mut next_target = vec![0usize];
        let mut longest_reach: HashMap<(String, String), usize> = HashMap::new();
        while let Some(&position) = next_target.last() {
            let current = chain.last().expect("the chain holds the owner").clone();
            if position == 0 {
                let hops = chain.len() - 1;
                if key(&current) == key(owner) {
                    return Ok(Chain::Cycle(chain));
                }
                if hops > MAX_DELEGATION_CHAIN {
                    return Ok(Chain::TooDeep(chain));
                }
                let reached = longest_reach.entry(key(&current)).or_insert(0);
                if *reached >= hops {
                    // Reached before by a chain at least as long: nothing new below it.
                    chain.pop();
                    next_target.pop();
                    continue;
                }
                *reached = hops;
                if longest_reach.len() > MAX_DELEGATION_LOOKUPS {
                    return Ok(Chain::TooWide);
                }
            }
            let next = self
                .targets_of(&current)?
                .and_then(|targets| targets.get(position))
                .cloned();
            match next {
                Some(target) => {
                    *next_target.last_mut().expect("not empty") += 1;
                    chain.push(target);
                    next_target.push(0);
                }
                None => {
                    chain.pop();
                    next_target.pop();
                }
            }
        }
        Ok(Chain::Fine)
    }
}

fn target_of(delegated: &pb::DelegatedProvision) -> pb::EntitlementRef {
    pb::EntitlementRef {
        app_id: delegated.app_id.clone(),
        entitlement_id: delegated.entitlement_id.clone(),
    }
}

fn key(entitlement: &pb::EntitlementRef) -> (String, String) {
    (
        entitlement.app_id.clone(),
        entitlement.entitlement_id.clone(),
    )
}

/// `app/entitlement`: how descriptions name an entitlement (ids cannot hold `/`).
fn name(entitlement: &pb::EntitlementRef) -> String {
    format!("{}/{}", entitlement.app_id, entitlement.entitlement_id)
}

fn names(chain: &[pb::EntitlementRef]) -> String {
    chain.iter().map(name).collect::<Vec<_>>().join(" -> ")
}
