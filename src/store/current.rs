//! Every live policy's current revision, in memory, so that a Get of the current revision is a
//! lookup and a decode of bytes at hand, not a database read; and the log position that memory
//! has reached, so that a read can be served as fresh as its caller asks ([`Freshness`]).
//!
//! The resource is kept encoded: a decoded policy takes several times its encoded size (its
//! strings and vectors each their own allocation), which at 100k policies is the difference
//! between ~60 MB and ~370 MB.
//!
//! Who keeps it current differs by backend, the rules of serving from it do not (`serve`):
//! SQLite's writer applies each batch once it has committed and before it answers, so memory is
//! exact; each PostgreSQL replica applies the change log in order (`postgres/follow.rs`), so
//! memory may lag the database by the time a change takes to arrive.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use prost::Message;
use tokio::sync::{Notify, watch};

use super::changes::ChangeSet;
use super::record::clear_output_fields;
use super::{StoreError, StoredRevision};
use crate::pb;
use crate::pb::policy_change::Kind;
use crate::policy::consistency::Freshness;

/// How long a read waits for memory to reach the position it needs before it reads the
/// database instead: long enough for a change on its way (a log read, about a millisecond),
/// short enough that a stalled feed costs a read little.
const CATCH_UP: Duration = Duration::from_millis(200);

/// What a committed operation did to its entitlement's current revision.
#[derive(Debug, Clone)]
pub enum CurrentChange {
    Put(Box<StoredRevision>),
    Removed(pb::EntitlementRef),
}

/// A stored revision with its resource still encoded, as a backend reads it at start.
#[derive(Debug)]
pub struct EncodedRevision {
    pub resource: Vec<u8>,
    pub revision: i64,
    pub create_time: SystemTime,
    pub update_time: SystemTime,
    pub change_seq: u64,
    pub actor: String,
    pub change_cause: String,
}

/// Something served from memory or the database, with the log position it reflects: every
/// change up to `at` is in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<T> {
    pub value: T,
    pub at: u64,
}

#[derive(Debug)]
pub struct Current {
    state: RwLock<State>,
    /// The position reached, for readers waiting on it.
    reached: watch::Sender<u64>,
    /// Told when a reader waits for a position memory has not reached: the follower reads the
    /// log at once instead of at its next poll.
    wanted: Notify,
}

#[derive(Debug, Default)]
struct State {
    policies: HashMap<pb::EntitlementRef, Entry>,
    /// Every change of the log up to here is applied.
    at: u64,
}

#[derive(Debug)]
enum Entry {
    Live(Arc<Encoded>),
    /// Stored, but its row was out of range at start: its Get fails as a read of it would, and
    /// the other policies are served as usual (one bad row does not stop the store).
    Undecodable,
}

#[derive(Debug)]
struct Encoded {
    resource: Box<[u8]>,
    revision: i64,
    create_time: SystemTime,
    update_time: SystemTime,
    change_seq: u64,
    actor: Box<str>,
    change_cause: Box<str>,
}

#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("a stored policy does not decode: {0}")]
    Decode(#[source] prost::DecodeError),
    #[error("a stored policy was unreadable when the store opened (see the log of the start)")]
    AtStart,
    #[error("a change log entry puts a policy without its resource or entitlement")]
    Change,
}

impl From<Unreadable> for StoreError {
    fn from(error: Unreadable) -> Self {
        StoreError::Internal(Box::new(error))
    }
}

impl From<EncodedRevision> for Encoded {
    fn from(record: EncodedRevision) -> Self {
        Self {
            resource: record.resource.into_boxed_slice(),
            revision: record.revision,
            create_time: record.create_time,
            update_time: record.update_time,
            change_seq: record.change_seq,
            actor: record.actor.into_boxed_str(),
            change_cause: record.change_cause.into_boxed_str(),
        }
    }
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
                .map_err(Unreadable::Decode)?,
            revision: self.revision,
            create_time: self.create_time,
            update_time: self.update_time,
            change_seq: self.change_seq,
            actor: self.actor.to_string(),
            change_cause: self.change_cause.to_string(),
        })
    }
}

/// The state as a backend reads it at start, one row at a time.
#[derive(Default)]
pub struct Loading(HashMap<pb::EntitlementRef, Entry>);

impl Loading {
    /// Adds one stored current revision; one that does not read is logged and fails only its
    /// own Get later (INTERNAL), as a read of it would.
    pub fn add(&mut self, key: pb::EntitlementRef, record: Result<EncodedRevision, StoreError>) {
        let entry = match record {
            Ok(record) => Entry::Live(Arc::new(record.into())),
            Err(error) => {
                tracing::error!(app_id = %key.app_id, entitlement_id = %key.entitlement_id, %error, "a stored policy does not read");
                Entry::Undecodable
            }
        };
        self.0.insert(key, entry);
    }

    /// The state, as of log position `at`.
    pub fn finish(self, at: u64) -> Current {
        Current {
            state: RwLock::new(State {
                policies: self.0,
                at,
            }),
            reached: watch::Sender::new(at),
            wanted: Notify::new(),
        }
    }
}

impl Current {
    /// The current revision of `key` if it is live, with the position memory has reached.
    pub fn get(
        &self,
        key: &pb::EntitlementRef,
    ) -> Result<Served<Option<StoredRevision>>, StoreError> {
        // The lock is held only for the lookup; the decode runs after it.
        let (entry, at) = {
            let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
            let entry = match state.policies.get(key) {
                None => None,
                Some(Entry::Live(encoded)) => Some(Arc::clone(encoded)),
                Some(Entry::Undecodable) => return Err(Unreadable::AtStart.into()),
            };
            (entry, state.at)
        };
        let value = entry.map(|entry| entry.decode()).transpose()?;
        Ok(Served { value, at })
    }

    /// The log position memory has reached.
    pub fn at(&self) -> u64 {
        self.state.read().unwrap_or_else(PoisonError::into_inner).at
    }

    /// Applies committed changes; `at`, when known, is the log position they bring memory to
    /// (it never moves back).
    pub fn apply(&self, changes: impl IntoIterator<Item = CurrentChange>, at: Option<u64>) {
        let at = {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for change in changes {
                match change {
                    CurrentChange::Put(record) => {
                        if let Some(key) = record.resource.entitlement.clone() {
                            let entry = Entry::Live(Arc::new(Encoded::new(&record)));
                            state.policies.insert(key, entry);
                        }
                    }
                    CurrentChange::Removed(key) => {
                        state.policies.remove(&key);
                    }
                }
            }
            if let Some(at) = at {
                state.at = state.at.max(at);
            }
            state.at
        };
        self.reached.send_if_modified(|reached| {
            let moved = *reached < at;
            *reached = at.max(*reached);
            moved
        });
    }

    /// Applies entries of the log, which must follow on from [`Self::at`] in order.
    pub fn apply_log(&self, sets: &[ChangeSet]) -> Result<(), StoreError> {
        for set in sets {
            let mut changes = Vec::with_capacity(set.changes.len());
            for change in &set.changes {
                changes.extend(of_log(change, set.seq)?);
            }
            self.apply(changes, Some(set.seq));
        }
        Ok(())
    }

    /// Waits until the follower is asked to read; see [`Self::reach`].
    pub async fn wanted(&self) {
        self.wanted.notified().await;
    }

    /// Whether memory reaches log position `seq` within [`CATCH_UP`].
    async fn reach(&self, seq: u64) -> bool {
        let mut reached = self.reached.subscribe();
        if *reached.borrow_and_update() >= seq {
            return true;
        }
        self.wanted.notify_one();
        tokio::time::timeout(CATCH_UP, reached.wait_for(|at| *at >= seq))
            .await
            .is_ok_and(|result| result.is_ok())
    }

    /// How many policies are held (live or unreadable).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .policies
            .len()
    }
}

/// What one change of the log does to the current revisions.
fn of_log(change: &pb::PolicyChange, seq: u64) -> Result<Option<CurrentChange>, StoreError> {
    let kind = Kind::try_from(change.kind).unwrap_or(Kind::Unspecified);
    match kind {
        Kind::Put | Kind::Initial => {
            let mut resource = change.policy.clone().ok_or(Unreadable::Change)?;
            if resource.entitlement.is_none() {
                return Err(Unreadable::Change.into());
            }
            let time = |timestamp: &Option<prost_types::Timestamp>| {
                (*timestamp)
                    .and_then(|timestamp| SystemTime::try_from(timestamp).ok())
                    .ok_or(Unreadable::Change)
            };
            let record = StoredRevision {
                revision: resource.revision,
                create_time: time(&resource.create_time)?,
                update_time: time(&resource.update_time)?,
                change_seq: seq,
                actor: change.actor.clone(),
                change_cause: change.change_cause.clone(),
                resource: {
                    clear_output_fields(&mut resource);
                    resource
                },
            };
            Ok(Some(CurrentChange::Put(Box::new(record))))
        }
        Kind::Delete => Ok(change.entitlement.clone().map(CurrentChange::Removed)),
        Kind::BindingCreated | Kind::BindingDeleted | Kind::Unspecified => Ok(None),
    }
}

/// Serves a read of the current state as fresh as `freshness` asks: from memory when it has
/// reached the position needed (waiting [`CATCH_UP`] for it at most), else from the database
/// (`read_database`, served at the head it was told). `head` reads the log head from the
/// database itself; a cursor past it is `CursorAhead`.
pub async fn serve<T, H, R>(
    current: &Current,
    freshness: Freshness,
    from_memory: impl Fn(&Current) -> Result<Served<T>, StoreError>,
    head: impl FnOnce() -> H,
    read_database: impl FnOnce() -> R,
) -> Result<Served<T>, StoreError>
where
    H: Future<Output = Result<u64, StoreError>>,
    R: Future<Output = Result<T, StoreError>>,
{
    let needed = match freshness {
        Freshness::Any => return from_memory(current),
        Freshness::AtLeast(given) if current.at() >= given => return from_memory(current),
        Freshness::AtLeast(given) => {
            let head = head().await?;
            if given > head {
                return Err(StoreError::CursorAhead { given, head });
            }
            (given, head)
        }
        Freshness::Latest => {
            let head = head().await?;
            (head, head)
        }
    };
    let (seq, head) = needed;
    if current.reach(seq).await {
        return from_memory(current);
    }
    tracing::debug!(
        needed = seq,
        at = current.at(),
        "memory is behind; reading the database"
    );
    let value = read_database().await?;
    Ok(Served { value, at: head })
}
