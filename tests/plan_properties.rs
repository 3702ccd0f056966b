//! Property: for random well-formed delegation graphs stored through a real server, the plan of
//! every entitlement, in both directions, lists exactly the leaves a naive recursive walk
//! (written here, independently of the server's iterative one) reaches, in the same order, with
//! the same `via` chains, inverse marks and dangling ends.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use provisiond::pb;
use provisiond::pb::provision_policy::Typ;

/// How many entitlements a graph holds; delegations go from e{i} to e{j > i} (acyclic, as the
/// server ensures) or to one that has no policy (dangling).
const NODES: usize = 5;

/// A policy shape with delegation targets as numbers: `NODES` means "no policy there".
#[derive(Debug, Clone)]
enum Shape {
    Leaf(u32),
    Delegate(usize),
    Steps(Vec<Shape>),
}

fn shape(owner: usize) -> impl Strategy<Value = Shape> {
    let leaf = prop_oneof![
        (0u32..1000).prop_map(Shape::Leaf),
        ((owner + 1)..=NODES).prop_map(Shape::Delegate),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop::collection::vec(inner, 1..4).prop_map(Shape::Steps)
    })
}

/// For each entitlement: its provision shape and maybe a deprovision shape.
fn graph() -> impl Strategy<Value = Vec<(Shape, Option<Shape>)>> {
    (0..NODES)
        .map(|owner| (shape(owner), prop::option::of(shape(owner))))
        .collect::<Vec<_>>()
}

fn entitlement(app: &str, n: usize) -> pb::EntitlementRef {
    common::entitlement(app, &format!("e{n}"))
}

fn to_policy(app: &str, shape: &Shape) -> pb::ProvisionPolicy {
    let typ = match shape {
        Shape::Leaf(n) => Typ::Webhook(pb::WebhookProvision {
            webhook_id: format!("w{n}"),
        }),
        Shape::Delegate(target) => {
            let target = entitlement(app, *target);
            Typ::Delegated(pb::DelegatedProvision {
                app_id: target.app_id,
                entitlement_id: target.entitlement_id,
                implicit: true,
            })
        }
        Shape::Steps(steps) => Typ::MultiStep(pb::MultiStep {
            provision_steps: steps.iter().map(|s| to_policy(app, s)).collect(),
        }),
    };
    pb::ProvisionPolicy { typ: Some(typ) }
}

/// (leaf or DANGLING_DELEGATION, via numbers, inferred) in order, by plain recursion.
type Expected = Vec<(String, Vec<usize>, bool)>;

fn naive(
    graph: &[(Shape, Option<Shape>)],
    owner: usize,
    deprovision: bool,
    inferred: bool,
    via: &mut Vec<usize>,
    out: &mut Expected,
) {
    via.push(owner);
    let (provision, deprovision_shape) = &graph[owner];
    let (shape, inferred_here) = match (deprovision && !inferred, deprovision_shape) {
        (true, Some(own)) => (own, false),
        (true, None) => (provision, true),
        (false, _) => (provision, inferred),
    };
    walk(
        graph,
        shape,
        deprovision,
        inferred || inferred_here,
        via,
        out,
    );
    via.pop();
}

fn walk(
    graph: &[(Shape, Option<Shape>)],
    shape: &Shape,
    deprovision: bool,
    inferred: bool,
    via: &mut Vec<usize>,
    out: &mut Expected,
) {
    match shape {
        Shape::Leaf(n) => out.push((format!("w{n}"), via.clone(), inferred)),
        Shape::Delegate(target) if *target == NODES => {
            out.push(("DANGLING_DELEGATION".into(), via.clone(), inferred));
        }
        Shape::Delegate(target) => naive(graph, *target, deprovision, inferred, via, out),
        Shape::Steps(steps) => {
            for step in steps {
                walk(graph, step, deprovision, inferred, via, out);
            }
        }
    }
}

fn actual(plan: &pb::ResolveProvisionPlanResponse) -> Expected {
    plan.steps
        .iter()
        .map(|step| {
            let what = match step.step.as_ref().and_then(|s| s.typ.as_ref()) {
                Some(Typ::Webhook(hook)) => hook.webhook_id.clone(),
                Some(other) => format!("{other:?}"),
                None => step.unresolved_reason.clone(),
            };
            let via = step
                .via
                .iter()
                .map(|e| e.entitlement_id[1..].parse().expect("e{n}"))
                .collect();
            (what, via, step.inferred_inverse)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_list_exactly_the_leaves_of_a_naive_recursive_walk() {
    let server = common::TestServer::start().await;
    let client = server.client.clone();
    let runtime = tokio::runtime::Handle::current();
    let cases = AtomicUsize::new(0);
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 48,
        ..RunnerConfig::default()
    });
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&graph(), |graph| {
            let app = format!("prop{}", cases.fetch_add(1, Ordering::Relaxed));
            let mut client = client.clone();
            runtime.block_on(async move {
                // Targets first, so that every delegation finds its target stored.
                for owner in (0..NODES).rev() {
                    let (provision, deprovision) = &graph[owner];
                    let resource = pb::EntitlementProvisionPolicy {
                        entitlement: Some(entitlement(&app, owner)),
                        provision_policy: Some(to_policy(&app, provision)),
                        deprovision_policy: deprovision.as_ref().map(|d| to_policy(&app, d)),
                        ..Default::default()
                    };
                    client
                        .set_provision_policy(common::set_request(resource, ""))
                        .await
                        .map_err(|status| TestCaseError::fail(format!("set: {status:?}")))?;
                }
                for owner in 0..NODES {
                    for (direction, deprovision) in [
                        (pb::ProvisionDirection::Provision, false),
                        (pb::ProvisionDirection::Deprovision, true),
                    ] {
                        let plan = client
                            .resolve_provision_plan(pb::ResolveProvisionPlanRequest {
                                entitlement: Some(entitlement(&app, owner)),
                                policy: None,
                                direction: direction as i32,
                            })
                            .await
                            .map_err(|status| TestCaseError::fail(format!("{status:?}")))?
                            .into_inner();
                        let mut expected = Vec::new();
                        naive(
                            &graph,
                            owner,
                            deprovision,
                            false,
                            &mut Vec::new(),
                            &mut expected,
                        );
                        let dangling = expected.iter().any(|(what, ..)| what.starts_with("DANG"));
                        prop_assert_eq!(actual(&plan), expected, "e{} {:?}", owner, direction);
                        prop_assert_eq!(plan.complete, !dangling);
                        let own_deprovision = graph[owner].1.is_some();
                        prop_assert_eq!(plan.inferred_inverse, deprovision && !own_deprovision);
                    }
                }
                Ok(())
            })
        })
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

#[test]
fn the_naive_walk_itself_inverts_from_a_missing_deprovision_policy_down() {
    // e0 deprovisions by delegating to e1, which has no deprovision policy: from there down,
    // provision policies, inverted.
    let graph = vec![
        (Shape::Leaf(0), Some(Shape::Delegate(1))),
        (Shape::Steps(vec![Shape::Leaf(1), Shape::Delegate(2)]), None),
        (Shape::Leaf(2), Some(Shape::Leaf(3))),
        (Shape::Leaf(4), None),
        (Shape::Leaf(5), None),
    ];
    let mut out = Vec::new();
    naive(&graph, 0, true, false, &mut Vec::new(), &mut out);
    assert_eq!(
        out,
        vec![
            ("w1".to_owned(), vec![0, 1], true),
            ("w2".to_owned(), vec![0, 1, 2], true)
        ]
    );
}
