//! The change log across replicas: other stores' subscribers learn of a commit (with LISTEN and
//! by polling alone), numbering stays gap-free and in commit order while a replica holds its
//! transaction open, and an older schema gets a log of its revisions in write order.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::super::locks::LockKey;
use super::super::schema;
use super::{PostgresStore, TestSchema, key};
use crate::store::contract::{put, resource, written};
use crate::store::{PolicyQuery, Store, StoreError, Write, WriteOutcome};

/// Long enough for a lost notification's fallback poll on a loaded machine.
const SEEN_WITHIN: Duration = Duration::from_secs(10);

async fn replica(schema: &TestSchema, listen: bool) -> PostgresStore {
    let config = schema.config();
    let tls = super::super::tls::for_config(&config).unwrap();
    PostgresStore::open_config_with(config, tls, listen)
        .await
        .unwrap()
}

/// Waits until `store`'s subscribers have seen `seq`.
async fn wait_for_head(store: &PostgresStore, seq: u64) {
    let mut heads = store.subscribe();
    tokio::time::timeout(SEEN_WITHIN, heads.wait_for(|head| *head >= seq))
        .await
        .unwrap_or_else(|_| panic!("head {seq} not seen within {SEEN_WITHIN:?}"))
        .unwrap();
}

async fn log_seqs(store: &PostgresStore) -> Vec<u64> {
    let log = store.read_changes(0, 10_000).await.unwrap();
    log.iter().map(|set| set.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_one_replica_reaches_the_subscribers_of_another() {
    for listen in [true, false] {
        let schema = schema_or_skip!();
        let a = schema.open().await;
        let b = replica(&schema, listen).await;
        for n in 1..=3 {
            let record = written(&a, put(resource(&key(0), &format!("hook-{n}")))).await;
            assert_eq!(record.change_seq, n);
            wait_for_head(&b, n).await;
            let log = b.read_changes(n - 1, 10).await.unwrap();
            assert_eq!(log.len(), 1, "listen: {listen}");
            assert_eq!(log[0].seq, n);
            assert_eq!(log[0].changes[0].revision, i64::try_from(n).unwrap());
        }
        assert_eq!(b.head().await.unwrap(), 3);
        // a listens as well; b's writes are announced to a.
        wait_for_listeners(&schema, if listen { 2 } else { 1 }).await;
        let record = written(&b, put(resource(&key(1), "hook-b"))).await;
        wait_for_head(&a, record.change_seq).await;
        a.close().await.unwrap();
        b.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_is_made_again() {
    let schema = schema_or_skip!();
    let a = schema.open().await;
    let b = schema.open().await;
    wait_for_listeners(&schema, 2).await;
    assert!(schema.terminate_sessions().await >= 2);
    wait_for_listeners(&schema, 2).await;
    let record = written(&a, put(resource(&key(0), "hook"))).await;
    wait_for_head(&b, record.change_seq).await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Waits until exactly `expected` sessions of the stores of `schema` listen.
async fn wait_for_listeners(schema: &TestSchema, expected: i64) {
    let mut listening = 0;
    for _ in 0..100 {
        listening = listening_sessions(schema).await;
        if listening == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listening, expected, "listening sessions");
}

/// The stores' feed sessions of `schema` that listen: their last statement was the LISTEN or
/// one of the feed's own, which say so.
async fn listening_sessions(schema: &TestSchema) -> i64 {
    let client = schema.client().await;
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = $1
               AND (query LIKE 'LISTEN %' OR query LIKE '%provisiond change feed, listening%')",
            &[&schema.application_name()],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_holding_its_transaction_open_leaves_no_gap_and_keeps_its_place() {
    let schema = schema_or_skip!();
    let a = Arc::new(schema.open().await);
    let b = Arc::new(schema.open().await);
    const B_WRITES: u64 = 5;
    let total = B_WRITES + 1;

    // Reads b's log from its last seen position while the writes go on.
    let watcher = tokio::spawn({
        let b = Arc::clone(&b);
        async move {
            let mut seen = Vec::new();
            let mut last = 0;
            while last < total {
                for set in b.read_changes(last, 100).await.unwrap() {
                    assert_eq!(set.seq, last + 1, "every position once, in order");
                    last = set.seq;
                    seen.push(set.seq);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        }
    });

    a.run_on_writer(|session| {
        // After a's write took its position, before it commits.
        session.before_commit = Some(Box::new(|_| std::thread::sleep(Duration::from_secs(1))));
    });
    let held = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.write(put(resource(&key(0), "hook-held"))).await }
    });
    // Long enough for a's batch to take the lock and its position.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut writes = JoinSet::new();
    for n in 1..=B_WRITES {
        let b = Arc::clone(&b);
        writes
            .spawn(async move { written(&*b, put(resource(&key(1), &format!("hook-{n}")))).await });
    }
    let first = match held.await.unwrap() {
        Ok(WriteOutcome::Written { record, .. }) => record,
        other => panic!("expected Written, got {other:?}"),
    };
    assert_eq!(first.change_seq, 1, "a took its position first");
    let mut later = BTreeSet::new();
    while let Some(joined) = writes.join_next().await {
        later.insert(joined.unwrap().change_seq);
    }
    assert_eq!(
        later,
        (2..=total).collect(),
        "b's writes wait for a's commit"
    );

    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(log_seqs(&a).await, expected);
    assert_eq!(log_seqs(&b).await, expected);
    let log = b.read_changes(0, 1).await.unwrap();
    assert_eq!(log[0].changes[0].entitlement, Some(key(0)));
    assert_eq!(watcher.await.unwrap(), expected);
    wait_for_head(&a, total).await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_replicas_fill_the_log_without_gaps() {
    let schema = schema_or_skip!();
    let stores = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    let mut tasks = JoinSet::new();
    for writer in 0..4 {
        let store = Arc::clone(&stores[writer % 2]);
        tasks.spawn(async move {
            let key = key(writer);
            let mut acknowledged = Vec::new();
            for n in 0..20 {
                let record = written(&*store, put(resource(&key, &format!("hook-{n}")))).await;
                acknowledged.push((record.change_seq, key.clone(), record.revision));
            }
            acknowledged
        });
    }
    let mut acknowledged = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        acknowledged.extend(joined.unwrap());
    }
    let expected: Vec<u64> = (1..=80).collect();
    for store in &stores {
        assert_eq!(log_seqs(store).await, expected, "gap-free, in order");
    }
    let seqs: BTreeSet<u64> = acknowledged.iter().map(|(seq, ..)| *seq).collect();
    assert_eq!(seqs.len(), 80, "each write its own entry");
    let log = stores[1].read_changes(0, 100).await.unwrap();
    for (seq, key, revision) in acknowledged {
        let change = &log[usize::try_from(seq - 1).unwrap()].changes[0];
        assert_eq!(
            (change.entitlement.as_ref(), change.revision),
            (Some(&key), revision)
        );
    }
    for store in &stores {
        wait_for_head(store, 80).await;
        store.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_writes_on_two_replicas_have_one_winner() {
    let schema = schema_or_skip!();
    let stores = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    let mut tasks = JoinSet::new();
    for n in 0..16 {
        let store = Arc::clone(&stores[n % 2]);
        tasks.spawn(async move {
            store
                .write(Write {
                    create_only: true,
                    ..put(resource(&key(0), &format!("hook-{n}")))
                })
                .await
        });
    }
    let mut winners = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(WriteOutcome::Written { record, .. }) => {
                assert_eq!((record.revision, record.change_seq), (1, 1));
                winners += 1;
            }
            Err(StoreError::AlreadyExists) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(stores[0].head().await.unwrap(), 1);
    for store in &stores {
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn an_older_schema_gets_a_change_log_of_its_revisions_in_write_order() {
    let schema = schema_or_skip!();
    let (a, b) = (key(0), key(1));
    let encode = prost::Message::encode_to_vec;
    let mut client = schema.client().await;
    schema::migrate_to(&mut client, LockKey::migrate(&schema.name), 1)
        .await
        .unwrap();
    // Revision 1 of each at 1 s, then b's revision 2 at 3 s and a's at 5 s.
    for (key, revision, hook, time) in [
        (&a, 1_i64, "a-1", 1_000_000_i64),
        (&b, 1, "b-1", 1_000_000),
        (&b, 2, "b-2", 3_000_000),
        (&a, 2, "a-2", 5_000_000),
    ] {
        let bytes = encode(&resource(key, hook));
        client
            .execute(
                "INSERT INTO revisions VALUES ($1, $2, $3, $4, $5)",
                &[&key.app_id, &key.entitlement_id, &revision, &bytes, &time],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO policies VALUES ($1, $2, $3, $4, $5, $5)
                 ON CONFLICT (app_id, entitlement_id) DO UPDATE SET
                   resource = excluded.resource, revision = excluded.revision,
                   update_time = excluded.update_time",
                &[&key.app_id, &key.entitlement_id, &bytes, &revision, &time],
            )
            .await
            .unwrap();
    }

    let store = schema.open().await;
    assert_eq!(store.head().await.unwrap(), 4);
    assert_eq!(*store.subscribe().borrow(), 4);
    assert_eq!(store.store_id().len(), 32);
    let log = store.read_changes(0, 10).await.unwrap();
    let order: Vec<(String, i64)> = log
        .iter()
        .map(|set| {
            let change = &set.changes[0];
            let key = change.entitlement.clone().unwrap();
            (key.entitlement_id, change.revision)
        })
        .collect();
    let (a_id, b_id) = (a.entitlement_id.clone(), b.entitlement_id.clone());
    assert_eq!(
        order,
        [(a_id.clone(), 1), (b_id.clone(), 1), (b_id, 2), (a_id, 2)]
    );
    let current = store.get(&a, None).await.unwrap().unwrap();
    assert_eq!(current.change_seq, 4);
    assert_eq!(log[3].changes[0].policy, Some(current.into_resource()));
    // A listing between the writes shows the state then.
    let then = store
        .list_policies(PolicyQuery {
            app_id: None,
            at: 3,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        then.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [1, 2],
        "a at revision 1, b at revision 2"
    );
    // The history is append-only again, and the log goes on from the backfill.
    let err = client
        .batch_execute("UPDATE revisions SET revision = 9")
        .await
        .unwrap_err();
    assert!(super::super::error::chain(&err).contains("append-only"));
    assert_eq!(
        written(&store, put(resource(&b, "b-3"))).await.change_seq,
        5
    );
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_change_log_is_append_only() {
    let schema = schema_or_skip!();
    let store = schema.open().await;
    written(&store, put(resource(&key(0), "hook"))).await;
    let client = schema.client().await;
    for statement in [
        "UPDATE changes SET commit_time = 0",
        "DELETE FROM changes",
        "TRUNCATE changes",
    ] {
        let err = client.batch_execute(statement).await.unwrap_err();
        let message = super::super::error::chain(&err);
        assert!(message.contains("append-only"), "{statement}: {message}");
    }
    store.close().await.unwrap();
}
