//! The SQL of the store and the decoding of its rows, shared by the writer and the readers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use tokio_postgres::{Client, Row, Statement};

use super::error::Failure;
use crate::pb;
use crate::store::{StoreError, StoredBinding, StoredRevision};

/// Now, in unix microseconds, by the database's clock: one clock for every replica.
const NOW_MICROS: &str = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

pub(super) const CURRENT: &str = "
    SELECT resource, revision, create_time, update_time FROM policies
    WHERE app_id = $1 AND entitlement_id = $2";

/// One statement, so the revision and the create time (that of revision 1) come from one
/// snapshot.
pub(super) const AT_REVISION: &str = "
    SELECT r.resource, r.revision, first.update_time, r.update_time
    FROM revisions AS r
    JOIN revisions AS first
      ON first.app_id = r.app_id AND first.entitlement_id = r.entitlement_id
     AND first.revision = 1
    WHERE r.app_id = $1 AND r.entitlement_id = $2 AND r.revision = $3";

/// No row: no stored resource. One row with NULL targets: a resource that delegates nowhere.
pub(super) const DELEGATION_TARGETS: &str = "
    SELECT d.target_app_id, d.target_entitlement_id
    FROM policies AS p
    LEFT JOIN delegations AS d
      ON d.app_id = p.app_id AND d.entitlement_id = p.entitlement_id
    WHERE p.app_id = $1 AND p.entitlement_id = $2
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
            "SELECT {NOW_MICROS}, p.revision, p.create_time, p.update_time
             FROM (SELECT 1) AS one
             LEFT JOIN policies AS p ON p.app_id = $1 AND p.entitlement_id = $2"
        );
        let insert_implicit_bindings = format!(
            "INSERT INTO proxy_bindings
               (source_app_id, source_entitlement_id,
                destination_app_id, destination_entitlement_id, implicit, create_time)
             SELECT s.app_id, s.entitlement_id, $3, $4, true, {NOW_MICROS}
             FROM unnest($1::text[], $2::text[]) AS s (app_id, entitlement_id)
             ON CONFLICT DO NOTHING"
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
            insert_revision: client
                .prepare(
                    "INSERT INTO revisions
                       (app_id, entitlement_id, revision, resource, update_time)
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .await?,
            upsert_policy: client
                .prepare(
                    "INSERT INTO policies
                       (app_id, entitlement_id, resource, revision, create_time, update_time)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (app_id, entitlement_id) DO UPDATE SET
                       resource = excluded.resource,
                       revision = excluded.revision,
                       update_time = excluded.update_time",
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
            // One statement: whether the binding exists, whether the destination's current
            // resource delegates to the source, and the delete when it does not. A data-modifying
            // CTE runs to completion whether or not the query reads it.
            delete_binding: client
                .prepare(
                    "WITH found AS (
                       SELECT 1 FROM proxy_bindings
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
                     SELECT EXISTS (SELECT 1 FROM found), EXISTS (SELECT 1 FROM used)",
                )
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

pub(super) fn revision_from_row(row: &Row) -> Result<StoredRevision, StoreError> {
    let bytes: &[u8] = row.try_get(0)?;
    Ok(StoredRevision {
        resource: decode_resource(bytes)?,
        revision: row.try_get(1)?,
        create_time: time_from_micros(row.try_get(2)?)?,
        update_time: time_from_micros(row.try_get(3)?)?,
        change_seq: 0, // wip
    })
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

fn decode_resource(bytes: &[u8]) -> Result<pb::EntitlementProvisionPolicy, StoreError> {
    pb::EntitlementProvisionPolicy::decode(bytes).map_err(|err| Failure::Decode(err).into())
}

pub(super) fn time_from_micros(micros: i64) -> Result<SystemTime, StoreError> {
    u64::try_from(micros)
        .ok()
        .and_then(|micros| UNIX_EPOCH.checked_add(Duration::from_micros(micros)))
        .ok_or_else(|| Failure::Time(micros).into())
}
