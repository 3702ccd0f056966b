//! The built `provisiond` binary as a child process, for restart, signal and crash tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running provisiond process and the address it logged.
pub struct Process {
    pub child: Child,
    pub address: SocketAddr,
    /// Where `/metrics` is served, when started with `--metrics-listen`.
    pub metrics_address: Option<SocketAddr>,
    log: mpsc::Receiver<String>,
}

/// How a start ended: the address the process listens on, or its exit and its log.
pub enum Started {
    Listening(Process),
    Exited {
        status: ExitStatus,
        log: Vec<String>,
    },
}

/// Long enough for a loaded 2-core CI machine; only bounds a hang, never measures speed.
const START_LIMIT: Duration = Duration::from_secs(60);

pub fn start(data_dir: &Path) -> Started {
    start_with_args(data_dir, &[])
}

/// [`start`] with more flags.
pub fn start_with_args(data_dir: &Path, args: &[&str]) -> Started {
    let mut command = Command::new(env!("CARGO_BIN_EXE_provisiond"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(args)
        .env_remove("PROVISIOND_STORE");
    start_command(command)
}

/// Starts `command` (the binary with its flags and environment) and waits for its address.
pub fn start_command(mut command: Command) -> Started {
    let mut child = command
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
    let mut metrics_address = None;
    loop {
        match log.recv_timeout(START_LIMIT) {
            Ok(line) => {
                if let Some(address) = logged_address(&line, "listening") {
                    return Started::Listening(Process {
                        child,
                        address,
                        metrics_address,
                        log,
                    });
                }
                // Logged before the gRPC `listening` line.
                if let Some(address) = logged_address(&line, "metrics listening") {
                    metrics_address = Some(address);
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

pub fn start_listening(data_dir: &Path) -> Process {
    match start(data_dir) {
        Started::Listening(process) => process,
        Started::Exited { status, log } => panic!("provisiond exited ({status}): {log:#?}"),
    }
}

/// The address of the JSON log line `{"fields":{"message":"<message>","address":"…"}}`.
fn logged_address(line: &str, message: &str) -> Option<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != message {
        return None;
    }
    fields.get("address")?.as_str()?.parse().ok()
}

impl Process {
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGTERM, then the exit status and every log line after the listening line.
    pub fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        self.signal("TERM");
        let status = self.child.wait().expect("wait");
        (status, self.log.try_iter().collect())
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn crash(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
