//! The writer thread and its group commit. Each COMMIT costs one fsync of the WAL (about
//! 0.2 ms here), so the writer drains every queued operation (policy writes and binding
//! changes alike) into one transaction, a savepoint per operation, commits once and only then
//! answers each caller. One writer also serialises what must not interleave: a delegation's
//! check and write against the delete of the binding it relies on. It never checkpoints the WAL
//! while it runs (`checkpoint.rs` does, on its own thread); only when it stops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::error::{self, Failure};
use crate::store::StoreError;
use crate::store::changes::ChangeSet;
use crate::store::changes::HeadPublisher;
use crate::store::current::Current;
use crate::store::metrics::StoreMetrics;

/// The most operations one transaction holds: bounds how long the first caller of a batch waits
/// for the others' checks.
const MAX_BATCH: usize = 256;

/// What the writer does for a caller, inside its own savepoint of a batch's transaction.
pub(super) trait Operation: Send + 'static {
    type Output: Send + 'static;

    /// Does the operation on `conn`; returns the caller's answer and, when what it did stands,
    /// the log entry it appended. An error, or `None`, rolls its savepoint back and leaves the
    /// rest of the batch alone.
    fn stage(self, conn: &Connection) -> Result<(Self::Output, Option<ChangeSet>), StoreError>;
}

/// The channel a caller awaits its answer on.
pub(super) type Answer<T> = oneshot::Receiver<Result<T, StoreError>>;

pub(super) enum Job {
    /// An operation for the next batch, with the channel of its answer.
    Batched(Box<dyn Queued>),
    /// Stops the writer between two batches, for the checkpointer to empty the WAL.
    Hold(Hold),
    /// Runs on the writer connection between batches: lets tests hold the writer or inspect
    /// its connection.
    #[cfg(test)]
    Run(Box<dyn FnOnce(&Connection) + Send>),
}

/// A queued [`Operation`] of any output type, so that one queue and one batch hold them all.
pub(super) trait Queued: Send {
    /// Runs the operation in its own savepoint of `tx`; the answer waits for the COMMIT.
    fn apply(self: Box<Self>, tx: &mut Transaction<'_>) -> Box<dyn Staged>;
    /// Answers `err` without running the operation.
    fn fail(self: Box<Self>, err: StoreError);
}

/// The answer of an applied operation, held until the batch's COMMIT decides whether it holds.
pub(super) trait Staged: Send {
    /// Whether the operation failed with [`StoreError::Unavailable`].
    fn is_unavailable(&self) -> bool;
    fn is_err(&self) -> bool;
    /// The log entry of an operation that stood, for the in-memory state once the batch
    /// commits.
    fn take_logged(&mut self) -> Option<ChangeSet>;
    /// Sends the answer as staged.
    fn send(self: Box<Self>);
    /// Sends `err` instead.
    fn fail(self: Box<Self>, err: StoreError);
    /// The caller's span when it queued the operation.
    fn span(&self) -> &tracing::Span;
}

struct Request<O: Operation> {
    operation: O,
    reply: oneshot::Sender<Result<O::Output, StoreError>>,
    span: tracing::Span,
}

struct Reply<T> {
    reply: oneshot::Sender<Result<T, StoreError>>,
    answer: Result<T, StoreError>,
    logged: Option<ChangeSet>,
    span: tracing::Span,
}

impl<O: Operation> Queued for Request<O> {
    fn apply(self: Box<Self>, tx: &mut Transaction<'_>) -> Box<dyn Staged> {
        let Request {
            operation,
            reply,
            span,
        } = *self;
        let (answer, logged) = match in_savepoint(tx, operation) {
            Ok((output, logged)) => (Ok(output), logged),
            Err(err) => (Err(err), None),
        };
        Box::new(Reply {
            reply,
            answer,
            logged,
            span,
        })
    }

    fn fail(self: Box<Self>, err: StoreError) {
        // The caller may have gone away.
        let _ = self.reply.send(Err(err));
    }
}

impl<T: Send> Staged for Reply<T> {
    fn is_unavailable(&self) -> bool {
        matches!(self.answer, Err(StoreError::Unavailable(_)))
    }

    fn is_err(&self) -> bool {
        self.answer.is_err()
    }

    fn take_logged(&mut self) -> Option<ChangeSet> {
        self.logged.take()
    }

    fn send(self: Box<Self>) {
        // The caller may have gone away; what it did stands regardless.
        let _ = self.reply.send(self.answer);
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }

    fn span(&self) -> &tracing::Span {
        &self.span
    }
}

/// Whatever does not stand is rolled back to the savepoint (dropping it rolls back); returns
/// the output and, when it stood, its log entry.
fn in_savepoint<O: Operation>(
    tx: &mut Transaction<'_>,
    operation: O,
) -> Result<(O::Output, Option<ChangeSet>), StoreError> {
    let savepoint = tx.savepoint()?;
    let (output, logged) = operation.stage(&savepoint)?;
    if logged.is_some() {
        savepoint.commit()?;
    }
    Ok((output, logged))
}

/// The writer's queue before the writer starts: made first, so that the checkpointer can be given
/// its [`Jobs`] before the writer is given the checkpointer.
pub(super) struct Queue {
    jobs: Jobs,
    receiver: Receiver<Job>,
}

impl Queue {
    pub(super) fn new() -> Self {
        let (sender, receiver) = mpsc::channel();
        Self {
            jobs: Jobs(Arc::new(Mutex::new(Some(sender)))),
            receiver,
        }
    }

    pub(super) fn jobs(&self) -> Jobs {
        self.jobs.clone()
    }
}

/// Submits to the writer's queue. Every clone shares one sender, so that [`Writer::stop`] closes
/// the queue for all of them at once: a clone kept by the checkpointer never keeps the writer
/// running.
#[derive(Clone)]
pub(super) struct Jobs(Arc<Mutex<Option<Sender<Job>>>>);

impl Jobs {
    pub(super) fn submit(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let jobs = jobs.as_ref().ok_or(Failure::Closed)?;
        jobs.send(job).map_err(|_| Failure::WriterStopped.into())
    }

    /// Holds the writer once it has answered the batches queued before this call, until the
    /// returned guard is dropped. `None` when the writer is stopping or stopped.
    pub(super) fn hold(&self) -> Option<Held> {
        let (held, holding) = mpsc::sync_channel(1);
        let (release, released) = mpsc::channel();
        self.submit(Job::Hold(Hold { held, released })).ok()?;
        // An error: the writer thread ended (panicked) with the job still queued.
        holding.recv().ok()?;
        Some(Held { _release: release })
    }

    fn close(&self) {
        drop(self.0.lock().unwrap_or_else(PoisonError::into_inner).take());
    }
}

/// What the writer waits on while it is held.
pub(super) struct Hold {
    held: SyncSender<()>,
    released: Receiver<()>,
}

impl Hold {
    /// Between batches: no transaction is open, so a checkpoint that needs the write lock takes
    /// it at once rather than polling for it against the next batch.
    fn wait(self) {
        if self.held.send(()).is_ok() {
            // Returns when the holder drops its guard, whatever became of the holder.
            let _ = self.released.recv();
        }
    }
}

/// The writer is held while this lives.
pub(super) struct Held {
    _release: Sender<()>,
}

/// The handle on the writer thread. Dropping it stops the thread once every queued job is
/// answered.
pub(super) struct Writer {
    jobs: Jobs,
    thread: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the thread on `queue`; after each commit, before answering, it applies the
    /// batch's log entries to `current` and moves `head` forward; after answering, it tells
    /// `checkpointer`, which it stops before its own checkpoint at the end.
    pub(super) fn spawn(
        conn: Connection,
        queue: Queue,
        checkpointer: Checkpointer,
        head: HeadPublisher,
        current: Arc<Current>,
        metrics: StoreMetrics,
    ) -> std::io::Result<Self> {
        let Queue { jobs, receiver } = queue;
        let commits = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("provisiond-sqlite-writer".into())
            .spawn({
                let commits = Arc::clone(&commits);
                move || {
                    let committed = Committed {
                        head,
                        current,
                        metrics,
                    };
                    run(conn, &receiver, checkpointer, &commits, &committed)
                }
            })?;
        Ok(Self {
            jobs,
            thread: Mutex::new(Some(thread)),
            commits,
        })
    }

    /// Queues `operation` now, not when the caller first polls: queue order is call order.
    pub(super) fn queue<O: Operation>(
        &self,
        operation: O,
    ) -> Result<Answer<O::Output>, StoreError> {
        let (reply, answer) = oneshot::channel();
        // The caller's span goes with the job, so that its commit shows in the caller's trace.
        let span = tracing::Span::current();
        self.submit(Job::Batched(Box::new(Request {
            operation,
            reply,
            span,
        })))?;
        Ok(answer)
    }

    pub(super) fn submit(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.submit(job)
    }

    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Closes the queue and hands back the thread, which exits after answering every job
    /// already queued and checkpointing the WAL. `None` once stopped.
    pub(super) fn stop(&self) -> Option<JoinHandle<Result<(), StoreError>>> {
        self.jobs.close();
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(thread) = self.stop() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(
                    error = &err as &dyn std::error::Error,
                    "closing the SQLite writer failed"
                ),
                Err(_) => tracing::error!("the SQLite writer thread panicked"),
            }
        }
    }
}

/// What learns of each commit before its callers do.
struct Committed {
    head: HeadPublisher,
    current: Arc<Current>,
    metrics: StoreMetrics,
}

fn run(
    mut conn: Connection,
    queue: &Receiver<Job>,
    mut checkpointer: Checkpointer,
    commits: &AtomicU64,
    head: &Committed,
) -> Result<(), StoreError> {
    let mut next = None;
    while let Some(job) = next.take().or_else(|| queue.recv().ok()) {
        match job {
            Job::Batched(first) => {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(Job::Batched(queued)) => batch.push(queued),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                commit_batch(&mut conn, batch, commits, head);
                checkpointer.committed();
            }
            Job::Hold(hold) => hold.wait(),
            #[cfg(test)]
            Job::Run(task) => task(&conn),
        }
    }
    // Its checkpoints would make the last one BUSY, and leave the WAL behind.
    checkpointer.stop();
    // Fold the WAL back into the database file, so that a stopped data dir is one file.
    let (busy, _, _): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
    if busy != 0 {
        tracing::warn!("WAL checkpoint at close was incomplete: a reader was still active");
    }
    conn.close().map_err(|(_, err)| err.into())
}

fn commit_batch(
    conn: &mut Connection,
    batch: Vec<Box<dyn Queued>>,
    commits: &AtomicU64,
    head: &Committed,
) {
    let mut jobs = batch.into_iter();
    // Normally one transaction; another only if SQLite rolled one back mid-batch.
    while jobs.len() > 0 {
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(err) => {
                let err = Arc::new(err);
                return jobs.for_each(|job| job.fail(error::shared(&err)));
            }
        };
        let mut answers = Vec::with_capacity(jobs.len());
        let mut lost = None;
        for job in jobs.by_ref() {
            let answer = job.apply(&mut tx);
            // SQLite rolls the whole transaction back on some errors (FULL, IOERR, NOMEM, BUSY).
            // Going on would run the remaining jobs outside any transaction.
            if tx.is_autocommit() {
                lost = Some(answer);
                break;
            }
            answers.push(answer);
        }
        let Some(lost) = lost else {
            let commit_spans = crate::store::commit_spans(answers.iter().map(|a| a.span()));
            let started = Instant::now();
            let committed = tx.commit();
            drop(commit_spans);
            if committed.is_ok() {
                head.metrics.committed(answers.len(), started.elapsed());
            }
            return answer(committed, answers, commits, head);
        };
        let unavailable = lost.is_unavailable();
        if lost.is_err() {
            lost.send();
        } else {
            lost.fail(Failure::BatchRolledBack.into());
        }
        // Their changes went with the transaction, and their checks are spent: they fail too.
        // The jobs not yet run get a fresh transaction.
        for answer in answers {
            let rolled_back = Failure::BatchRolledBack;
            answer.fail(if unavailable {
                StoreError::Unavailable(Box::new(rolled_back))
            } else {
                rolled_back.into()
            });
        }
    }
}

/// Answers a batch after its COMMIT. Watchers learn the new head first: an acknowledged write
/// is always in the log a watch reads.
fn answer(
    committed: rusqlite::Result<()>,
    mut answers: Vec<Box<dyn Staged>>,
    commits: &AtomicU64,
    learners: &Committed,
) {
    match committed {
        Ok(()) => {
            commits.fetch_add(1, Ordering::Relaxed);
            // This writer is the log's only one and the log is gap-free: the batch's entries,
            // in order, follow what memory has, and the last of them is the head.
            let logged: Vec<ChangeSet> = answers
                .iter_mut()
                .filter_map(|answer| answer.take_logged())
                .collect();
            // Memory first, then the head: a reader that sees the head sees memory at it.
            if let Err(err) = learners.current.apply_log(&logged) {
                tracing::error!(error = %err, "cannot apply a committed batch to the in-memory state");
            }
            if let Some(last) = logged.last() {
                learners.head.advance(last.seq);
            }
            answers.into_iter().for_each(|answer| answer.send());
        }
        // Nothing of the batch is stored, and the checks of later jobs saw the earlier ones, so
        // no answer of this batch holds: every caller gets the error.
        Err(err) => {
            let err = Arc::new(err);
            for answer in answers {
                answer.fail(error::shared(&err));
            }
        }
    }
}
