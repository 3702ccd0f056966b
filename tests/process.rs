//! The built binary as operators run it: restart keeps data, SIGTERM exits 0, a second process or
//! a corrupt file is refused, and `kill -9` never loses an acknowledged write.

mod common;

use std::collections::HashMap;

use common::process::{self, Started};
use common::*;
use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;

async fn client_of(process: &process::Process) -> Client {
    ProvisionPolicyServiceClient::connect(process.endpoint())
        .await
        .expect("connect")
}

#[tokio::test]
async fn restart_keeps_data_and_sigterm_exits_zero() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = process::start_listening(data_dir.path());
    let mut client = client_of(&server).await;
    let ent = entitlement("github", "admins");
    for id in ["w1", "w2"] {
        client
            .set_provision_policy(set_request(resource(ent.clone(), webhook(id)), ""))
            .await
            .expect("set");
    }
    drop(client);
    let (status, log) = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}: {log:#?}");
    assert!(log.iter().any(|l| l.contains("store closed")), "{log:#?}");

    let server = process::start_listening(data_dir.path());
    let mut client = client_of(&server).await;
    let current = client
        .get_provision_policy(get_request(ent.clone(), 0))
        .await
        .expect("get after restart")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(current.revision, 2);
    assert_eq!(current.provision_policy, Some(webhook("w2")));
    let first = client
        .get_provision_policy(get_request(ent, 1))
        .await
        .expect("revision 1")
        .into_inner();
    assert_eq!(
        first.policy.expect("policy").provision_policy,
        Some(webhook("w1"))
    );
    drop(client);
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[tokio::test]
async fn environment_twins_configure_the_server() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_provisiond"));
    command
        .env("PROVISIOND_LISTEN", "127.0.0.1:0")
        .env("PROVISIOND_DATA_DIR", data_dir.path().join("nested"))
        .env("PROVISIOND_LOG_FORMAT", "json")
        .env("PROVISIOND_LOG", "info")
        .env("PROVISIOND_STORE", "sqlite");
    let Started::Listening(server) = process::start_command(command) else {
        panic!("did not start from the environment alone");
    };
    let mut client = client_of(&server).await;
    client
        .set_provision_policy(set_request(
            resource(entitlement("a", "b"), webhook("w")),
            "",
        ))
        .await
        .expect("set");
    drop(client);
    assert!(server.terminate().0.success());
    assert!(data_dir.path().join("nested/provisiond.sqlite3").exists());
}

#[tokio::test]
async fn a_second_process_on_the_same_data_dir_fails_fast() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let first = process::start_listening(data_dir.path());
    match process::start(data_dir.path()) {
        Started::Listening(_) => panic!("a second provisiond shared the data dir"),
        Started::Exited { status, log } => {
            assert!(!status.success());
            assert!(
                log.iter().any(|l| l.contains("in use")),
                "clear message: {log:#?}"
            );
        }
    }
    let (status, _) = first.terminate();
    assert!(status.success());
}

#[tokio::test]
async fn a_corrupt_database_is_refused_and_left_alone() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = process::start_listening(data_dir.path());
    let mut client = client_of(&server).await;
    client
        .set_provision_policy(set_request(
            resource(entitlement("a", "b"), webhook("w")),
            "",
        ))
        .await
        .expect("set");
    drop(client);
    assert!(server.terminate().0.success());

    let file = data_dir.path().join("provisiond.sqlite3");
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &garbage).expect("corrupt the file");
    match process::start(data_dir.path()) {
        Started::Listening(_) => panic!("served a corrupt database"),
        Started::Exited { status, log } => {
            assert!(!status.success());
            assert!(!log.is_empty(), "says why");
        }
    }
    assert_eq!(
        std::fs::read(&file).expect("still there"),
        garbage,
        "never replaced"
    );
}

/// Concurrent Sets, `kill -9` after a varying number of acknowledgements, restart: every
/// acknowledged revision is readable with exactly the value that was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_acknowledged_write() {
    const ITERATIONS: u64 = 12;
    const WRITERS: usize = 8;
    let data_dir = tempfile::tempdir().expect("temp dir");
    // (app, entitlement, revision) → webhook id acknowledged at that revision.
    let mut acknowledged: HashMap<(String, i64), String> = HashMap::new();
    // The listing of the empty store is consistent at the log's start: a Watch from it
    // replays everything.
    let start_of_log = {
        let server = process::start_listening(data_dir.path());
        let mut client = client_of(&server).await;
        let listing = client
            .list_provision_policies(pb::ListProvisionPoliciesRequest::default())
            .await
            .expect("list")
            .into_inner();
        drop(client);
        assert!(server.terminate().0.success());
        listing.read_at
    };
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for iteration in 0..ITERATIONS {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 20 + (seed % 150) as usize;
        let server = process::start_listening(data_dir.path());
        let (acks, mut acked) = tokio::sync::mpsc::unbounded_channel();
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let mut client = client_of(&server).await;
            let acks = acks.clone();
            writers.push(tokio::spawn(async move {
                for n in 0.. {
                    let key = format!("e{}", (writer + n) % 5);
                    let value = format!("i{iteration}-w{writer}-n{n}");
                    let request =
                        set_request(resource(entitlement("crash", &key), webhook(&value)), "");
                    match client.set_provision_policy(request).await {
                        Ok(response) => {
                            let revision = response.into_inner().policy.expect("policy").revision;
                            if acks.send((key, revision, value)).is_err() {
                                return;
                            }
                        }
                        Err(_) => return, // the process died under us: not acknowledged
                    }
                }
            }));
        }
        drop(acks);
        for _ in 0..kill_after {
            let (key, revision, value) = acked.recv().await.expect("acks keep coming");
            record(&mut acknowledged, key, revision, value);
        }
        server.crash();
        for writer in writers {
            writer.await.expect("writer");
        }
        // Acks that raced the kill were still acknowledged to a client: they count too.
        while let Ok((key, revision, value)) = acked.try_recv() {
            record(&mut acknowledged, key, revision, value);
        }
    }

    let server = process::start_listening(data_dir.path());
    let mut client = client_of(&server).await;
    for ((key, revision), value) in &acknowledged {
        let stored = client
            .get_provision_policy(get_request(entitlement("crash", key), *revision))
            .await
            .unwrap_or_else(|status| panic!("acknowledged {key}@{revision} lost: {status}"))
            .into_inner()
            .policy
            .expect("policy");
        assert_eq!(
            stored.provision_policy,
            Some(webhook(value)),
            "{key}@{revision}"
        );
    }
    assert!(acknowledged.len() >= ITERATIONS as usize * 20);

    // The in-memory current state loaded after the last kill equals the tables: a Get of the
    // current revision (from memory) of every key is what a listing (from the tables) shows,
    // and no older than its last acknowledged revision.
    let listed = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest {
            app_id: "crash".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .policies;
    assert_eq!(listed.len(), 5, "every key is live");
    for from_tables in listed {
        let key = from_tables.entitlement.clone().expect("entitlement");
        let from_memory = client
            .get_provision_policy(get_request(key.clone(), 0))
            .await
            .expect("get")
            .into_inner()
            .policy
            .expect("policy");
        assert_eq!(
            from_memory, from_tables,
            "memory against the tables for {key:?}"
        );
        let last_acknowledged = acknowledged
            .keys()
            .filter(|(id, _)| *id == key.entitlement_id)
            .map(|(_, revision)| *revision)
            .max()
            .expect("acknowledged writes of the key");
        assert!(from_memory.revision >= last_acknowledged);
    }

    // Acknowledged means in the log: a Watch from the start replays every acknowledged write,
    // at its revision with its value, in order, with no revision of a key seen twice.
    let mut replayed: HashMap<(String, i64), String> = HashMap::new();
    let mut stream = client
        .watch_provision_policies(pb::WatchProvisionPoliciesRequest {
            start_cursor: start_of_log,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let head = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .read_at;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(60), stream.message())
            .await
            .expect("in time")
            .expect("no error")
            .expect("open");
        for change in message.changes {
            let key = change.entitlement.expect("entitlement").entitlement_id;
            let value = match change
                .policy
                .and_then(|p| p.provision_policy)
                .and_then(|p| p.typ)
            {
                Some(pb::provision_policy::Typ::Webhook(webhook)) => webhook.webhook_id,
                other => panic!("unexpected {other:?}"),
            };
            let again = replayed.insert((key.clone(), change.revision), value);
            assert!(again.is_none(), "{key}@{} replayed twice", change.revision);
        }
        if message.cursor == head {
            break;
        }
    }
    for (write, value) in &acknowledged {
        assert_eq!(
            replayed.get(write),
            Some(value),
            "{write:?} acknowledged but not in the log"
        );
    }
    drop(stream);
    drop(client);
    assert!(server.terminate().0.success());
}

/// A revision acknowledged twice with different values means a lost write was reissued.
fn record(
    acknowledged: &mut HashMap<(String, i64), String>,
    key: String,
    revision: i64,
    value: String,
) {
    if let Some(earlier) = acknowledged.insert((key.clone(), revision), value.clone()) {
        panic!("{key}@{revision} acknowledged as {earlier} and again as {value}: a write was lost");
    }
}

/// The server's resident set, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A watcher that stops reading while 10k changes of 8 KiB land: the server does not buffer
/// them (its memory grows by far less than the 80 MB they weigh), and once the watcher reads
/// again it gets all of them, in order, with nothing dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_costs_bounded_memory_and_then_gets_every_change_in_order() {
    const CHANGES: usize = 10_000;
    const WRITERS: usize = 16;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = process::start_listening(data_dir.path());
    let mut client = client_of(&server).await;
    let instructions = "x".repeat(8 * 1024);
    let policy = move |n: usize| pb::ProvisionPolicy {
        typ: Some(pb::provision_policy::Typ::Manual(pb::ManualProvision {
            instructions: format!("{n} {instructions}"),
            user_ids: vec!["owner".into()],
            assignee: None,
        })),
    };
    // Warm up: the server's caches and pools at their working size before the baseline.
    for n in 0..200 {
        let request = set_request(
            resource(entitlement("stall", &format!("warm{n}")), policy(n)),
            "",
        );
        client
            .set_provision_policy(request)
            .await
            .expect("warm-up set");
    }
    let mut stream = client
        .watch_provision_policies(pb::WatchProvisionPoliciesRequest {
            app_id: "stall".into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let baseline = rss_kib(server.child.id());

    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let mut client = client_of(&server).await;
        let policy = policy.clone();
        writers.push(tokio::spawn(async move {
            for n in (writer..CHANGES).step_by(WRITERS) {
                let key = entitlement("stall", &format!("e{}", n % 100));
                client
                    .set_provision_policy(set_request(resource(key, policy(n)), ""))
                    .await
                    .expect("set");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    let grown_kib = rss_kib(server.child.id()).saturating_sub(baseline);
    println!("server RSS grew by {grown_kib} KiB while 10k changes of 8 KiB waited");
    assert!(
        grown_kib < 40 * 1024,
        "the server buffered for a stalled watcher: RSS grew by {grown_kib} KiB"
    );

    let mut seen = 0;
    let mut last_cursor = String::new();
    let mut revisions: HashMap<String, i64> = HashMap::new();
    while seen < CHANGES {
        let message = tokio::time::timeout(std::time::Duration::from_secs(60), stream.message())
            .await
            .expect("in time")
            .expect("never dropped")
            .expect("open");
        if message.checkpoint {
            continue;
        }
        assert_ne!(message.cursor, last_cursor);
        last_cursor = message.cursor;
        for change in message.changes {
            let key = change.entitlement.expect("entitlement").entitlement_id;
            let previous = revisions.insert(key.clone(), change.revision).unwrap_or(0);
            assert_eq!(
                change.revision,
                previous + 1,
                "{key}: in order, none missing"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, CHANGES);
    drop(stream);
    drop(client);
    assert!(server.terminate().0.success());
}
