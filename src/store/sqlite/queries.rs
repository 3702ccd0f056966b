//! The SQL of the store, shared by the writer and the readers. Every statement is
//! `prepare_cached`: a connection compiles each once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params};

use super::error::Failure;
use crate::pb;
use crate::store::changes::{self, ChangeSet};
use crate::store::current::EncodedRevision;
use crate::store::head::{Audit, Head};
use crate::store::{
    BindingQuery, HistoryEntry, PolicyQuery, RevisionQuery, StoreError, StoredBinding,
    StoredRevision,
};

pub(super) fn head(
    conn: &Connection,
    key: &pb::EntitlementRef,
) -> Result<Option<Head>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT revision, create_time, update_time, deleted FROM policies
         WHERE app_id = ?1 AND entitlement_id = ?2",
    )?;
    let head = stmt
        .query_row(params![key.app_id, key.entitlement_id], |row| {
            Ok(Head {
                revision: row.get(0)?,
                create_time: row.get(1)?,
                update_time: row.get(2)?,
                deleted: row.get(3)?,
            })
        })
        .optional()?;
    Ok(head)
}

pub(super) fn current(
    conn: &Connection,
    key: &pb::EntitlementRef,
) -> Result<Option<StoredRevision>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT p.resource, p.revision, p.create_time, p.update_time, r.change_seq,
                r.actor, r.change_cause
         FROM policies AS p
         JOIN revisions AS r
           ON r.app_id = p.app_id AND r.entitlement_id = p.entitlement_id
          AND r.revision = p.revision
         WHERE p.app_id = ?1 AND p.entitlement_id = ?2 AND NOT p.deleted",
    )?;
    let row = stmt
        .query_row(
            params![key.app_id, key.entitlement_id],
            RawRevision::from_row,
        )
        .optional()?;
    row.map(RawRevision::decode).transpose()
}

/// Every live current revision by its key, handed to `each` one row at a time (100k policies
/// are never all in memory twice), for the in-memory state at open. The resource is not
/// decoded; a row whose other columns are out of range is its error, not the whole read's.
pub(super) fn each_current(
    conn: &Connection,
    mut each: impl FnMut(pb::EntitlementRef, Result<EncodedRevision, StoreError>),
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(
        "SELECT p.resource, p.revision, p.create_time, p.update_time, r.change_seq,
                r.actor, r.change_cause, p.app_id, p.entitlement_id
         FROM policies AS p
         JOIN revisions AS r
           ON r.app_id = p.app_id AND r.entitlement_id = p.entitlement_id
          AND r.revision = p.revision
         WHERE NOT p.deleted",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key = pb::EntitlementRef {
            app_id: row.get(7)?,
            entitlement_id: row.get(8)?,
        };
        each(key, RawRevision::from_row(row)?.encoded());
    }
    Ok(())
}

/// Every stored delegation edge (who, target), for the in-memory state at open.
pub(super) fn each_delegation(
    conn: &Connection,
    mut each: impl FnMut(pb::EntitlementRef, pb::EntitlementRef),
) -> Result<(), StoreError> {
    each_pair(
        conn,
        "SELECT app_id, entitlement_id, target_app_id, target_entitlement_id FROM delegations",
        &mut each,
    )
}

/// Every row of `sql`, four ids, as two entitlements.
fn each_pair(
    conn: &Connection,
    sql: &str,
    each: &mut impl FnMut(pb::EntitlementRef, pb::EntitlementRef),
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let first = pb::EntitlementRef {
            app_id: row.get(0)?,
            entitlement_id: row.get(1)?,
        };
        let second = pb::EntitlementRef {
            app_id: row.get(2)?,
            entitlement_id: row.get(3)?,
        };
        each(first, second);
    }
    Ok(())
}

/// Every proxy binding (source, destination), for the in-memory state at open.
pub(super) fn each_binding(
    conn: &Connection,
    mut each: impl FnMut(pb::EntitlementRef, pb::EntitlementRef),
) -> Result<(), StoreError> {
    each_pair(
        conn,
        "SELECT source_app_id, source_entitlement_id, destination_app_id,
                destination_entitlement_id
         FROM proxy_bindings",
        &mut each,
    )
}

/// One statement, so the revision and the create time (that of revision 1) come from one
/// snapshot.
pub(super) fn at_revision(
    conn: &Connection,
    key: &pb::EntitlementRef,
    revision: i64,
) -> Result<Option<StoredRevision>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.resource, r.revision, first.update_time, r.update_time, r.change_seq,
                r.actor, r.change_cause
         FROM revisions AS r
         JOIN revisions AS first
           ON first.app_id = r.app_id AND first.entitlement_id = r.entitlement_id
          AND first.revision = 1
         WHERE r.app_id = ?1 AND r.entitlement_id = ?2 AND r.revision = ?3 AND NOT r.deleted",
    )?;
    let row = stmt
        .query_row(
            params![key.app_id, key.entitlement_id, revision],
            RawRevision::from_row,
        )
        .optional()?;
    row.map(RawRevision::decode).transpose()
}

/// `None` when `key` has no resource; else the targets of its edges, in key order. One
/// statement, so both come from one snapshot.
pub(super) fn delegation_targets(
    conn: &Connection,
    key: &pb::EntitlementRef,
) -> Result<Option<Vec<pb::EntitlementRef>>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.target_app_id, d.target_entitlement_id
         FROM policies AS p
         LEFT JOIN delegations AS d
           ON d.app_id = p.app_id AND d.entitlement_id = p.entitlement_id
         WHERE p.app_id = ?1 AND p.entitlement_id = ?2 AND NOT p.deleted
         ORDER BY d.target_app_id, d.target_entitlement_id",
    )?;
    let mut rows = stmt.query(params![key.app_id, key.entitlement_id])?;
    let mut targets = None;
    while let Some(row) = rows.next()? {
        let targets = targets.get_or_insert_with(Vec::new);
        // The one row of a resource without edges has NULL targets.
        if let (Some(app_id), Some(entitlement_id)) = (row.get(0)?, row.get(1)?) {
            targets.push(pb::EntitlementRef {
                app_id,
                entitlement_id,
            });
        }
    }
    Ok(targets)
}

/// Makes `targets` (duplicates allowed) the edges of `key`, whose head must be stored.
pub(super) fn replace_delegations(
    conn: &Connection,
    key: &pb::EntitlementRef,
    targets: &[pb::EntitlementRef],
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM delegations WHERE app_id = ?1 AND entitlement_id = ?2")?
        .execute(params![key.app_id, key.entitlement_id])?;
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO delegations
           (app_id, entitlement_id, target_app_id, target_entitlement_id)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for target in targets {
        insert.execute(params![
            key.app_id,
            key.entitlement_id,
            target.app_id,
            target.entitlement_id
        ])?;
    }
    Ok(())
}

/// Whether the current resource of `destination` delegates to `source`: what keeps their
/// binding in use.
pub(super) fn delegates_to(
    conn: &Connection,
    destination: &pb::EntitlementRef,
    source: &pb::EntitlementRef,
) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM delegations
         WHERE app_id = ?1 AND entitlement_id = ?2
           AND target_app_id = ?3 AND target_entitlement_id = ?4)",
    )?;
    let exists = stmt.query_row(
        params![
            destination.app_id,
            destination.entitlement_id,
            source.app_id,
            source.entitlement_id
        ],
        |row| row.get(0),
    )?;
    Ok(exists)
}

pub(super) fn binding_exists(
    conn: &Connection,
    source: &pb::EntitlementRef,
    destination: &pb::EntitlementRef,
) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM proxy_bindings
         WHERE source_app_id = ?1 AND source_entitlement_id = ?2
           AND destination_app_id = ?3 AND destination_entitlement_id = ?4)",
    )?;
    let exists = stmt.query_row(
        params![
            source.app_id,
            source.entitlement_id,
            destination.app_id,
            destination.entitlement_id
        ],
        |row| row.get(0),
    )?;
    Ok(exists)
}

/// Stores a binding unless one from `source` into `destination` exists; returns whether it did.
pub(super) fn insert_binding(
    conn: &Connection,
    source: &pb::EntitlementRef,
    destination: &pb::EntitlementRef,
    implicit: bool,
    create_time: i64,
) -> Result<bool, StoreError> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO proxy_bindings
               (source_app_id, source_entitlement_id,
                destination_app_id, destination_entitlement_id, implicit, create_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            source.app_id,
            source.entitlement_id,
            destination.app_id,
            destination.entitlement_id,
            implicit,
            create_time
        ])?;
    Ok(inserted == 1)
}

/// Deletes a binding; returns it as it was, if there was one.
pub(super) fn delete_binding(
    conn: &Connection,
    source: &pb::EntitlementRef,
    destination: &pb::EntitlementRef,
) -> Result<Option<StoredBinding>, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM proxy_bindings
             WHERE source_app_id = ?1 AND source_entitlement_id = ?2
               AND destination_app_id = ?3 AND destination_entitlement_id = ?4
             RETURNING implicit, create_time",
        )?
        .query_row(
            params![
                source.app_id,
                source.entitlement_id,
                destination.app_id,
                destination.entitlement_id
            ],
            |row| Ok((row.get::<_, bool>(0)?, row.get::<_, i64>(1)?)),
        )
        .optional()?;
    deleted
        .map(|(implicit, create_time)| {
            Ok(StoredBinding {
                source: source.clone(),
                destination: destination.clone(),
                implicit,
                create_time: time_from_micros(create_time)?,
            })
        })
        .transpose()
}

/// The bindings `query` selects. The statement is built from the filters present, so that each
/// uses its index (the primary key for a source, `proxy_bindings_by_destination` for a
/// destination) and `after` a range of the primary key.
pub(super) fn list_bindings(
    conn: &Connection,
    query: &BindingQuery,
) -> Result<Vec<StoredBinding>, StoreError> {
    const SOURCE: &str = "source_app_id, source_entitlement_id";
    const DESTINATION: &str = "destination_app_id, destination_entitlement_id";
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    let mut conditions = Vec::new();
    let mut values: Vec<&dyn ToSql> = Vec::new();
    if let Some(source) = &query.source {
        conditions.push("source_app_id = ? AND source_entitlement_id = ?".to_owned());
        values.extend([&source.app_id as &dyn ToSql, &source.entitlement_id]);
    }
    if let Some(destination) = &query.destination {
        conditions.push("destination_app_id = ? AND destination_entitlement_id = ?".to_owned());
        values.extend([
            &destination.app_id as &dyn ToSql,
            &destination.entitlement_id,
        ]);
    }
    if let Some((source, destination)) = &query.after {
        conditions.push(format!("({SOURCE}, {DESTINATION}) > (?, ?, ?, ?)"));
        values.extend([
            &source.app_id as &dyn ToSql,
            &source.entitlement_id,
            &destination.app_id,
            &destination.entitlement_id,
        ]);
    }
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    values.push(&limit);
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SOURCE}, {DESTINATION}, implicit, create_time FROM proxy_bindings {filter}
         ORDER BY {SOURCE}, {DESTINATION} LIMIT ?"
    ))?;
    let rows = stmt.query_map(values.as_slice(), |row| {
        Ok((
            pb::EntitlementRef {
                app_id: row.get(0)?,
                entitlement_id: row.get(1)?,
            },
            pb::EntitlementRef {
                app_id: row.get(2)?,
                entitlement_id: row.get(3)?,
            },
            row.get::<_, bool>(4)?,
            row.get::<_, i64>(5)?,
        ))
    })?;
    rows.map(|row| {
        let (source, destination, implicit, create_time) = row?;
        Ok(StoredBinding {
            source,
            destination,
            implicit,
            create_time: time_from_micros(create_time)?,
        })
    })
    .collect()
}

/// Appends revision `new` (a tombstone when `new.deleted`), written as `audit` says, to the
/// history at `change_seq` and makes it the head.
pub(super) fn store_revision(
    conn: &Connection,
    key: &pb::EntitlementRef,
    resource: &[u8],
    new: Head,
    change_seq: u64,
    audit: Audit<'_>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO revisions
           (app_id, entitlement_id, revision, resource, update_time, deleted, change_seq,
            actor, change_cause)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        key.app_id,
        key.entitlement_id,
        new.revision,
        resource,
        new.update_time,
        new.deleted,
        change_seq,
        audit.actor,
        audit.change_cause
    ])?;
    conn.prepare_cached(
        "INSERT INTO policies
           (app_id, entitlement_id, resource, revision, create_time, update_time, deleted)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (app_id, entitlement_id) DO UPDATE SET
           resource = excluded.resource,
           revision = excluded.revision,
           update_time = excluded.update_time,
           deleted = excluded.deleted",
    )?
    .execute(params![
        key.app_id,
        key.entitlement_id,
        resource,
        new.revision,
        new.create_time,
        new.update_time,
        new.deleted
    ])?;
    Ok(())
}

/// The entitlements other than `key` whose current resources delegate to it.
pub(super) fn dependants(
    conn: &Connection,
    key: &pb::EntitlementRef,
) -> Result<Vec<pb::EntitlementRef>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT app_id, entitlement_id FROM delegations
         WHERE target_app_id = ?1 AND target_entitlement_id = ?2
           AND NOT (app_id = ?1 AND entitlement_id = ?2)
         ORDER BY app_id, entitlement_id",
    )?;
    let rows = stmt.query_map(params![key.app_id, key.entitlement_id], |row| {
        Ok(pb::EntitlementRef {
            app_id: row.get(0)?,
            entitlement_id: row.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// What the writer's in-memory graph must answer (tests compare the two).
#[cfg(test)]
pub(super) fn has_dependants(
    conn: &Connection,
    key: &pb::EntitlementRef,
) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM delegations
         WHERE target_app_id = ?1 AND target_entitlement_id = ?2
           AND NOT (app_id = ?1 AND entitlement_id = ?2))",
    )?;
    Ok(stmt.query_row(params![key.app_id, key.entitlement_id], |row| row.get(0))?)
}

/// Takes the next position of the change log. Inside the operation's savepoint, so an
/// operation that does not stand gives it back: the log has no gaps.
pub(super) fn next_seq(conn: &Connection) -> Result<u64, StoreError> {
    let seq: i64 = conn
        .prepare_cached("UPDATE store_log SET head = head + 1 RETURNING head")?
        .query_row([], |row| row.get(0))?;
    Ok(u64::try_from(seq).map_err(|_| Failure::Sequence(seq))?)
}

/// Appends the log entry at `seq`; returns it, for the in-memory state once the batch commits.
pub(super) fn append_change(
    conn: &Connection,
    seq: u64,
    commit_time: i64,
    changes: Vec<pb::PolicyChange>,
) -> Result<ChangeSet, StoreError> {
    conn.prepare_cached("INSERT INTO changes (seq, commit_time, payload) VALUES (?1, ?2, ?3)")?
        .execute(params![
            seq_param(seq),
            commit_time,
            changes::encode(changes.clone(), commit_time)
        ])?;
    Ok(ChangeSet {
        seq,
        commit_time: time_from_micros(commit_time)?,
        changes,
    })
}

fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The store's id and the head of its log.
pub(super) fn log_state(conn: &Connection) -> Result<(String, u64), StoreError> {
    let (id, head): (String, i64) = conn
        .prepare_cached("SELECT store_id, head FROM store_log")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok((
        id,
        u64::try_from(head).map_err(|_| Failure::Sequence(head))?,
    ))
}

pub(super) fn read_changes(
    conn: &Connection,
    after: u64,
    limit: usize,
) -> Result<Vec<ChangeSet>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, commit_time, payload FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query(params![seq_param(after), limit])?;
    let mut sets = Vec::new();
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let seq = u64::try_from(seq).map_err(|_| Failure::Sequence(seq))?;
        let payload = row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?;
        let set = changes::decode(seq, row.get(1)?, payload).map_err(Failure::Change)?;
        sets.push(set);
    }
    Ok(sets)
}

/// A revision is the state of its entitlement at `query.at` when it is the newest of the
/// entitlement written at or before it. Walks the primary key in order from `after`, so a page
/// costs its own rows (and the history of their entitlements), not the whole table.
pub(super) fn list_policies(
    conn: &Connection,
    query: &PolicyQuery,
) -> Result<Vec<StoredRevision>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.resource, r.revision, first.update_time, r.update_time, r.change_seq,
                r.actor, r.change_cause
         FROM revisions AS r
         JOIN revisions AS first
           ON first.app_id = r.app_id AND first.entitlement_id = r.entitlement_id
          AND first.revision = 1
         WHERE (r.app_id, r.entitlement_id) > (?2, ?3)
           AND (?4 IS NULL OR r.app_id = ?4)
           AND r.change_seq <= ?1 AND NOT r.deleted
           AND NOT EXISTS (
             SELECT 1 FROM revisions AS later
             WHERE later.app_id = r.app_id AND later.entitlement_id = r.entitlement_id
               AND later.revision > r.revision AND later.change_seq <= ?1)
         ORDER BY r.app_id, r.entitlement_id
         LIMIT ?5",
    )?;
    let (after_app, after_entitlement) = query.after.as_ref().map_or(("", ""), |key| {
        (key.app_id.as_str(), key.entitlement_id.as_str())
    });
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(
        params![
            seq_param(query.at),
            after_app,
            after_entitlement,
            query.app_id,
            limit
        ],
        RawRevision::from_row,
    )?;
    rows.map(|row| row?.decode()).collect()
}

pub(super) fn list_revisions(
    conn: &Connection,
    query: &RevisionQuery,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.resource, r.revision, first.update_time, r.update_time, r.change_seq,
                r.actor, r.change_cause, r.deleted
         FROM revisions AS r
         JOIN revisions AS first
           ON first.app_id = r.app_id AND first.entitlement_id = r.entitlement_id
          AND first.revision = 1
         WHERE r.app_id = ?1 AND r.entitlement_id = ?2 AND r.revision < ?3
         ORDER BY r.revision DESC
         LIMIT ?4",
    )?;
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let key = &query.entitlement;
    let rows = stmt.query_map(
        params![
            key.app_id,
            key.entitlement_id,
            query.before.unwrap_or(i64::MAX),
            limit
        ],
        |row| Ok((RawRevision::from_row(row)?, row.get::<_, bool>(7)?)),
    )?;
    rows.map(|row| {
        let (raw, deleted) = row?;
        Ok(HistoryEntry {
            record: raw.decode()?,
            deleted,
        })
    })
    .collect()
}

/// A revision row as read, decoded outside the row callback so a decode failure keeps its type.
struct RawRevision {
    resource: Vec<u8>,
    revision: i64,
    create_time: i64,
    update_time: i64,
    change_seq: i64,
    actor: String,
    change_cause: String,
}

impl RawRevision {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            resource: row.get(0)?,
            revision: row.get(1)?,
            create_time: row.get(2)?,
            update_time: row.get(3)?,
            change_seq: row.get(4)?,
            actor: row.get(5)?,
            change_cause: row.get(6)?,
        })
    }

    fn encoded(self) -> Result<EncodedRevision, StoreError> {
        Ok(EncodedRevision {
            revision: self.revision,
            create_time: time_from_micros(self.create_time)?,
            update_time: time_from_micros(self.update_time)?,
            change_seq: u64::try_from(self.change_seq)
                .map_err(|_| Failure::Sequence(self.change_seq))?,
            resource: self.resource,
            actor: self.actor,
            change_cause: self.change_cause,
        })
    }

    fn decode(self) -> Result<StoredRevision, StoreError> {
        Ok(StoredRevision {
            resource: decode_resource(&self.resource)?,
            revision: self.revision,
            create_time: time_from_micros(self.create_time)?,
            update_time: time_from_micros(self.update_time)?,
            change_seq: u64::try_from(self.change_seq)
                .map_err(|_| Failure::Sequence(self.change_seq))?,
            actor: self.actor,
            change_cause: self.change_cause,
        })
    }
}

fn decode_resource(bytes: &[u8]) -> Result<pb::EntitlementProvisionPolicy, StoreError> {
    pb::EntitlementProvisionPolicy::decode(bytes).map_err(|err| Failure::Decode(err).into())
}

/// Now, in unix microseconds. A clock before 1970 reads as 1970: times only have to order the
/// revisions of one entitlement, which the writer ensures on its own.
pub(super) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
        })
}

pub(super) fn time_from_micros(micros: i64) -> Result<SystemTime, StoreError> {
    u64::try_from(micros)
        .ok()
        .and_then(|micros| UNIX_EPOCH.checked_add(Duration::from_micros(micros)))
        .ok_or_else(|| Failure::Time(micros).into())
}

/// Live resources and bindings: what the metrics endpoint shows. Two scans of small tables per
/// scrape (the policies table holds one row per entitlement, not per revision).
pub(super) fn counts(conn: &Connection) -> Result<(u64, u64), StoreError> {
    let (policies, bindings): (i64, i64) = conn
        .prepare_cached(
            "SELECT (SELECT count(*) FROM policies WHERE deleted = 0),
                    (SELECT count(*) FROM proxy_bindings)",
        )?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok((policies.max(0) as u64, bindings.max(0) as u64))
}
