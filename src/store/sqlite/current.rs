//! Every live policy's current revision, in memory, so that a Get of the current revision is a
//! lookup and a decode of bytes at hand, not a database read. The resource is kept encoded: a
//! decoded policy takes several times its encoded size (its strings and vectors each their own
//! allocation), which at 100k policies is the difference between ~60 MB and ~370 MB. Only the writer changes policies, so it keeps this
//! exact: it applies each batch's writes and deletes once the batch has committed and before it
//! answers, so a Get after an acknowledged Set always sees it. Loaded from the tables at open.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use prost::Message;
use rusqlite::Connection;

use super::error::Failure;
use super::queries;
use crate::pb;
use crate::store::{StoreError, StoredRevision};

/// What a committed operation did to its entitlement's current revision.
#[derive(Debug, Clone)]
pub(super) enum CurrentChange {
    Put(Box<StoredRevision>),
    Removed(pb::EntitlementRef),
}

#[derive(Debug, Default)]
pub(super) struct Current {
    policies: RwLock<HashMap<pb::EntitlementRef, Entry>>,
}

#[derive(Debug)]
enum Entry {
    Live(Arc<Encoded>),
    /// Stored, but its row was out of range at open: its Get fails as a read of it would, and
    /// the other policies are served as usual (one bad row does not stop the store).
    Undecodable,
}

/// A [`StoredRevision`] with its resource encoded.
#[derive(Debug)]
struct Encoded {
    resource: Box<[u8]>,
    revision: i64,
    create_time: std::time::SystemTime,
    update_time: std::time::SystemTime,
    change_seq: u64,
    actor: Box<str>,
    change_cause: Box<str>,
}

impl Encoded {
    fn new(record: &StoredRevision) -> Self {
        Self {
            resource: record.resource.encode_to_vec().into_boxed_slice(),
            revision: record.revision,
            create_time: record.create_time,
            update_time: record.update_time,
            change_seq: record.change_seq,
            actor: record.actor.as_str().into(),
            change_cause: record.change_cause.as_str().into(),
        }
    }

    fn decode(&self) -> Result<StoredRevision, StoreError> {
        Ok(StoredRevision {
            resource: pb::EntitlementProvisionPolicy::decode(&*self.resource)
                .map_err(Failure::Decode)?,
            revision: self.revision,
            create_time: self.create_time,
            update_time: self.update_time,
            change_seq: self.change_seq,
            actor: self.actor.to_string(),
            change_cause: self.change_cause.to_string(),
        })
    }
}

impl Current {
    pub(super) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let mut policies = HashMap::new();
        // The stored bytes are kept as they are: a resource that does not decode fails its
        // own Get later (INTERNAL), as a read of it would.
        queries::each_current(conn, |key, record| {
            let entry = match record {
                Ok(record) => Entry::Live(Arc::new(Encoded {
                    resource: record.resource.into_boxed_slice(),
                    revision: record.revision,
                    create_time: record.create_time,
                    update_time: record.update_time,
                    change_seq: record.change_seq,
                    actor: record.actor.into_boxed_str(),
                    change_cause: record.change_cause.into_boxed_str(),
                })),
                Err(error) => {
                    tracing::error!(app_id = %key.app_id, entitlement_id = %key.entitlement_id, %error, "a stored policy does not read");
                    Entry::Undecodable
                }
            };
            policies.insert(key, entry);
        })?;
        Ok(Self {
            policies: RwLock::new(policies),
        })
    }

    /// The current revision of `key`, if it is live.
    pub(super) fn get(
        &self,
        key: &pb::EntitlementRef,
    ) -> Result<Option<StoredRevision>, StoreError> {
        // The lock is held only for the lookup; the decode runs after it.
        let entry = match self
            .policies
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            None => return Ok(None),
            Some(Entry::Live(encoded)) => Arc::clone(encoded),
            Some(Entry::Undecodable) => return Err(Failure::Undecodable.into()),
        };
        entry.decode().map(Some)
    }

    pub(super) fn apply(&self, changes: impl IntoIterator<Item = CurrentChange>) {
        let mut policies = self
            .policies
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for change in changes {
            match change {
                CurrentChange::Put(record) => {
                    if let Some(key) = record.resource.entitlement.clone() {
                        policies.insert(key, Entry::Live(Arc::new(Encoded::new(&record))));
                    }
                }
                CurrentChange::Removed(key) => {
                    policies.remove(&key);
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.policies
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
