//! Keeping [`Store::subscribe`](crate::store::Store::subscribe) current with the commits of
//! other replicas. Every writer sends a NOTIFY with each commit that wrote something; a task of
//! each store LISTENs on a connection of its own and reads the head when told. Notifications are
//! lost while that connection is down (and the server drops them under pressure), so the task
//! also reads the head every [`POLL`]: a notification only makes the news arrive sooner.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::chain;
use super::queries;
use crate::store::changes::HeadPublisher;

/// How often the head is read without being told.
const POLL: Duration = Duration::from_millis(500);
/// How long a failed LISTEN connection waits before it is made again.
const RECONNECT: Duration = Duration::from_secs(1);

/// What the task LISTENs on: `None` to rely on polling alone.
pub(super) struct Listen {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    pub channel: String,
}

/// The running task; dropping it stops the task (and its LISTEN connection).
pub(super) struct Follower(AbortHandle);

impl Follower {
    pub(super) fn spawn(pool: Pool, head: HeadPublisher, listen: Option<Listen>) -> Self {
        let task = tokio::spawn(async move {
            let told = Arc::new(Notify::new());
            let _listener = listen.map(|listen| {
                let told = Arc::clone(&told);
                StopOnDrop(tokio::spawn(listen_forever(listen, told)))
            });
            let mut poll = tokio::time::interval(POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = poll.tick() => {}
                    () = told.notified() => {}
                }
                match read_head(&pool).await {
                    Ok(seq) => head.advance(seq),
                    // The next poll tries again; reads and writes report outages themselves.
                    Err(err) => tracing::debug!(error = %chain(&*err), "cannot read the log head"),
                }
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

struct StopOnDrop(JoinHandle<()>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_head(pool: &Pool) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let statement = client.prepare_cached(queries::HEAD).await?;
    let head: i64 = client.query_one(&statement, &[]).await?.try_get(0)?;
    Ok(u64::try_from(head)?)
}

async fn listen_forever(listen: Listen, told: Arc<Notify>) {
    loop {
        match listen_once(&listen, &told).await {
            Err(err) => tracing::warn!(
                error = %chain(&err),
                "the PostgreSQL LISTEN connection failed; polling until it is back"
            ),
            Ok(()) => tracing::warn!(
                "the server closed the PostgreSQL LISTEN connection; polling until it is back"
            ),
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Listens until the connection ends: `Ok` when the server closed it.
async fn listen_once(listen: &Listen, told: &Notify) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = listen.config.connect(listen.tls.clone()).await?;
    let forward = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => told.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(()),
            }
        }
    };
    let subscribe = async {
        match client
            .batch_execute(&format!("LISTEN {}", listen.channel))
            .await
        {
            // Commits made while not listening are caught up at once.
            Ok(()) => {
                told.notify_one();
                std::future::pending().await
            }
            Err(err) => Err(err),
        }
    };
    tokio::select! {
        err = forward => err,
        err = subscribe => err,
    }
}
