//! Several provisiond processes (replicas) on one PostgreSQL database, as operators run them:
//! no update is lost across replicas, crossed delegations never both stand, sessions ended by
//! the server cost UNAVAILABLE at worst and no acknowledged write, and an unreachable database
//! stops the start with a clear message.
//!
//! The tests that need a server skip (printing why) without `PROVISIOND_TEST_POSTGRES_URL`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::postgres::{self, Started, TestSchema, client_of};
use common::*;
use provisiond::pb;
use tokio::task::JoinSet;
use tonic::Code;

macro_rules! schema_or_skip {
    () => {
        match TestSchema::create() {
            Some(schema) => schema,
            None => return,
        }
    };
}

fn counter(value: u64) -> pb::ProvisionPolicy {
    webhook(&format!("count-{value}"))
}

fn count_of(policy: &pb::EntitlementProvisionPolicy) -> u64 {
    match policy
        .provision_policy
        .as_ref()
        .and_then(|p| p.typ.as_ref())
    {
        Some(pb::provision_policy::Typ::Webhook(hook)) => hook
            .webhook_id
            .strip_prefix("count-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a counter: {}", hook.webhook_id)),
        other => panic!("not a counter: {other:?}"),
    }
}

async fn current(
    client: &mut Client,
    entitlement: &pb::EntitlementRef,
) -> pb::EntitlementProvisionPolicy {
    client
        .get_provision_policy(get_request(entitlement.clone(), 0))
        .await
        .expect("get")
        .into_inner()
        .policy
        .expect("policy")
}

/// 16 clients, half on each replica, each doing 100 read-modify-write increments of one
/// counter (Get, +1, Set with the etag, again on ABORTED).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_modify_write_across_two_replicas_loses_no_update() {
    const CLIENTS: usize = 16;
    const INCREMENTS: u64 = 100;
    let schema = schema_or_skip!();
    let url = schema.store_url();
    let replicas = [
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    ];
    let key = entitlement("github", "counter");
    let mut first = client_of(&replicas[0]).await;
    first
        .set_provision_policy(set_request(resource(key.clone(), counter(0)), ""))
        .await
        .expect("create the counter");

    let mut clients = JoinSet::new();
    for n in 0..CLIENTS {
        let mut client = client_of(&replicas[n % 2]).await;
        let key = key.clone();
        clients.spawn(async move {
            // (revision, value) of every acknowledged Set, and how many were ABORTED.
            let (mut acknowledged, mut aborted) = (Vec::new(), 0_u64);
            while (acknowledged.len() as u64) < INCREMENTS {
                let seen = current(&mut client, &key).await;
                let next = resource(key.clone(), counter(count_of(&seen) + 1));
                match client
                    .set_provision_policy(set_request(next, &seen.etag))
                    .await
                {
                    Ok(response) => {
                        let stored = response.into_inner().policy.expect("policy");
                        assert_eq!(stored.revision, seen.revision + 1);
                        acknowledged.push((stored.revision, count_of(&stored)));
                    }
                    Err(status) if status.code() == Code::Aborted => aborted += 1,
                    Err(status) => panic!("client {n}: a conflict must be ABORTED: {status:?}"),
                }
            }
            (acknowledged, aborted)
        });
    }
    let mut acknowledged = BTreeMap::new();
    let mut aborted = 0;
    while let Some(joined) = clients.join_next().await {
        let (acks, conflicts) = joined.expect("client task");
        aborted += conflicts;
        for (revision, value) in acks {
            let earlier = acknowledged.insert(revision, value);
            assert_eq!(earlier, None, "revision {revision} acknowledged twice");
        }
    }

    let successes = CLIENTS as u64 * INCREMENTS;
    assert_eq!(acknowledged.len() as u64, successes);
    // Revision 1 is the create; every acknowledged Set made exactly the next one.
    let expected: Vec<_> = (2..=successes as i64 + 1).collect();
    assert_eq!(acknowledged.keys().copied().collect::<Vec<_>>(), expected);
    for (revision, value) in &acknowledged {
        assert_eq!(*value as i64, revision - 1, "revision {revision}");
    }
    for replica in &replicas {
        let last = current(&mut client_of(replica).await, &key).await;
        assert_eq!(last.revision, successes as i64 + 1);
        assert_eq!(count_of(&last), successes, "no update lost");
    }
    eprintln!("{successes} increments, {aborted} ABORTED conflicts");
    for replica in replicas {
        assert!(replica.terminate().0.success());
    }
}

fn delegated_to(target: &pb::EntitlementRef) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy {
        typ: Some(pb::provision_policy::Typ::Delegated(
            pb::DelegatedProvision {
                app_id: target.app_id.clone(),
                entitlement_id: target.entitlement_id.clone(),
                implicit: true,
            },
        )),
    }
}

/// Whether a cycle closed through another replica's write is reported.
async fn refuses_cycles(first: &mut Client, second: &mut Client) -> bool {
    let (p, q) = (entitlement("probe", "p"), entitlement("probe", "q"));
    first
        .set_provision_policy(set_request(resource(p.clone(), delegated_to(&q)), ""))
        .await
        .expect("set the probe");
    let answer = second
        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
            consistency: None,
            policy: Some(resource(q, delegated_to(&p))),
        })
        .await
        .expect("validate the probe")
        .into_inner();
    answer
        .violations
        .iter()
        .any(|violation| violation.reason == "DELEGATION_CYCLE")
}

/// A→B on one replica and B→A on the other, at once: never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossed_delegations_on_two_replicas_never_both_succeed() {
    const ROUNDS: usize = 30;
    let schema = schema_or_skip!();
    let url = schema.store_url();
    let replicas = [
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    ];
    let mut one = client_of(&replicas[0]).await;
    let mut other = client_of(&replicas[1]).await;
    assert!(
        refuses_cycles(&mut one, &mut other).await,
        "a cycle across replicas is reported"
    );
    for round in 0..ROUNDS {
        let a = entitlement("app", &format!("a-{round}"));
        let b = entitlement("app", &format!("b-{round}"));
        let (a_to_b, b_to_a) = tokio::join!(
            one.set_provision_policy(set_request(resource(a.clone(), delegated_to(&b)), "")),
            other.set_provision_policy(set_request(resource(b.clone(), delegated_to(&a)), "")),
        );
        let outcomes = [a_to_b.map(|_| ()), b_to_a.map(|_| ())];
        let succeeded = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
        assert_eq!(succeeded, 1, "round {round}: {outcomes:?}");
        for outcome in &outcomes {
            if let Err(status) = outcome {
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "round {round}: {status:?}"
                );
            }
        }
    }
}

/// A binding deleted on one replica while a delegation relying on it is Set on the other: the
/// store never ends with the delegation stored and its binding gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_deleted_on_one_replica_while_the_other_delegates_never_dangles() {
    const ROUNDS: usize = 30;
    let schema = schema_or_skip!();
    let url = schema.store_url();
    let replicas = [
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    ];
    let mut one = client_of(&replicas[0]).await;
    let mut other = client_of(&replicas[1]).await;
    let (mut deletes_won, mut sets_won) = (0, 0);
    for round in 0..ROUNDS {
        let target = entitlement("app", &format!("target-{round}"));
        let delegating = entitlement("app", &format!("delegating-{round}"));
        let bound = pb::CreateProxyBindingRequest {
            binding: Some(pb::ProxyBinding {
                source: Some(target.clone()),
                destination: Some(delegating.clone()),
                ..Default::default()
            }),
        };
        one.create_proxy_binding(bound).await.expect("bind");
        let mut relying = delegated_to(&target);
        if let Some(pb::provision_policy::Typ::Delegated(d)) = &mut relying.typ {
            d.implicit = false; // it relies on the existing binding
        }
        let delete = pb::DeleteProxyBindingRequest {
            source: Some(target.clone()),
            destination: Some(delegating.clone()),
        };
        let (deleted, set) = tokio::join!(
            one.delete_proxy_binding(delete),
            other.set_provision_policy(set_request(resource(delegating.clone(), relying), "")),
        );
        deletes_won += usize::from(deleted.is_ok());
        sets_won += usize::from(set.is_ok());
        let listed = other
            .list_proxy_bindings(pb::ListProxyBindingsRequest {
                source: Some(target.clone()),
                destination: Some(delegating.clone()),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        let stored = other
            .get_provision_policy(get_request(delegating.clone(), 0))
            .await;
        if stored.is_ok() {
            assert_eq!(
                listed.bindings.len(),
                1,
                "round {round}: delegation without binding"
            );
        }
        assert!(
            deleted.is_ok() != set.is_ok(),
            "round {round}: exactly one of delete and set stands: {deleted:?} / {set:?}"
        );
    }
    eprintln!("deletes won {deletes_won}, sets won {sets_won} of {ROUNDS}");
}

/// Unreachable at start: a clear message and a non-zero exit, no retry (a supervisor restarts
/// the process). Needs no database.
#[test]
fn an_unreachable_database_stops_the_start_with_a_clear_message() {
    let url = "postgres://provisiond:secret-password@127.0.0.1:1/nowhere?connect_timeout=5";
    match postgres::start(url) {
        Started::Listening(_) => panic!("provisiond served without its database"),
        Started::Exited { status, log } => {
            assert!(!status.success(), "exit status {status}");
            let log = log.join("\n");
            assert!(
                log.contains("cannot connect to PostgreSQL at 127.0.0.1:1"),
                "{log}"
            );
            assert!(
                !log.contains("secret-password"),
                "the password leaked: {log}"
            );
        }
    }
}

/// A mistyped store is refused at start without echoing what may be a password.
#[test]
fn an_unknown_store_is_refused_without_echoing_it() {
    match postgres::start("postgress://provisiond:secret-password@127.0.0.1/db") {
        Started::Listening(_) => panic!("provisiond served an unknown store"),
        Started::Exited { status, log } => {
            assert!(!status.success(), "exit status {status}");
            let log = log.join("\n");
            assert!(log.contains("unknown store"), "{log}");
            assert!(
                !log.contains("secret-password"),
                "the password leaked: {log}"
            );
        }
    }
}

/// Sessions ended by the server under load (an operator's `pg_terminate_backend`, a failover):
/// every RPC answers OK or UNAVAILABLE, no acknowledged write is lost, and both replicas serve
/// again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_sessions_cost_unavailable_at_worst_and_no_acknowledged_write() {
    const KILLS: usize = 4;
    const WRITERS: usize = 4;
    /// Acknowledged writes between two kills.
    const PROGRESS: usize = 10;
    let schema = schema_or_skip!();
    let url = schema.store_url();
    let replicas = [
        postgres::start_listening(&url),
        postgres::start_listening(&url),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let (progress, mut acknowledged_so_far) = tokio::sync::watch::channel(0_usize);
    let progress = Arc::new(progress);
    let mut writers = JoinSet::new();
    for n in 0..WRITERS {
        let mut client = client_of(&replicas[n % 2]).await;
        let (stop, progress) = (Arc::clone(&stop), Arc::clone(&progress));
        writers.spawn(async move {
            let key = entitlement("app", &format!("writer-{n}"));
            let (mut acknowledged, mut unavailable) = (Vec::new(), 0_usize);
            let mut attempt = 0_usize;
            while !stop.load(Ordering::Relaxed) {
                attempt += 1;
                let hook = format!("w{n}-{attempt}");
                let set = client
                    .set_provision_policy(set_request(resource(key.clone(), webhook(&hook)), ""))
                    .await;
                match set {
                    Ok(response) => {
                        let revision = response.into_inner().policy.expect("policy").revision;
                        acknowledged.push((revision, hook));
                        progress.send_modify(|count| *count += 1);
                    }
                    Err(status) if status.code() == Code::Unavailable => unavailable += 1,
                    Err(status) => panic!("writer {n}: UNAVAILABLE at worst, got {status:?}"),
                }
                match client
                    .get_provision_policy(get_request(key.clone(), 0))
                    .await
                {
                    Ok(_) => {}
                    Err(status) if status.code() == Code::Unavailable => unavailable += 1,
                    Err(status) if status.code() == Code::NotFound && acknowledged.is_empty() => {}
                    Err(status) => panic!("writer {n}: UNAVAILABLE at worst, got {status:?}"),
                }
            }
            (key, acknowledged, unavailable)
        });
    }

    // Kill on progress, not on a clock; the timeout only bounds a hang.
    let killing = async {
        let mut ended = 0;
        for kill in 1..=KILLS {
            acknowledged_so_far
                .wait_for(|count| *count >= kill * PROGRESS)
                .await
                .expect("writers running");
            ended += schema.terminate_sessions().await;
        }
        ended
    };
    let ended = tokio::time::timeout(Duration::from_secs(300), killing)
        .await
        .expect("the writers kept making progress between kills");
    assert!(ended >= KILLS as i64, "ended {ended} sessions");
    // Progress after the last kill: both replicas recovered without a restart.
    tokio::time::timeout(
        Duration::from_secs(300),
        acknowledged_so_far.wait_for(|count| *count >= (KILLS + 1) * PROGRESS),
    )
    .await
    .expect("progress after the last kill")
    .expect("writers running");
    stop.store(true, Ordering::Relaxed);

    let mut unavailable_total = 0;
    let mut reader = client_of(&replicas[1]).await;
    while let Some(joined) = writers.join_next().await {
        let (key, acknowledged, unavailable) = joined.expect("writer task");
        unavailable_total += unavailable;
        assert!(!acknowledged.is_empty());
        for (revision, hook) in &acknowledged {
            let stored = reader
                .get_provision_policy(get_request(key.clone(), *revision))
                .await
                .expect("an acknowledged revision is readable")
                .into_inner()
                .policy
                .expect("policy");
            assert_eq!(
                stored.provision_policy,
                Some(webhook(hook)),
                "{key:?} revision {revision}"
            );
        }
        let last = acknowledged.last().expect("acknowledged").0;
        assert!(current(&mut reader, &key).await.revision >= last);
    }
    eprintln!("{ended} sessions ended; {unavailable_total} RPCs answered UNAVAILABLE");
    for replica in replicas {
        assert!(replica.terminate().0.success());
    }
}
