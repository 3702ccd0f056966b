//! A schema of its own in the test PostgreSQL database (`PROVISIOND_TEST_POSTGRES_URL`), and
//! provisiond processes (replicas) serving from it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

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

/// A running provisiond process on a PostgreSQL store, and the address it logged.
pub struct Replica {
    child: Child,
    pub address: SocketAddr,
}

/// How a start ended: listening, or exited with its log.
pub enum Started {
    Listening(Replica),
    Exited {
        status: ExitStatus,
        log: Vec<String>,
    },
}

/// Long enough for a loaded 2-core CI machine; only bounds a hang, never measures speed.
const START_LIMIT: Duration = Duration::from_secs(60);

/// Starts the built binary with `--store store` on 127.0.0.1:0.
pub fn start(store: &str) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_provisiond"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--store"])
        .arg(store)
        .env_remove("PROVISIOND_STORE")
        .env_remove("PROVISIOND_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn provisiond");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, log) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        match log.recv_timeout(START_LIMIT) {
            Ok(line) => {
                if let Some(address) = listening_address(&line) {
                    // Keep draining stderr so the process never blocks on a full pipe.
                    std::thread::spawn(move || for _ in log {});
                    return Started::Listening(Replica { child, address });
                }
                seen.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("wait");
                return Started::Exited { status, log: seen };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("provisiond neither listened nor exited: {seen:#?}");
            }
        }
    }
}

pub fn start_listening(store: &str) -> Replica {
    match start(store) {
        Started::Listening(replica) => replica,
        Started::Exited { status, log } => panic!("provisiond exited ({status}): {log:#?}"),
    }
}

/// The address of the JSON log line `{"fields":{"message":"listening","address":"…"}}`.
fn listening_address(line: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    fields.get("address")?.as_str()?.parse().ok()
}

impl Replica {
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
