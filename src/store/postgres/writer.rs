//! The writer thread and its group commit. Every mutation of every replica holds one advisory
//! lock for its transaction, which orders them across replicas like SQLite's single writer; so
//! that the lock (and the COMMIT's WAL flush) is paid per batch, not per write, the writer drains
//! every queued mutation into one transaction, a savepoint each, commits once and only then
//! answers each caller.
//!
//! Each mutation that stands takes the next position of the change log inside its savepoint,
//! under the lock, so numbering follows commit order across replicas and a mutation rolled back
//! to its savepoint gives its position back. A batch that wrote something sends its NOTIFY with
//! its COMMIT, and publishes its newest position to this store's subscribers before it answers.
//!
//! The thread owns one connection and a current-thread runtime that drives it: a check is
//! synchronous caller code whose lookups block on queries, which the thread can do without
//! tying up the server's runtime.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prost::Message;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::{self, Failure, OpenError, chain, connection_lost};
use super::locks::{LockKey, changes_channel};
use super::lookup::{Blocker, LookupStatements, run_check};
use super::queries::{self, Statements, id_arrays};
use crate::pb;
use crate::policy;
use crate::store::changes::{self, HeadPublisher};
use crate::store::head::{self, Audit, Head};
use crate::store::metrics::StoreMetrics;
use crate::store::record::clear_output_fields;
use crate::store::{Delete, DeleteOutcome, StoreError, StoredBinding, Write, WriteOutcome};

/// The most mutations one transaction holds: bounds how long the first caller of a batch waits
/// for the others' checks, and how long other replicas wait for the lock. PostgreSQL caches 64
/// subtransaction ids per session; past that, every other session's snapshot taken while the
/// batch is open gets slower (it "overflows"), so a batch stays within one savepoint per id.
const MAX_BATCH: usize = 64;

/// How long the writer waits for one statement before it gives the connection up. The server's
/// own limits below fire first; this one covers a server or network that went silent.
const STATEMENT_LIMIT: Duration = Duration::from_secs(30);

/// A writer waiting this long for the lock fails its batch (UNAVAILABLE) instead of queueing
/// behind a stuck replica; a replica that stalls inside its transaction loses its session (and
/// the lock) after the second limit.
const SESSION_SETTINGS: &str =
    "SET lock_timeout = '20s'; SET idle_in_transaction_session_timeout = '60s'";

/// A mutation the writer applies.
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per mutation; boxing would only add an allocation"
)]
pub(super) enum Op {
    Write(Write),
    /// A tombstone.
    Delete(Delete),
    CreateBinding {
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
        implicit: bool,
    },
    DeleteBinding {
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
    },
}

/// What an [`Op`] came to when the store did not fail.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "moved once per write; boxing would only add an allocation"
)]
pub(super) enum Done {
    Written(WriteOutcome),
    /// What an [`Op::Delete`] came to.
    Tombstoned(DeleteOutcome),
    Created(StoredBinding),
    Deleted,
}

pub(super) type Reply = oneshot::Sender<Result<Done, StoreError>>;

#[allow(
    clippy::large_enum_variant,
    reason = "the small variant exists only in tests"
)]
pub(super) enum Job {
    /// With the caller's span, so that the commit shows in the caller's trace.
    Op(Op, Reply, tracing::Span),
    /// Runs on the writer thread between batches: lets tests hold the writer or reach its
    /// session.
    #[cfg(test)]
    Run(Box<dyn FnOnce(&mut Session) + Send>),
}

/// The handle on the writer thread. Dropping it stops the thread once every queued job is
/// answered.
pub(super) struct Writer {
    jobs: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the thread and its first connection; fails as the connection does. The thread
    /// advances `head` after each commit, before it answers the batch.
    pub(super) async fn spawn(
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        target: String,
        head: HeadPublisher,
        metrics: StoreMetrics,
    ) -> Result<Self, OpenError> {
        let (jobs, queue) = mpsc::channel();
        let (ready, connected) = oneshot::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new()
            .name("provisiond-postgres-writer".into())
            .spawn({
                let commits = Arc::clone(&commits);
                move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(err) => {
                            let _ = ready.send(Err(OpenError::Spawn(err)));
                            return;
                        }
                    };
                    let mut session = Session::new(runtime, config, tls, head, metrics);
                    match session.connect() {
                        Ok(()) => {
                            let _ = ready.send(Ok(()));
                        }
                        Err(err) => {
                            let _ = ready.send(Err(err.into_open_error(target)));
                            return;
                        }
                    }
                    run(session, &queue, &commits);
                }
            })
            .map_err(OpenError::Spawn)?;
        let started = connected
            .await
            .unwrap_or_else(|_| Err(OpenError::Spawn(std::io::Error::other("writer panicked"))));
        let writer = Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            commits,
        };
        started.map(|()| writer)
    }

    /// Queues `job` now, not when the caller first polls: queue order is call order.
    pub(super) fn submit(&self, job: Job) -> Result<(), StoreError> {
        let jobs = self.jobs.lock().unwrap_or_else(PoisonError::into_inner);
        let jobs = jobs.as_ref().ok_or(Failure::Closed)?;
        jobs.send(job).map_err(|_| Failure::WriterStopped.into())
    }

    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Closes the queue and hands back the thread, which exits after answering every job
    /// already queued. `None` once stopped.
    pub(super) fn stop(&self) -> Option<JoinHandle<()>> {
        drop(
            self.jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(thread) = self.stop()
            && thread.join().is_err()
        {
            tracing::error!("the PostgreSQL writer thread panicked");
        }
    }
}

/// Why the writer could not (re)connect.
enum ConnectFailure {
    Postgres(tokio_postgres::Error),
    NoSchema,
}

impl ConnectFailure {
    fn into_open_error(self, target: String) -> OpenError {
        match self {
            Self::Postgres(source) => OpenError::Connect { target, source },
            Self::NoSchema => OpenError::NoSchema,
        }
    }
}

impl From<ConnectFailure> for StoreError {
    fn from(failure: ConnectFailure) -> Self {
        match failure {
            ConnectFailure::Postgres(err) => err.into(),
            ConnectFailure::NoSchema => Failure::NoSchema.into(),
        }
    }
}

/// The writer's connection with what it prepared.
pub(super) struct Conn {
    client: Client,
    statements: Statements,
    /// BEGIN and the write lock, one round trip.
    begin: String,
    /// NOTIFY and COMMIT: other replicas learn of the commit when it happens.
    notify_and_commit: String,
    /// The server process of the connection, for tests that end it.
    #[cfg_attr(not(test), expect(dead_code, reason = "read by tests"))]
    pid: i32,
}

impl Conn {
    fn lookup_statements(&self) -> LookupStatements<'_> {
        LookupStatements {
            delegation_targets: &self.statements.delegation_targets,
            binding_exists: &self.statements.binding_exists,
            dependants: &self.statements.dependants,
        }
    }
}

/// The writer thread's state: its runtime, its connection (`None` until reconnected), and
/// whether the connection was found broken.
pub(super) struct Session {
    runtime: Runtime,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    conn: Option<Conn>,
    broken: Cell<bool>,
    /// The log position of the last mutation of the open transaction that stands, if any.
    last_seq: Cell<Option<u64>>,
    head: HeadPublisher,
    metrics: StoreMetrics,
    /// Runs just before the next COMMIT, with the server process id of the connection.
    #[cfg(test)]
    pub(super) before_commit: Option<Box<dyn FnOnce(i32) + Send>>,
}

/// A revision about to be stored: its encoded resource, its head and who wrote it why.
struct NewRevision<'a> {
    bytes: &'a [u8],
    head: Head,
    audit: Audit<'a>,
}

#[expect(
    clippy::large_enum_variant,
    reason = "moved once per mutation; boxing would only add an allocation"
)]
enum Step {
    /// The job's answer; the transaction goes on.
    Applied(Result<Done, StoreError>),
    /// The transaction is gone; the job failed with this.
    Lost(StoreError),
}

impl Blocker for Session {
    fn block<T>(
        &self,
        query: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        // The timer is made inside `block_on`, in the runtime's context.
        match self
            .runtime
            .block_on(async { tokio::time::timeout(STATEMENT_LIMIT, query).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if connection_lost(&err) {
                    self.broken.set(true);
                }
                Err(err.into())
            }
            Err(_elapsed) => {
                // The statement may still run; the connection is in an unknown state.
                self.broken.set(true);
                Err(Failure::Timeout(STATEMENT_LIMIT).into())
            }
        }
    }
}

impl Session {
    fn new(
        runtime: Runtime,
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        head: HeadPublisher,
        metrics: StoreMetrics,
    ) -> Self {
        Self {
            runtime,
            config,
            tls,
            conn: None,
            broken: Cell::new(false),
            last_seq: Cell::new(None),
            head,
            metrics,
            #[cfg(test)]
            before_commit: None,
        }
    }

    #[cfg(test)]
    pub(super) fn pid(&self) -> Option<i32> {
        self.conn.as_ref().map(|conn| conn.pid)
    }

    fn connect(&mut self) -> Result<(), ConnectFailure> {
        self.conn = None;
        self.broken.set(false);
        let runtime = &self.runtime;
        let (client, connection) = runtime
            .block_on(self.config.connect(self.tls.clone()))
            .map_err(ConnectFailure::Postgres)?;
        runtime.spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %chain(&err), "the PostgreSQL writer connection failed");
            }
        });
        let prepared = runtime.block_on(async {
            client.batch_execute(SESSION_SETTINGS).await?;
            let row = client
                .query_one("SELECT current_schema(), pg_backend_pid()", &[])
                .await?;
            let statements = Statements::prepare(&client).await?;
            Ok::<_, tokio_postgres::Error>((row.try_get(0)?, row.try_get(1)?, statements))
        });
        let (schema, pid, statements): (Option<String>, i32, _) =
            prepared.map_err(ConnectFailure::Postgres)?;
        let schema = schema.ok_or(ConnectFailure::NoSchema)?;
        let lock = LockKey::write(&schema);
        self.conn = Some(Conn {
            client,
            statements,
            begin: format!(
                "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({}, {})",
                lock.class, lock.object
            ),
            notify_and_commit: format!("NOTIFY {}; COMMIT", changes_channel(&schema)),
            pid,
        });
        Ok(())
    }

    fn drop_connection(&mut self) {
        self.conn = None;
        self.broken.set(false);
    }

    /// Opens the batch's transaction and takes the write lock. A connection found broken here
    /// is replaced once at once: nothing of the batch has run, so trying again is safe.
    fn begin(&mut self) -> Result<(), StoreError> {
        self.last_seq.set(None);
        let mut retried = false;
        loop {
            let usable = !self.broken.get()
                && self
                    .conn
                    .as_ref()
                    .is_some_and(|conn| !conn.client.is_closed());
            if !usable {
                if self.conn.is_some() {
                    tracing::warn!("the PostgreSQL writer connection was lost; reconnecting");
                }
                self.connect()?;
            }
            let conn = self.conn.as_ref().expect("connected");
            match self.block(conn.client.batch_execute(&conn.begin)) {
                Ok(()) => return Ok(()),
                Err(_) if self.broken.get() && !retried => retried = true,
                Err(err) => {
                    self.abandon();
                    return Err(err);
                }
            }
        }
    }

    /// Ends a transaction that will not commit: rolled back, or the connection dropped.
    fn abandon(&mut self) {
        if !self.broken.get()
            && let Some(conn) = &self.conn
            && self.block(conn.client.batch_execute("ROLLBACK")).is_ok()
        {
            return;
        }
        self.drop_connection();
    }

    /// One mutation in its own savepoint: whatever does not stand is rolled back to it, leaving
    /// the rest of the batch alone. The savepoint is sent with the job's first statement and
    /// never released (COMMIT keeps what stood; `ROLLBACK TO` finds the innermost savepoint of
    /// the name, the job's own): a plain write costs two round trips, a conflict one.
    fn apply(&self, op: Op) -> Step {
        let conn = self.conn.as_ref().expect("in a transaction");
        let staged = match op {
            Op::Write(write) => self.stage_write(conn, write),
            Op::Delete(delete) => self.stage_tombstone(conn, delete),
            Op::CreateBinding {
                source,
                destination,
                implicit,
            } => self.stage_create(conn, source, destination, implicit),
            Op::DeleteBinding {
                source,
                destination,
            } => self.stage_delete(conn, source, destination),
        };
        let (answer, undo) = match staged {
            Ok((done, undo)) => (Ok(done), undo),
            Err(err) if self.broken.get() => return Step::Lost(err),
            // Each is found before the job changes anything.
            Err(
                err @ (StoreError::RevisionMismatch { .. }
                | StoreError::AlreadyExists
                | StoreError::NotFound
                | StoreError::HasDependants { .. }
                | StoreError::InUse { .. }),
            ) => (Err(err), false),
            Err(err) => (Err(err), true),
        };
        if !undo {
            return Step::Applied(answer);
        }
        match self.block(conn.client.batch_execute("ROLLBACK TO SAVEPOINT job")) {
            Ok(()) => Step::Applied(answer),
            Err(undo_failed) => Step::Lost(answer.err().unwrap_or(undo_failed)),
        }
    }

    /// Preconditions, implicit bindings, check, then the new record, its edges and its log
    /// entry; returns whether the savepoint holds changes to undo (implicit bindings of a write
    /// that does not stand).
    fn stage_write(&self, conn: &Conn, write: Write) -> Result<(Done, bool), StoreError> {
        let Write {
            mut resource,
            delegation_targets,
            implicit_binding_sources,
            expected_revision,
            create_only,
            validate_only,
            check,
            actor,
            change_cause,
        } = write;
        let audit = Audit {
            actor: &actor,
            change_cause: &change_cause,
        };
        clear_output_fields(&mut resource);
        let key = resource
            .entitlement
            .clone()
            .ok_or(Failure::MissingEntitlement)?;
        let (client, statements) = (&conn.client, &conn.statements);
        let key_params: [&(dyn ToSql + Sync); 2] = [&key.app_id, &key.entitlement_id];
        let (_, head) = self.block(async {
            tokio::try_join!(
                client.batch_execute("SAVEPOINT job"),
                client.query_one(&statements.head, &key_params),
            )
        })?;
        let now: i64 = head.try_get(0)?;
        let head = head_of(&head)?;
        head::check_expected(expected_revision, head)?;
        head::check_create_only(create_only, head)?;

        let mut new_bindings = Vec::new();
        if !implicit_binding_sources.is_empty() {
            let (apps, entitlements) = id_arrays(&implicit_binding_sources);
            let rows = self.block(client.query(
                &statements.insert_implicit_bindings,
                &[&apps, &entitlements, &key.app_id, &key.entitlement_id],
            ))?;
            let mut inserted = Vec::with_capacity(rows.len());
            for row in &rows {
                let source = pb::EntitlementRef {
                    app_id: row.try_get(0)?,
                    entitlement_id: row.try_get(1)?,
                };
                inserted.push((source, queries::time_from_micros(row.try_get(2)?)?));
            }
            // In the order the write named them, as SQLite logs them.
            for source in &implicit_binding_sources {
                if let Some(at) = inserted.iter().position(|(s, _)| s == source) {
                    let (source, create_time) = inserted.swap_remove(at);
                    new_bindings.push(StoredBinding {
                        source,
                        destination: key.clone(),
                        implicit: true,
                        create_time,
                    });
                }
            }
        }

        let violations = run_check(check, client, conn.lookup_statements(), self)?;
        let created_bindings = !new_bindings.is_empty();
        if policy::has_errors(&violations) {
            let outcome = WriteOutcome::Rejected { violations };
            return Ok((Done::Written(outcome), created_bindings));
        }

        let new = head::next(head, now, false);
        let mut record = head::record(resource, new, 0, audit, queries::time_from_micros)?;
        if validate_only {
            let outcome = WriteOutcome::Written { record, violations };
            return Ok((Done::Written(outcome), created_bindings));
        }
        let bytes = record.resource.encode_to_vec();
        let mut log = vec![changes::put(&record)];
        log.extend(new_bindings.iter().map(changes::binding_created));
        let payload = changes::encode(log, new.update_time);
        let revision = NewRevision {
            bytes: &bytes,
            head: new,
            audit,
        };
        let seq = self.store_revision(conn, &key, revision, &delegation_targets, &payload)?;
        record.change_seq = seq;
        let outcome = WriteOutcome::Written { record, violations };
        Ok((Done::Written(outcome), false))
    }

    /// Appends revision `new` of `key` (with its delegation `targets`) to the history,
    /// makes it the head, takes the next position of the log and appends `payload` there: one
    /// pipelined round trip. Statements run in order, so the revision and the log entry read
    /// the position the first one took.
    fn store_revision(
        &self,
        conn: &Conn,
        key: &pb::EntitlementRef,
        new: NewRevision<'_>,
        targets: &[pb::EntitlementRef],
        payload: &[u8],
    ) -> Result<u64, StoreError> {
        let NewRevision {
            bytes,
            head: new,
            audit,
        } = new;
        let (client, statements) = (&conn.client, &conn.statements);
        let (apps, entitlements) = id_arrays(targets);
        let key_params: [&(dyn ToSql + Sync); 2] = [&key.app_id, &key.entitlement_id];
        let [app_id, entitlement_id] = key_params;
        let revision_params: [&(dyn ToSql + Sync); 8] = [
            app_id,
            entitlement_id,
            &new.revision,
            &bytes,
            &new.update_time,
            &new.deleted,
            &audit.actor,
            &audit.change_cause,
        ];
        let policy_params: [&(dyn ToSql + Sync); 7] = [
            app_id,
            entitlement_id,
            &bytes,
            &new.revision,
            &new.create_time,
            &new.update_time,
            &new.deleted,
        ];
        let edge_params: [&(dyn ToSql + Sync); 4] = [app_id, entitlement_id, &apps, &entitlements];
        let change_params: [&(dyn ToSql + Sync); 2] = [&new.update_time, &payload];
        let (seq, ..) = self.block(async {
            tokio::try_join!(
                client.query_one(&statements.next_seq, &[]),
                client.execute(&statements.insert_revision, &revision_params),
                client.execute(&statements.upsert_policy, &policy_params),
                client.execute(&statements.delete_edges, &key_params),
                async {
                    if apps.is_empty() {
                        return Ok(0);
                    }
                    client.execute(&statements.insert_edges, &edge_params).await
                },
                client.execute(&statements.append_change, &change_params),
            )
        })?;
        self.took(&seq)
    }

    /// Preconditions, dependants, then the tombstone: the head's resource replaced by the bare
    /// entitlement, its edges dropped, and a DELETE entry carrying the last live resource.
    fn stage_tombstone(&self, conn: &Conn, delete: Delete) -> Result<(Done, bool), StoreError> {
        let Delete {
            entitlement: key,
            expected_revision,
            validate_only,
            allow_missing,
            actor,
            change_cause,
        } = delete;
        let (client, statements) = (&conn.client, &conn.statements);
        let key_params: [&(dyn ToSql + Sync); 2] = [&key.app_id, &key.entitlement_id];
        let (_, head, dependants) = self.block(async {
            tokio::try_join!(
                client.batch_execute("SAVEPOINT job"),
                client.query_one(&statements.delete_head, &key_params),
                client.query(&statements.dependants, &key_params),
            )
        })?;
        let now: i64 = head.try_get(0)?;
        let Some(live) = head_of(&head)?.filter(|head| !head.deleted) else {
            return match allow_missing {
                true => Ok((Done::Tombstoned(DeleteOutcome::Missing), false)),
                false => Err(StoreError::NotFound),
            };
        };
        head::check_expected(expected_revision, Some(live))?;
        let dependents = queries::refs_from_rows(&dependants)?;
        if !dependents.is_empty() {
            return Err(StoreError::HasDependants { dependents });
        }
        let tombstone = head::next(Some(live), now, true);
        if validate_only {
            let outcome = DeleteOutcome::Deleted {
                revision: tombstone.revision,
                change_seq: 0,
            };
            return Ok((Done::Tombstoned(outcome), false));
        }
        let resource = queries::decode_resource(head.try_get(5)?)?;
        let last_seq = queries::seq_from_column(head.try_get(6)?)?;
        let last_audit = Audit {
            actor: head.try_get(7)?,
            change_cause: head.try_get(8)?,
        };
        let last = head::record(
            resource,
            live,
            last_seq,
            last_audit,
            queries::time_from_micros,
        )?;
        let bytes = head::tombstone(&key).encode_to_vec();
        let audit = Audit {
            actor: &actor,
            change_cause: &change_cause,
        };
        let log = vec![changes::delete(tombstone.revision, audit, &last)];
        let payload = changes::encode(log, tombstone.update_time);
        let revision = NewRevision {
            bytes: &bytes,
            head: tombstone,
            audit,
        };
        let seq = self.store_revision(conn, &key, revision, &[], &payload)?;
        let outcome = DeleteOutcome::Deleted {
            revision: tombstone.revision,
            change_seq: seq,
        };
        Ok((Done::Tombstoned(outcome), false))
    }

    fn stage_create(
        &self,
        conn: &Conn,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
        implicit: bool,
    ) -> Result<(Done, bool), StoreError> {
        let client = &conn.client;
        let params: [&(dyn ToSql + Sync); 5] = [
            &source.app_id,
            &source.entitlement_id,
            &destination.app_id,
            &destination.entitlement_id,
            &implicit,
        ];
        let (_, row) = self.block(async {
            tokio::try_join!(
                client.batch_execute("SAVEPOINT job"),
                client.query_opt(&conn.statements.create_binding, &params),
            )
        })?;
        let row = row.ok_or(StoreError::AlreadyExists)?;
        let micros: i64 = row.try_get(0)?;
        let binding = StoredBinding {
            source,
            destination,
            implicit,
            create_time: queries::time_from_micros(micros)?,
        };
        self.log(conn, micros, vec![changes::binding_created(&binding)])?;
        Ok((Done::Created(binding), false))
    }

    fn stage_delete(
        &self,
        conn: &Conn,
        source: pb::EntitlementRef,
        destination: pb::EntitlementRef,
    ) -> Result<(Done, bool), StoreError> {
        let client = &conn.client;
        let params: [&(dyn ToSql + Sync); 4] = [
            &source.app_id,
            &source.entitlement_id,
            &destination.app_id,
            &destination.entitlement_id,
        ];
        let (_, row) = self.block(async {
            tokio::try_join!(
                client.batch_execute("SAVEPOINT job"),
                client.query_one(&conn.statements.delete_binding, &params),
            )
        })?;
        let implicit: Option<bool> = row.try_get(0)?;
        let create_time: Option<i64> = row.try_get(1)?;
        let (used, now): (bool, i64) = (row.try_get(2)?, row.try_get(3)?);
        let (Some(implicit), Some(create_time)) = (implicit, create_time) else {
            return Err(StoreError::NotFound);
        };
        if used {
            // Only the destination's own resource can delegate through a binding into it.
            return Err(StoreError::InUse {
                dependents: vec![destination],
            });
        }
        let binding = StoredBinding {
            source,
            destination,
            implicit,
            create_time: queries::time_from_micros(create_time)?,
        };
        self.log(conn, now, vec![changes::binding_deleted(&binding)])?;
        Ok((Done::Deleted, false))
    }

    /// Takes the next log position and appends `log` there, one round trip.
    fn log(
        &self,
        conn: &Conn,
        commit_time: i64,
        log: Vec<pb::PolicyChange>,
    ) -> Result<u64, StoreError> {
        let (client, statements) = (&conn.client, &conn.statements);
        let payload = changes::encode(log, commit_time);
        let params: [&(dyn ToSql + Sync); 2] = [&commit_time, &payload];
        let (seq, _) = self.block(async {
            tokio::try_join!(
                client.query_one(&statements.next_seq, &[]),
                client.execute(&statements.append_change, &params),
            )
        })?;
        self.took(&seq)
    }

    /// The position `next_seq` returned, remembered as the transaction's newest: the mutation
    /// that took it stands (its statements all succeeded).
    fn took(&self, row: &tokio_postgres::Row) -> Result<u64, StoreError> {
        let seq = queries::seq_from_column(row.try_get(0)?)?;
        self.last_seq.set(Some(seq));
        Ok(seq)
    }

    /// Commits the batch and answers it. A COMMIT that fails, or whose answer is lost with the
    /// connection, fails every job: an outcome we cannot know is never acknowledged.
    fn commit(
        &mut self,
        answers: Vec<(Reply, Result<Done, StoreError>, tracing::Span)>,
        commits: &AtomicU64,
    ) {
        #[cfg(test)]
        if let (Some(hook), Some(pid)) = (self.before_commit.take(), self.pid()) {
            hook(pid);
        }
        let conn = self.conn.as_ref().expect("in a transaction");
        let last_seq = self.last_seq.take();
        let commit = match last_seq {
            Some(_) => conn.notify_and_commit.as_str(),
            None => "COMMIT",
        };
        let commit_spans = crate::store::commit_spans(answers.iter().map(|(_, _, span)| span));
        let started = Instant::now();
        let committed = self.block(conn.client.batch_execute(commit));
        drop(commit_spans);
        match committed {
            Ok(()) => {
                commits.fetch_add(1, Ordering::Relaxed);
                self.metrics.committed(answers.len(), started.elapsed());
                // Before any caller hears of its write, as `Store::subscribe` promises.
                if let Some(seq) = last_seq {
                    self.head.advance(seq);
                }
                for (reply, answer, _) in answers {
                    // The caller may have gone away; its write stands regardless.
                    let _ = reply.send(answer);
                }
            }
            Err(err) => {
                tracing::warn!(
                    error = &err as &dyn std::error::Error,
                    writes = answers.len(),
                    "COMMIT failed; every write of the batch is answered as failed"
                );
                // A failed NOTIFY would leave the transaction open: end it either way.
                self.abandon();
                answer_all_failed(answers.into_iter().map(|(reply, _, _)| reply), err);
            }
        }
    }

    fn close(mut self) {
        self.drop_connection();
    }
}

fn run(mut session: Session, queue: &Receiver<Job>, commits: &AtomicU64) {
    let mut next = None;
    while let Some(job) = next.take().or_else(|| queue.recv().ok()) {
        match job {
            Job::Op(op, reply, span) => {
                let mut batch = vec![(op, reply, span)];
                while batch.len() < MAX_BATCH {
                    match queue.try_recv() {
                        Ok(Job::Op(op, reply, span)) => batch.push((op, reply, span)),
                        #[cfg(test)]
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                commit_batch(&mut session, batch, commits);
            }
            #[cfg(test)]
            Job::Run(task) => task(&mut session),
        }
    }
    session.close();
}

fn commit_batch(
    session: &mut Session,
    batch: Vec<(Op, Reply, tracing::Span)>,
    commits: &AtomicU64,
) {
    let mut jobs = batch.into_iter();
    // Normally one transaction; another only if the first was lost mid-batch.
    while jobs.len() > 0 {
        if let Err(err) = session.begin() {
            tracing::warn!(
                error = &err as &dyn std::error::Error,
                "cannot start a PostgreSQL write transaction"
            );
            return answer_all_failed(jobs.map(|(_, reply, _)| reply), err);
        }
        let mut answers = Vec::with_capacity(jobs.len());
        let mut lost = None;
        for (op, reply, span) in jobs.by_ref() {
            match session.apply(op) {
                Step::Applied(answer) => answers.push((reply, answer, span)),
                Step::Lost(err) => {
                    lost = Some((reply, err));
                    break;
                }
            }
        }
        let Some((reply, cause)) = lost else {
            return session.commit(answers, commits);
        };
        tracing::warn!(
            error = &cause as &dyn std::error::Error,
            "a PostgreSQL write transaction was lost mid-batch"
        );
        let unavailable = matches!(cause, StoreError::Unavailable(_));
        let _ = reply.send(Err(cause));
        // Their writes went with the transaction, and their checks are spent: they fail too.
        // The jobs not yet run get a fresh transaction.
        for (reply, _, _) in answers {
            let rolled_back = Failure::BatchRolledBack;
            let _ = reply.send(Err(if unavailable {
                StoreError::Unavailable(Box::new(rolled_back))
            } else {
                rolled_back.into()
            }));
        }
        session.abandon();
    }
}

/// The precondition of a write or delete; `current` is `None` when there is no live resource.
/// The head columns of a head query's row (revision, create and update time, deleted at 1-4),
/// `None` when the entitlement was never written.
fn head_of(row: &tokio_postgres::Row) -> Result<Option<Head>, StoreError> {
    let revision: Option<i64> = row.try_get(1)?;
    let Some(revision) = revision else {
        return Ok(None);
    };
    Ok(Some(Head {
        revision,
        create_time: row.try_get(2)?,
        update_time: row.try_get(3)?,
        deleted: row.try_get::<_, Option<bool>>(4)?.unwrap_or(false),
    }))
}

fn answer_all_failed(replies: impl Iterator<Item = Reply>, err: StoreError) {
    let each = error::shared(err);
    for reply in replies {
        let _ = reply.send(Err(each()));
    }
}
