//! The delegation rules against an in-memory stand-in for the store.

use std::collections::{HashMap, HashSet};

use super::graph::{Edges, edges};
use super::{Lookup, LookupError, check_graph, reason};
use crate::pb;
use crate::pb::provision_policy::Typ;

#[derive(Default)]
struct Stored {
    /// entitlement "app/ent" → its stored delegation targets.
    policies: HashMap<String, Vec<pb::EntitlementRef>>,
    /// (source, destination) as "app/ent".
    bindings: HashSet<(String, String)>,
}

fn name(e: &pb::EntitlementRef) -> String {
    format!("{}/{}", e.app_id, e.entitlement_id)
}

fn ent(name: &str) -> pb::EntitlementRef {
    let (app_id, entitlement_id) = name.split_once('/').expect("app/ent");
    pb::EntitlementRef {
        app_id: app_id.into(),
        entitlement_id: entitlement_id.into(),
    }
}

impl Stored {
    fn policy(mut self, owner: &str, targets: &[&str]) -> Self {
        self.policies
            .insert(owner.into(), targets.iter().map(|t| ent(t)).collect());
        self
    }

    fn binding(mut self, source: &str, destination: &str) -> Self {
        self.bindings.insert((source.into(), destination.into()));
        self
    }
}

impl Lookup for Stored {
    fn delegation_targets(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError> {
        Ok(self.policies.get(&name(entitlement)).cloned())
    }

    fn binding_exists(
        &self,
        source: &pb::EntitlementRef,
        destination: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        Ok(self.bindings.contains(&(name(source), name(destination))))
    }

    fn dependants(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Vec<pb::EntitlementRef>, LookupError> {
        let mut found: Vec<pb::EntitlementRef> = self
            .policies
            .iter()
            .filter(|(owner, targets)| {
                **owner != name(entitlement) && targets.contains(entitlement)
            })
            .map(|(owner, _)| ent(owner))
            .collect();
        found.sort_by_key(name);
        Ok(found)
    }
}

fn delegated(target: &str, implicit: bool) -> pb::ProvisionPolicy {
    let target = ent(target);
    pb::ProvisionPolicy {
        typ: Some(Typ::Delegated(pb::DelegatedProvision {
            app_id: target.app_id,
            entitlement_id: target.entitlement_id,
            implicit,
        })),
    }
}

fn resource(owner: &str, policy: pb::ProvisionPolicy) -> pb::EntitlementProvisionPolicy {
    pb::EntitlementProvisionPolicy {
        entitlement: Some(ent(owner)),
        provision_policy: Some(policy),
        ..Default::default()
    }
}

fn found(stored: &Stored, resource: &pb::EntitlementProvisionPolicy) -> Vec<(String, String)> {
    check_graph(resource, stored)
        .expect("lookup")
        .into_iter()
        .map(|v| (v.field, v.reason))
        .collect()
}

const ROOT: &str = "policy.provision_policy.delegated";

#[test]
fn a_bound_delegation_to_a_stored_policy_is_fine() {
    let stored = Stored::default().policy("b/y", &[]).binding("b/y", "a/x");
    assert!(found(&stored, &resource("a/x", delegated("b/y", false))).is_empty());
}

#[test]
fn a_delegation_without_binding_is_missing_proxy_binding() {
    let stored = Stored::default()
        .policy("b/y", &[])
        .binding("b/y", "other/z");
    let violations = check_graph(&resource("a/x", delegated("b/y", false)), &stored).unwrap();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].field, ROOT);
    assert_eq!(violations[0].reason, reason::MISSING_PROXY_BINDING);
    assert_eq!(violations[0].severity, pb::Severity::Error as i32);
    assert!(violations[0].description.contains("from b/y into a/x"));
}

#[test]
fn an_implicit_delegation_needs_no_binding() {
    let stored = Stored::default().policy("b/y", &[]);
    assert!(found(&stored, &resource("a/x", delegated("b/y", true))).is_empty());
}

#[test]
fn a_delegation_to_an_entitlement_without_policy_is_dangling_warning() {
    let stored = Stored::default().binding("b/y", "a/x");
    let violations = check_graph(&resource("a/x", delegated("b/y", false)), &stored).unwrap();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].reason, reason::DANGLING_DELEGATION);
    assert_eq!(violations[0].severity, pb::Severity::Warning as i32);
}

#[test]
fn a_delegation_back_to_itself_through_stored_ones_is_a_cycle_named_in_full() {
    let stored = Stored::default()
        .policy("b/y", &["c/z"])
        .policy("c/z", &["a/x"])
        .binding("b/y", "a/x");
    let violations = check_graph(&resource("a/x", delegated("b/y", false)), &stored).unwrap();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].reason, reason::DELEGATION_CYCLE);
    assert_eq!(violations[0].field, ROOT);
    assert!(
        violations[0]
            .description
            .contains("a/x -> b/y -> c/z -> a/x"),
        "{}",
        violations[0].description
    );
}

#[test]
fn the_stored_policy_of_the_owner_is_not_followed_since_the_write_replaces_it() {
    // a/x currently delegates to b/y; the new a/x delegates to c/z, which leads nowhere.
    let stored = Stored::default()
        .policy("a/x", &["b/y"])
        .policy("b/y", &["a/x"])
        .policy("c/z", &[])
        .binding("c/z", "a/x");
    assert!(found(&stored, &resource("a/x", delegated("c/z", false))).is_empty());
}

fn chain_of(length: usize) -> Stored {
    // a/x -> n/1 -> n/2 -> ... -> n/length (the new policy adds the first delegation).
    let mut stored = Stored::default().binding("n/1", "a/x");
    for i in 1..length {
        stored = stored.policy(&format!("n/{i}"), &[&format!("n/{}", i + 1)]);
    }
    stored.policy(&format!("n/{length}"), &[])
}

#[test]
fn a_chain_of_eight_delegations_is_fine_and_nine_too_deep() {
    assert!(found(&chain_of(8), &resource("a/x", delegated("n/1", false))).is_empty());
    let violations = check_graph(&resource("a/x", delegated("n/1", false)), &chain_of(9)).unwrap();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].reason, reason::DELEGATION_TOO_DEEP);
    assert!(violations[0].description.contains("a/x -> n/1"));
}

#[test]
fn a_wide_diamond_graph_is_walked_without_blowing_up() {
    // Eight layers of ten entitlements, every one delegating to all ten of the next layer:
    // 10^7 paths, 80 entitlements. Fine, since no chain passes eight delegations.
    let mut stored = Stored::default().binding("l0/0", "a/x");
    for layer in 0..7 {
        let next: Vec<String> = (0..10).map(|i| format!("l{}/{i}", layer + 1)).collect();
        let next: Vec<&str> = next.iter().map(String::as_str).collect();
        for i in 0..10 {
            stored = stored.policy(&format!("l{layer}/{i}"), &next);
        }
    }
    for i in 0..10 {
        stored = stored.policy(&format!("l7/{i}"), &[]);
    }
    assert!(found(&stored, &resource("a/x", delegated("l0/0", false))).is_empty());
}

#[test]
fn a_graph_too_wide_to_walk_is_refused() {
    let leaves: Vec<String> = (0..5000).map(|i| format!("leaf/{i}")).collect();
    let leaves: Vec<&str> = leaves.iter().map(String::as_str).collect();
    let stored = Stored::default()
        .policy("hub/h", &leaves)
        .binding("hub/h", "a/x");
    let violations = check_graph(&resource("a/x", delegated("hub/h", false)), &stored).unwrap();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].reason, reason::DELEGATION_TOO_DEEP);
}

#[test]
fn delegations_in_deprovision_multi_steps_are_checked_with_their_path() {
    let stored = Stored::default().policy("b/y", &["a/x"]);
    let mut resource = resource("a/x", delegated("c/z", true));
    resource.deprovision_policy = Some(pb::ProvisionPolicy {
        typ: Some(Typ::MultiStep(pb::MultiStep {
            provision_steps: vec![
                pb::ProvisionPolicy {
                    typ: Some(Typ::Webhook(pb::WebhookProvision {
                        webhook_id: "w".into(),
                    })),
                },
                delegated("b/y", false),
            ],
        })),
    });
    let path = "policy.deprovision_policy.multi_step.provision_steps[1].delegated";
    let found = found(&stored, &resource);
    assert!(
        found.contains(&(ROOT.into(), reason::DANGLING_DELEGATION.into())),
        "{found:?}"
    );
    assert!(
        found.contains(&(path.into(), reason::MISSING_PROXY_BINDING.into())),
        "{found:?}"
    );
    assert!(
        found.contains(&(path.into(), reason::DELEGATION_CYCLE.into())),
        "{found:?}"
    );
}

#[test]
fn self_and_malformed_delegations_are_left_to_the_static_rules() {
    let stored = Stored::default();
    assert!(found(&stored, &resource("a/x", delegated("a/x", false))).is_empty());
    let malformed = resource(
        "a/x",
        pb::ProvisionPolicy {
            typ: Some(Typ::Delegated(pb::DelegatedProvision {
                app_id: "bad id".into(),
                entitlement_id: String::new(),
                implicit: false,
            })),
        },
    );
    assert!(found(&stored, &malformed).is_empty());
}

#[test]
fn edges_are_sorted_unique_targets_with_implicit_sources() {
    let mut resource = resource(
        "a/x",
        pb::ProvisionPolicy {
            typ: Some(Typ::MultiStep(pb::MultiStep {
                provision_steps: vec![
                    delegated("c/z", false),
                    delegated("b/y", true),
                    delegated("c/z", true),
                    delegated("a/x", true),
                ],
            })),
        },
    );
    resource.deprovision_policy = Some(delegated("d/w", false));
    assert_eq!(
        edges(&resource),
        Edges {
            targets: vec![ent("b/y"), ent("c/z"), ent("d/w")],
            implicit_sources: vec![ent("b/y"), ent("c/z")],
        }
    );
}
