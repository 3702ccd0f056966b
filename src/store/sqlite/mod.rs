//! The embedded SQLite backend: one file in the data dir, WAL, `synchronous=FULL`.
//!
//! One writer thread owns the read-write connection that writes and group-commits the queued
//! policy writes and binding changes (`writer.rs`, `operations.rs`); a checkpointer thread with
//! a connection of its own keeps the WAL bounded without the writer (`checkpoint.rs`); reads use
//! a pool of read-only connections that never wait for either (`reads.rs`): `get` on the calling
//! task, `check` (caller code of unbounded cost) and `list_bindings` (a caller-sized page) on a
//! blocking thread. An exclusive lock file keeps a second process off the data dir.

mod checkpoint;
#[cfg(test)]
mod checkpoint_tests;
mod error;
mod lookup;
mod open;
mod operations;
mod queries;
mod reads;
mod schema;
#[cfg(test)]
mod tests;
mod writer;

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use self::checkpoint::{CheckpointLimits, Checkpointer};
use self::error::Failure;
pub use self::error::OpenError;
use self::open::{DATABASE_FILE, DataDirLock};
use self::operations::{CreateBinding, DeleteBinding};
use self::reads::ReadPool;
#[cfg(test)]
use self::writer::Job;
use self::writer::{Answer, Queue, Writer};
use super::changes::{ChangeSet, HeadPublisher};
use super::current::{self, Current, Loading, Served};
use super::metrics::{StoreGauges, StoreMetrics};
use super::{
    BindingQuery, Delete, DeleteOutcome, HistoryEntry, PolicyQuery, RevisionQuery, Store,
    StoreError, StoredBinding, StoredRevision, Write, WriteCheck, WriteOutcome,
};
use crate::pb;
use crate::policy::consistency::Freshness;

/// What the health probe writes: one page of the database.
const PROBE_BYTES: usize = 4096;

/// The SQLite [`Store`]. Open it once per data dir and process; [`Store::close`] it on shutdown
/// (dropping it also stops the writer, after answering every queued write).
pub struct SqliteStore {
    // Declared in the order they must stop: the writer answers its queue before the data dir is
    // unlocked.
    writer: Writer,
    readers: Arc<ReadPool>,
    lock: Mutex<Option<DataDirLock>>,
    store_id: String,
    head: HeadPublisher,
    /// The current revision of every live policy: what a Get of the current revision answers.
    current: Arc<Current>,
    data_dir: std::path::PathBuf,
    metrics: StoreMetrics,
}

impl SqliteStore {
    /// Opens (creating it if needed) the store in `data_dir`. Fails at once if another process
    /// uses the dir, and refuses a file that is not a healthy provisiond database of a schema
    /// version this code knows; such a file is never modified.
    pub fn open(data_dir: &Path) -> Result<Self, OpenError> {
        Self::open_with(data_dir, CheckpointLimits::default())
    }

    /// [`SqliteStore::open`], with the WAL checkpointed within `limits`.
    fn open_with(data_dir: &Path, limits: CheckpointLimits) -> Result<Self, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let lock = DataDirLock::acquire(data_dir)?;
        let path = data_dir.join(DATABASE_FILE);
        let conn = open::open_writer(&path, &limits)?;
        let (store_id, seq) = queries::log_state(&conn).map_err(|err| OpenError::Log {
            path: path.clone(),
            source: err.into(),
        })?;
        let head = HeadPublisher::new(seq);
        let current = Arc::new(load_current(&conn, seq).map_err(|err| OpenError::Log {
            path: path.clone(),
            source: Box::new(err),
        })?);
        let metrics = StoreMetrics::new();
        let queue = Queue::new();
        let checkpointer = Checkpointer::spawn(
            open::open_checkpointer(&path)?,
            queue.jobs(),
            limits,
            metrics.clone(),
        )
        .map_err(OpenError::Spawn)?;
        let writer = Writer::spawn(
            conn,
            queue,
            checkpointer,
            head.clone(),
            Arc::clone(&current),
            metrics.clone(),
        )
        .map_err(OpenError::Spawn)?;
        Ok(Self {
            writer,
            readers: ReadPool::new(path),
            lock: Mutex::new(Some(lock)),
            store_id,
            head,
            current,
            data_dir: data_dir.to_owned(),
            metrics,
        })
    }

    /// The series its writer observes (batch size, commit duration), for the metrics endpoint.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// How many transactions the writer has committed since open. Each holds a batch of writes,
    /// so under concurrent load this grows slower than the number of writes.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    /// Runs `task` on the writer's connection, between batches, in queue order.
    #[cfg(test)]
    fn run_on_writer(&self, task: impl FnOnce(&rusqlite::Connection) + Send + 'static) {
        self.writer
            .submit(Job::Run(Box::new(task)))
            .expect("writer is running");
    }
}

/// The answer to a queued operation, or why it could not be queued.
async fn answered<T>(queued: Result<Answer<T>, StoreError>) -> Result<T, StoreError> {
    queued?.await.map_err(|_| Failure::WriterStopped)?
}

/// The in-memory state: the current revisions row by row with the stored bytes as they are,
/// the delegation edges and the bindings from their tables.
fn load_current(conn: &rusqlite::Connection, at: u64) -> Result<Current, StoreError> {
    let mut loading = Loading::default();
    queries::each_current(conn, |key, record| loading.add(key, record))?;
    queries::each_delegation(conn, |key, target| loading.add_edge(key, target))?;
    queries::each_binding(conn, |source, destination| {
        loading.add_binding(source, destination)
    })?;
    Ok(loading.finish(at))
}

impl Store for SqliteStore {
    /// From memory, which the writer keeps exact: every freshness is served at once.
    async fn get_current(
        &self,
        entitlement: &pb::EntitlementRef,
        freshness: Freshness,
    ) -> Result<Served<Option<bytes::Bytes>>, StoreError> {
        self.readers.check_open()?;
        current::serve(
            &self.current,
            freshness,
            |current| current.get_encoded(entitlement),
            || async { Ok(self.head.current()) },
            || {
                let read = self
                    .readers
                    .read(|conn| queries::current(conn, entitlement));
                std::future::ready(read.map(|record| record.map(current::client_bytes)))
            },
        )
        .await
    }

    async fn get(
        &self,
        entitlement: &pb::EntitlementRef,
        revision: Option<i64>,
    ) -> Result<Option<StoredRevision>, StoreError> {
        match revision {
            // From memory: the writer keeps it current as it commits.
            None => {
                self.readers.check_open()?;
                self.current.get(entitlement).map(|served| served.value)
            }
            Some(revision) => self
                .readers
                .read(|conn| queries::at_revision(conn, entitlement, revision)),
        }
    }

    async fn read_current<T: Send + 'static>(
        &self,
        freshness: Freshness,
        read: super::SnapshotRead<T>,
    ) -> Result<Served<T>, StoreError> {
        self.readers.check_open()?;
        current::read_with(
            &self.current,
            freshness,
            read,
            || async { Ok(self.head.current()) },
            |read| self.read_snapshot(read),
        )
        .await
    }

    /// The write is queued when this is called, before the future is first polled.
    fn write(&self, write: Write) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        answered(self.writer.queue(write))
    }

    async fn check(&self, check: WriteCheck) -> Result<Vec<pb::PolicyViolation>, StoreError> {
        self.readers
            .read_blocking(move |conn| {
                // One read transaction: every lookup of the check sees the same snapshot.
                let tx = conn.transaction()?;
                lookup::run_check(check, &tx)
            })
            .await
    }

    /// From memory: the writer keeps it current as it commits.
    async fn has_dependants(&self, entitlement: &pb::EntitlementRef) -> Result<bool, StoreError> {
        Ok(self.current.has_dependants(entitlement))
    }

    async fn read_snapshot<T: Send + 'static>(
        &self,
        read: super::SnapshotRead<T>,
    ) -> Result<T, StoreError> {
        self.readers
            .read_blocking(move |conn| {
                let tx = conn.transaction()?;
                lookup::run_snapshot(read, &tx)
            })
            .await
    }

    /// Queued when called, like a write, and committed in the same batches.
    fn create_binding(
        &self,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
        implicit: bool,
    ) -> impl Future<Output = Result<StoredBinding, StoreError>> + Send {
        answered(self.writer.queue(CreateBinding {
            source,
            destination,
            implicit,
        }))
    }

    /// Queued when called; the writer orders it against every write that could start using the
    /// binding.
    fn delete_binding(
        &self,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        answered(self.writer.queue(DeleteBinding {
            source,
            destination,
        }))
    }

    async fn list_bindings(&self, query: BindingQuery) -> Result<Vec<StoredBinding>, StoreError> {
        self.readers
            .read_blocking(move |conn| queries::list_bindings(conn, &query))
            .await
    }

    /// Queued when called, like a write, and committed in the same batches.
    fn delete(
        &self,
        delete: Delete,
    ) -> impl Future<Output = Result<DeleteOutcome, StoreError>> + Send {
        answered(self.writer.queue(delete))
    }

    async fn list_policies(&self, query: PolicyQuery) -> Result<Vec<StoredRevision>, StoreError> {
        self.readers
            .read_blocking(move |conn| queries::list_policies(conn, &query))
            .await
    }

    async fn list_revisions(&self, query: RevisionQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        self.readers
            .read_blocking(move |conn| queries::list_revisions(conn, &query))
            .await
    }

    fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Only this process writes the file, so the head its writer published is the database's.
    async fn head(&self) -> Result<u64, StoreError> {
        Ok(self.head.current())
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn read_changes(&self, after: u64, limit: usize) -> Result<Vec<ChangeSet>, StoreError> {
        self.readers
            .read_blocking(move |conn| queries::read_changes(conn, after, limit))
            .await
    }

    /// A fresh file each time, written and fsynced, then removed: rewriting one file in place
    /// would reuse its own blocks and pass on a full disk.
    async fn probe(&self) -> Result<(), StoreError> {
        let path = self.data_dir.join(".health-probe");
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let _ = std::fs::remove_file(&path);
            let written = std::fs::File::create(&path).and_then(|mut file| {
                file.write_all(&[0; PROBE_BYTES])?;
                file.sync_all()
            });
            let _ = std::fs::remove_file(&path);
            written.map_err(|err| StoreError::Unavailable(Box::new(err)))
        })
        .await
        .map_err(Failure::BlockingTask)?
    }

    async fn gauges(&self) -> Result<StoreGauges, StoreError> {
        self.readers
            .read_blocking(|conn| {
                let (live_policies, proxy_bindings) = queries::counts(conn)?;
                Ok(StoreGauges {
                    live_policies,
                    proxy_bindings,
                    connections_in_use: None,
                })
            })
            .await
    }

    async fn close(&self) -> Result<(), StoreError> {
        // Readers first, so that the writer's final checkpoint can empty the WAL (the writer
        // stops the checkpointer before it).
        self.readers.close();
        let stopped = match self.writer.stop() {
            Some(thread) => match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(closed)) => closed,
                Ok(Err(_panic)) => Err(Failure::WriterStopped.into()),
                Err(err) => Err(Failure::BlockingTask(err).into()),
            },
            None => Ok(()),
        };
        if let Some(lock) = self
            .lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            lock.release();
        }
        stopped
    }
}
