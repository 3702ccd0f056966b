//! The SQL of the store, shared by the writer and the readers. Every statement is
//! `prepare_cached`: a connection compiles each once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::error::Failure;
use crate::pb;
use crate::store::{StoreError, StoredRevision};

/// A revision number of an entitlement and its times (unix microseconds), without the resource:
/// what a write's precondition reads and what its new record is made of.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub revision: i64,
    pub create_time: i64,
    pub update_time: i64,
}

pub(super) fn head(
    conn: &Connection,
    key: &pb::EntitlementRef,
) -> Result<Option<Head>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT revision, create_time, update_time FROM policies
         WHERE app_id = ?1 AND entitlement_id = ?2",
    )?;
    let head = stmt
        .query_row(params![key.app_id, key.entitlement_id], |row| {
            Ok(Head {
                revision: row.get(0)?,
                create_time: row.get(1)?,
                update_time: row.get(2)?,
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
        "SELECT resource, revision, create_time, update_time FROM policies
         WHERE app_id = ?1 AND entitlement_id = ?2",
    )?;
    let row = stmt
        .query_row(
            params![key.app_id, key.entitlement_id],
            RawRevision::from_row,
        )
        .optional()?;
    row.map(RawRevision::decode).transpose()
}

/// One statement, so the revision and the create time (that of revision 1) come from one
/// snapshot.
pub(super) fn at_revision(
    conn: &Connection,
    key: &pb::EntitlementRef,
    revision: i64,
) -> Result<Option<StoredRevision>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT r.resource, r.revision, first.update_time, r.update_time
         FROM revisions AS r
         JOIN revisions AS first
           ON first.app_id = r.app_id AND first.entitlement_id = r.entitlement_id
          AND first.revision = 1
         WHERE r.app_id = ?1 AND r.entitlement_id = ?2 AND r.revision = ?3",
    )?;
    let row = stmt
        .query_row(
            params![key.app_id, key.entitlement_id, revision],
            RawRevision::from_row,
        )
        .optional()?;
    row.map(RawRevision::decode).transpose()
}

pub(super) fn stored_resource(
    conn: &Connection,
    key: &pb::EntitlementRef,
) -> Result<Option<pb::EntitlementProvisionPolicy>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT resource FROM policies WHERE app_id = ?1 AND entitlement_id = ?2",
    )?;
    let bytes: Option<Vec<u8>> = stmt
        .query_row(params![key.app_id, key.entitlement_id], |row| row.get(0))
        .optional()?;
    bytes.map(|bytes| decode_resource(&bytes)).transpose()
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

/// Appends revision `new` to the history and makes it the head.
pub(super) fn store_revision(
    conn: &Connection,
    key: &pb::EntitlementRef,
    resource: &[u8],
    new: Head,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO revisions (app_id, entitlement_id, revision, resource, update_time)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        key.app_id,
        key.entitlement_id,
        new.revision,
        resource,
        new.update_time
    ])?;
    conn.prepare_cached(
        "INSERT INTO policies
           (app_id, entitlement_id, resource, revision, create_time, update_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (app_id, entitlement_id) DO UPDATE SET
           resource = excluded.resource,
           revision = excluded.revision,
           update_time = excluded.update_time",
    )?
    .execute(params![
        key.app_id,
        key.entitlement_id,
        resource,
        new.revision,
        new.create_time,
        new.update_time
    ])?;
    Ok(())
}

/// A revision row as read, decoded outside the row callback so a decode failure keeps its type.
struct RawRevision {
    resource: Vec<u8>,
    revision: i64,
    create_time: i64,
    update_time: i64,
}

impl RawRevision {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            resource: row.get(0)?,
            revision: row.get(1)?,
            create_time: row.get(2)?,
            update_time: row.get(3)?,
        })
    }

    fn decode(self) -> Result<StoredRevision, StoreError> {
        Ok(StoredRevision {
            resource: decode_resource(&self.resource)?,
            revision: self.revision,
            create_time: time_from_micros(self.create_time)?,
            update_time: time_from_micros(self.update_time)?,
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
