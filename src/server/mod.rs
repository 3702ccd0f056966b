//! `serve`: the one entry point that `main` and the tests use. It opens the store, wires the
//! policy service, health and reflection, serves until `shutdown`, drains, and closes the store.
//! Transport concerns are layers around the services (`request_log.rs`).

mod health;
pub mod principal;
pub mod request_log;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

use crate::config::Config;
use crate::pb;
use crate::pb::provision_policy_service_server::ProvisionPolicyServiceServer;
use crate::service::PolicyService;
use crate::store::Store;
use crate::store::postgres::{self, PostgresStore};
use crate::store::sqlite::{OpenError, SqliteStore};

/// Requests larger than this are refused by tonic (OUT_OF_RANGE) before any of our code runs.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("unknown store {0:?}: expected `sqlite` or a `postgres://` URL")]
    UnknownStore(String),
    #[error("cannot open the store: {0}")]
    Open(#[from] OpenError),
    #[error("cannot open the PostgreSQL store: {0}")]
    OpenPostgres(#[from] postgres::OpenError),
    #[error("cannot build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot read the listener address: {0}")]
    Address(#[from] std::io::Error),
    #[error("transport failure: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot close the store: {0}")]
    Close(#[from] crate::store::StoreError),
}

/// Serves provisiond on `listener` until `shutdown` completes, then drains in-flight RPCs for at
/// most `config.shutdown_grace()` and closes the store.
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    match config.store.as_str() {
        "sqlite" => {
            let store = SqliteStore::open(&config.data_dir)?;
            tracing::info!(data_dir = %config.data_dir.display(), "opened the SQLite store");
            serve_store(listener, Arc::new(store), config, shutdown).await
        }
        url if postgres::is_url(url) => {
            let store = PostgresStore::open(url, config.store_ca_file.as_deref()).await?;
            tracing::info!(database = store.target(), "opened the PostgreSQL store");
            serve_store(listener, Arc::new(store), config, shutdown).await
        }
        other => Err(ServeError::UnknownStore(redacted(other))),
    }
}

/// A `--store` value fit for a log: a URL loses everything after its scheme (it may hold a
/// password).
fn redacted(store: &str) -> String {
    match store.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => store.to_owned(),
    }
}

async fn serve_store<S: Store>(
    listener: TcpListener,
    store: Arc<S>,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let address = listener.local_addr()?;
    // Watch streams never end on their own: they end when this turns true, each with a final
    // checkpoint, so that draining does not wait on them for the whole grace period.
    let (stopping, shutdown_signal) = tokio::sync::watch::channel(false);
    let service = PolicyService::with_shutdown(store.clone(), shutdown_signal);
    let policy_service =
        ProvisionPolicyServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ProvisionPolicyServiceServer<PolicyService<S>>>()
        .await;
    let probe = health::spawn_probe(store.clone(), health.clone(), config.health_probe_interval);
    let (reflection_v1, reflection_v1alpha) = if config.reflection {
        (
            Some(reflection()?.build_v1()?),
            Some(reflection()?.build_v1alpha()?),
        )
    } else {
        (None, None)
    };

    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(256))
        .http2_max_pending_accept_reset_streams(Some(64))
        .trace_fn(|request| tracing::info_span!("rpc", path = %request.uri().path()))
        .layer(request_log::RequestLogLayer)
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(policy_service)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stopped.await;
            },
        );
    tokio::pin!(server);
    // Tests and the process harness read this line to learn the port when listening on port 0.
    tracing::info!(%address, "listening");

    tokio::select! {
        result = &mut server => result?,
        () = shutdown => {
            tracing::info!("shutting down: not serving, draining in-flight RPCs");
            probe.abort();
            health.set_not_serving::<ProvisionPolicyServiceServer<PolicyService<S>>>().await;
            health.set_service_status("", ServingStatus::NotServing).await;
            stopping.send_replace(true);
            let _ = stop_accepting.send(());
            match tokio::time::timeout(config.shutdown_grace(), &mut server).await {
                Ok(result) => result?,
                Err(_) => tracing::warn!(grace = ?config.shutdown_grace(), "grace period over; closing with RPCs in flight"),
            }
        }
    }
    probe.abort();
    store.close().await?;
    tracing::info!("store closed; bye");
    Ok(())
}

/// Reflection over our protos and the ones clients need to render errors and health.
fn reflection() -> Result<tonic_reflection::server::Builder<'static>, ServeError> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET))
}
