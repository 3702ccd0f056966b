//! WatchProvisionPolicies: a task per stream reads the store's change log from the stream's
//! position in bounded batches and sends each write's matching changes as one message. The
//! task holds no state the store could hold: its position is all, and every message carries it
//! as the cursor, so a client resumes anywhere without loss or repetition.
//!
//! Memory per stream is bounded: the task reads the next batch only once the client has taken
//! enough of the previous one (`send` waits on the queue, the queue on HTTP/2 flow control), so
//! a stalled reader costs one batch, never the backlog.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, watch as signal};
use tokio::time::{Instant, sleep_until};
use tokio_stream::Stream;
use tonic::Status;

use super::cursor_of;
use super::feed::ChangeFeed;
use crate::error::Error;
use crate::pb;
use crate::pb::policy_change::Kind;
use crate::policy::lifecycle::{self, WatchFilter, WatchRequestError, WatchSpec};
use crate::store::record::timestamp;
use crate::store::{PolicyQuery, Store};

/// Log entries one read takes.
const BATCH: usize = 128;
/// Policies one initial-state message holds.
const INITIAL_BATCH: usize = 100;
/// Messages queued ahead of the client, beyond what HTTP/2 buffers.
const QUEUE: usize = 8;
/// How long the final messages of a stream wait for a client that does not read.
const FINAL_SEND: Duration = Duration::from_secs(1);

type Item = Result<pb::WatchProvisionPoliciesResponse, Status>;

/// Checks the request and starts the stream's task. A bad cursor fails the call itself, before
/// any message, so a client cannot mistake it for an empty stream.
pub(super) async fn open<S: Store>(
    store: Arc<S>,
    feed: Arc<ChangeFeed<S>>,
    request: pb::WatchProvisionPoliciesRequest,
    shutdown: signal::Receiver<bool>,
) -> Result<ChangeStream, Error> {
    let spec =
        lifecycle::parse_watch_request(&request, store.store_id()).map_err(
            |error| match error {
                WatchRequestError::Invalid(violations) => Error::InvalidRequest(violations),
                WatchRequestError::Cursor(violations) => Error::InvalidCursor(violations),
            },
        )?;
    if *shutdown.borrow() {
        return Err(Error::ShuttingDown);
    }
    let head = store.head().await?;
    let start = match spec.start {
        None => head,
        Some(given) if given > head => {
            return Err(Error::CursorAhead {
                given,
                head,
                head_cursor: cursor_of(&*store, head),
            });
        }
        Some(given) => given,
    };
    let (sender, receiver) = mpsc::channel(QUEUE);
    let watcher = Watcher {
        store,
        feed,
        spec,
        position: start,
        sender,
        shutdown,
    };
    tokio::spawn(watcher.run());
    Ok(ChangeStream {
        receiver,
        ended: false,
    })
}

/// The messages of one stream. It never ends with OK: when its task stops without having sent
/// an error (the server is stopping), the last item is UNAVAILABLE (SHUTTING_DOWN), so a client
/// always knows to resume.
pub struct ChangeStream {
    receiver: mpsc::Receiver<Item>,
    ended: bool,
}

impl Stream for ChangeStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some(item)) => {
                self.ended = item.is_err();
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(Some(Err(Error::ShuttingDown.into())))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why a stream's task stops.
enum Stop {
    /// The client went away.
    Gone,
    /// The server is stopping.
    Shutdown,
    /// The store failed; the client gets the error.
    Failed(Error),
}

struct Watcher<S> {
    store: Arc<S>,
    feed: Arc<ChangeFeed<S>>,
    spec: WatchSpec,
    /// Every log entry up to here has been read (and sent, when it matched).
    position: u64,
    sender: mpsc::Sender<Item>,
    shutdown: signal::Receiver<bool>,
}

impl<S: Store> Watcher<S> {
    async fn run(mut self) {
        let stop = match self.stream().await {
            Ok(never) => match never {},
            Err(stop) => stop,
        };
        match stop {
            Stop::Gone => {}
            Stop::Shutdown => {
                // A final checkpoint tells the client where to resume; the stream then ends with
                // SHUTTING_DOWN (ChangeStream adds it when the queue closes).
                let checkpoint = self.checkpoint();
                let _ = tokio::time::timeout(FINAL_SEND, self.sender.send(Ok(checkpoint))).await;
            }
            Stop::Failed(error) => {
                let _ = tokio::time::timeout(FINAL_SEND, self.sender.send(Err(error.into()))).await;
            }
        }
    }

    async fn stream(&mut self) -> Result<std::convert::Infallible, Stop> {
        if self.spec.send_initial_state {
            self.send_initial_state().await?;
            let checkpoint = self.checkpoint();
            self.send(checkpoint).await?;
        }
        let mut heads = self.store.subscribe();
        let interval = self.spec.checkpoint_interval;
        let mut next_checkpoint = Instant::now() + interval;
        loop {
            if self.catch_up().await? {
                next_checkpoint = Instant::now() + interval;
            }
            if Instant::now() >= next_checkpoint {
                let checkpoint = self.checkpoint();
                self.send(checkpoint).await?;
                next_checkpoint = Instant::now() + interval;
            }
            let position = self.position;
            tokio::select! {
                changed = heads.wait_for(|head| *head > position) => {
                    // The store is gone: the server is stopping.
                    if changed.is_err() {
                        return Err(Stop::Shutdown);
                    }
                }
                () = sleep_until(next_checkpoint) => {}
                _ = self.shutdown.wait_for(|stopping| *stopping) => return Err(Stop::Shutdown),
                () = self.sender.closed() => return Err(Stop::Gone),
            }
        }
    }

    /// Reads and sends everything after the position up to the end of the log; returns whether
    /// it sent anything.
    async fn catch_up(&mut self) -> Result<bool, Stop> {
        let mut sent = false;
        loop {
            if *self.shutdown.borrow() {
                return Err(Stop::Shutdown);
            }
            let sets = self
                .feed
                .read(self.position, BATCH)
                .await
                .map_err(|error| Stop::Failed(error.into()))?;
            let more = sets.len() == BATCH;
            for set in sets {
                let changes: Vec<pb::PolicyChange> = set
                    .changes
                    .into_iter()
                    .filter(|change| self.spec.filter.matches_change(change))
                    .collect();
                if changes.is_empty() {
                    self.position = set.seq;
                    continue;
                }
                let message = pb::WatchProvisionPoliciesResponse {
                    changes,
                    cursor: cursor_of(&*self.store, set.seq),
                    checkpoint: false,
                    commit_time: Some(timestamp(set.commit_time)),
                };
                // The position moves only once the message is queued: a send cut short by the
                // shutdown must leave the final checkpoint before this write, or the client
                // would resume past a change it never got.
                self.send(message).await?;
                self.position = set.seq;
                sent = true;
            }
            if !more {
                return Ok(sent);
            }
        }
    }

    /// The policies current at the start position that pass the filters, as INITIAL changes.
    async fn send_initial_state(&mut self) -> Result<(), Stop> {
        let filter = &self.spec.filter;
        let app_id = filter
            .app_id
            .clone()
            .or_else(|| filter.entitlement.as_ref().map(|e| e.app_id.clone()));
        let mut after = None;
        loop {
            let query = PolicyQuery {
                app_id: app_id.clone(),
                at: self.position,
                after: after.take(),
                limit: INITIAL_BATCH,
            };
            let page = self
                .store
                .list_policies(query)
                .await
                .map_err(|error| Stop::Failed(error.into()))?;
            let last_page = page.len() < INITIAL_BATCH;
            after = page.last().and_then(|r| r.resource.entitlement.clone());
            let changes: Vec<pb::PolicyChange> = page
                .into_iter()
                .filter(|record| passes(&self.spec.filter, record.resource.entitlement.as_ref()))
                .map(|record| pb::PolicyChange {
                    kind: Kind::Initial as i32,
                    entitlement: record.resource.entitlement.clone(),
                    revision: record.revision,
                    actor: record.actor.clone(),
                    change_cause: record.change_cause.clone(),
                    policy: Some(record.into_resource()),
                    binding: None,
                })
                .collect();
            if !changes.is_empty() {
                let message = pb::WatchProvisionPoliciesResponse {
                    changes,
                    cursor: cursor_of(&*self.store, self.position),
                    checkpoint: false,
                    commit_time: None,
                };
                self.send(message).await?;
            }
            if last_page {
                return Ok(());
            }
        }
    }

    fn checkpoint(&self) -> pb::WatchProvisionPoliciesResponse {
        pb::WatchProvisionPoliciesResponse {
            changes: Vec::new(),
            cursor: cursor_of(&*self.store, self.position),
            checkpoint: true,
            commit_time: None,
        }
    }

    /// Waits until the client has room for `message`, or stops.
    async fn send(&mut self, message: pb::WatchProvisionPoliciesResponse) -> Result<(), Stop> {
        tokio::select! {
            sent = self.sender.send(Ok(message)) => sent.map_err(|_| Stop::Gone),
            // A client that does not read cannot take a final checkpoint either.
            _ = self.shutdown.wait_for(|stopping| *stopping) => Err(Stop::Shutdown),
        }
    }
}

fn passes(filter: &WatchFilter, entitlement: Option<&pb::EntitlementRef>) -> bool {
    entitlement.is_some_and(|e| filter.matches(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::contract::{entitlement, put, resource};
    use crate::store::sqlite::SqliteStore;

    /// A stopping server must not hand out a checkpoint past a change it could not queue: the
    /// client would resume after it and never see it.
    #[tokio::test]
    async fn a_send_cut_short_by_shutdown_leaves_the_final_checkpoint_before_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let start = store.head().await.unwrap();
        store
            .write(put(resource(&entitlement("app", "e"), "hook")))
            .await
            .unwrap();
        // A queue the client never drains: the change's send waits until the shutdown.
        let (sender, mut receiver) = mpsc::channel(1);
        sender.try_send(Err(Status::ok("filler"))).unwrap();
        let (stopping, shutdown) = signal::channel(false);
        let request = pb::WatchProvisionPoliciesRequest::default();
        let watcher = Watcher {
            spec: lifecycle::parse_watch_request(&request, store.store_id()).unwrap(),
            feed: Arc::new(ChangeFeed::new(store.clone())),
            store: store.clone(),
            position: start,
            sender,
            shutdown,
        };
        let task = tokio::spawn(watcher.run());
        tokio::time::sleep(Duration::from_millis(100)).await;
        stopping.send_replace(true);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Room again: the final checkpoint goes in.
        receiver.recv().await.unwrap().unwrap_err();
        task.await.unwrap();
        let last = receiver.recv().await.unwrap().unwrap();
        assert!(last.checkpoint && last.changes.is_empty(), "{last:?}");
        assert_eq!(last.cursor, cursor_of(&*store, start));
        assert!(receiver.recv().await.is_none());
    }
}
