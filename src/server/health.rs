//! Health that tells the truth: the store is probed in the background at an interval, and the
//! gRPC health status follows the probes (a Check reads the status, never the database). A
//! probe that fails, or takes longer than the interval, turns it NOT_SERVING; the next good one
//! SERVING again. Each transition is logged once.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::metrics::Metrics;
use crate::store::Store;

/// The names health reports for: the whole server and the policy service.
const SERVICES: [&str; 2] = ["", "provision.v1.ProvisionPolicyService"];

/// Starts probing; the task runs until aborted.
pub fn spawn_probe<S: Store>(
    store: Arc<S>,
    health: HealthReporter,
    interval: Duration,
    metrics: Metrics,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut serving = true;
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let probed = tokio::time::timeout(interval, store.probe()).await;
            let healthy = matches!(probed, Ok(Ok(())));
            if healthy == serving {
                continue;
            }
            serving = healthy;
            metrics.health(healthy);
            let status = if healthy {
                tracing::info!("the store answers again: health is SERVING");
                ServingStatus::Serving
            } else {
                match probed {
                    Ok(Err(error)) => tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        "the store probe failed: health is NOT_SERVING"
                    ),
                    _ => tracing::warn!(
                        ?interval,
                        "the store probe timed out: health is NOT_SERVING"
                    ),
                }
                ServingStatus::NotServing
            };
            for service in SERVICES {
                health.set_service_status(service, status).await;
            }
        }
    })
}
