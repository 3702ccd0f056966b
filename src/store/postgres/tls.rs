//! TLS to PostgreSQL: the `sslmode` and `sslrootcert` of the `--store` URL, and
//! `--store-ca-file`.
//!
//! tokio-postgres parses only `sslmode=disable|prefer|require` and knows no `sslrootcert`, so
//! the URL is read here first: the libpq options it lacks are taken out and what they ask for
//! becomes the rustls configuration of every connection (pool, writer, LISTEN).
//!
//! rustls always checks the certificate chain *and* the host name, so every TLS connection here
//! is what libpq calls `verify-full`: `require` and `verify-full` mean the same, `verify-ca`
//! (chain without host name) cannot be honoured and is refused rather than made stricter
//! unasked, and a CA, once named, is never bypassed — `prefer` with a CA file requires TLS
//! instead of falling back to plaintext. Without any CA asked for, `prefer` (also the default)
//! stays what it always was here, plaintext, with a warning at start: an encrypted but unverified
//! connection (libpq's `prefer`) would need a verifier that accepts any certificate, which
//! provisiond does not have.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::config::SslMode as WireMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error::OpenError;

/// The `sslmode` values provisiond accepts in the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

/// The `sslrootcert` value that means the system's trusted roots (as in libpq 16).
const SYSTEM_ROOTS: &str = "system";

/// Where a CA file was named: errors say which setting to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaSource {
    Flag,
    Url,
}

impl std::fmt::Display for CaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Flag => "--store-ca-file (PROVISIOND_STORE_CA_FILE)",
            Self::Url => "sslrootcert= in --store",
        })
    }
}

/// The `--store` URL with the options tokio-postgres does not know taken out.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SplitUrl {
    /// The URL for tokio-postgres: the rest, as written, without `sslmode` and `sslrootcert`.
    pub rest: String,
    /// The last `sslmode` given, if any.
    pub mode: Option<SslMode>,
    /// The last `sslrootcert` given, percent-decoded.
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of the query of `url`. Errors never quote the URL
/// (it may hold a password), only the offending option.
pub(super) fn split_url(url: &str) -> Result<SplitUrl, OpenError> {
    // Where tokio-postgres looks for the query: after the credentials (everything up to the
    // first `@`), at the first `?`.
    let authority = url.find('@').map_or(0, |at| at + 1);
    let Some(query_at) = url[authority..].find('?').map(|at| authority + at) else {
        return Ok(SplitUrl {
            rest: url.to_owned(),
            mode: None,
            root_cert: None,
        });
    };
    let (base, query) = (&url[..query_at], &url[query_at + 1..]);
    let mut kept = Vec::new();
    let mut mode = None;
    let mut root_cert = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(key)?.as_ref() {
            "sslmode" => mode = Some(parse_mode(&decode(value)?)?),
            "sslrootcert" => root_cert = Some(decode(value)?.into_owned()),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(SplitUrl {
        rest,
        mode,
        root_cert,
    })
}

fn decode(text: &str) -> Result<Cow<'_, str>, OpenError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map_err(|_| OpenError::UrlOption("an option of the URL is not UTF-8 once decoded"))
}

fn parse_mode(value: &str) -> Result<SslMode, OpenError> {
    match value {
        "disable" => Ok(SslMode::Disable),
        "prefer" => Ok(SslMode::Prefer),
        "require" => Ok(SslMode::Require),
        "verify-full" => Ok(SslMode::VerifyFull),
        "verify-ca" => Err(OpenError::VerifyCa),
        other => Err(OpenError::SslMode(other.to_owned())),
    }
}

/// How the store's connections use TLS, decided once at open.
#[derive(Clone)]
pub(super) struct Tls {
    /// Used only when `wire` is not `Disable`.
    pub connector: MakeRustlsConnect,
    /// What tokio-postgres is told: `Require` whenever TLS is on, so that it never falls back.
    pub wire: WireMode,
    /// For logs and errors: whether TLS is on, and against which roots.
    pub summary: String,
}

/// What the roots of verification are.
enum Roots {
    File(PathBuf, CaSource),
    System,
}

/// The tokio-postgres configuration and TLS of the `--store` URL `url` with `--store-ca-file`
/// `ca_file`.
pub(super) fn configure(
    url: &str,
    ca_file: Option<&Path>,
) -> Result<(tokio_postgres::Config, Tls), OpenError> {
    let split = split_url(url)?;
    let mut config: tokio_postgres::Config = split.rest.parse().map_err(OpenError::Url)?;
    let roots = match (ca_file, split.root_cert.as_deref()) {
        (Some(_), Some(_)) => return Err(OpenError::TwoCaFiles),
        (Some(path), None) => Some(Roots::File(path.to_owned(), CaSource::Flag)),
        (None, Some(SYSTEM_ROOTS)) => Some(Roots::System),
        (None, Some(path)) => Some(Roots::File(path.into(), CaSource::Url)),
        (None, None) => None,
    };
    let tls = decide(split.mode.unwrap_or(SslMode::Prefer), roots)?;
    config.ssl_mode(tls.wire);
    Ok((config, tls))
}

/// The TLS of a configuration made in code ([`super::PostgresStore::open_config`]): its
/// `sslmode` (which can only be `disable`, `prefer` or `require`), the system's roots.
pub(super) fn for_config(config: &tokio_postgres::Config) -> Result<Tls, OpenError> {
    let mode = match config.get_ssl_mode() {
        WireMode::Disable => SslMode::Disable,
        WireMode::Require => SslMode::Require,
        _ => SslMode::Prefer,
    };
    decide(mode, None)
}

fn decide(mode: SslMode, roots: Option<Roots>) -> Result<Tls, OpenError> {
    let (mode_name, roots) = match (mode, roots) {
        (SslMode::Disable, Some(_)) => return Err(OpenError::CaWithoutTls),
        (SslMode::Disable, None) => ("disable", None),
        (SslMode::Prefer, None) => {
            tracing::warn!(
                "the PostgreSQL store is reached without TLS (sslmode=prefer, the default, and \
                 no CA file): passwords and policies cross the network in plaintext; set \
                 sslmode=verify-full in --store (and --store-ca-file for a private CA)"
            );
            ("prefer, no CA file", None)
        }
        (SslMode::Prefer | SslMode::Require | SslMode::VerifyFull, Some(roots)) => {
            ("", Some(roots))
        }
        (SslMode::Require | SslMode::VerifyFull, None) => ("", Some(Roots::System)),
    };
    let Some(roots) = roots else {
        return Ok(Tls {
            connector: connector(RootCertStore::empty())?,
            wire: WireMode::Disable,
            summary: format!("no TLS (sslmode={mode_name})"),
        });
    };
    let (store, summary) = match roots {
        Roots::File(path, source) => {
            let store = read_ca_file(&path, source)?;
            let summary = format!(
                "TLS verified against the CA file {} ({source})",
                path.display()
            );
            (store, summary)
        }
        Roots::System => (
            system_roots()?,
            "TLS verified against the system's trusted roots".to_owned(),
        ),
    };
    Ok(Tls {
        connector: connector(store)?,
        wire: WireMode::Require,
        summary,
    })
}

/// The rustls client of every connection, with ring named as its provider: the process default
/// would be chosen at the first handshake (and panic if there were two).
fn connector(roots: RootCertStore) -> Result<MakeRustlsConnect, OpenError> {
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(OpenError::TlsConfig)?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Every certificate of the PEM file at `path`, as trust anchors; at least one.
fn read_ca_file(path: &Path, source: CaSource) -> Result<RootCertStore, OpenError> {
    let failed = |reason: String| OpenError::CaFile {
        source_setting: source,
        path: path.to_owned(),
        reason,
    };
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|err| failed(err.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|err| failed(err.to_string()))?;
    if certificates.is_empty() {
        return Err(failed("it holds no PEM certificate".to_owned()));
    }
    let mut store = RootCertStore::empty();
    for certificate in certificates {
        store
            .add(certificate)
            .map_err(|err| failed(format!("a certificate in it is not usable: {err}")))?;
    }
    Ok(store)
}

/// The operating system's trusted roots (Debian: /etc/ssl/certs), as libpq's
/// `sslrootcert=system` uses: what an operator installs a private CA into.
fn system_roots() -> Result<RootCertStore, OpenError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let reason = match loaded.errors.first() {
            Some(err) => err.to_string(),
            None => "none found".to_owned(),
        };
        return Err(OpenError::SystemRoots(reason));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> SplitUrl {
        split_url(url).unwrap_or_else(|err| panic!("{url}: {err}"))
    }

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_and_the_rest_kept_as_written() {
        let url = "postgres://u:p@db.example:5432/app?application_name=x&sslmode=verify-full\
                   &sslrootcert=%2Fetc%2Fca%20file.pem&options=-c%20search_path%3Ds";
        assert_eq!(
            split(url),
            SplitUrl {
                rest: "postgres://u:p@db.example:5432/app?application_name=x\
                       &options=-c%20search_path%3Ds"
                    .to_owned(),
                mode: Some(SslMode::VerifyFull),
                root_cert: Some("/etc/ca file.pem".to_owned()),
            }
        );
        assert_eq!(
            split("postgresql://db/app?sslmode=require"),
            SplitUrl {
                rest: "postgresql://db/app".to_owned(),
                mode: Some(SslMode::Require),
                root_cert: None,
            }
        );
        let plain = split("postgres://db/app");
        assert_eq!(
            (plain.rest.as_str(), plain.mode),
            ("postgres://db/app", None)
        );
        // The last one counts, as in tokio-postgres.
        assert_eq!(
            split("postgres://db?sslmode=require&sslmode=disable").mode,
            Some(SslMode::Disable)
        );
        for (value, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(
                split(&format!("postgres://db?sslmode={value}")).mode,
                Some(mode)
            );
        }
    }

    #[test]
    fn a_question_mark_in_the_password_is_not_the_query() {
        let split = split("postgres://u:pa?ss@db/app?sslmode=require");
        assert_eq!(split.rest, "postgres://u:pa?ss@db/app");
        assert_eq!(split.mode, Some(SslMode::Require));
    }

    #[test]
    fn unusable_sslmodes_are_refused_without_quoting_the_url() {
        let url = "postgres://provisiond:hunter2-secret@db/app?sslmode=verify-ca";
        let err = split_url(url).unwrap_err();
        assert!(matches!(err, OpenError::VerifyCa), "{err}");
        let message = err.to_string();
        assert!(message.contains("verify-full"), "{message}");
        assert!(message.contains("host name"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        for bad in ["allow", "VERIFY-FULL", ""] {
            let url = format!("postgres://provisiond:hunter2-secret@db/app?sslmode={bad}");
            let message = split_url(&url).unwrap_err().to_string();
            assert!(message.contains("sslmode"), "{message}");
            assert!(message.contains("verify-full"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        // What tokio-postgres refuses is refused without the password too.
        let err = configure(
            "postgres://provisiond:hunter2-secret@db/app?sslcert=/x.pem",
            None,
        )
        .err()
        .expect("unknown option");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn the_mode_and_the_ca_decide_whether_tls_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();

        let wire = |url: &str, ca_file: Option<&Path>| match configure(url, ca_file) {
            Ok((config, tls)) => {
                assert_eq!(config.get_ssl_mode(), tls.wire, "{url}");
                Ok((tls.wire, tls.summary))
            }
            Err(err) => Err(err.to_string()),
        };
        let off = |url| wire(url, None).unwrap().0;
        assert_eq!(off("postgres://db/app"), WireMode::Disable);
        assert_eq!(off("postgres://db/app?sslmode=prefer"), WireMode::Disable);
        assert_eq!(off("postgres://db/app?sslmode=disable"), WireMode::Disable);
        // A CA asked for is never bypassed: `prefer` then requires TLS.
        let (mode, summary) = wire("postgres://db/app?sslmode=prefer", Some(&ca)).unwrap();
        assert_eq!(mode, WireMode::Require);
        assert!(summary.contains("--store-ca-file"), "{summary}");
        let in_url = format!("postgres://db/app?sslrootcert={}", ca.display());
        let (mode, summary) = wire(&in_url, None).unwrap();
        assert_eq!(mode, WireMode::Require);
        assert!(summary.contains("sslrootcert"), "{summary}");
        for mode in ["require", "verify-full"] {
            let url = format!("postgres://db/app?sslmode={mode}");
            assert_eq!(
                wire(&url, Some(&ca)).unwrap().0,
                WireMode::Require,
                "{mode}"
            );
        }
        let both = wire(&in_url, Some(&ca)).unwrap_err();
        assert!(
            both.contains("--store-ca-file") && both.contains("sslrootcert"),
            "{both}"
        );
        let disabled = wire("postgres://db/app?sslmode=disable", Some(&ca)).unwrap_err();
        assert!(disabled.contains("sslmode=disable"), "{disabled}");
    }

    #[test]
    fn an_unusable_ca_file_names_its_setting() {
        let dir = tempfile::tempdir().unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nbm90IGRlcg==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        let url = "postgres://provisiond:hunter2-secret@db/app?sslmode=require";
        for path in [&garbage, &broken, &missing] {
            let message = configure(url, Some(path))
                .err()
                .expect("refused")
                .to_string();
            assert!(message.contains("--store-ca-file"), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
        let in_url = format!(
            "postgres://provisiond:hunter2-secret@db/app?sslrootcert={}",
            garbage.display()
        );
        let message = configure(&in_url, None).err().expect("refused").to_string();
        assert!(message.contains("sslrootcert"), "{message}");
    }
}
