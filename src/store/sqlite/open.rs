//! Taking a data dir: the process lock, the checks that refuse a file we must not touch, and the
//! settings of every connection.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use fs4::fs_std::FileExt;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::OpenError;
use super::checkpoint::{self, CheckpointLimits};
use super::schema::{self, APPLICATION_ID};

const LOCK_FILE: &str = "provisiond.lock";
pub(super) const DATABASE_FILE: &str = "provisiond.sqlite3";

/// How long a statement waits for a lock held by another connection before failing with BUSY.
/// Within this process only checkpoints contend (writes are serialised by the writer thread): the
/// writer's last one, at close, against a reader that is still finishing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many problems `quick_check` reports before it stops: enough to say what is wrong.
const CHECK_REPORT_LIMIT: u32 = 5;

/// The exclusive lock on a data dir; released by [`DataDirLock::release`] or on drop.
#[derive(Debug)]
pub(super) struct DataDirLock {
    file: File,
}

impl DataDirLock {
    /// Fails at once, rather than waiting, when another process holds the dir: a second
    /// provisiond started by mistake must not hang, and two writers must never share the file.
    pub(super) fn acquire(data_dir: &Path) -> Result<Self, OpenError> {
        let lock_error = |source| OpenError::Lock {
            path: data_dir.to_owned(),
            source,
        };
        // Never truncated on open: the holder's pid in it is what the loser reports.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data_dir.join(LOCK_FILE))
            .map_err(lock_error)?;
        if !file.try_lock_exclusive().map_err(lock_error)? {
            let mut holder = String::new();
            let holder = file
                .read_to_string(&mut holder)
                .ok()
                .and_then(|_| holder.trim().parse().ok());
            return Err(OpenError::InUse {
                path: data_dir.to_owned(),
                holder,
            });
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .map_err(lock_error)?;
        Ok(Self { file })
    }

    pub(super) fn release(self) {
        // Closing the file would release it too; unlocking first says so explicitly.
        let _ = FileExt::unlock(&self.file);
    }
}

/// Opens the connection that owns all writes, after refusing any file that is not a healthy
/// provisiond database of a version we know, then migrates it. Nothing is written to the file
/// before every check has passed. Its WAL is checkpointed by another connection, within `limits`.
pub(super) fn open_writer(path: &Path, limits: &CheckpointLimits) -> Result<Connection, OpenError> {
    let open_error = |source| OpenError::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_error)?;
    let version = check_file(&conn, path)?;

    let configure_error = |source| OpenError::Configure {
        path: path.to_owned(),
        source,
    };
    conn.busy_timeout(BUSY_TIMEOUT).map_err(configure_error)?;
    // WAL lets readers run while the writer commits; FULL makes each commit fsync the WAL, so an
    // acknowledged write survives power loss (NORMAL would only survive a process crash).
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(configure_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::NoWal {
            path: path.to_owned(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(configure_error)?;
    conn.pragma_update(None, "foreign_keys", true)
        .map_err(configure_error)?;
    // The automatic checkpoint would run inside the COMMIT that crosses its threshold, with every
    // queued caller waiting: the checkpointer's thread does it instead. The WAL hook, which tells
    // the writer when to wake that thread, must come after: this pragma replaces any hook.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(configure_error)?;
    checkpoint::count_frames(&conn);
    // After the WAL starts again from its beginning, its first commit cuts the file back to
    // this: what a passive checkpoint lets it grow to, not the most it ever held.
    let page_size: u32 = conn
        .pragma_query_value(None, "page_size", |row| row.get(0))
        .map_err(configure_error)?;
    let limit = checkpoint::wal_file_bytes(limits.threshold, page_size);
    conn.pragma_update(
        None,
        "journal_size_limit",
        i64::try_from(limit).unwrap_or(i64::MAX),
    )
    .map_err(configure_error)?;

    schema::migrate(&mut conn, version, path)?;
    Ok(conn)
}

/// Opens the checkpointer's connection to the file `open_writer` has checked and migrated.
pub(super) fn open_checkpointer(path: &Path) -> Result<Connection, OpenError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| OpenError::Open {
        path: path.to_owned(),
        source,
    })?;
    let configure_error = |source| OpenError::Configure {
        path: path.to_owned(),
        source,
    };
    // Only a TRUNCATE waits (a PASSIVE never calls the busy handler), and it holds the writer
    // while it does.
    conn.busy_timeout(checkpoint::READER_WAIT)
        .map_err(configure_error)?;
    // A checkpoint syncs as its connection's `synchronous` says: FULL, as the writer's, so that
    // the database file is on disk before the WAL frames it was copied from can be overwritten.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(configure_error)?;
    Ok(conn)
}

/// Opens one connection of the read pool. `SQLITE_OPEN_READ_ONLY` makes a write through it an
/// error rather than a second writer.
pub(super) fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Returns the schema version of a file we may use, or why we may not. Only reads.
///
/// `PRAGMA quick_check` rather than `integrity_check`: it verifies every b-tree page, record
/// format and free list, which is what catches a torn or overwritten page, but skips the
/// comparison of each index with its table. Both read the whole file, which grows with every
/// revision kept; quick_check costs half as much. Measured (release build, 100,000 policies,
/// 77 MiB, warm page cache): quick_check 74-85 ms, integrity_check 153-189 ms, whole `open`
/// 73-122 ms; `startup_cost_with_100k_policies` in `tests.rs` repeats the measurement.
fn check_file(conn: &Connection, path: &Path) -> Result<i64, OpenError> {
    let refuse = |source: rusqlite::Error| match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => OpenError::NotADatabase {
            path: path.to_owned(),
            source,
        },
        Some(ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
            path: path.to_owned(),
            detail: source.to_string(),
        },
        _ => OpenError::Open {
            path: path.to_owned(),
            source,
        },
    };
    // The first read of the header: a file that is not SQLite fails here.
    let (application_id, version, objects): (i32, i64, i64) = conn
        .query_row(
            "SELECT (SELECT application_id FROM pragma_application_id),
                    (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM sqlite_schema)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .map_err(refuse)?;
    let fresh = application_id == 0 && version == 0 && objects == 0;
    if application_id != APPLICATION_ID && !fresh {
        return Err(OpenError::ForeignDatabase {
            path: path.to_owned(),
            found: application_id,
        });
    }
    if version > schema::LATEST {
        return Err(OpenError::TooNew {
            path: path.to_owned(),
            found: version,
            known: schema::LATEST,
        });
    }
    let problems = quick_check(conn).map_err(refuse)?;
    if problems != ["ok"] {
        return Err(OpenError::Corrupt {
            path: path.to_owned(),
            detail: problems.join("; "),
        });
    }
    Ok(version)
}

fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA quick_check({CHECK_REPORT_LIMIT})"))?;
    let rows = stmt.query_map([], |row| row.get(0))?;
    rows.collect()
}
