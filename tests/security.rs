//! TLS, mTLS, tokens and roles, limits and hostile connections, against an in-process server.
//! Certificates are made here (tests/common/certs.rs).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestServer;
use common::certs::{Ca, Identity};
use provisiond::config::Config;
use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;
use provisiond::server::principal::Role;
use provisiond::server::roles::{METHOD_ROLES, SERVICE};
use provisiond::server::tokens::line_for;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

const LIMIT: Duration = Duration::from_secs(10);
const READER: &str = "reader-token-0123456789abcdef";
const WRITER: &str = "writer-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdefgh";

fn tokens_file(dir: &Path, lines: &[(&str, Role, &str)]) -> PathBuf {
    let path = dir.join("tokens");
    write_tokens(&path, lines);
    path
}

fn write_tokens(path: &Path, lines: &[(&str, Role, &str)]) {
    let text: Vec<String> = lines
        .iter()
        .map(|(name, role, token)| line_for(name, *role, token).unwrap())
        .collect();
    // Written aside and renamed, as a deploy would: a reader never sees half a file.
    let staged = path.with_extension("new");
    std::fs::write(&staged, text.join("\n") + "\n").unwrap();
    std::fs::rename(staged, path).unwrap();
}

fn all_roles() -> Vec<(&'static str, Role, &'static str)> {
    vec![
        ("alice", Role::Reader, READER),
        ("bob", Role::Writer, WRITER),
        ("root", Role::Admin, ADMIN),
    ]
}

async fn tls_channel(
    port: u16,
    ca: &Ca,
    identity: Option<&Identity>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&ca.pem))
        .domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            &identity.cert,
            &identity.key,
        ));
    }
    Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .timeout(LIMIT)
        .connect()
        .await
}

/// A call of any method with an empty message (valid for every proto3 request), for the code
/// it is answered with.
async fn call(channel: &Channel, method: &str, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(());
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
        );
    }
    let path = http::uri::PathAndQuery::try_from(format!("/{SERVICE}/{method}")).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    if method == "WatchProvisionPolicies" {
        grpc.server_streaming(request, path, codec).await.map(drop)
    } else {
        grpc.unary(request, path, codec).await.map(drop)
    }
}

fn reason(status: &tonic::Status) -> String {
    common::error_reason(status)
}

async fn health(channel: &Channel) -> Result<i32, tonic::Status> {
    let mut client = HealthClient::new(channel.clone());
    let response = tokio::time::timeout(
        LIMIT,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("no health answer"))??;
    Ok(response.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_may_call_exactly_its_methods() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), &all_roles());
    let server = TestServer::start_with(|config| config.auth_tokens_file = Some(tokens)).await;
    let channel = server.channel().await;
    for (method, needed) in METHOD_ROLES {
        for (name, role, token) in all_roles() {
            let outcome = call(&channel, method, Some(token)).await;
            if role >= *needed {
                if let Err(status) = &outcome {
                    assert!(
                        !matches!(
                            status.code(),
                            Code::Unauthenticated | Code::PermissionDenied
                        ),
                        "{name} ({role}) refused {method}: {status:?}"
                    );
                }
            } else {
                let status = outcome.expect_err(method);
                assert_eq!(status.code(), Code::PermissionDenied, "{name} {method}");
                assert_eq!(reason(&status), "PERMISSION_DENIED");
                assert!(status.message().contains(name), "{status:?}");
                assert!(!status.message().contains(token), "{status:?}");
            }
        }
        for (token, why) in [
            (None, "no credentials"),
            (Some("not-a-known-token-at-all"), "not known"),
        ] {
            let status = call(&channel, method, token).await.expect_err(method);
            assert_eq!(status.code(), Code::Unauthenticated, "{method}");
            assert_eq!(reason(&status), "UNAUTHENTICATED");
            assert!(status.message().contains(why), "{status:?}");
            assert!(!status.message().contains("not-a-known"), "{status:?}");
        }
    }
    // Not Bearer: refused, and the header's value is not echoed.
    let mut client = server.client.clone();
    let mut request = tonic::Request::new(common::get_request(common::entitlement("a", "b"), 0));
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::from_static("Basic c2VjcmV0OnNlY3JldA=="),
    );
    let status = client.get_provision_policy(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(!status.message().contains("c2VjcmV0"), "{status:?}");
    // Health and reflection stay open.
    assert_eq!(health(&channel).await.unwrap(), 1);
    let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    assert_ne!(
        open_stream(&channel, reflection).await,
        Code::Unauthenticated
    );
    // Unknown methods of our service are closed but to admins.
    let status = call(&channel, "NoSuchMethod", Some(WRITER))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = call(&channel, "NoSuchMethod", Some(ADMIN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
}

/// The code a bidi stream at `path` opens with (sending one empty message).
async fn open_stream(channel: &Channel, path: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let request = tonic::Request::new(tokio_stream::once(()));
    let path = http::uri::PathAndQuery::try_from(path.to_owned()).unwrap();
    match grpc.streaming(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_require_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), &all_roles());
    let server = TestServer::start_with(|config| {
        config.auth_tokens_file = Some(tokens);
        config.reflection_requires_auth = true;
    })
    .await;
    let channel = server.channel().await;
    let reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    assert_eq!(
        open_stream(&channel, reflection).await,
        Code::Unauthenticated
    );
    assert_eq!(health(&channel).await.unwrap(), 1);
}

struct TlsServer {
    server: TestServer,
    dir: tempfile::TempDir,
    ca: Ca,
    cert: PathBuf,
    key: PathBuf,
}

async fn tls_server(client_ca: Option<&Ca>, adjust: impl FnOnce(&mut Config)) -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let client_ca = client_ca.map(|ca| ca.write(dir.path(), "clients.pem"));
    let (c, k) = (cert.clone(), key.clone());
    let server = TestServer::start_with(|config| {
        config.tls_cert = Some(c);
        config.tls_key = Some(k);
        config.tls_client_ca = client_ca;
        config.reload_interval = Duration::from_millis(100);
        adjust(config);
    })
    .await;
    TlsServer {
        server,
        dir,
        ca,
        cert,
        key,
    }
}

impl TlsServer {
    fn port(&self) -> u16 {
        self.server.address.port()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_trusting_clients_and_refuses_the_rest() {
    let secure = tls_server(None, |_| {}).await;
    let channel = tls_channel(secure.port(), &secure.ca, None).await.unwrap();
    let mut client = ProvisionPolicyServiceClient::new(channel.clone());
    let written = common::set_webhook(&mut client, &common::entitlement("app", "e"), "hook").await;
    assert_eq!(written.policy.unwrap().revision, 1);
    // A client trusting another CA fails the handshake.
    let stranger = Ca::new("another CA");
    assert!(tls_channel(secure.port(), &stranger, None).await.is_err());
    // Plaintext to the TLS port: refused, the server unharmed.
    let plaintext = Endpoint::from_shared(format!("http://127.0.0.1:{}", secure.port()))
        .unwrap()
        .timeout(LIMIT)
        .connect()
        .await;
    if let Ok(plaintext) = plaintext {
        assert!(health(&plaintext).await.is_err());
    }
    // Garbage before the handshake.
    let mut garbage = TcpStream::connect(secure.server.address).await.unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    garbage.write_all(&vec![0xab; 64 * 1024]).await.ok();
    assert_closed(&mut garbage).await;
    assert_eq!(health(&channel).await.unwrap(), 1);
    assert_eq!(
        health(&tls_channel(secure.port(), &secure.ca, None).await.unwrap())
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plaintext_port_and_garbage_are_refused() {
    let server = TestServer::start().await;
    let ca = Ca::new("some CA");
    assert!(tls_channel(server.address.port(), &ca, None).await.is_err());
    let mut garbage = TcpStream::connect(server.address).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed(&mut garbage).await;
    assert_eq!(health(&server.channel().await).await.unwrap(), 1);
}

/// Reads until the server closes the connection; fails if it stays open.
async fn assert_closed(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(LIMIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_takes_only_current_certificates_of_its_ca() {
    let clients = Ca::new("client CA");
    let secure = tls_server(Some(&clients), |_| {}).await;
    let port = secure.port();
    let good = clients.client("svc-a");
    let channel = tls_channel(port, &secure.ca, Some(&good)).await.unwrap();
    assert_eq!(health(&channel).await.unwrap(), 1);
    let mut client = ProvisionPolicyServiceClient::new(channel);
    common::set_webhook(&mut client, &common::entitlement("app", "m"), "hook").await;
    // No certificate, one of another CA, an expired one: each refused at the handshake (with
    // TLS 1.3 the client learns it at its first read, so: connect or first call fails).
    let stranger = Ca::new("another CA").client("svc-a");
    let expired = clients.expired_client("svc-a");
    for (what, identity) in [
        ("none", None),
        ("another CA", Some(&stranger)),
        ("expired", Some(&expired)),
    ] {
        let refused = match tls_channel(port, &secure.ca, identity).await {
            Err(_) => true,
            Ok(channel) => health(&channel).await.is_err(),
        };
        assert!(refused, "a client certificate ({what}) was accepted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_principals_get_roles_from_the_tokens_file() {
    let clients = Ca::new("client CA");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "reports reader cert:CN=reports\n{}\n",
            line_for("bob", Role::Writer, WRITER).unwrap()
        ),
    )
    .unwrap();
    let secure = tls_server(Some(&clients), |config| {
        config.auth_tokens_file = Some(tokens);
    })
    .await;
    let port = secure.port();
    let reports = tls_channel(port, &secure.ca, Some(&clients.client("reports")))
        .await
        .unwrap();
    call(&reports, "ListProvisionPolicies", None).await.unwrap();
    let status = call(&reports, "SetProvisionPolicy", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // The file's name for the certificate is the principal.
    assert!(
        status.message().starts_with("reports (role reader)"),
        "{status:?}"
    );
    // A token on a certificate's connection speaks for the token's principal.
    let status = call(&reports, "SetProvisionPolicy", Some(WRITER))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // ... and the revision records it as its actor.
    let mut client = ProvisionPolicyServiceClient::new(reports.clone());
    let entitlement = common::entitlement("app", "audited");
    let mut request = tonic::Request::new(common::set_request(
        common::resource(entitlement.clone(), common::webhook("hook")),
        "",
    ));
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {WRITER}")).unwrap(),
    );
    let written = client
        .set_provision_policy(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(written.policy.unwrap().actor, "bob");
    let got = client
        .get_provision_policy(common::get_request(entitlement, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.policy.unwrap().actor, "bob");
    // A verified certificate the file does not name: known, but without a role.
    let nobody = tls_channel(port, &secure.ca, Some(&clients.client("nobody")))
        .await
        .unwrap();
    let status = call(&nobody, "GetProvisionPolicy", None).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("CN=nobody (no role"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificates_serve_the_next_handshake_and_open_streams_go_on() {
    let secure = tls_server(None, |_| {}).await;
    let port = secure.port();
    let old = tls_channel(port, &secure.ca, None).await.unwrap();
    let mut writer = ProvisionPolicyServiceClient::new(old.clone());
    let mut watching = ProvisionPolicyServiceClient::new(old.clone());
    let mut stream = watching
        .watch_provision_policies(pb::WatchProvisionPoliciesRequest::default())
        .await
        .unwrap()
        .into_inner();
    // A bad pair is refused and the old one keeps serving.
    std::fs::write(
        &secure.key,
        "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    tls_channel(port, &secure.ca, None)
        .await
        .expect("the old certificate still serves");
    // Rotate to a certificate of a new CA.
    let next = Ca::new("next CA");
    let identity = next.server();
    std::fs::write(&secure.key, &identity.key).unwrap();
    std::fs::write(&secure.cert, &identity.cert).unwrap();
    let mut rotated = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tls_channel(port, &next, None).await.is_ok() {
            rotated = true;
            break;
        }
    }
    assert!(rotated, "the new certificate was never presented");
    assert!(
        tls_channel(port, &secure.ca, None).await.is_err(),
        "the old one still is"
    );
    // The connection made before the rotation goes on, its stream too.
    common::set_webhook(&mut writer, &common::entitlement("app", "after"), "hook").await;
    let message = tokio::time::timeout(LIMIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        message.changes[0]
            .entitlement
            .as_ref()
            .unwrap()
            .entitlement_id,
        "after"
    );
    drop(secure.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_token_is_refused_once_the_file_changes_and_a_bad_file_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), &all_roles());
    let path = tokens.clone();
    let server = TestServer::start_with(|config| {
        config.auth_tokens_file = Some(tokens);
        config.reload_interval = Duration::from_millis(100);
    })
    .await;
    let channel = server.channel().await;
    call(&channel, "ListProvisionPolicies", Some(READER))
        .await
        .unwrap();
    // A malformed file: the old set stays.
    std::fs::write(&path, "alice reader sha256:nothex\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    call(&channel, "ListProvisionPolicies", Some(READER))
        .await
        .unwrap();
    write_tokens(&path, &[("bob", Role::Writer, WRITER)]);
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Err(status) = call(&channel, "ListProvisionPolicies", Some(READER)).await {
            assert_eq!(status.code(), Code::Unauthenticated);
            refused = true;
            break;
        }
    }
    assert!(refused, "the removed token still works");
    call(&channel, "ListProvisionPolicies", Some(WRITER))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_tokens_file_stops_the_start_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, "# ok\nalice reader sha256:abc\n").unwrap();
    let mut config = Config::with_data_dir(dir.path().join("data"));
    config.auth_tokens_file = Some(path);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = provisiond::server::serve(listener, &config, async {})
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("line 2"), "{text}");
    assert!(text.contains("64 hexadecimal"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_serving_is_refused_off_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::with_data_dir(dir.path().join("data"));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let error = provisiond::server::serve(listener, &config, async {})
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("--allow-unauthenticated"),
        "{error}"
    );
    let mut allowed = config.clone();
    allowed.allow_unauthenticated = true;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    provisiond::server::serve(listener, &allowed, async {})
        .await
        .unwrap();
    let tokens = tokens_file(dir.path(), &all_roles());
    let mut with_tokens = config;
    with_tokens.auth_tokens_file = Some(tokens);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    provisiond::server::serve(listener, &with_tokens, async {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_rpc_limit_calls_are_refused_with_retry_info_and_health_answers() {
    let server = TestServer::start_with(|config| config.max_concurrent_rpcs = 1).await;
    // A Get whose request never ends holds the one slot. It may itself be refused when it
    // arrives while one of the calls below has the slot: then it tries again.
    let held = server.channel().await;
    let holder = tokio::spawn(async move {
        loop {
            let mut grpc = tonic::client::Grpc::new(held.clone());
            grpc.ready().await.unwrap();
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            let path = http::uri::PathAndQuery::from_static(
                "/provision.v1.ProvisionPolicyService/GetProvisionPolicy",
            );
            let request = tonic::Request::new(tokio_stream::pending::<()>());
            match grpc.client_streaming(request, path, codec).await {
                Err(status) if status.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => panic!("the held call ended: {other:?}"),
            }
        }
    });
    let channel = server.channel().await;
    let mut refused = None;
    for _ in 0..50 {
        match call(&channel, "ListProvisionPolicies", None).await {
            Err(status) if status.code() == Code::ResourceExhausted => {
                refused = Some(status);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let status = refused.expect("never refused past the limit");
    assert_eq!(reason(&status), "RESOURCE_EXHAUSTED");
    let retry = status.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.is_some());
    assert_eq!(health(&channel).await.unwrap(), 1);
    holder.abort();
    let mut served = false;
    for _ in 0..50 {
        if call(&channel, "ListProvisionPolicies", None).await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the slot never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_per_principal() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), &all_roles());
    let server = TestServer::start_with(|config| {
        config.auth_tokens_file = Some(tokens);
        config.max_watch_streams_per_principal = 2;
    })
    .await;
    let channel = server.channel().await;
    let watch = |token: &'static str| {
        let mut client = ProvisionPolicyServiceClient::new(channel.clone());
        async move {
            let mut request = tonic::Request::new(pb::WatchProvisionPoliciesRequest::default());
            request.metadata_mut().insert(
                "authorization",
                MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
            );
            client
                .watch_provision_policies(request)
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = watch(READER).await.unwrap();
    let _second = watch(READER).await.unwrap();
    let status = watch(READER).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_details_retry_info().is_some());
    // Another principal has its own allowance.
    let _other = watch(WRITER).await.unwrap();
    drop(first);
    let mut reopened = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if watch(READER).await.is_ok() {
            reopened = true;
            break;
        }
    }
    assert!(reopened, "a closed stream never gave its place back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_handshake_timeout() {
    let server = TestServer::start_with(|config| {
        config.handshake_timeout = Duration::from_secs(2);
    })
    .await;
    let established = server.channel().await;
    assert_eq!(health(&established).await.unwrap(), 1);
    let mut silent = Vec::new();
    for n in 0..3000 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        if n % 2 == 0 {
            // Only the magic of the preface, never the SETTINGS frame.
            stream
                .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                .await
                .unwrap();
        }
        silent.push(stream);
    }
    // Meanwhile health answers, on an open connection and on a new one.
    assert_eq!(health(&established).await.unwrap(), 1);
    assert_eq!(health(&server.channel().await).await.unwrap(), 1);
    for stream in &mut silent {
        assert_closed(stream).await;
    }
    assert_eq!(health(&established).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_ones_are_closed_and_established_ones_go_on() {
    let server = TestServer::start_with(|config| config.max_connections = 3).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let channel = server.channel().await;
        assert_eq!(health(&channel).await.unwrap(), 1);
        open.push(channel);
    }
    let mut extra = TcpStream::connect(server.address).await.unwrap();
    assert_closed(&mut extra).await;
    for channel in &open {
        assert_eq!(health(channel).await.unwrap(), 1);
    }
    drop(open.pop());
    let mut admitted = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let channel = server.channel().await;
        if health(&channel).await.is_ok() {
            admitted = true;
            break;
        }
    }
    assert!(admitted, "a closed connection never gave its place back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_mebibyte_authorization_header_is_refused_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), &all_roles());
    let server = TestServer::start_with(|config| config.auth_tokens_file = Some(tokens)).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    stream.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    // HEADERS then CONTINUATIONs of one literal `authorization` field of 1 MiB (HPACK, no
    // Huffman), after the pseudo-headers of a Get.
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST".to_owned()),
        (":scheme", "http".to_owned()),
        (
            ":path",
            "/provision.v1.ProvisionPolicyService/GetProvisionPolicy".to_owned(),
        ),
        (":authority", "localhost".to_owned()),
        ("content-type", "application/grpc".to_owned()),
        ("te", "trailers".to_owned()),
        ("authorization", format!("Bearer {}", "a".repeat(1 << 20))),
    ] {
        literal(&mut block, name, &value);
    }
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let kind = if i == 0 { 0x1 } else { 0x9 };
        let end_headers = if i + 1 == chunks.len() { 0x4 } else { 0 };
        if stream
            .write_all(&frame(kind, end_headers, 1, chunk))
            .await
            .is_err()
        {
            break; // the server hung up already
        }
    }
    // Whatever the server answers (a reset, GOAWAY or a close), it is never a served Get.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await;
    assert!(!contains(&answer, b"grpc-status: 0"));
    assert_eq!(health(&server.channel().await).await.unwrap(), 1);
    let status = call(&server.channel().await, "GetProvisionPolicy", Some(READER))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "the server still serves"
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.extend([kind, flags]);
    bytes.extend(stream.to_be_bytes());
    bytes.extend(payload);
    bytes
}

/// An HPACK literal header field without indexing, new name, plain strings (RFC 7541 §6.2.2).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    integer(block, name.len());
    block.extend(name.as_bytes());
    integer(block, value.len());
    block.extend(value.as_bytes());
}

/// A string length with a 7-bit prefix and the Huffman bit clear (RFC 7541 §5.1).
fn integer(block: &mut Vec<u8>, mut value: usize) {
    if value < 127 {
        block.push(value as u8);
        return;
    }
    block.push(127);
    value -= 127;
    while value >= 128 {
        block.push((value % 128 + 128) as u8);
        value /= 128;
    }
    block.push(value as u8);
}
