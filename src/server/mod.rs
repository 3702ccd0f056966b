//! `serve`: the one entry point that `main` and the tests use. It opens the store, wires the
//! policy service, health and reflection, serves until `shutdown`, drains, and closes the store.
//! Transport concerns are layers around the services, outermost first: the RPC's trace span,
//! metrics, the request log, auth (`auth.rs` with `roles.rs`), limits; under them all, our own acceptor
//! (`connections.rs`) terminates TLS so that certificates reload (`reload.rs`).

mod auth;
pub mod connections;
mod health;
mod limits;
pub mod metrics;
pub mod principal;
mod reload;
pub mod request_log;
pub mod roles;
mod status;
pub mod tls;
pub mod tokens;
pub mod trace;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use self::metrics::{Metrics, MetricsLayer, Refresh};
use crate::config::Config;
use crate::pb;
use crate::pb::provision_policy_service_server::ProvisionPolicyServiceServer;
use crate::service::{PolicyService, WithEncodedGet};
use crate::store::Store;
use crate::store::metrics::{Observed, StoreBackend, StoreMetrics};
use crate::store::postgres::{self, PostgresStore};
use crate::store::sqlite::{OpenError, SqliteStore};
use connections::Acceptor;
use reload::{Security, SecurityError};
use tls::TlsFiles;

/// Requests larger than this are refused by tonic (OUT_OF_RANGE) before any of our code runs.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// A request's headers together (HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE): far above what any
/// client sends, far below a header meant to exhaust memory.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

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
    #[error("cannot listen for metrics on {address}: {source}")]
    MetricsListen {
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the listener address: {0}")]
    Address(#[from] std::io::Error),
    #[error("transport failure: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot close the store: {0}")]
    Close(#[from] crate::store::StoreError),
    #[error(transparent)]
    Security(#[from] SecurityError),
    #[error(
        "refusing to serve without authentication on {0}, which is not a loopback address: give \
         --auth-tokens-file or --tls-client-ca, or --allow-unauthenticated to accept the risk"
    )]
    Unauthenticated(std::net::SocketAddr),
}

/// Serves provisiond on `listener` until `shutdown` completes, then drains in-flight RPCs for at
/// most `config.shutdown_grace()` and closes the store.
pub async fn serve(
    listener: TcpListener,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    // Refused before the store opens: a misconfigured server must not start at all.
    let security = Security::load(tls_files(config), config.auth_tokens_file.clone())?;
    let address = listener.local_addr()?;
    if security.tokens.is_none()
        && !security.mtls()
        && !address.ip().is_loopback()
        && !config.allow_unauthenticated
    {
        return Err(ServeError::Unauthenticated(address));
    }
    let security = Arc::new(security);
    match config.store.as_str() {
        "sqlite" => {
            let store = SqliteStore::open(&config.data_dir)?;
            tracing::info!(data_dir = %config.data_dir.display(), "opened the SQLite store");
            let metrics = Metrics::new(store.metrics().clone(), StoreBackend::Sqlite);
            serve_store(listener, store, metrics, security.clone(), config, shutdown).await
        }
        url if postgres::is_url(url) => {
            let store = PostgresStore::open(url, config.store_ca_file.as_deref()).await?;
            tracing::info!(database = store.target(), "opened the PostgreSQL store");
            let metrics = Metrics::new(store.metrics().clone(), StoreBackend::Postgres);
            serve_store(listener, store, metrics, security.clone(), config, shutdown).await
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

fn tls_files(config: &Config) -> Option<TlsFiles> {
    Some(TlsFiles {
        cert: config.tls_cert.clone()?,
        key: config.tls_key.clone()?,
        client_ca: config.tls_client_ca.clone(),
    })
}

async fn serve_store<S: Store>(
    listener: TcpListener,
    store: S,
    metrics: Metrics,
    security: Arc<Security>,
    config: &Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let address = listener.local_addr()?;
    let store = Arc::new(Observed::new(store, metrics.store().clone()));
    // Bound before the gRPC port is announced, so that whoever reads the `listening` line can
    // scrape at once. Dropped (and so stopped) when this function returns, whichever way.
    let _metrics_endpoint = match config.metrics_listen {
        Some(metrics_address) => {
            let metrics_listener = TcpListener::bind(metrics_address).await.map_err(|source| {
                ServeError::MetricsListen {
                    address: metrics_address,
                    source,
                }
            })?;
            let refresh = refresh_store_gauges(store.clone(), metrics.store().clone());
            let endpoint = metrics::spawn_endpoint(metrics_listener, metrics.clone(), refresh)?;
            // Tests read this line to learn the metrics port when listening on port 0.
            tracing::info!(address = %endpoint.address, "metrics listening");
            Some(endpoint)
        }
        None => None,
    };
    // Watch streams never end on their own: they end when this turns true, each with a final
    // checkpoint, so that draining does not wait on them for the whole grace period.
    let (stopping, shutdown_signal) = tokio::sync::watch::channel(false);
    let service =
        PolicyService::with_shutdown(store.clone(), shutdown_signal).with_metrics(metrics.clone());
    let policy_service =
        ProvisionPolicyServiceServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES);
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ProvisionPolicyServiceServer<PolicyService<Observed<S>>>>()
        .await;
    let probe = health::spawn_probe(
        store.clone(),
        health.clone(),
        config.health_probe_interval,
        metrics.clone(),
    );
    let (reflection_v1, reflection_v1alpha) = if config.reflection {
        (
            Some(reflection()?.build_v1()?),
            Some(reflection()?.build_v1alpha()?),
        )
    } else {
        (None, None)
    };

    let reloader = security.spawn_reloader(config.reload_interval);
    // Outermost first: the span holds all the rest; metrics count every RPC, also those a
    // later layer refuses.
    let layers = tower::ServiceBuilder::new()
        .layer(trace::TraceLayer)
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(request_log::RequestLogLayer)
        .layer(auth::AuthLayer::new(
            security.tokens.clone(),
            security.mtls(),
            config.reflection_requires_auth,
            metrics.clone(),
        ))
        .layer(limits::LimitLayer::new(
            config.max_concurrent_rpcs as usize,
            config.max_watch_streams_per_principal as usize,
        ))
        .into_inner();
    let incoming = connections::incoming(
        listener,
        Acceptor {
            tls: security.tls.clone(),
            handshake_timeout: config.handshake_timeout,
            max_connections: config.max_connections as usize,
        },
    );
    log_security(&security, address);

    let (stop_accepting, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(256))
        .http2_max_pending_accept_reset_streams(Some(64))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .layer(layers)
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(WithEncodedGet::new(
            policy_service,
            store.clone(),
            MAX_REQUEST_BYTES,
        ))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    // Tests and the process harness read this line to learn the port when listening on port 0.
    tracing::info!(%address, "listening");

    tokio::select! {
        result = &mut server => result?,
        () = shutdown => {
            tracing::info!("shutting down: not serving, draining in-flight RPCs");
            probe.abort();
            health.set_not_serving::<ProvisionPolicyServiceServer<PolicyService<Observed<S>>>>().await;
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
    reloader.abort();
    store.close().await?;
    tracing::info!("store closed; bye");
    Ok(())
}

/// Reads the store's gauges for a scrape: a bounded wait, so a stuck database slows a scrape
/// by at most this and leaves the previous values (the failure is counted in the store errors).
fn refresh_store_gauges<S: Store>(store: Arc<S>, metrics: StoreMetrics) -> Refresh {
    const LIMIT: Duration = Duration::from_secs(2);
    Arc::new(move || {
        let store = store.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            let head = *store.subscribe().borrow();
            match tokio::time::timeout(LIMIT, store.gauges()).await {
                Ok(Ok(gauges)) => metrics.sample(head, gauges),
                Ok(Err(error)) => tracing::debug!(
                    error = &error as &dyn std::error::Error,
                    "metrics: cannot read the store's counts"
                ),
                Err(_) => tracing::debug!(?LIMIT, "metrics: the store's counts timed out"),
            }
        })
    })
}

fn log_security(security: &Security, address: std::net::SocketAddr) {
    let tls = if security.tls.is_some() { "on" } else { "off" };
    match (&security.tokens, security.mtls()) {
        (None, false) => tracing::warn!(
            %address, tls,
            "authentication is OFF: every caller may read and write every policy"
        ),
        (tokens, mtls) => tracing::info!(
            %address, tls, mtls,
            principals = tokens.as_ref().map_or(0, |tokens| tokens.load().len()),
            "authentication on"
        ),
    }
}

/// Reflection over our protos and the ones clients need to render errors and health.
fn reflection() -> Result<tonic_reflection::server::Builder<'static>, ServeError> {
    Ok(tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET))
}
