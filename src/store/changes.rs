//! The change log's entries, as both backends store them: one row per committed mutation, its
//! position (`seq`), its commit time and a payload. The payload is an encoded
//! `WatchProvisionPoliciesResponse` holding only `changes` and `commit_time`: the watch stream
//! sends it with the cursor added, and the encoding is the proto's, so there is no second schema.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use tokio::sync::watch;

use super::head::Audit;
use super::{StoredBinding, StoredRevision};
use crate::pb;
use crate::pb::policy_change::Kind;

/// One entry of the change log: the changes of exactly one mutation.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeSet {
    /// Its position in the log: 1 for the first mutation, then one more per mutation.
    pub seq: u64,
    pub commit_time: SystemTime,
    pub changes: Vec<pb::PolicyChange>,
}

/// A policy write: the new resource as clients see it, with its actor and cause.
pub fn put(record: &StoredRevision) -> pb::PolicyChange {
    pb::PolicyChange {
        kind: Kind::Put as i32,
        entitlement: record.resource.entitlement.clone(),
        revision: record.revision,
        policy: Some(record.clone().into_resource()),
        binding: None,
        actor: record.actor.clone(),
        change_cause: record.change_cause.clone(),
    }
}

/// A delete: the tombstone's revision and who deleted it why, with the last live resource
/// (whose own actor and cause are those of its writer).
pub fn delete(tombstone: i64, audit: Audit<'_>, last: &StoredRevision) -> pb::PolicyChange {
    pb::PolicyChange {
        kind: Kind::Delete as i32,
        entitlement: last.resource.entitlement.clone(),
        revision: tombstone,
        policy: Some(last.clone().into_resource()),
        binding: None,
        actor: audit.actor.to_owned(),
        change_cause: audit.change_cause.to_owned(),
    }
}

pub fn binding_created(binding: &StoredBinding) -> pb::PolicyChange {
    binding_change(Kind::BindingCreated, binding)
}

pub fn binding_deleted(binding: &StoredBinding) -> pb::PolicyChange {
    binding_change(Kind::BindingDeleted, binding)
}

fn binding_change(kind: Kind, binding: &StoredBinding) -> pb::PolicyChange {
    pb::PolicyChange {
        kind: kind as i32,
        entitlement: Some(binding.destination.clone()),
        revision: 0,
        policy: None,
        binding: Some(binding.clone().into_binding()),
        actor: String::new(),
        change_cause: String::new(),
    }
}

/// The payload of a log row.
pub fn encode(changes: Vec<pb::PolicyChange>, commit_time_micros: i64) -> Vec<u8> {
    pb::WatchProvisionPoliciesResponse {
        changes,
        cursor: String::new(),
        checkpoint: false,
        commit_time: Some(timestamp_of_micros(commit_time_micros)),
    }
    .encode_to_vec()
}

/// A log row read back.
pub fn decode(seq: u64, commit_time_micros: i64, payload: &[u8]) -> Result<ChangeSet, DecodeError> {
    let entry =
        pb::WatchProvisionPoliciesResponse::decode(payload).map_err(DecodeError::Payload)?;
    let commit_time = u64::try_from(commit_time_micros)
        .ok()
        .and_then(|micros| UNIX_EPOCH.checked_add(Duration::from_micros(micros)))
        .ok_or(DecodeError::Time(commit_time_micros))?;
    Ok(ChangeSet {
        seq,
        commit_time,
        changes: entry.changes,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot decode a change log entry: {0}")]
    Payload(#[source] prost::DecodeError),
    #[error("change log entry time out of range: {0} µs")]
    Time(i64),
}

fn timestamp_of_micros(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// A revision stored before the change log existed, as a migration reads it.
pub struct OldRevision {
    pub entitlement: pb::EntitlementRef,
    pub revision: i64,
    pub resource: Vec<u8>,
    pub update_time_micros: i64,
}

/// A log row a migration writes for an [`OldRevision`].
pub struct BackfilledEntry {
    pub seq: u64,
    pub commit_time_micros: i64,
    pub payload: Vec<u8>,
}

/// The log entries of revisions stored before the log existed, one PUT each, numbered in the
/// order of `revisions`, which must be (update_time, app_id, entitlement_id, revision): within
/// an entitlement that is revision order, so revision 1 comes first and gives the create time.
pub fn backfill(
    revisions: impl IntoIterator<Item = OldRevision>,
) -> Result<Vec<BackfilledEntry>, DecodeError> {
    let mut created: HashMap<(String, String), i64> = HashMap::new();
    let mut entries = Vec::new();
    for (old, seq) in revisions.into_iter().zip(1..) {
        let key = (
            old.entitlement.app_id.clone(),
            old.entitlement.entitlement_id.clone(),
        );
        let create_time = *created.entry(key).or_insert(old.update_time_micros);
        let resource = pb::EntitlementProvisionPolicy::decode(old.resource.as_slice())
            .map_err(DecodeError::Payload)?;
        let time = |micros: i64| {
            UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or_default())
        };
        let record = StoredRevision {
            resource,
            revision: old.revision,
            create_time: time(create_time),
            update_time: time(old.update_time_micros),
            change_seq: seq,
            // Nobody recorded who wrote them: unknown, not anonymous.
            actor: String::new(),
            change_cause: String::new(),
        };
        entries.push(BackfilledEntry {
            seq,
            commit_time_micros: old.update_time_micros,
            payload: encode(vec![put(&record)], old.update_time_micros),
        });
    }
    Ok(entries)
}

/// The sending side of [`super::Store::subscribe`]: the head only ever moves forward, however
/// the commits of this process and the notifications of others interleave.
#[derive(Debug, Clone)]
pub struct HeadPublisher {
    sender: std::sync::Arc<watch::Sender<u64>>,
}

impl HeadPublisher {
    pub fn new(head: u64) -> Self {
        Self {
            sender: std::sync::Arc::new(watch::channel(head).0),
        }
    }

    /// Moves the head to `seq` if that is ahead of it.
    pub fn advance(&self, seq: u64) {
        self.sender.send_if_modified(|head| {
            let ahead = seq > *head;
            if ahead {
                *head = seq;
            }
            ahead
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }

    pub fn current(&self) -> u64 {
        *self.sender.borrow()
    }
}

/// A fresh store id: 128 bits from the standard library's randomly seeded hasher (seeded by
/// the operating system), which is all an id that tells stores apart needs.
pub fn new_store_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(salt);
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        hasher.write_u32(std::process::id());
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let binding = StoredBinding {
            source: pb::EntitlementRef {
                app_id: "a".into(),
                entitlement_id: "s".into(),
            },
            destination: pb::EntitlementRef {
                app_id: "b".into(),
                entitlement_id: "d".into(),
            },
            implicit: true,
            create_time: UNIX_EPOCH + Duration::from_secs(5),
        };
        let payload = encode(vec![binding_created(&binding)], 5_000_001);
        let set = decode(7, 5_000_001, &payload).unwrap();
        assert_eq!(set.seq, 7);
        assert_eq!(
            set.commit_time,
            UNIX_EPOCH + Duration::from_micros(5_000_001)
        );
        assert_eq!(set.changes.len(), 1);
        assert_eq!(set.changes[0].kind, Kind::BindingCreated as i32);
        assert_eq!(set.changes[0].entitlement, Some(binding.destination));
        assert!(decode(1, 0, b"\xff\xff").is_err());
    }

    #[test]
    fn the_head_never_goes_back() {
        let head = HeadPublisher::new(3);
        let mut seen = head.subscribe();
        head.advance(2);
        assert!(!seen.has_changed().unwrap());
        head.advance(5);
        assert!(seen.has_changed().unwrap());
        assert_eq!(*seen.borrow_and_update(), 5);
        assert_eq!(head.current(), 5);
    }

    #[test]
    fn store_ids_differ() {
        let (a, b) = (new_store_id(), new_store_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
