//! The PostgreSQL store over TLS, against private servers each test starts (initdb in a temp
//! dir, a free loopback port, certificates made here by rcgen): verified TLS serves, and every
//! way verification can fail — another CA, another host name, a server without TLS, `prefer`
//! with a CA — is a start-up error that says so, never a plaintext connection. The servers
//! refuse plaintext themselves (`hostnossl … reject`), so a fallback could not pass unnoticed.
//!
//! Needs root (initdb and postgres run as the `postgres` user through runuser) and PostgreSQL
//! 15's binaries; skipped, saying why, without them.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{TestServer, entitlement, get_request, resource, set_request, webhook};
use provisiond::config::Config;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A CA of the test: its certificate (PEM) and what signs with it.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` and its key, both PEM.
    fn server_certificate(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("server key");
        let certificate = params.signed_by(&key, &self.issuer).expect("server cert");
        (certificate.pem(), key.serialize_pem())
    }
}

/// A PostgreSQL server of one test, stopped when dropped (also when the test panics).
struct PrivatePostgres {
    port: u16,
    data: PathBuf,
    dir: tempfile::TempDir,
}

/// Why the private servers cannot run here, if they cannot.
fn cannot_run() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok();
    if uid.is_none_or(|output| output.stdout.trim_ascii() != b"0") {
        return Some("not root (initdb and postgres run as the postgres user via runuser)".into());
    }
    for binary in ["initdb", "pg_ctl", "postgres"] {
        if !Path::new(BIN).join(binary).exists() {
            return Some(format!("{BIN}/{binary} is missing"));
        }
    }
    let has_user = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !has_user {
        return Some("there is no postgres user".into());
    }
    None
}

macro_rules! postgres_or_skip {
    ($start:expr) => {
        match cannot_run() {
            Some(reason) => {
                eprintln!("skipped: {reason}");
                return;
            }
            None => $start,
        }
    };
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn as_postgres(binary: &str) -> Command {
    let mut command = Command::new("runuser");
    command
        .args(["-u", "postgres", "--"])
        .arg(Path::new(BIN).join(binary));
    command
}

impl PrivatePostgres {
    /// Starts a server with TLS (this certificate and key) or without; TCP on 127.0.0.1 only,
    /// plaintext refused when TLS is on.
    fn start(tls: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        run(Command::new("chown").arg("postgres:").arg(dir.path()));
        run(as_postgres("initdb")
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data));
        let mut settings = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\n",
            dir.path().display()
        );
        let hba = match tls {
            Some((certificate, key)) => {
                let certificate_file = dir.path().join("server.crt");
                let key_file = dir.path().join("server.key");
                std::fs::write(&certificate_file, certificate).expect("write certificate");
                std::fs::write(&key_file, key).expect("write key");
                std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
                    .expect("key mode");
                run(Command::new("chown")
                    .arg("postgres:")
                    .arg(&certificate_file)
                    .arg(&key_file));
                settings.push_str(&format!(
                    "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                    certificate_file.display(),
                    key_file.display()
                ));
                "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n"
            }
            None => "host all all 127.0.0.1/32 trust\n",
        };
        append(&data.join("postgresql.conf"), &settings);
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\n{hba}"),
        )
        .expect("write pg_hba.conf");
        let server = Self { port, data, dir };
        let log = server.dir.path().join("postgres.log");
        let started = as_postgres("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(&server.data)
            .arg("-l")
            .arg(&log)
            .arg("start")
            .output()
            .expect("run pg_ctl");
        assert!(
            started.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&started.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        server
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?connect_timeout=10&{query}",
            self.port
        )
    }

    fn ca_file(&self, name: &str, ca: &TestCa) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, &ca.pem).expect("write CA file");
        path
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .expect("append to postgresql.conf");
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let stopped = as_postgres("pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
        if !stopped.is_ok_and(|output| output.status.success()) {
            eprintln!(
                "could not stop the PostgreSQL server in {}",
                self.data.display()
            );
        }
    }
}

fn config(url: String, ca_file: Option<PathBuf>) -> Config {
    let mut config = Config::with_data_dir("/nonexistent-provisiond-data");
    config.store = url;
    config.store_ca_file = ca_file;
    config
}

/// The start-up error of serving with `config`; panics if it starts.
async fn start_error(config: Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    // serve returns once the store is open and shutdown completes at once.
    match provisiond::server::serve(listener, &config, async {}).await {
        Err(err) => err.to_string(),
        Ok(()) => panic!("provisiond started with {:?}", config.store),
    }
}

/// A Set and a Get through provisiond serving from `url`.
async fn set_and_get(url: String, ca_file: Option<PathBuf>) -> TestServer {
    let mut server = TestServer::start_with(|config| {
        config.store = url;
        config.store_ca_file = ca_file;
    })
    .await;
    let key = entitlement("app", "tls");
    server
        .client
        .set_provision_policy(set_request(resource(key.clone(), webhook("hook")), ""))
        .await
        .expect("Set");
    let got = server
        .client
        .get_provision_policy(get_request(key, 0))
        .await
        .expect("Get")
        .into_inner();
    assert!(got.policy.is_some(), "{got:?}");
    server
}

/// Whether every session of provisiond on `server` uses TLS, and how many there are; the
/// test's own connection is TLS too (the server takes no other), verified against `ca`.
async fn sessions_over_tls(server: &PrivatePostgres, ca: &TestCa) -> (i64, bool) {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(certificate.expect("CA PEM")).expect("CA");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let (client, connection) = tokio_postgres::connect(
        &server.url("localhost", "sslmode=require&application_name=test"),
        tokio_postgres_rustls::MakeRustlsConnect::new(tls),
    )
    .await
    .expect("the test's own TLS connection");
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT count(*), coalesce(bool_and(s.ssl), false)
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.application_name = 'provisiond'",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn verified_tls_serves_and_every_session_is_encrypted() {
    let ca = TestCa::new("provisiond test CA");
    let (certificate, key) = ca.server_certificate(&["localhost"]);
    let postgres = postgres_or_skip!(PrivatePostgres::start(Some((&certificate, &key))));
    let ca_file = postgres.ca_file("ca.pem", &ca);

    // (a) sslmode=require with --store-ca-file.
    let server = set_and_get(
        postgres.url("localhost", "sslmode=require"),
        Some(ca_file.clone()),
    )
    .await;
    let (sessions, all_tls) = sessions_over_tls(&postgres, &ca).await;
    // The writer's, the LISTEN connection's and at least one pooled read's.
    assert!(sessions >= 2, "{sessions} provisiond sessions");
    assert!(all_tls, "a provisiond session without TLS");
    server.stop().await;

    // (b) sslmode=verify-full with sslrootcert= in the URL.
    let server = set_and_get(
        postgres.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
        ),
        None,
    )
    .await;
    let (sessions, all_tls) = sessions_over_tls(&postgres, &ca).await;
    assert!(
        sessions >= 2 && all_tls,
        "{sessions} sessions, all TLS: {all_tls}"
    );
    server.stop().await;
}

#[tokio::test]
async fn tls_that_cannot_be_verified_is_a_start_error_not_plaintext() {
    let ca = TestCa::new("provisiond test CA");
    let (certificate, key) = ca.server_certificate(&["localhost"]);
    let postgres = postgres_or_skip!(PrivatePostgres::start(Some((&certificate, &key))));
    let right_ca = postgres.ca_file("ca.pem", &ca);
    let other_ca = postgres.ca_file("other-ca.pem", &TestCa::new("another CA"));

    // (c) A CA that did not sign the server's certificate.
    let message = start_error(config(
        postgres.url("localhost", "sslmode=require"),
        Some(other_ca.clone()),
    ))
    .await;
    assert!(message.contains("invalid peer certificate"), "{message}");
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("other-ca.pem"), "{message}");

    // (d) `prefer` with a CA: the failed verification stands; no plaintext retry (which this
    // server would refuse, "no encryption", as it does for sslmode=disable).
    let message = start_error(config(
        postgres.url("localhost", "sslmode=prefer"),
        Some(other_ca),
    ))
    .await;
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(!message.contains("no encryption"), "{message}");
    let message = start_error(config(postgres.url("localhost", "sslmode=disable"), None)).await;
    assert!(message.contains("no encryption"), "{message}");

    // The host name is always verified: the certificate names localhost, not 127.0.0.1, so
    // `require` is libpq's verify-full here.
    let message = start_error(config(
        postgres.url("127.0.0.1", "sslmode=require"),
        Some(right_ca),
    ))
    .await;
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("not valid for name"), "{message}");
}

#[tokio::test]
async fn a_server_without_tls_is_refused_once_tls_is_asked_for() {
    let ca = TestCa::new("provisiond test CA");
    let postgres = postgres_or_skip!(PrivatePostgres::start(None));
    let ca_file = postgres.ca_file("ca.pem", &ca);
    for mode in ["require", "verify-full", "prefer"] {
        let message = start_error(config(
            postgres.url("localhost", &format!("sslmode={mode}")),
            Some(ca_file.clone()),
        ))
        .await;
        assert!(
            message.contains("does not support TLS"),
            "{mode}: {message}"
        );
    }
    // Without a CA, `prefer` (the default) is plaintext, as it always was.
    set_and_get(postgres.url("localhost", "sslmode=prefer"), None)
        .await
        .stop()
        .await;
}

#[tokio::test]
async fn tls_settings_that_cannot_hold_are_clear_start_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = |query: &str| format!("postgres://provisiond:hunter2-secret@127.0.0.1:1/db?{query}");

    // (e) verify-ca would mean skipping the host name check, which rustls never does.
    let message = start_error(config(url("sslmode=verify-ca"), None)).await;
    assert!(message.contains("verify-ca"), "{message}");
    assert!(message.contains("sslmode=verify-full"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");

    // (f) A CA file that is not one, or is not there.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").expect("write");
    let missing = dir.path().join("missing.pem");
    for path in [garbage, missing] {
        let message = start_error(config(url("sslmode=require"), Some(path.clone()))).await;
        assert!(message.contains("--store-ca-file"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
