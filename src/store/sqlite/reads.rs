//! The read-only connections. In WAL mode a reader sees the last commit and never waits for the
//! writer, so reads need no queue: each takes an idle connection, or opens one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rusqlite::Connection;

use super::error::Failure;
use super::open::open_reader;
use crate::store::StoreError;

/// Idle connections kept for reuse (each keeps its compiled statements); more are opened under
/// load and closed after use.
const MAX_IDLE: usize = 8;

pub(super) struct ReadPool {
    path: PathBuf,
    state: Mutex<State>,
}

/// One lock over both, so that no connection is parked after `close` emptied the pool.
#[derive(Default)]
struct State {
    idle: Vec<Connection>,
    closed: bool,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            path,
            state: Mutex::default(),
        })
    }

    /// Runs `read` on a blocking thread, for reads whose cost is not bounded by us (a caller's
    /// check may look up many entitlements).
    pub(super) async fn read_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let pool = Arc::clone(self);
        tokio::task::spawn_blocking(move || pool.read(read))
            .await
            .map_err(Failure::BlockingTask)?
    }

    /// Runs `read` on the calling thread. Meant for point reads by primary key: a few µs on a
    /// cached page, where a hop through `spawn_blocking` costs 15-40 µs (measured here, release
    /// build, 2 cores: 3-5 µs inline against 18-47 µs per get). A WAL reader takes no lock the
    /// writer holds, so it does not wait for writes.
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = {
            let mut state = self.state();
            if state.closed {
                return Err(Failure::Closed.into());
            }
            state.idle.pop()
        };
        let mut conn = match idle {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = read(&mut conn);
        let mut state = self.state();
        if !state.closed && state.idle.len() < MAX_IDLE {
            state.idle.push(conn);
        }
        result
    }

    /// Later reads fail with [`Failure::Closed`]; idle connections close now, busy ones when
    /// their read ends.
    pub(super) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.idle.clear();
    }

    /// Refuses with what a read would answer once the store is closed.
    pub(super) fn check_open(&self) -> Result<(), StoreError> {
        if self.state().closed {
            return Err(Failure::Closed.into());
        }
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
