//! Every live policy's current revision, in memory, so that a Get of the current revision is a
//! lookup and a decode of bytes at hand, not a database read; and the log position that memory
//! has reached, so that a read can be served as fresh as its caller asks ([`Freshness`]).
//!
//! The resource is kept encoded: a decoded policy takes several times its encoded size (its
//! strings and vectors each their own allocation), which at 100k policies is the difference
//! between ~60 MB and ~370 MB.
//!
//! Beside the policies it holds what the delegation rules read (each live policy's delegation
//! targets, who delegates to whom, the proxy bindings), so that a Validate, a Set's dependant
//! count or a plan reads memory ([`View`], a [`Snapshot`]) instead of the database.
//!
//! Both backends keep it current the same way, from the change log's entries (`apply_log`):
//! SQLite's writer applies each batch's entries once it has committed and before it answers,
//! so memory is exact; each PostgreSQL replica applies the log in order (`postgres/follow.rs`),
//! so memory may lag the database by the time a change takes to arrive. The rules of serving
//! from it are one (`choose`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, SystemTime};

use prost::Message;
use tokio::sync::{Notify, watch};

use super::changes::ChangeSet;
use super::record::{clear_output_fields, etag, timestamp};
use super::{StoreError, StoredRevision};
use crate::pb;
use crate::pb::policy_change::Kind;
use crate::policy::consistency::Freshness;
use crate::policy::{self, Lookup, LookupError, Snapshot};

/// How long a read waits for memory to reach the position it needs before it reads the
/// database instead: long enough for a change on its way (a log read, about a millisecond),
/// short enough that a stalled feed costs a read little.
const CATCH_UP: Duration = Duration::from_millis(200);

/// What one change of the log does to the state.
#[derive(Debug, Clone)]
enum CurrentChange {
    Put(Box<StoredRevision>),
    Removed(pb::EntitlementRef),
    Binding {
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
        created: bool,
    },
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

/// Where a read is to be served from, as [`choose`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Memory,
    /// The database, which is at least at this position.
    Database {
        at: u64,
    },
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

type Key = (String, String);

fn key_of(entitlement: &pb::EntitlementRef) -> Key {
    (
        entitlement.app_id.clone(),
        entitlement.entitlement_id.clone(),
    )
}

fn entitlement_of((app_id, entitlement_id): &Key) -> pb::EntitlementRef {
    pb::EntitlementRef {
        app_id: app_id.clone(),
        entitlement_id: entitlement_id.clone(),
    }
}

#[derive(Debug, Default)]
struct State {
    policies: HashMap<pb::EntitlementRef, Entry>,
    /// The entitlements each live policy delegates to (in either policy; never itself),
    /// ordered; only those that delegate.
    targets: HashMap<pb::EntitlementRef, Vec<pb::EntitlementRef>>,
    /// Who delegates to each entitlement, ordered by app id then entitlement id.
    dependants: HashMap<pb::EntitlementRef, BTreeSet<Key>>,
    /// Every proxy binding: (source, destination).
    bindings: HashSet<(pb::EntitlementRef, pb::EntitlementRef)>,
    /// Every change of the log up to here is applied.
    at: u64,
}

impl State {
    /// Makes `targets` the delegation edges of `key`.
    fn set_targets(&mut self, key: &pb::EntitlementRef, mut targets: Vec<pb::EntitlementRef>) {
        targets.retain(|target| target != key);
        targets.sort_by(|a, b| (&a.app_id, &a.entitlement_id).cmp(&(&b.app_id, &b.entitlement_id)));
        targets.dedup();
        for target in &targets {
            self.dependants
                .entry(target.clone())
                .or_default()
                .insert(key_of(key));
        }
        let old = match targets.is_empty() {
            true => self.targets.remove(key),
            false => self.targets.insert(key.clone(), targets),
        };
        let current = self.targets.get(key);
        for target in old.unwrap_or_default() {
            if current.is_some_and(|now| now.contains(&target)) {
                continue;
            }
            if let Some(who) = self.dependants.get_mut(&target) {
                who.remove(&key_of(key));
                if who.is_empty() {
                    self.dependants.remove(&target);
                }
            }
        }
    }

    fn apply(&mut self, change: CurrentChange) {
        match change {
            CurrentChange::Put(record) => {
                if let Some(key) = record.resource.entitlement.clone() {
                    let targets = policy::graph::edges(&record.resource).targets;
                    self.set_targets(&key, targets);
                    let entry = Entry::Live(Arc::new(Encoded::new(&record)));
                    self.policies.insert(key, entry);
                }
            }
            CurrentChange::Removed(key) => {
                self.set_targets(&key, Vec::new());
                self.policies.remove(&key);
            }
            CurrentChange::Binding {
                source,
                destination,
                created,
            } => {
                match created {
                    true => self.bindings.insert((source, destination)),
                    false => self.bindings.remove(&(source, destination)),
                };
            }
        }
    }
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

    /// The resource as clients see it, encoded: the stored bytes followed by the output-only
    /// fields. A message's encodings concatenate into their merge, and the stored bytes hold
    /// no output-only field (both backends clear them before storing), so this decodes to
    /// exactly what `StoredRevision::into_resource` gives, with no decode to get there.
    fn client_bytes(&self) -> bytes::Bytes {
        let output = pb::EntitlementProvisionPolicy {
            etag: etag(self.revision),
            revision: self.revision,
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            actor: self.actor.to_string(),
            change_cause: self.change_cause.to_string(),
            ..Default::default()
        };
        let mut bytes = Vec::with_capacity(self.resource.len() + output.encoded_len());
        bytes.extend_from_slice(&self.resource);
        output.encode_raw(&mut bytes);
        bytes.into()
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
pub struct Loading {
    state: State,
    /// The edges read so far, by the entitlement that delegates: made the state's at the end.
    edges: HashMap<pb::EntitlementRef, Vec<pb::EntitlementRef>>,
}

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
        self.state.policies.insert(key, entry);
    }

    /// Adds a stored delegation edge (from the backend's table of them, so that the policies
    /// need not be decoded at start).
    pub fn add_edge(&mut self, key: pb::EntitlementRef, target: pb::EntitlementRef) {
        self.edges.entry(key).or_default().push(target);
    }

    pub fn add_binding(&mut self, source: pb::EntitlementRef, destination: pb::EntitlementRef) {
        self.state.bindings.insert((source, destination));
    }

    /// The state, as of log position `at`.
    pub fn finish(mut self, at: u64) -> Current {
        for (key, targets) in std::mem::take(&mut self.edges) {
            self.state.set_targets(&key, targets);
        }
        self.state.at = at;
        Current {
            state: RwLock::new(self.state),
            reached: watch::Sender::new(at),
            wanted: Notify::new(),
        }
    }
}

impl Current {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current revision of `key` if it is live, with the position memory has reached.
    pub fn get(
        &self,
        key: &pb::EntitlementRef,
    ) -> Result<Served<Option<StoredRevision>>, StoreError> {
        // The lock is held only for the lookup; the decode runs after it.
        let (entry, at) = {
            let state = self.state();
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

    /// The current resource of `key` as clients see it, encoded ([`Encoded::client_bytes`]),
    /// if it is live, with the position memory has reached: a lookup and a copy.
    pub fn get_encoded(
        &self,
        key: &pb::EntitlementRef,
    ) -> Result<Served<Option<bytes::Bytes>>, StoreError> {
        // The lock is held only for the lookup: the writer (or the feed) waits on it.
        let (entry, at) = {
            let state = self.state();
            let entry = match state.policies.get(key) {
                None => None,
                Some(Entry::Live(encoded)) => Some(Arc::clone(encoded)),
                Some(Entry::Undecodable) => return Err(Unreadable::AtStart.into()),
            };
            (entry, state.at)
        };
        Ok(Served {
            value: entry.map(|entry| entry.client_bytes()),
            at,
        })
    }

    /// Whether any live policy other than `key`'s own delegates to it.
    pub fn has_dependants(&self, key: &pb::EntitlementRef) -> bool {
        self.state().dependants.contains_key(key)
    }

    /// A consistent view of the whole state, for the delegation rules and the plans: the writer
    /// (or the follower) waits while it is held, so hold it only for an in-memory walk.
    pub fn view(&self) -> View<'_> {
        View(self.state())
    }

    /// The log position memory has reached.
    pub fn at(&self) -> u64 {
        self.state().at
    }

    /// Applies entries of the log, which must follow on from [`Self::at`] in order.
    pub fn apply_log(&self, sets: &[ChangeSet]) -> Result<(), StoreError> {
        let mut changes = Vec::new();
        for set in sets {
            for change in &set.changes {
                changes.extend(of_log(change, set.seq)?);
            }
        }
        let Some(last) = sets.last().map(|set| set.seq) else {
            return Ok(());
        };
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for change in changes {
                state.apply(change);
            }
            state.at = state.at.max(last);
        }
        self.reached.send_if_modified(|reached| {
            let moved = *reached < last;
            *reached = last.max(*reached);
            moved
        });
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
        self.state().policies.len()
    }
}

/// A record read from the database, encoded as memory serves it.
pub fn client_bytes(record: StoredRevision) -> bytes::Bytes {
    record.into_resource().encode_to_vec().into()
}

/// The whole state at one position of the log, as the rules read stored state.
pub struct View<'a>(RwLockReadGuard<'a, State>);

impl View<'_> {
    /// The position it shows.
    pub fn at(&self) -> u64 {
        self.0.at
    }
}

impl Lookup for View<'_> {
    fn delegation_targets(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError> {
        Ok(match self.0.policies.contains_key(entitlement) {
            true => Some(self.0.targets.get(entitlement).cloned().unwrap_or_default()),
            false => None,
        })
    }

    fn binding_exists(
        &self,
        source: &pb::EntitlementRef,
        destination: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        Ok(self
            .0
            .bindings
            .contains(&(source.clone(), destination.clone())))
    }

    fn dependants(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Vec<pb::EntitlementRef>, LookupError> {
        Ok(self
            .0
            .dependants
            .get(entitlement)
            .map(|who| who.iter().map(entitlement_of).collect())
            .unwrap_or_default())
    }
}

impl Snapshot for View<'_> {
    fn resource(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<pb::EntitlementProvisionPolicy>, LookupError> {
        match self.0.policies.get(entitlement) {
            None => Ok(None),
            Some(Entry::Live(encoded)) => Ok(Some(encoded.decode()?.resource)),
            Some(Entry::Undecodable) => Err(Box::new(Unreadable::AtStart)),
        }
    }

    fn head(&self) -> Result<u64, LookupError> {
        Ok(self.0.at)
    }
}

/// What one change of the log does to the state.
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
        Kind::BindingCreated | Kind::BindingDeleted => {
            let binding = change.binding.as_ref().ok_or(Unreadable::Change)?;
            let (Some(source), Some(destination)) = (&binding.source, &binding.destination) else {
                return Err(Unreadable::Change.into());
            };
            Ok(Some(CurrentChange::Binding {
                source: source.clone(),
                destination: destination.clone(),
                created: kind == Kind::BindingCreated,
            }))
        }
        Kind::Unspecified => Ok(None),
    }
}

/// Where a read of the current state as fresh as `freshness` asks is served from: memory when
/// it has reached the position needed (waiting [`CATCH_UP`] for it at most), else the
/// database, at the head it was told. `head` reads the log head from the database itself; a
/// cursor past it is `CursorAhead`.
pub async fn choose<H>(
    current: &Current,
    freshness: Freshness,
    head: impl FnOnce() -> H,
) -> Result<Source, StoreError>
where
    H: Future<Output = Result<u64, StoreError>>,
{
    let (seq, head) = match freshness {
        Freshness::Any => return Ok(Source::Memory),
        Freshness::AtLeast(given) if current.at() >= given => return Ok(Source::Memory),
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
    if current.reach(seq).await {
        return Ok(Source::Memory);
    }
    tracing::debug!(
        needed = seq,
        at = current.at(),
        "memory is behind; reading the database"
    );
    Ok(Source::Database { at: head })
}

/// A read of one policy as [`choose`] says: `from_memory`, or `read_database` served at the
/// head.
pub async fn serve<T, H, R>(
    current: &Current,
    freshness: Freshness,
    from_memory: impl FnOnce(&Current) -> Result<Served<T>, StoreError>,
    head: impl FnOnce() -> H,
    read_database: impl FnOnce() -> R,
) -> Result<Served<T>, StoreError>
where
    H: Future<Output = Result<u64, StoreError>>,
    R: Future<Output = Result<T, StoreError>>,
{
    match choose(current, freshness, head).await? {
        Source::Memory => from_memory(current),
        Source::Database { at } => Ok(Served {
            value: read_database().await?,
            at,
        }),
    }
}

/// A read of the whole state as [`choose`] says: `read` on a [`View`] of memory, or on a read
/// view of the database (`read_database`), served at the head.
pub async fn read_with<T, H, R>(
    current: &Current,
    freshness: Freshness,
    read: super::SnapshotRead<T>,
    head: impl FnOnce() -> H,
    read_database: impl FnOnce(super::SnapshotRead<T>) -> R,
) -> Result<Served<T>, StoreError>
where
    H: Future<Output = Result<u64, StoreError>>,
    R: Future<Output = Result<T, StoreError>>,
{
    match choose(current, freshness, head).await? {
        Source::Memory => {
            let view = current.view();
            // A panicking read fails its own call, as one of the database's does.
            let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&view)))
                .map_err(|_| StoreError::Internal("a read of the in-memory state panicked".into()))?
                .map_err(StoreError::Internal)?;
            Ok(Served {
                value,
                at: view.at(),
            })
        }
        Source::Database { at } => Ok(Served {
            value: read_database(read).await?,
            at,
        }),
    }
}
