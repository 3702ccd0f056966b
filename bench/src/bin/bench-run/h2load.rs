//! h2load runs with a pre-encoded gRPC body, and the checks h2load does not do: it counts any
//! HTTP 200 as a success, gRPC errors included, so each body is first sent once with nghttp
//! (`grpc-status: 0` must be in the trailers) and a counted run checks the DATA bytes per reply.

use std::path::Path;
use std::process::Command;
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

/// One timed h2load run at `-c 4 -m 8 -t 1` (32 in flight).
pub fn run(
    server: &Server,
    method: &str,
    body: &Path,
    warm_up: Duration,
    duration: Duration,
    log: &Path,
) -> Sample {
    let cpu_before = server.cpu_time();
    let started = Instant::now();
    let out = Command::new("h2load")
        .args(["-c", "4", "-m", "8", "-t", "1"])
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
        .output()
        .expect("run h2load");
    let wall = started.elapsed();
    let cpu = server.cpu_time() - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = parse_summary(&text);
    assert!(
        summary.rps > 0.0,
        "{} {method}: h2load reported no rate:\n{text}\n{}",
        server.label,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut latencies = read_latencies(log);
    latencies.sort_unstable();
    Sample {
        rps: summary.rps,
        p50_us: provisiond_bench::load::percentile(&latencies, 0.50),
        p99_us: provisiond_bench::load::percentile(&latencies, 0.99),
        cpu_us_per_rpc: cpu_us_per_rpc(cpu, wall, summary.rps),
        failed: summary.done.saturating_sub(summary.succeeded),
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
