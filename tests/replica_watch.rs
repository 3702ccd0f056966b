//! The change log across PostgreSQL replicas, through gRPC: a write through one replica reaches
//! a watcher on another promptly; writers on two replicas, one of them held mid-transaction,
//! leave no gap and no reordering in any watcher's sequence; a replica's shutdown ends its
//! watches so that they resume on another without loss or repetition.
//!
//! The tests skip (printing why) without `PROVISIOND_TEST_POSTGRES_URL`.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::postgres::{self, TestSchema, client_of};
use common::*;
use provisiond::pb;
use tonic::{Code, Streaming};

/// Bounds a hang only.
const LIMIT: Duration = Duration::from_secs(30);

macro_rules! schema_or_skip {
    () => {
        match TestSchema::create() {
            Some(schema) => schema,
            None => return,
        }
    };
}

type Stream = Streaming<pb::WatchProvisionPoliciesResponse>;

async fn watch(client: &mut Client, start_cursor: &str) -> Stream {
    let request = pb::WatchProvisionPoliciesRequest {
        start_cursor: start_cursor.to_owned(),
        checkpoint_interval: Some(prost_types::Duration {
            seconds: 0,
            nanos: 200_000_000,
        }),
        ..Default::default()
    };
    client
        .watch_provision_policies(request)
        .await
        .expect("watch")
        .into_inner()
}

async fn next(stream: &mut Stream) -> pb::WatchProvisionPoliciesResponse {
    tokio::time::timeout(LIMIT, stream.message())
        .await
        .expect("a message in time")
        .expect("no error")
        .expect("open")
}

async fn head(client: &mut Client) -> String {
    client
        .list_provision_policies(pb::ListProvisionPoliciesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .read_at
}

/// Every (entitlement, revision) a stream delivers until it reaches `until`, in order.
async fn collect_until(stream: &mut Stream, until: &str) -> Vec<(String, i64)> {
    let mut seen = Vec::new();
    let mut cursors = HashSet::new();
    loop {
        let message = next(stream).await;
        if !message.checkpoint {
            assert!(cursors.insert(message.cursor.clone()), "a cursor twice");
            for change in &message.changes {
                let id = change.entitlement.clone().unwrap().entitlement_id;
                seen.push((id, change.revision));
            }
        }
        if message.cursor == until {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_reaches_a_watcher_on_the_other_within_a_second() {
    let schema = schema_or_skip!();
    let url = schema.store_url();
    let (a, b) = (
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    );
    let (mut writer, mut reader) = (client_of(&a).await, client_of(&b).await);
    let mut stream = watch(&mut reader, "").await;
    let mut latencies = Vec::new();
    for n in 0..20 {
        let ent = entitlement("across", &format!("e{n}"));
        let sent = Instant::now();
        let written = writer
            .set_provision_policy(set_request(resource(ent, webhook("hook")), ""))
            .await
            .expect("set on A")
            .into_inner();
        loop {
            let message = next(&mut stream).await;
            if message.cursor == written.change_cursor {
                assert_eq!(message.changes.len(), 1);
                break;
            }
            assert!(
                message.checkpoint,
                "only this write is committed: {message:?}"
            );
        }
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    println!(
        "write on A to delivery on B: median {median:?}, max {:?}",
        latencies.last()
    );
    assert!(median < Duration::from_secs(1), "median {median:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_two_replicas_with_one_held_mid_transaction_leave_no_gap() {
    const PER_WRITER: usize = 15;
    let schema = schema_or_skip!();
    let url = schema.store_url();
    let replicas = [
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    ];
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(client_of(replica).await);
    }
    let start = head(&mut clients[0]).await;
    let mut watchers = Vec::new();
    for client in &mut clients {
        watchers.push(watch(client, &start).await);
    }

    // Hold the log's head row: the first writer to reach it waits inside its transaction,
    // holding the write lock, with its check done; every other writer queues behind it.
    let holder = schema.client().await;
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .batch_execute(&format!(
            "SELECT head FROM {}.provisiond_log FOR UPDATE",
            schema.name
        ))
        .await
        .unwrap();
    let mut writers = Vec::new();
    for writer in 0..4 {
        let mut client = clients[writer % 2].clone();
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..PER_WRITER {
                let ent = entitlement("held", &format!("w{writer}"));
                let written = client
                    .set_provision_policy(set_request(resource(ent, webhook(&format!("n{n}"))), ""))
                    .await
                    .expect("set")
                    .into_inner();
                acknowledged.push((format!("w{writer}"), written.policy.unwrap().revision));
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.batch_execute("COMMIT").await.unwrap();
    let mut acknowledged = HashSet::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let end = head(&mut clients[1]).await;
    let mut sequences = Vec::new();
    for mut watcher in watchers {
        let seen = collect_until(&mut watcher, &end).await;
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "nothing twice");
        assert_eq!(
            unique, acknowledged,
            "every acknowledged write, nothing else"
        );
        let mut last: HashMap<String, i64> = HashMap::new();
        for (key, revision) in &seen {
            let previous = last.insert(key.clone(), *revision).unwrap_or(0);
            assert_eq!(*revision, previous + 1, "{key} in order");
        }
        sequences.push(seen);
    }
    assert_eq!(
        sequences[0], sequences[1],
        "both replicas tell the same order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_ended_by_a_replicas_shutdown_resume_on_another_without_loss() {
    let schema = schema_or_skip!();
    let url = schema.store_url();
    let (a, b) = (
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    );
    let (mut on_a, mut on_b) = (client_of(&a).await, client_of(&b).await);
    let start = head(&mut on_b).await;
    let mut streams = Vec::new();
    for _ in 0..100 {
        streams.push(watch(&mut on_a, &start).await);
    }
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let ent = entitlement("moved", &format!("e{n}"));
        let written = on_b
            .set_provision_policy(set_request(resource(ent, webhook("hook")), ""))
            .await
            .unwrap()
            .into_inner();
        acknowledged.push((format!("e{n}"), written.policy.unwrap().revision));
    }
    // Let some streams read part of it, then stop A.
    let mut first_seen: Vec<Vec<(String, i64)>> = Vec::new();
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut seen = Vec::new();
        for _ in 0..(i % 4) {
            let message = next(stream).await;
            for change in &message.changes {
                seen.push((
                    change.entitlement.clone().unwrap().entitlement_id,
                    change.revision,
                ));
            }
        }
        first_seen.push(seen);
    }
    drop(on_a);
    let (status, _) = a.terminate();
    assert!(status.success());
    for n in 5..8 {
        let ent = entitlement("moved", &format!("e{n}"));
        let written = on_b
            .set_provision_policy(set_request(resource(ent, webhook("hook")), ""))
            .await
            .unwrap()
            .into_inner();
        acknowledged.push((format!("e{n}"), written.policy.unwrap().revision));
    }
    let end = head(&mut on_b).await;
    for (mut stream, mut seen) in streams.into_iter().zip(first_seen) {
        // The rest of what A sent, then its final checkpoint, then SHUTTING_DOWN.
        let mut resume_at = start.clone();
        loop {
            match tokio::time::timeout(LIMIT, stream.message()).await.unwrap() {
                Ok(Some(message)) => {
                    for change in &message.changes {
                        seen.push((
                            change.entitlement.clone().unwrap().entitlement_id,
                            change.revision,
                        ));
                    }
                    resume_at = message.cursor;
                }
                Ok(None) => panic!("a watch never ends with OK"),
                Err(status) => {
                    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                    assert_eq!(error_reason(&status), "SHUTTING_DOWN");
                    break;
                }
            }
        }
        let mut resumed = watch(&mut on_b, &resume_at).await;
        seen.extend(collect_until(&mut resumed, &end).await);
        assert_eq!(seen, acknowledged, "nothing lost, nothing twice");
    }
}
