//! What the store tells the metrics endpoint. Two places observe it, each where the number is
//! true:
//! - the batch size and COMMIT duration inside each backend's group-commit writer: only the
//!   writer knows how many callers one transaction served, and a timer around `Store::write`
//!   would measure the caller's wait in the queue, not the commit;
//! - the SQLite WAL checkpoints in the checkpointer thread that runs them, off the writer;
//! - read durations and errors by class at the [`Store`] trait boundary, by [`Observed`]: one
//!   wrapper for every backend, so that no read path of either backend needs a timer of its own.
//!
//! The gauges (live policies, bindings, pool connections in use, the change-log head) are read
//! at scrape time through [`Store::gauges`] and [`Store::subscribe`], so they are the
//! database's numbers, other replicas' writes included, not a count this process keeps.
//!
//! Every label value is a fixed string of this module: no id, body or URL ever becomes one.

use std::future::Future;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::changes::ChangeSet;
use super::{
    BindingQuery, Delete, DeleteOutcome, HistoryEntry, PolicyQuery, RevisionQuery, SnapshotRead,
    Store, StoreError, StoredBinding, StoredRevision, Write, WriteCheck, WriteOutcome,
};
use crate::pb;
use crate::policy::consistency::Freshness;
use crate::store::current::Served;

/// Counts the store reads at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// Entitlements whose current revision is not a tombstone.
    pub live_policies: u64,
    pub proxy_bindings: u64,
    /// Pooled connections lent out now; `None` for a backend without a pool (SQLite).
    pub connections_in_use: Option<u64>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    op: &'static str,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckpointLabels {
    mode: &'static str,
    result: &'static str,
}

/// Which backend the series are for: each exports some of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    /// WAL checkpoints.
    Sqlite,
    /// The connection pool's use.
    Postgres,
}

/// How the SQLite checkpointer ran a checkpoint of the WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckpointMode {
    /// Copies what it can without waiting for anyone.
    Passive,
    /// Copies everything and empties the WAL file, while the writer is held.
    Truncate,
}

impl CheckpointMode {
    fn label(self) -> &'static str {
        match self {
            Self::Passive => "passive",
            Self::Truncate => "truncate",
        }
    }
}

/// How a checkpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CheckpointResult {
    /// Every frame of the WAL is in the database file (a TRUNCATE: and the WAL is empty).
    Complete,
    /// A reader's snapshot still needs some of the frames, so they stay in the WAL.
    Partial,
    /// A reader kept a TRUNCATE from emptying the WAL, or another process was checkpointing.
    Busy,
    /// SQLite failed (logged).
    Error,
}

impl CheckpointResult {
    fn label(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Partial => "partial",
            Self::Busy => "busy",
            Self::Error => "error",
        }
    }
}

/// The store's series. Cheap to clone: every handle shares its values.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    batch_size: Histogram,
    commit_seconds: Histogram,
    read_seconds: Family<OpLabels, Histogram>,
    errors: Family<ErrorLabels, Counter>,
    checkpoints: Family<CheckpointLabels, Counter>,
    checkpoint_seconds: Family<ModeLabels, Histogram>,
    head: Gauge,
    live_policies: Gauge,
    proxy_bindings: Gauge,
    connections_in_use: Gauge,
}

/// 100 µs to about 3 s: a point read from SQLite's page cache is a few µs and lands in the
/// first bucket; a PostgreSQL read across a network is milliseconds.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Default for StoreMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl StoreMetrics {
    pub fn new() -> Self {
        let errors = Family::default();
        // The classes alerts watch exist from the start, so that `rate()` sees the first one.
        for class in ["unavailable", "internal"] {
            for op in ["write", "read"] {
                let _ = errors.get_or_create(&ErrorLabels { op, class });
            }
        }
        let checkpoints = Family::default();
        for mode in [CheckpointMode::Passive, CheckpointMode::Truncate] {
            let _ = checkpoints.get_or_create(&CheckpointLabels {
                mode: mode.label(),
                result: CheckpointResult::Error.label(),
            });
        }
        Self {
            // 1 to 256 (SQLite's MAX_BATCH; PostgreSQL's is 64).
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            commit_seconds: seconds_histogram(),
            read_seconds: Family::new_with_constructor(seconds_histogram),
            errors,
            checkpoints,
            checkpoint_seconds: Family::new_with_constructor(seconds_histogram),
            head: Gauge::default(),
            live_policies: Gauge::default(),
            proxy_bindings: Gauge::default(),
            connections_in_use: Gauge::default(),
        }
    }

    /// Adds the series to `registry` (prefixed `provisiond_` by the caller's sub-registry): those
    /// of every backend and those of `backend`.
    pub fn register(&self, registry: &mut Registry, backend: StoreBackend) {
        registry.register(
            "store_write_batch_size",
            "Mutations committed by one transaction of the group-commit writer",
            self.batch_size.clone(),
        );
        registry.register_with_unit(
            "store_commit",
            "Duration of the COMMIT of one write batch",
            Unit::Seconds,
            self.commit_seconds.clone(),
        );
        registry.register_with_unit(
            "store_read",
            "Duration of a store read, by operation",
            Unit::Seconds,
            self.read_seconds.clone(),
        );
        registry.register(
            "store_errors",
            "Failed store operations, by kind of operation and error class",
            self.errors.clone(),
        );
        registry.register(
            "store_change_log_head",
            "Position of the last committed write in the change log, as this process knows it",
            self.head.clone(),
        );
        registry.register(
            "live_policies",
            "Entitlements with a current (not deleted) provision policy",
            self.live_policies.clone(),
        );
        registry.register(
            "proxy_bindings",
            "Stored proxy bindings",
            self.proxy_bindings.clone(),
        );
        match backend {
            StoreBackend::Sqlite => {
                registry.register(
                    "store_checkpoints",
                    "SQLite WAL checkpoints run by the checkpointer thread, by mode and result",
                    self.checkpoints.clone(),
                );
                registry.register_with_unit(
                    "store_checkpoint",
                    "Duration of a SQLite WAL checkpoint, by mode (a truncate holds the writer)",
                    Unit::Seconds,
                    self.checkpoint_seconds.clone(),
                );
            }
            StoreBackend::Postgres => registry.register(
                "store_pool_connections_in_use",
                "PostgreSQL pool connections lent out to reads",
                self.connections_in_use.clone(),
            ),
        }
    }

    /// One COMMIT of the writer that answered `batch` callers and took `duration`.
    pub(crate) fn committed(&self, batch: usize, duration: Duration) {
        self.batch_size.observe(batch as f64);
        self.commit_seconds.observe(duration.as_secs_f64());
    }

    /// One checkpoint of the SQLite WAL that ended as `result` after `duration`.
    pub(crate) fn checkpointed(
        &self,
        mode: CheckpointMode,
        result: CheckpointResult,
        duration: Duration,
    ) {
        self.checkpoints
            .get_or_create(&CheckpointLabels {
                mode: mode.label(),
                result: result.label(),
            })
            .inc();
        self.checkpoint_seconds
            .get_or_create(&ModeLabels { mode: mode.label() })
            .observe(duration.as_secs_f64());
    }

    /// How many checkpoints in `mode` ended as `result`.
    #[cfg(test)]
    pub(crate) fn checkpoints(&self, mode: CheckpointMode, result: CheckpointResult) -> u64 {
        self.checkpoints
            .get_or_create(&CheckpointLabels {
                mode: mode.label(),
                result: result.label(),
            })
            .get()
    }

    /// Sets the gauges from what the store reports at scrape time.
    pub fn sample(&self, head: u64, gauges: StoreGauges) {
        let clamp = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.head.set(clamp(head));
        self.live_policies.set(clamp(gauges.live_policies));
        self.proxy_bindings.set(clamp(gauges.proxy_bindings));
        if let Some(in_use) = gauges.connections_in_use {
            self.connections_in_use.set(clamp(in_use));
        }
    }

    fn error(&self, op: &'static str, error: &StoreError) {
        let class = match error {
            StoreError::RevisionMismatch { .. } => "revision_mismatch",
            StoreError::AlreadyExists => "already_exists",
            StoreError::NotFound => "not_found",
            StoreError::HasDependants { .. } => "has_dependants",
            StoreError::InUse { .. } => "in_use",
            StoreError::CursorAhead { .. } => "cursor_ahead",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Internal(_) => "internal",
        };
        self.errors.get_or_create(&ErrorLabels { op, class }).inc();
    }

    async fn read<T>(
        &self,
        op: &'static str,
        read: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = read.await;
        self.read_seconds
            .get_or_create(&OpLabels { op })
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            self.error("read", error);
        }
        result
    }

    async fn mutation<T>(
        &self,
        mutation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let result = mutation.await;
        if let Err(error) = &result {
            self.error("write", error);
        }
        result
    }
}

/// A [`Store`] whose reads are timed and whose errors are counted in `metrics`; everything
/// else is the inner store's.
pub struct Observed<S> {
    inner: S,
    metrics: StoreMetrics,
}

impl<S: Store> Observed<S> {
    pub fn new(inner: S, metrics: StoreMetrics) -> Self {
        Self { inner, metrics }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: Store> Store for Observed<S> {
    async fn get_current(
        &self,
        entitlement: &pb::EntitlementRef,
        freshness: Freshness,
    ) -> Result<Served<Option<bytes::Bytes>>, StoreError> {
        self.metrics
            .read("get", self.inner.get_current(entitlement, freshness))
            .await
    }

    async fn get(
        &self,
        entitlement: &pb::EntitlementRef,
        revision: Option<i64>,
    ) -> Result<Option<StoredRevision>, StoreError> {
        self.metrics
            .read("get", self.inner.get(entitlement, revision))
            .await
    }

    async fn read_current<T: Send + 'static>(
        &self,
        freshness: Freshness,
        read: super::SnapshotRead<T>,
    ) -> Result<Served<T>, StoreError> {
        self.metrics
            .read("read_snapshot", self.inner.read_current(freshness, read))
            .await
    }

    /// Queued when called, as the inner store's write is (the wrapper adds no await first).
    fn write(&self, write: Write) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        self.metrics.mutation(self.inner.write(write))
    }

    async fn check(&self, check: WriteCheck) -> Result<Vec<pb::PolicyViolation>, StoreError> {
        self.metrics.read("check", self.inner.check(check)).await
    }

    async fn has_dependants(&self, entitlement: &pb::EntitlementRef) -> Result<bool, StoreError> {
        self.metrics
            .read("has_dependants", self.inner.has_dependants(entitlement))
            .await
    }

    async fn read_snapshot<T: Send + 'static>(
        &self,
        read: SnapshotRead<T>,
    ) -> Result<T, StoreError> {
        self.metrics
            .read("read_snapshot", self.inner.read_snapshot(read))
            .await
    }

    fn create_binding(
        &self,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
        implicit: bool,
    ) -> impl Future<Output = Result<StoredBinding, StoreError>> + Send {
        self.metrics
            .mutation(self.inner.create_binding(source, destination, implicit))
    }

    fn delete_binding(
        &self,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.metrics
            .mutation(self.inner.delete_binding(source, destination))
    }

    async fn list_bindings(&self, query: BindingQuery) -> Result<Vec<StoredBinding>, StoreError> {
        self.metrics
            .read("list_bindings", self.inner.list_bindings(query))
            .await
    }

    fn delete(
        &self,
        delete: Delete,
    ) -> impl Future<Output = Result<DeleteOutcome, StoreError>> + Send {
        self.metrics.mutation(self.inner.delete(delete))
    }

    async fn list_policies(&self, query: PolicyQuery) -> Result<Vec<StoredRevision>, StoreError> {
        self.metrics
            .read("list_policies", self.inner.list_policies(query))
            .await
    }

    async fn list_revisions(&self, query: RevisionQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        self.metrics
            .read("list_revisions", self.inner.list_revisions(query))
            .await
    }

    fn store_id(&self) -> &str {
        self.inner.store_id()
    }

    async fn head(&self) -> Result<u64, StoreError> {
        self.metrics.read("head", self.inner.head()).await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.subscribe()
    }

    async fn read_changes(&self, after: u64, limit: usize) -> Result<Vec<ChangeSet>, StoreError> {
        self.metrics
            .read("read_changes", self.inner.read_changes(after, limit))
            .await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.metrics.read("probe", self.inner.probe()).await
    }

    async fn gauges(&self) -> Result<StoreGauges, StoreError> {
        self.metrics.read("gauges", self.inner.gauges()).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.close().await
    }
}
