//! ResolveProvisionPlan and ListDependents over the real transport, and the dependents count
//! of Validate and Set.

mod common;

use common::*;
use provisiond::pb;
use provisiond::pb::provision_policy::Typ;
use tonic::Code;

fn delegated(target: &pb::EntitlementRef) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy {
        typ: Some(Typ::Delegated(pb::DelegatedProvision {
            app_id: target.app_id.clone(),
            entitlement_id: target.entitlement_id.clone(),
            implicit: true,
        })),
    }
}

async fn put(
    client: &mut Client,
    entitlement: &pb::EntitlementRef,
    provision: pb::ProvisionPolicy,
    deprovision: Option<pb::ProvisionPolicy>,
) -> pb::SetProvisionPolicyResponse {
    let mut resource = resource(entitlement.clone(), provision);
    resource.deprovision_policy = deprovision;
    client
        .set_provision_policy(set_request(resource, ""))
        .await
        .expect("set")
        .into_inner()
}

enum Target {
    Entitlement(pb::EntitlementRef),
    Policy(Box<pb::EntitlementProvisionPolicy>),
}

async fn plan_of(
    client: &mut Client,
    target: Target,
    direction: pb::ProvisionDirection,
) -> pb::ResolveProvisionPlanResponse {
    let (entitlement, policy) = match target {
        Target::Entitlement(entitlement) => (Some(entitlement), None),
        Target::Policy(policy) => (None, Some(*policy)),
    };
    client
        .resolve_provision_plan(pb::ResolveProvisionPlanRequest {
            entitlement,
            policy,
            direction: direction as i32,
        })
        .await
        .expect("resolve")
        .into_inner()
}

/// (webhook id or unresolved reason, via entitlement ids, field, inferred).
fn summary(plan: &pb::ResolveProvisionPlanResponse) -> Vec<(String, Vec<String>, String, bool)> {
    plan.steps
        .iter()
        .map(|step| {
            let what = match step.step.as_ref().and_then(|s| s.typ.as_ref()) {
                Some(Typ::Webhook(hook)) => hook.webhook_id.clone(),
                Some(other) => format!("{other:?}"),
                None => step.unresolved_reason.clone(),
            };
            let via = step.via.iter().map(|e| e.entitlement_id.clone()).collect();
            (what, via, step.field.clone(), step.inferred_inverse)
        })
        .collect()
}

fn s(text: &str) -> String {
    text.to_owned()
}

#[tokio::test]
async fn a_chain_of_three_inside_nested_multi_steps_resolves_in_order() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let (a, b, c) = (
        entitlement("app", "a"),
        entitlement("app", "b"),
        entitlement("app", "c"),
    );
    put(&mut client, &c, webhook("c1"), Some(webhook("c-off"))).await;
    put(
        &mut client,
        &b,
        multi_step(vec![webhook("b1"), delegated(&c)]),
        None,
    )
    .await;
    let inner = multi_step(vec![delegated(&b), webhook("a2")]);
    put(
        &mut client,
        &a,
        multi_step(vec![webhook("a1"), inner]),
        Some(delegated(&b)),
    )
    .await;

    let plan = plan_of(
        &mut client,
        Target::Entitlement(a.clone()),
        pb::ProvisionDirection::Provision,
    )
    .await;
    let p = "policy.provision_policy.multi_step.provision_steps";
    assert_eq!(
        summary(&plan),
        [
            (s("a1"), vec![s("a")], format!("{p}[0]"), false),
            (s("b1"), vec![s("a"), s("b")], format!("{p}[0]"), false),
            (
                s("c1"),
                vec![s("a"), s("b"), s("c")],
                s("policy.provision_policy"),
                false
            ),
            (
                s("a2"),
                vec![s("a")],
                format!("{p}[1].multi_step.provision_steps[1]"),
                false
            ),
        ]
    );
    assert!(plan.complete && !plan.inferred_inverse);

    // Deprovision: a's own deprovision policy delegates to b, which has none (inferred from
    // here down: b's and c's provision policies), so the plan says which steps are inverses.
    let revoke = plan_of(
        &mut client,
        Target::Entitlement(a.clone()),
        pb::ProvisionDirection::Deprovision,
    )
    .await;
    assert!(!revoke.inferred_inverse, "a has a deprovision policy");
    assert_eq!(
        summary(&revoke),
        [
            (s("b1"), vec![s("a"), s("b")], format!("{p}[0]"), true),
            (
                s("c1"),
                vec![s("a"), s("b"), s("c")],
                s("policy.provision_policy"),
                true
            ),
        ]
    );
    let own = plan_of(
        &mut client,
        Target::Entitlement(c.clone()),
        pb::ProvisionDirection::Deprovision,
    )
    .await;
    assert_eq!(
        summary(&own),
        [(
            s("c-off"),
            vec![s("c")],
            s("policy.deprovision_policy"),
            false
        )]
    );
    let inferred = plan_of(
        &mut client,
        Target::Entitlement(b.clone()),
        pb::ProvisionDirection::Deprovision,
    )
    .await;
    assert!(inferred.inferred_inverse);
    assert!(inferred.steps.iter().all(|step| step.inferred_inverse));
}

#[tokio::test]
async fn previews_resolve_against_the_store_and_a_cycle_is_a_violation() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let (a, b) = (entitlement("app", "a"), entitlement("app", "b"));
    put(&mut client, &b, delegated(&a), None).await;

    // a -> b would close a -> b -> a: the violation it is, and no steps.
    let preview = resource(a.clone(), delegated(&b));
    let plan = plan_of(
        &mut client,
        Target::Policy(Box::new(preview)),
        pb::ProvisionDirection::Provision,
    )
    .await;
    assert!(!plan.complete && plan.steps.is_empty());
    let reasons: Vec<&str> = plan.violations.iter().map(|v| v.reason.as_str()).collect();
    assert!(reasons.contains(&"DELEGATION_CYCLE"), "{reasons:?}");

    // A preview delegating to a target with no policy: a dangling branch, incomplete.
    let dangling = resource(
        a.clone(),
        multi_step(vec![
            webhook("first"),
            delegated(&entitlement("app", "gone")),
        ]),
    );
    let plan = plan_of(
        &mut client,
        Target::Policy(Box::new(dangling)),
        pb::ProvisionDirection::Provision,
    )
    .await;
    assert!(!plan.complete);
    assert_eq!(summary(&plan)[0].0, "first");
    assert_eq!(plan.steps[1].unresolved_reason, "DANGLING_DELEGATION");
    assert_eq!(
        plan.steps[1].unresolved_target,
        Some(entitlement("app", "gone"))
    );
    assert_eq!(
        plan.violations[0].reason, "DANGLING_DELEGATION",
        "the warning, as Validate says"
    );

    // An invalid preview: its errors, never a panic.
    let broken = resource(a.clone(), multi_step(vec![]));
    let plan = plan_of(
        &mut client,
        Target::Policy(Box::new(broken)),
        pb::ProvisionDirection::Provision,
    )
    .await;
    assert_eq!(plan.violations[0].reason, "EMPTY_MULTI_STEP");
    assert!(plan.steps.is_empty() && !plan.complete);

    let missing = client
        .resolve_provision_plan(pb::ResolveProvisionPlanRequest {
            entitlement: Some(entitlement("app", "nothing")),
            policy: None,
            direction: 0,
        })
        .await
        .expect_err("no policy");
    assert_eq!(missing.code(), Code::NotFound);
    let none = client
        .resolve_provision_plan(pb::ResolveProvisionPlanRequest::default())
        .await
        .expect_err("no target");
    assert_eq!(
        bad_request_fields(&none),
        [(s("entitlement"), s("REQUIRED"))]
    );
}

async fn dependents(
    client: &mut Client,
    of: &pb::EntitlementRef,
    transitive: bool,
) -> Vec<(String, Vec<String>)> {
    let mut found = Vec::new();
    let mut request = pb::ListDependentsRequest {
        entitlement: Some(of.clone()),
        transitive,
        page_size: 2,
        page_token: String::new(),
    };
    loop {
        let page = client
            .list_dependents(request.clone())
            .await
            .expect("dependents")
            .into_inner();
        assert!(page.dependents.len() <= 2);
        for dependent in page.dependents {
            let chain = dependent
                .chain
                .iter()
                .map(|e| e.entitlement_id.clone())
                .collect();
            found.push((dependent.entitlement.unwrap().entitlement_id, chain));
        }
        if page.next_page_token.is_empty() {
            return found;
        }
        request.page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn dependents_follow_sets_deletes_and_rollbacks_and_writes_count_them() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let [t, a, b, c, d] = ["t", "a", "b", "c", "d"].map(|id| entitlement("dep", id));
    put(&mut client, &t, webhook("t"), None).await;
    put(&mut client, &a, delegated(&t), None).await;
    put(&mut client, &b, delegated(&t), None).await;
    put(&mut client, &c, delegated(&a), None).await;
    let written = put(&mut client, &d, delegated(&c), None).await;
    assert_eq!(written.dependent_count, 0);

    assert_eq!(
        dependents(&mut client, &t, false).await,
        [
            (s("a"), vec![s("a"), s("t")]),
            (s("b"), vec![s("b"), s("t")])
        ]
    );
    assert_eq!(
        dependents(&mut client, &t, true).await,
        [
            (s("a"), vec![s("a"), s("t")]),
            (s("b"), vec![s("b"), s("t")]),
            (s("c"), vec![s("c"), s("a"), s("t")]),
            (s("d"), vec![s("d"), s("c"), s("a"), s("t")]),
        ]
    );
    // The blast radius of changing t, before (Validate) and at (Set) the write.
    let validated = client
        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
            consistency: None,
            policy: Some(resource(t.clone(), webhook("t2"))),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(validated.dependent_count, 4);
    assert_eq!(
        put(&mut client, &t, webhook("t2"), None)
            .await
            .dependent_count,
        4
    );

    // d deleted, c no longer delegating: the graph shrinks; a rollback of c brings it back.
    client
        .delete_provision_policy(delete_request(&d))
        .await
        .expect("delete d");
    put(&mut client, &c, webhook("c"), None).await;
    assert_eq!(dependents(&mut client, &t, true).await.len(), 2);
    client
        .rollback_provision_policy(pb::RollbackProvisionPolicyRequest {
            entitlement: Some(c.clone()),
            revision: 1,
            ..Default::default()
        })
        .await
        .expect("rollback c");
    assert_eq!(
        dependents(&mut client, &t, true).await.last(),
        Some(&(s("c"), vec![s("c"), s("a"), s("t")]))
    );

    let first = client
        .list_dependents(pb::ListDependentsRequest {
            entitlement: Some(t.clone()),
            transitive: true,
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mismatched = client
        .list_dependents(pb::ListDependentsRequest {
            entitlement: Some(t.clone()),
            transitive: false,
            page_size: 1,
            page_token: first.next_page_token,
        })
        .await
        .expect_err("a token of another request");
    assert_eq!(
        bad_request_fields(&mismatched),
        [(s("page_token"), s("INVALID_PAGE_TOKEN"))]
    );
}
