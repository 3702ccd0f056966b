//! The schema, versioned in code and migrated at open: `provisiond_schema.version` is the number
//! of migrations applied. Replicas that start together serialize on an advisory lock, so each
//! step runs once; every step and its version bump commit together (PostgreSQL DDL is
//! transactional), so a crash mid-way leaves the previous version intact.

use tokio_postgres::Client;

use super::error::OpenError;
use super::locks::LockKey;

/// One step per schema version, applied in order. A released step is never edited: append one.
///
/// Ids are `COLLATE "C"`, so that keys compare and sort bytewise as in SQLite whatever the
/// database's collation: the binding list order and its pages depend on it.
const MIGRATIONS: &[&str] = &[
    // 1: times are unix microseconds; resources are encoded `EntitlementProvisionPolicy` bytes
    // with the output-only fields cleared (the proto is the schema).
    r#"
    CREATE TABLE policies (
        app_id         text COLLATE "C" NOT NULL,
        entitlement_id text COLLATE "C" NOT NULL,
        resource       bytea  NOT NULL,
        revision       bigint NOT NULL CHECK (revision >= 1),
        create_time    bigint NOT NULL,
        update_time    bigint NOT NULL,
        PRIMARY KEY (app_id, entitlement_id)
    );

    CREATE TABLE revisions (
        app_id         text COLLATE "C" NOT NULL,
        entitlement_id text COLLATE "C" NOT NULL,
        revision       bigint NOT NULL CHECK (revision >= 1),
        resource       bytea  NOT NULL,
        update_time    bigint NOT NULL,
        PRIMARY KEY (app_id, entitlement_id, revision)
    );

    -- History is what later history and watch RPCs serve; a bug must not be able to rewrite it.
    CREATE FUNCTION provisiond_revisions_are_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'revisions are append-only';
    END
    $$;
    CREATE TRIGGER revisions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON revisions
        FOR EACH STATEMENT EXECUTE FUNCTION provisiond_revisions_are_append_only();

    -- The delegation edges of each current resource: entitlement -> the entitlements it
    -- delegates to. Replaced with every write of the entitlement.
    CREATE TABLE delegations (
        app_id                text COLLATE "C" NOT NULL,
        entitlement_id        text COLLATE "C" NOT NULL,
        target_app_id         text COLLATE "C" NOT NULL,
        target_entitlement_id text COLLATE "C" NOT NULL,
        PRIMARY KEY (app_id, entitlement_id, target_app_id, target_entitlement_id),
        FOREIGN KEY (app_id, entitlement_id) REFERENCES policies (app_id, entitlement_id)
    );

    CREATE TABLE proxy_bindings (
        source_app_id              text COLLATE "C" NOT NULL,
        source_entitlement_id      text COLLATE "C" NOT NULL,
        destination_app_id         text COLLATE "C" NOT NULL,
        destination_entitlement_id text COLLATE "C" NOT NULL,
        implicit                   boolean NOT NULL,
        create_time                bigint  NOT NULL,
        PRIMARY KEY (source_app_id, source_entitlement_id,
                     destination_app_id, destination_entitlement_id)
    );

    CREATE INDEX proxy_bindings_by_destination
        ON proxy_bindings (destination_app_id, destination_entitlement_id);
    "#,
];

/// The schema version this code writes and reads.
pub(super) const LATEST: i32 = MIGRATIONS.len() as i32;

/// The table that holds the version. Created by the first open, outside the numbered steps.
const VERSION_TABLE: &str = "
    CREATE TABLE IF NOT EXISTS provisiond_schema (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        version   integer NOT NULL
    )";

/// Brings the schema of the session's current schema to [`LATEST`], in one transaction under
/// the migration lock: safe when several replicas open the same database at once, and a no-op
/// when the schema is current.
pub(super) async fn migrate(client: &mut Client, lock: LockKey) -> Result<(), OpenError> {
    let failed = |version: i32| move |source| OpenError::Migrate { version, source };
    let tx = client.transaction().await.map_err(failed(LATEST))?;
    // Taken before anything else, so a replica that waited sees what the first one created.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&lock.class, &lock.object],
    )
    .await
    .map_err(failed(LATEST))?;
    tx.batch_execute(VERSION_TABLE)
        .await
        .map_err(failed(LATEST))?;
    let current: i32 = tx
        .query_opt("SELECT version FROM provisiond_schema", &[])
        .await
        .map_err(failed(LATEST))?
        .map_or(0, |row| row.get(0));
    let Some(pending) = usize::try_from(current)
        .ok()
        .and_then(|applied| MIGRATIONS.get(applied..))
    else {
        return Err(OpenError::TooNew {
            found: current,
            known: LATEST,
        });
    };
    if pending.is_empty() {
        return Ok(());
    }
    for (version, step) in (current + 1..).zip(pending) {
        tx.batch_execute(step).await.map_err(failed(version))?;
    }
    tx.execute(
        "INSERT INTO provisiond_schema (version) VALUES ($1)
         ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
        &[&LATEST],
    )
    .await
    .map_err(failed(LATEST))?;
    tx.commit().await.map_err(failed(LATEST))?;
    tracing::info!(
        from = current,
        to = LATEST,
        "migrated the PostgreSQL schema"
    );
    Ok(())
}
