//! The PostgreSQL backend (`--store postgres://…`): several stateless replicas share one
//! database.
//!
//! Every mutation (policy write, binding create or delete) of every replica runs in a READ
//! COMMITTED transaction that first takes one transaction-level advisory lock: mutations are
//! ordered across replicas exactly as SQLite's single writer orders them, so the etag
//! precondition, the check's reads of delegation edges and bindings, and the write are atomic,
//! with no serialization failures to retry (a check runs once). Each statement after the lock
//! sees every transaction that released it. Within a replica, one writer thread group-commits
//! the queued mutations (`writer.rs`), so the lock and the commit are paid per batch.
//!
//! Reads never take the lock: `get` and `list_bindings` on pooled connections, `check` in a
//! REPEATABLE READ READ ONLY transaction (one snapshot for all its lookups). A read that fails
//! because its pooled connection was found dead is tried once more on a new one (reads are
//! idempotent); writes are never retried once their check ran.
//!
//! Every mutation that stands takes the next position of the change log under that lock, so
//! the log is numbered in commit order without gaps across replicas. Other replicas' commits
//! reach [`Store::subscribe`] through LISTEN/NOTIFY and polling (`follow.rs`).
//!
//! Tables mirror SQLite's (`schema.rs`); times come from the database's clock.

mod error;
mod follow;
mod locks;
mod lookup;
mod queries;
mod schema;
#[cfg(test)]
mod tests;
mod tls;
mod writer;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio::sync::oneshot;
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;

pub use self::error::OpenError;
use self::error::{Failure, chain, connection_lost};
use self::follow::{Feed, Follower};
use self::locks::{LockKey, changes_channel};
use self::lookup::{LookupStatements, SnapshotStatements, run_check, run_snapshot};
pub use self::tls::CaSource;
use self::tls::Tls;
use self::writer::{Done, Job, Op, Writer};
use super::changes::{ChangeSet, HeadPublisher};
use super::current::{self, Current, Served};
use super::metrics::{StoreGauges, StoreMetrics};
use super::{
    BindingQuery, Delete, DeleteOutcome, HistoryEntry, PolicyQuery, RevisionQuery, Store,
    StoreError, StoredBinding, StoredRevision, Write, WriteCheck, WriteOutcome,
};
use crate::pb;
use crate::policy::consistency::Freshness;

/// The `application_name` of every connection unless the URL sets one: how operators find
/// provisiond's sessions in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "provisiond";

/// Read connections per replica (the writer has one more of its own).
const POOL_SIZE: usize = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// tokio-postgres's default keepalive idle time, the operating system's.
const OS_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// How long a read waits for a pooled connection before failing UNAVAILABLE.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Whether `store` (the `--store` value) names a PostgreSQL database.
pub fn is_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// The PostgreSQL [`Store`]. Any number of them, in any number of processes, may share one
/// database (and schema); [`Store::close`] it on shutdown.
pub struct PostgresStore {
    writer: Writer,
    pool: Pool,
    target: String,
    store_id: String,
    head: HeadPublisher,
    /// Every live policy's current revision, kept current from the change log by `follower`.
    current: Arc<Current>,
    follower: Follower,
    metrics: StoreMetrics,
}

impl PostgresStore {
    /// Connects to the database `url` names, migrates its schema (the first schema of the
    /// session's `search_path`) and starts the writer. Fails at once, naming the server, when
    /// the database cannot be reached: no retry here (a supervisor restarting the process is
    /// the retry).
    ///
    /// TLS follows the URL's `sslmode` (`disable`, `prefer`, `require`, `verify-full`) and
    /// `sslrootcert`, or `ca_file` (`--store-ca-file`); see `tls.rs` for what each means here.
    pub async fn open(url: &str, ca_file: Option<&Path>) -> Result<Self, OpenError> {
        let (config, tls) = tls::configure(url, ca_file)?;
        Self::open_config_with(config, tls, true).await
    }

    /// [`Self::open`] with a parsed configuration: its `sslmode` `require` verifies the server
    /// against the system's trusted roots, `prefer` (the default) does not use TLS.
    pub async fn open_config(config: tokio_postgres::Config) -> Result<Self, OpenError> {
        let tls = tls::for_config(&config)?;
        Self::open_config_with(config, tls, true).await
    }

    /// [`Self::open_config`] with its TLS decided; without `listen`, other replicas' commits
    /// are learned by polling alone (what tests of the fallback need).
    async fn open_config_with(
        mut config: tokio_postgres::Config,
        tls: Tls,
        listen: bool,
    ) -> Result<Self, OpenError> {
        config.ssl_mode(tls.wire);
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // A server or network gone silent is noticed within about a minute, not after the
        // operating system's two hours, unless the URL says otherwise.
        if config.get_keepalives_idle() == OS_KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_IDLE / 3);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(KEEPALIVE_IDLE);
        }
        let target = target(&config, &tls);
        let opened = migrate(&config, &tls, &target).await?;
        let head = HeadPublisher::new(opened.head);
        let metrics = StoreMetrics::new();
        let writer = Writer::spawn(
            config.clone(),
            tls.connector.clone(),
            target.clone(),
            head.clone(),
            metrics.clone(),
        )
        .await?;
        let feed = Feed {
            config: config.clone(),
            tls: tls.connector.clone(),
            channel: listen.then(|| changes_channel(&opened.schema)),
        };
        let manager = Manager::from_config(
            config,
            tls.connector,
            ManagerConfig {
                // A connection the server ended is noticed by the client and never handed
                // out again; one ended unnoticed fails its read, which is retried once.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()?;
        let current = Arc::new(follow::load(&pool).await.map_err(OpenError::Load)?);
        head.advance(current.at());
        let follower = Follower::spawn(feed, head.clone(), Arc::clone(&current));
        Ok(Self {
            writer,
            pool,
            target,
            store_id: opened.store_id,
            head,
            current,
            follower,
            metrics,
        })
    }

    /// The series its writer observes (batch size, commit duration), for the metrics endpoint.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// The server and database, and whether (and how) TLS is used, without credentials: for
    /// logs.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// How many transactions the writer has committed since open. Each holds a batch of
    /// mutations, so under concurrent load this grows slower than the number of writes.
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    fn submit(&self, op: Op) -> impl Future<Output = Result<Done, StoreError>> + Send + use<> {
        let (reply, answer) = oneshot::channel();
        let submitted = self
            .writer
            .submit(Job::Op(op, reply, tracing::Span::current()));
        async move {
            submitted?;
            answer.await.map_err(|_| Failure::WriterStopped)?
        }
    }

    #[cfg(test)]
    fn run_on_writer(&self, task: impl FnOnce(&mut writer::Session) + Send + 'static) {
        self.writer
            .submit(Job::Run(Box::new(task)))
            .expect("writer is running");
    }
}

/// Runs `$read` (an expression using `$client`, a pooled connection) and yields its result as a
/// `Result<_, StoreError>`; runs it once more on a fresh connection if the first turned out to
/// be dead (the server restarted, or ended the session). Reads only: they are idempotent.
macro_rules! read_retrying {
    ($pool:expr, |$client:ident| $read:expr) => {{
        let mut retried = false;
        loop {
            let $client = $pool.get().await.map_err(Failure::Pool)?;
            match $read {
                Err(err) if connection_lost(&err) => {
                    // Never hand this connection out again.
                    drop(Object::take($client));
                    if retried {
                        break Err(StoreError::from(err));
                    }
                    tracing::info!(
                        error = %chain(&err),
                        "a pooled PostgreSQL connection was lost; retrying the read"
                    );
                    retried = true;
                }
                result => break result.map_err(StoreError::from),
            }
        }
    }};
}

/// A pooled connection inside a transaction. It goes back to the pool only through
/// [`InTransaction::release`], after the transaction ended; dropped otherwise (a failed check,
/// a panic), it is closed rather than pooled in an unknown state.
struct InTransaction(Option<Object>);

impl InTransaction {
    fn release(mut self) {
        drop(self.0.take());
    }
}

impl std::ops::Deref for InTransaction {
    type Target = tokio_postgres::Client;

    fn deref(&self) -> &tokio_postgres::Client {
        self.0.as_ref().expect("not released")
    }
}

impl Drop for InTransaction {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}

/// Starts the read-only snapshot a check runs in, and prepares its lookups.
/// The statements of a read view, prepared (and cached) on its connection.
struct ViewStatements {
    targets: tokio_postgres::Statement,
    bound: tokio_postgres::Statement,
    dependants: tokio_postgres::Statement,
    current: tokio_postgres::Statement,
    head: tokio_postgres::Statement,
}

impl ViewStatements {
    fn snapshot(&self) -> SnapshotStatements<'_> {
        SnapshotStatements {
            lookup: LookupStatements {
                delegation_targets: &self.targets,
                binding_exists: &self.bound,
                dependants: &self.dependants,
            },
            current: &self.current,
            head: &self.head,
        }
    }
}

async fn begin_check(client: &InTransaction) -> Result<ViewStatements, tokio_postgres::Error> {
    let object = client.0.as_ref().expect("not released");
    object
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    Ok(ViewStatements {
        targets: object.prepare_cached(queries::DELEGATION_TARGETS).await?,
        bound: object.prepare_cached(queries::BINDING_EXISTS).await?,
        dependants: object.prepare_cached(queries::DEPENDANTS).await?,
        current: object.prepare_cached(queries::CURRENT).await?,
        head: object.prepare_cached(queries::HEAD).await?,
    })
}

impl PostgresStore {
    /// Runs `read` on a blocking thread against one REPEATABLE READ READ ONLY snapshot.
    async fn in_read_view<T: Send + 'static>(
        &self,
        read: impl FnOnce(
            &InTransaction,
            &ViewStatements,
            &tokio::runtime::Handle,
        ) -> Result<T, StoreError>
        + Send
        + 'static,
    ) -> Result<T, StoreError> {
        let mut retried = false;
        let (client, statements) = loop {
            let client = InTransaction(Some(self.pool.get().await.map_err(Failure::Pool)?));
            match begin_check(&client).await {
                Ok(statements) => break (client, statements),
                Err(err) if connection_lost(&err) && !retried => {
                    tracing::info!(
                        error = %chain(&err),
                        "a pooled PostgreSQL connection was lost; retrying the read view"
                    );
                    retried = true;
                }
                Err(err) => return Err(err.into()),
            }
        };
        let runtime = tokio::runtime::Handle::current();
        // The rest runs on the blocking thread, so that the transaction ends even if this
        // future is dropped meanwhile.
        tokio::task::spawn_blocking(move || {
            let value = read(&client, &statements, &runtime)?;
            runtime.block_on(client.batch_execute("COMMIT"))?;
            client.release();
            Ok(value)
        })
        .await
        .map_err(Failure::BlockingTask)?
    }
}

/// Hosts, ports, database and user of `config`: enough to find the server, never a password.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(n, host)| {
            let host = match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(n).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    format!(
        "{hosts} (database {}, user {})",
        config.get_dbname().unwrap_or("(default)"),
        config.get_user().unwrap_or("(default)")
    )
}

/// [`describe`] and the TLS of the connections, for logs and open errors.
fn target(config: &tokio_postgres::Config, tls: &Tls) -> String {
    format!("{} with {}", describe(config), tls.summary)
}

/// What open learns from the database besides migrating it.
struct Opened {
    schema: String,
    store_id: String,
    head: u64,
}

async fn migrate(
    config: &tokio_postgres::Config,
    tls: &Tls,
    target: &str,
) -> Result<Opened, OpenError> {
    let connect_failed = |source| OpenError::Connect {
        target: target.to_owned(),
        source,
    };
    let (mut client, connection) = config
        .connect(tls.connector.clone())
        .await
        .map_err(connect_failed)?;
    let connection = tokio::spawn(connection);
    let schema: Option<String> = client
        .query_one("SELECT current_schema()", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(connect_failed)?;
    let schema = schema.ok_or(OpenError::NoSchema)?;
    let migrated = schema::migrate(&mut client, LockKey::migrate(&schema)).await;
    let log = match migrated {
        Ok(()) => client
            .query_one(queries::LOG_STATE, &[])
            .await
            .and_then(|row| Ok((row.try_get(0)?, row.try_get::<_, i64>(1)?)))
            .map_err(connect_failed),
        Err(err) => Err(err),
    };
    drop(client);
    let _ = connection.await;
    let (store_id, head) = log?;
    Ok(Opened {
        schema,
        store_id,
        // The column's CHECK keeps it non-negative.
        head: u64::try_from(head).unwrap_or_default(),
    })
}

impl Store for PostgresStore {
    /// From memory when it has reached the position the read needs, else from the database.
    async fn get_current(
        &self,
        entitlement: &pb::EntitlementRef,
        freshness: Freshness,
    ) -> Result<Served<Option<bytes::Bytes>>, StoreError> {
        current::serve(
            &self.current,
            freshness,
            |current| current.get_encoded(entitlement),
            || self.head(),
            || async {
                let record = self.get(entitlement, None).await?;
                Ok(record.map(current::client_bytes))
            },
        )
        .await
    }

    async fn get(
        &self,
        entitlement: &pb::EntitlementRef,
        revision: Option<i64>,
    ) -> Result<Option<StoredRevision>, StoreError> {
        let row = read_retrying!(self.pool, |client| {
            async {
                match revision {
                    None => {
                        let statement = client.prepare_cached(queries::CURRENT).await?;
                        let params: [&(dyn ToSql + Sync); 2] =
                            [&entitlement.app_id, &entitlement.entitlement_id];
                        client.query_opt(&statement, &params).await
                    }
                    Some(revision) => {
                        let statement = client.prepare_cached(queries::AT_REVISION).await?;
                        let params: [&(dyn ToSql + Sync); 3] =
                            [&entitlement.app_id, &entitlement.entitlement_id, &revision];
                        client.query_opt(&statement, &params).await
                    }
                }
            }
            .await
        })?;
        row.as_ref().map(queries::revision_from_row).transpose()
    }

    async fn read_current<T: Send + 'static>(
        &self,
        freshness: Freshness,
        read: super::SnapshotRead<T>,
    ) -> Result<Served<T>, StoreError> {
        current::read_with(
            &self.current,
            freshness,
            read,
            || self.head(),
            |read| self.read_snapshot(read),
        )
        .await
    }

    /// The write is queued when this is called, before the future is first polled.
    fn write(&self, write: Write) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send {
        let done = self.submit(Op::Write(write));
        async move {
            match done.await? {
                Done::Written(outcome) => Ok(outcome),
                Done::Created(_) | Done::Deleted | Done::Tombstoned(_) => {
                    Err(Failure::WrongAnswer.into())
                }
            }
        }
    }

    async fn check(&self, check: WriteCheck) -> Result<Vec<pb::PolicyViolation>, StoreError> {
        self.in_read_view(move |client, statements, runtime| {
            run_check(check, client, statements.snapshot().lookup, runtime)
        })
        .await
    }

    async fn probe(&self) -> Result<(), StoreError> {
        read_retrying!(self.pool, |client| client.batch_execute("SELECT 1").await)
    }

    async fn has_dependants(&self, entitlement: &pb::EntitlementRef) -> Result<bool, StoreError> {
        let row = read_retrying!(self.pool, |client| {
            async {
                let statement = client.prepare_cached(queries::HAS_DEPENDANTS).await?;
                let params: [&(dyn ToSql + Sync); 2] =
                    [&entitlement.app_id, &entitlement.entitlement_id];
                client.query_one(&statement, &params).await
            }
            .await
        })?;
        Ok(row.try_get(0)?)
    }

    async fn read_snapshot<T: Send + 'static>(
        &self,
        read: super::SnapshotRead<T>,
    ) -> Result<T, StoreError> {
        self.in_read_view(move |client, statements, runtime| {
            run_snapshot(read, client, statements.snapshot(), runtime)
        })
        .await
    }

    fn create_binding(
        &self,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
        implicit: bool,
    ) -> impl Future<Output = Result<StoredBinding, StoreError>> + Send {
        let done = self.submit(Op::CreateBinding {
            source,
            destination,
            implicit,
        });
        async move {
            match done.await? {
                Done::Created(binding) => Ok(binding),
                Done::Written(_) | Done::Deleted | Done::Tombstoned(_) => {
                    Err(Failure::WrongAnswer.into())
                }
            }
        }
    }

    fn delete_binding(
        &self,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let done = self.submit(Op::DeleteBinding {
            source,
            destination,
        });
        async move {
            match done.await? {
                Done::Deleted => Ok(()),
                Done::Written(_) | Done::Created(_) | Done::Tombstoned(_) => {
                    Err(Failure::WrongAnswer.into())
                }
            }
        }
    }

    async fn list_bindings(&self, query: BindingQuery) -> Result<Vec<StoredBinding>, StoreError> {
        let BindingQuery {
            source,
            destination,
            after,
            limit,
        } = query;
        fn ids(entitlement: Option<&pb::EntitlementRef>) -> (Option<&str>, Option<&str>) {
            entitlement.map_or((None, None), |e| {
                (Some(e.app_id.as_str()), Some(e.entitlement_id.as_str()))
            })
        }
        let (source_app, source_entitlement) = ids(source.as_ref());
        let (destination_app, destination_entitlement) = ids(destination.as_ref());
        let (after_source_app, after_source_entitlement) =
            ids(after.as_ref().map(|(source, _)| source));
        let (after_destination_app, after_destination_entitlement) =
            ids(after.as_ref().map(|(_, destination)| destination));
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 9] = [
            &source_app,
            &source_entitlement,
            &destination_app,
            &destination_entitlement,
            &after_source_app,
            &after_source_entitlement,
            &after_destination_app,
            &after_destination_entitlement,
            &limit,
        ];
        let rows = read_retrying!(self.pool, |client| {
            async {
                let statement = client.prepare_cached(queries::LIST_BINDINGS).await?;
                client.query(&statement, &params).await
            }
            .await
        })?;
        rows.iter().map(queries::binding_from_row).collect()
    }

    /// The delete is queued when this is called, before the future is first polled.
    fn delete(
        &self,
        delete: Delete,
    ) -> impl Future<Output = Result<DeleteOutcome, StoreError>> + Send {
        let done = self.submit(Op::Delete(delete));
        async move {
            match done.await? {
                Done::Tombstoned(outcome) => Ok(outcome),
                Done::Written(_) | Done::Created(_) | Done::Deleted => {
                    Err(Failure::WrongAnswer.into())
                }
            }
        }
    }

    async fn list_policies(&self, query: PolicyQuery) -> Result<Vec<StoredRevision>, StoreError> {
        let (after_app, after_entitlement) = query.after.as_ref().map_or(("", ""), |key| {
            (key.app_id.as_str(), key.entitlement_id.as_str())
        });
        let at = queries::seq_param(query.at);
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 5] =
            [&at, &after_app, &after_entitlement, &query.app_id, &limit];
        let rows = read_retrying!(self.pool, |client| {
            async {
                let statement = client.prepare_cached(queries::LIST_POLICIES).await?;
                client.query(&statement, &params).await
            }
            .await
        })?;
        rows.iter().map(queries::revision_from_row).collect()
    }

    async fn list_revisions(&self, query: RevisionQuery) -> Result<Vec<HistoryEntry>, StoreError> {
        let key = &query.entitlement;
        let before = query.before.unwrap_or(i64::MAX);
        let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
        let params: [&(dyn ToSql + Sync); 4] = [&key.app_id, &key.entitlement_id, &before, &limit];
        let rows = read_retrying!(self.pool, |client| {
            async {
                let statement = client.prepare_cached(queries::LIST_REVISIONS).await?;
                client.query(&statement, &params).await
            }
            .await
        })?;
        rows.iter().map(queries::history_from_row).collect()
    }

    fn store_id(&self) -> &str {
        &self.store_id
    }

    async fn head(&self) -> Result<u64, StoreError> {
        let row = read_retrying!(self.pool, |client| {
            async {
                let statement = client.prepare_cached(queries::HEAD).await?;
                client.query_one(&statement, &[]).await
            }
            .await
        })?;
        queries::seq_from_column(row.try_get(0)?)
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.head.subscribe()
    }

    async fn gauges(&self) -> Result<StoreGauges, StoreError> {
        let row = read_retrying!(self.pool, |client| {
            async {
                let statement = client.prepare_cached(queries::COUNTS).await?;
                client.query_one(&statement, &[]).await
            }
            .await
        })?;
        let count = |index: usize| -> Result<u64, StoreError> {
            let count: i64 = row.try_get(index)?;
            Ok(count.max(0) as u64)
        };
        // Read after the query, which itself held one: the scrape's own connection counts.
        let status = self.pool.status();
        Ok(StoreGauges {
            live_policies: count(0)?,
            proxy_bindings: count(1)?,
            connections_in_use: Some(status.size.saturating_sub(status.available) as u64),
        })
    }

    async fn read_changes(&self, after: u64, limit: usize) -> Result<Vec<ChangeSet>, StoreError> {
        let after = queries::seq_param(after);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = read_retrying!(self.pool, |client| {
            async {
                let statement = client.prepare_cached(queries::READ_CHANGES).await?;
                client.query(&statement, &[&after, &limit]).await
            }
            .await
        })?;
        rows.iter().map(queries::change_from_row).collect()
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.follower.stop();
        self.pool.close();
        match self.writer.stop() {
            Some(thread) => match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_panic)) => Err(Failure::WriterStopped.into()),
                Err(err) => Err(Failure::BlockingTask(err).into()),
            },
            None => Ok(()),
        }
    }
}
