//! Keeping this replica current with the commits of every replica: the head
//! ([`Store::subscribe`](crate::store::Store::subscribe)) and the in-memory current revisions
//! (`store/current.rs`), both from the change log.
//!
//! One task owns a connection of its own (the feed): it LISTENs there for the NOTIFY every
//! writer sends with each commit, and reads the head and the log entries after what memory has
//! applied, in order. Notifications are lost while that connection is down (and the server
//! drops them under pressure), so the task also reads the head every [`POLL`], when this
//! process commits, and when a read waits for a position memory has not reached. Every query
//! has a deadline: a connection that stopped answering (killed, or a network gone silent) is
//! closed and made again, and meanwhile reads that need fresher state read the database.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_postgres::{AsyncMessage, Client, IsolationLevel};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_stream::StreamExt;

use super::error::{Failure, chain};
use super::queries;
use crate::pb;
use crate::store::StoreError;
use crate::store::changes::HeadPublisher;
use crate::store::current::{Current, Loading};

/// How often the head is read without being told.
const POLL: Duration = Duration::from_millis(500);
/// How long a failed feed connection waits before it is made again.
const RECONNECT: Duration = Duration::from_secs(1);
/// The most any one query of the feed (or its connect) may take before the connection is
/// deemed stalled.
const DEADLINE: Duration = Duration::from_secs(5);
/// Log entries read per query while catching up.
const BATCH: i64 = 1000;

/// Where the feed connects.
pub(super) struct Feed {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// The channel to LISTEN on: `None` to rely on polling alone.
    pub channel: Option<String>,
}

/// The running task; dropping it stops the task (and its connection).
pub(super) struct Follower(AbortHandle);

impl Follower {
    pub(super) fn spawn(feed: Feed, head: HeadPublisher, current: Arc<Current>) -> Self {
        let task = tokio::spawn(async move {
            loop {
                match follow(&feed, &head, &current).await {
                    Err(err) => tracing::warn!(
                        error = %chain(&*err),
                        "the PostgreSQL change feed connection failed; reconnecting (reads that \
                         need fresher state than memory read the database meanwhile)"
                    ),
                    Ok(()) => tracing::warn!(
                        "the server closed the PostgreSQL change feed connection; reconnecting"
                    ),
                }
                tokio::time::sleep(RECONNECT).await;
            }
        });
        Self(task.abort_handle())
    }

    pub(super) fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop();
    }
}

type FeedError = Box<dyn std::error::Error + Send + Sync>;

/// Within [`DEADLINE`], or a stall.
async fn timely<T, E: Into<FeedError>>(
    what: &'static str,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, FeedError> {
    match tokio::time::timeout(DEADLINE, work).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(format!("{what} took longer than {DEADLINE:?}").into()),
    }
}

/// Follows the log on one connection until it fails: `Ok` when the server closed it.
async fn follow(feed: &Feed, head: &HeadPublisher, current: &Current) -> Result<(), FeedError> {
    let (client, mut connection) =
        timely("connecting", feed.config.connect(feed.tls.clone())).await?;
    let told = Notify::new();
    // Drives the connection and forwards its notifications.
    let drive = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => told.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(FeedError::from(err)),
                None => return Ok(()),
            }
        }
    };
    let work = async {
        if let Some(channel) = &feed.channel {
            timely("LISTEN", client.batch_execute(&format!("LISTEN {channel}"))).await?;
        }
        // Named in a comment, so that pg_stat_activity tells the feed from the pool's reads.
        let tag = match feed.channel {
            Some(_) => "/* provisiond change feed, listening */",
            None => "/* provisiond change feed, polling */",
        };
        let statements = (
            timely(
                "preparing",
                client.prepare(&format!("{} {tag}", queries::HEAD)),
            )
            .await?,
            timely(
                "preparing",
                client.prepare(&format!("{} {tag}", queries::READ_CHANGES)),
            )
            .await?,
        );
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut committed = head.subscribe();
        loop {
            // First at once: commits made while not connected are caught up.
            catch_up(&client, &statements, head, current).await?;
            committed.borrow_and_update();
            tokio::select! {
                _ = poll.tick() => {}
                () = told.notified() => {}
                () = current.wanted() => {}
                _ = committed.changed() => {}
            }
        }
    };
    tokio::select! {
        result = drive => result,
        result = work => result,
    }
}

/// Reads the head, and the log entries up to it that memory has not applied.
async fn catch_up(
    client: &Client,
    (head_statement, changes_statement): &(tokio_postgres::Statement, tokio_postgres::Statement),
    head: &HeadPublisher,
    current: &Current,
) -> Result<(), FeedError> {
    let row = timely(
        "reading the log head",
        client.query_one(head_statement, &[]),
    )
    .await?;
    let seq = queries::seq_from_column(row.try_get(0)?)?;
    head.advance(seq);
    while current.at() < seq {
        let after = queries::seq_param(current.at());
        let rows = timely(
            "reading the change log",
            client.query(changes_statement, &[&after, &BATCH]),
        )
        .await?;
        let sets = rows
            .iter()
            .map(queries::change_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // The log is gap-free: anything else is a bug or a broken database, never skipped.
        let follows = sets
            .iter()
            .zip(current.at() + 1..)
            .all(|(set, expected)| set.seq == expected);
        if sets.is_empty() || !follows {
            return Err(format!(
                "the change log does not follow on from position {} up to its head {seq}",
                current.at()
            )
            .into());
        }
        current.apply_log(&sets)?;
    }
    Ok(())
}

/// Every live current revision and the log position they are at, read in one snapshot, the
/// rows one at a time (100k policies are never all in memory twice).
pub(super) async fn load(pool: &Pool) -> Result<Current, StoreError> {
    let mut client = pool.get().await.map_err(Failure::Pool)?;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let at = queries::seq_from_column(tx.query_one(queries::HEAD, &[]).await?.try_get(0)?)?;
    let mut loading = Loading::default();
    let rows = tx
        .query_raw(queries::ALL_CURRENT, std::iter::empty::<i64>())
        .await?;
    let mut rows = pin!(rows);
    while let Some(row) = rows.next().await {
        let (key, record) = queries::encoded_from_row(&row?)?;
        loading.add(key, record);
    }
    let refs = |row: &tokio_postgres::Row| -> Result<_, StoreError> {
        let of = |app: usize, entitlement: usize| -> Result<_, tokio_postgres::Error> {
            Ok(pb::EntitlementRef {
                app_id: row.try_get(app)?,
                entitlement_id: row.try_get(entitlement)?,
            })
        };
        Ok((of(0, 1)?, of(2, 3)?))
    };
    for row in tx.query(queries::ALL_DELEGATIONS, &[]).await? {
        let (key, target) = refs(&row)?;
        loading.add_edge(key, target);
    }
    for row in tx.query(queries::ALL_BINDINGS, &[]).await? {
        let (source, destination) = refs(&row)?;
        loading.add_binding(source, destination);
    }
    tx.commit().await?;
    Ok(loading.finish(at))
}
