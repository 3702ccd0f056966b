//! Health that tells the truth: a PostgreSQL the replica cannot reach (behind a proxy the test
//! cuts) and a SQLite data dir whose disk is full each turn health NOT_SERVING within a few
//! probe intervals, RPCs answer UNAVAILABLE meanwhile, and health is SERVING again once the
//! store is back. The probe interval here is short; nothing measures speed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::postgres::TestSchema;
use common::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const PROBE: Duration = Duration::from_millis(200);
/// Bounds a hang only.
const LIMIT: Duration = Duration::from_secs(30);

async fn status(server: &TestServer) -> ServingStatus {
    let mut client = HealthClient::new(server.channel().await);
    let response = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("a Check answers whatever the store does")
        .into_inner();
    ServingStatus::try_from(response.status).unwrap()
}

/// Waits until health says `wanted`; returns how long that took.
async fn until(server: &TestServer, wanted: ServingStatus) -> Duration {
    let started = Instant::now();
    while status(server).await != wanted {
        assert!(started.elapsed() < LIMIT, "health never turned {wanted:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// A TCP proxy to PostgreSQL that the test can cut (every connection dropped, new ones
/// refused) and restore, on one port.
struct Proxy {
    address: std::net::SocketAddr,
    down: Arc<AtomicBool>,
    connections: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let (down_flag, tasks) = (Arc::clone(&down), Arc::clone(&connections));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if down_flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                tasks.lock().await.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            address,
            down,
            connections,
        }
    }

    async fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.connections.lock().await.abort_all();
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgresql_turns_health_not_serving_until_it_returns() {
    let Some(schema) = TestSchema::create() else {
        return;
    };
    let url = schema.store_url();
    let config: tokio_postgres::Config = url.parse().expect("the test URL parses");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => panic!("the test database must be reached over TCP"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let upstream = format!("{host}:{port}");
    assert!(url.contains(&upstream), "the URL names {upstream}");
    let proxy = Proxy::start(upstream.clone()).await;
    let proxied = url.replacen(&upstream, &proxy.address.to_string(), 1);
    let server = TestServer::start_with(move |config| {
        config.store = proxied;
        config.health_probe_interval = PROBE;
    })
    .await;
    let mut client = server.client.clone();
    let ent = entitlement("health", "a");
    set_webhook(&mut client, &ent, "hook").await;
    assert_eq!(status(&server).await, ServingStatus::Serving);

    proxy.cut().await;
    let took = until(&server, ServingStatus::NotServing).await;
    println!("NOT_SERVING {took:?} after the cut (probe every {PROBE:?})");
    let refused = client
        .get_provision_policy(get_request(ent.clone(), 0))
        .await
        .expect_err("the database is unreachable");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert_eq!(error_reason(&refused), "STORAGE_UNAVAILABLE");

    proxy.restore();
    let took = until(&server, ServingStatus::Serving).await;
    println!("SERVING {took:?} after the restore");
    let back = client
        .get_provision_policy(get_request(ent, 0))
        .await
        .expect("back");
    assert_eq!(back.into_inner().policy.unwrap().revision, 1);
}

/// A tmpfs of its own as the data dir, filled to the last block. Skips (printing why) where
/// the test may not mount one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_turns_sqlite_health_not_serving_until_space_returns() {
    let mount = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(mount.path())
        .status();
    if !mounted.is_ok_and(|status| status.success()) {
        eprintln!(
            "skipped: cannot mount a tmpfs here (needs root); the disk-full check did not run"
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.path().to_owned());
    let data_dir = mount.path().join("data");
    let server = TestServer::start_with({
        let data_dir = data_dir.clone();
        move |config| {
            config.data_dir = data_dir;
            config.health_probe_interval = PROBE;
        }
    })
    .await;
    let mut client = server.client.clone();
    set_webhook(&mut client, &entitlement("disk", "a"), "hook").await;
    assert_eq!(status(&server).await, ServingStatus::Serving);

    // Fill the file system to its last block.
    let filler = mount.path().join("filler");
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while file
            .write_all(&block)
            .and_then(|()| file.sync_all())
            .is_ok()
        {}
        let _ = file.write_all(&[0u8; 1024]);
        while file.write_all(&[0u8; 1]).is_ok() {}
    }
    let took = until(&server, ServingStatus::NotServing).await;
    println!("NOT_SERVING {took:?} after the disk filled (probe every {PROBE:?})");
    let refused = client
        .set_provision_policy(set_request(
            resource(entitlement("disk", "full"), webhook(&"x".repeat(64))),
            "",
        ))
        .await
        .expect_err("no room for the write");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");

    std::fs::remove_file(&filler).unwrap();
    let took = until(&server, ServingStatus::Serving).await;
    println!("SERVING {took:?} after space returned");
    set_webhook(&mut client, &entitlement("disk", "b"), "hook").await;
    server.stop().await;
}
