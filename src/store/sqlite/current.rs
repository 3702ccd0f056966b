//! Every live policy's current revision, in memory, so that a Get of the current revision is a
//! lookup, not a database read and a decode. Only the writer changes policies, so it keeps this
//! exact: it applies each batch's writes and deletes once the batch has committed and before it
//! answers, so a Get after an acknowledged Set always sees it. Loaded from the tables at open.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

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
    Live(Arc<StoredRevision>),
    /// Stored, but its row did not decode at open: its Get fails as a read of it would, and
    /// the other policies are served as usual (one bad row does not stop the store).
    Undecodable,
}

impl Current {
    pub(super) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let loaded = Self::default();
        let mut policies = loaded
            .policies
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (key, record) in queries::all_current(conn)? {
            let entry = match record {
                Ok(record) => Entry::Live(Arc::new(record)),
                Err(error) => {
                    tracing::error!(app_id = %key.app_id, entitlement_id = %key.entitlement_id, %error, "a stored policy does not decode");
                    Entry::Undecodable
                }
            };
            policies.insert(key, entry);
        }
        drop(policies);
        Ok(loaded)
    }

    /// The current revision of `key`, if it is live.
    pub(super) fn get(
        &self,
        key: &pb::EntitlementRef,
    ) -> Result<Option<StoredRevision>, StoreError> {
        let policies = self.policies.read().unwrap_or_else(PoisonError::into_inner);
        match policies.get(key) {
            None => Ok(None),
            Some(Entry::Live(record)) => Ok(Some(StoredRevision::clone(record))),
            Some(Entry::Undecodable) => Err(Failure::Undecodable.into()),
        }
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
                        policies.insert(key, Entry::Live(Arc::from(record)));
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
