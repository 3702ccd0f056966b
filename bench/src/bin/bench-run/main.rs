//! `make bench`: the load benchmark of DESIGN.md section 6, from a fresh data dir to the
//! generated BENCHMARKS.md.
//!
//! 1. Seeds a data dir with N policies through the store API (concurrent writes, group-committed).
//! 2. Starts the echo ceiling and provisiond (release builds next to this binary).
//! 3. Checks every request body once: gRPC status OK (nghttp) and the DATA bytes of the reply.
//! 4. Runs interleaved rounds: for Get (fully consistent and `minimize_latency`), Validate and
//!    Set, echo then provisiond (then provisiond on PostgreSQL, with `--postgres`: seeded the
//!    same way in a schema of its own), at 32 in flight (h2load `-c 4 -m 8 -t 1` for Get and
//!    Validate, `bench-load` for Set).
//! 5. With `--postgres`: rounds of Get on one PostgreSQL replica, then on three at once
//!    (`replicas.rs`).
//! 6. Watch: 1,000 streams on one provisiond while Sets land at 200/s (`watch.rs`).
//! 7. Measures start to SERVING and memory with 0, N and 100,000 stored policies, and lists the
//!    100,000 in pages of 1,000 (`list.rs`).
//! 8. Prints the figures and writes them to `--out`.

mod h2load;
mod list;
mod postgres;
mod replicas;
mod report;
mod servers;
mod targets;
mod watch;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Parser;
use prost::Message;
use provisiond::pb;
use provisiond::pb::provision_policy_service_client::ProvisionPolicyServiceClient;
use provisiond::store::postgres::PostgresStore;
use provisiond::store::sqlite::SqliteStore;
use provisiond::store::{Store, Write, WriteOutcome};
use provisiond_bench::fixtures;
use provisiond_bench::load::SetResult;

use crate::servers::{Server, sibling};

/// Runs the provisiond benchmark and writes its figures.
#[derive(Parser, Debug, Clone)]
pub struct Args {
    /// Interleaved rounds (echo, provisiond) per RPC; medians are taken over them. Five keeps a
    /// run with `--postgres` near 10 minutes on 2 cores.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of load before each measured run.
    #[arg(long, default_value_t = 1)]
    warm_up: u64,
    /// Policies stored before the rounds.
    #[arg(long, default_value_t = 10_000)]
    policies: u64,
    /// Policies stored for the startup and memory figures of a big store.
    #[arg(long, default_value_t = 100_000)]
    big_policies: u64,
    /// Where to write the report (Markdown); printed to stdout in any case.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Scratch directory for data dirs, bodies and logs (default: a new one under the temp dir,
    /// removed at the end).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Only write the request bodies (get.grpc, get-minimize-latency.grpc, validate.grpc) into
    /// --work-dir and exit: for
    /// running h2load or a profiler by hand.
    #[arg(long, requires = "work_dir")]
    bodies_only: bool,
    /// Also measure provisiond on this PostgreSQL database (e.g.
    /// postgres://postgres@127.0.0.1:5432/test), in a schema of its own dropped at the end.
    #[arg(long, env = "PROVISIOND_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// Consistency unset: `fully_consistent` (on PostgreSQL one read of the database head first).
    Get,
    /// `minimize_latency`: from the replica's memory.
    GetMinimizeLatency,
    Validate,
    Set,
}

impl Rpc {
    pub const ALL: [Rpc; 4] = [Rpc::Get, Rpc::GetMinimizeLatency, Rpc::Validate, Rpc::Set];

    pub fn method(self) -> &'static str {
        match self {
            Rpc::Get | Rpc::GetMinimizeLatency => "GetProvisionPolicy",
            Rpc::Validate => "ValidateProvisionPolicy",
            Rpc::Set => "SetProvisionPolicy",
        }
    }
}

/// One run against one server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub cpu_us_per_rpc: f64,
    /// Calls not answered OK (h2load: not HTTP 200; Set: any non-OK gRPC status).
    pub failed: u64,
}

/// Echo then provisiond (then provisiond on PostgreSQL, with `--postgres`), in the same round.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    pub round: usize,
    pub rpc: Rpc,
    pub echo: Sample,
    pub service: Sample,
    pub postgres: Option<Sample>,
}

/// The PostgreSQL server of `--postgres`.
pub struct PostgresRun {
    /// Version, synchronous_commit and fsync.
    pub settings: String,
    pub seed_time: Duration,
}

/// Start to SERVING and memory with a given number of stored policies.
#[derive(Debug, Clone, Default)]
pub struct StoreSize {
    pub policies: u64,
    pub startups: Vec<Duration>,
    pub rss_idle: u64,
    /// (VmRSS, VmHWM) after a load round, when one ran.
    pub after_load: Option<(u64, u64)>,
    pub disk_bytes: u64,
    pub seed_time: Option<Duration>,
}

pub struct Run {
    pub args: Args,
    pub pairs: Vec<Pair>,
    pub sizes: Vec<StoreSize>,
    pub get_reply_bytes: usize,
    pub validate_reply_bytes: usize,
    pub echo_get_reply_bytes: usize,
    pub postgres: Option<PostgresRun>,
    /// One PostgreSQL replica against three, with `--postgres`.
    pub replicas: Vec<replicas::Round>,
    pub watch: watch::Figures,
    pub list: list::Figures,
    pub started: std::time::SystemTime,
    /// /proc/loadavg before and after: other work on the machine skews every figure.
    pub load_before: String,
    pub load_after: String,
    pub elapsed: Duration,
}

struct Bodies {
    get: PathBuf,
    get_minimize_latency: PathBuf,
    validate: PathBuf,
}

impl Bodies {
    fn of(&self, rpc: Rpc) -> &Path {
        match rpc {
            Rpc::Get => &self.get,
            Rpc::GetMinimizeLatency => &self.get_minimize_latency,
            Rpc::Validate => &self.validate,
            Rpc::Set => unreachable!("Set is driven by bench-load, not a fixed body"),
        }
    }
}

struct Tools {
    provisiond: PathBuf,
    echo: PathBuf,
    load: PathBuf,
}

struct Bench {
    args: Args,
    work: PathBuf,
    tools: Tools,
    salt: u64,
}

/// The data dirs a run creates in the work dir: the rounds', the empty one, the big one.
const DATA_DIRS: [&str; 3] = ["data", "empty", "big"];

/// Runs `future` on a runtime of its own, dropped at the end: the gRPC connections it opened
/// (health checks, the reply checks) close with it, rather than staying open and holding a
/// server's graceful shutdown for its whole grace period.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

fn main() {
    let args = Args::parse();
    let (work, remove_work) = match &args.work_dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("provisiond-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&work).expect("create the work dir");
    // Every run starts from fresh data dirs.
    for data_dir in DATA_DIRS {
        let path = work.join(data_dir);
        if path.exists() {
            std::fs::remove_dir_all(&path).expect("clear an old data dir");
        }
    }
    progress("start");
    let mut bench = Bench {
        args: args.clone(),
        work: work.clone(),
        tools: Tools {
            provisiond: sibling("provisiond"),
            echo: sibling("bench-echo"),
            load: sibling("bench-load"),
        },
        salt: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_secs()),
    };
    if args.bodies_only {
        let bodies = bench.write_bodies();
        eprintln!(
            "wrote {}, {} and {}",
            bodies.get.display(),
            bodies.get_minimize_latency.display(),
            bodies.validate.display()
        );
        return;
    }
    let run = bench.run();
    let markdown = report::markdown(&run);
    println!("{markdown}");
    if let Some(out) = &args.out {
        std::fs::write(out, &markdown).expect("write the report");
        eprintln!("wrote {}", out.display());
    }
    if remove_work {
        let _ = std::fs::remove_dir_all(&work);
    }
}

fn progress(message: impl std::fmt::Display) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let since = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("bench [{since:6.1} s]: {message}");
}

impl Bench {
    fn run(&mut self) -> Run {
        let started = std::time::SystemTime::now();
        let load_before = load_average();
        let clock = Instant::now();
        let bodies = self.write_bodies();

        let data = self.work.join(DATA_DIRS[0]);
        progress(format!("seeding {} policies", self.args.policies));
        let seed_time = block_on(seed(
            async { SqliteStore::open(&data).expect("open the store to seed") },
            self.args.policies,
        ));
        let mut main_size = self.startup_figures(&data, self.args.policies);
        main_size.seed_time = Some(seed_time);

        let echo = block_on(Server::echo(&self.tools.echo, &self.work.join("echo.log")));
        let service = block_on(Server::provisiond(
            &self.tools.provisiond,
            &data,
            &self.work.join("provisiond.log"),
        ));
        let replies = block_on(check_replies(&echo, &service, &bodies));

        // Declared before its server, so dropped after it, also when the run fails.
        let schema = self
            .args
            .postgres
            .as_deref()
            .map(|url| postgres::Schema::create(url, self.salt));
        let mut postgres_run = None;
        let postgres = schema.as_ref().map(|schema| {
            let url = schema.store_url();
            progress(format!(
                "seeding {} policies in PostgreSQL schema {}",
                self.args.policies, schema.name
            ));
            let seed_time = block_on(seed(
                async {
                    PostgresStore::open(&url, None)
                        .await
                        .expect("open the PostgreSQL store to seed")
                },
                self.args.policies,
            ));
            postgres_run = Some(PostgresRun {
                settings: schema.settings(),
                seed_time,
            });
            let server = block_on(Server::provisiond_postgres(
                &self.tools.provisiond,
                &url,
                &self.work.join("provisiond-postgres.log"),
            ));
            block_on(check_replies(&echo, &server, &bodies));
            server
        });

        let mut pairs = Vec::new();
        for round in 1..=self.args.rounds {
            for rpc in Rpc::ALL {
                let echo_sample = self.measure(rpc, &echo, &bodies);
                let service_sample = self.measure(rpc, &service, &bodies);
                let postgres_sample = postgres
                    .as_ref()
                    .map(|server| self.measure(rpc, server, &bodies));
                let pair = Pair {
                    round,
                    rpc,
                    echo: echo_sample,
                    service: service_sample,
                    postgres: postgres_sample,
                };
                progress(report::pair_line(&pair));
                pairs.push(pair);
            }
        }
        main_size.after_load = Some(service.memory());
        echo.stop();
        service.stop();
        let mut replica_rounds = Vec::new();
        if let (Some(server), Some(schema)) = (postgres, &schema) {
            replica_rounds = self.replicas(&server, &schema.store_url(), &bodies);
            server.stop();
        }
        drop(schema);
        main_size.disk_bytes = dir_bytes(&data);

        let watch = self.watch(&data);

        let empty = self.startup_figures(&self.work.join(DATA_DIRS[1]), 0);

        let big_data = self.work.join(DATA_DIRS[2]);
        progress(format!("seeding {} policies", self.args.big_policies));
        let big_seed = block_on(seed(
            async { SqliteStore::open(&big_data).expect("open the store to seed") },
            self.args.big_policies,
        ));
        let mut big = self.startup_figures(&big_data, self.args.big_policies);
        big.seed_time = Some(big_seed);
        let service = block_on(Server::provisiond(
            &self.tools.provisiond,
            &big_data,
            &self.work.join("provisiond-big.log"),
        ));
        progress("a load round on the big store, for its memory");
        for rpc in Rpc::ALL {
            self.measure(rpc, &service, &bodies);
        }
        big.after_load = Some(service.memory());
        let list = list::run(&service, self.args.big_policies);
        service.stop();
        big.disk_bytes = dir_bytes(&big_data);

        Run {
            args: self.args.clone(),
            pairs,
            sizes: vec![empty, main_size, big],
            get_reply_bytes: replies.0,
            validate_reply_bytes: replies.1,
            echo_get_reply_bytes: replies.2,
            postgres: postgres_run,
            replicas: replica_rounds,
            watch,
            list,
            started,
            elapsed: clock.elapsed(),
            load_before,
            load_after: load_average(),
        }
    }

    fn write_bodies(&self) -> Bodies {
        let get = self.work.join("get.grpc");
        std::fs::write(
            &get,
            provisiond_bench::grpc_frame(&pb::GetProvisionPolicyRequest {
                consistency: None,
                entitlement: Some(fixtures::entitlement(0)),
                revision: 0,
            }),
        )
        .expect("write the Get body");
        let get_minimize_latency = self.work.join("get-minimize-latency.grpc");
        std::fs::write(
            &get_minimize_latency,
            provisiond_bench::grpc_frame(&pb::GetProvisionPolicyRequest {
                consistency: Some(minimize_latency()),
                entitlement: Some(fixtures::entitlement(0)),
                revision: 0,
            }),
        )
        .expect("write the minimize_latency Get body");
        let validate = self.work.join("validate.grpc");
        std::fs::write(&validate, provisiond_bench::grpc_frame(&validate_request()))
            .expect("write the Validate body");
        Bodies {
            get,
            get_minimize_latency,
            validate,
        }
    }

    /// Three starts on `data_dir` (created empty when missing): start to SERVING each, and the
    /// idle memory of the last.
    fn startup_figures(&self, data_dir: &Path, policies: u64) -> StoreSize {
        let mut size = StoreSize {
            policies,
            ..StoreSize::default()
        };
        for _ in 0..3 {
            let server = block_on(Server::provisiond(
                &self.tools.provisiond,
                data_dir,
                &self.work.join("provisiond-start.log"),
            ));
            size.startups.push(server.startup);
            size.rss_idle = server.memory().0;
            server.stop();
        }
        progress(format!(
            "{policies} policies: start to SERVING {:?}",
            size.startups
        ));
        size.disk_bytes = dir_bytes(data_dir);
        size
    }

    fn measure(&mut self, rpc: Rpc, server: &Server, bodies: &Bodies) -> Sample {
        let warm_up = Duration::from_secs(self.args.warm_up);
        let duration = Duration::from_secs(self.args.seconds);
        let log = self.work.join("h2load.log");
        match rpc {
            Rpc::Get | Rpc::GetMinimizeLatency | Rpc::Validate => h2load::run(
                server,
                rpc.method(),
                bodies.of(rpc),
                warm_up,
                duration,
                &log,
            ),
            Rpc::Set => {
                self.salt += 1;
                self.set_load(server, warm_up, duration)
            }
        }
    }

    /// One `bench-load` run: keys 1..N in turn (key 0 is what Get reads), a new value each call.
    fn set_load(&self, server: &Server, warm_up: Duration, duration: Duration) -> Sample {
        let cpu_before = server.cpu_time();
        let started = Instant::now();
        let out = Command::new(&self.tools.load)
            .args(["--endpoint", &server.endpoint()])
            .args(["--connections", "4", "--in-flight", "32"])
            .args(["--warm-up", &warm_up.as_secs_f64().to_string()])
            .args(["--seconds", &duration.as_secs_f64().to_string()])
            .args(["--first-key", "1"])
            .args([
                "--keys",
                &self.args.policies.saturating_sub(1).max(1).to_string(),
            ])
            .args(["--salt", &self.salt.to_string()])
            .output()
            .expect("run bench-load");
        let wall = started.elapsed();
        let cpu = server.cpu_time() - cpu_before;
        let text = String::from_utf8_lossy(&out.stdout);
        let result = serde_json::from_str(text.trim())
            .ok()
            .and_then(|value| SetResult::from_json(&value))
            .unwrap_or_else(|| {
                panic!(
                    "bench-load failed ({}): {text}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        if let Some(error) = &result.first_error {
            progress(format!(
                "{}: {} Set calls failed, first: {error}",
                server.label, result.failed
            ));
        }
        Sample {
            rps: result.rps,
            p50_us: result.p50_us,
            p99_us: result.p99_us,
            cpu_us_per_rpc: h2load::cpu_us_per_rpc(cpu, wall, result.rps),
            failed: result.failed,
        }
    }
}

/// `consistency: minimize_latency`.
fn minimize_latency() -> pb::Consistency {
    pb::Consistency {
        requirement: Some(pb::consistency::Requirement::MinimizeLatency(true)),
    }
}

/// The Validate body: a five-step policy for key 0 whose last step delegates to key 1 (valid
/// once [`seed`] has bound key 1 to key 0).
fn validate_request() -> pb::ValidateProvisionPolicyRequest {
    pb::ValidateProvisionPolicyRequest {
        consistency: None,
        policy: Some(fixtures::five_step_delegating(
            fixtures::entitlement(0),
            &fixtures::entitlement(1),
        )),
    }
}

/// Opens a new store and writes `count` policies (keys 0..count, the five-step fixture) into
/// it, many writes queued at once so that the writer group-commits them, and the proxy binding
/// key 1 → key 0 that the Validate body delegates through; then closes it (which, for SQLite,
/// checkpoints the WAL into the database file).
async fn seed<S: Store>(open: impl std::future::Future<Output = S>, count: u64) -> Duration {
    let started = Instant::now();
    let store = open.await;
    let mut next = 0;
    while next < count {
        let end = (next + 4096).min(count);
        let pending: Vec<_> = (next..end)
            .map(|index| {
                store.write(Write {
                    resource: fixtures::five_step(fixtures::entitlement(index), 0),
                    delegation_targets: Vec::new(),
                    implicit_binding_sources: Vec::new(),
                    expected_revision: None,
                    create_only: false,
                    validate_only: false,
                    check: Box::new(|_| Ok(Vec::new())),
                    actor: "bench".into(),
                    change_cause: String::new(),
                })
            })
            .collect();
        for write in pending {
            match write.await {
                Ok(WriteOutcome::Written { .. }) => {}
                other => panic!("seeding failed: {other:?}"),
            }
        }
        next = end;
    }
    if count > 1 {
        store
            .create_binding(fixtures::entitlement(1), fixtures::entitlement(0), false)
            .await
            .expect("create the proxy binding of the Validate body");
    }
    store.close().await.expect("close the seeded store");
    started.elapsed()
}

/// Calls each RPC once through a gRPC client on both servers; checks the answers (the Validate
/// body must be valid: its delegation found its target and binding), then the bodies h2load
/// will send (status and reply size). Returns the encoded reply sizes of provisiond's Get and
/// Validate and of the echo's Get.
async fn check_replies(echo: &Server, service: &Server, bodies: &Bodies) -> (usize, usize, usize) {
    let mut sizes = Vec::new();
    for server in [echo, service] {
        let mut client = ProvisionPolicyServiceClient::connect(server.endpoint())
            .await
            .expect("connect");
        let get = client
            .get_provision_policy(pb::GetProvisionPolicyRequest {
                consistency: None,
                entitlement: Some(fixtures::entitlement(0)),
                revision: 0,
            })
            .await
            .unwrap_or_else(|status| panic!("{} Get: {status:?}", server.label))
            .into_inner();
        let get_minimize_latency = client
            .get_provision_policy(pb::GetProvisionPolicyRequest {
                consistency: Some(minimize_latency()),
                entitlement: Some(fixtures::entitlement(0)),
                revision: 0,
            })
            .await
            .unwrap_or_else(|status| panic!("{} Get minimize_latency: {status:?}", server.label))
            .into_inner();
        assert_eq!(
            get_minimize_latency.policy, get.policy,
            "{} Get minimize_latency answered another policy",
            server.label
        );
        let stored = get.policy.clone().expect("a policy");
        assert_eq!(
            (stored.entitlement.clone(), stored.provision_policy.clone()),
            (
                Some(fixtures::entitlement(0)),
                fixtures::five_step(fixtures::entitlement(0), 0).provision_policy
            ),
            "{} Get answered another policy",
            server.label
        );
        let validate = client
            .validate_provision_policy(validate_request())
            .await
            .unwrap_or_else(|status| panic!("{} Validate: {status:?}", server.label))
            .into_inner();
        assert!(
            validate.valid && validate.violations.is_empty(),
            "{} finds the benchmark policy invalid: {:?}",
            server.label,
            validate.violations
        );
        client
            .set_provision_policy(pb::SetProvisionPolicyRequest {
                policy: Some(fixtures::five_step(fixtures::entitlement(1), 1)),
                etag: String::new(),
                validate_only: false,
                create_only: false,
                change_cause: String::new(),
            })
            .await
            .unwrap_or_else(|status| panic!("{} Set: {status:?}", server.label));

        for (rpc, reply) in [
            (Rpc::Get, get.encoded_len()),
            (Rpc::GetMinimizeLatency, get_minimize_latency.encoded_len()),
            (Rpc::Validate, validate.encoded_len()),
        ] {
            let body = bodies.of(rpc);
            h2load::check_status_ok(server, rpc.method(), body);
            h2load::check_reply_bytes(server, rpc.method(), body, 5 + reply as u64);
        }
        sizes.push((get.encoded_len(), validate.encoded_len()));
    }
    progress(format!(
        "bodies checked: Get reply {} B (echo {} B), Validate reply {} B",
        sizes[1].0, sizes[0].0, sizes[1].1
    ));
    (sizes[1].0, sizes[1].1, sizes[0].0)
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| entry.metadata().ok())
                .filter(|meta| meta.is_file())
                .map(|meta| meta.len())
                .sum()
        })
        .unwrap_or(0)
}
