//! The SQL of the store and the decoding of its rows, shared by the writer and the readers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use tokio_postgres::{Client, Row, Statement};

use super::error::Failure;
use crate::pb;
use crate::store::changes::{self, ChangeSet};
use crate::store::current::EncodedRevision;
use crate::store::{HistoryEntry, StoreError, StoredBinding, StoredRevision};

/// Now, in unix microseconds, by the database's clock: one clock for every replica.
const NOW_MICROS: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

pub(super) const CURRENT: &str = "
    SELECT p.resource, p.revision, p.create_time, p.update_time, r.change_seq,
           r.actor, r.change_cause
    FROM policies AS p
    JOIN revisions AS r
      ON r.app_id = p.app_id AND r.entitlement_id = p.entitlement_id AND r.revision = p.revision
    WHERE p.app_id = $1 AND p.entitlement_id = $2 AND NOT p.deleted";

/// Every live current revision with its key, for the in-memory state at open.
pub(super) const ALL_CURRENT: &str = "
    SELECT p.resource, p.revision, p.create_time, p.update_time, r.change_seq,
           r.actor, r.change_cause, p.app_id, p.entitlement_id
    FROM policies AS p
    JOIN revisions AS r
      ON r.app_id = p.app_id AND r.entitlement_id = p.entitlement_id AND r.revision = p.revision
    WHERE NOT p.deleted";

/// Every delegation edge and every proxy binding, for the in-memory state at open.
pub(super) const ALL_DELEGATIONS: &str = "
    SELECT app_id, entitlement_id, target_app_id, target_entitlement_id
    FROM delegations";
pub(super) const ALL_BINDINGS: &str = "
    SELECT source_app_id, source_entitlement_id, destination_app_id, destination_entitlement_id
    FROM proxy_bindings";

/// One statement, so the revision and the create time (that of revision 1) come from one
/// snapshot.
pub(super) const AT_REVISION: &str = "
    SELECT r.resource, r.revision, first.update_time, r.update_time, r.change_seq,
           r.actor, r.change_cause
    FROM revisions AS r
    JOIN revisions AS first
      ON first.app_id = r.app_id AND first.entitlement_id = r.entitlement_id
     AND first.revision = 1
    WHERE r.app_id = $1 AND r.entitlement_id = $2 AND r.revision = $3 AND NOT r.deleted";

/// A revision is the state of its entitlement at `$1` when it is the newest of the entitlement
/// written at or before it. Walks the primary key in order from `after`, so a page costs its own
/// rows (and the history of their entitlements), not the whole table.
pub(super) const LIST_POLICIES: &str = "
    SELECT r.resource, r.revision, first.update_time, r.update_time, r.change_seq,
           r.actor, r.change_cause
    FROM revisions AS r
    JOIN revisions AS first
      ON first.app_id = r.app_id AND first.entitlement_id = r.entitlement_id
     AND first.revision = 1
    WHERE (r.app_id, r.entitlement_id) > ($2::text, $3::text)
      AND ($4::text IS NULL OR r.app_id = $4)
      AND r.change_seq <= $1 AND NOT r.deleted
      AND NOT EXISTS (
        SELECT 1 FROM revisions AS later
        WHERE later.app_id = r.app_id AND later.entitlement_id = r.entitlement_id
          AND later.revision > r.revision AND later.change_seq <= $1)
    ORDER BY r.app_id, r.entitlement_id
    LIMIT $5";

/// Tombstones included: they are part of the history.
pub(super) const LIST_REVISIONS: &str = "
    SELECT r.resource, r.revision, first.update_time, r.update_time, r.change_seq,
           r.actor, r.change_cause, r.deleted
    FROM revisions AS r
    JOIN revisions AS first
      ON first.app_id = r.app_id AND first.entitlement_id = r.entitlement_id
     AND first.revision = 1
    WHERE r.app_id = $1 AND r.entitlement_id = $2 AND r.revision < $3
    ORDER BY r.revision DESC
    LIMIT $4";

/// The log entries after `$1`, at most `$2`.
pub(super) const READ_CHANGES: &str =
    "SELECT seq, commit_time, payload FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2";

/// The position of the last committed mutation.
pub(super) const HEAD: &str = "SELECT head FROM provisiond_log";

/// Live resources and bindings, for the metrics endpoint.
pub(super) const COUNTS: &str = "
    SELECT (SELECT count(*) FROM policies WHERE NOT deleted),
           (SELECT count(*) FROM proxy_bindings)";

pub(super) const HAS_DEPENDANTS: &str = "
    SELECT EXISTS (SELECT 1 FROM delegations
    WHERE target_app_id = $1 AND target_entitlement_id = $2
      AND NOT (app_id = $1 AND entitlement_id = $2))";

/// The entitlements other than $1/$2 whose current resources delegate to it.
pub(super) const DEPENDANTS: &str = "
    SELECT app_id, entitlement_id FROM delegations
    WHERE target_app_id = $1 AND target_entitlement_id = $2
      AND NOT (app_id = $1 AND entitlement_id = $2)
    ORDER BY app_id, entitlement_id";

/// The store's id and the head, read once at open.
pub(super) const LOG_STATE: &str = "SELECT store_id, head FROM provisiond_log";

/// No row: no stored resource. One row with NULL targets: a resource that delegates nowhere.
pub(super) const DELEGATION_TARGETS: &str = "
    SELECT d.target_app_id, d.target_entitlement_id
    FROM policies AS p
    LEFT JOIN delegations AS d
      ON d.app_id = p.app_id AND d.entitlement_id = p.entitlement_id
    WHERE p.app_id = $1 AND p.entitlement_id = $2 AND NOT p.deleted
    ORDER BY d.target_app_id, d.target_entitlement_id";

pub(super) const BINDING_EXISTS: &str = "
    SELECT EXISTS (SELECT 1 FROM proxy_bindings
    WHERE source_app_id = $1 AND source_entitlement_id = $2
      AND destination_app_id = $3 AND destination_entitlement_id = $4)";

/// Each filter is optional (NULL); `after` is a position in the list order, compared as a row.
pub(super) const LIST_BINDINGS: &str = "
    SELECT source_app_id, source_entitlement_id, destination_app_id, destination_entitlement_id,
           implicit, create_time
    FROM proxy_bindings
    WHERE ($1::text IS NULL OR (source_app_id = $1 AND source_entitlement_id = $2))
      AND ($3::text IS NULL OR (destination_app_id = $3 AND destination_entitlement_id = $4))
      AND ($5::text IS NULL
           OR (source_app_id, source_entitlement_id, destination_app_id, destination_entitlement_id)
              > ($5, $6, $7, $8))
    ORDER BY source_app_id, source_entitlement_id, destination_app_id, destination_entitlement_id
    LIMIT $9";

/// The statements of the writer, prepared once per connection.
pub(super) struct Statements {
    /// Always one row: the database's now, and the head of the entitlement (NULLs if none).
    pub head: Statement,
    /// [`Self::head`] with the head's resource, log position, actor and cause: what a delete
    /// reads.
    pub delete_head: Statement,
    /// The entitlements other than `$1/$2` whose current resources delegate to it.
    pub dependants: Statement,
    /// Takes the next position of the log; inside the mutation's savepoint, so a mutation that
    /// does not stand gives it back.
    pub next_seq: Statement,
    /// Appends the entry at the position [`Self::next_seq`] took.
    pub append_change: Statement,
    pub insert_revision: Statement,
    pub upsert_policy: Statement,
    pub delete_edges: Statement,
    pub insert_edges: Statement,
    pub insert_implicit_bindings: Statement,
    pub create_binding: Statement,
    pub delete_binding: Statement,
    pub delegation_targets: Statement,
    pub binding_exists: Statement,
}

impl Statements {
    pub(super) async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        let head = format!(
            "SELECT {NOW_MICROS}, p.revision, p.create_time, p.update_time, p.deleted
             FROM (SELECT 1) AS one
             LEFT JOIN policies AS p ON p.app_id = $1 AND p.entitlement_id = $2"
        );
        let delete_head = format!(
            "SELECT {NOW_MICROS}, p.revision, p.create_time, p.update_time, p.deleted,
                    p.resource, r.change_seq, r.actor, r.change_cause
             FROM (SELECT 1) AS one
             LEFT JOIN policies AS p ON p.app_id = $1 AND p.entitlement_id = $2
             LEFT JOIN revisions AS r
               ON r.app_id = p.app_id AND r.entitlement_id = p.entitlement_id
              AND r.revision = p.revision"
        );
        let insert_implicit_bindings = format!(
            "INSERT INTO proxy_bindings
               (source_app_id, source_entitlement_id,
                destination_app_id, destination_entitlement_id, implicit, create_time)
             SELECT s.app_id, s.entitlement_id, $3, $4, true, {NOW_MICROS}
             FROM unnest($1::text[], $2::text[]) AS s (app_id, entitlement_id)
             ON CONFLICT DO NOTHING
             RETURNING source_app_id, source_entitlement_id, create_time"
        );
        let create_binding = format!(
            "INSERT INTO proxy_bindings
               (source_app_id, source_entitlement_id,
                destination_app_id, destination_entitlement_id, implicit, create_time)
             VALUES ($1, $2, $3, $4, $5, {NOW_MICROS})
             ON CONFLICT DO NOTHING
             RETURNING create_time"
        );
        Ok(Self {
            head: client.prepare(&head).await?,
            delete_head: client.prepare(&delete_head).await?,
            dependants: client.prepare(DEPENDANTS).await?,
            next_seq: client
                .prepare("UPDATE provisiond_log SET head = head + 1 RETURNING head")
                .await?,
            // Pipelined after `next_seq`: statements run in order, so this reads its position.
            append_change: client
                .prepare(
                    "INSERT INTO changes (seq, commit_time, payload)
                     VALUES ((SELECT head FROM provisiond_log), $1, $2)",
                )
                .await?,
            insert_revision: client
                .prepare(
                    "INSERT INTO revisions
                       (app_id, entitlement_id, revision, resource, update_time, deleted,
                        change_seq, actor, change_cause)
                     VALUES ($1, $2, $3, $4, $5, $6, (SELECT head FROM provisiond_log),
                             $7, $8)",
                )
                .await?,
            upsert_policy: client
                .prepare(
                    "INSERT INTO policies
                       (app_id, entitlement_id, resource, revision, create_time, update_time,
                        deleted)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (app_id, entitlement_id) DO UPDATE SET
                       resource = excluded.resource,
                       revision = excluded.revision,
                       update_time = excluded.update_time,
                       deleted = excluded.deleted",
                )
                .await?,
            delete_edges: client
                .prepare("DELETE FROM delegations WHERE app_id = $1 AND entitlement_id = $2")
                .await?,
            insert_edges: client
                .prepare(
                    "INSERT INTO delegations
                       (app_id, entitlement_id, target_app_id, target_entitlement_id)
                     SELECT $1, $2, t.app_id, t.entitlement_id
                     FROM unnest($3::text[], $4::text[]) AS t (app_id, entitlement_id)
                     ON CONFLICT DO NOTHING",
                )
                .await?,
            insert_implicit_bindings: client.prepare(&insert_implicit_bindings).await?,
            create_binding: client.prepare(&create_binding).await?,
            // One statement: the binding as it was (NULLs if none), whether the destination's
            // current resource delegates to the source, the delete when it does not, and now. A
            // data-modifying CTE runs to completion whether or not the query reads it.
            delete_binding: client
                .prepare(&format!(
                    "WITH found AS (
                       SELECT implicit, create_time FROM proxy_bindings
                       WHERE source_app_id = $1 AND source_entitlement_id = $2
                         AND destination_app_id = $3 AND destination_entitlement_id = $4
                     ), used AS (
                       SELECT 1 FROM delegations
                       WHERE app_id = $3 AND entitlement_id = $4
                         AND target_app_id = $1 AND target_entitlement_id = $2
                     ), deleted AS (
                       DELETE FROM proxy_bindings
                       WHERE source_app_id = $1 AND source_entitlement_id = $2
                         AND destination_app_id = $3 AND destination_entitlement_id = $4
                         AND NOT EXISTS (SELECT 1 FROM used)
                     )
                     SELECT (SELECT implicit FROM found), (SELECT create_time FROM found),
                            EXISTS (SELECT 1 FROM used), {NOW_MICROS}",
                ))
                .await?,
            delegation_targets: client.prepare(DELEGATION_TARGETS).await?,
            binding_exists: client.prepare(BINDING_EXISTS).await?,
        })
    }
}

/// The id columns of a list of entitlements, as the two arrays `unnest` takes.
pub(super) fn id_arrays(refs: &[pb::EntitlementRef]) -> (Vec<&str>, Vec<&str>) {
    refs.iter()
        .map(|r| (r.app_id.as_str(), r.entitlement_id.as_str()))
        .unzip()
}

/// A row of (resource, revision, create_time, update_time, change_seq, actor, change_cause).
pub(super) fn revision_from_row(row: &Row) -> Result<StoredRevision, StoreError> {
    let bytes: &[u8] = row.try_get(0)?;
    Ok(StoredRevision {
        resource: decode_resource(bytes)?,
        revision: row.try_get(1)?,
        create_time: time_from_micros(row.try_get(2)?)?,
        update_time: time_from_micros(row.try_get(3)?)?,
        change_seq: seq_from_column(row.try_get(4)?)?,
        actor: row.try_get(5)?,
        change_cause: row.try_get(6)?,
    })
}

/// A row of [`ALL_CURRENT`]: its key, and the revision with the resource left encoded (one
/// that is out of range is its own error, not the whole load's).
pub(super) fn encoded_from_row(
    row: &Row,
) -> Result<(pb::EntitlementRef, Result<EncodedRevision, StoreError>), StoreError> {
    let key = pb::EntitlementRef {
        app_id: row.try_get(7)?,
        entitlement_id: row.try_get(8)?,
    };
    let record = (|| {
        Ok(EncodedRevision {
            resource: row.try_get::<_, Vec<u8>>(0)?,
            revision: row.try_get(1)?,
            create_time: time_from_micros(row.try_get(2)?)?,
            update_time: time_from_micros(row.try_get(3)?)?,
            change_seq: seq_from_column(row.try_get(4)?)?,
            actor: row.try_get(5)?,
            change_cause: row.try_get(6)?,
        })
    })();
    Ok((key, record))
}

/// [`revision_from_row`] followed by `deleted`.
pub(super) fn history_from_row(row: &Row) -> Result<HistoryEntry, StoreError> {
    Ok(HistoryEntry {
        record: revision_from_row(row)?,
        deleted: row.try_get(7)?,
    })
}

pub(super) fn change_from_row(row: &Row) -> Result<ChangeSet, StoreError> {
    let payload: &[u8] = row.try_get(2)?;
    changes::decode(seq_from_column(row.try_get(0)?)?, row.try_get(1)?, payload)
        .map_err(|err| Failure::Change(err).into())
}

pub(super) fn seq_from_column(seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| Failure::Sequence(seq).into())
}

/// A log position as a `bigint` parameter; past `i64::MAX` is past every position.
pub(super) fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The entitlements of rows of (app_id, entitlement_id).
pub(super) fn refs_from_rows(rows: &[Row]) -> Result<Vec<pb::EntitlementRef>, StoreError> {
    rows.iter()
        .map(|row| {
            Ok(pb::EntitlementRef {
                app_id: row.try_get(0)?,
                entitlement_id: row.try_get(1)?,
            })
        })
        .collect()
}

pub(super) fn targets_from_rows(
    rows: &[Row],
) -> Result<Option<Vec<pb::EntitlementRef>>, StoreError> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut targets = Vec::with_capacity(rows.len());
    for row in rows {
        let app_id: Option<String> = row.try_get(0)?;
        let entitlement_id: Option<String> = row.try_get(1)?;
        if let (Some(app_id), Some(entitlement_id)) = (app_id, entitlement_id) {
            targets.push(pb::EntitlementRef {
                app_id,
                entitlement_id,
            });
        }
    }
    Ok(Some(targets))
}

pub(super) fn binding_from_row(row: &Row) -> Result<StoredBinding, StoreError> {
    Ok(StoredBinding {
        source: pb::EntitlementRef {
            app_id: row.try_get(0)?,
            entitlement_id: row.try_get(1)?,
        },
        destination: pb::EntitlementRef {
            app_id: row.try_get(2)?,
            entitlement_id: row.try_get(3)?,
        },
        implicit: row.try_get(4)?,
        create_time: time_from_micros(row.try_get(5)?)?,
    })
}

pub(super) fn decode_resource(bytes: &[u8]) -> Result<pb::EntitlementProvisionPolicy, StoreError> {
    pb::EntitlementProvisionPolicy::decode(bytes).map_err(|err| Failure::Decode(err).into())
}

pub(super) fn time_from_micros(micros: i64) -> Result<SystemTime, StoreError> {
    u64::try_from(micros)
        .ok()
        .and_then(|micros| UNIX_EPOCH.checked_add(Duration::from_micros(micros)))
        .ok_or_else(|| Failure::Time(micros).into())
}
