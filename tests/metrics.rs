//! `/metrics` of the built binary, started with `--metrics-listen 127.0.0.1:0`, after known
//! traffic: a Set, an invalid Set, a Get of a missing policy and a Watch that got two messages. The scrape is checked
//! here for a few exact lines, then by tests/clients/metrics_check.py with Prometheus's own
//! Python text parser: exact counts per method and code, cumulative buckets whose +Inf equals
//! `_count`, and every series the Grafana dashboard and the alert rules use being exported.
//! The Python half needs `.venv` (`make tools`); a bare `cargo test` skips it with a reason
//! unless PROVISIOND_REQUIRE_CLIENTS is set.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::process;
use common::*;
use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;

const SECRET_VALUE: &str = "webhook-id-that-must-never-be-a-label";
const SET: &str = "grpc_type=\"unary\",grpc_service=\"provision.v1.ProvisionPolicyService\",grpc_method=\"SetProvisionPolicy\"";
const GET: &str = "grpc_type=\"unary\",grpc_service=\"provision.v1.ProvisionPolicyService\",grpc_method=\"GetProvisionPolicy\"";

/// A plain HTTP/1.1 GET: the status line and the body.
fn http_get(address: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(address).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Scrapes until `ready` holds (the series of an RPC are written when its response body ends,
/// which for an error can be a moment after the client has it), at most for 10 s.
fn scrape_until(address: SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = http_get(address, "/metrics");
        assert!(status.contains(" 200 "), "{status}");
        if ready(&body) || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn python() -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("PROVISIOND_REQUIRE_CLIENTS").is_some() {
        panic!("{} is missing; run `make tools`", path.display());
    }
    eprintln!(
        "skipping the parser half: {} is missing (run `make test`, which installs it)",
        path.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_and_export_every_series_the_dashboards_use() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server =
        match process::start_with_args(data_dir.path(), &["--metrics-listen", "127.0.0.1:0"]) {
            process::Started::Listening(server) => server,
            process::Started::Exited { status, log } => panic!("exited ({status}): {log:#?}"),
        };
    let metrics = server
        .metrics_address
        .expect("the metrics address is logged");
    assert_ne!(metrics.port(), 0);

    // Before any traffic: every method is there at 0, and so are the auth failures.
    let fresh = scrape_until(metrics, |_| true);
    assert!(fresh.contains(&format!(
        "grpc_server_handled_total{{{GET},grpc_code=\"OK\"}} 0"
    )));
    assert!(fresh.contains("provisiond_auth_failures_total{code=\"UNAUTHENTICATED\"} 0"));
    assert!(fresh.contains("provisiond_auth_failures_total{code=\"PERMISSION_DENIED\"} 0"));

    let mut client = ProvisionPolicyServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    client
        .set_provision_policy(set_request(
            resource(entitlement("metrics", "a"), webhook(SECRET_VALUE)),
            "",
        ))
        .await
        .expect("set");
    let invalid = client
        .set_provision_policy(set_request(
            resource(entitlement("metrics", "b"), webhook("")),
            "",
        ))
        .await
        .expect_err("invalid");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    let missing = client
        .get_provision_policy(get_request(entitlement("metrics", "missing"), 0))
        .await
        .expect_err("not found");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut watch = client
        .watch_provision_policies(pb::WatchProvisionPoliciesRequest {
            send_initial_state: true,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    // Two messages: the initial state (the one policy), then a checkpoint.
    let initial = watch.message().await.expect("watch message").expect("one");
    assert_eq!(initial.changes.len(), 1);
    let checkpoint = watch.message().await.expect("watch message").expect("two");
    assert!(checkpoint.checkpoint);

    let scraped = tokio::task::spawn_blocking(move || {
        scrape_until(metrics, |text| {
            text.contains(&format!(
                "grpc_server_handled_total{{{GET},grpc_code=\"NotFound\"}} 1"
            )) && text.contains(&format!(
                "grpc_server_handled_total{{{SET},grpc_code=\"InvalidArgument\"}} 1"
            ))
        })
    })
    .await
    .unwrap();
    for line in [
        format!("grpc_server_started_total{{{SET}}} 2"),
        format!("grpc_server_handled_total{{{SET},grpc_code=\"OK\"}} 1"),
        format!("grpc_server_handled_total{{{SET},grpc_code=\"InvalidArgument\"}} 1"),
        format!("grpc_server_handled_total{{{GET},grpc_code=\"NotFound\"}} 1"),
        format!("grpc_server_handled_total{{{GET},grpc_code=\"OK\"}} 0"),
        "grpc_server_msg_sent_total{grpc_type=\"server_stream\",grpc_service=\"provision.v1.ProvisionPolicyService\",grpc_method=\"WatchProvisionPolicies\"} 2".to_owned(),
        "provisiond_watch_streams 1".to_owned(),
        "provisiond_live_policies 1".to_owned(),
        "provisiond_store_change_log_head 1".to_owned(),
        "provisiond_build_info{version=\"".to_owned() + env!("CARGO_PKG_VERSION") + "\"} 1",
    ] {
        assert!(scraped.contains(&line), "no `{line}` in:\n{scraped}");
    }
    assert!(
        !scraped.contains(SECRET_VALUE) && !scraped.contains("metrics\""),
        "a request value reached a label"
    );
    let (status, _) = http_get(metrics, "/other");
    assert!(status.contains(" 404 "), "{status}");

    if let Some(python) = python() {
        let file = data_dir.path().join("scrape.txt");
        std::fs::write(&file, &scraped).unwrap();
        let repo = env!("CARGO_MANIFEST_DIR");
        let script = format!("{repo}/tests/clients/metrics_check.py");
        let output = Command::new(python)
            .args([&script, file.to_str().unwrap(), repo, SECRET_VALUE])
            .output()
            .expect("run python");
        assert!(
            output.status.success(),
            "metrics_check.py failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        println!("{}", String::from_utf8_lossy(&output.stdout));
    }

    drop(watch);
    drop(client);
    let (status, _) = server.terminate();
    assert!(status.success());
    // The endpoint stops with the server.
    assert!(
        TcpStream::connect(metrics).is_err(),
        "/metrics outlived the server"
    );
}

/// On PostgreSQL the counts come from the shared database (a write of another replica counts
/// too), the pool's use is exported, and the PostgreSQL writer observes its commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_metrics_show_the_database_counts_and_the_pool() {
    let Some(schema) = common::postgres::TestSchema::create() else {
        return;
    };
    let store = schema.store_url();
    let start = |metrics: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_provisiond"));
        command
            .args(["--listen", "127.0.0.1:0", "--log-format", "json", "--store"])
            .arg(&store)
            .env_remove("PROVISIOND_STORE")
            .env_remove("PROVISIOND_DATA_DIR");
        if metrics {
            command.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        match process::start_command(command) {
            process::Started::Listening(replica) => replica,
            process::Started::Exited { status, log } => panic!("exited ({status}): {log:#?}"),
        }
    };
    let observed = start(true);
    let other = start(false);
    let metrics = observed.metrics_address.expect("metrics address");
    assert!(
        other.metrics_address.is_none(),
        "metrics are off by default"
    );
    let mut client = common::postgres::client_of(&other).await;
    client
        .set_provision_policy(set_request(
            resource(entitlement("pgmetrics", "a"), webhook("w")),
            "",
        ))
        .await
        .expect("set on the other replica");
    let mut own = common::postgres::client_of(&observed).await;
    own.set_provision_policy(set_request(
        resource(entitlement("pgmetrics", "b"), webhook("w")),
        "",
    ))
    .await
    .expect("set");
    let scraped = tokio::task::spawn_blocking(move || {
        scrape_until(metrics, |text| {
            text.contains("provisiond_live_policies 2")
                && text.contains("provisiond_store_change_log_head 2")
        })
    })
    .await
    .unwrap();
    for line in [
        "provisiond_live_policies 2",
        "provisiond_store_change_log_head 2",
        "provisiond_store_write_batch_size_count 1",
        "provisiond_store_commit_seconds_count 1",
        "# TYPE provisiond_store_pool_connections_in_use gauge",
    ] {
        assert!(scraped.contains(line), "no `{line}` in:\n{scraped}");
    }
    assert!(
        !scraped.contains("postgres://") && !scraped.contains(&schema.name),
        "the database URL reached the metrics"
    );
    drop((client, own));
    assert!(observed.terminate().0.success());
    assert!(other.terminate().0.success());
}

/// The value of the sample line `name{labels} value` in a scrape, 0 when absent.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Many streams following the head cost one read of the change log per change, not one per
/// stream per change: the store's own read counter says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_share_one_read_of_each_change() {
    const STREAMS: usize = 200;
    const SETS: usize = 20;
    let data_dir = tempfile::tempdir().unwrap();
    let server =
        match process::start_with_args(data_dir.path(), &["--metrics-listen", "127.0.0.1:0"]) {
            process::Started::Listening(server) => server,
            process::Started::Exited { status, log } => panic!("exited {status}: {log:#?}"),
        };
    let metrics = server.metrics_address.expect("metrics address");
    let channel = tonic::transport::Endpoint::from_shared(server.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ProvisionPolicyServiceClient::new(channel.clone());
    let mut streams = Vec::new();
    for _ in 0..STREAMS {
        let mut watcher = ProvisionPolicyServiceClient::new(channel.clone());
        let stream = watcher
            .watch_provision_policies(pb::WatchProvisionPoliciesRequest::default())
            .await
            .unwrap()
            .into_inner();
        streams.push(stream);
    }
    let series = "provisiond_store_read_seconds_count{op=\"read_changes\"}";
    let before = sample(&scrape_until(metrics, |_| true), series);
    for n in 0..SETS {
        set_webhook(&mut client, &entitlement("fan", &format!("e{n}")), "hook").await;
    }
    for stream in &mut streams {
        let mut seen = 0;
        while seen < SETS {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
                .await
                .expect("a change within 30 s")
                .unwrap()
                .unwrap();
            seen += message.changes.len();
        }
        assert_eq!(seen, SETS);
    }
    let reads = sample(&scrape_until(metrics, |_| true), series) - before;
    assert!(
        reads <= (SETS * 4) as f64,
        "{reads} reads of the change log for {SETS} changes to {STREAMS} streams"
    );
    drop(streams);
    let (status, _) = server.terminate();
    assert!(status.success());
}

/// Refusals of the auth layer are counted: in the RPC series (the metrics layer sits outside
/// auth) and in the auth failures by code. No label carries the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_are_counted_by_code() {
    use provisiond::server::principal::Role;
    use provisiond::server::tokens::line_for;
    const READER: &str = "a-reader-token-0123456789abcdef";
    const UNKNOWN: &str = "a-token-nobody-was-ever-given-0123";
    let data_dir = tempfile::tempdir().unwrap();
    let tokens = data_dir.path().join("tokens");
    std::fs::write(&tokens, line_for("dash", Role::Reader, READER).unwrap()).unwrap();
    let args = [
        "--metrics-listen",
        "127.0.0.1:0",
        "--auth-tokens-file",
        tokens.to_str().unwrap(),
    ];
    let server = match process::start_with_args(&data_dir.path().join("data"), &args) {
        process::Started::Listening(server) => server,
        process::Started::Exited { status, log } => panic!("exited ({status}): {log:#?}"),
    };
    let metrics = server.metrics_address.expect("metrics address");
    let mut client = ProvisionPolicyServiceClient::connect(server.endpoint())
        .await
        .unwrap();
    let with = |token: &str| {
        let mut request = tonic::Request::new(get_request(entitlement("m", "x"), 0));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    };
    let status = client
        .get_provision_policy(with(UNKNOWN))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let mut set = tonic::Request::new(set_request(
        resource(entitlement("m", "x"), webhook("h")),
        "",
    ));
    set.metadata_mut()
        .insert("authorization", format!("Bearer {READER}").parse().unwrap());
    let status = client.set_provision_policy(set).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let status = client.get_provision_policy(with(READER)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let denied = format!("grpc_server_handled_total{{{SET},grpc_code=\"PermissionDenied\"}} 1");
    let body = scrape_until(metrics, |body| body.contains(&denied));
    assert!(body.contains(&denied), "{body}");
    assert!(body.contains(&format!(
        "grpc_server_handled_total{{{GET},grpc_code=\"Unauthenticated\"}} 1"
    )));
    assert!(body.contains(&format!(
        "grpc_server_handled_total{{{GET},grpc_code=\"NotFound\"}} 1"
    )));
    assert!(body.contains("provisiond_auth_failures_total{code=\"UNAUTHENTICATED\"} 1"));
    assert!(body.contains("provisiond_auth_failures_total{code=\"PERMISSION_DENIED\"} 1"));
    assert!(!body.contains(UNKNOWN) && !body.contains(READER));
    let (status, _) = server.terminate();
    assert!(status.success());
}
