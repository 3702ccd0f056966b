//! The schema, versioned in code: `PRAGMA user_version` is the number of migrations applied.

use std::path::Path;

use prost::Message;
use rusqlite::types::Type;
use rusqlite::{Connection, TransactionBehavior, params};

use super::OpenError;
use crate::pb;
use crate::policy::walk;

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
