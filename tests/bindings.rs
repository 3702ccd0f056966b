//! Proxy bindings and the delegation rules over the real transport.

mod common;

use common::*;
use provisiond::pb;
use tonic::Code;
use tonic_types::StatusExt;

fn delegated(target: &pb::EntitlementRef, implicit: bool) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy {
        typ: Some(pb::provision_policy::Typ::Delegated(
            pb::DelegatedProvision {
                app_id: target.app_id.clone(),
                entitlement_id: target.entitlement_id.clone(),
                implicit,
            },
        )),
    }
}

fn binding(
    source: &pb::EntitlementRef,
    destination: &pb::EntitlementRef,
) -> pb::CreateProxyBindingRequest {
    pb::CreateProxyBindingRequest {
        binding: Some(pb::ProxyBinding {
            source: Some(source.clone()),
            destination: Some(destination.clone()),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn create_list_and_delete_a_binding() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let (okta, github) = (
        entitlement("okta", "admins"),
        entitlement("github", "admins"),
    );
    let created = client
        .create_proxy_binding(binding(&okta, &github))
        .await
        .expect("create")
        .into_inner()
        .binding
        .expect("binding");
    assert_eq!(created.source.as_ref(), Some(&okta));
    assert!(!created.implicit);
    assert!(created.create_time.is_some());

    let again = client
        .create_proxy_binding(binding(&okta, &github))
        .await
        .expect_err("exists");
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(error_reason(&again), "PROXY_BINDING_ALREADY_EXISTS");
    let info = again
        .get_error_details()
        .resource_info()
        .cloned()
        .expect("ResourceInfo");
    assert_eq!(
        info.resource_name,
        "apps/okta/entitlements/admins/bindings/apps/github/entitlements/admins"
    );

    let listed = client
        .list_proxy_bindings(pb::ListProxyBindingsRequest {
            source: Some(okta.clone()),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.bindings, vec![created]);
    assert!(listed.next_page_token.is_empty());

    let delete = pb::DeleteProxyBindingRequest {
        source: Some(okta.clone()),
        destination: Some(github.clone()),
    };
    client
        .delete_proxy_binding(delete.clone())
        .await
        .expect("delete");
    let missing = client.delete_proxy_binding(delete).await.expect_err("gone");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(error_reason(&missing), "PROXY_BINDING_NOT_FOUND");
}

#[tokio::test]
async fn malformed_binding_requests_are_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let same = entitlement("a", "x");
    let status = client
        .create_proxy_binding(binding(&same, &same))
        .await
        .expect_err("self");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&status), "INVALID_REQUEST");
    assert_eq!(
        bad_request_fields(&status),
        vec![(
            "binding.destination".to_owned(),
            "SELF_DELEGATION".to_owned()
        )]
    );

    let status = client
        .delete_proxy_binding(pb::DeleteProxyBindingRequest::default())
        .await
        .expect_err("empty");
    assert_eq!(
        bad_request_fields(&status),
        vec![
            ("source".to_owned(), "REQUIRED".to_owned()),
            ("destination".to_owned(), "REQUIRED".to_owned())
        ]
    );
    let status = client
        .list_proxy_bindings(pb::ListProxyBindingsRequest {
            page_size: -3,
            page_token: "not a token".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("bad page");
    assert_eq!(
        bad_request_fields(&status),
        vec![
            ("page_size".to_owned(), "INVALID_PAGE_SIZE".to_owned()),
            ("page_token".to_owned(), "INVALID_PAGE_TOKEN".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_delegation_needs_its_binding_which_then_cannot_be_deleted() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let (github, okta) = (
        entitlement("github", "admins"),
        entitlement("okta", "admins"),
    );
    let unbound = client
        .set_provision_policy(set_request(
            resource(github.clone(), delegated(&okta, false)),
            "",
        ))
        .await
        .expect_err("no binding");
    assert_eq!(
        bad_request_fields(&unbound),
        vec![(
            "policy.provision_policy.delegated".to_owned(),
            "MISSING_PROXY_BINDING".to_owned()
        )]
    );

    client
        .create_proxy_binding(binding(&okta, &github))
        .await
        .expect("bind");
    let set = client
        .set_provision_policy(set_request(
            resource(github.clone(), delegated(&okta, false)),
            "",
        ))
        .await
        .expect("bound")
        .into_inner();
    let warnings: Vec<_> = set.warnings.iter().map(|w| w.reason.as_str()).collect();
    assert_eq!(
        warnings,
        vec!["DANGLING_DELEGATION"],
        "okta/admins has no policy yet"
    );

    let delete = pb::DeleteProxyBindingRequest {
        source: Some(okta.clone()),
        destination: Some(github.clone()),
    };
    let in_use = client
        .delete_proxy_binding(delete.clone())
        .await
        .expect_err("in use");
    assert_eq!(in_use.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&in_use), "PROXY_BINDING_IN_USE");
    let failure = in_use
        .get_error_details()
        .precondition_failure()
        .cloned()
        .expect("PreconditionFailure");
    assert_eq!(
        failure.violations[0].subject,
        "apps/github/entitlements/admins"
    );
    assert!(
        in_use.message().contains("apps/github/entitlements/admins"),
        "{}",
        in_use.message()
    );

    client
        .set_provision_policy(set_request(resource(github.clone(), webhook("w")), ""))
        .await
        .expect("no longer delegates");
    client
        .delete_proxy_binding(delete)
        .await
        .expect("free to delete now");
}

#[tokio::test]
async fn implicit_delegation_creates_its_binding_with_the_write_only() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let (github, okta) = (entitlement("github", "devs"), entitlement("okta", "devs"));
    let list = pb::ListProxyBindingsRequest {
        destination: Some(github.clone()),
        ..Default::default()
    };

    let mut dry = set_request(resource(github.clone(), delegated(&okta, true)), "");
    dry.validate_only = true;
    client.set_provision_policy(dry).await.expect("dry run");
    let answer = client
        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
            consistency: None,
            policy: Some(resource(github.clone(), delegated(&okta, true))),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(answer.valid, "{:?}", answer.violations);
    let listed = client
        .list_proxy_bindings(list.clone())
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.bindings.is_empty(),
        "neither validate_only nor Validate creates it"
    );

    client
        .set_provision_policy(set_request(
            resource(github.clone(), delegated(&okta, true)),
            "",
        ))
        .await
        .expect("set");
    let listed = client
        .list_proxy_bindings(list)
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.bindings.len(), 1);
    assert!(listed.bindings[0].implicit);
    assert_eq!(listed.bindings[0].source.as_ref(), Some(&okta));
}

#[tokio::test]
async fn a_cycle_is_refused_and_named() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let (a, b, c) = (
        entitlement("a", "x"),
        entitlement("b", "y"),
        entitlement("c", "z"),
    );
    client
        .set_provision_policy(set_request(resource(a.clone(), delegated(&b, true)), ""))
        .await
        .expect("a -> b");
    client
        .set_provision_policy(set_request(resource(b.clone(), delegated(&c, true)), ""))
        .await
        .expect("b -> c");
    let status = client
        .set_provision_policy(set_request(resource(c.clone(), delegated(&a, true)), ""))
        .await
        .expect_err("c -> a closes the cycle");
    assert_eq!(
        bad_request_fields(&status),
        vec![(
            "policy.provision_policy.delegated".to_owned(),
            "DELEGATION_CYCLE".to_owned()
        )]
    );
    let details = status.get_error_details();
    let description = &details.bad_request().expect("BadRequest").field_violations[0].description;
    assert!(
        description.contains("c/z -> a/x -> b/y -> c/z"),
        "{description}"
    );
    let listed = client
        .list_proxy_bindings(pb::ListProxyBindingsRequest {
            destination: Some(c.clone()),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.bindings.is_empty(),
        "the refused write left no implicit binding behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sets_closing_a_cycle_never_both_succeed() {
    let server = TestServer::start().await;
    for round in 0..40 {
        let (a, b) = (
            entitlement("race", &format!("a{round}")),
            entitlement("race", &format!("b{round}")),
        );
        let mut one = server.client.clone();
        let mut two = server.client.clone();
        let ab = set_request(resource(a.clone(), delegated(&b, true)), "");
        let ba = set_request(resource(b.clone(), delegated(&a, true)), "");
        let (first, second) =
            tokio::join!(one.set_provision_policy(ab), two.set_provision_policy(ba));
        let wins = [first.is_ok(), second.is_ok()]
            .iter()
            .filter(|won| **won)
            .count();
        assert_eq!(wins, 1, "round {round}: {first:?} / {second:?}");
        let loser = first.err().or(second.err()).expect("one lost");
        assert_eq!(bad_request_fields(&loser)[0].1, "DELEGATION_CYCLE");
    }
}

#[tokio::test]
async fn listing_pages_through_every_binding_once_in_order() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let hub = entitlement("hub", "all");
    let mut expected = Vec::new();
    for i in 0..23 {
        let source = entitlement(&format!("app{:02}", i % 4), &format!("e{i:02}"));
        client
            .create_proxy_binding(binding(&source, &hub))
            .await
            .expect("create");
        expected.push((source.app_id.clone(), source.entitlement_id.clone()));
    }
    client
        .create_proxy_binding(binding(&hub, &entitlement("other", "one")))
        .await
        .expect("unrelated");
    expected.sort();

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_proxy_bindings(pb::ListProxyBindingsRequest {
                destination: Some(hub.clone()),
                page_size: 5,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.bindings.len() <= 5);
        seen.extend(page.bindings.iter().map(|b| {
            let source = b.source.as_ref().expect("source");
            (source.app_id.clone(), source.entitlement_id.clone())
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, expected);

    let first_page_token = token_of_first_page(&mut client, &hub).await;
    let foreign = client
        .list_proxy_bindings(pb::ListProxyBindingsRequest {
            source: Some(hub.clone()),
            page_token: first_page_token,
            ..Default::default()
        })
        .await
        .expect_err("a token belongs to its filters");
    assert_eq!(
        bad_request_fields(&foreign),
        vec![("page_token".to_owned(), "INVALID_PAGE_TOKEN".to_owned())]
    );
}

async fn token_of_first_page(client: &mut Client, destination: &pb::EntitlementRef) -> String {
    client
        .list_proxy_bindings(pb::ListProxyBindingsRequest {
            destination: Some(destination.clone()),
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("page")
        .into_inner()
        .next_page_token
}
