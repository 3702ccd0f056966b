//! The errors of opening a data dir, and how SQLite failures become [`StoreError`]s.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::ErrorCode;

use crate::store::StoreError;

/// Why [`super::SqliteStore::open`] refused a data dir. These reach the operator at start-up, so
/// unlike [`StoreError`] they name the file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data dir {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock data dir {}", .path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "data dir {} is already in use by another provisiond process{}",
        .path.display(),
        .holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse { path: PathBuf, holder: Option<u32> },
    #[error("cannot open database {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{} is not a SQLite database; refusing to use it (the file was left untouched)", .path.display())]
    NotADatabase {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "{} is a SQLite database of another program (application_id {found:#x}); refusing to use it",
        .path.display()
    )]
    ForeignDatabase { path: PathBuf, found: i32 },
    #[error(
        "database {} is corrupt ({detail}); refusing to use it (the file was left untouched: restore it from a backup or move it away)",
        .path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "database {} has schema version {found}, but this provisiond knows versions up to {known}; run a newer provisiond",
        .path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot read the change log of database {}", .path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    #[error("cannot configure database {}", .path.display())]
    Configure {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "cannot put database {} in WAL mode (journal_mode is {mode}); is its file system local?",
        .path.display()
    )]
    NoWal { path: PathBuf, mode: String },
    #[error("cannot migrate database {} to schema version {version}", .path.display())]
    Migrate {
        path: PathBuf,
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot start the database writer or checkpointer thread")]
    Spawn(#[source] io::Error),
}

/// Failures of the store's own making.
#[derive(Debug, thiserror::Error)]
pub(super) enum Failure {
    #[error("the store is closed")]
    Closed,
    #[error("the writer thread has stopped")]
    WriterStopped,
    #[error("the transaction of this write was rolled back by a failure of another write")]
    BatchRolledBack,
    #[error("a write must name its entitlement")]
    MissingEntitlement,
    #[error("the check panicked")]
    CheckPanicked,
    #[error("a blocking task failed")]
    BlockingTask(#[source] tokio::task::JoinError),
    #[error("a stored resource does not decode")]
    Decode(#[source] prost::DecodeError),
    #[error("a stored time ({0} µs) is out of range")]
    Time(i64),
    #[error("a change log position ({0}) is out of range")]
    Sequence(i64),
    #[error(transparent)]
    Change(#[from] crate::store::changes::DecodeError),
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            // On shutdown a retry against another replica can succeed.
            Failure::Closed => StoreError::Unavailable(Box::new(failure)),
            Failure::WriterStopped
            | Failure::BatchRolledBack
            | Failure::MissingEntitlement
            | Failure::CheckPanicked
            | Failure::BlockingTask(_)
            | Failure::Decode(_)
            | Failure::Time(_)
            | Failure::Sequence(_)
            | Failure::Change(_) => StoreError::Internal(Box::new(failure)),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        classify(err.sqlite_error_code(), Box::new(err))
    }
}

/// The error of one job of a batch whose COMMIT (or BEGIN) failed: every job gets its own
/// [`StoreError`], all sharing the one SQLite error.
pub(super) fn shared(err: &Arc<rusqlite::Error>) -> StoreError {
    classify(err.sqlite_error_code(), Box::new(Arc::clone(err)))
}

/// Busy, locked, full, I/O and open failures are conditions of the machine that a retry (or an
/// operator) can clear; everything else (corruption, constraint, misuse) is a defect.
fn classify(
    code: Option<ErrorCode>,
    err: Box<dyn std::error::Error + Send + Sync + 'static>,
) -> StoreError {
    match code {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen,
        ) => StoreError::Unavailable(err),
        _ => StoreError::Internal(err),
    }
}
