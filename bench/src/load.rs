//! The Set load generator. h2load sends one fixed body, and SQLite skips a rewrite of identical
//! bytes, so Set is driven from here: every call writes another key with a value never sent
//! before, over a fixed number of connections and calls in flight, and every non-OK status is
//! counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;
use serde_json::json;
use tonic::transport::Channel;

use crate::fixtures;

/// How a Set load run is shaped.
#[derive(Debug, Clone)]
pub struct SetLoad {
    pub endpoint: String,
    pub connections: usize,
    pub in_flight: usize,
    pub warm_up: Duration,
    pub duration: Duration,
    /// Keys `first_key .. first_key + keys` are written in turn.
    pub first_key: u64,
    pub keys: u64,
    /// Mixed into every value, so that no run repeats the values of another.
    pub salt: u64,
}

/// What a run measured, over `duration` only (calls that started during warm-up are not counted).
#[derive(Debug, Clone, Default)]
pub struct SetResult {
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// The first non-OK status seen, to say why calls failed.
    pub first_error: Option<String>,
}

impl SetResult {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "ok": self.ok,
            "failed": self.failed,
            "seconds": self.seconds,
            "rps": self.rps,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "first_error": self.first_error,
        })
    }

    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        Some(Self {
            ok: value.get("ok")?.as_u64()?,
            failed: value.get("failed")?.as_u64()?,
            seconds: value.get("seconds")?.as_f64()?,
            rps: value.get("rps")?.as_f64()?,
            p50_us: value.get("p50_us")?.as_f64()?,
            p99_us: value.get("p99_us")?.as_f64()?,
            first_error: value
                .get("first_error")
                .and_then(|e| e.as_str())
                .map(str::to_owned),
        })
    }
}

/// The request of call number `sequence`.
pub fn set_request(load: &SetLoad, sequence: u64) -> pb::SetProvisionPolicyRequest {
    let key = fixtures::entitlement(load.first_key + sequence % load.keys.max(1));
    pb::SetProvisionPolicyRequest {
        policy: Some(fixtures::five_step(
            key,
            load.salt.wrapping_mul(1 << 32) + sequence,
        )),
        etag: String::new(),
        validate_only: false,
        create_only: false,
        change_cause: String::new(),
    }
}

/// Runs `load` on the current runtime and returns what it measured.
pub async fn run(load: SetLoad) -> Result<SetResult, tonic::transport::Error> {
    let mut channels = Vec::with_capacity(load.connections);
    for _ in 0..load.connections.max(1) {
        channels.push(
            Channel::from_shared(load.endpoint.clone())
                .expect("endpoint is a URI")
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    let load = Arc::new(load);
    let sequence = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measured_from = start + load.warm_up;
    let end = measured_from + load.duration;
    let mut tasks = Vec::with_capacity(load.in_flight);
    for caller in 0..load.in_flight.max(1) {
        let mut client =
            ProvisionPolicyServiceClient::new(channels[caller % channels.len()].clone());
        let (load, sequence) = (Arc::clone(&load), Arc::clone(&sequence));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None);
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let request = set_request(&load, sequence.fetch_add(1, Ordering::Relaxed));
                let answer = client.set_provision_policy(request).await;
                if sent < measured_from {
                    continue;
                }
                latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                match answer {
                    Ok(_) => ok += 1,
                    Err(status) => {
                        failed += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{:?}: {}", status.code(), status.message())
                        });
                    }
                }
            }
            (latencies, ok, failed, first_error)
        }));
    }
    let mut all = Vec::new();
    let mut result = SetResult::default();
    for task in tasks {
        let (latencies, ok, failed, first_error) = task.await.expect("load task");
        all.extend(latencies);
        result.ok += ok;
        result.failed += failed;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
    }
    // The last calls end after `end`: the window is until the last answer.
    result.seconds = measured_from.elapsed().as_secs_f64();
    result.rps = (result.ok + result.failed) as f64 / result.seconds;
    all.sort_unstable();
    result.p50_us = percentile(&all, 0.50);
    result.p99_us = percentile(&all, 0.99);
    Ok(result)
}

/// The `q` quantile of sorted `values` (nearest rank), 0 for none.
pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}
