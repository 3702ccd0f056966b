//! What only the SQLite backend promises: the data dir lock, refusing bad files, the pragmas,
//! group commit and its failure modes. The store contract runs here too.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use rusqlite::Connection;
use tempfile::TempDir;
use tokio::sync::oneshot;

use super::schema::{self, APPLICATION_ID, LATEST};
use super::{DATABASE_FILE, OpenError, SqliteStore};
use crate::pb;
use crate::store::contract::targets_of;
use crate::store::contract::{
    Backend, delegating, entitlement, passing, put, put_if, rejecting_when, resource, returning,
    violation, written,
};
use crate::store::{BindingQuery, Store, StoreError, StoredBinding, Write, WriteOutcome};

struct SqliteBackend {
    dir: TempDir,
}

impl SqliteBackend {
    fn new() -> Self {
        Self {
            dir: TempDir::new().unwrap(),
        }
    }
}

impl Backend for SqliteBackend {
    type Store = SqliteStore;

    fn open(&self) -> impl Future<Output = SqliteStore> + Send {
        let dir = self.dir.path().to_owned();
        async move { SqliteStore::open(&dir).unwrap() }
    }
}

mod store_contract {
    use super::SqliteBackend;

    crate::store::contract::store_contract_tests!(SqliteBackend::new());
    crate::store::contract_log::store_log_contract_tests!(SqliteBackend::new());
    crate::store::contract_current::store_current_contract_tests!(SqliteBackend::new());
}

fn open_error(dir: &Path) -> OpenError {
    match SqliteStore::open(dir) {
        Ok(_) => panic!("opened {}", dir.display()),
        Err(err) => err,
    }
}

pub(super) fn database(dir: &Path) -> PathBuf {
    dir.join(DATABASE_FILE)
}

/// A connection of the test's own to the store's file, as an operator's `sqlite3` would be.
pub(super) fn side_connection(dir: &Path) -> Connection {
    let conn = Connection::open(database(dir)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

/// Holds the writer between batches until the returned sender is dropped, so that writes
/// submitted meanwhile queue up and form one batch: a group commit the test can count.
fn hold_writer(store: &SqliteStore) -> std::sync::mpsc::Sender<()> {
    let (release, held) = std::sync::mpsc::channel::<()>();
    store.run_on_writer(move |_| {
        let _ = held.recv();
    });
    release
}

pub(super) async fn on_writer<T: Send + 'static>(
    store: &SqliteStore,
    task: impl FnOnce(&Connection) -> T + Send + 'static,
) -> T {
    let (reply, answer) = oneshot::channel();
    store.run_on_writer(move |conn| {
        let _ = reply.send(task(conn));
    });
    answer.await.unwrap()
}

pub(super) fn key(n: usize) -> pb::EntitlementRef {
    entitlement("app", &format!("entitlement-{n}"))
}

async fn all_bindings(store: &SqliteStore) -> Vec<StoredBinding> {
    let query = BindingQuery {
        limit: 1000,
        ..Default::default()
    };
    store.list_bindings(query).await.unwrap()
}

#[tokio::test]
async fn second_open_fails_fast_while_the_dir_is_in_use() {
    let dir = TempDir::new().unwrap();
    let first = SqliteStore::open(dir.path()).unwrap();

    let err = open_error(dir.path());
    assert!(matches!(err, OpenError::InUse { .. }), "{err:?}");
    let message = err.to_string();
    let expected = format!(
        "data dir {} is already in use by another provisiond process (pid {})",
        dir.path().display(),
        std::process::id()
    );
    assert_eq!(message, expected);

    first.close().await.unwrap();
    let second = SqliteStore::open(dir.path()).unwrap();
    drop(second);
    SqliteStore::open(dir.path()).unwrap();
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let dir = TempDir::new().unwrap();
    // Deterministic noise, 3.5 pages long.
    let mut state = 0x2545_f491_u32;
    let garbage: Vec<u8> = (0..14_336)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(database(dir.path()), &garbage).unwrap();

    let err = open_error(dir.path());
    assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is not a SQLite database"),
        "{err}"
    );
    assert_eq!(std::fs::read(database(dir.path())).unwrap(), garbage);
}

#[tokio::test]
async fn a_database_with_a_corrupt_page_is_refused_and_left_untouched() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    for n in 0..300 {
        let big = resource(&key(n), &"w".repeat(200));
        written(&store, put(big)).await;
    }
    store.close().await.unwrap();

    let path = database(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    let pages = bytes.len() / page;
    assert!(pages >= 8, "expected a multi-page file, got {pages} pages");
    // Whole pages, past the header page: invalid b-tree page types wherever they land.
    for byte in &mut bytes[pages / 3 * page..pages * 2 / 3 * page] {
        *byte = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();

    let err = open_error(dir.path());
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("is corrupt"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn a_newer_schema_version_is_refused() {
    let dir = TempDir::new().unwrap();
    SqliteStore::open(dir.path())
        .unwrap()
        .close()
        .await
        .unwrap();
    side_connection(dir.path())
        .pragma_update(None, "user_version", LATEST + 1)
        .unwrap();

    match open_error(dir.path()) {
        OpenError::TooNew { found, known, .. } => assert_eq!((found, known), (LATEST + 1, LATEST)),
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn another_programs_database_is_refused() {
    let dir = TempDir::new().unwrap();
    side_connection(dir.path())
        .execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    let err = open_error(dir.path());
    assert!(matches!(err, OpenError::ForeignDatabase { .. }), "{err:?}");
}

#[tokio::test]
async fn the_schema_and_pragmas_are_in_effect() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();

    let side = side_connection(dir.path());
    let header: (i64, i32, String) = side
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT application_id FROM pragma_application_id),
                    (SELECT journal_mode FROM pragma_journal_mode)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    assert_eq!(header, (LATEST, APPLICATION_ID, "wal".to_owned()));
    let mut tables: Vec<String> = side
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    assert_eq!(
        tables,
        [
            "changes",
            "delegations",
            "policies",
            "proxy_bindings",
            "revisions",
            "store_log"
        ]
    );

    // synchronous, foreign_keys and busy_timeout belong to the connection, not the file.
    let pragmas = on_writer(&store, |conn| {
        let get = |pragma: &str| -> i64 {
            conn.pragma_query_value(None, pragma, |row| row.get(0))
                .unwrap()
        };
        (get("synchronous"), get("foreign_keys"), get("busy_timeout"))
    })
    .await;
    assert_eq!(
        pragmas,
        (2, 1, 5000),
        "(synchronous FULL, foreign_keys, busy_timeout ms)"
    );

    // Reopening runs no migration again and keeps the version.
    store.close().await.unwrap();
    SqliteStore::open(dir.path())
        .unwrap()
        .close()
        .await
        .unwrap();
    let version: i64 = side
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, LATEST);
}

#[tokio::test]
async fn queued_writes_are_committed_together() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();

    for (writes, commits) in [(64, 1), (300, 2)] {
        let release = hold_writer(&store);
        let before = store.commits();
        let pending: Vec<_> = (0..writes)
            .map(|n| store.write(put(resource(&key(n), &format!("hook-{writes}")))))
            .collect();
        drop(release);
        for write in pending {
            assert!(matches!(write.await, Ok(WriteOutcome::Written { .. })));
        }
        // 300 exceeds the batch cap of 256.
        assert_eq!(
            store.commits() - before,
            commits,
            "commits for {writes} queued writes"
        );
    }
    let current = store.get(&key(299), None).await.unwrap().unwrap();
    assert_eq!(current.revision, 1);
    let current = store.get(&key(0), None).await.unwrap().unwrap();
    assert_eq!(current.revision, 2);
}

#[tokio::test]
async fn a_failing_write_rolls_back_only_itself_and_later_writes_see_earlier_ones() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(key);
    let seen_by_c = Arc::new(Mutex::new(None));

    let release = hold_writer(&store);
    let before = store.commits();
    let write_a = store.write(delegating(&a, [e.clone()]));
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
        check: returning(vec![violation("REQUIRED", pb::Severity::Error)]),
        ..put(resource(&d, "hook-d"))
    });
    let write_e = store.write(Write {
        check: Box::new(|_| panic!("a check with a bug")),
        ..put(resource(&e, "hook-e"))
    });
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
    assert_eq!(written_now(write_a2.await).revision, 2);
    assert_eq!(store.commits() - before, 1, "one batch");

    let seen = seen_by_c.lock().unwrap().take().expect("c's check ran");
    assert_eq!(
        seen,
        Some(vec![e.clone()]),
        "c's check saw a's write of the same batch"
    );
    assert_eq!(store.get(&a, None).await.unwrap().unwrap().revision, 2);
    assert!(store.get(&c, None).await.unwrap().is_some());
    for missing in [&b, &d, &e] {
        assert_eq!(store.get(missing, None).await.unwrap(), None);
    }
}

pub(super) fn written_now(
    result: Result<WriteOutcome, StoreError>,
) -> crate::store::StoredRevision {
    match result {
        Ok(WriteOutcome::Written { record, .. }) => record,
        other => panic!("expected Written, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_commit_fails_every_write_of_the_batch() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    // A deferred foreign-key violation passes every statement and fails only at COMMIT: a real
    // failed COMMIT. It also shows that foreign_keys is on.
    on_writer(&store, |conn| {
        conn.execute_batch(
            "CREATE TEMP TABLE guard_parent (id INTEGER PRIMARY KEY);
             CREATE TEMP TABLE guard_child (
                 parent INTEGER REFERENCES guard_parent (id) DEFERRABLE INITIALLY DEFERRED);
             CREATE TEMP TRIGGER fail_commit AFTER INSERT ON revisions
             BEGIN INSERT INTO guard_child VALUES (1); END;",
        )
        .unwrap();
    })
    .await;

    let release = hold_writer(&store);
    let before = store.commits();
    let stored = store.write(put(resource(&key(1), "hook-1")));
    let dry_run = store.write(Write {
        validate_only: true,
        ..put(resource(&key(2), "hook-2"))
    });
    let rejected = store.write(Write {
        check: returning(vec![violation("REQUIRED", pb::Severity::Error)]),
        ..put(resource(&key(3), "hook-3"))
    });
    let binding = store.create_binding(key(4), key(5), false);
    drop(release);
    for (name, answer) in [
        ("stored", stored.await),
        ("dry run", dry_run.await),
        ("rejected", rejected.await),
    ] {
        assert!(
            matches!(answer, Err(StoreError::Internal(_))),
            "{name}: {answer:?}"
        );
    }
    let binding = binding.await;
    assert!(
        matches!(binding, Err(StoreError::Internal(_))),
        "{binding:?}"
    );
    assert_eq!(store.commits(), before);

    on_writer(&store, |conn| {
        conn.execute_batch("DROP TRIGGER fail_commit").unwrap()
    })
    .await;
    assert_eq!(store.get(&key(1), None).await.unwrap(), None);
    assert_eq!(store.get(&key(1), Some(1)).await.unwrap(), None);
    assert_eq!(all_bindings(&store).await, []);
    assert_eq!(
        written(&store, put(resource(&key(1), "hook-1")))
            .await
            .revision,
        1
    );
}

#[tokio::test]
async fn a_full_disk_fails_the_writes_it_rolled_back_and_no_others() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    written(&store, put(resource(&key(0), "hook"))).await;
    // Room for small rows in existing pages, not for the overflow pages of a 64 KiB resource:
    // to SQLite as good as a full disk (SQLITE_FULL), which rolls back the whole transaction.
    on_writer(&store, |conn| {
        let pages: i64 = conn
            .pragma_query_value(None, "page_count", |row| row.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages + 4)
            .unwrap();
    })
    .await;

    let big = resource(&key(2), &"x".repeat(64 * 1024));
    let release = hold_writer(&store);
    let before = store.commits();
    let earlier = store.write(put(resource(&key(1), "small")));
    let full = store.write(put(big.clone()));
    let later = store.write(put(resource(&key(3), "small")));
    drop(release);
    for (name, answer) in [("earlier", earlier.await), ("full", full.await)] {
        match answer {
            Err(err @ StoreError::Unavailable(_)) => {
                assert_eq!(err.to_string(), "storage unavailable", "{name}")
            }
            other => panic!("{name}: expected Unavailable, got {other:?}"),
        }
    }
    assert_eq!(written_now(later.await).revision, 1);
    assert_eq!(store.commits() - before, 1);
    assert_eq!(store.get(&key(1), None).await.unwrap(), None);
    assert_eq!(store.get(&key(2), None).await.unwrap(), None);
    assert!(store.get(&key(3), None).await.unwrap().is_some());

    on_writer(&store, |conn| {
        conn.pragma_update(None, "max_page_count", 1_073_741_823)
            .unwrap()
    })
    .await;
    assert_eq!(written(&store, put(big)).await.revision, 1);
}

#[tokio::test]
async fn checks_see_proxy_bindings() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let (source, destination) = (key(1), key(2));
    side_connection(dir.path())
        .execute(
            "INSERT INTO proxy_bindings VALUES (?1, ?2, ?3, ?4, 0, 0)",
            [
                &source.app_id,
                &source.entitlement_id,
                &destination.app_id,
                &destination.entitlement_id,
            ],
        )
        .unwrap();

    let probe = |seen: &Arc<Mutex<Vec<bool>>>| -> crate::store::WriteCheck {
        let (seen, source, destination) = (Arc::clone(seen), source.clone(), destination.clone());
        Box::new(move |lookup| {
            let forward = lookup.binding_exists(&source, &destination)?;
            let backward = lookup.binding_exists(&destination, &source)?;
            seen.lock().unwrap().extend([forward, backward]);
            Ok(Vec::new())
        })
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    written(
        &store,
        Write {
            check: probe(&seen),
            ..put(resource(&destination, "hook"))
        },
    )
    .await;
    store.check(probe(&seen)).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [true, false, true, false]);
}

#[tokio::test]
async fn close_answers_every_queued_write_first() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let entitlement = key(0);

    let release = hold_writer(&store);
    let pending: Vec<_> = (0..10)
        .map(|n| store.write(put(resource(&entitlement, &format!("hook-{n}")))))
        .collect();
    let mut closing = pin!(store.close());
    // The writer is held, so close cannot finish, but it has closed the queue.
    let first_poll = closing
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()));
    assert!(matches!(first_poll, Poll::Pending));
    let late = store.write(put(resource(&entitlement, "late"))).await;
    assert!(matches!(late, Err(StoreError::Unavailable(_))), "{late:?}");
    drop(release);
    closing.await.unwrap();

    let mut revisions = Vec::new();
    for write in pending {
        revisions.push(written_now(write.await).revision);
    }
    assert_eq!(revisions, (1..=10).collect::<Vec<_>>());
    assert!(matches!(
        store.get(&entitlement, None).await,
        Err(StoreError::Unavailable(_))
    ));
    store.close().await.unwrap();

    let reopened = SqliteStore::open(dir.path()).unwrap();
    let current = reopened.get(&entitlement, None).await.unwrap().unwrap();
    assert_eq!(current.revision, 10);
    // The final checkpoint emptied the WAL into the database file.
    reopened.close().await.unwrap();
    let wal = dir.path().join(format!("{DATABASE_FILE}-wal"));
    assert!(
        std::fs::metadata(&wal).map_or(true, |meta| meta.len() == 0),
        "WAL left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_store_answers_queued_writes_and_unlocks() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let answers: Vec<_> = (0..50)
        .map(|n| {
            let write = put(resource(&key(0), &format!("hook-{n}")));
            store.writer.queue(write).unwrap()
        })
        .collect();
    drop(store);
    // Drop returned only after the writer thread had answered everything and stopped.
    for mut answer in answers {
        assert!(matches!(
            answer.try_recv(),
            Ok(Ok(WriteOutcome::Written { .. }))
        ));
    }
    let reopened = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(
        reopened.get(&key(0), None).await.unwrap().unwrap().revision,
        50
    );
}

#[tokio::test]
async fn a_stored_resource_that_does_not_decode_is_internal() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    written(&store, put(resource(&key(0), "hook"))).await;
    written(&store, put(resource(&key(1), "hook"))).await;
    store.close().await.unwrap();
    side_connection(dir.path())
        .execute(
            "UPDATE policies SET resource = x'ffffffff' WHERE entitlement_id = ?1",
            [&key(0).entitlement_id],
        )
        .unwrap();
    // The store opens, serves the rest, and fails only the Get of the bad row.
    let store = SqliteStore::open(dir.path()).unwrap();
    match store.get(&key(0), None).await {
        Err(err @ StoreError::Internal(_)) => assert_eq!(err.to_string(), "storage failure"),
        other => panic!("expected Internal, got {other:?}"),
    }
    assert!(store.get(&key(1), None).await.unwrap().is_some());
}

#[tokio::test]
async fn revisions_are_append_only() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    written(&store, put(resource(&key(0), "hook"))).await;
    let side = side_connection(dir.path());
    assert!(
        side.execute("UPDATE revisions SET resource = x''", [])
            .is_err()
    );
    assert!(side.execute("DELETE FROM revisions", []).is_err());
    assert!(store.get(&key(0), Some(1)).await.unwrap().is_some());
}

#[test]
fn sqlite_failures_are_classified_without_leaking_details() {
    use rusqlite::ffi;
    let failure = |code| {
        rusqlite::Error::SqliteFailure(
            ffi::Error::new(code),
            Some("SELECT secret FROM /data/x".into()),
        )
    };
    for code in [
        ffi::SQLITE_BUSY,
        ffi::SQLITE_LOCKED,
        ffi::SQLITE_FULL,
        ffi::SQLITE_IOERR,
        ffi::SQLITE_CANTOPEN,
    ] {
        let err = StoreError::from(failure(code));
        assert!(matches!(err, StoreError::Unavailable(_)), "{code}: {err:?}");
        assert_eq!(err.to_string(), "storage unavailable");
    }
    for code in [
        ffi::SQLITE_CORRUPT,
        ffi::SQLITE_CONSTRAINT,
        ffi::SQLITE_MISUSE,
        ffi::SQLITE_NOTADB,
    ] {
        let err = StoreError::from(failure(code));
        assert!(matches!(err, StoreError::Internal(_)), "{code}: {err:?}");
        assert_eq!(err.to_string(), "storage failure");
    }
}

#[tokio::test]
async fn a_write_without_entitlement_fails_alone() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let keyless = pb::EntitlementProvisionPolicy {
        entitlement: None,
        ..resource(&key(0), "hook")
    };
    let result = store
        .write(Write {
            check: passing(),
            ..put(keyless)
        })
        .await;
    assert!(matches!(result, Err(StoreError::Internal(_))), "{result:?}");
    assert_eq!(
        written(&store, put(resource(&key(0), "hook")))
            .await
            .revision,
        1
    );
}

#[tokio::test]
async fn binding_operations_join_the_group_commit() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let (t, this, other) = (key(1), key(2), key(3));

    let release = hold_writer(&store);
    let before = store.commits();
    let created = store.create_binding(t.clone(), this.clone(), false);
    let duplicate = store.create_binding(t.clone(), this.clone(), true);
    // Its check sees the binding created earlier in the same transaction.
    let write = store.write(Write {
        check: rejecting_when({
            let (t, this) = (t.clone(), this.clone());
            move |lookup| Ok(!lookup.binding_exists(&t, &this)?)
        }),
        ..delegating(&this, [t.clone()])
    });
    let in_use = store.delete_binding(t.clone(), this.clone());
    let missing = store.delete_binding(this.clone(), t.clone());
    let unused = store.create_binding(other.clone(), this.clone(), true);
    let deleted = store.delete_binding(other.clone(), this.clone());
    drop(release);

    let created = created.await.unwrap();
    assert!(matches!(duplicate.await, Err(StoreError::AlreadyExists)));
    assert_eq!(written_now(write.await).revision, 1);
    match in_use.await {
        Err(StoreError::InUse { dependents }) => {
            assert_eq!(dependents, std::slice::from_ref(&this))
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(matches!(missing.await, Err(StoreError::NotFound)));
    unused.await.unwrap();
    deleted.await.unwrap();
    assert_eq!(store.commits() - before, 1, "one batch");
    assert_eq!(all_bindings(&store).await, [created]);
    assert_eq!(targets_of(&store, &this).await, Some(vec![t]));
}

/// The resource of a DelegatedProvision to `target`.
fn delegated_to(target: &pb::EntitlementRef) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy {
        typ: Some(pb::provision_policy::Typ::Delegated(
            pb::DelegatedProvision {
                app_id: target.app_id.clone(),
                entitlement_id: target.entitlement_id.clone(),
                implicit: false,
            },
        )),
    }
}

/// A database file of schema version 1, as a provisiond of that version left it.
fn version_1_database(dir: &Path, policies: &[(pb::EntitlementRef, Vec<u8>)]) {
    let path = database(dir);
    let mut conn = Connection::open(&path).unwrap();
    schema::migrate_to(&mut conn, 0, 1, &path).unwrap();
    for (key, resource) in policies {
        conn.execute(
            "INSERT INTO policies VALUES (?1, ?2, ?3, 1, 1000000, 1000000)",
            rusqlite::params![key.app_id, key.entitlement_id, resource],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO revisions VALUES (?1, ?2, 1, ?3, 1000000)",
            rusqlite::params![key.app_id, key.entitlement_id, resource],
        )
        .unwrap();
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 1);
}

#[tokio::test]
async fn a_version_1_database_migrates_with_its_delegation_edges() {
    let dir = TempDir::new().unwrap();
    let [this, plain, t, u, v] = [0, 1, 2, 3, 4].map(key);
    // Delegations in both policies and inside a MultiStep, one target twice.
    let delegating = pb::EntitlementProvisionPolicy {
        entitlement: Some(this.clone()),
        provision_policy: Some(pb::ProvisionPolicy {
            typ: Some(pb::provision_policy::Typ::MultiStep(pb::MultiStep {
                provision_steps: vec![delegated_to(&u), delegated_to(&t), delegated_to(&u)],
            })),
        }),
        deprovision_policy: Some(delegated_to(&v)),
        ..Default::default()
    };
    let encode = prost::Message::encode_to_vec;
    version_1_database(
        dir.path(),
        &[
            (this.clone(), encode(&delegating)),
            (plain.clone(), encode(&resource(&plain, "hook"))),
        ],
    );
    side_connection(dir.path())
        .execute(
            "INSERT INTO proxy_bindings VALUES (?1, ?2, ?3, ?4, 0, 2000000)",
            [
                &t.app_id,
                &t.entitlement_id,
                &this.app_id,
                &this.entitlement_id,
            ],
        )
        .unwrap();

    let store = SqliteStore::open(dir.path()).unwrap();
    let version: i64 = side_connection(dir.path())
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, LATEST);
    let stored = store.get(&this, Some(1)).await.unwrap().unwrap();
    assert_eq!(stored.resource, delegating);
    assert_eq!(store.get(&plain, None).await.unwrap().unwrap().revision, 1);
    assert_eq!(
        all_bindings(&store).await,
        [StoredBinding {
            source: t.clone(),
            destination: this.clone(),
            implicit: false,
            create_time: std::time::UNIX_EPOCH + std::time::Duration::from_secs(2),
        }]
    );

    assert_eq!(targets_of(&store, &this).await, Some(vec![t.clone(), u, v]));
    assert_eq!(targets_of(&store, &plain).await, Some(Vec::new()));
    assert!(matches!(
        store.delete_binding(t, this.clone()).await,
        Err(StoreError::InUse { .. })
    ));
    assert_eq!(
        written(&store, put(resource(&this, "hook"))).await.revision,
        2
    );
    assert_eq!(targets_of(&store, &this).await, Some(Vec::new()));
}

#[test]
fn a_version_1_resource_that_does_not_decode_stops_the_migration() {
    let dir = TempDir::new().unwrap();
    version_1_database(dir.path(), &[(key(0), vec![0xff; 4])]);

    match open_error(dir.path()) {
        OpenError::Migrate { version, .. } => assert_eq!(version, 2),
        other => panic!("expected Migrate, got {other:?}"),
    }
    // Nothing of version 2 was left behind.
    let side = side_connection(dir.path());
    let version: i64 = side
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, 1);
    let delegations: i64 = side
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'delegations'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(delegations, 0);
}

#[tokio::test]
async fn an_older_database_gets_a_change_log_of_its_revisions_in_write_order() {
    let dir = TempDir::new().unwrap();
    let (a, b) = (key(0), key(1));
    let encode = prost::Message::encode_to_vec;
    // Revision 1 of each at 1 s (version_1_database), then b's revision 2 at 3 s and a's at 5 s.
    version_1_database(
        dir.path(),
        &[
            (a.clone(), encode(&resource(&a, "a-1"))),
            (b.clone(), encode(&resource(&b, "b-1"))),
        ],
    );
    let side = side_connection(dir.path());
    for (key, hook, time) in [(&b, "b-2", 3_000_000), (&a, "a-2", 5_000_000)] {
        let bytes = encode(&resource(key, hook));
        side.execute(
            "INSERT INTO revisions VALUES (?1, ?2, 2, ?3, ?4)",
            rusqlite::params![key.app_id, key.entitlement_id, bytes, time],
        )
        .unwrap();
        side.execute(
            "UPDATE policies SET resource = ?3, revision = 2, update_time = ?4
             WHERE app_id = ?1 AND entitlement_id = ?2",
            rusqlite::params![key.app_id, key.entitlement_id, bytes, time],
        )
        .unwrap();
    }
    drop(side);

    let store = SqliteStore::open(dir.path()).unwrap();
    assert_eq!(store.head().await.unwrap(), 4);
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
        .list_policies(crate::store::PolicyQuery {
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
    assert!(
        side_connection(dir.path())
            .execute("UPDATE revisions SET revision = 9", [])
            .is_err()
    );
    assert_eq!(
        written(&store, put(resource(&b, "b-3"))).await.change_seq,
        5
    );
}

/// The in-memory state (the graph behind `has_dependants`, the current revisions a Get
/// answers) against the tables, after a random mix of delegating writes, deletes, binding
/// changes, and writes that do not stand (rejected, validate-only, stale), and after a reopen
/// that loads it from the tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_memory_state_agrees_with_the_tables_after_random_writes() {
    let dir = TempDir::new().unwrap();
    let keys: Vec<pb::EntitlementRef> = (0..6).map(key).collect();
    let mut next = crate::store::contract_current::xorshift(0x9e37_79b9_7f4a_7c15);
    let agree = |store: &SqliteStore, keys: &[pb::EntitlementRef], when: &str| {
        let side = side_connection(dir.path());
        let mut depended_on = 0;
        for key in keys {
            let table = super::queries::has_dependants(&side, key).unwrap();
            let memory = futures_block(store.has_dependants(key)).unwrap();
            assert_eq!(memory, table, "{when}: {key:?}");
            let stored = super::queries::current(&side, key).unwrap();
            let current = futures_block(store.get(key, None)).unwrap();
            assert_eq!(current, stored, "{when}: the current revision of {key:?}");
            depended_on += usize::from(memory);
        }
        depended_on
    };
    let mut seen_depended_on = 0;
    let store = SqliteStore::open(dir.path()).unwrap();
    for round in 0..300 {
        crate::store::contract_current::mutate_at_random(&store, &keys, &mut next).await;
        seen_depended_on += agree(&store, &keys, &format!("round {round}"));
    }
    assert!(
        seen_depended_on > 100,
        "the mix builds a graph: {seen_depended_on}"
    );
    let live = store.current.held();
    assert!(live > 0, "the mix leaves live policies");
    store.close().await.unwrap();
    let reopened = SqliteStore::open(dir.path()).unwrap();
    agree(&reopened, &keys, "after reopen");
    assert_eq!(reopened.current.held(), live);
}

/// Polls a future that is ready at once (an in-memory answer) without a runtime.
fn futures_block<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("not ready at once"),
    }
}

#[tokio::test]
async fn revisions_from_before_the_audit_trail_read_as_written_by_nobody_known() {
    let dir = TempDir::new().unwrap();
    let old = key(0);
    let encode = prost::Message::encode_to_vec;
    version_1_database(dir.path(), &[(old.clone(), encode(&resource(&old, "old")))]);

    let store = SqliteStore::open(dir.path()).unwrap();
    let current = store.get(&old, None).await.unwrap().unwrap();
    // Unknown, which `anonymous` (a write with authentication off) would misstate.
    assert_eq!(
        (current.actor.as_str(), current.change_cause.as_str()),
        ("", "")
    );
    let log = store.read_changes(0, 10).await.unwrap();
    assert_eq!(log[0].changes[0].actor, "");
    let newer = Write {
        actor: "alice".into(),
        change_cause: "after the upgrade".into(),
        ..put(resource(&old, "new"))
    };
    written(&store, newer).await;
    let history = store
        .list_revisions(crate::store::RevisionQuery {
            entitlement: old.clone(),
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    let actors: Vec<_> = history
        .iter()
        .map(|e| (e.record.revision, e.record.actor.as_str()))
        .collect();
    assert_eq!(actors, [(2, "alice"), (1, "")]);
}
