//! Resolved plans and dependents over an in-memory store: order, `via` chains, field paths,
//! directions, dangling and cyclic branches, and the bounds.

use std::collections::BTreeMap;

use super::dependents::dependents;
use super::plan::{Direction, resolve};
use super::{Lookup, LookupError, Snapshot, reason, walk};
use crate::pb;
use crate::pb::provision_policy::Typ;

#[derive(Default)]
struct Store(BTreeMap<(String, String), pb::EntitlementProvisionPolicy>);

fn ent(name: &str) -> pb::EntitlementRef {
    let (app_id, entitlement_id) = name.split_once('/').expect("app/ent");
    pb::EntitlementRef {
        app_id: app_id.into(),
        entitlement_id: entitlement_id.into(),
    }
}

fn name(entitlement: &pb::EntitlementRef) -> String {
    format!("{}/{}", entitlement.app_id, entitlement.entitlement_id)
}

fn policy(typ: Typ) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy { typ: Some(typ) }
}

fn hook(id: &str) -> pb::ProvisionPolicy {
    policy(Typ::Webhook(pb::WebhookProvision {
        webhook_id: id.into(),
    }))
}

fn to(target: &str) -> pb::ProvisionPolicy {
    let target = ent(target);
    policy(Typ::Delegated(pb::DelegatedProvision {
        app_id: target.app_id,
        entitlement_id: target.entitlement_id,
        implicit: false,
    }))
}

fn steps(steps: Vec<pb::ProvisionPolicy>) -> pb::ProvisionPolicy {
    policy(Typ::MultiStep(pb::MultiStep {
        provision_steps: steps,
    }))
}

impl Store {
    fn with(
        mut self,
        owner: &str,
        provision: pb::ProvisionPolicy,
        deprovision: Option<pb::ProvisionPolicy>,
    ) -> Self {
        let key = ent(owner);
        self.0.insert(
            (key.app_id.clone(), key.entitlement_id.clone()),
            pb::EntitlementProvisionPolicy {
                entitlement: Some(key),
                provision_policy: Some(provision),
                deprovision_policy: deprovision,
                ..Default::default()
            },
        );
        self
    }

    fn get(&self, e: &pb::EntitlementRef) -> Option<&pb::EntitlementProvisionPolicy> {
        self.0.get(&(e.app_id.clone(), e.entitlement_id.clone()))
    }

    fn stored(&self, owner: &str) -> pb::EntitlementProvisionPolicy {
        self.get(&ent(owner)).expect("stored").clone()
    }
}

impl Lookup for Store {
    fn delegation_targets(
        &self,
        e: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError> {
        Ok(self.get(e).map(|r| {
            walk::delegations(r)
                .map(|(_, d)| pb::EntitlementRef {
                    app_id: d.app_id.clone(),
                    entitlement_id: d.entitlement_id.clone(),
                })
                .collect()
        }))
    }

    fn binding_exists(
        &self,
        _: &pb::EntitlementRef,
        _: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        Ok(true)
    }

    fn dependants(&self, e: &pb::EntitlementRef) -> Result<Vec<pb::EntitlementRef>, LookupError> {
        let mut found = Vec::new();
        for resource in self.0.values() {
            let owner = resource.entitlement.clone().unwrap();
            if owner != *e && self.delegation_targets(&owner)?.unwrap().contains(e) {
                found.push(owner);
            }
        }
        Ok(found)
    }
}

impl Snapshot for Store {
    fn resource(
        &self,
        e: &pb::EntitlementRef,
    ) -> Result<Option<pb::EntitlementProvisionPolicy>, LookupError> {
        Ok(self.get(e).cloned())
    }

    fn head(&self) -> Result<u64, LookupError> {
        Ok(7)
    }
}

/// (leaf webhook id or unresolved reason, via names, field, inferred).
fn summary(steps: &[pb::PlanStep]) -> Vec<(String, Vec<String>, String, bool)> {
    steps
        .iter()
        .map(|step| {
            let what = match step.step.as_ref().and_then(|s| s.typ.as_ref()) {
                Some(Typ::Webhook(w)) => w.webhook_id.clone(),
                Some(other) => format!("{other:?}"),
                None => step.unresolved_reason.clone(),
            };
            (
                what,
                step.via.iter().map(name).collect(),
                step.field.clone(),
                step.inferred_inverse,
            )
        })
        .collect()
}

fn s(text: &str) -> String {
    text.to_owned()
}

#[test]
fn a_chain_inside_nested_multi_steps_resolves_in_order_with_via_and_paths() {
    // a: [hook a1, [to b, hook a2]]; b: [hook b1, to c]; c: hook c1.
    let store = Store::default()
        .with(
            "app/a",
            steps(vec![hook("a1"), steps(vec![to("app/b"), hook("a2")])]),
            None,
        )
        .with("app/b", steps(vec![hook("b1"), to("app/c")]), None)
        .with("app/c", hook("c1"), None);
    let plan = resolve(&store.stored("app/a"), Direction::Provision, &store).unwrap();
    assert!(plan.complete && !plan.inferred_inverse);
    let p = "policy.provision_policy";
    assert_eq!(
        summary(&plan.steps),
        [
            (
                s("a1"),
                vec![s("app/a")],
                format!("{p}.multi_step.provision_steps[0]"),
                false
            ),
            (
                s("b1"),
                vec![s("app/a"), s("app/b")],
                format!("{p}.multi_step.provision_steps[0]"),
                false
            ),
            (
                s("c1"),
                vec![s("app/a"), s("app/b"), s("app/c")],
                s(p),
                false
            ),
            (
                s("a2"),
                vec![s("app/a")],
                format!("{p}.multi_step.provision_steps[1].multi_step.provision_steps[1]"),
                false
            ),
        ]
    );
}

#[test]
fn deprovision_follows_deprovision_policies_or_infers_the_inverse() {
    let store = Store::default()
        .with(
            "app/a",
            to("app/b"),
            Some(steps(vec![hook("a-off"), to("app/b")])),
        )
        .with("app/b", hook("b-on"), Some(hook("b-off")))
        .with("app/c", steps(vec![hook("c-on"), to("app/b")]), None);
    let with_own = resolve(&store.stored("app/a"), Direction::Deprovision, &store).unwrap();
    assert!(!with_own.inferred_inverse);
    assert_eq!(
        summary(&with_own.steps),
        [
            (
                s("a-off"),
                vec![s("app/a")],
                s("policy.deprovision_policy.multi_step.provision_steps[0]"),
                false
            ),
            (
                s("b-off"),
                vec![s("app/a"), s("app/b")],
                s("policy.deprovision_policy"),
                false
            ),
        ]
    );
    // c has none: its provision plan, inverted as a whole, b's provision policy included.
    let inferred = resolve(&store.stored("app/c"), Direction::Deprovision, &store).unwrap();
    assert!(inferred.inferred_inverse && inferred.complete);
    assert_eq!(
        summary(&inferred.steps),
        [
            (
                s("c-on"),
                vec![s("app/c")],
                s("policy.provision_policy.multi_step.provision_steps[0]"),
                true
            ),
            (
                s("b-on"),
                vec![s("app/c"), s("app/b")],
                s("policy.provision_policy"),
                true
            ),
        ]
    );
}

#[test]
fn a_dangling_branch_ends_unresolved_and_the_plan_is_incomplete() {
    let store = Store::default().with("app/a", steps(vec![to("app/gone"), hook("after")]), None);
    let plan = resolve(&store.stored("app/a"), Direction::Provision, &store).unwrap();
    assert!(!plan.complete);
    assert_eq!(plan.steps[0].unresolved_reason, reason::DANGLING_DELEGATION);
    assert_eq!(plan.steps[0].unresolved_target, Some(ent("app/gone")));
    assert_eq!(
        plan.steps[0].field,
        "policy.provision_policy.multi_step.provision_steps[0].delegated"
    );
    assert_eq!(
        summary(&plan.steps)[1].0,
        "after",
        "the rest still resolves"
    );
}

#[test]
fn stored_cycles_and_long_chains_end_their_branch_instead_of_looping() {
    let store = Store::default()
        .with("app/a", to("app/b"), None)
        .with("app/b", to("app/a"), None);
    let plan = resolve(&store.stored("app/a"), Direction::Provision, &store).unwrap();
    assert_eq!(summary(&plan.steps)[0].0, reason::DELEGATION_CYCLE);
    assert!(!plan.complete);

    let mut chain = Store::default();
    for n in 0..12 {
        chain = chain.with(&format!("app/e{n}"), to(&format!("app/e{}", n + 1)), None);
    }
    let plan = resolve(&chain.stored("app/e0"), Direction::Provision, &chain).unwrap();
    assert_eq!(summary(&plan.steps)[0].0, reason::DELEGATION_TOO_DEEP);
    assert_eq!(
        plan.steps[0].via.len(),
        super::limits::MAX_DELEGATION_CHAIN + 1
    );
}

#[test]
fn a_fan_out_past_the_node_bound_is_a_violation_not_a_hang() {
    // Each level delegates to the next 32 times: 32^8 leaves if walked naively.
    let mut store = Store::default();
    for level in 0..8 {
        let next = format!("app/l{}", level + 1);
        store = store.with(&format!("app/l{level}"), steps(vec![to(&next); 32]), None);
    }
    store = store.with("app/l8", hook("leaf"), None);
    let plan = resolve(&store.stored("app/l0"), Direction::Provision, &store).unwrap();
    assert!(!plan.complete);
    assert_eq!(plan.violations.len(), 1);
    assert_eq!(plan.violations[0].reason, reason::TOO_MANY_NODES);
}

#[test]
fn dependents_come_with_their_shortest_chain_in_key_order() {
    // d -> c -> a, b -> a, e -> d.
    let store = Store::default()
        .with("app/a", hook("a"), None)
        .with("app/b", to("app/a"), None)
        .with("app/c", to("app/a"), None)
        .with("app/d", to("app/c"), None)
        .with("app/e", steps(vec![to("app/d"), to("app/c")]), None);
    let direct = dependents(&ent("app/a"), false, &store).unwrap();
    let names: Vec<String> = direct
        .dependents
        .iter()
        .map(|d| name(&d.entitlement))
        .collect();
    assert_eq!(names, ["app/b", "app/c"]);
    let all = dependents(&ent("app/a"), true, &store).unwrap();
    let chains: Vec<Vec<String>> = all
        .dependents
        .iter()
        .map(|d| d.chain.iter().map(name).collect())
        .collect();
    assert_eq!(
        chains,
        [
            vec![s("app/b"), s("app/a")],
            vec![s("app/c"), s("app/a")],
            vec![s("app/d"), s("app/c"), s("app/a")],
            vec![s("app/e"), s("app/c"), s("app/a")],
        ]
    );
    assert!(!all.truncated);
}
