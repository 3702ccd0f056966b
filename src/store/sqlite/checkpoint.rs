//! The checkpointer: a thread with its own read-write connection that copies the WAL back into
//! the database file, so that the writer never does. SQLite's automatic checkpoint runs inside
//! the COMMIT that takes the WAL past 1000 pages, on the committing connection: with one writer
//! thread, the callers of that batch and of every batch queued behind it waited for the copy and
//! the fsync of the database file (Set's p99).
//!
//! - The writer's connection has `wal_autocheckpoint=0` and a WAL hook instead, which tells it how
//!   many frames the WAL holds after each commit; every [`CheckpointLimits::threshold`] frames it
//!   wakes this thread with a message that never blocks ([`Checkpointer::committed`]).
//! - Awake, the thread runs a PASSIVE checkpoint: it takes neither the write lock nor waits for
//!   readers, and copies every frame that no reader's snapshot still needs. Once everything is
//!   copied, the next commit starts the WAL again from its beginning, and the writer's
//!   `journal_size_limit` cuts the file back to the threshold's size.
//! - That restart needs a transaction to begin with every frame copied, and under writes that
//!   never pause a checkpoint on another connection is always behind the last commit: the WAL
//!   would grow for as long as the writes go on. So past [`CheckpointLimits::bound`] frames the
//!   thread holds the writer between two batches ([`Jobs::hold`]) and runs a TRUNCATE: it copies
//!   the frames committed since the last PASSIVE, waits at most [`READER_WAIT`] for readers of
//!   older snapshots, and empties the WAL file. Commits wait for that one checkpoint, once per
//!   `bound` frames (64 MiB), where the automatic checkpoint made them wait for a whole copy every
//!   1000 pages. FULL, RESTART and TRUNCATE take the write lock themselves, but from another
//!   connection they poll for it against the writer's next batch (the busy handler sleeps between
//!   tries, on both sides); holding the writer through its queue makes that a hand-over.
//! - A reader that keeps one snapshot open (a long read transaction: an operator's `sqlite3`
//!   shell) stops every checkpoint, in every mode, at the frame its snapshot began at, until it
//!   ends. Holding the writer then would stall commits and still not empty the WAL, so when two
//!   checkpoints in a row stop at the same frame the thread does not hold it: it warns once and
//!   goes on checkpointing passively; the first round after the reader ends empties the WAL. Until
//!   then the WAL grows with the writes: refusing them instead would turn an open shell into an
//!   outage.
//!
//! Checkpoint failures are logged and counted, never fatal: the WAL holds every commit until a
//! later checkpoint succeeds.

use std::cell::Cell;
use std::ffi::c_int;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, hooks};

use super::writer::Jobs;
use crate::store::metrics::{CheckpointMode, CheckpointResult, StoreMetrics};

/// How long a TRUNCATE, with the writer held, waits for readers that began before its copy was
/// done. Our own reads last milliseconds; a reader still there after this is a long one, and
/// commits should not wait for it.
pub(super) const READER_WAIT: Duration = Duration::from_millis(100);

/// The WAL file's header, and each frame's header before its page.
const WAL_HEADER_BYTES: u64 = 32;
const FRAME_HEADER_BYTES: u64 = 24;

/// When the checkpointer runs, in WAL frames (one page each).
#[derive(Debug, Clone, Copy)]
pub(super) struct CheckpointLimits {
    /// Frames committed between two passive checkpoints.
    pub(super) threshold: u32,
    /// The frames past which the checkpointer holds the writer to empty the WAL.
    pub(super) bound: u32,
    /// How soon the thread tries again what a round left undone, with no commit to wake it.
    pub(super) retry: Duration,
}

impl Default for CheckpointLimits {
    /// The threshold is SQLite's own automatic one, so that the database file is as current as
    /// it was; the bound is 64 MiB of 4 KiB pages.
    fn default() -> Self {
        Self {
            threshold: 1000,
            bound: 16 * 1024,
            retry: Duration::from_secs(1),
        }
    }
}

/// The size of a WAL file that holds `frames` pages of `page_size` bytes.
pub(super) fn wal_file_bytes(frames: u32, page_size: u32) -> u64 {
    WAL_HEADER_BYTES + u64::from(frames) * (u64::from(page_size) + FRAME_HEADER_BYTES)
}

thread_local! {
    /// The frames in the WAL after the last COMMIT on this thread, as the WAL hook reported them.
    /// Thread-local because rusqlite's hook is a plain `fn`; SQLite calls it on the committing
    /// thread, the writer's, which is the one thread that reads this.
    static COMMITTED_FRAMES: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Registers the WAL hook on the writer's connection. A hook replaces SQLite's automatic
/// checkpoint (which is one), so it must come after `wal_autocheckpoint`, which would replace it.
pub(super) fn count_frames(conn: &Connection) {
    conn.wal_hook(Some(note_frames));
}

fn note_frames(_: &hooks::Wal, frames: c_int) -> rusqlite::Result<()> {
    COMMITTED_FRAMES.set(u32::try_from(frames).ok());
    Ok(())
}

/// The WAL as a checkpoint left it.
#[derive(Debug, Clone, Copy)]
struct Wal {
    frames: u32,
    /// Frames in the database file as well.
    copied: u32,
}

/// The writer's end of the checkpointer: it owns the thread, and stopping it (or dropping it)
/// stops the thread.
pub(super) struct Checkpointer {
    wake: SyncSender<()>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    threshold: u32,
    /// The frames in the WAL after the writer's last commit.
    frames: u32,
    /// Frames committed since the thread was last woken.
    unchecked: u32,
}

impl Checkpointer {
    /// Starts the thread on `conn`, a read-write connection of its own; `writer` is the queue it
    /// holds the writer through.
    pub(super) fn spawn(
        conn: Connection,
        writer: Jobs,
        limits: CheckpointLimits,
        metrics: StoreMetrics,
    ) -> std::io::Result<Self> {
        // One pending wake is enough: awake, the thread looks at the WAL itself.
        let (wake, woken) = mpsc::sync_channel(1);
        let stopping = Arc::new(AtomicBool::new(false));
        let upkeep = Upkeep {
            conn,
            writer,
            limits,
            metrics,
            held_back_at: None,
            warned: false,
        };
        let thread = std::thread::Builder::new()
            .name("provisiond-sqlite-checkpointer".into())
            .spawn({
                let stopping = Arc::clone(&stopping);
                move || upkeep.run(&woken, &stopping)
            })?;
        Ok(Self {
            wake,
            stopping,
            thread: Some(thread),
            threshold: limits.threshold,
            frames: 0,
            unchecked: 0,
        })
    }

    /// On the writer thread, after each batch's answers: counts the frames its commits added to
    /// the WAL and wakes the thread each time another threshold of them has gathered. Never
    /// waits.
    pub(super) fn committed(&mut self) {
        let Some(frames) = COMMITTED_FRAMES.take() else {
            return;
        };
        // A WAL that went back to its start holds only the frames since.
        let added = frames.checked_sub(self.frames).unwrap_or(frames);
        self.frames = frames;
        self.unchecked = self.unchecked.saturating_add(added);
        if self.unchecked >= self.threshold {
            self.unchecked = 0;
            // Full: a wake is pending already. Disconnected: the thread has stopped.
            let _ = self.wake.try_send(());
        }
    }

    /// Stops the thread once the checkpoint it runs, if any, is over.
    pub(super) fn stop(self) {
        drop(self);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // Full: a wake is pending, and the thread looks at `stopping` after each.
        let _ = self.wake.try_send(());
        // The writer thread unwinding: the checkpointer may be waiting for a hold the writer
        // will never grant (it gives up once the queue is dropped), so it is left to end alone.
        if std::thread::panicking() {
            return;
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the SQLite checkpointer thread panicked");
        }
    }
}

/// The checkpointer thread's state.
struct Upkeep {
    conn: Connection,
    writer: Jobs,
    limits: CheckpointLimits,
    metrics: StoreMetrics,
    /// Where the last passive checkpoint stopped, when a reader's snapshot stopped it before the
    /// end of the WAL.
    held_back_at: Option<u32>,
    /// Whether the WAL being past its bound was logged since it was last within it.
    warned: bool,
}

impl Upkeep {
    fn run(mut self, woken: &Receiver<()>, stopping: &AtomicBool) {
        // Whether the last round left frames to copy or the WAL past its bound. The timer tries
        // again then: no commit may come to wake the thread. At the start, for a WAL that a crash
        // or a migration left behind.
        let mut owed = true;
        loop {
            let woken = match woken.recv_timeout(self.limits.retry) {
                Ok(()) => true,
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if stopping.load(Ordering::Relaxed) {
                return;
            }
            if woken || owed {
                owed = self.round();
            }
        }
    }

    /// A passive checkpoint and, if the WAL is past its bound, a TRUNCATE with the writer held.
    /// Returns whether work is left.
    fn round(&mut self) -> bool {
        let Some(wal) = self.checkpoint(CheckpointMode::Passive) else {
            return true;
        };
        let copied_all = wal.copied >= wal.frames;
        // Readers of our own come and go, and each checkpoint gets further; one reader that
        // keeps its snapshot stops every checkpoint at the same frame.
        let stuck = !copied_all && self.held_back_at.replace(wal.copied) == Some(wal.copied);
        if copied_all {
            self.held_back_at = None;
        }
        if wal.frames < self.limits.bound {
            self.within_bound();
            return !copied_all;
        }
        if stuck {
            self.warn_once(wal, "a reader's open snapshot keeps the frames after it");
            return true;
        }
        // `None`: the writer is stopping, and its own last checkpoint empties the WAL.
        let Some(_held) = self.writer.hold() else {
            return false;
        };
        match self.checkpoint(CheckpointMode::Truncate) {
            Some(_) => {
                self.held_back_at = None;
                self.within_bound();
                false
            }
            None => {
                self.warn_once(wal, "readers kept it from being emptied");
                true
            }
        }
    }

    /// Runs one checkpoint. `None` when it did not run to its end: busy (a TRUNCATE kept from
    /// emptying the WAL by a reader, another process's checkpoint) or failed (logged).
    fn checkpoint(&self, mode: CheckpointMode) -> Option<Wal> {
        let sql = match mode {
            CheckpointMode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
            CheckpointMode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
        };
        let started = Instant::now();
        let ran = self.conn.query_row(sql, [], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        });
        let elapsed = started.elapsed();
        let frames = |count: i64| u32::try_from(count).unwrap_or(0);
        let (result, wal) = match ran {
            Ok((0, log, copied)) => {
                let wal = Wal {
                    frames: frames(log),
                    copied: frames(copied),
                };
                let result = if wal.copied >= wal.frames {
                    CheckpointResult::Complete
                } else {
                    CheckpointResult::Partial
                };
                (result, Some(wal))
            }
            Ok(_) => (CheckpointResult::Busy, None),
            Err(err) => {
                tracing::warn!(
                    error = &err as &dyn std::error::Error,
                    mode = sql,
                    "a SQLite WAL checkpoint failed; the next one tries again"
                );
                (CheckpointResult::Error, None)
            }
        };
        self.metrics.checkpointed(mode, result, elapsed);
        wal
    }

    fn warn_once(&mut self, wal: Wal, reason: &'static str) {
        if !std::mem::replace(&mut self.warned, true) {
            tracing::warn!(
                frames = wal.frames,
                copied = wal.copied,
                bound = self.limits.bound,
                reason,
                "the SQLite WAL has grown past its bound"
            );
        }
    }

    fn within_bound(&mut self) {
        if std::mem::replace(&mut self.warned, false) {
            tracing::info!("the SQLite WAL is back within its bound");
        }
    }
}
