//! Storage of provision policy resources: the [`Store`] trait every backend implements, and the
//! records it deals in. No tonic here; the service maps [`StoreError`] to a status.
//!
//! A backend stores the encoded resource (input fields only: the proto is the schema) with its
//! revision and times, keeps every revision, and runs the caller's check inside the write
//! transaction so that a check against stored state and the write are atomic.

#[cfg(test)]
pub(crate) mod contract;
pub mod record;
pub mod sqlite;

use std::future::Future;
use std::time::SystemTime;

use crate::pb;
use crate::policy::{Lookup, LookupError};

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
}

/// The check a write runs inside its transaction, against the state it is about to change.
/// It returns every violation found; the write happens only when none has severity ERROR.
pub type WriteCheck =
    Box<dyn FnOnce(&dyn Lookup) -> Result<Vec<pb::PolicyViolation>, LookupError> + Send + 'static>;

/// A replacement of one entitlement's resource.
pub struct Write {
    /// The resource to store; `resource.entitlement` is the key. Output-only fields are ignored.
    pub resource: pb::EntitlementProvisionPolicy,
    /// When set, the current revision must equal it (0: the entitlement must have no resource).
    pub expected_revision: Option<i64>,
    /// Run the precondition and the check, but write nothing.
    pub validate_only: bool,
    /// The check to run inside the transaction.
    pub check: WriteCheck,
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

    /// Applies `write` atomically: precondition, check and write in one transaction.
    fn write(&self, write: Write) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;

    /// Runs `check` against a consistent read view of the stored state, writing nothing.
    fn check(
        &self,
        check: WriteCheck,
    ) -> impl Future<Output = Result<Vec<pb::PolicyViolation>, StoreError>> + Send;

    /// Flushes and closes the backend; called once serving has stopped.
    fn close(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
