//! The schema, versioned in code: `PRAGMA user_version` is the number of migrations applied.

use std::path::Path;

use prost::Message;
use rusqlite::types::Type;
use rusqlite::{Connection, TransactionBehavior, params};

use super::OpenError;
use crate::pb;
use crate::policy::walk;
use crate::store::changes;

/// Marks the file as provisiond's (`PRAGMA application_id`, ASCII "PRVD"), so that the database
/// of another program is refused instead of being migrated.
pub(super) const APPLICATION_ID: i32 = 0x5052_5644;

/// One schema version: its SQL, then the Rust that fills what SQL cannot (data kept as encoded
/// protobuf).
struct Migration {
    sql: &'static str,
    backfill: Option<fn(&Connection) -> rusqlite::Result<()>>,
}

/// One step per schema version, applied in order. A released step is never edited: append one.
const MIGRATIONS: &[Migration] = &[
    Migration {
        sql: V1,
        backfill: None,
    },
    Migration {
        sql: V2,
        backfill: Some(backfill_delegations),
    },
    Migration {
        sql: V3,
        backfill: Some(backfill_change_log),
    },
    Migration {
        sql: V4,
        backfill: None,
    },
];

/// 1: times are unix microseconds; resources are encoded `EntitlementProvisionPolicy` bytes
/// with the output-only fields cleared (the proto is the schema).
const V1: &str = "
    CREATE TABLE policies (
        app_id         TEXT    NOT NULL,
        entitlement_id TEXT    NOT NULL,
        resource       BLOB    NOT NULL,
        revision       INTEGER NOT NULL CHECK (revision >= 1),
        create_time    INTEGER NOT NULL,
        update_time    INTEGER NOT NULL,
        PRIMARY KEY (app_id, entitlement_id)
    ) STRICT;

    CREATE TABLE revisions (
        app_id         TEXT    NOT NULL,
        entitlement_id TEXT    NOT NULL,
        revision       INTEGER NOT NULL CHECK (revision >= 1),
        resource       BLOB    NOT NULL,
        update_time    INTEGER NOT NULL,
        PRIMARY KEY (app_id, entitlement_id, revision)
    ) STRICT;

    -- History is what later history and watch RPCs serve; a bug must not be able to rewrite it.
    CREATE TRIGGER revisions_no_update BEFORE UPDATE ON revisions
    BEGIN SELECT RAISE(ABORT, 'revisions are append-only'); END;
    CREATE TRIGGER revisions_no_delete BEFORE DELETE ON revisions
    BEGIN SELECT RAISE(ABORT, 'revisions are append-only'); END;

    CREATE TABLE proxy_bindings (
        source_app_id              TEXT    NOT NULL,
        source_entitlement_id      TEXT    NOT NULL,
        destination_app_id         TEXT    NOT NULL,
        destination_entitlement_id TEXT    NOT NULL,
        implicit                   INTEGER NOT NULL CHECK (implicit IN (0, 1)),
        create_time                INTEGER NOT NULL,
        PRIMARY KEY (source_app_id, source_entitlement_id,
                     destination_app_id, destination_entitlement_id)
    ) STRICT;

    CREATE INDEX proxy_bindings_by_destination
        ON proxy_bindings (destination_app_id, destination_entitlement_id);
    ";

/// 2: the delegation edges of each current resource, which the delegation rules follow and which
/// keep a binding in use. `proxy_bindings` (version 1) already has `implicit` and `create_time`.
const V2: &str = "
    CREATE TABLE delegations (
        app_id                TEXT NOT NULL,
        entitlement_id        TEXT NOT NULL,
        target_app_id         TEXT NOT NULL,
        target_entitlement_id TEXT NOT NULL,
        PRIMARY KEY (app_id, entitlement_id, target_app_id, target_entitlement_id),
        FOREIGN KEY (app_id, entitlement_id) REFERENCES policies (app_id, entitlement_id)
    ) STRICT, WITHOUT ROWID;

    -- Who delegates to an entitlement: what a cycle walk backwards and a binding delete read.
    CREATE INDEX delegations_by_target
        ON delegations (target_app_id, target_entitlement_id);
    ";

/// 3: the change log, tombstones and the store's id. Each revision records its position in the
/// log (`change_seq`); a delete is a revision with `deleted` set, whose resource holds only the
/// entitlement; `policies.deleted` marks an entitlement whose head is a tombstone. The triggers
/// that keep `revisions` append-only are dropped for the backfill and made again after it.
const V3: &str = "
    ALTER TABLE policies ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1));
    ALTER TABLE revisions ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0
        CHECK (deleted IN (0, 1));
    ALTER TABLE revisions ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0
        CHECK (change_seq >= 0);
    DROP TRIGGER revisions_no_update;

    -- One row per mutation that stood, numbered from 1 in commit order without gaps; the payload
    -- is an encoded WatchProvisionPoliciesResponse (its changes and commit_time).
    CREATE TABLE changes (
        seq         INTEGER PRIMARY KEY CHECK (seq >= 1),
        commit_time INTEGER NOT NULL,
        payload     BLOB    NOT NULL
    ) STRICT;
    CREATE TRIGGER changes_no_update BEFORE UPDATE ON changes
    BEGIN SELECT RAISE(ABORT, 'the change log is append-only'); END;
    CREATE TRIGGER changes_no_delete BEFORE DELETE ON changes
    BEGIN SELECT RAISE(ABORT, 'the change log is append-only'); END;

    -- The store's id (cursors carry it) and the log's head: the writer takes the next position
    -- from here inside each mutation's savepoint.
    CREATE TABLE store_log (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        store_id  TEXT    NOT NULL,
        head      INTEGER NOT NULL CHECK (head >= 0)
    ) STRICT;
    ";

/// 4: the audit trail. Each revision records who wrote it (`actor`, the principal) and why
/// (`change_cause`, from the request). Revisions stored before read as '' for both: their
/// writer is unknown, which is not the same as `anonymous`. Adding a column fires no trigger,
/// so `revisions` stays append-only throughout.
const V4: &str = "
    ALTER TABLE revisions ADD COLUMN actor TEXT NOT NULL DEFAULT '';
    ALTER TABLE revisions ADD COLUMN change_cause TEXT NOT NULL DEFAULT '';
    ";

/// Numbers the revisions stored before version 3 in the order they were written and gives each
/// a PUT entry in the log, so that a listing at any point and a watch from the start see them.
fn backfill_change_log(conn: &Connection) -> rusqlite::Result<()> {
    let mut select = conn.prepare(
        "SELECT app_id, entitlement_id, revision, resource, update_time FROM revisions
         ORDER BY update_time, app_id, entitlement_id, revision",
    )?;
    let old = select
        .query_map([], |row| {
            Ok(changes::OldRevision {
                entitlement: pb::EntitlementRef {
                    app_id: row.get(0)?,
                    entitlement_id: row.get(1)?,
                },
                revision: row.get(2)?,
                resource: row.get(3)?,
                update_time_micros: row.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let keys: Vec<(pb::EntitlementRef, i64)> = old
        .iter()
        .map(|o| (o.entitlement.clone(), o.revision))
        .collect();
    let entries = changes::backfill(old)
        .map_err(|err| rusqlite::Error::FromSqlConversionFailure(3, Type::Blob, err.into()))?;
    let mut number = conn.prepare(
        "UPDATE revisions SET change_seq = ?4
         WHERE app_id = ?1 AND entitlement_id = ?2 AND revision = ?3",
    )?;
    let mut append =
        conn.prepare("INSERT INTO changes (seq, commit_time, payload) VALUES (?1, ?2, ?3)")?;
    for ((key, revision), entry) in keys.iter().zip(&entries) {
        let seq = i64::try_from(entry.seq).unwrap_or(i64::MAX);
        number.execute(params![key.app_id, key.entitlement_id, revision, seq])?;
        append.execute(params![seq, entry.commit_time_micros, entry.payload])?;
    }
    conn.execute(
        "INSERT INTO store_log (singleton, store_id, head) VALUES (1, ?1, ?2)",
        params![changes::new_store_id(), entries.len() as i64],
    )?;
    conn.execute_batch(
        "CREATE TRIGGER revisions_no_update BEFORE UPDATE ON revisions
         BEGIN SELECT RAISE(ABORT, 'revisions are append-only'); END;",
    )
}

/// The edges of the resources stored before version 2, read from their bytes the way the
/// service derives them on a write: every DelegatedProvision in either policy.
fn backfill_delegations(conn: &Connection) -> rusqlite::Result<()> {
    let mut policies = conn.prepare("SELECT app_id, entitlement_id, resource FROM policies")?;
    let mut insert = conn.prepare(
        "INSERT OR IGNORE INTO delegations
           (app_id, entitlement_id, target_app_id, target_entitlement_id)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut rows = policies.query([])?;
    while let Some(row) = rows.next()? {
        let (app_id, entitlement_id): (String, String) = (row.get(0)?, row.get(1)?);
        let resource = pb::EntitlementProvisionPolicy::decode(row.get_ref(2)?.as_blob()?)
            .map_err(|err| rusqlite::Error::FromSqlConversionFailure(2, Type::Blob, err.into()))?;
        for (_, target) in walk::delegations(&resource) {
            insert.execute(params![
                app_id,
                entitlement_id,
                target.app_id,
                target.entitlement_id
            ])?;
        }
    }
    Ok(())
}

/// The schema version this code writes and reads.
pub(super) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the schema from `current` to [`LATEST`] in one transaction, so a crash mid-way leaves
/// the previous version intact.
pub(super) fn migrate(conn: &mut Connection, current: i64, path: &Path) -> Result<(), OpenError> {
    migrate_to(conn, current, LATEST, path)
}

/// Brings the schema from `current` to `target` (tests build the files of older versions).
pub(super) fn migrate_to(
    conn: &mut Connection,
    current: i64,
    target: i64,
    path: &Path,
) -> Result<(), OpenError> {
    let pending = usize::try_from(current)
        .ok()
        .zip(usize::try_from(target).ok())
        .and_then(|(applied, target)| MIGRATIONS.get(applied..target));
    let Some(pending) = pending else {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found: current,
            known: LATEST,
        });
    };
    if pending.is_empty() {
        return Ok(());
    }
    let failed = |version: i64| {
        move |source| OpenError::Migrate {
            path: path.to_owned(),
            version,
            source,
        }
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(failed(current + 1))?;
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(failed(current + 1))?;
    for (version, step) in (current + 1..).zip(pending) {
        tx.execute_batch(step.sql).map_err(failed(version))?;
        if let Some(backfill) = step.backfill {
            backfill(&tx).map_err(failed(version))?;
        }
        tx.pragma_update(None, "user_version", version)
            .map_err(failed(version))?;
    }
    tx.commit().map_err(failed(target))
}
