//! Running a [`WriteCheck`] against one connection, so it sees exactly the state of the
//! transaction it runs in: on the writer, that includes the earlier jobs of the same batch.

use std::panic::{AssertUnwindSafe, catch_unwind};

use rusqlite::Connection;

use super::error::Failure;
use super::queries;
use crate::pb;
use crate::policy::{Lookup, LookupError};
use crate::store::{StoreError, WriteCheck};

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
