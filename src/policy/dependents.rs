//! Who depends on an entitlement: the entitlements whose current policies delegate to it,
//! directly or through a chain. A breadth-first walk backwards over the stored delegation edges,
//! so each dependent comes with its shortest chain; bounded like the delegation rules.

use std::collections::{HashMap, VecDeque};

use super::limits::MAX_DELEGATION_LOOKUPS;
use super::{Lookup, LookupError};
use crate::pb;

/// One dependent and its chain: the dependent first, `of` last.
#[derive(Debug, Clone, PartialEq)]
pub struct Dependent {
    pub entitlement: pb::EntitlementRef,
    pub chain: Vec<pb::EntitlementRef>,
}

/// The dependents of `of`, ordered by app id then entitlement id: those whose policies
/// delegate to it, and with `transitive` those that reach it through others. Past
/// [`MAX_DELEGATION_LOOKUPS`] lookups the walk stops; `truncated` says so.
pub fn dependents(
    of: &pb::EntitlementRef,
    transitive: bool,
    lookup: &dyn Lookup,
) -> Result<Found, LookupError> {
    // Each entitlement reached, with the next one on its way to `of`.
    let mut next_hop: HashMap<pb::EntitlementRef, pb::EntitlementRef> = HashMap::new();
    let mut pending = VecDeque::from([of.clone()]);
    let mut lookups = 0;
    let mut truncated = false;
    while let Some(current) = pending.pop_front() {
        if lookups == MAX_DELEGATION_LOOKUPS {
            truncated = true;
            break;
        }
        lookups += 1;
        for dependant in lookup.dependants(&current)? {
            if dependant == *of || next_hop.contains_key(&dependant) {
                continue;
            }
            next_hop.insert(dependant.clone(), current.clone());
            if transitive {
                pending.push_back(dependant);
            }
        }
    }
    let mut found: Vec<Dependent> = next_hop
        .keys()
        .map(|entitlement| {
            let mut chain = vec![entitlement.clone()];
            let mut at = entitlement;
            while let Some(hop) = next_hop.get(at) {
                chain.push(hop.clone());
                at = hop;
            }
            Dependent {
                entitlement: entitlement.clone(),
                chain,
            }
        })
        .collect();
    found.sort_by(|a, b| key(&a.entitlement).cmp(&key(&b.entitlement)));
    Ok(Found {
        dependents: found,
        truncated,
    })
}

/// What [`dependents`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub dependents: Vec<Dependent>,
    /// The walk stopped at its lookup bound: there may be more.
    pub truncated: bool,
}

pub fn key(entitlement: &pb::EntitlementRef) -> (&str, &str) {
    (&entitlement.app_id, &entitlement.entitlement_id)
}
