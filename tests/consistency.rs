//! `consistency` on Get, List and Validate through gRPC, on the embedded store: every mode
//! reads an acknowledged write at once (SQLite's memory is exact), `served_at` is a cursor
//! that the next read can require, and each wrong `consistency` is refused with its field.
//! The cross-replica promises are in `replica_consistency.rs`.

mod common;

use common::*;
use provisiond::pb;
use provisiond::pb::consistency::Requirement;
use provisiond::policy::tokens::Cursor;
use tonic::Code;

fn with(requirement: Requirement) -> Option<pb::Consistency> {
    Some(pb::Consistency {
        requirement: Some(requirement),
    })
}

fn get(
    key: &pb::EntitlementRef,
    revision: i64,
    requirement: Requirement,
) -> pb::GetProvisionPolicyRequest {
    pb::GetProvisionPolicyRequest {
        entitlement: Some(key.clone()),
        revision,
        consistency: with(requirement),
    }
}

fn seq(cursor: &str) -> u64 {
    Cursor::decode(cursor).expect("a cursor").seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_reads_an_acknowledged_write_and_says_where_it_was_served() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let key = entitlement("modes", "e");
    for n in 1..=5 {
        let written = set_webhook(&mut client, &key, &format!("hook-{n}")).await;
        let modes = [
            Requirement::FullyConsistent(true),
            Requirement::MinimizeLatency(true),
            Requirement::AtLeastAsFresh(written.change_cursor.clone()),
        ];
        for mode in modes {
            let response = client
                .get_provision_policy(get(&key, 0, mode.clone()))
                .await
                .unwrap_or_else(|status| panic!("{mode:?}: {status:?}"))
                .into_inner();
            assert_eq!(response.policy.unwrap().revision, n, "{mode:?}");
            assert_eq!(
                response.served_at, written.change_cursor,
                "{mode:?}: exact on SQLite"
            );
        }
        // The cursor a read was served at is one the next read can require.
        let served = client
            .get_provision_policy(get_request(key.clone(), 0))
            .await
            .unwrap()
            .into_inner()
            .served_at;
        let again = client
            .get_provision_policy(get(&key, 0, Requirement::AtLeastAsFresh(served)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.policy.unwrap().revision, n);
    }
    // A past revision, a listing and a validation say where they were served too.
    let head = seq(&set_webhook(&mut client, &key, "hook-last")
        .await
        .change_cursor);
    let past = client
        .get_provision_policy(get(&key, 1, Requirement::MinimizeLatency(true)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(past.policy.unwrap().revision, 1);
    assert_eq!(seq(&past.served_at), head);
    let listing = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest {
            consistency: with(Requirement::MinimizeLatency(true)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((listing.policies.len(), seq(&listing.read_at)), (1, head));
    let validated = client
        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
            policy: Some(resource(key.clone(), webhook("hook"))),
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(validated.valid);
    assert_eq!(seq(&validated.served_at), head);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_consistency_is_refused_with_its_field_on_every_read() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let key = entitlement("modes", "refused");
    let written = set_webhook(&mut client, &key, "hook").await;
    let mine = Cursor::decode(&written.change_cursor).unwrap();
    let other_store = Cursor {
        store_id: "another-store".into(),
        ..mine.clone()
    }
    .encode();
    let ahead = Cursor {
        seq: mine.seq + 1,
        ..mine
    }
    .encode();
    // (requirement, code, reason, field)
    let cases = [
        (
            Requirement::MinimizeLatency(false),
            Code::InvalidArgument,
            "INVALID_REQUEST",
            Some(("consistency.minimize_latency", "INVALID_CONSISTENCY")),
        ),
        (
            Requirement::FullyConsistent(false),
            Code::InvalidArgument,
            "INVALID_REQUEST",
            Some(("consistency.fully_consistent", "INVALID_CONSISTENCY")),
        ),
        (
            Requirement::AtLeastAsFresh(String::new()),
            Code::InvalidArgument,
            "INVALID_CURSOR",
            Some(("consistency.at_least_as_fresh", "INVALID_CURSOR")),
        ),
        (
            Requirement::AtLeastAsFresh("%%not a cursor".into()),
            Code::InvalidArgument,
            "INVALID_CURSOR",
            Some(("consistency.at_least_as_fresh", "INVALID_CURSOR")),
        ),
        (
            Requirement::AtLeastAsFresh(other_store),
            Code::InvalidArgument,
            "INVALID_CURSOR",
            Some(("consistency.at_least_as_fresh", "INVALID_CURSOR")),
        ),
        (
            Requirement::AtLeastAsFresh(ahead),
            Code::OutOfRange,
            "CURSOR_AHEAD",
            None,
        ),
    ];
    for (requirement, code, reason, field) in cases {
        let statuses = [
            client
                .get_provision_policy(get(&key, 0, requirement.clone()))
                .await
                .err(),
            client
                .get_provision_policy(get(&key, 1, requirement.clone()))
                .await
                .err(),
            client
                .list_provision_policies(pb::ListProvisionPoliciesRequest {
                    consistency: with(requirement.clone()),
                    ..Default::default()
                })
                .await
                .err(),
            client
                .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
                    policy: Some(resource(key.clone(), webhook("hook"))),
                    consistency: with(requirement.clone()),
                })
                .await
                .err(),
        ];
        for (rpc, status) in ["get", "get revision", "list", "validate"]
            .iter()
            .zip(statuses)
        {
            let status = status.unwrap_or_else(|| panic!("{rpc} accepted {requirement:?}"));
            assert_eq!(status.code(), code, "{rpc} {requirement:?}: {status:?}");
            assert_eq!(error_reason(&status), reason, "{rpc} {requirement:?}");
            if let Some((path, field_reason)) = field {
                assert_eq!(
                    bad_request_fields(&status),
                    vec![(path.to_owned(), field_reason.to_owned())],
                    "{rpc} {requirement:?}"
                );
            }
        }
    }
    server.stop().await;
}
