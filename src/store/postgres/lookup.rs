//! Running a [`WriteCheck`] (synchronous caller code) against a connection the async client
//! drives: each lookup blocks its thread on one query, on the connection of the transaction the
//! check runs in. On the writer, that includes the earlier jobs of the same batch.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio_postgres::{Client, Statement};

use super::error::Failure;
use super::queries;
use crate::pb;
use crate::policy::{Lookup, LookupError, Snapshot};
use crate::store::{SnapshotRead, StoreError, WriteCheck};

/// Runs one query to completion on the calling (non-async) thread.
pub(super) trait Blocker {
    fn block<T>(
        &self,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError>;
}

/// From a thread of `spawn_blocking`: the runtime's own threads drive the connection.
impl Blocker for tokio::runtime::Handle {
    fn block<T>(
        &self,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        Ok(self.block_on(query)?)
    }
}

/// The statements a lookup runs, prepared on its connection.
pub(super) struct LookupStatements<'s> {
    pub delegation_targets: &'s Statement,
    pub binding_exists: &'s Statement,
    pub dependants: &'s Statement,
}

/// What a snapshot runs beyond a lookup.
pub(super) struct SnapshotStatements<'s> {
    pub lookup: LookupStatements<'s>,
    pub current: &'s Statement,
    pub head: &'s Statement,
}

struct ClientLookup<'c, B> {
    client: &'c Client,
    statements: LookupStatements<'c>,
    blocker: &'c B,
}

impl<B: Blocker> Lookup for ClientLookup<'_, B> {
    fn delegation_targets(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError> {
        let rows = self.blocker.block(self.client.query(
            self.statements.delegation_targets,
            &[&entitlement.app_id, &entitlement.entitlement_id],
        ))?;
        Ok(queries::targets_from_rows(&rows)?)
    }

    fn binding_exists(
        &self,
        source: &pb::EntitlementRef,
        destination: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        let row = self.blocker.block(self.client.query_one(
            self.statements.binding_exists,
            &[
                &source.app_id,
                &source.entitlement_id,
                &destination.app_id,
                &destination.entitlement_id,
            ],
        ))?;
        Ok(row.try_get(0).map_err(StoreError::from)?)
    }

    fn dependants(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Vec<pb::EntitlementRef>, LookupError> {
        let rows = self.blocker.block(self.client.query(
            self.statements.dependants,
            &[&entitlement.app_id, &entitlement.entitlement_id],
        ))?;
        Ok(queries::refs_from_rows(&rows)?)
    }
}

struct ClientSnapshot<'c, B> {
    lookup: ClientLookup<'c, B>,
    current: &'c Statement,
    head: &'c Statement,
}

impl<B: Blocker> Lookup for ClientSnapshot<'_, B> {
    fn delegation_targets(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError> {
        self.lookup.delegation_targets(entitlement)
    }

    fn binding_exists(
        &self,
        source: &pb::EntitlementRef,
        destination: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        self.lookup.binding_exists(source, destination)
    }

    fn dependants(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Vec<pb::EntitlementRef>, LookupError> {
        self.lookup.dependants(entitlement)
    }
}

impl<B: Blocker> Snapshot for ClientSnapshot<'_, B> {
    fn resource(
        &self,
        entitlement: &pb::EntitlementRef,
    ) -> Result<Option<pb::EntitlementProvisionPolicy>, LookupError> {
        let row = self.lookup.blocker.block(self.lookup.client.query_opt(
            self.current,
            &[&entitlement.app_id, &entitlement.entitlement_id],
        ))?;
        let record = row.as_ref().map(queries::revision_from_row).transpose()?;
        Ok(record.map(|record| record.resource))
    }

    fn head(&self) -> Result<u64, LookupError> {
        let row = self
            .lookup
            .blocker
            .block(self.lookup.client.query_one(self.head, &[]))?;
        let head: i64 = row.try_get(0).map_err(StoreError::from)?;
        Ok(u64::try_from(head).unwrap_or_default())
    }
}

/// Runs `read` against the snapshot of the transaction on `client`.
pub(super) fn run_snapshot<B: Blocker, T>(
    read: SnapshotRead<T>,
    client: &Client,
    statements: SnapshotStatements<'_>,
    blocker: &B,
) -> Result<T, StoreError> {
    let snapshot = ClientSnapshot {
        lookup: ClientLookup {
            client,
            statements: statements.lookup,
            blocker,
        },
        current: statements.current,
        head: statements.head,
    };
    match catch_unwind(AssertUnwindSafe(|| read(&snapshot))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(from_lookup(err)),
        Err(_panic) => Err(Failure::CheckPanicked.into()),
    }
}

/// A panicking check fails its own write only: on the writer thread an unwinding panic would
/// otherwise stop every later write.
pub(super) fn run_check<B: Blocker>(
    check: WriteCheck,
    client: &Client,
    statements: LookupStatements<'_>,
    blocker: &B,
) -> Result<Vec<pb::PolicyViolation>, StoreError> {
    let lookup = ClientLookup {
        client,
        statements,
        blocker,
    };
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
