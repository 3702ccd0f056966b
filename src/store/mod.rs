//! Storage of provision policy resources: the [`Store`] trait every backend implements, and the
//! records it deals in. No tonic here; the service maps [`StoreError`] to a status.
//!
//! A backend stores the encoded resource (input fields only: the proto is the schema) with its
//! revision and times, keeps every revision, and runs the caller's check inside the write
//! transaction so that a check against stored state and the write are atomic.
//!
//! Beside the resources it keeps two small relations the delegation rules read: the delegation
//! edges of each current resource (entitlement → the entitlements it delegates to) and the proxy
//! bindings (source → destination: the source is the entitlement delegated to, the destination
//! the one that delegates). A binding is in use while the destination's current resource
//! delegates to the source; it cannot be deleted then.
//!
//! Every mutation that stands is one entry of the **change log** (`changes.rs`): a gap-free
//! sequence numbered from 1 in commit order, each entry holding the changes of exactly one
//! mutation. A delete is a tombstone revision, so listing at a past point of the log, the
//! history and the watch stream are all views of the revisions and the log.

pub mod changes;
#[cfg(test)]
pub(crate) mod contract;
#[cfg(test)]
pub(crate) mod contract_current;
#[cfg(test)]
pub(crate) mod contract_log;
pub mod current;
pub(crate) mod head;
pub mod metrics;
pub mod postgres;
pub mod record;
pub mod sqlite;

use std::future::Future;
use std::time::SystemTime;

use crate::pb;
use crate::policy::consistency::Freshness;
use crate::policy::{Lookup, LookupError, Snapshot};
use current::Served;
use metrics::StoreGauges;

/// One stored revision of an entitlement's resource.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRevision {
    /// The resource as written: `entitlement`, `provision_policy`, `deprovision_policy`; the
    /// output-only fields are left empty (they are derived from the fields below).
    pub resource: pb::EntitlementProvisionPolicy,
    /// 1 for the first write of the entitlement, increased by one per write.
    pub revision: i64,
    /// When revision 1 was written.
    pub create_time: SystemTime,
    /// When this revision was written.
    pub update_time: SystemTime,
    /// The position of this revision's write in the change log; 0 for a write that was only
    /// validated.
    pub change_seq: u64,
    /// Who wrote this revision (for a tombstone: who deleted); "" for revisions stored before
    /// actors were recorded.
    pub actor: String,
    /// Why, as the request said; often "".
    pub change_cause: String,
}

/// One revision in an entitlement's history: a write, or a delete (a tombstone, whose
/// `record.resource` holds only the entitlement).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub record: StoredRevision,
    pub deleted: bool,
}

/// The check a write runs inside its transaction, against the state it is about to change.
/// It returns every violation found; the write happens only when none has severity ERROR.
pub type WriteCheck =
    Box<dyn FnOnce(&dyn Lookup) -> Result<Vec<pb::PolicyViolation>, LookupError> + Send + 'static>;

/// A read of a consistent view of everything stored, run by [`Store::read_snapshot`].
pub type SnapshotRead<T> =
    Box<dyn FnOnce(&dyn Snapshot) -> Result<T, LookupError> + Send + 'static>;

/// A stored proxy binding: `destination` may delegate provisioning to `source`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBinding {
    /// The entitlement delegated to.
    pub source: pb::EntitlementRef,
    /// The entitlement that delegates.
    pub destination: pb::EntitlementRef,
    /// Created by a Set of a delegation with `implicit: true`, not by CreateProxyBinding.
    pub implicit: bool,
    pub create_time: SystemTime,
}

/// Which bindings to list, in the order (source.app_id, source.entitlement_id,
/// destination.app_id, destination.entitlement_id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BindingQuery {
    /// Only bindings from this source.
    pub source: Option<pb::EntitlementRef>,
    /// Only bindings into this destination.
    pub destination: Option<pb::EntitlementRef>,
    /// Only bindings strictly after this (source, destination) in the order: the last one of
    /// the previous page.
    pub after: Option<(pb::EntitlementRef, pb::EntitlementRef)>,
    /// At most this many.
    pub limit: usize,
}

/// A replacement of one entitlement's resource.
pub struct Write {
    /// The resource to store; `resource.entitlement` is the key. Output-only fields are ignored.
    pub resource: pb::EntitlementProvisionPolicy,
    /// Every entitlement the resource delegates to, in either policy: stored with it as its
    /// delegation edges (replacing those of the previous revision). Must be
    /// `policy::graph::edges(&resource).targets`: the in-memory state derives them from the
    /// resource (the change log carries nothing else).
    pub delegation_targets: Vec<pb::EntitlementRef>,
    /// Sources of bindings into this entitlement to create, marked implicit, in the same
    /// transaction and before the check runs (delegations with `implicit: true`). A binding
    /// that exists already is kept as it is. Not created when the write does not stand.
    pub implicit_binding_sources: Vec<pb::EntitlementRef>,
    /// When set, the current revision must equal it (0: the entitlement must have no resource).
    /// A deleted resource counts as none.
    pub expected_revision: Option<i64>,
    /// The write stands only when the entitlement has no live resource, else `AlreadyExists`.
    pub create_only: bool,
    /// Run the precondition and the check, but write nothing.
    pub validate_only: bool,
    /// The check to run inside the transaction.
    pub check: WriteCheck,
    /// The principal writing, stored with the revision: from the transport, never the body.
    pub actor: String,
    /// The request's reason for the write, stored with the revision.
    pub change_cause: String,
}

/// A delete of one entitlement's resource: a tombstone revision, its delegation edges dropped.
#[derive(Debug, Clone)]
pub struct Delete {
    pub entitlement: pb::EntitlementRef,
    /// When set, the current revision must equal it.
    pub expected_revision: Option<i64>,
    /// Run the preconditions, but write nothing.
    pub validate_only: bool,
    /// A missing resource is [`DeleteOutcome::Missing`] instead of `NotFound`.
    pub allow_missing: bool,
    /// The principal deleting, stored with the tombstone: from the transport, never the body.
    pub actor: String,
    /// The request's reason for the delete, stored with the tombstone.
    pub change_cause: String,
}

/// What a [`Delete`] came to when the store itself did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    /// The tombstone `revision` was written at `change_seq` (0 for `validate_only`).
    Deleted { revision: i64, change_seq: u64 },
    /// There was nothing to delete, and `allow_missing` was set: nothing was written.
    Missing,
}

/// Which current resources to list, as of one point of the change log, in the order
/// (app_id, entitlement_id).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyQuery {
    /// Only resources of this app.
    pub app_id: Option<String>,
    /// The state after the write at this position of the log (at most the head).
    pub at: u64,
    /// Only resources strictly after this key: the last one of the previous page.
    pub after: Option<pb::EntitlementRef>,
    /// At most this many.
    pub limit: usize,
}

/// Which revisions of one entitlement to list, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionQuery {
    pub entitlement: pb::EntitlementRef,
    /// Only revisions older than this: the last one of the previous page.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// What a [`Write`] came to when the store itself did not fail.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per write; boxing would only add an allocation"
)]
pub enum WriteOutcome {
    /// Stored (or, for `validate_only`, would have been stored as) `record`; `violations` holds
    /// only warnings.
    Written {
        record: StoredRevision,
        violations: Vec<pb::PolicyViolation>,
    },
    /// The check found violations of severity ERROR; nothing was written.
    Rejected {
        violations: Vec<pb::PolicyViolation>,
    },
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write's `expected_revision` is not the current revision (`None`: no resource yet).
    #[error("expected revision {expected}, found {actual:?}")]
    RevisionMismatch { expected: i64, actual: Option<i64> },
    /// The binding to create exists already, or a create-only write found a live resource.
    #[error("already exists")]
    AlreadyExists,
    /// The binding or resource to delete does not exist.
    #[error("not found")]
    NotFound,
    /// The resource to delete is delegated to by the current resources of `dependents`.
    #[error("has dependants")]
    HasDependants { dependents: Vec<pb::EntitlementRef> },
    /// The binding to delete is in use: the current resources of `dependents` delegate through it.
    #[error("in use")]
    InUse { dependents: Vec<pb::EntitlementRef> },
    /// A read asked to be at least as fresh as log position `given`, past the log's `head`.
    #[error("cursor {given} ahead of the log head {head}")]
    CursorAhead { given: u64, head: u64 },
    /// The backend cannot serve now (busy, disk full, connection lost); a retry may succeed.
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// The backend failed in a way a retry will not fix (corrupt data, bug).
    #[error("storage failure")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// A backend that stores provision policy resources.
pub trait Store: Send + Sync + 'static {
    /// The resource of `entitlement` at `revision` (`None`: the current one), if there is one.
    fn get(
        &self,
        entitlement: &pb::EntitlementRef,
        revision: Option<i64>,
    ) -> impl Future<Output = Result<Option<StoredRevision>, StoreError>> + Send;

    /// The current resource of `entitlement` as clients see it (output-only fields set),
    /// encoded, if it has one, as fresh as `freshness` asks, with the log position it was
    /// served at (see `current.rs`): from memory, ready bytes without a decode.
    fn get_current(
        &self,
        entitlement: &pb::EntitlementRef,
        freshness: Freshness,
    ) -> impl Future<Output = Result<Served<Option<bytes::Bytes>>, StoreError>> + Send;

    /// Runs `read` against this process's in-memory state when it is as fresh as `freshness`
    /// asks (waiting for it as `get_current` does), else against one consistent read view of
    /// the database; with the log position it was served at.
    fn read_current<T: Send + 'static>(
        &self,
        freshness: Freshness,
        read: SnapshotRead<T>,
    ) -> impl Future<Output = Result<Served<T>, StoreError>> + Send;

    /// Applies `write` atomically: precondition, check and write in one transaction.
    fn write(&self, write: Write) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Runs `check` against a consistent read view of the stored state, writing nothing.
    fn check(
        &self,
        check: WriteCheck,
    ) -> impl Future<Output = Result<Vec<pb::PolicyViolation>, StoreError>> + Send;

    /// Whether any current resource other than `entitlement`'s own delegates to it: one point
    /// read, cheap enough for every Validate and Set (the full walk needs a read view).
    fn has_dependants(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Runs `read` against one consistent read view of the whole store, writing nothing.
    fn read_snapshot<T: Send + 'static>(
        &self,
        read: SnapshotRead<T>,
    ) -> impl Future<Output = Result<T, StoreError>> + Send;

    /// Stores a new binding (`create_time` is set by the store), or fails with `AlreadyExists`.
    fn create_binding(
        &self,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
        implicit: bool,
    ) -> impl Future<Output = Result<StoredBinding, StoreError>> + Send;

    /// Deletes a binding, atomically with the check that no current resource delegates through
    /// it (`InUse`), or fails with `NotFound`.
    fn delete_binding(
        &self,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The bindings `query` selects, in its order.
    fn list_bindings(
        &self,
        query: BindingQuery,
    ) -> impl Future<Output = Result<Vec<StoredBinding>, StoreError>> + Send;

    /// Writes a tombstone for `delete.entitlement`, atomically with the checks that it has a
    /// live resource (`NotFound`), that the precondition holds, and that no other current
    /// resource delegates to it (`HasDependants`).
    fn delete(
        &self,
        delete: Delete,
    ) -> impl Future<Output = Result<DeleteOutcome, StoreError>> + Send;

    /// The live resources `query` selects, as they were at `query.at`.
    fn list_policies(
        &self,
        query: PolicyQuery,
    ) -> impl Future<Output = Result<Vec<StoredRevision>, StoreError>> + Send;

    /// The revisions `query` selects, newest first, tombstones included.
    fn list_revisions(
        &self,
        query: RevisionQuery,
    ) -> impl Future<Output = Result<Vec<HistoryEntry>, StoreError>> + Send;

    /// The id made when the store was initialised: cursors carry it, so that a cursor of
    /// another store is refused.
    fn store_id(&self) -> &str;

    /// The position of the last committed write in the change log (0: none yet), read from
    /// the database itself.
    fn head(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The head as this process last learned it: updated by this process's commits before
    /// they are acknowledged, and (PostgreSQL) by other replicas' through notifications and
    /// polling. Never goes backwards.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// The log entries after position `after`, in order, at most `limit` of them.
    fn read_changes(
        &self,
        after: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<changes::ChangeSet>, StoreError>> + Send;

    /// Whether the backend can serve now: PostgreSQL answers a query; the SQLite data dir takes
    /// a write and an fsync. Health runs it in the background, never on a Check.
    fn probe(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The counts the metrics endpoint shows, read from the database at scrape time.
    fn gauges(&self) -> impl Future<Output = Result<StoreGauges, StoreError>> + Send;

    /// Flushes and closes the backend; called once serving has stopped.
    fn close(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The log position a read of the database must be at least as fresh as, for `freshness`:
/// reads of the database see every commit before them, so this is the position they are
/// served at. `Latest` reads the head from the database; `Any` takes the head this process
/// knows; `AtLeast` takes that when it is fresh enough, and refuses a cursor past the head.
pub async fn read_position(store: &impl Store, freshness: Freshness) -> Result<u64, StoreError> {
    let known = *store.subscribe().borrow();
    match freshness {
        Freshness::Any => Ok(known),
        Freshness::AtLeast(given) if given <= known => Ok(known),
        Freshness::AtLeast(given) => {
            let head = store.head().await?;
            match given > head {
                true => Err(StoreError::CursorAhead { given, head }),
                false => Ok(head),
            }
        }
        Freshness::Latest => store.head().await,
    }
}

/// One `store.commit` span under each caller's span, all open until dropped (after the COMMIT):
/// a batch commits the writes of several RPCs, so each RPC's trace shows the one COMMIT it
/// waited on, and how many writes shared it (`batch_size`, also put on the caller's span).
pub(crate) fn commit_spans<'a>(
    callers: impl ExactSizeIterator<Item = &'a tracing::Span>,
) -> Vec<tracing::Span> {
    // As i64: tracing-opentelemetry exports unsigned fields as strings.
    let batch_size = callers.len() as i64;
    callers
        .filter(|caller| !caller.is_none())
        .map(|caller| {
            caller.record("batch_size", batch_size);
            tracing::info_span!(parent: caller, "store.commit", batch_size)
        })
        .collect()
}
