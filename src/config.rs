//! Command-line flags, each with a `PROVISIOND_*` environment twin.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// provisiond: stores and validates the provision policies of app entitlements over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Config {
    /// Address to serve gRPC on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "PROVISIOND_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Directory of the embedded SQLite store; created if missing.
    #[arg(long, env = "PROVISIOND_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The store: `sqlite` (the embedded default, in --data-dir), or a PostgreSQL URL
    /// (`postgres://user:password@host:5432/database`) that several replicas share. The
    /// tables live in the first schema of the session's search_path (choose one with
    /// `?options=-c%20search_path%3Dmyschema`) and are migrated at start. Connections are
    /// named `provisiond` in pg_stat_activity unless the URL sets `application_name`.
    /// (`--help` never shows the variable's value: the URL may hold a password.)
    #[arg(
        long,
        env = "PROVISIOND_STORE",
        default_value = "sqlite",
        hide_env_values = true
    )]
    pub store: String,

    /// PEM file of the CA (one or more certificates) that a PostgreSQL store's server
    /// certificate must chain to; instead of the system's trusted roots. Naming one requires
    /// TLS, with the host name verified, even under `sslmode=prefer`. The URL's
    /// `sslrootcert=PATH` is the same setting; give one of them.
    #[arg(long, env = "PROVISIOND_STORE_CA_FILE")]
    pub store_ca_file: Option<PathBuf>,

    /// Log format.
    #[arg(long, env = "PROVISIOND_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `provisiond=debug,tower=warn`).
    #[arg(long, env = "PROVISIOND_LOG", default_value = "info")]
    pub log: String,

    /// Serve gRPC server reflection (v1 and v1alpha), for grpcurl and buf curl.
    #[arg(long, env = "PROVISIOND_REFLECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub reflection: bool,

    /// How often the store is probed in the background for gRPC health: a PostgreSQL query, a
    /// write and fsync in the SQLite data dir. A failed or silent probe turns health
    /// NOT_SERVING, the next good one SERVING again. E.g. `5s`, `500ms`.
    #[arg(long, env = "PROVISIOND_HEALTH_PROBE_INTERVAL", default_value = "5s", value_parser = parse_interval)]
    pub health_probe_interval: Duration,

    /// Address to serve Prometheus metrics on, at `/metrics` (HTTP/1.1, OpenMetrics text); off
    /// when unset. Port 0 picks a free port (the bound address is logged as `metrics listening`).
    #[arg(long, env = "PROVISIOND_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// OTLP/gRPC endpoint to export trace spans to (e.g. `http://127.0.0.1:4317`, an
    /// OpenTelemetry Collector); off when unset. One span per RPC, its parent the caller's W3C
    /// `traceparent`, with child spans for validation, the store write and its commit.
    #[arg(long, env = "PROVISIOND_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// How long shutdown waits for in-flight RPCs before closing the store, in seconds.
    #[arg(long, env = "PROVISIOND_SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    pub shutdown_grace_seconds: u64,

    /// The server's TLS certificate chain (PEM). With --tls-key, gRPC is served over TLS 1.2+
    /// only. Reloaded on SIGHUP and when the file changes.
    #[arg(long, env = "PROVISIOND_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "PROVISIOND_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) client certificates must chain to: mTLS, every client must present
    /// one. The principal is the certificate's subject (or its first DNS/URI name).
    #[arg(long, env = "PROVISIOND_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Who may call, one per line: `NAME ROLE sha256:HEX` (see `provisiond hash-token`) or
    /// `NAME ROLE cert:SUBJECT`; roles reader, writer, admin. Reloaded on SIGHUP and on change.
    #[arg(long, env = "PROVISIOND_AUTH_TOKENS_FILE")]
    pub auth_tokens_file: Option<PathBuf>,

    /// How often the TLS and tokens files are checked for changes.
    #[arg(long, env = "PROVISIOND_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub reload_interval: Duration,

    /// Reflection needs a reader's credentials too (by default it is open, like health).
    #[arg(long, env = "PROVISIOND_REFLECTION_REQUIRES_AUTH")]
    pub reflection_requires_auth: bool,

    /// Serve without authentication on an address other than loopback. Without a tokens file
    /// or a client CA, provisiond refuses to do so unless this is given.
    #[arg(long, env = "PROVISIOND_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,

    /// RPCs handled at once across all connections (Watch streams aside); past it
    /// RESOURCE_EXHAUSTED with RetryInfo.
    #[arg(long, env = "PROVISIOND_MAX_CONCURRENT_RPCS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_rpcs: u32,

    /// Open Watch streams per principal; past it RESOURCE_EXHAUSTED with RetryInfo.
    #[arg(long, env = "PROVISIOND_MAX_WATCH_STREAMS_PER_PRINCIPAL", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watch_streams_per_principal: u32,

    /// Open connections, handshaking or established; new ones past it are closed at once.
    #[arg(long, env = "PROVISIOND_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// How long a new connection has to finish its TLS handshake and send the HTTP/2 preface.
    #[arg(long, env = "PROVISIOND_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = parse_interval)]
    pub handshake_timeout: Duration,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print the tokens-file line for a token read from standard input (the token itself is
    /// never written anywhere), e.g. `openssl rand -hex 32 | tee token | provisiond hash-token
    /// --name ci --role writer >> tokens`.
    HashToken {
        /// The principal's name, as logs and revisions will show it.
        #[arg(long)]
        name: String,
        /// reader, writer or admin.
        #[arg(long, value_parser = ["reader", "writer", "admin"])]
        role: String,
    },
}

/// `500ms` or `5s` (or plain seconds), between 10 ms and 1 h.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let (digits, unit) = match text.strip_suffix("ms") {
        Some(millis) => (millis, Duration::from_millis(1)),
        None => (
            text.strip_suffix('s').unwrap_or(text),
            Duration::from_secs(1),
        ),
    };
    let count: u32 = digits
        .parse()
        .map_err(|_| format!("expected a duration such as 5s or 500ms, got {text:?}"))?;
    let interval = unit * count;
    if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&interval) {
        return Err(format!("must be between 10ms and 3600s, got {text:?}"));
    }
    Ok(interval)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The defaults with the given data dir and a free port: what tests and embedders start from.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.into(),
            store: "sqlite".to_owned(),
            store_ca_file: None,
            log_format: LogFormat::Text,
            log: "info".to_owned(),
            reflection: true,
            health_probe_interval: Duration::from_secs(5),
            metrics_listen: None,
            otlp_endpoint: None,
            shutdown_grace_seconds: 10,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_tokens_file: None,
            reload_interval: Duration::from_secs(10),
            reflection_requires_auth: false,
            allow_unauthenticated: false,
            max_concurrent_rpcs: 1024,
            max_watch_streams_per_principal: 1000,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(5),
            command: None,
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_defaults_hold() {
        Config::command_check();
        let config = Config::parse_from([
            "provisiond",
            "--reflection",
            "false",
            "--log-format",
            "json",
        ]);
        assert!(!config.reflection);
        assert_eq!(config.health_probe_interval, Duration::from_secs(5));
        let fast = Config::parse_from(["provisiond", "--health-probe-interval", "250ms"]);
        assert_eq!(fast.health_probe_interval, Duration::from_millis(250));
        for bad in ["0s", "5m", "-1s", "", "99999s"] {
            assert!(
                Config::try_parse_from(["provisiond", "--health-probe-interval", bad]).is_err(),
                "{bad}"
            );
        }
        assert_eq!(config.store_ca_file, None);
        let tls = Config::parse_from(["provisiond", "--store-ca-file", "/etc/pg/ca.pem"]);
        assert_eq!(tls.store_ca_file, Some(PathBuf::from("/etc/pg/ca.pem")));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.listen, "127.0.0.1:50051".parse().unwrap());
        assert_eq!(config.metrics_listen, None);
        let metered = Config::parse_from(["provisiond", "--metrics-listen", "127.0.0.1:0"]);
        assert_eq!(metered.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(config.otlp_endpoint, None);
        let traced = Config::parse_from(["provisiond", "--otlp-endpoint", "http://127.0.0.1:4317"]);
        assert_eq!(
            traced.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4317")
        );
    }

    impl Config {
        fn command_check() {
            use clap::CommandFactory;
            Config::command().debug_assert();
        }
    }
}
