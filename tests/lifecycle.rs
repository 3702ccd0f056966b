//! The policy lifecycle over the real transport: delete (tombstones), history, rollback,
//! create-only and listing at a snapshot, with their error details.

mod common;

use common::*;
use provisiond::pb;
use tonic::Code;
use tonic_types::StatusExt;

fn history_request(
    ent: &pb::EntitlementRef,
    page_size: i32,
) -> pb::ListProvisionPolicyRevisionsRequest {
    pb::ListProvisionPolicyRevisionsRequest {
        entitlement: Some(ent.clone()),
        page_size,
        page_token: String::new(),
    }
}

fn rollback_request(ent: &pb::EntitlementRef, revision: i64) -> pb::RollbackProvisionPolicyRequest {
    pb::RollbackProvisionPolicyRequest {
        entitlement: Some(ent.clone()),
        revision,
        ..Default::default()
    }
}

fn delegated(ent: &pb::EntitlementRef, implicit: bool) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy {
        typ: Some(pb::provision_policy::Typ::Delegated(
            pb::DelegatedProvision {
                app_id: ent.app_id.clone(),
                entitlement_id: ent.entitlement_id.clone(),
                implicit,
            },
        )),
    }
}

fn hook_of(policy: &pb::EntitlementProvisionPolicy) -> String {
    match policy
        .provision_policy
        .as_ref()
        .and_then(|p| p.typ.as_ref())
    {
        Some(pb::provision_policy::Typ::Webhook(w)) => w.webhook_id.clone(),
        other => panic!("not a webhook: {other:?}"),
    }
}

#[tokio::test]
async fn delete_writes_a_tombstone_that_history_shows_and_revisions_go_on_from() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("github", "admins");
    set_webhook(&mut client, &ent, "hook-1").await;
    let second = set_webhook(&mut client, &ent, "hook-2")
        .await
        .policy
        .unwrap();

    let deleted = client
        .delete_provision_policy(pb::DeleteProvisionPolicyRequest {
            etag: second.etag.clone(),
            ..delete_request(&ent)
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(deleted.revision, 3);
    assert!(!deleted.change_cursor.is_empty());

    let gone = client
        .get_provision_policy(get_request(ent.clone(), 0))
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(error_reason(&gone), "PROVISION_POLICY_NOT_FOUND");
    let past = client
        .get_provision_policy(get_request(ent.clone(), 2))
        .await
        .expect("a past revision stays readable")
        .into_inner();
    assert_eq!(past.policy.unwrap(), second);
    let tombstone = client
        .get_provision_policy(get_request(ent.clone(), 3))
        .await
        .expect_err("a tombstone has no policy");
    assert_eq!(tombstone.code(), Code::NotFound);

    let history = client
        .list_provision_policy_revisions(history_request(&ent, 0))
        .await
        .expect("history after a delete")
        .into_inner();
    let seen: Vec<(i64, bool)> = history
        .revisions
        .iter()
        .map(|r| (r.revision, r.deleted))
        .collect();
    assert_eq!(seen, [(3, true), (2, false), (1, false)]);
    assert!(history.revisions[0].policy.is_none());
    assert_eq!(history.revisions[0].change_cursor, deleted.change_cursor);
    assert_eq!(history.revisions[1].policy.as_ref(), Some(&second));
    assert!(history.revisions.iter().all(|r| r.create_time.is_some()));

    // The old etag can never match again, and a new Set writes revision 4.
    let stale = client
        .set_provision_policy(set_request(
            resource(ent.clone(), webhook("hook-x")),
            &second.etag,
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    let again = set_webhook(&mut client, &ent, "hook-4")
        .await
        .policy
        .unwrap();
    assert_eq!(again.revision, 4);
    assert_eq!(again.etag, "\"4\"");
}

#[tokio::test]
async fn delete_errors_carry_their_details() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let (target, dependant) = (
        entitlement("okta", "target"),
        entitlement("github", "dependant"),
    );

    let missing = client
        .delete_provision_policy(delete_request(&target))
        .await
        .expect_err("nothing to delete");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(error_reason(&missing), "PROVISION_POLICY_NOT_FOUND");
    assert!(missing.get_error_details().resource_info().is_some());
    let lenient = client
        .delete_provision_policy(pb::DeleteProvisionPolicyRequest {
            allow_missing: true,
            etag: "\"9\"".into(),
            ..delete_request(&target)
        })
        .await
        .expect("allow_missing")
        .into_inner();
    assert_eq!(lenient, pb::DeleteProvisionPolicyResponse::default());

    set_webhook(&mut client, &target, "hook").await;
    client
        .set_provision_policy(set_request(
            resource(dependant.clone(), delegated(&target, true)),
            "",
        ))
        .await
        .expect("delegate");
    let refused = client
        .delete_provision_policy(delete_request(&target))
        .await
        .expect_err("a dependant");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(error_reason(&refused), "POLICY_HAS_DEPENDANTS");
    let failure = refused.get_error_details();
    let violations = &failure
        .precondition_failure()
        .expect("PreconditionFailure")
        .violations;
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].subject, "apps/github/entitlements/dependant");
    assert!(
        refused
            .message()
            .contains("apps/github/entitlements/dependant"),
        "{}",
        refused.message()
    );

    let stale = client
        .delete_provision_policy(pb::DeleteProvisionPolicyRequest {
            etag: "\"7\"".into(),
            ..delete_request(&dependant)
        })
        .await
        .expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(error_reason(&stale), "ETAG_MISMATCH");

    let dry = client
        .delete_provision_policy(pb::DeleteProvisionPolicyRequest {
            validate_only: true,
            ..delete_request(&dependant)
        })
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!((dry.revision, dry.change_cursor.as_str()), (2, ""));
    client
        .get_provision_policy(get_request(dependant.clone(), 0))
        .await
        .expect("still there");

    // The dependant's delete takes its edges along: the target can go next.
    client
        .delete_provision_policy(delete_request(&dependant))
        .await
        .expect("delete dependant");
    client
        .delete_provision_policy(delete_request(&target))
        .await
        .expect("delete target");

    let bad = client
        .delete_provision_policy(pb::DeleteProvisionPolicyRequest::default())
        .await
        .expect_err("no entitlement");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&bad),
        [("entitlement".to_owned(), "REQUIRED".to_owned())]
    );
}

#[tokio::test]
async fn history_pages_newest_first_and_its_tokens_are_bound() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("aws", "readers");
    for n in 1..=5 {
        set_webhook(&mut client, &ent, &format!("hook-{n}")).await;
    }
    let mut revisions = Vec::new();
    let mut request = history_request(&ent, 2);
    loop {
        let page = client
            .list_provision_policy_revisions(request.clone())
            .await
            .expect("page")
            .into_inner();
        assert!(page.revisions.len() <= 2);
        revisions.extend(page.revisions.iter().map(|r| r.revision));
        if page.next_page_token.is_empty() {
            break;
        }
        request.page_token = page.next_page_token;
    }
    assert_eq!(revisions, [5, 4, 3, 2, 1]);

    let first = client
        .list_provision_policy_revisions(history_request(&ent, 2))
        .await
        .unwrap()
        .into_inner();
    let foreign = client
        .list_provision_policy_revisions(pb::ListProvisionPolicyRevisionsRequest {
            page_token: first.next_page_token,
            ..history_request(&entitlement("aws", "writers"), 2)
        })
        .await
        .expect_err("token of another entitlement");
    assert_eq!(
        bad_request_fields(&foreign),
        [("page_token".to_owned(), "INVALID_PAGE_TOKEN".to_owned())]
    );
    let never = client
        .list_provision_policy_revisions(history_request(&entitlement("aws", "never"), 0))
        .await
        .expect_err("no history");
    assert_eq!(never.code(), Code::NotFound);
    let negative = client
        .list_provision_policy_revisions(history_request(&ent, -1))
        .await
        .expect_err("negative page size");
    assert_eq!(
        bad_request_fields(&negative),
        [("page_size".to_owned(), "INVALID_PAGE_SIZE".to_owned())]
    );
}

#[tokio::test]
async fn rollback_writes_an_old_revision_again_after_every_check_of_today() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("okta", "admins");
    set_webhook(&mut client, &ent, "hook-1").await;
    let current = set_webhook(&mut client, &ent, "hook-2")
        .await
        .policy
        .unwrap();

    let stale = client
        .rollback_provision_policy(pb::RollbackProvisionPolicyRequest {
            etag: "\"1\"".into(),
            ..rollback_request(&ent, 1)
        })
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    let dry = client
        .rollback_provision_policy(pb::RollbackProvisionPolicyRequest {
            validate_only: true,
            ..rollback_request(&ent, 1)
        })
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!(
        (dry.policy.unwrap().revision, dry.change_cursor.as_str()),
        (3, "")
    );
    let rolled = client
        .rollback_provision_policy(pb::RollbackProvisionPolicyRequest {
            etag: current.etag,
            ..rollback_request(&ent, 1)
        })
        .await
        .expect("rollback")
        .into_inner();
    let policy = rolled.policy.unwrap();
    assert_eq!(
        (policy.revision, hook_of(&policy)),
        (3, "hook-1".to_owned())
    );
    assert!(!rolled.change_cursor.is_empty());

    // Rolling back a deleted policy undeletes it; rolling back to the tombstone is refused.
    client
        .delete_provision_policy(delete_request(&ent))
        .await
        .expect("delete");
    let to_tombstone = client
        .rollback_provision_policy(rollback_request(&ent, 4))
        .await
        .expect_err("a tombstone");
    assert_eq!(to_tombstone.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&to_tombstone), "REVISION_DELETED");
    assert_eq!(
        bad_request_fields(&to_tombstone),
        [("revision".to_owned(), "REVISION_DELETED".to_owned())]
    );
    let undeleted = client
        .rollback_provision_policy(rollback_request(&ent, 2))
        .await
        .expect("undelete")
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(
        (undeleted.revision, hook_of(&undeleted)),
        (5, "hook-2".to_owned())
    );
    let got = client
        .get_provision_policy(get_request(ent.clone(), 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.policy.unwrap(), undeleted);

    let missing = client
        .rollback_provision_policy(rollback_request(&ent, 99))
        .await
        .expect_err("no such revision");
    assert_eq!(missing.code(), Code::NotFound);
    let zero = client
        .rollback_provision_policy(rollback_request(&ent, 0))
        .await
        .expect_err("revision 0");
    assert_eq!(
        bad_request_fields(&zero),
        [("revision".to_owned(), "INVALID_REVISION".to_owned())]
    );
}

#[tokio::test]
async fn a_rollback_that_would_close_a_cycle_today_is_refused() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let (a, b) = (entitlement("app", "a"), entitlement("app", "b"));
    set_webhook(&mut client, &b, "hook").await;
    // a@1 delegates to b; a@2 does not.
    client
        .set_provision_policy(set_request(resource(a.clone(), delegated(&b, true)), ""))
        .await
        .expect("a -> b");
    set_webhook(&mut client, &a, "hook").await;
    // Now b delegates to a: a@1 would close a -> b -> a.
    client
        .set_provision_policy(set_request(resource(b.clone(), delegated(&a, true)), ""))
        .await
        .expect("b -> a");
    let refused = client
        .rollback_provision_policy(rollback_request(&a, 1))
        .await
        .expect_err("a cycle today");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&refused), "INVALID_PROVISION_POLICY");
    let reasons: Vec<String> = bad_request_fields(&refused)
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert!(
        reasons.contains(&"DELEGATION_CYCLE".to_owned()),
        "{reasons:?}"
    );
    let current = client
        .get_provision_policy(get_request(a.clone(), 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(current.policy.unwrap().revision, 2, "nothing written");
}

#[tokio::test]
async fn create_only_stands_for_a_new_entitlement_only_and_one_of_many_wins() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("salesforce", "admins");
    let create = |hook: &str| pb::SetProvisionPolicyRequest {
        create_only: true,
        ..set_request(resource(ent.clone(), webhook(hook)), "")
    };
    client
        .set_provision_policy(create("hook-1"))
        .await
        .expect("create");
    let exists = client
        .set_provision_policy(create("hook-2"))
        .await
        .expect_err("exists");
    assert_eq!(exists.code(), Code::AlreadyExists);
    assert_eq!(error_reason(&exists), "PROVISION_POLICY_ALREADY_EXISTS");
    assert!(exists.get_error_details().resource_info().is_some());
    client
        .delete_provision_policy(delete_request(&ent))
        .await
        .expect("delete");
    let recreated = client
        .set_provision_policy(create("hook-3"))
        .await
        .expect("after a delete");
    assert_eq!(recreated.into_inner().policy.unwrap().revision, 3);

    let raced = entitlement("salesforce", "raced");
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..16 {
        let mut client = server.client.clone();
        let raced = raced.clone();
        tasks.spawn(async move {
            client
                .set_provision_policy(pb::SetProvisionPolicyRequest {
                    create_only: true,
                    ..set_request(resource(raced, webhook(&format!("hook-{n}"))), "")
                })
                .await
        });
    }
    let (mut won, mut lost) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(_) => won += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
                lost += 1;
            }
        }
    }
    assert_eq!((won, lost), (1, 15));
}

#[tokio::test]
async fn listing_pages_stay_at_the_first_pages_snapshot() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    for n in 0..5 {
        set_webhook(
            &mut client,
            &entitlement("list-app", &format!("e{n}")),
            "hook-1",
        )
        .await;
    }
    set_webhook(&mut client, &entitlement("other-app", "x"), "hook-1").await;
    let request = |page_token: String| pb::ListProvisionPoliciesRequest {
        app_id: "list-app".into(),
        page_size: 2,
        page_token,
        consistency: None,
    };
    let first = client
        .list_provision_policies(request(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.policies.len(), 2);
    assert!(!first.read_at.is_empty());
    // Writes between pages: a change, a delete and a new policy, none of them in this listing.
    set_webhook(&mut client, &entitlement("list-app", "e3"), "hook-2").await;
    client
        .delete_provision_policy(delete_request(&entitlement("list-app", "e4")))
        .await
        .unwrap();
    set_webhook(&mut client, &entitlement("list-app", "e5"), "hook-1").await;

    let mut seen: Vec<(String, i64)> = first
        .policies
        .iter()
        .map(|p| (p.entitlement.clone().unwrap().entitlement_id, p.revision))
        .collect();
    let mut token = first.next_page_token.clone();
    while !token.is_empty() {
        let page = client
            .list_provision_policies(request(token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            page.read_at, first.read_at,
            "one snapshot for the whole listing"
        );
        seen.extend(
            page.policies
                .iter()
                .map(|p| (p.entitlement.clone().unwrap().entitlement_id, p.revision)),
        );
        token = page.next_page_token;
    }
    let expected: Vec<(String, i64)> = (0..5).map(|n| (format!("e{n}"), 1)).collect();
    assert_eq!(seen, expected);

    // A new listing sees today.
    let now = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest {
            app_id: "list-app".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = now
        .policies
        .iter()
        .map(|p| p.entitlement.clone().unwrap().entitlement_id)
        .collect();
    assert_eq!(ids, ["e0", "e1", "e2", "e3", "e5"]);
    assert_ne!(now.read_at, first.read_at);

    let unfiltered = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest {
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .expect_err("a token of another filter");
    assert_eq!(
        bad_request_fields(&unfiltered),
        [("page_token".to_owned(), "INVALID_PAGE_TOKEN".to_owned())]
    );
    let bad = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest {
            app_id: "bad app".into(),
            page_size: -3,
            page_token: "zz".into(),
            consistency: None,
        })
        .await
        .expect_err("bad request");
    assert_eq!(
        bad_request_fields(&bad),
        [
            ("app_id".to_owned(), "INVALID_ID".to_owned()),
            ("page_size".to_owned(), "INVALID_PAGE_SIZE".to_owned()),
            ("page_token".to_owned(), "INVALID_PAGE_TOKEN".to_owned()),
        ]
    );
}

#[tokio::test]
async fn write_responses_carry_the_cursor_of_their_commit() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("pagerduty", "responders");
    let first = set_webhook(&mut client, &ent, "hook-1").await;
    let second = set_webhook(&mut client, &ent, "hook-2").await;
    assert!(!first.change_cursor.is_empty());
    assert_ne!(first.change_cursor, second.change_cursor);
    let dry = client
        .set_provision_policy(pb::SetProvisionPolicyRequest {
            validate_only: true,
            ..set_request(resource(ent.clone(), webhook("hook-3")), "")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dry.change_cursor.is_empty(), "nothing written, no cursor");
    // The listing right after the write is at the write's cursor.
    let listing = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest::default())
        .await
        .unwrap();
    assert_eq!(listing.into_inner().read_at, second.change_cursor);
}
