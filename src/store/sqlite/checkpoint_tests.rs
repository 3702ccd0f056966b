//! The checkpointer: the writer never checkpoints, the WAL stays bounded under writes, and a
//! reader that holds the checkpoint back holds up no commit. Small limits, so that a test's
//! writes cross them many times.

use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use super::checkpoint::{CheckpointLimits, wal_file_bytes};
use super::tests::{database, key, on_writer, side_connection, written_now};
use super::{DATABASE_FILE, SqliteStore};
use crate::pb;
use crate::store::contract::{put, resource};
use crate::store::metrics::{CheckpointMode, CheckpointResult};
use crate::store::{Store, StoredRevision};

const LIMITS: CheckpointLimits = CheckpointLimits {
    threshold: 64,
    bound: 256,
    retry: Duration::from_millis(10),
};

/// Writes queued together: group commit batches them, as under load.
const CONCURRENT: usize = 8;

/// Only a guard against a hang: the tests assert what happened, never how fast.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// A policy of a few KiB, so that every write adds pages to the WAL however it is batched.
fn bulky(n: usize, round: usize) -> pb::EntitlementProvisionPolicy {
    resource(&key(n), &format!("{round}-{}", "w".repeat(3000)))
}

fn wal_bytes(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(format!("{DATABASE_FILE}-wal"))).map_or(0, |meta| meta.len())
}

fn page_size(dir: &Path) -> u32 {
    side_connection(dir)
        .pragma_query_value(None, "page_size", |row| row.get(0))
        .unwrap()
}

/// Writes `rounds` rounds of [`CONCURRENT`] writes, each round queued at once; returns every
/// acknowledged revision and the largest WAL file seen after a round.
async fn write_rounds(
    store: &SqliteStore,
    dir: &Path,
    rounds: std::ops::Range<usize>,
) -> (Vec<StoredRevision>, u64) {
    let mut acknowledged = Vec::new();
    let mut largest_wal = 0;
    for round in rounds {
        let pending: Vec<_> = (0..CONCURRENT)
            .map(|n| store.write(put(bulky(n, round))))
            .collect();
        for write in pending {
            acknowledged.push(written_now(write.await));
        }
        largest_wal = largest_wal.max(wal_bytes(dir));
    }
    (acknowledged, largest_wal)
}

/// Every acknowledged revision, read back by its number, is what was written.
async fn reads_back(store: &SqliteStore, acknowledged: &[StoredRevision]) {
    for written in acknowledged {
        let entitlement = written.resource.entitlement.as_ref().unwrap();
        let stored = store
            .get(entitlement, Some(written.revision))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("revision {} of {entitlement:?}", written.revision));
        assert_eq!(stored.resource, written.resource);
    }
}

fn truncates(store: &SqliteStore) -> u64 {
    [CheckpointResult::Complete, CheckpointResult::Busy]
        .map(|result| {
            store
                .metrics()
                .checkpoints(CheckpointMode::Truncate, result)
        })
        .iter()
        .sum()
}

#[tokio::test]
async fn the_writer_never_checkpoints_the_wal() {
    let dir = TempDir::new().unwrap();
    // A checkpointer that never runs, so that only the writer could checkpoint.
    let idle = CheckpointLimits {
        threshold: u32::MAX,
        bound: u32::MAX,
        retry: Duration::from_secs(3600),
    };
    let store = SqliteStore::open_with(dir.path(), idle).unwrap();
    let autocheckpoint: i64 = on_writer(&store, |conn| {
        conn.pragma_query_value(None, "wal_autocheckpoint", |row| row.get(0))
            .unwrap()
    })
    .await;
    assert_eq!(autocheckpoint, 0);

    // SQLite's automatic checkpoint would copy the WAL back at 1000 pages, and the next commit
    // would write over it from its start: the file would stop growing there.
    let past_default = wal_file_bytes(2000, page_size(dir.path()));
    let mut writes = 0;
    while wal_bytes(dir.path()) < past_default {
        assert!(
            writes < 5000,
            "the WAL stopped growing at {}",
            wal_bytes(dir.path())
        );
        written_now(store.write(put(bulky(0, writes))).await);
        writes += 1;
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_through_thousands_of_writes_and_every_write_survives_a_reopen() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open_with(dir.path(), LIMITS).unwrap();
    let page_size = page_size(dir.path());

    let (acknowledged, largest_wal) = write_rounds(&store, dir.path(), 0..500).await;
    assert_eq!(acknowledged.len(), 500 * CONCURRENT);
    // The checkpointer answers the writer's wake-ups on its own thread, so the WAL overshoots
    // the bound by what was committed meanwhile: how far depends on scheduling. The slack is
    // wide; without a checkpoint the WAL would hold every write, past it several times over
    // (checked on the database file below).
    let allowed = wal_file_bytes(8 * LIMITS.bound, page_size);
    assert!(
        largest_wal <= allowed,
        "the WAL grew to {largest_wal} bytes, past {allowed}"
    );
    assert!(
        store
            .metrics()
            .checkpoints(CheckpointMode::Passive, CheckpointResult::Complete)
            > 0
    );
    store.close().await.unwrap();
    let database_bytes = std::fs::metadata(database(dir.path())).unwrap().len();
    assert!(
        database_bytes > 2 * allowed,
        "the writes fill {database_bytes} bytes: too few to test the bound"
    );

    let reopened = SqliteStore::open(dir.path()).unwrap();
    reads_back(&reopened, &acknowledged).await;
    let revisions: i64 = side_connection(dir.path())
        .query_row("SELECT count(*) FROM revisions", [], |row| row.get(0))
        .unwrap();
    assert_eq!(revisions as usize, acknowledged.len());
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_holds_the_checkpoint_back_holds_up_no_commit() {
    let dir = TempDir::new().unwrap();
    let store = SqliteStore::open_with(dir.path(), LIMITS).unwrap();
    let page_size = page_size(dir.path());
    let bound = wal_file_bytes(LIMITS.bound, page_size);
    let (mut acknowledged, _) = write_rounds(&store, dir.path(), 0..2).await;

    // A read transaction that keeps its snapshot, as an operator's sqlite3 shell would.
    let reader = side_connection(dir.path());
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM revisions", [], |row| row.get(0))
        .unwrap();

    // Until a checkpoint has stopped at the reader's snapshot, the checkpointer cannot know it
    // is held back.
    let mut round = 2;
    tokio::time::timeout(HANG_GUARD, async {
        while store
            .metrics()
            .checkpoints(CheckpointMode::Passive, CheckpointResult::Partial)
            == 0
        {
            acknowledged.extend(write_rounds(&store, dir.path(), round..round + 1).await.0);
            round += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("no checkpoint stopped at the reader's snapshot");
    // Then the writes take the WAL well past its bound.
    tokio::time::timeout(HANG_GUARD, async {
        let truncates_before = truncates(&store);
        acknowledged.extend(write_rounds(&store, dir.path(), round..round + 150).await.0);
        // No TRUNCATE held the writer for a checkpoint the reader kept from finishing.
        assert_eq!(truncates(&store), truncates_before);
    })
    .await
    .expect("writes hung while a reader held the checkpoint back");
    let held_back = wal_bytes(dir.path());
    assert!(
        held_back > bound,
        "the reader held back {held_back} bytes of WAL, within the bound of {bound}"
    );

    reader.execute_batch("COMMIT").unwrap();
    // No write comes to wake the checkpointer: its timer empties the WAL, with a TRUNCATE (the
    // file is empty before the TRUNCATE is counted, hence both in the wait).
    tokio::time::timeout(HANG_GUARD, async {
        while wal_bytes(dir.path()) > bound || truncates(&store) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the WAL stayed past its bound after the reader ended");

    reads_back(&store, &acknowledged).await;
    store.close().await.unwrap();
    let reopened = SqliteStore::open(dir.path()).unwrap();
    reads_back(&reopened, &acknowledged).await;
    reopened.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wal_that_starts_over_is_cut_back_to_the_threshold() {
    let dir = TempDir::new().unwrap();
    // No TRUNCATE: only the writer's `journal_size_limit` can make the file smaller.
    let limits = CheckpointLimits {
        bound: u32::MAX,
        ..LIMITS
    };
    let store = SqliteStore::open_with(dir.path(), limits).unwrap();
    let page_size = page_size(dir.path());
    write_rounds(&store, dir.path(), 0..2).await;
    // A reader keeps the frames in the WAL while the writes grow it.
    let reader = side_connection(dir.path());
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM revisions", [], |row| row.get(0))
        .unwrap();
    write_rounds(&store, dir.path(), 2..40).await;
    let grown = wal_bytes(dir.path());
    assert!(grown > wal_file_bytes(4 * limits.threshold, page_size));
    reader.execute_batch("COMMIT").unwrap();

    let complete = || {
        store
            .metrics()
            .checkpoints(CheckpointMode::Passive, CheckpointResult::Complete)
    };
    let before = complete();
    tokio::time::timeout(HANG_GUARD, async {
        while complete() == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("no checkpoint copied the WAL once the reader ended");
    assert_eq!(
        wal_bytes(dir.path()),
        grown,
        "nothing cuts the file before a write"
    );
    // Every frame is in the database file: this write starts the WAL over, and cuts it back.
    written_now(store.write(put(bulky(0, 40))).await);
    let cut = wal_bytes(dir.path());
    assert!(
        cut <= wal_file_bytes(limits.threshold, page_size),
        "the WAL file kept {cut} bytes of {grown}"
    );
    store.close().await.unwrap();
}
