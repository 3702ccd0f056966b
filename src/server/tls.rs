//! The TLS configuration, built from PEM files so that it can be built again when they change
//! (tonic's own TLS cannot reload: we terminate TLS in `connections.rs` and swap the whole
//! `ServerConfig`, which covers the certificate, the key and the client CA alike).
//!
//! Only the `ring` provider is ever used: a second provider in the build makes rustls panic at
//! the first handshake (`make test` checks that aws-lc-rs is not in the tree).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// The files of the server's TLS identity and, for mTLS, the CA its clients' certificates
/// must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{flag} {path} holds no {what}")]
    Empty {
        flag: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("the client CA in --tls-client-ca is not usable: {0}")]
    ClientCa(String),
    #[error("the certificate and key are not a usable pair: {0}")]
    Pair(rustls::Error),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks every file; any problem is an error and nothing is half-built.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = certificates("--tls-cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Read {
        flag: "--tls-key",
        path: files.key.clone(),
        source,
    })?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Pair)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in certificates("--tls-client-ca", path)? {
                roots
                    .add(certificate)
                    .map_err(|error| TlsError::ClientCa(error.to_string()))?;
            }
            // Required, not optional: a client without a certificate fails the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|error| TlsError::ClientCa(error.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // with_single_cert checks that the key belongs to the certificate.
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Pair)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if chain.is_empty() {
        return Err(TlsError::Empty {
            flag,
            path: path.to_owned(),
            what: "PEM certificate",
        });
    }
    Ok(chain)
}

/// The principal a verified client certificate stands for: its subject (RFC 4514, e.g.
/// `CN=alice, O=Acme`), or its first DNS or URI name when the subject is empty.
pub fn principal_of(certificate: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let subject = parsed.subject().to_string();
    if !subject.is_empty() {
        return Some(subject);
    }
    let names = parsed.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn certificate(subject: Option<&str>, names: Vec<String>) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = subject {
            params.distinguished_name.push(DnType::CommonName, cn);
            params
                .distinguished_name
                .push(DnType::OrganizationName, "Acme");
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_principal_is_the_subject_else_the_first_name() {
        let named = certificate(Some("payments"), vec!["svc.internal".to_owned()]);
        assert_eq!(principal_of(&named).as_deref(), Some("CN=payments, O=Acme"));
        let bare = certificate(None, vec!["svc.internal".to_owned(), "other".to_owned()]);
        assert_eq!(principal_of(&bare).as_deref(), Some("svc.internal"));
        assert_eq!(principal_of(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let pair = KeyPair::generate().unwrap();
        std::fs::write(&cert, params.self_signed(&pair).unwrap().pem()).unwrap();
        std::fs::write(&key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: None,
        };
        assert!(
            matches!(load(&files), Err(TlsError::Pair(_))),
            "a mismatched pair loaded"
        );
        std::fs::write(&key, pair.serialize_pem()).unwrap();
        load(&files).unwrap();
        std::fs::write(&cert, "not pem").unwrap();
        let error = load(&files).unwrap_err().to_string();
        assert!(error.contains("--tls-cert"), "{error}");
    }
}
