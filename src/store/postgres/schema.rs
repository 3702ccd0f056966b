//! The schema, versioned in code and migrated at open: `provisiond_schema.version` is the number
//! of migrations applied. Replicas that start together serialize on an advisory lock, so each
//! step runs once; every step and its version bump commit together (PostgreSQL DDL is
//! transactional), so a crash mid-way leaves the previous version intact.

use tokio_postgres::{Client, Transaction};

use super::error::OpenError;
use super::locks::LockKey;
use crate::pb;
use crate::store::changes;

/// One schema version: its SQL, then the Rust that fills what SQL cannot (data kept as encoded
/// protobuf).
struct Migration {
    sql: &'static str,
    backfill: Option<Backfill>,
}

/// The Rust half of a step; an enum rather than a function pointer because each is async.
#[derive(Clone, Copy)]
enum Backfill {
    ChangeLog,
}

/// Why a migration's backfill failed.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Decode(#[from] changes::DecodeError),
}

/// One step per schema version, applied in order. A released step is never edited: append one.
///
/// Ids are `COLLATE "C"`, so that keys compare and sort bytewise as in SQLite whatever the
/// database's collation: the binding list order and its pages depend on it.
const MIGRATIONS: &[Migration] = &[
    Migration {
        sql: V1,
        backfill: None,
    },
    Migration {
        sql: V2,
        backfill: Some(Backfill::ChangeLog),
    },
    Migration {
        sql: V3,
        backfill: None,
    },
];

/// 1: times are unix microseconds; resources are encoded `EntitlementProvisionPolicy` bytes
/// with the output-only fields cleared (the proto is the schema).
const V1: &str = r#"
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
    "#;

/// 2: the change log, tombstones and the store's id. Each revision records its position in the
/// log (`change_seq`); a delete is a revision with `deleted` set, whose resource holds only the
/// entitlement; `policies.deleted` marks an entitlement whose head is a tombstone. The trigger
/// that keeps `revisions` append-only is disabled for the backfill and enabled after it, all in
/// the migration's transaction.
const V2: &str = r#"
    ALTER TABLE policies ADD COLUMN deleted boolean NOT NULL DEFAULT false;
    ALTER TABLE revisions ADD COLUMN deleted boolean NOT NULL DEFAULT false;
    ALTER TABLE revisions ADD COLUMN change_seq bigint NOT NULL DEFAULT 0
        CHECK (change_seq >= 0);
    ALTER TABLE revisions DISABLE TRIGGER revisions_append_only;

    -- Who delegates to an entitlement: what a delete's dependants check reads.
    CREATE INDEX delegations_by_target
        ON delegations (target_app_id, target_entitlement_id);

    -- One row per mutation that stood, numbered from 1 in commit order without gaps; the payload
    -- is an encoded WatchProvisionPoliciesResponse (its changes and commit_time).
    CREATE TABLE changes (
        seq         bigint PRIMARY KEY CHECK (seq >= 1),
        commit_time bigint NOT NULL,
        payload     bytea  NOT NULL
    );
    CREATE FUNCTION provisiond_changes_are_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the change log is append-only';
    END
    $$;
    CREATE TRIGGER changes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON changes
        FOR EACH STATEMENT EXECUTE FUNCTION provisiond_changes_are_append_only();

    -- The store's id (cursors carry it) and the log's head: the writer takes the next position
    -- from here inside each mutation's savepoint, under the write lock.
    CREATE TABLE provisiond_log (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        store_id  text   NOT NULL,
        head      bigint NOT NULL CHECK (head >= 0)
    );
    "#;

/// 3: the audit trail. Each revision records who wrote it (`actor`, the principal) and why
/// (`change_cause`, from the request). Revisions stored before read as '' for both: their
/// writer is unknown, which is not the same as `anonymous`. ALTER TABLE fires no trigger, so
/// `revisions` stays append-only throughout.
const V3: &str = "
    ALTER TABLE revisions
        ADD COLUMN actor text NOT NULL DEFAULT '',
        ADD COLUMN change_cause text NOT NULL DEFAULT '';
    ";

/// Numbers the revisions stored before version 2 in the order they were written and gives each
/// a PUT entry in the log, so that a listing at any point and a watch from the start see them.
async fn backfill_change_log(tx: &Transaction<'_>) -> Result<(), BackfillError> {
    let rows = tx
        .query(
            "SELECT app_id, entitlement_id, revision, resource, update_time FROM revisions
             ORDER BY update_time, app_id, entitlement_id, revision",
            &[],
        )
        .await?;
    let mut old = Vec::with_capacity(rows.len());
    for row in &rows {
        old.push(changes::OldRevision {
            entitlement: pb::EntitlementRef {
                app_id: row.try_get(0)?,
                entitlement_id: row.try_get(1)?,
            },
            revision: row.try_get(2)?,
            resource: row.try_get(3)?,
            update_time_micros: row.try_get(4)?,
        });
    }
    let apps: Vec<String> = old.iter().map(|o| o.entitlement.app_id.clone()).collect();
    let entitlements: Vec<String> = old
        .iter()
        .map(|o| o.entitlement.entitlement_id.clone())
        .collect();
    let revisions: Vec<i64> = old.iter().map(|o| o.revision).collect();
    let entries = changes::backfill(old)?;
    let seqs: Vec<i64> = entries
        .iter()
        .map(|e| i64::try_from(e.seq).unwrap_or(i64::MAX))
        .collect();
    let times: Vec<i64> = entries.iter().map(|e| e.commit_time_micros).collect();
    let payloads: Vec<&[u8]> = entries.iter().map(|e| e.payload.as_slice()).collect();
    // Whole arrays, so a large history costs three statements, not three per revision.
    tx.execute(
        "UPDATE revisions AS r SET change_seq = n.seq
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])
           AS n (app_id, entitlement_id, revision, seq)
         WHERE r.app_id = n.app_id AND r.entitlement_id = n.entitlement_id
           AND r.revision = n.revision",
        &[&apps, &entitlements, &revisions, &seqs],
    )
    .await?;
    tx.execute(
        "INSERT INTO changes (seq, commit_time, payload)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[])",
        &[&seqs, &times, &payloads],
    )
    .await?;
    let head = i64::try_from(entries.len()).unwrap_or(i64::MAX);
    tx.execute(
        "INSERT INTO provisiond_log (store_id, head) VALUES ($1, $2)",
        &[&changes::new_store_id(), &head],
    )
    .await?;
    tx.batch_execute("ALTER TABLE revisions ENABLE TRIGGER revisions_append_only")
        .await?;
    Ok(())
}

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
    migrate_to(client, lock, LATEST).await
}

/// Brings the schema to version `target` (tests build the schemas of older versions).
pub(super) async fn migrate_to(
    client: &mut Client,
    lock: LockKey,
    target: i32,
) -> Result<(), OpenError> {
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
    let pending = usize::try_from(current)
        .ok()
        .zip(usize::try_from(target).ok())
        .and_then(|(applied, target)| MIGRATIONS.get(applied..target));
    let Some(pending) = pending else {
        return Err(OpenError::TooNew {
            found: current,
            known: LATEST,
        });
    };
    if pending.is_empty() {
        return Ok(());
    }
    for (version, step) in (current + 1..).zip(pending) {
        tx.batch_execute(step.sql).await.map_err(failed(version))?;
        match step.backfill {
            Some(Backfill::ChangeLog) => backfill_change_log(&tx)
                .await
                .map_err(|source| OpenError::Backfill { version, source })?,
            None => {}
        }
    }
    tx.execute(
        "INSERT INTO provisiond_schema (version) VALUES ($1)
         ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
        &[&target],
    )
    .await
    .map_err(failed(target))?;
    tx.commit().await.map_err(failed(target))?;
    tracing::info!(
        from = current,
        to = target,
        "migrated the PostgreSQL schema"
    );
    Ok(())
}
