//! h2load runs with a pre-encoded gRPC body, and the checks h2load does not do: it counts any
//! HTTP 200 as a success, gRPC errors included, so each body is first sent once with nghttp
//! (`grpc-status: 0` must be in the trailers) and a counted run checks the DATA bytes per reply.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Sample;
use crate::servers::Server;

const HEADERS: [&str; 4] = ["-H", "content-type: application/grpc", "-H", "te: trailers"];

/// What h2load printed that we use.
#[derive(Debug, Default)]
struct Summary {
    rps: f64,
    done: u64,
    succeeded: u64,
    data_bytes: u64,
}

fn number_before(text: &str, suffix: &str) -> Option<f64> {
    let end = text.find(suffix)?;
    text[..end]
        .trim_end()
        .rsplit(|c: char| c.is_whitespace() || c == '(' || c == ',')
        .next()?
        .parse()
        .ok()
}

fn parse_summary(out: &str) -> Summary {
    let mut summary = Summary::default();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("finished in ") {
            summary.rps = number_before(rest, "req/s").unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            summary.done = number_before(rest, " done").unwrap_or(0.0) as u64;
            summary.succeeded = number_before(rest, " succeeded").unwrap_or(0.0) as u64;
        } else if let Some(rest) = line.strip_prefix("traffic: ") {
            // "… headers (space savings 95.12%), 1.23MB (1234567) data"
            summary.data_bytes = number_before(rest, ") data").unwrap_or(0.0) as u64;
        }
    }
    summary
}

fn url(server: &Server, method: &str) -> String {
    format!(
        "{}/provision.v1.ProvisionPolicyService/{method}",
        server.endpoint()
    )
}

/// Sends `body` once with nghttp and fails unless the trailers say `grpc-status: 0`.
pub fn check_status_ok(server: &Server, method: &str, body: &Path) {
    let out = Command::new("nghttp")
        .arg("-v")
        .args(HEADERS)
        .arg("-d")
        .arg(body)
        .arg(url(server, method))
        .output()
        .expect("run nghttp (apt-get install nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    let status: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("grpc-status:"))
        .collect();
    assert!(
        status.len() == 1 && status[0].trim_end().ends_with("grpc-status: 0"),
        "{} {method}: expected grpc-status: 0, nghttp saw {status:?}\n{text}",
        server.label
    );
}

/// Sends `body` `count` times and fails unless every reply carried `reply_frame_bytes` of DATA
/// (an error is trailers-only, with none).
pub fn check_reply_bytes(server: &Server, method: &str, body: &Path, reply_frame_bytes: u64) {
    let count = 200;
    let out = Command::new("h2load")
        .args(["-n", &count.to_string(), "-c", "1", "-m", "1"])
        .args(HEADERS)
        .arg("-d")
        .arg(body)
        .arg(url(server, method))
        .output()
        .expect("run h2load (apt-get install nghttp2-client)");
    let summary = parse_summary(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        (summary.succeeded, summary.data_bytes),
        (count, count * reply_frame_bytes),
        "{} {method}: expected {count} replies of {reply_frame_bytes} bytes",
        server.label
    );
}

/// How an h2load process spreads its calls in flight: `-c connections -m streams -t threads`
/// (each connection `streams` calls at once).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub connections: u32,
    pub streams: u32,
    pub threads: u32,
}

/// The shape of every Get and Validate run against echo and one provisiond: 32 in flight.
pub const SHAPE: Shape = Shape {
    connections: 4,
    streams: 8,
    threads: 1,
};

/// One timed h2load run at [`SHAPE`].
pub fn run(
    server: &Server,
    method: &str,
    body: &Path,
    warm_up: Duration,
    duration: Duration,
    log: &Path,
) -> Sample {
    run_parallel(&[server], SHAPE, method, body, warm_up, duration, log)
}

/// One h2load process of `shape` per server, all at once (h2load takes several URIs only on one
/// host and port): their rates summed, their latencies merged, the servers' CPU summed.
pub fn run_parallel(
    servers: &[&Server],
    shape: Shape,
    method: &str,
    body: &Path,
    warm_up: Duration,
    duration: Duration,
    log: &Path,
) -> Sample {
    let cpu_before: Vec<Duration> = servers.iter().map(|server| server.cpu_time()).collect();
    let started = Instant::now();
    let logs: Vec<_> = (0..servers.len())
        .map(|index| log.with_extension(format!("{index}.log")))
        .collect();
    let children: Vec<_> = servers
        .iter()
        .zip(&logs)
        .map(|(server, log)| {
            Command::new("h2load")
                .args(["-c", &shape.connections.to_string()])
                .args(["-m", &shape.streams.to_string()])
                .args(["-t", &shape.threads.to_string()])
                .arg(format!(
                    "--duration={}",
                    duration.as_secs_f64().round().max(1.0)
                ))
                .arg(format!(
                    "--warm-up-time={}",
                    warm_up.as_secs_f64().round().max(0.0)
                ))
                .args(HEADERS)
                .arg("-d")
                .arg(body)
                .arg(format!("--log-file={}", log.display()))
                .arg(url(server, method))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run h2load")
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|child| child.wait_with_output().expect("wait for h2load"))
        .collect();
    let wall = started.elapsed();
    let cpu: Duration = servers
        .iter()
        .zip(cpu_before)
        .map(|(server, before)| server.cpu_time() - before)
        .sum();
    let mut total = Summary::default();
    for (server, out) in servers.iter().zip(&outputs) {
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = parse_summary(&text);
        assert!(
            summary.rps > 0.0,
            "{} {method}: h2load reported no rate:\n{text}\n{}",
            server.label,
            String::from_utf8_lossy(&out.stderr)
        );
        total.rps += summary.rps;
        total.done += summary.done;
        total.succeeded += summary.succeeded;
    }
    let mut latencies: Vec<u32> = logs.iter().flat_map(|log| read_latencies(log)).collect();
    latencies.sort_unstable();
    Sample {
        rps: total.rps,
        p50_us: provisiond_bench::load::percentile(&latencies, 0.50),
        p99_us: provisiond_bench::load::percentile(&latencies, 0.99),
        cpu_us_per_rpc: cpu_us_per_rpc(cpu, wall, total.rps),
        failed: total.done.saturating_sub(total.succeeded),
    }
}

/// Server CPU per call: the cores it used over the whole run, divided by the rate.
pub fn cpu_us_per_rpc(cpu: Duration, wall: Duration, rps: f64) -> f64 {
    if rps <= 0.0 {
        return 0.0;
    }
    cpu.as_secs_f64() / wall.as_secs_f64() * 1e6 / rps
}

/// The latencies (µs) of the requests answered with HTTP 200: the log's columns are start
/// time, status and latency. Requests cut off by the end of the run have another status.
fn read_latencies(log: &Path) -> Vec<u32> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut columns = line.split_whitespace();
            let _start = columns.next()?;
            let status = columns.next()?;
            let latency = columns.next()?;
            (status == "200").then(|| latency.parse().ok()).flatten()
        })
        .collect()
}
