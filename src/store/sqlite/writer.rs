//! The writer thread and its group commit. Each COMMIT costs one fsync of the WAL (about
//! 0.2 ms here), so the writer drains every queued write into one transaction, a savepoint per
//! write, commits once and only then answers each caller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::oneshot;

use super::error::{self, Failure};
use super::lookup::run_check;
use super::queries::{self, Head};
use crate::policy;
use crate::store::record::clear_output_fields;
use crate::store::{StoreError, StoredRevision, Write, WriteOutcome};

/// The most writes one transaction holds: bounds how long the first caller of a batch waits for
/// the others' checks.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

#[allow(
    clippy::large_enum_variant,
    reason = "the small variant exists only in tests"
)]
pub(super) enum Job {
    Write(Write, Reply),
    /// Runs on the writer connection between batches: lets tests hold the writer or inspect
    /// its connection.
    #[cfg(test)]
    Run(Box<dyn FnOnce(&Connection) + Send>),
}

/// The handle on the writer thread. Dropping it stops the thread once every queued job is
/// answered.
pub(super) struct Writer {
    jobs: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<Result<(), StoreError>>>>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    pub(super) fn spawn(conn: Connection) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("provisiond-sqlite-writer".into())
            .spawn({
                let commits = Arc::clone(&commits);
                move || run(conn, &queue, &commits)
            })?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            commits,
        })
    }

    /// Queues `job` now, not when the caller first polls: queue order is call order.
    pub(super) fn submit(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let jobs = jobs.as_ref().ok_or(Failure::Closed)?;
        jobs.send(job).map_err(|_| Failure::WriterStopped.into())
    }

    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Closes the queue and hands back the thread, which exits after answering every job
    /// already queued and checkpointing the WAL. `None` once stopped.
    pub(super) fn stop(&self) -> Option<JoinHandle<Result<(), StoreError>>> {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
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

fn run(mut conn: Connection, queue: &Receiver<Job>, commits: &AtomicU64) -> Result<(), StoreError> {
    let mut next = None;
    while let Some(job) = next.take().or_else(|| queue.recv().ok()) {
        match job {
            Job::Write(write, reply) => {
                let mut batch = vec![(write, reply)];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(Job::Write(write, reply)) => batch.push((write, reply)),
                        #[cfg(test)]
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                commit_batch(&mut conn, batch, commits);
            }
            #[cfg(test)]
            Job::Run(task) => task(&conn),
        }
    }
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

fn commit_batch(conn: &mut Connection, batch: Vec<(Write, Reply)>, commits: &AtomicU64) {
    let mut jobs = batch.into_iter();
    // Normally one transaction; another only if SQLite rolled one back mid-batch.
    while jobs.len() > 0 {
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(err) => return answer_all_failed(jobs.map(|(_, reply)| reply), err),
        };
        let mut answers = Vec::with_capacity(jobs.len());
        let mut lost = None;
        for (write, reply) in jobs.by_ref() {
            let answer = apply(&mut tx, write);
            // SQLite rolls the whole transaction back on some errors (FULL, IOERR, NOMEM, BUSY).
            // Going on would run the remaining jobs outside any transaction.
            if tx.is_autocommit() {
                lost = Some((reply, answer));
                break;
            }
            answers.push((reply, answer));
        }
        let Some((reply, answer)) = lost else {
            return commit(tx, answers, commits);
        };
        let cause = answer
            .err()
            .unwrap_or_else(|| Failure::BatchRolledBack.into());
        let unavailable = matches!(cause, StoreError::Unavailable(_));
        let _ = reply.send(Err(cause));
        // Their writes went with the transaction, and their checks are spent: they fail too.
        // The jobs not yet run get a fresh transaction.
        for (reply, _) in answers {
            let rolled_back = Failure::BatchRolledBack;
            let _ = reply.send(Err(if unavailable {
                StoreError::Unavailable(Box::new(rolled_back))
            } else {
                rolled_back.into()
            }));
        }
    }
}

type Answer = (Reply, Result<WriteOutcome, StoreError>);

fn commit(tx: Transaction<'_>, answers: Vec<Answer>, commits: &AtomicU64) {
    match tx.commit() {
        Ok(()) => {
            commits.fetch_add(1, Ordering::Relaxed);
            for (reply, answer) in answers {
                // The caller may have gone away; its write stands regardless.
                let _ = reply.send(answer);
            }
        }
        // Nothing of the batch is stored, and the checks of later jobs saw the earlier ones, so
        // no answer of this batch holds: every caller gets the error.
        Err(err) => answer_all_failed(answers.into_iter().map(|(reply, _)| reply), err),
    }
}

fn answer_all_failed(replies: impl Iterator<Item = Reply>, err: rusqlite::Error) {
    let err = Arc::new(err);
    for reply in replies {
        let _ = reply.send(Err(error::shared(&err)));
    }
}

/// One write in its own savepoint: whatever does not stand is rolled back to it, leaving the
/// rest of the batch alone.
fn apply(tx: &mut Transaction<'_>, write: Write) -> Result<WriteOutcome, StoreError> {
    let savepoint = tx.savepoint()?;
    let (outcome, keep) = stage(&savepoint, write)?;
    if keep {
        savepoint.commit()?;
    }
    Ok(outcome)
}

/// Precondition, check, then the new record; returns whether it was stored.
fn stage(conn: &Connection, write: Write) -> Result<(WriteOutcome, bool), StoreError> {
    let Write {
        mut resource,
        expected_revision,
        validate_only,
        check,
    } = write;
    clear_output_fields(&mut resource);
    let key = resource
        .entitlement
        .as_ref()
        .ok_or(Failure::MissingEntitlement)?;
    let head = queries::head(conn, key)?;
    if let Some(expected) = expected_revision {
        let actual = head.map(|head| head.revision);
        if actual.unwrap_or(0) != expected {
            return Err(StoreError::RevisionMismatch { expected, actual });
        }
    }

    let violations = run_check(check, conn)?;
    if policy::has_errors(&violations) {
        return Ok((WriteOutcome::Rejected { violations }, false));
    }

    // A clock stepped back must not make a revision older than the one it replaces.
    let update_time = head.map_or(queries::now_micros(), |head| {
        queries::now_micros().max(head.update_time)
    });
    let new = Head {
        revision: head.map_or(1, |head| head.revision + 1),
        create_time: head.map_or(update_time, |head| head.create_time),
        update_time,
    };
    if !validate_only {
        queries::store_revision(conn, key, &prost::Message::encode_to_vec(&resource), new)?;
    }
    let record = StoredRevision {
        revision: new.revision,
        create_time: queries::time_from_micros(new.create_time)?,
        update_time: queries::time_from_micros(new.update_time)?,
        resource,
    };
    Ok((WriteOutcome::Written { record, violations }, !validate_only))
}
