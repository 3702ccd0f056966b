//! The head of an entitlement (its newest revision, live or a tombstone) and the rules both
//! backends apply to it inside a write: the etag precondition, create-only, the next revision
//! and its times, and what a tombstone stores. Times are unix microseconds.

use super::{StoreError, StoredRevision};
use crate::pb;

/// The newest revision of an entitlement, without its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub revision: i64,
    /// When revision 1 was written.
    pub create_time: i64,
    pub update_time: i64,
    /// The revision is a tombstone: the entitlement has no live resource.
    pub deleted: bool,
}

/// The revision of the live resource; a tombstone counts as none.
pub fn live_revision(head: Option<Head>) -> Option<i64> {
    head.filter(|head| !head.deleted).map(|head| head.revision)
}

/// The precondition of a write or delete: when set, the live revision must equal `expected`
/// (0: there must be none).
pub fn check_expected(expected: Option<i64>, head: Option<Head>) -> Result<(), StoreError> {
    let actual = live_revision(head);
    match expected {
        Some(expected) if actual.unwrap_or(0) != expected => {
            Err(StoreError::RevisionMismatch { expected, actual })
        }
        _ => Ok(()),
    }
}

/// A create-only write stands only where there is no live resource.
pub fn check_create_only(create_only: bool, head: Option<Head>) -> Result<(), StoreError> {
    match create_only && live_revision(head).is_some() {
        true => Err(StoreError::AlreadyExists),
        false => Ok(()),
    }
}

/// The revision after `head`, written `now`: a clock stepped back must not make it older than
/// the one it replaces; the create time stays that of revision 1.
pub fn next(head: Option<Head>, now: i64, deleted: bool) -> Head {
    let update_time = head.map_or(now, |head| now.max(head.update_time));
    Head {
        revision: head.map_or(1, |head| head.revision + 1),
        create_time: head.map_or(update_time, |head| head.create_time),
        update_time,
        deleted,
    }
}

/// Who wrote a revision and why, as both backends store it beside the revision (not in the
/// encoded resource, whose output-only fields stay empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit<'a> {
    pub actor: &'a str,
    pub change_cause: &'a str,
}

/// What a tombstone stores as its resource: the entitlement alone.
pub fn tombstone(entitlement: &pb::EntitlementRef) -> pb::EntitlementProvisionPolicy {
    pb::EntitlementProvisionPolicy {
        entitlement: Some(entitlement.clone()),
        ..Default::default()
    }
}

/// The record of `resource` at `head`, written as `audit` says, logged at `change_seq`.
pub fn record(
    resource: pb::EntitlementProvisionPolicy,
    head: Head,
    change_seq: u64,
    audit: Audit<'_>,
    time: impl Fn(i64) -> Result<std::time::SystemTime, StoreError>,
) -> Result<StoredRevision, StoreError> {
    Ok(StoredRevision {
        resource,
        revision: head.revision,
        create_time: time(head.create_time)?,
        update_time: time(head.update_time)?,
        change_seq,
        actor: audit.actor.to_owned(),
        change_cause: audit.change_cause.to_owned(),
    })
}
