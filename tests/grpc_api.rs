//! The gRPC contract over the real transport: codes, details, revisions, etags.

mod common;

use common::*;
use provisiond::pb;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn set_then_get_round_trips_with_revision_etag_and_times() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("github", "admins");
    let policy = multi_step(vec![webhook("wh-1"), manual(&["u1", "u2"])]);

    let set = client
        .set_provision_policy(set_request(resource(ent.clone(), policy.clone()), ""))
        .await
        .expect("set")
        .into_inner();
    let stored = set.policy.expect("policy");
    assert_eq!(stored.revision, 1);
    assert_eq!(stored.etag, "\"1\"");
    assert_eq!(stored.provision_policy.as_ref(), Some(&policy));
    assert!(stored.create_time.is_some());
    assert_eq!(stored.create_time, stored.update_time);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);

    let got = client
        .get_provision_policy(get_request(ent.clone(), 0))
        .await
        .expect("get")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(got, stored);
}

#[tokio::test]
async fn every_write_is_a_new_revision_and_past_revisions_stay_readable() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("okta", "readers");
    let mut written = Vec::new();
    for i in 1..=3 {
        let set = client
            .set_provision_policy(set_request(
                resource(ent.clone(), webhook(&format!("wh-{i}"))),
                "",
            ))
            .await
            .expect("set")
            .into_inner();
        written.push(set.policy.expect("policy"));
    }
    assert_eq!(
        written.iter().map(|p| p.revision).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(
        written
            .iter()
            .all(|p| p.create_time == written[0].create_time)
    );
    for expected in &written {
        let got = client
            .get_provision_policy(get_request(ent.clone(), expected.revision))
            .await
            .expect("get revision")
            .into_inner()
            .policy
            .expect("policy");
        assert_eq!(&got, expected);
    }
    let current = client
        .get_provision_policy(get_request(ent.clone(), 0))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(current.policy.expect("policy").revision, 3);

    let missing = client
        .get_provision_policy(get_request(ent.clone(), 4))
        .await
        .expect_err("no revision 4");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(error_reason(&missing), "PROVISION_POLICY_NOT_FOUND");
    let resource_info = missing
        .get_error_details()
        .resource_info()
        .cloned()
        .expect("ResourceInfo");
    assert_eq!(
        resource_info.resource_name,
        "apps/okta/entitlements/readers"
    );
    assert_eq!(
        resource_info.resource_type,
        "provision.v1.EntitlementProvisionPolicy"
    );
}

#[tokio::test]
async fn get_of_an_unknown_entitlement_is_not_found() {
    let server = TestServer::start().await;
    let status = server
        .client
        .clone()
        .get_provision_policy(get_request(entitlement("nope", "nothing"), 0))
        .await
        .expect_err("not found");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(error_reason(&status), "PROVISION_POLICY_NOT_FOUND");
    assert!(
        status.message().contains("apps/nope/entitlements/nothing"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn malformed_get_requests_are_invalid_argument_with_field_paths() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let no_entitlement = client
        .get_provision_policy(pb::GetProvisionPolicyRequest::default())
        .await
        .expect_err("missing entitlement");
    assert_eq!(no_entitlement.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&no_entitlement), "INVALID_REQUEST");
    assert_eq!(
        bad_request_fields(&no_entitlement),
        vec![("entitlement".to_owned(), "REQUIRED".to_owned())]
    );

    let bad = client
        .get_provision_policy(get_request(entitlement("has space", ""), -1))
        .await
        .expect_err("bad ids");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&bad),
        vec![
            ("entitlement.app_id".to_owned(), "INVALID_ID".to_owned()),
            (
                "entitlement.entitlement_id".to_owned(),
                "REQUIRED".to_owned()
            ),
            ("revision".to_owned(), "INVALID_REVISION".to_owned()),
        ]
    );
}

#[tokio::test]
async fn stale_etag_is_aborted_and_current_etag_writes() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("aws", "poweruser");
    let first = client
        .set_provision_policy(set_request(resource(ent.clone(), webhook("a")), ""))
        .await
        .expect("first")
        .into_inner()
        .policy
        .expect("policy");
    let second = client
        .set_provision_policy(set_request(
            resource(ent.clone(), webhook("b")),
            &first.etag,
        ))
        .await
        .expect("second with current etag")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(second.revision, 2);

    let stale = client
        .set_provision_policy(set_request(
            resource(ent.clone(), webhook("c")),
            &first.etag,
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(error_reason(&stale), "ETAG_MISMATCH");
    let precondition = stale
        .get_error_details()
        .precondition_failure()
        .cloned()
        .expect("PreconditionFailure");
    assert_eq!(precondition.violations[0].r#type, "ETAG");
    assert_eq!(
        precondition.violations[0].subject,
        "apps/aws/entitlements/poweruser"
    );
    assert!(
        stale.message().contains("\"2\""),
        "names the current etag: {}",
        stale.message()
    );

    for foreign in ["garbage", "\"99\"", "W/\"2\""] {
        let status = client
            .set_provision_policy(set_request(resource(ent.clone(), webhook("d")), foreign))
            .await
            .expect_err("foreign etag");
        assert_eq!(status.code(), Code::Aborted, "{foreign}");
    }
    let current = client
        .get_provision_policy(get_request(ent, 0))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        current.policy.expect("policy"),
        second,
        "failed writes changed nothing"
    );
}

#[tokio::test]
async fn an_etag_on_a_missing_entitlement_is_aborted() {
    let server = TestServer::start().await;
    let status = server
        .client
        .clone()
        .set_provision_policy(set_request(
            resource(entitlement("a", "b"), webhook("w")),
            "\"1\"",
        ))
        .await
        .expect_err("nothing to match");
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(error_reason(&status), "ETAG_MISMATCH");
}

#[tokio::test]
async fn validate_only_checks_everything_and_writes_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("slack", "workspace-admins");
    let mut request = set_request(resource(ent.clone(), webhook("w")), "");
    request.validate_only = true;
    let dry = client
        .set_provision_policy(request.clone())
        .await
        .expect("dry run")
        .into_inner();
    assert_eq!(dry.policy.expect("would-be resource").revision, 1);
    let status = client
        .get_provision_policy(get_request(ent.clone(), 0))
        .await
        .expect_err("nothing stored");
    assert_eq!(status.code(), Code::NotFound);

    request.etag = "\"3\"".to_owned();
    let stale = client
        .set_provision_policy(request.clone())
        .await
        .expect_err("etag checked too");
    assert_eq!(stale.code(), Code::Aborted);

    request.etag.clear();
    request.policy = Some(resource(ent.clone(), webhook("")));
    let invalid = client
        .set_provision_policy(request)
        .await
        .expect_err("rules checked too");
    assert_eq!(invalid.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn output_only_fields_in_the_request_are_ignored() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let mut sent = resource(entitlement("jira", "agents"), webhook("w"));
    sent.etag = "\"41\"".to_owned();
    sent.revision = 41;
    sent.create_time = Some(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    });
    sent.update_time = Some(prost_types::Timestamp {
        seconds: 2,
        nanos: 0,
    });
    let stored = client
        .set_provision_policy(set_request(sent, ""))
        .await
        .expect("set")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(stored.revision, 1);
    assert_eq!(stored.etag, "\"1\"");
    assert!(stored.create_time.expect("time").seconds > 1_700_000_000);
}

#[tokio::test]
async fn set_of_an_invalid_policy_lists_every_error_and_writes_nothing() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("github", "maintainers");
    let policy = multi_step(vec![webhook(""), multi_step(vec![]), manual(&[])]);
    let status = client
        .set_provision_policy(set_request(resource(ent.clone(), policy), ""))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(error_reason(&status), "INVALID_PROVISION_POLICY");
    let fields = bad_request_fields(&status);
    let steps = "policy.provision_policy.multi_step.provision_steps";
    for expected in [
        (format!("{steps}[0].webhook.webhook_id"), "REQUIRED"),
        (
            format!("{steps}[1].multi_step.provision_steps"),
            "EMPTY_MULTI_STEP",
        ),
        (format!("{steps}[2].manual"), "NO_PROVISIONER"),
    ] {
        assert!(
            fields
                .iter()
                .any(|(f, r)| *f == expected.0 && r == expected.1),
            "{expected:?} missing from {fields:?}"
        );
    }
    assert!(
        fields.iter().all(|(_, r)| r != "NESTED_MULTI_STEP"),
        "warnings are not errors: {fields:?}"
    );
    assert!(
        status.message().contains("webhook_id"),
        "message stands alone: {}",
        status.message()
    );
    let get = client
        .get_provision_policy(get_request(ent, 0))
        .await
        .expect_err("nothing stored");
    assert_eq!(get.code(), Code::NotFound);
}

#[tokio::test]
async fn set_of_an_empty_request_names_the_missing_fields() {
    let server = TestServer::start().await;
    let status = server
        .client
        .clone()
        .set_provision_policy(pb::SetProvisionPolicyRequest::default())
        .await
        .expect_err("empty");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields = bad_request_fields(&status);
    assert!(
        fields.contains(&("policy.entitlement".to_owned(), "REQUIRED".to_owned())),
        "{fields:?}"
    );
    assert!(
        fields.contains(&("policy.provision_policy".to_owned(), "REQUIRED".to_owned())),
        "{fields:?}"
    );
}

#[tokio::test]
async fn warnings_do_not_block_set_and_are_returned() {
    let server = TestServer::start().await;
    let policy = multi_step(vec![webhook("a"), multi_step(vec![webhook("b")])]);
    let set = server
        .client
        .clone()
        .set_provision_policy(set_request(resource(entitlement("x", "y"), policy), ""))
        .await
        .expect("warnings do not block")
        .into_inner();
    assert_eq!(set.policy.expect("policy").revision, 1);
    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    assert_eq!(set.warnings[0].reason, "NESTED_MULTI_STEP");
    assert_eq!(set.warnings[0].severity, pb::Severity::Warning as i32);
    assert_eq!(
        set.warnings[0].field,
        "policy.provision_policy.multi_step.provision_steps[1].multi_step"
    );
}

#[tokio::test]
async fn validate_answers_ok_with_violations_as_data_and_agrees_with_set() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let invalid = resource(entitlement("a", "b"), multi_step(vec![webhook("bad id!")]));
    let answer = client
        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
            consistency: None,
            policy: Some(invalid.clone()),
        })
        .await
        .expect("validate answers OK")
        .into_inner();
    assert!(!answer.valid);
    assert_eq!(answer.violations.len(), 1);
    assert_eq!(
        answer.violations[0].field,
        "policy.provision_policy.multi_step.provision_steps[0].webhook.webhook_id"
    );
    assert_eq!(answer.violations[0].reason, "INVALID_ID");
    let set = client
        .set_provision_policy(set_request(invalid, ""))
        .await
        .expect_err("set refuses it");
    assert_eq!(
        bad_request_fields(&set),
        vec![(answer.violations[0].field.clone(), "INVALID_ID".to_owned())]
    );

    let valid = resource(entitlement("a", "b"), webhook("good"));
    let answer = client
        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
            consistency: None,
            policy: Some(valid.clone()),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(answer.valid);
    assert!(answer.violations.is_empty());
    client
        .set_provision_policy(set_request(valid, ""))
        .await
        .expect("set accepts what validate calls valid");
    let status = client
        .get_provision_policy(get_request(entitlement("a", "b"), 0))
        .await
        .expect("stored by set, not by validate");
    assert_eq!(status.into_inner().policy.expect("policy").revision, 1);
}

#[tokio::test]
async fn nesting_beyond_our_limit_is_a_field_violation_and_beyond_prost_an_error() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let nest = |levels: usize| {
        let mut policy = webhook("w");
        for _ in 0..levels {
            policy = multi_step(vec![policy]);
        }
        policy
    };
    let answer = client
        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
            consistency: None,
            policy: Some(resource(entitlement("a", "b"), nest(10))),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(
        answer.violations.iter().any(|v| v.reason == "TOO_DEEP"),
        "{:?}",
        answer.violations
    );

    // prost stops decoding at 100 message levels (two per MultiStep level), before our code runs.
    let status = client
        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
            consistency: None,
            policy: Some(resource(entitlement("a", "b"), nest(60))),
        })
        .await
        .expect_err("too deep to decode");
    assert_eq!(status.code(), Code::Internal);
}

#[tokio::test]
async fn requests_over_one_mebibyte_are_refused_by_the_transport() {
    let server = TestServer::start().await;
    let mut policy = manual(&["u"]);
    if let Some(pb::provision_policy::Typ::Manual(m)) = &mut policy.typ {
        m.instructions = "x".repeat(1 << 20);
    }
    let status = server
        .client
        .clone()
        .set_provision_policy(set_request(resource(entitlement("a", "b"), policy), ""))
        .await
        .expect_err("too large");
    // tonic reports an oversized message as OUT_OF_RANGE (not RESOURCE_EXHAUSTED).
    assert_eq!(status.code(), Code::OutOfRange);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sets_with_one_etag_have_exactly_one_winner() {
    let server = TestServer::start().await;
    let ent = entitlement("race", "one");
    let mut client = server.client.clone();
    let first = client
        .set_provision_policy(set_request(resource(ent.clone(), webhook("w0")), ""))
        .await
        .expect("seed")
        .into_inner()
        .policy
        .expect("policy");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut client = server.client.clone();
        let request = set_request(
            resource(ent.clone(), webhook(&format!("w{i}"))),
            &first.etag,
        );
        tasks.push(tokio::spawn(async move {
            client.set_provision_policy(request).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => wins += 1,
            Err(status) => assert_eq!(status.code(), Code::Aborted),
        }
    }
    assert_eq!(wins, 1);
    let current = client
        .get_provision_policy(get_request(ent, 0))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(current.policy.expect("policy").revision, 2);
}

#[tokio::test]
async fn a_flood_of_bad_ids_gives_a_bounded_answer() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let bad_ids: Vec<String> = (0..5000).map(|i| format!("bad id {i}")).collect();
    let ids: Vec<&str> = bad_ids.iter().map(String::as_str).collect();
    let flood = resource(entitlement("a", "b"), manual(&ids));
    let answer = client
        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
            consistency: None,
            policy: Some(flood.clone()),
        })
        .await
        .expect("validate")
        .into_inner();
    assert!(!answer.valid);
    assert_eq!(answer.violations.len(), 101, "100 listed and one summary");
    let summary = answer.violations.last().expect("summary");
    assert_eq!(summary.reason, "TOO_MANY_VIOLATIONS");
    assert_eq!(summary.field, "policy");
    assert!(
        summary.description.contains("4900 more"),
        "{}",
        summary.description
    );

    let status = client
        .set_provision_policy(set_request(flood, ""))
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let listed = status
        .get_error_details()
        .bad_request()
        .cloned()
        .expect("BadRequest")
        .field_violations;
    assert!(
        listed.len() < 101,
        "the trailer stays small: {}",
        listed.len()
    );
    let last = listed.last().expect("last");
    assert!(
        last.description
            .contains("ValidateProvisionPolicy returns them as data"),
        "{last:?}"
    );
}
