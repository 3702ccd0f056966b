//! The files security reads (certificate, key, client CA, tokens), loaded at start and again on
//! SIGHUP and whenever they change (checked every `--reload-interval`). A reload is all or
//! nothing per kind: a bad new certificate pair or a malformed tokens file is refused with a log
//! line and the old one keeps serving. A bad file at start is an error: the server does not
//! start on half a configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;

use super::tls::{self, TlsError, TlsFiles};
use super::tokens::{Tokens, TokensError};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot read --auth-tokens-file {path}: {source}")]
    TokensRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--auth-tokens-file {path}, {source}")]
    Tokens { path: PathBuf, source: TokensError },
}

/// What is loaded, shared with the acceptor and the auth layer.
pub struct Security {
    pub tls_files: Option<TlsFiles>,
    pub tls: Option<Arc<ArcSwap<ServerConfig>>>,
    pub tokens_file: Option<PathBuf>,
    pub tokens: Option<Arc<ArcSwap<Tokens>>>,
}

impl Security {
    pub fn load(
        tls_files: Option<TlsFiles>,
        tokens_file: Option<PathBuf>,
    ) -> Result<Self, SecurityError> {
        let tls = match &tls_files {
            Some(files) => Some(Arc::new(ArcSwap::new(tls::load(files)?))),
            None => None,
        };
        let tokens = match &tokens_file {
            Some(path) => Some(Arc::new(ArcSwap::from_pointee(read_tokens(path)?))),
            None => None,
        };
        Ok(Self {
            tls_files,
            tls,
            tokens_file,
            tokens,
        })
    }

    pub fn mtls(&self) -> bool {
        self.tls_files
            .as_ref()
            .is_some_and(|files| files.client_ca.is_some())
    }

    /// Reloads on SIGHUP and on change until aborted.
    pub fn spawn_reloader(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let security = Arc::clone(self);
        // Installed before this returns (and so before the `listening` line): a SIGHUP sent
        // right after start must reload, not take the default action and end the process.
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        tokio::spawn(async move {
            let mut seen = security.fingerprints();
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hangup_received = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup_received = std::future::pending::<Option<()>>();
                let forced = tokio::select! {
                    _ = hangup_received => true,
                    _ = tick.tick() => false,
                };
                let now = security.fingerprints();
                if forced || now.tls != seen.tls {
                    security.reload_tls();
                }
                if forced || now.tokens != seen.tokens {
                    security.reload_tokens();
                }
                seen = now;
            }
        })
    }

    fn reload_tls(&self) {
        let (Some(files), Some(current)) = (&self.tls_files, &self.tls) else {
            return;
        };
        match tls::load(files) {
            Ok(config) => {
                current.store(config);
                tracing::info!(cert = %files.cert.display(), "TLS configuration reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "TLS reload refused; the previous certificate keeps serving");
            }
        }
    }

    fn reload_tokens(&self) {
        let (Some(path), Some(current)) = (&self.tokens_file, &self.tokens) else {
            return;
        };
        match read_tokens(path) {
            Ok(tokens) => {
                let principals = tokens.len();
                current.store(Arc::new(tokens));
                tracing::info!(path = %path.display(), principals, "tokens file reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "tokens reload refused; the previous tokens stay in force");
            }
        }
    }

    fn fingerprints(&self) -> Fingerprints {
        Fingerprints {
            tls: self.tls_files.as_ref().map(|files| {
                let mut paths = vec![fingerprint(&files.cert), fingerprint(&files.key)];
                paths.extend(files.client_ca.as_deref().map(fingerprint));
                paths
            }),
            tokens: self.tokens_file.as_deref().map(fingerprint),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Fingerprints {
    tls: Option<Vec<Fingerprint>>,
    tokens: Option<Fingerprint>,
}

/// Enough to notice a file written in place or replaced by a rename (as Kubernetes does with
/// mounted secrets).
type Fingerprint = Option<(SystemTime, u64, u64)>;

fn fingerprint(path: &Path) -> Fingerprint {
    let metadata = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
    #[cfg(not(unix))]
    let inode = 0;
    Some((metadata.modified().ok()?, metadata.len(), inode))
}

fn read_tokens(path: &Path) -> Result<Tokens, SecurityError> {
    let text = std::fs::read_to_string(path).map_err(|source| SecurityError::TokensRead {
        path: path.to_owned(),
        source,
    })?;
    Tokens::parse(&text).map_err(|source| SecurityError::Tokens {
        path: path.to_owned(),
        source,
    })
}
