//! How provisionctl reaches a server: the connection flags (flag > `PROVISIONCTL_*` env >
//! context > default), TLS and mTLS through tonic's rustls (ring), and the Bearer token, read
//! from a file or the environment and never from an argument.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::pb::provision_policy_service_client::ProvisionPolicyServiceClient;

/// The connection flags every subcommand that talks to a server takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Connection {
    /// The server, e.g. `localhost:50051`, `http://127.0.0.1:50051`, `https://provisiond:443`.
    /// Without a scheme: https when --ca-cert is given, else http.
    #[arg(long, env = "PROVISIONCTL_SERVER", global = true)]
    pub server: Option<String>,

    /// A file holding the token sent as `authorization: Bearer …`.
    #[arg(long, env = "PROVISIONCTL_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,

    /// The CA (PEM) the server's certificate must chain to; turns on TLS.
    #[arg(long, env = "PROVISIONCTL_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,

    /// A client certificate (PEM) for mTLS, with --key.
    #[arg(long, env = "PROVISIONCTL_CERT", global = true, requires = "key")]
    pub cert: Option<PathBuf>,

    /// The key (PEM) of --cert.
    #[arg(long, env = "PROVISIONCTL_KEY", global = true, requires = "cert")]
    pub key: Option<PathBuf>,

    /// How long one call may take, e.g. `10s`, `500ms` [default: 10s].
    #[arg(long, env = "PROVISIONCTL_TIMEOUT", global = true, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
}

/// The timeout when neither a flag, the environment nor the context sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The token, when there is one. `PROVISIONCTL_TOKEN` holds a token itself (for CI secrets);
/// --token-file a path to one.
#[derive(Clone, Default)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = ProvisionPolicyServiceClient<InterceptedService<Channel, Token>>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("no server: give --server or PROVISIONCTL_SERVER")]
    NoServer,
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token (from {0}) is empty or not printable ASCII")]
    BadToken(&'static str),
    #[error("{0:?} is not a server address: {1}")]
    Address(String, String),
    #[error("cannot connect to {server}: {source}")]
    Connect {
        server: String,
        source: tonic::transport::Error,
    },
}

impl ConnectError {
    /// The exit code: an unreachable server 4, unreadable files and bad tokens 1, no or a
    /// malformed server address 64 (usage).
    pub fn exit(&self) -> super::Exit {
        use super::Exit;
        match self {
            ConnectError::NoServer | ConnectError::Address(..) => Exit::Usage,
            ConnectError::Read { .. } | ConnectError::BadToken(_) => Exit::Invalid,
            ConnectError::Connect { .. } => Exit::Unreachable,
        }
    }
}

impl Connection {
    /// A client of the server, connected (so that an unreachable server fails here, exit 4).
    pub async fn client(&self) -> Result<Client, ConnectError> {
        let server = self.server.clone().ok_or(ConnectError::NoServer)?;
        let tls = self.ca_cert.is_some() || server.starts_with("https://");
        let uri = if server.contains("://") {
            server.clone()
        } else if tls {
            format!("https://{server}")
        } else {
            format!("http://{server}")
        };
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|error| ConnectError::Address(server.clone(), error.to_string()))?
            .timeout(self.timeout())
            .connect_timeout(self.timeout());
        if tls {
            let mut config = ClientTlsConfig::new();
            if let Some(path) = &self.ca_cert {
                config = config.ca_certificate(Certificate::from_pem(read("--ca-cert", path)?));
            }
            if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
                config = config.identity(Identity::from_pem(
                    read("--cert", cert)?,
                    read("--key", key)?,
                ));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|source| ConnectError::Connect {
                    server: server.clone(),
                    source,
                })?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ConnectError::Connect { server, source })?;
        Ok(
            ProvisionPolicyServiceClient::with_interceptor(channel, self.token()?)
                .max_decoding_message_size(16 << 20),
        )
    }

    /// The timeout of one call (and of connecting).
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    fn token(&self) -> Result<Token, ConnectError> {
        let (text, from) = if let Ok(token) = std::env::var("PROVISIONCTL_TOKEN") {
            (token, "PROVISIONCTL_TOKEN")
        } else if let Some(path) = &self.token_file {
            let bytes = read("--token-file", path)?;
            (String::from_utf8_lossy(&bytes).into_owned(), "--token-file")
        } else {
            return Ok(Token(None));
        };
        let token = text.trim();
        if token.is_empty() {
            return Err(ConnectError::BadToken(from));
        }
        MetadataValue::try_from(format!("Bearer {token}"))
            .map(|value| Token(Some(value)))
            .map_err(|_| ConnectError::BadToken(from))
    }
}

fn read(flag: &'static str, path: &PathBuf) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read {
        flag,
        path: path.clone(),
        source,
    })
}

/// `500ms`, `10s`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, Duration::from_millis(1))
    } else if let Some(s) = text.strip_suffix('s') {
        (s, Duration::from_secs(1))
    } else if let Some(m) = text.strip_suffix('m') {
        (m, Duration::from_secs(60))
    } else {
        (text, Duration::from_secs(1))
    };
    let count: u32 = digits
        .parse()
        .map_err(|_| format!("expected a duration such as 10s or 500ms, got {text:?}"))?;
    if count == 0 {
        return Err("must be more than 0".to_owned());
    }
    Ok(unit * count)
}
