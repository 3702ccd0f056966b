//! The servers under test as child processes: start on a free port, wait until health answers
//! SERVING (that wait is the startup time), read CPU time and memory from /proc, stop by SIGTERM.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The service whose health says the server is ready, in provisiond and in the echo server.
const SERVICE: &str = "provision.v1.ProvisionPolicyService";

/// Bounds a hang only; a start that takes this long is a failure, not a figure.
const START_LIMIT: Duration = Duration::from_secs(120);

pub struct Server {
    pub label: &'static str,
    pub child: Child,
    pub port: u16,
    /// From spawning the process until health answered SERVING.
    pub startup: Duration,
}

/// A port that was free a moment ago. Both servers are told their port (rather than logging a
/// port 0 choice) so that provisiond can run at `--log warn`, as a benchmark should.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port")
        .port()
}

impl Server {
    /// provisiond on `data_dir`, logging warnings and errors to `log`.
    pub async fn provisiond(binary: &Path, data_dir: &Path, log: &Path) -> Self {
        let port = free_port();
        let mut command = provisiond_command(binary, port);
        command.arg("--data-dir").arg(data_dir);
        Self::start("provisiond", command, port, log).await
    }

    /// provisiond on the PostgreSQL store `url` (`--store`), logging as [`Self::provisiond`].
    pub async fn provisiond_postgres(binary: &Path, url: &str, log: &Path) -> Self {
        let port = free_port();
        let mut command = provisiond_command(binary, port);
        command.args(["--store", url]);
        Self::start("provisiond (PostgreSQL)", command, port, log).await
    }

    pub async fn echo(binary: &Path, log: &Path) -> Self {
        let port = free_port();
        let mut command = Command::new(binary);
        command.args(["--listen", &format!("127.0.0.1:{port}")]);
        Self::start("echo", command, port, log).await
    }

    async fn start(label: &'static str, mut command: Command, port: u16, log: &Path) -> Self {
        let log_file = File::create(log).expect("create the server log");
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file);
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {label}: {err}"));
        let endpoint = format!("http://127.0.0.1:{port}");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                panic!(
                    "{label} exited ({status}) before serving; its log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            if serving(&endpoint).await {
                break;
            }
            if started.elapsed() > START_LIMIT {
                let _ = child.kill();
                panic!("{label} did not serve within {START_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Self {
            label,
            startup: started.elapsed(),
            child,
            port,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User plus system CPU time the process has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(&self.pid().to_string())
    }

    /// (VmRSS, VmHWM) in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
                .map_or(0, |kib| kib * 1024)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, then waits; provisiond drains and closes its store (checkpointing the WAL).
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let status = self.child.wait().expect("wait");
        if !status.success() {
            eprintln!("warning: {} exited with {status}", self.label);
        }
    }
}

/// User plus system CPU time process `pid` (or `self`) has used so far.
pub fn cpu_time_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5), here at 11 and 12 (state is 0).
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

fn provisiond_command(binary: &Path, port: u16) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--log", "warn", "--log-format", "json"])
        .env_remove("PROVISIOND_STORE")
        .env_remove("PROVISIOND_LOG");
    command
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn serving(endpoint: &str) -> bool {
    let Ok(channel) = tonic::transport::Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: SERVICE.to_owned(),
        })
        .await
        .is_ok_and(|answer| answer.into_inner().status == ServingStatus::Serving as i32)
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Where the binaries built with this one live (`target/release`).
pub fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe.parent().expect("exe dir").join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first (`make bench` does)",
        path.display()
    );
    path
}
