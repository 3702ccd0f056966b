//! Running a [`WriteCheck`] against one connection, so it sees exactly the state of the
//! transaction it runs in: on the writer, that includes the earlier jobs of the same batch.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::Connection;

use super::error::Failure;
use super::queries;
use crate::pb;
use crate::policy::{Lookup, LookupError, Snapshot};
use crate::store::{SnapshotRead, StoreError, WriteCheck};

struct ConnLookup<'c>(&'c Connection);

impl Lookup for ConnLookup<'_> {
    fn delegation_targets(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError> {
        Ok(queries::delegation_targets(self.0, entitlement)?)
    }

    fn binding_exists(
        &self,
        source: &pb::EntitlementRef,
        destination: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        Ok(queries::binding_exists(self.0, source, destination)?)
    }

    fn dependants(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Vec<pb::EntitlementRef>, LookupError> {
        Ok(queries::dependants(self.0, entitlement)?)
    }
}

impl Snapshot for ConnLookup<'_> {
    fn resource(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<pb::EntitlementProvisionPolicy>, LookupError> {
        Ok(queries::current(self.0, entitlement)?.map(|record| record.resource))
    }

    fn head(&self) -> Result<u64, LookupError> {
        Ok(queries::log_state(self.0)?.1)
    }
}

/// Runs `read` against `conn`, which must be inside a read transaction (one snapshot).
pub(super) fn run_snapshot<T>(read: SnapshotRead<T>, conn: &Connection) -> Result<T, StoreError> {
    let snapshot = ConnLookup(conn);
    match catch_unwind(AssertUnwindSafe(|| read(&snapshot))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(from_lookup(err)),
        Err(_panic) => Err(Failure::CheckPanicked.into()),
    }
}

/// A panicking check fails its own write only: on the writer thread an unwinding panic would
/// otherwise stop every later write.
pub(super) fn run_check(
    check: WriteCheck,
    conn: &Connection,
) -> Result<Vec<pb::PolicyViolation>, StoreError> {
    let lookup = ConnLookup(conn);
    match catch_unwind(AssertUnwindSafe(|| check(&lookup))) {
        Ok(Ok(violations)) => Ok(violations),
        Ok(Err(err)) => Err(from_lookup(err)),
        Err(_panic) => Err(Failure::CheckPanicked.into()),
    }
}

/// Our lookup fails with a [`StoreError`]; getting it back keeps its class (unavailable or
/// internal) through the check.
fn from_lookup(err: LookupError) -> StoreError {
    match err.downcast::<StoreError>() {
        Ok(err) => *err,
        Err(other) => StoreError::Internal(other),
    }
}
