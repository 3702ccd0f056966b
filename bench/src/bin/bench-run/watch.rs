//! Watch: 1,000 WatchProvisionPolicies streams on one provisiond (SQLite), multiplexed over 10
//! connections, then Sets at 200/s from another connection. For every (stream, write) pair the
//! latency is from the Set's acknowledgement (its answer arriving here) to the stream's message
//! with that write's cursor; a message that arrives before the answer counts 0. Memory per idle
//! stream: the server's VmRSS with the streams open and nothing written, less its VmRSS before.
//!
//! 1,000 streams is exactly provisiond's default `--max-watch-streams-per-principal` (every
//! stream here is the same anonymous principal) and 100 per connection is under its 256 HTTP/2
//! streams per connection, so provisiond runs with its defaults.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;
use provisiond::policy::tokens::Cursor;
use provisiond_bench::load::{SetLoad, percentile, set_request};
use tonic::transport::Channel;

use crate::servers::{Server, cpu_time_of};
use crate::{Bench, block_on, progress};

pub const STREAMS: usize = 1000;
const CONNECTIONS: usize = 10;
pub const SETS_PER_SECOND: u64 = 200;
/// How long the streams may take to deliver the last write before the missing are counted.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub streams: usize,
    pub seconds: f64,
    /// Sets acknowledged OK, and not.
    pub writes: u64,
    pub failed_writes: u64,
    /// Over every (stream, acknowledged write) pair delivered.
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// (stream, acknowledged write) pairs never delivered within the drain time.
    pub missing: u64,
    /// Streams that ended with an error, and the first error.
    pub stream_errors: u64,
    pub first_error: Option<String>,
    pub rss_before: u64,
    pub rss_streams_open: u64,
    /// CPU seconds from the first Set until delivery ended: the server's, and this process's
    /// (the client reading the streams), to tell which of them the 2 cores were busy with.
    pub server_cpu: f64,
    pub client_cpu: f64,
}

impl Figures {
    pub fn rss_per_stream(&self) -> f64 {
        self.rss_streams_open.saturating_sub(self.rss_before) as f64 / self.streams.max(1) as f64
    }
}

fn seq(cursor: &str) -> Option<u64> {
    Cursor::decode(cursor).map(|cursor| cursor.seq)
}

impl Bench {
    pub(crate) fn watch(&mut self, data: &Path) -> Figures {
        let server = block_on(Server::provisiond(
            &self.tools.provisiond,
            data,
            &self.work.join("provisiond-watch.log"),
        ));
        self.salt += 1;
        let load = SetLoad {
            endpoint: server.endpoint(),
            connections: 1,
            in_flight: 1,
            warm_up: Duration::ZERO,
            duration: Duration::from_secs(self.args.seconds),
            first_key: 1,
            keys: self.args.policies.saturating_sub(1).max(1),
            salt: self.salt,
        };
        // Two workers, as many as the machine's cores: the client decodes 1,000 messages per
        // write and must not be the bottleneck of one thread.
        let figures = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(watch(&server, load));
        progress(format!(
            "watch: {} streams, {} Sets ({} failed) in {:.1} s: p50 {:.2} ms p99 {:.2} ms max {:.2} ms, {} missing, {} stream errors; CPU server {:.1} s, client {:.1} s; RSS {:.1} KiB per idle stream",
            figures.streams,
            figures.writes,
            figures.failed_writes,
            figures.seconds,
            figures.p50_us / 1000.0,
            figures.p99_us / 1000.0,
            figures.max_us / 1000.0,
            figures.missing,
            figures.stream_errors,
            figures.server_cpu,
            figures.client_cpu,
            figures.rss_per_stream() / 1024.0
        ));
        server.stop();
        figures
    }
}

async fn connect(endpoint: &str) -> Channel {
    Channel::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect")
}

/// What one stream saw: (write seq, arrival) per change message, and how it ended.
type Arrivals = (Vec<(u64, Instant)>, Option<String>);

async fn watch(server: &Server, load: SetLoad) -> Figures {
    let mut figures = Figures {
        streams: STREAMS,
        ..Figures::default()
    };
    let endpoint = server.endpoint();
    let mut writer = ProvisionPolicyServiceClient::new(connect(&endpoint).await);
    // Every stream starts from the same cursor, the head now, so each is owed every later write
    // however late the server registers it.
    let start_cursor = writer
        .list_provision_policies(pb::ListProvisionPoliciesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("List for the head cursor")
        .into_inner()
        .read_at;
    figures.rss_before = server.memory().0;

    let mut channels = Vec::new();
    for _ in 0..CONNECTIONS {
        channels.push(connect(&endpoint).await);
    }
    let mut streams = Vec::with_capacity(STREAMS);
    for index in 0..STREAMS {
        let mut client = ProvisionPolicyServiceClient::new(channels[index % CONNECTIONS].clone());
        let stream = client
            .watch_provision_policies(pb::WatchProvisionPoliciesRequest {
                start_cursor: start_cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|status| panic!("open Watch stream {index}: {status:?}"))
            .into_inner();
        streams.push(stream);
    }
    // Let the server settle what opening the streams allocated before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    figures.rss_streams_open = server.memory().0;

    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            let (stop, delivered) = (Arc::clone(&stop), Arc::clone(&delivered));
            tokio::spawn(async move {
                let mut arrivals = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let message =
                        match tokio::time::timeout(Duration::from_millis(100), stream.message())
                            .await
                        {
                            Err(_elapsed) => continue,
                            Ok(Ok(Some(message))) => message,
                            Ok(Ok(None)) => return (arrivals, Some("stream ended".to_owned())),
                            Ok(Err(status)) => return (arrivals, Some(format!("{status:?}"))),
                        };
                    let at = Instant::now();
                    if message.checkpoint || message.changes.is_empty() {
                        continue;
                    }
                    if let Some(seq) = seq(&message.cursor) {
                        arrivals.push((seq, at));
                        delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (arrivals, None)
            })
        })
        .collect::<Vec<tokio::task::JoinHandle<Arrivals>>>();

    // The writer: one Set every 5 ms, each on a task of its own so that a slow answer does not
    // hold the next one back.
    let load = Arc::new(load);
    let (server_cpu, client_cpu) = (server.cpu_time(), cpu_time_of("self"));
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / SETS_PER_SECOND));
    let mut sets = Vec::new();
    let total = load.duration.as_secs() * SETS_PER_SECOND;
    for sequence in 0..total {
        ticks.tick().await;
        let (mut writer, load) = (writer.clone(), Arc::clone(&load));
        sets.push(tokio::spawn(async move {
            let answer = writer
                .set_provision_policy(set_request(&load, sequence))
                .await;
            let at = Instant::now();
            answer.map(|answer| (answer.into_inner().change_cursor, at))
        }));
    }
    let mut acks: HashMap<u64, Instant> = HashMap::new();
    for set in sets {
        match set.await.expect("Set task") {
            Ok((cursor, at)) => {
                acks.insert(seq(&cursor).expect("a change cursor"), at);
            }
            Err(status) => {
                figures.failed_writes += 1;
                figures
                    .first_error
                    .get_or_insert_with(|| format!("Set: {status:?}"));
            }
        }
    }
    figures.seconds = started.elapsed().as_secs_f64();
    figures.writes = acks.len() as u64;

    let owed = figures.writes * STREAMS as u64;
    let drain_until = Instant::now() + DRAIN;
    while delivered.load(Ordering::Relaxed) < owed && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    figures.server_cpu = (server.cpu_time() - server_cpu).as_secs_f64();
    figures.client_cpu = (cpu_time_of("self") - client_cpu).as_secs_f64();

    let mut latencies = Vec::with_capacity(owed as usize);
    for reader in readers {
        let (arrivals, error) = reader.await.expect("stream task");
        let mut seen = 0u64;
        for (seq, at) in arrivals {
            if let Some(ack) = acks.get(&seq) {
                seen += 1;
                let latency = at.saturating_duration_since(*ack).as_micros();
                latencies.push(u32::try_from(latency).unwrap_or(u32::MAX));
            }
        }
        figures.missing += figures.writes.saturating_sub(seen);
        if let Some(error) = error {
            figures.stream_errors += 1;
            figures.first_error.get_or_insert(error);
        }
    }
    latencies.sort_unstable();
    figures.p50_us = percentile(&latencies, 0.50);
    figures.p99_us = percentile(&latencies, 0.99);
    figures.max_us = latencies.last().map_or(0.0, |max| f64::from(*max));
    figures
}
