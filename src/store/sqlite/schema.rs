//! The schema, versioned in code: `PRAGMA user_version` is the number of migrations applied.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::OpenError;

/// Marks the file as provisiond's (`PRAGMA application_id`, ASCII "PRVD"), so that the database
/// of another program is refused instead of being migrated.
pub(super) const APPLICATION_ID: i32 = 0x5052_5644;

/// One step per schema version, applied in order. A released step is never edited: append one.
const MIGRATIONS: &[&str] = &[
    // 1: times are unix microseconds; resources are encoded `EntitlementProvisionPolicy` bytes
    // with the output-only fields cleared (the proto is the schema).
    "
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
    ",
];

/// The schema version this code writes and reads.
pub(super) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings the schema from `current` to [`LATEST`] in one transaction, so a crash mid-way leaves
/// the previous version intact.
pub(super) fn migrate(conn: &mut Connection, current: i64, path: &Path) -> Result<(), OpenError> {
    let Some(pending) = usize::try_from(current)
        .ok()
        .and_then(|applied| MIGRATIONS.get(applied..))
    else {
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
        tx.execute_batch(step).map_err(failed(version))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(failed(version))?;
    }
    tx.commit().map_err(failed(LATEST))
}
