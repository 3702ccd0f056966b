//! The consistency modes across two PostgreSQL replicas, through gRPC: `at_least_as_fresh` with
//! a write's cursor reads that write on the other replica, `fully_consistent` sees it at once,
//! `minimize_latency` may lag but never goes backwards; a replica whose change feed connection
//! is killed again and again notices, reconnects and catches up, and its `fully_consistent`
//! reads never serve stale data meanwhile.
//!
//! The tests skip (printing why) without `PROVISIOND_TEST_POSTGRES_URL`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::postgres::{self, TestSchema, client_of};
use common::*;
use provisiond::pb;
use provisiond::pb::consistency::Requirement;
use provisiond::policy::tokens::Cursor;

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

fn seq(cursor: &str) -> u64 {
    Cursor::decode(cursor).expect("a cursor").seq
}

/// Get of the current revision with `requirement`: (revision, served_at's position).
async fn get(
    client: &mut Client,
    entitlement: &pb::EntitlementRef,
    requirement: Requirement,
) -> (i64, u64) {
    let response = client
        .get_provision_policy(pb::GetProvisionPolicyRequest {
            entitlement: Some(entitlement.clone()),
            revision: 0,
            consistency: Some(pb::Consistency {
                requirement: Some(requirement),
            }),
        })
        .await
        .expect("get")
        .into_inner();
    (
        response.policy.expect("policy").revision,
        seq(&response.served_at),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_is_read_on_the_other_with_its_cursor_and_fully_consistent() {
    let schema = schema_or_skip!();
    let url = schema.store_url();
    let (a, b) = (
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    );
    let (mut on_a, mut on_b) = (client_of(&a).await, client_of(&b).await);
    let key = entitlement("fresh", "e");
    for n in 1..=40 {
        let written = set_webhook(&mut on_a, &key, &format!("hook-{n}")).await;
        let revision = written.policy.as_ref().unwrap().revision;
        assert_eq!(revision, n);
        // Read your write on the other replica: with the cursor, and fully consistent, both at
        // once (no sleep, no retry).
        let cursor = Requirement::AtLeastAsFresh(written.change_cursor.clone());
        let (read, served_at) = get(&mut on_b, &key, cursor).await;
        assert_eq!(read, revision, "at_least_as_fresh on B, write {n}");
        assert!(served_at >= seq(&written.change_cursor));
        let (read, served_at) = get(&mut on_b, &key, Requirement::FullyConsistent(true)).await;
        assert_eq!(read, revision, "fully_consistent on B, write {n}");
        assert!(served_at >= seq(&written.change_cursor));
        // The default is fully consistent too.
        let plain = on_b
            .get_provision_policy(get_request(key.clone(), 0))
            .await
            .expect("get")
            .into_inner();
        assert_eq!(
            plain.policy.unwrap().revision,
            revision,
            "unset consistency"
        );
    }
    // A listing and a validate honour the cursor as well.
    let written = set_webhook(&mut on_a, &entitlement("fresh", "listed"), "hook").await;
    let listing = on_b
        .list_provision_policies(pb::ListProvisionPoliciesRequest {
            app_id: "fresh".into(),
            consistency: Some(pb::Consistency {
                requirement: Some(Requirement::AtLeastAsFresh(written.change_cursor.clone())),
            }),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listing.policies.len(), 2, "the listing has the write");
    assert!(seq(&listing.read_at) >= seq(&written.change_cursor));
    // A cursor past the log is refused, naming the head.
    let ahead = Cursor {
        seq: seq(&written.change_cursor) + 1000,
        ..Cursor::decode(&written.change_cursor).unwrap()
    }
    .encode();
    let status = on_b
        .get_provision_policy(pb::GetProvisionPolicyRequest {
            entitlement: Some(key.clone()),
            revision: 0,
            consistency: Some(pb::Consistency {
                requirement: Some(Requirement::AtLeastAsFresh(ahead)),
            }),
        })
        .await
        .expect_err("a cursor ahead");
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert_eq!(error_reason(&status), "CURSOR_AHEAD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimize_latency_may_lag_but_never_goes_backwards_on_one_connection() {
    const WRITES: i64 = 60;
    let schema = schema_or_skip!();
    let url = schema.store_url();
    let (a, b) = (
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    );
    let (mut on_a, mut on_b) = (client_of(&a).await, client_of(&b).await);
    let key = entitlement("lag", "e");
    let first = set_webhook(&mut on_a, &key, "hook-0").await;
    // Wait for B to have the key at all (its memory may lag).
    let cursor = Requirement::AtLeastAsFresh(first.change_cursor);
    get(&mut on_b, &key, cursor).await;
    let writer = tokio::spawn({
        let key = key.clone();
        async move {
            for n in 1..WRITES {
                set_webhook(&mut on_a, &key, &format!("hook-{n}")).await;
            }
        }
    });
    let (mut last_revision, mut last_at, mut reads) = (0, 0, 0);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while last_revision < WRITES {
        let (revision, at) = get(&mut on_b, &key, Requirement::MinimizeLatency(true)).await;
        assert!(
            revision >= last_revision,
            "revision went back: {last_revision} then {revision}"
        );
        assert!(at >= last_at, "served_at went back: {last_at} then {at}");
        (last_revision, last_at) = (revision, at);
        reads += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "B stayed at revision {last_revision}"
        );
    }
    writer.await.unwrap();
    println!("{reads} minimize_latency reads on B while A wrote {WRITES} revisions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_change_feed_reconnects_and_fully_consistent_reads_never_serve_stale_data() {
    let schema = Arc::new(schema_or_skip!());
    let url = schema.store_url();
    let (a, b) = (
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    );
    let (mut on_a, mut on_b) = (client_of(&a).await, client_of(&b).await);
    let key = entitlement("stall", "e");
    let first = set_webhook(&mut on_a, &key, "hook-0").await;
    get(
        &mut on_b,
        &key,
        Requirement::AtLeastAsFresh(first.change_cursor),
    )
    .await;
    assert_eq!(
        feed_sessions(&schema).await.len(),
        2,
        "each replica has its feed"
    );

    // Keep killing every feed connection for a while: the replicas' memory cannot follow.
    let killing = Arc::new(AtomicBool::new(true));
    let killer = tokio::spawn({
        let (schema, killing) = (Arc::clone(&schema), Arc::clone(&killing));
        async move {
            let mut killed = 0;
            while killing.load(Ordering::Relaxed) {
                killed += terminate_feeds(&schema).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            killed
        }
    });
    let mut revision = 1;
    for n in 1..=15 {
        let written = set_webhook(&mut on_a, &key, &format!("hook-{n}")).await;
        revision = written.policy.unwrap().revision;
        let (read, served_at) = get(&mut on_b, &key, Requirement::FullyConsistent(true)).await;
        assert_eq!(
            read, revision,
            "fully_consistent on B while its feed is down, write {n}"
        );
        assert!(served_at >= seq(&written.change_cursor));
        let cursor = Requirement::AtLeastAsFresh(written.change_cursor);
        assert_eq!(
            get(&mut on_b, &key, cursor).await.0,
            revision,
            "at_least_as_fresh, write {n}"
        );
    }
    killing.store(false, Ordering::Relaxed);
    let killed = killer.await.unwrap();
    assert!(killed >= 2, "the test killed feed connections: {killed}");

    // Noticed and made again: both feeds are back, on new sessions, and B's memory catches up
    // without being asked for a cursor.
    let deadline = tokio::time::Instant::now() + LIMIT;
    while feed_sessions(&schema).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the feeds did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let (read, _) = get(&mut on_b, &key, Requirement::MinimizeLatency(true)).await;
        if read == revision {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "B's memory stayed at {read}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, log) = b.terminate();
    assert!(
        log.iter()
            .any(|line| line.contains("change feed connection failed; reconnecting")),
        "B logged the lost feed: {log:#?}"
    );
    drop(a);
}

/// The backend pids of the replicas' change feed sessions, which name themselves in their
/// statements.
async fn feed_sessions(schema: &TestSchema) -> Vec<i32> {
    schema
        .client()
        .await
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE application_name = $1
               AND (query LIKE 'LISTEN %' OR query LIKE '%provisiond change feed%')",
            &[&schema.application_name()],
        )
        .await
        .expect("feed sessions")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn terminate_feeds(schema: &TestSchema) -> i64 {
    schema
        .client()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
             FROM pg_stat_activity
             WHERE application_name = $1
               AND (query LIKE 'LISTEN %' OR query LIKE '%provisiond change feed%')",
            &[&schema.application_name()],
        )
        .await
        .expect("terminate feeds")
        .get(0)
}
