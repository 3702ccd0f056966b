//! WatchProvisionPolicies over the real transport: the guarantees of etcd's and SpiceDB's
//! watch (ordered, unique, reliable, atomic, resumable, bookmarkable), bad cursors, filters,
//! initial state, shutdown and fan-out. The same checks run on PostgreSQL replicas in
//! tests/replicas.rs.

mod common;

use std::time::Duration;

use common::*;
use provisiond::pb;
use provisiond::pb::policy_change::Kind;
use tonic::Code;
use tonic::Streaming;

/// Bounds a hang only; never measures speed.
const LIMIT: Duration = Duration::from_secs(30);

fn watch_from(cursor: &str) -> pb::WatchProvisionPoliciesRequest {
    pb::WatchProvisionPoliciesRequest {
        start_cursor: cursor.to_owned(),
        checkpoint_interval: Some(prost_types::Duration {
            seconds: 0,
            nanos: 200_000_000,
        }),
        ..Default::default()
    }
}

async fn open(
    client: &mut Client,
    request: pb::WatchProvisionPoliciesRequest,
) -> Streaming<pb::WatchProvisionPoliciesResponse> {
    client
        .watch_provision_policies(request)
        .await
        .expect("watch")
        .into_inner()
}

async fn next(
    stream: &mut Streaming<pb::WatchProvisionPoliciesResponse>,
) -> pb::WatchProvisionPoliciesResponse {
    tokio::time::timeout(LIMIT, stream.message())
        .await
        .expect("a message in time")
        .expect("no error")
        .expect("the stream goes on")
}

/// The next message that carries changes, skipping checkpoints.
async fn next_change(
    stream: &mut Streaming<pb::WatchProvisionPoliciesResponse>,
) -> pb::WatchProvisionPoliciesResponse {
    loop {
        let message = next(stream).await;
        if !message.checkpoint {
            assert!(
                !message.changes.is_empty(),
                "a message is changes or a checkpoint"
            );
            return message;
        }
        assert!(message.changes.is_empty());
    }
}

fn kinds(message: &pb::WatchProvisionPoliciesResponse) -> Vec<Kind> {
    message
        .changes
        .iter()
        .map(|c| Kind::try_from(c.kind).unwrap())
        .collect()
}

fn put_of(message: &pb::WatchProvisionPoliciesResponse) -> (String, i64) {
    assert_eq!(kinds(message), [Kind::Put]);
    let change = &message.changes[0];
    (
        change.entitlement.clone().unwrap().entitlement_id,
        change.revision,
    )
}

#[tokio::test]
async fn a_resumed_watch_delivers_the_rest_exactly_once_in_order() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let start = set_webhook(&mut client, &entitlement("app", "start"), "hook")
        .await
        .change_cursor;
    for n in 0..10 {
        set_webhook(&mut client, &entitlement("app", &format!("e{n}")), "hook").await;
    }
    let mut stream = open(&mut client, watch_from(&start)).await;
    let mut cursors = Vec::new();
    for n in 0..4 {
        let message = next_change(&mut stream).await;
        assert_eq!(put_of(&message), (format!("e{n}"), 1));
        cursors.push(message.cursor);
    }
    drop(stream);
    let mut resumed = open(&mut client, watch_from(&cursors[3])).await;
    for n in 4..10 {
        assert_eq!(
            put_of(&next_change(&mut resumed).await),
            (format!("e{n}"), 1)
        );
    }
    // Nothing more, only checkpoints at the last cursor.
    let checkpoint = next(&mut resumed).await;
    assert!(checkpoint.checkpoint);
    let head = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest::default())
        .await
        .unwrap();
    assert_eq!(checkpoint.cursor, head.into_inner().read_at);
}

#[tokio::test]
async fn an_implicit_delegation_is_one_message_and_failed_writes_are_none() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let (target, key) = (entitlement("okta", "target"), entitlement("github", "key"));
    let start = set_webhook(&mut client, &target, "hook")
        .await
        .change_cursor;
    let mut stream = open(&mut client, watch_from(&start)).await;

    // Refused, aborted and validate-only writes: no event.
    let invalid = client
        .set_provision_policy(set_request(resource(key.clone(), webhook("")), ""))
        .await;
    assert_eq!(invalid.unwrap_err().code(), Code::InvalidArgument);
    let stale = client
        .set_provision_policy(set_request(resource(target.clone(), webhook("x")), "\"9\""))
        .await;
    assert_eq!(stale.unwrap_err().code(), Code::Aborted);
    let delegation = pb::ProvisionPolicy {
        typ: Some(pb::provision_policy::Typ::Delegated(
            pb::DelegatedProvision {
                app_id: target.app_id.clone(),
                entitlement_id: target.entitlement_id.clone(),
                implicit: true,
            },
        )),
    };
    client
        .set_provision_policy(pb::SetProvisionPolicyRequest {
            validate_only: true,
            ..set_request(resource(key.clone(), delegation.clone()), "")
        })
        .await
        .expect("dry run");
    let written = client
        .set_provision_policy(set_request(resource(key.clone(), delegation), ""))
        .await
        .expect("implicit delegation")
        .into_inner();

    let message = next_change(&mut stream).await;
    assert_eq!(
        kinds(&message),
        [Kind::Put, Kind::BindingCreated],
        "one write, one message"
    );
    assert_eq!(message.cursor, written.change_cursor);
    assert_eq!(message.changes[0].policy, written.policy);
    let binding = message.changes[1].binding.clone().unwrap();
    assert_eq!(
        (binding.source, binding.destination, binding.implicit),
        (Some(target), Some(key), true)
    );
    assert!(message.commit_time.is_some());
}

#[tokio::test]
async fn bad_cursors_fail_the_call_loudly() {
    let server = TestServer::start().await;
    let other = TestServer::start().await;
    let mut client = server.client.clone();
    let mut other_client = other.client.clone();
    set_webhook(&mut client, &entitlement("app", "a"), "hook").await;
    let foreign = set_webhook(&mut other_client, &entitlement("app", "a"), "hook")
        .await
        .change_cursor;
    let page_token = {
        set_webhook(&mut client, &entitlement("app", "b"), "hook").await;
        let request = pb::ListProvisionPoliciesRequest {
            page_size: 1,
            ..Default::default()
        };
        client
            .list_provision_policies(request)
            .await
            .unwrap()
            .into_inner()
            .next_page_token
    };
    for (cursor, what) in [
        ("garbage", "garbage"),
        (foreign.as_str(), "another store's cursor"),
        (page_token.as_str(), "a page token"),
    ] {
        let refused = client
            .watch_provision_policies(watch_from(cursor))
            .await
            .expect_err(what);
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}");
        assert_eq!(error_reason(&refused), "INVALID_CURSOR", "{what}");
        assert_eq!(
            bad_request_fields(&refused),
            [("start_cursor".to_owned(), "INVALID_CURSOR".to_owned())]
        );
    }
}

#[tokio::test]
async fn a_cursor_ahead_of_a_restored_store_is_out_of_range() {
    let live = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let at = |dir: &std::path::Path| {
        let dir = dir.to_owned();
        move |config: &mut provisiond::config::Config| config.data_dir = dir
    };
    let server = TestServer::start_with(at(live.path())).await;
    let mut client = server.client.clone();
    set_webhook(&mut client, &entitlement("app", "a"), "hook-1").await;
    server.stop().await;
    for file in std::fs::read_dir(live.path()).unwrap() {
        let file = file.unwrap();
        std::fs::copy(file.path(), backup.path().join(file.file_name())).unwrap();
    }
    let server = TestServer::start_with(at(live.path())).await;
    let mut client = server.client.clone();
    let later = set_webhook(&mut client, &entitlement("app", "a"), "hook-2")
        .await
        .change_cursor;
    server.stop().await;

    let restored = TestServer::start_with(at(backup.path())).await;
    let mut client = restored.client.clone();
    let refused = client
        .watch_provision_policies(watch_from(&later))
        .await
        .expect_err("ahead");
    assert_eq!(refused.code(), Code::OutOfRange);
    assert_eq!(error_reason(&refused), "CURSOR_AHEAD");
    assert!(
        refused.message().contains("backup"),
        "{}",
        refused.message()
    );
}

#[tokio::test]
async fn list_then_watch_rebuilds_the_true_state_while_writes_run() {
    use std::collections::BTreeMap;
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    for n in 0..20 {
        set_webhook(
            &mut client,
            &entitlement("lw", &format!("e{n:02}")),
            "hook-0",
        )
        .await;
    }
    // Writers run during the whole listing.
    let writer = {
        let mut client = server.client.clone();
        tokio::spawn(async move {
            for round in 1..=3 {
                for n in (0..24).step_by(3) {
                    let ent = entitlement("lw", &format!("e{n:02}"));
                    if n % 2 == 0 && round == 2 {
                        let _ = client.delete_provision_policy(delete_request(&ent)).await;
                    } else {
                        set_webhook(&mut client, &ent, &format!("hook-{round}")).await;
                    }
                }
            }
        })
    };
    let mut state: BTreeMap<String, pb::EntitlementProvisionPolicy> = BTreeMap::new();
    let mut request = pb::ListProvisionPoliciesRequest {
        consistency: None,
        app_id: "lw".into(),
        page_size: 3,
        page_token: String::new(),
    };
    let read_at = loop {
        let page = client
            .list_provision_policies(request.clone())
            .await
            .unwrap()
            .into_inner();
        for policy in page.policies {
            state.insert(policy.entitlement.clone().unwrap().entitlement_id, policy);
        }
        if page.next_page_token.is_empty() {
            break page.read_at;
        }
        request.page_token = page.next_page_token;
    };
    writer.await.unwrap();
    let truth_request = pb::ListProvisionPoliciesRequest {
        consistency: None,
        app_id: "lw".into(),
        page_size: 1000,
        page_token: String::new(),
    };
    let truth = client
        .list_provision_policies(truth_request)
        .await
        .unwrap()
        .into_inner();

    let mut stream = open(
        &mut client,
        pb::WatchProvisionPoliciesRequest {
            app_id: "lw".into(),
            ..watch_from(&read_at)
        },
    )
    .await;
    loop {
        let message = next(&mut stream).await;
        for change in &message.changes {
            let id = change.entitlement.clone().unwrap().entitlement_id;
            match Kind::try_from(change.kind).unwrap() {
                Kind::Put => {
                    let previous = state.insert(id, change.policy.clone().unwrap());
                    let revision = previous.map_or(0, |p| p.revision);
                    assert!(change.revision > revision, "nothing doubled");
                }
                Kind::Delete => {
                    assert!(state.remove(&id).is_some(), "a delete of what is there");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if message.cursor == truth.read_at {
            break;
        }
    }
    let rebuilt: Vec<_> = state.into_values().collect();
    assert_eq!(rebuilt, truth.policies);
}

#[tokio::test]
async fn checkpoints_come_when_idle_and_advance_past_filtered_writes() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let start = set_webhook(&mut client, &entitlement("seen", "a"), "hook")
        .await
        .change_cursor;
    let mut filtered = open(
        &mut client,
        pb::WatchProvisionPoliciesRequest {
            app_id: "seen".into(),
            ..watch_from(&start)
        },
    )
    .await;
    // Idle: a checkpoint at the start.
    let idle = next(&mut filtered).await;
    assert!(idle.checkpoint && idle.changes.is_empty());
    assert_eq!(idle.cursor, start);

    let hidden = set_webhook(&mut client, &entitlement("hidden", "x"), "hook")
        .await
        .change_cursor;
    let mut moved = next(&mut filtered).await;
    while moved.cursor != hidden {
        assert!(
            moved.checkpoint,
            "only checkpoints: the write is filtered out"
        );
        moved = next(&mut filtered).await;
    }
    assert!(moved.checkpoint);
    // Resuming from it redelivers nothing; the next match comes next.
    drop(filtered);
    let mut resumed = open(
        &mut client,
        pb::WatchProvisionPoliciesRequest {
            app_id: "seen".into(),
            ..watch_from(&hidden)
        },
    )
    .await;
    let shown = set_webhook(&mut client, &entitlement("seen", "b"), "hook")
        .await
        .change_cursor;
    let message = next_change(&mut resumed).await;
    assert_eq!(
        (put_of(&message), message.cursor),
        (("b".to_owned(), 1), shown)
    );
}

#[tokio::test]
async fn a_set_delete_set_lifecycle_is_put_delete_put_and_a_rollback_a_put() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("life", "cycle");
    let other = entitlement("life", "other");
    let mut stream = open(
        &mut client,
        pb::WatchProvisionPoliciesRequest {
            entitlement: Some(ent.clone()),
            ..watch_from("")
        },
    )
    .await;
    let first = set_webhook(&mut client, &ent, "hook-1")
        .await
        .policy
        .unwrap();
    set_webhook(&mut client, &other, "hook").await;
    client
        .delete_provision_policy(delete_request(&ent))
        .await
        .unwrap();
    set_webhook(&mut client, &ent, "hook-3").await;
    client
        .rollback_provision_policy(pb::RollbackProvisionPolicyRequest {
            entitlement: Some(ent.clone()),
            revision: 1,
            ..Default::default()
        })
        .await
        .unwrap();

    let put = next_change(&mut stream).await;
    assert_eq!(put_of(&put), ("cycle".to_owned(), 1));
    let delete = next_change(&mut stream).await;
    assert_eq!(kinds(&delete), [Kind::Delete]);
    assert_eq!(delete.changes[0].revision, 2);
    assert_eq!(
        delete.changes[0].policy.as_ref(),
        Some(&first),
        "the last live state"
    );
    assert_eq!(
        put_of(&next_change(&mut stream).await),
        ("cycle".to_owned(), 3)
    );
    let rolled_back = next_change(&mut stream).await;
    assert_eq!(put_of(&rolled_back), ("cycle".to_owned(), 4));
    assert_eq!(
        rolled_back.changes[0]
            .policy
            .as_ref()
            .unwrap()
            .provision_policy,
        first.provision_policy
    );
}

#[tokio::test]
async fn initial_state_is_followed_by_exactly_one_checkpoint_then_live_changes() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    for n in 0..150 {
        set_webhook(
            &mut client,
            &entitlement("init", &format!("e{n:03}")),
            "hook",
        )
        .await;
    }
    set_webhook(&mut client, &entitlement("elsewhere", "x"), "hook").await;
    client
        .delete_provision_policy(delete_request(&entitlement("init", "e007")))
        .await
        .unwrap();
    let mut stream = open(
        &mut client,
        pb::WatchProvisionPoliciesRequest {
            app_id: "init".into(),
            send_initial_state: true,
            ..watch_from("")
        },
    )
    .await;
    let mut initial = Vec::new();
    let checkpoint = loop {
        let message = next(&mut stream).await;
        if message.checkpoint {
            break message;
        }
        assert!(
            message
                .changes
                .iter()
                .all(|c| c.kind == Kind::Initial as i32)
        );
        initial.extend(
            message
                .changes
                .into_iter()
                .map(|c| c.entitlement.unwrap().entitlement_id),
        );
    };
    let expected: Vec<String> = (0..150)
        .filter(|n| *n != 7)
        .map(|n| format!("e{n:03}"))
        .collect();
    assert_eq!(initial, expected);
    let live = set_webhook(&mut client, &entitlement("init", "late"), "hook")
        .await
        .change_cursor;
    let message = next(&mut stream).await;
    assert!(
        !message.checkpoint,
        "live changes follow the one checkpoint: {message:?}"
    );
    assert_eq!(
        (put_of(&message), message.cursor),
        (("late".to_owned(), 1), live)
    );
    assert_ne!(checkpoint.cursor, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_every_watch_with_a_checkpoint_then_shutting_down() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let cursor = set_webhook(&mut client, &entitlement("stop", "a"), "hook")
        .await
        .change_cursor;
    let mut streams = Vec::new();
    for _ in 0..100 {
        let mut request = watch_from(&cursor);
        request.checkpoint_interval = Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        });
        streams.push(open(&mut client, request).await);
    }
    tokio::time::timeout(LIMIT, server.stop())
        .await
        .expect("shutdown does not hang on open streams");
    for mut stream in streams {
        let last = next(&mut stream).await;
        assert!(last.checkpoint, "{last:?}");
        assert_eq!(last.cursor, cursor);
        let end = tokio::time::timeout(LIMIT, stream.message()).await.unwrap();
        let status = end.expect_err("the stream ends with an error, never OK");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(error_reason(&status), "SHUTTING_DOWN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_hold_and_a_thousand_watchers_see_identical_sequences() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let start = set_webhook(&mut client, &entitlement("fan", "start"), "hook")
        .await
        .change_cursor;
    // The server allows 256 concurrent streams per connection (as a demanding client would
    // find), so the watchers share five connections.
    let mut channels = Vec::new();
    for _ in 0..5 {
        channels.push(server.channel().await);
    }
    let mut watchers = Vec::new();
    for n in 0..1000 {
        let mut client = Client::new(channels[n % 5].clone());
        let request = match n % 3 {
            0 => watch_from(&start),
            1 => pb::WatchProvisionPoliciesRequest {
                app_id: "fan".into(),
                ..watch_from(&start)
            },
            _ => pb::WatchProvisionPoliciesRequest {
                entitlement: Some(entitlement("fan", "e1")),
                ..watch_from(&start)
            },
        };
        watchers.push((n % 3, open(&mut client, request).await));
    }
    let targets = [
        entitlement("fan", "e0"),
        entitlement("fan", "e1"),
        entitlement("other", "e1"),
    ];
    let mut last = String::new();
    for round in 0..5 {
        for target in &targets {
            last = set_webhook(&mut client, target, &format!("hook-{round}"))
                .await
                .change_cursor;
        }
    }
    client
        .create_proxy_binding(pb::CreateProxyBindingRequest {
            binding: Some(pb::ProxyBinding {
                source: Some(entitlement("other", "e1")),
                destination: Some(entitlement("fan", "e9")),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let binding_cursor = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .read_at;
    let _ = last;
    let mut sequences: [Option<Vec<(String, String, i32)>>; 3] = [None, None, None];
    for (filter, mut stream) in watchers {
        let mut seen = Vec::new();
        loop {
            let message = next(&mut stream).await;
            for change in &message.changes {
                let ent = change.entitlement.clone().unwrap();
                seen.push((ent.app_id, ent.entitlement_id, change.kind));
            }
            if message.cursor == binding_cursor {
                break;
            }
        }
        match &sequences[filter] {
            None => sequences[filter] = Some(seen),
            Some(first) => assert_eq!(&seen, first, "watchers of one filter agree"),
        }
    }
    let [all, app, one] = sequences.map(Option::unwrap);
    assert_eq!(all.len(), 16, "15 puts and a binding");
    assert_eq!(
        app.len(),
        11,
        "the puts of fan/e0 and fan/e1, and the binding into fan/e9"
    );
    assert!(app.iter().all(|(app, ..)| app == "fan"));
    assert_eq!(one.len(), 5);
    assert!(one.iter().all(|(app, id, _)| app == "fan" && id == "e1"));
}
