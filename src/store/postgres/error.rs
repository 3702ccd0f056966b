//! The errors of opening the store, and how PostgreSQL failures become [`StoreError`]s.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;

use tokio_postgres::error::SqlState;

use crate::store::StoreError;

/// Why [`super::PostgresStore::open`] failed. These reach the operator at start-up, so unlike
/// [`StoreError`] they name the server (never the password) and carry the cause.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid PostgreSQL URL: {}", chain(.0))]
    Url(#[source] tokio_postgres::Error),
    #[error("invalid PostgreSQL URL: {0}")]
    UrlOption(&'static str),
    #[error(
        "sslmode={0:?} in --store is not supported: use disable, prefer, require or verify-full"
    )]
    SslMode(String),
    #[error(
        "sslmode=verify-ca in --store is not supported: TLS here always verifies the server's \
         host name as well as its certificate chain; use sslmode=verify-full, with a host name \
         the server's certificate names"
    )]
    VerifyCa,
    #[error(
        "both --store-ca-file (PROVISIOND_STORE_CA_FILE) and sslrootcert= in --store name the \
         PostgreSQL CA; give only one"
    )]
    TwoCaFiles,
    #[error(
        "a PostgreSQL CA is named (--store-ca-file or sslrootcert=) but --store says \
         sslmode=disable; remove one of them"
    )]
    CaWithoutTls,
    #[error("cannot use the PostgreSQL CA file {} named by {source_setting}: {reason}", .path.display())]
    CaFile {
        source_setting: super::tls::CaSource,
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(
        "cannot load the system's trusted certificates to verify PostgreSQL's TLS ({0}); name \
         the CA with --store-ca-file"
    )]
    SystemRoots(String),
    #[error("cannot configure TLS for PostgreSQL: {0}")]
    TlsConfig(#[source] rustls::Error),
    #[error("cannot connect to PostgreSQL at {target}: {}", chain(.source))]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the PostgreSQL search_path names no existing schema to keep the tables in; create the \
         schema, or name one with `?options=-c%20search_path%3D<schema>` in the URL"
    )]
    NoSchema,
    #[error(
        "the PostgreSQL schema has version {found}, but this provisiond knows versions up to \
         {known}; run a newer provisiond"
    )]
    TooNew { found: i32, known: i32 },
    #[error("cannot migrate the PostgreSQL schema to version {version}: {}", chain(.source))]
    Migrate {
        version: i32,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("cannot fill version {version} of the PostgreSQL schema: {}", chain(.source))]
    Backfill {
        version: i32,
        #[source]
        source: super::schema::BackfillError,
    },
    #[error("cannot build the PostgreSQL connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    #[error("cannot load the current policies from PostgreSQL: {}", chain(.0))]
    Load(#[source] crate::store::StoreError),
    #[error("cannot start the PostgreSQL writer thread")]
    Spawn(#[source] io::Error),
}

/// An error and its causes, `: `-separated: tokio-postgres puts the useful part (the server's
/// message, the socket error) in the source, not in its own message.
pub(super) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
    #[error("the database did not answer within {0:?}; the connection was dropped")]
    Timeout(std::time::Duration),
    #[error("the search_path of the session names no existing schema")]
    NoSchema,
    #[error("cannot get a connection from the pool")]
    Pool(#[source] deadpool_postgres::PoolError),
    #[error("the writer answered another kind of operation")]
    WrongAnswer,
    #[error("a change log position ({0}) is out of range")]
    Sequence(i64),
    #[error("a change log entry does not decode")]
    Change(#[source] crate::store::changes::DecodeError),
}

impl From<Failure> for StoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            // On shutdown or an outage a retry, possibly against another replica, can succeed.
            Failure::Closed | Failure::Timeout(_) => StoreError::Unavailable(Box::new(failure)),
            Failure::Pool(ref err) if pool_error_is_transient(err) => {
                StoreError::Unavailable(Box::new(failure))
            }
            Failure::WriterStopped
            | Failure::BatchRolledBack
            | Failure::MissingEntitlement
            | Failure::CheckPanicked
            | Failure::BlockingTask(_)
            | Failure::Decode(_)
            | Failure::Time(_)
            | Failure::NoSchema
            | Failure::Pool(_)
            | Failure::WrongAnswer
            | Failure::Sequence(_)
            | Failure::Change(_) => StoreError::Internal(Box::new(failure)),
        }
    }
}

fn pool_error_is_transient(err: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::PoolError;
    match err {
        PoolError::Timeout(_) | PoolError::Closed => true,
        PoolError::Backend(err) => is_transient(err),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => false,
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        if is_transient(&err) {
            StoreError::Unavailable(Box::new(err))
        } else {
            StoreError::Internal(Box::new(err))
        }
    }
}

/// One failure shared by every job of a batch whose BEGIN or COMMIT failed: each caller gets a
/// [`StoreError`] of the failure's class, all pointing at the one cause.
pub(super) fn shared(err: StoreError) -> impl Fn() -> StoreError {
    let unavailable = matches!(err, StoreError::Unavailable(_));
    let err = Arc::new(err);
    move || {
        let shared = Box::new(Shared(Arc::clone(&err)));
        if unavailable {
            StoreError::Unavailable(shared)
        } else {
            StoreError::Internal(shared)
        }
    }
}

#[derive(Debug)]
struct Shared(Arc<StoreError>);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the transaction of this write failed")
    }
}

impl StdError for Shared {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// Conditions of the server or the network that a retry (or an operator) can clear: a lost or
/// refused connection, a server shutting down or out of resources, a lock or statement timeout,
/// serialization failures and deadlocks, a read-only server (a failover in progress).
/// Everything else (constraint, syntax, decode) is a defect.
pub(super) fn is_transient(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(code) => is_transient_code(code),
        // No server error: the failure is of the socket (I/O, connect, timeout) unless it is
        // one of our conversions, whose causes are not I/O errors.
        None => has_io_cause(err),
    }
}

pub(super) fn is_transient_code(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources
        || code.starts_with("57P") // operator intervention: shutdown, crash, cannot connect now
        || matches!(
            code,
            "40001" // serialization_failure
            | "40P01" // deadlock_detected
            | "55P03" // lock_not_available (lock_timeout)
            | "57014" // query_canceled (statement_timeout)
            | "25006" // read_only_sql_transaction (a standby)
        )
}

fn has_io_cause(err: &tokio_postgres::Error) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether the connection that failed with `err` is gone (or in an unknown state) and must not
/// be used again.
pub(super) fn connection_lost(err: &tokio_postgres::Error) -> bool {
    err.is_closed()
        || has_io_cause(err)
        || err
            .code()
            .is_some_and(|code| code.code().starts_with("08") || code.code().starts_with("57P"))
}
