//! A schema of its own in the test PostgreSQL database (`PROVISIOND_TEST_POSTGRES_URL`), and
//! provisiond processes (replicas) serving from it.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::NoTls;

pub const URL_VARIABLE: &str = "PROVISIOND_TEST_POSTGRES_URL";

/// A schema created for one test, dropped at its end (kept, and named, if the test failed).
pub struct TestSchema {
    url: String,
    pub name: String,
}

impl TestSchema {
    /// `None`, after printing why, when no test database is configured.
    pub fn create() -> Option<Self> {
        let Ok(url) = std::env::var(URL_VARIABLE) else {
            eprintln!(
                "skipped: {URL_VARIABLE} is not set (e.g. postgres://postgres@127.0.0.1:5432/test \
                 runs the PostgreSQL tests)"
            );
            return None;
        };
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pgproc_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let schema = Self { url, name };
        schema.execute_blocking(format!(
            "DROP SCHEMA IF EXISTS {0} CASCADE; CREATE SCHEMA {0}",
            schema.name
        ));
        Some(schema)
    }

    /// The `--store` URL of the replicas: this schema, and an application name of its own so
    /// that a test ends only its own sessions.
    pub fn store_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}&application_name={}",
            self.url,
            self.name,
            self.application_name()
        )
    }

    pub fn application_name(&self) -> String {
        format!("provisiond-{}", self.name)
    }

    /// A connection of the test itself.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    /// Ends every session of the replicas of this schema (what an operator's
    /// `pg_terminate_backend` does), waiting until they are gone; returns how many there were.
    pub async fn terminate_sessions(&self) -> i64 {
        self.client()
            .await
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))
                 FROM pg_stat_activity WHERE application_name = $1",
                &[&self.application_name()],
            )
            .await
            .expect("terminate sessions")
            .get(0)
    }

    /// Runs `sql` from a thread of its own: usable from `drop`, inside or outside a runtime.
    fn execute_blocking(&self, sql: String) {
        let url = self.url.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, NoTls)
                    .await
                    .expect("connect to the test database");
                let connection = tokio::spawn(connection);
                client.batch_execute(&sql).await.expect("schema SQL");
                drop(client);
                let _ = connection.await;
            });
        })
        .join()
        .expect("the SQL thread panicked");
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the failed test's data is kept in schema {}", self.name);
            return;
        }
        self.execute_blocking(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name));
    }
}

/// A provisiond process on a PostgreSQL store: the same harness as the SQLite process tests.
pub use super::process::{Process as Replica, Started};

/// Starts the built binary with `--store store` on 127.0.0.1:0.
pub fn start(store: &str) -> Started {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provisiond"));
    command
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--store"])
        .arg(store)
        .env_remove("PROVISIOND_STORE")
        .env_remove("PROVISIOND_DATA_DIR");
    super::process::start_command(command)
}

pub fn start_listening(store: &str) -> Replica {
    match start(store) {
        Started::Listening(replica) => replica,
        Started::Exited { status, log } => panic!("provisiond exited ({status}): {log:#?}"),
    }
}

/// A client of `replica`'s gRPC endpoint.
pub async fn client_of(replica: &Replica) -> super::Client {
    super::Client::connect(replica.endpoint())
        .await
        .expect("connect")
}
