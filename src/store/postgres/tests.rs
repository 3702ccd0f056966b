//! What only the PostgreSQL backend promises: migrations, group commit and its failure modes,
//! recovery from ended connections, and atomicity across stores (replicas) on one database. The
//! store contract runs here too.
//!
//! Every test that needs a server runs in a schema of its own in the database
//! `PROVISIOND_TEST_POSTGRES_URL` names, dropped at its end (kept, and named, when it failed);
//! without the variable those tests print why they skip, and pass.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;
use tokio_postgres::NoTls;

use super::error::{OpenError, is_transient_code};
use super::schema::LATEST;
use super::{APPLICATION_NAME, PostgresStore};
use crate::pb;
use crate::store::contract::{
    Backend, delegating, entitlement, put, put_if, rejecting_when, resource, returning, violation,
    written,
};
use crate::store::{BindingQuery, Store, StoreError, Write, WriteOutcome};

const URL_VARIABLE: &str = "PROVISIOND_TEST_POSTGRES_URL";

/// A schema of its own in the test database.
pub(crate) struct TestSchema {
    base: tokio_postgres::Config,
    name: String,
}

impl TestSchema {
    /// Creates the schema; `None`, after printing why, when no test database is configured.
    pub(crate) fn create() -> Option<Self> {
        let Ok(url) = std::env::var(URL_VARIABLE) else {
            eprintln!(
                "skipped: {URL_VARIABLE} is not set (e.g. postgres://postgres@127.0.0.1:5432/test \
                 runs the PostgreSQL tests)"
            );
            return None;
        };
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pgtest_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let base: tokio_postgres::Config = url
            .parse()
            .unwrap_or_else(|err| panic!("{URL_VARIABLE} is not a PostgreSQL URL: {err}"));
        let schema = Self { base, name };
        schema.execute_blocking(format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
            schema.name
        ));
        Some(schema)
    }

    /// The store's configuration: this schema, and an application name of its own so that a
    /// test ends only its own sessions.
    pub(crate) fn config(&self) -> tokio_postgres::Config {
        let mut config = self.base.clone();
        config.options(format!("-c search_path={}", self.name));
        config.application_name(self.application_name());
        config
    }

    pub(crate) fn application_name(&self) -> String {
        format!("{APPLICATION_NAME}-{}", self.name)
    }

    pub(crate) async fn open(&self) -> PostgresStore {
        PostgresStore::open_config(self.config()).await.unwrap()
    }

    /// A connection of the test itself to the schema (not named like the store's).
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        let mut config = self.base.clone();
        config.options(format!("-c search_path={}", self.name));
        let (client, connection) = config.connect(NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    /// Ends every session of the stores of this schema, waiting until they are gone; returns
    /// how many there were.
    pub(crate) async fn terminate_sessions(&self) -> i64 {
        let client = self.client().await;
        let row = client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))
                 FROM pg_stat_activity WHERE application_name = $1",
                &[&self.application_name()],
            )
            .await
            .unwrap();
        row.get(0)
    }

    /// Runs `sql` on a connection of a thread of its own: usable from drops and from the writer
    /// thread, where no runtime may be entered.
    fn execute_blocking(&self, sql: String) {
        let config = self.base.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, connection) = config.connect(NoTls).await.unwrap();
                let connection = tokio::spawn(connection);
                client.batch_execute(&sql).await.unwrap();
                drop(client);
                let _ = connection.await;
            });
        })
        .join()
        .expect("the SQL thread panicked");
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the failed test's data is kept in schema {}", self.name);
            return;
        }
        self.execute_blocking(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

/// A fresh schema, or (without a test database) a return from the test after saying so.
macro_rules! schema_or_skip {
    () => {
        match TestSchema::create() {
            Some(schema) => schema,
            None => return,
        }
    };
}

pub(crate) struct PostgresBackend {
    schema: TestSchema,
}

impl Backend for PostgresBackend {
    type Store = PostgresStore;

    fn open(&self) -> impl Future<Output = PostgresStore> + Send {
        let config = self.schema.config();
        async move { PostgresStore::open_config(config).await.unwrap() }
    }
}

mod store_contract {
    use super::{PostgresBackend, TestSchema};

    crate::store::contract::store_contract_tests!(PostgresBackend {
        schema: schema_or_skip!()
    });
    crate::store::contract_log::store_log_contract_tests!(PostgresBackend {
        schema: schema_or_skip!()
    });
    crate::store::contract_current::store_current_contract_tests!(PostgresBackend {
        schema: schema_or_skip!()
    });
}

fn key(n: usize) -> pb::EntitlementRef {
    entitlement("app", &format!("key-{n}"))
}

/// Holds the writer between batches until the returned sender is dropped.
fn hold_writer(store: &PostgresStore) -> std::sync::mpsc::Sender<()> {
    let (release, held) = std::sync::mpsc::channel::<()>();
    store.run_on_writer(move |_| {
        let _ = held.recv();
    });
    release
}

fn written_now(result: Result<WriteOutcome, StoreError>) -> crate::store::StoredRevision {
    match result {
        Ok(WriteOutcome::Written { record, .. }) => record,
        other => panic!("expected Written, got {other:?}"),
    }
}

#[tokio::test]
async fn queued_mutations_are_committed_together() {
    let schema = schema_or_skip!();
    let store = schema.open().await;
    // 63 writes and a binding fill one batch; 300 and a binding need five of at most 64.
    for (writes, commits) in [(63, 1), (300, 5)] {
        let release = hold_writer(&store);
        let before = store.commits();
        let pending: Vec<_> = (0..writes)
            .map(|n| store.write(put(resource(&key(n), &format!("hook-{writes}")))))
            .collect();
        let created = store.create_binding(key(0), key(writes), false);
        drop(release);
        for write in pending {
            written_now(write.await);
        }
        created.await.unwrap();
        assert_eq!(
            store.commits() - before,
            commits,
            "commits for {writes} queued writes"
        );
    }
    assert_eq!(
        store.get(&key(299), None).await.unwrap().unwrap().revision,
        1
    );
    assert_eq!(store.get(&key(0), None).await.unwrap().unwrap().revision, 2);
}

#[tokio::test]
async fn a_failing_mutation_rolls_back_only_itself_and_later_ones_see_earlier_ones() {
    let schema = schema_or_skip!();
    let store = schema.open().await;
    let [a, b, c, d, e, t] = [0, 1, 2, 3, 4, 5].map(key);
    let seen_by_c = Arc::new(Mutex::new(None));
    store
        .create_binding(t.clone(), a.clone(), false)
        .await
        .unwrap();

    let release = hold_writer(&store);
    let before = store.commits();
    let write_a = store.write(delegating(&a, [t.clone()]));
    let write_b = store.write(put_if(resource(&b, "hook-b"), 3));
    let write_c = store.write(Write {
        check: Box::new({
            let (a, seen) = (a.clone(), Arc::clone(&seen_by_c));
            move |lookup| {
                *seen.lock().unwrap() = Some(lookup.delegation_targets(&a)?);
                Ok(Vec::new())
            }
        }),
        ..put(resource(&c, "hook-c"))
    });
    let write_d = store.write(Write {
        implicit_binding_sources: vec![t.clone()],
        check: returning(vec![violation("REQUIRED", pb::Severity::Error)]),
        ..delegating(&d, [t.clone()])
    });
    let write_e = store.write(Write {
        check: Box::new(|_| panic!("a check with a bug")),
        ..put(resource(&e, "hook-e"))
    });
    let twice = store.create_binding(t.clone(), a.clone(), true);
    let in_use = store.delete_binding(t.clone(), a.clone());
    let write_a2 = store.write(put_if(resource(&a, "hook-a2"), 1));
    drop(release);

    assert_eq!(written_now(write_a.await).revision, 1);
    assert!(matches!(
        write_b.await,
        Err(StoreError::RevisionMismatch {
            expected: 3,
            actual: None
        })
    ));
    written_now(write_c.await);
    assert!(matches!(write_d.await, Ok(WriteOutcome::Rejected { .. })));
    assert!(matches!(write_e.await, Err(StoreError::Internal(_))));
    assert!(matches!(twice.await, Err(StoreError::AlreadyExists)));
    assert!(matches!(in_use.await, Err(StoreError::InUse { .. })));
    assert_eq!(written_now(write_a2.await).revision, 2);
    assert_eq!(store.commits() - before, 1, "one batch");

    let seen = seen_by_c.lock().unwrap().take().expect("c's check ran");
    assert_eq!(
        seen,
        Some(vec![t.clone()]),
        "c's check saw a's write of the same batch"
    );
    assert_eq!(store.get(&a, None).await.unwrap().unwrap().revision, 2);
    assert!(store.get(&c, None).await.unwrap().is_some());
    for missing in [&b, &d, &e] {
        assert_eq!(store.get(missing, None).await.unwrap(), None);
    }
    let bindings = store
        .list_bindings(BindingQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        bindings.len(),
        1,
        "d's implicit binding went with d: {bindings:?}"
    );
}

#[tokio::test]
async fn a_connection_lost_before_commit_fails_its_batch_as_unavailable_and_the_writer_reconnects()
{
    let schema = schema_or_skip!();
    let store = schema.open().await;
    let kept = written(&store, put(resource(&key(0), "hook-kept"))).await;

    let release = hold_writer(&store);
    let config = schema.base.clone();
    store.run_on_writer(move |session| {
        session.before_commit = Some(Box::new(move |pid| {
            terminate_blocking(config, pid);
        }));
    });
    let lost: Vec<_> = (1..4)
        .map(|n| store.write(put(resource(&key(n), "hook-lost"))))
        .collect();
    let lost_binding = store.create_binding(key(0), key(1), false);
    drop(release);
    for write in lost {
        let result = write.await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "an unacknowledged write is UNAVAILABLE: {result:?}"
        );
    }
    assert!(matches!(
        lost_binding.await,
        Err(StoreError::Unavailable(_))
    ));
    for n in 1..4 {
        assert_eq!(store.get(&key(n), None).await.unwrap(), None);
    }

    // The next write gets a new connection.
    let next = written(&store, put(resource(&key(0), "hook-next"))).await;
    assert_eq!(next.revision, kept.revision + 1);
    store.close().await.unwrap();
}

/// Ends the server process `pid`, from a thread of its own (the writer thread runs this).
fn terminate_blocking(config: tokio_postgres::Config, pid: i32) {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, connection) = config.connect(NoTls).await.unwrap();
            tokio::spawn(connection);
            let ended: bool = client
                .query_one("SELECT pg_terminate_backend($1, 5000)", &[&pid])
                .await
                .unwrap()
                .get(0);
            assert!(ended, "the writer's session ended");
        });
    })
    .join()
    .expect("the terminating thread panicked");
}

#[tokio::test]
async fn sessions_ended_by_the_server_are_replaced_without_a_restart() {
    let schema = schema_or_skip!();
    let store = schema.open().await;
    let target = key(1);
    for round in 0..3 {
        let stored = written(&store, delegating(&key(0), [target.clone()])).await;
        store
            .create_binding(key(round + 10), key(0), false)
            .await
            .unwrap();
        assert!(store.get(&key(0), None).await.unwrap().is_some());
        // The writer's connection and every pooled one.
        let ended = schema.terminate_sessions().await;
        assert!(ended >= 2, "round {round}: ended {ended} sessions");

        assert_eq!(
            store.get(&key(0), None).await.unwrap(),
            Some(stored.clone()),
            "round {round}"
        );
        let later = written(&store, delegating(&key(0), [target.clone()])).await;
        assert_eq!(later.revision, stored.revision + 1);
        let seen = Arc::new(Mutex::new(None));
        store
            .check(Box::new({
                let seen = Arc::clone(&seen);
                move |lookup| {
                    *seen.lock().unwrap() = Some(lookup.delegation_targets(&key(0))?);
                    Ok(Vec::new())
                }
            }))
            .await
            .unwrap();
        assert_eq!(
            seen.lock().unwrap().take(),
            Some(Some(vec![target.clone()]))
        );
        let listed = store
            .list_bindings(BindingQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), round + 1);
    }
    store.close().await.unwrap();
}

/// The cycle rule in miniature: refuse when `other` delegates to `this`.
fn refusing_cycles(this: &pb::EntitlementRef, other: &pb::EntitlementRef) -> Write {
    let check = rejecting_when({
        let (this, other) = (this.clone(), other.clone());
        move |lookup| {
            let targets = lookup.delegation_targets(&other)?;
            Ok(targets.is_some_and(|targets| targets.contains(&this)))
        }
    });
    Write {
        check,
        ..delegating(this, [other.clone()])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_delegations_on_two_stores_have_one_winner() {
    const ROUNDS: usize = 40;
    let schema = schema_or_skip!();
    let stores = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    for round in 0..ROUNDS {
        let a = entitlement("app", &format!("a-{round}"));
        let b = entitlement("app", &format!("b-{round}"));
        let mut tasks = JoinSet::new();
        for (store, this, other) in [(&stores[0], &a, &b), (&stores[1], &b, &a)] {
            let (store, write) = (Arc::clone(store), refusing_cycles(this, other));
            let this = this.clone();
            tasks.spawn(async move { (this, store.write(write).await) });
        }
        let mut winners = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined.unwrap() {
                (this, Ok(WriteOutcome::Written { .. })) => winners.push(this),
                (_, Ok(WriteOutcome::Rejected { .. })) => {}
                (this, other) => panic!("round {round}, {this:?}: {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_deleted_on_one_store_while_another_delegates_through_it_never_dangles() {
    const ROUNDS: usize = 40;
    let schema = schema_or_skip!();
    let stores = [Arc::new(schema.open().await), Arc::new(schema.open().await)];
    let (mut deletes_first, mut writes_first) = (0, 0);
    for round in 0..ROUNDS {
        let t = entitlement("app", &format!("t-{round}"));
        let this = entitlement("app", &format!("this-{round}"));
        stores[0]
            .create_binding(t.clone(), this.clone(), false)
            .await
            .unwrap();
        // Alternate which replica deletes, and which asks first.
        let (deleter, writer) = if round % 2 == 0 {
            (&stores[0], &stores[1])
        } else {
            (&stores[1], &stores[0])
        };
        let check = rejecting_when({
            let (t, this) = (t.clone(), this.clone());
            move |lookup| Ok(!lookup.binding_exists(&t, &this)?)
        });
        let write = Write {
            check,
            ..delegating(&this, [t.clone()])
        };
        let (deleted, wrote) = tokio::join!(
            deleter.delete_binding(t.clone(), this.clone()),
            writer.write(write)
        );
        let context = format!("round {round}: {deleted:?} / {wrote:?}");
        match (&deleted, &wrote) {
            (Ok(()), Ok(WriteOutcome::Rejected { .. })) => deletes_first += 1,
            (Err(StoreError::InUse { dependents }), Ok(WriteOutcome::Written { .. })) => {
                assert_eq!(dependents, std::slice::from_ref(&this), "{context}");
                writes_first += 1;
            }
            _ => panic!("unexpected outcome: {context}"),
        }
        // Whichever replica reads: no stored delegation lacks its binding.
        for store in &stores {
            let bound = !store
                .list_bindings(BindingQuery {
                    source: Some(t.clone()),
                    destination: Some(this.clone()),
                    limit: 1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .is_empty();
            let current = store.get(&this, None).await.unwrap();
            assert_eq!(current.is_some(), bound, "{context}");
        }
    }
    eprintln!("deletes first: {deletes_first}, writes first: {writes_first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_opening_together_migrate_once() {
    let schema = schema_or_skip!();
    let mut opening = JoinSet::new();
    for _ in 0..4 {
        let config = schema.config();
        opening.spawn(async move { PostgresStore::open_config(config).await });
    }
    let mut stores = Vec::new();
    while let Some(opened) = opening.join_next().await {
        stores.push(opened.unwrap().unwrap());
    }
    let client = schema.client().await;
    let version: i32 = client
        .query_one("SELECT version FROM provisiond_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, LATEST);
    // Every store works on the one schema.
    for (n, store) in stores.iter().enumerate() {
        written(store, put(resource(&key(0), &format!("hook-{n}")))).await;
    }
    assert_eq!(
        stores[0]
            .get(&key(0), None)
            .await
            .unwrap()
            .unwrap()
            .revision,
        4
    );
    for store in &stores {
        store.close().await.unwrap();
    }
    // Opening again changes nothing.
    schema.open().await.close().await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_version_is_refused() {
    let schema = schema_or_skip!();
    schema.open().await.close().await.unwrap();
    let client = schema.client().await;
    client
        .execute(
            "UPDATE provisiond_schema SET version = $1",
            &[&(LATEST + 1)],
        )
        .await
        .unwrap();
    match PostgresStore::open_config(schema.config()).await {
        Err(err @ OpenError::TooNew { .. }) => {
            assert!(err.to_string().contains("run a newer provisiond"), "{err}")
        }
        Err(other) => panic!("expected TooNew, got {other}"),
        Ok(_) => panic!("opened a schema from the future"),
    }
}

#[tokio::test]
async fn a_search_path_without_an_existing_schema_is_refused() {
    let schema = schema_or_skip!();
    let mut config = schema.config();
    config.options(format!("-c search_path={}_missing", schema.name));
    match PostgresStore::open_config(config).await {
        Err(err @ OpenError::NoSchema) => {
            assert!(err.to_string().contains("search_path"), "{err}")
        }
        Err(other) => panic!("expected NoSchema, got {other}"),
        Ok(_) => panic!("opened without a schema"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_open_error() {
    // Port 1 on the loopback: nothing listens there.
    let url = "postgres://provisiond:secret-password@127.0.0.1:1/nowhere?connect_timeout=5";
    match PostgresStore::open(url, None).await {
        Err(err @ OpenError::Connect { .. }) => {
            let message = err.to_string();
            assert!(message.contains("127.0.0.1:1"), "{message}");
            assert!(message.contains("database nowhere"), "{message}");
            assert!(message.to_lowercase().contains("refused"), "{message}");
            assert!(!message.contains("secret-password"), "{message}");
        }
        Err(other) => panic!("expected Connect, got {other}"),
        Ok(_) => panic!("connected to port 1"),
    }
    match PostgresStore::open("postgres://127.0.0.1:port/db", None).await {
        Err(err @ OpenError::Url(_)) => assert!(err.to_string().contains("invalid"), "{err}"),
        Err(other) => panic!("expected Url, got {other}"),
        Ok(_) => panic!("opened an invalid URL"),
    }
}

#[tokio::test]
async fn revisions_are_append_only() {
    let schema = schema_or_skip!();
    let store = schema.open().await;
    written(&store, put(resource(&key(0), "hook"))).await;
    let client = schema.client().await;
    for statement in [
        "UPDATE revisions SET update_time = 0",
        "DELETE FROM revisions",
        "TRUNCATE revisions",
    ] {
        let err = client.batch_execute(statement).await.unwrap_err();
        let message = super::error::chain(&err);
        assert!(message.contains("append-only"), "{statement}: {message}");
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_stored_resource_that_does_not_decode_is_internal() {
    let schema = schema_or_skip!();
    let store = schema.open().await;
    written(&store, put(resource(&key(0), "hook"))).await;
    let client = schema.client().await;
    client
        .batch_execute("UPDATE policies SET resource = '\\xffffffff'")
        .await
        .unwrap();
    let result = store.get(&key(0), None).await;
    match result {
        Err(err @ StoreError::Internal(_)) => {
            // Clients see the generic message only.
            assert_eq!(err.to_string(), "storage failure");
        }
        other => panic!("expected Internal, got {other:?}"),
    }
    store.close().await.unwrap();
}

#[tokio::test]
async fn ids_sort_bytewise_whatever_the_database_collation() {
    let schema = schema_or_skip!();
    let store = schema.open().await;
    let destination = entitlement("app", "d");
    // Bytewise: "B" (0x42) < "_b" (0x5f) < "a" (0x61) < "b"; most collations put "a" first.
    for source in ["b", "a", "_b", "B"] {
        store
            .create_binding(entitlement("app", source), destination.clone(), false)
            .await
            .unwrap();
    }
    let listed: Vec<String> = store
        .list_bindings(BindingQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|binding| binding.source.entitlement_id)
        .collect();
    assert_eq!(listed, ["B", "_b", "a", "b"]);
    let after_underscore = store
        .list_bindings(BindingQuery {
            after: Some((entitlement("app", "_b"), destination.clone())),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(after_underscore.len(), 2);
    store.close().await.unwrap();
}

#[tokio::test]
async fn close_answers_every_queued_write_first() {
    let schema = schema_or_skip!();
    let store = schema.open().await;
    let release = hold_writer(&store);
    let pending: Vec<_> = (0..20)
        .map(|n| store.write(put(resource(&key(n), "hook"))))
        .collect();
    drop(release);
    store.close().await.unwrap();
    for write in pending {
        written_now(write.await);
    }
    assert!(matches!(
        store.write(put(resource(&key(0), "late"))).await,
        Err(StoreError::Unavailable(_))
    ));
    let reopened = schema.open().await;
    assert_eq!(
        reopened
            .get(&key(19), None)
            .await
            .unwrap()
            .unwrap()
            .revision,
        1
    );
    reopened.close().await.unwrap();
}

#[test]
fn server_conditions_are_unavailable_and_defects_internal() {
    use tokio_postgres::error::SqlState;
    for transient in [
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::CONNECTION_FAILURE,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::DISK_FULL,
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::QUERY_CANCELED,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ] {
        assert!(is_transient_code(&transient), "{transient:?}");
    }
    for defect in [
        SqlState::UNIQUE_VIOLATION,
        SqlState::UNDEFINED_TABLE,
        SqlState::SYNTAX_ERROR,
        SqlState::RAISE_EXCEPTION,
        SqlState::DATA_CORRUPTED,
    ] {
        assert!(!is_transient_code(&defect), "{defect:?}");
    }
}

mod log;
