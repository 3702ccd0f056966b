//! BENCHMARKS.md, generated: the medians per RPC, the replica, Watch and List figures, startup
//! and memory, the targets of issue #10 (`targets.rs`), the machine, and every round's raw
//! figures.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::{Pair, Rpc, Run, Sample, targets};

fn label(rpc: Rpc) -> &'static str {
    match rpc {
        Rpc::Get => "Get (stored 5-step policy, consistency unset: `fully_consistent`)",
        Rpc::GetMinimizeLatency => "Get (`minimize_latency`)",
        Rpc::Validate => "Validate (valid 5-step MultiStep, one delegation)",
        Rpc::Set => "Set (new key and value per call, FULL sync)",
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// The medians over the rounds of one RPC.
pub struct Summary {
    pub ratio: f64,
    pub ratio_range: (f64, f64),
    pub service: Sample,
    pub echo: Sample,
    pub failed: u64,
    pub echo_failed: u64,
}

/// provisiond on SQLite, or on PostgreSQL: the sample of a pair to summarize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Sqlite,
    Postgres,
}

impl Side {
    fn of(self, pair: &Pair) -> Option<Sample> {
        match self {
            Side::Sqlite => Some(pair.service),
            Side::Postgres => pair.postgres,
        }
    }
}

pub fn summarize(pairs: &[Pair], rpc: Rpc, side: Side) -> Summary {
    let pairs: Vec<Pair> = pairs
        .iter()
        .filter(|pair| pair.rpc == rpc)
        .filter_map(|pair| side.of(pair).map(|service| Pair { service, ..*pair }))
        .collect();
    let pick = |f: &dyn Fn(&Pair) -> f64| -> f64 {
        let mut values: Vec<f64> = pairs.iter().map(f).collect();
        median(&mut values)
    };
    let ratios: Vec<f64> = pairs
        .iter()
        .map(|pair| pair.service.rps / pair.echo.rps)
        .collect();
    let median_of = |side: &dyn Fn(&Pair) -> Sample| Sample {
        rps: pick(&|p| side(p).rps),
        p50_us: pick(&|p| side(p).p50_us),
        p99_us: pick(&|p| side(p).p99_us),
        cpu_us_per_rpc: pick(&|p| side(p).cpu_us_per_rpc),
        failed: 0,
    };
    Summary {
        ratio: median(&mut ratios.clone()),
        ratio_range: min_max(&ratios),
        service: median_of(&|p| p.service),
        echo: median_of(&|p| p.echo),
        failed: pairs.iter().map(|pair| pair.service.failed).sum(),
        echo_failed: pairs.iter().map(|pair| pair.echo.failed).sum(),
    }
}

pub fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn duration_ms(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

pub fn pair_line(pair: &Pair) -> String {
    let postgres = pair.postgres.map_or(String::new(), |pg| {
        format!(
            " | PostgreSQL {:.0}/s p50 {} p99 {} cpu {:.1} µs/rpc, failed {} | ratio {:.3}",
            pg.rps,
            ms(pg.p50_us),
            ms(pg.p99_us),
            pg.cpu_us_per_rpc,
            pg.failed,
            pg.rps / pair.echo.rps
        )
    });
    format!(
        "round {} {:?}: echo {:.0}/s p99 {} | provisiond {:.0}/s p50 {} p99 {} cpu {:.1} µs/rpc, failed {} | ratio {:.3}{postgres}",
        pair.round,
        pair.rpc,
        pair.echo.rps,
        ms(pair.echo.p99_us),
        pair.service.rps,
        ms(pair.service.p50_us),
        ms(pair.service.p99_us),
        pair.service.cpu_us_per_rpc,
        pair.service.failed,
        pair.service.rps / pair.echo.rps
    )
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

struct Machine {
    nproc: usize,
    cpu: String,
    kernel: String,
    memory: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown".to_owned(), |(_, model)| model.trim().to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or("unknown".to_owned(), |text| text.trim().to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or("unknown".to_owned(), |kib| {
            format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
        });
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu,
        kernel,
        memory,
    }
}

fn utc(time: std::time::SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    command_line(
        "date",
        &["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d %H:%M UTC"],
    )
    .unwrap_or_else(|| format!("unix time {secs}"))
}

pub fn markdown(run: &Run) -> String {
    let machine = machine();
    let commit = command_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let dirty = command_line("git", &["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    let rustc = command_line("rustc", &["--version"]).unwrap_or_default();
    let args = &run.args;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "Generated by `make bench` (`bench/src/bin/bench-run`); do not edit: run it again.\n\
         Run of {} at commit `{commit}`{}, {rustc}, release profile; it took {:.0} s.\n",
        utc(run.started),
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        },
        run.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "Machine: {} CPUs (nproc), {}, kernel {}, {} RAM. Load average (1, 5, 15 min) {} at \
         the start, {} at the end: other work on the machine shares its CPUs and disk.\n",
        machine.nproc, machine.cpu, machine.kernel, machine.memory, run.load_before, run.load_after
    );

    let _ = writeln!(w, "## Method\n");
    let _ = writeln!(
        w,
        "- Ratio to a bare tonic echo server of the same API (`bench-echo`: pre-built replies of \
         the same size, no store, no validation; same release build, same tokio runtime with one \
         worker per CPU), measured in the same round: {} rounds, each running echo then provisiond \
         for Get (consistency unset, i.e. `fully_consistent`, and `minimize_latency`), Validate \
         and Set; figures are medians over the rounds.",
        args.rounds
    );
    let _ = writeln!(
        w,
        "- 32 calls in flight: Get and Validate with h2load `-c 4 -m 8 -t 1 --warm-up-time={} \
         --duration={}` and a pre-encoded body (each body checked once for `grpc-status: 0` with \
         nghttp and for the reply's DATA bytes with a counted h2load run); Set with `bench-load` \
         (4 connections, 32 in flight, one client thread, {} s warm-up, {} s measured), which \
         writes a new key and value on every call and counts every non-OK status.",
        args.warm_up, args.seconds, args.warm_up, args.seconds
    );
    let _ = writeln!(
        w,
        "- provisiond runs with `--log warn` on a fresh data dir seeded with {} five-step policies \
         through the store API; SQLite in WAL mode with `synchronous=FULL` (every acknowledged Set \
         is fsynced, concurrent Sets group-committed). p50/p99 come from h2load's `--log-file` or \
         bench-load's own timings. Server CPU µs per RPC is the server's utime+stime \
         (/proc/PID/stat) over the run, divided by the calls. The Validate body is a five-step \
         policy whose last step delegates to a seeded entitlement through a seeded proxy binding \
         (checked once to answer `valid: true`).",
        args.policies
    );
    if let Some(postgres) = &run.postgres {
        let _ = writeln!(
            w,
            "- PostgreSQL rows (issue #4): a second provisiond with `--store` on {} on this \
             machine, in a fresh schema seeded with the same {} policies through the same store \
             writes ({:.1} s), run in the same rounds right after provisiond on SQLite and \
             dropped at the end. Its server CPU µs/RPC is provisiond's process only: \
             PostgreSQL's own work is in its backend processes, not counted (and it shares the \
             CPUs with the load generator and provisiond). Replicas: rounds of Get \
             (`minimize_latency`) on that provisiond alone (h2load `-c 3 -m 11 -t 3`), then on it \
             and two more provisiond processes on the same schema at once (one h2load `-c 1 -m 11 \
             -t 1` each, rates summed): 33 in flight and 3 load generator threads either way.",
            postgres.settings,
            args.policies,
            postgres.seed_time.as_secs_f64()
        );
    }
    let _ = writeln!(
        w,
        "- Start = from exec until gRPC health answers SERVING (median of 3 starts). Memory from \
         /proc/PID/status: VmRSS idle after start, VmRSS and VmHWM after a load round of the \
         three RPCs. The machine is shared: absolute RPS drifts between minutes, the ratios are \
         what to compare.\n"
    );
    let _ = writeln!(
        w,
        "- Watch: one provisiond (SQLite, the data dir of the rounds, default limits: 1,000 Watch \
         streams per principal, 256 HTTP/2 streams per connection), {} streams opened by the \
         Rust client over 10 connections from the same cursor, then {} Sets/s for {} s from \
         another connection. Latency per (stream, write): from the Set's answer arriving to the \
         stream's message with its cursor (0 when the message came first). RSS per idle stream: \
         VmRSS with the streams open (nothing written yet) less VmRSS before, over the streams.",
        run.watch.streams,
        crate::watch::SETS_PER_SECOND,
        args.seconds
    );
    let _ = writeln!(
        w,
        "- List: the {}-policy store listed with the Rust client, pages of {} (`next_page_token` \
         followed until empty, consistency unset), 3 times; on the server of the big store's \
         load round.\n",
        run.list.expected,
        crate::list::PAGE_SIZE
    );

    let _ = writeln!(
        w,
        "## Results at 32 in flight (medians over {} rounds)\n",
        args.rounds
    );
    let _ = writeln!(
        w,
        "| RPC | provisiond RPS | echo RPS | ratio to echo (min–max) | target | p50 | p99 | echo p50 / p99 | server CPU µs/RPC | echo CPU µs/RPC | non-OK calls |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|");
    for side in [Side::Sqlite, Side::Postgres] {
        if side == Side::Postgres && run.postgres.is_none() {
            continue;
        }
        for rpc in Rpc::ALL {
            let s = summarize(&run.pairs, rpc, side);
            let target = targets::ratio_target(rpc, side).map_or("–".to_owned(), |target| {
                format!(
                    "≥ {target:.2}: {}",
                    targets::Verdict::of(s.ratio >= target).text()
                )
            });
            let store = if side == Side::Postgres {
                " (PostgreSQL)"
            } else {
                ""
            };
            let _ = writeln!(
                w,
                "| {}{store} | {:.0} | {:.0} | **{:.2}** ({:.2}–{:.2}) | {target} | {} | {} | {} / {} | {:.1} | {:.1} | {} (echo {}) |",
                label(rpc),
                s.service.rps,
                s.echo.rps,
                s.ratio,
                s.ratio_range.0,
                s.ratio_range.1,
                ms(s.service.p50_us),
                ms(s.service.p99_us),
                ms(s.echo.p50_us),
                ms(s.echo.p99_us),
                s.service.cpu_us_per_rpc,
                s.echo.cpu_us_per_rpc,
                s.failed,
                s.echo_failed,
            );
        }
    }
    let _ = writeln!(
        w,
        "\nReply sizes: Get {} B (echo {} B), Validate {} B.\n",
        run.get_reply_bytes, run.echo_get_reply_bytes, run.validate_reply_bytes
    );

    let _ = writeln!(w, "## Startup and memory\n");
    let _ = writeln!(
        w,
        "| stored policies | start to SERVING (median; all) | VmRSS idle | VmRSS / VmHWM after load | data dir on disk | seeding time |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|");
    for size in &run.sizes {
        let mut starts: Vec<f64> = size.startups.iter().map(Duration::as_secs_f64).collect();
        let start = Duration::from_secs_f64(median(&mut starts));
        let all = size
            .startups
            .iter()
            .map(|d| duration_ms(*d))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            w,
            "| {} | {} ({all}) | {} | {} | {} | {} |",
            size.policies,
            duration_ms(start),
            mb(size.rss_idle),
            size.after_load.map_or("–".to_owned(), |(rss, hwm)| format!(
                "{} / {}",
                mb(rss),
                mb(hwm)
            )),
            mb(size.disk_bytes),
            size.seed_time
                .map_or("–".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        );
    }

    replicas_section(w, run);
    watch_section(w, run);
    list_section(w, run);

    let _ = writeln!(w, "\n## Targets (issue #10)\n");
    let _ = writeln!(w, "| target | measured | |");
    let _ = writeln!(w, "|---|---|---|");
    for target in targets::targets(run, machine.nproc) {
        let _ = writeln!(
            w,
            "| {} | {} | {} |",
            target.target,
            target.measured,
            target.verdict.text()
        );
    }

    let _ = writeln!(
        w,
        "\nWhere the time goes, by hand: `target/release/bench-run --bodies-only --work-dir DIR` \
         writes the h2load bodies; run provisiond and bench-echo under `valgrind --tool=callgrind` \
         (this VM has no hardware counters for `perf`), send the same number of calls to each \
         with `h2load -n`, and compare instructions per call; `cargo bench --bench validation` \
         and `cargo bench --bench store` isolate validation and the store."
    );

    let _ = writeln!(w, "\n## Every round\n");
    let _ = writeln!(
        w,
        "| round | RPC | echo RPS | provisiond RPS | ratio | echo p99 | provisiond p50 | provisiond p99 | echo CPU µs/RPC | provisiond CPU µs/RPC | non-OK |"
    );
    let _ = writeln!(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for pair in &run.pairs {
        let postgres = pair.postgres.map(|pg| (" (PostgreSQL)", pg));
        for (store, service) in std::iter::once(("", pair.service)).chain(postgres) {
            let _ = writeln!(
                w,
                "| {} | {:?}{store} | {:.0} | {:.0} | {:.2} | {} | {} | {} | {:.1} | {:.1} | {} |",
                pair.round,
                pair.rpc,
                pair.echo.rps,
                service.rps,
                service.rps / pair.echo.rps,
                ms(pair.echo.p99_us),
                ms(service.p50_us),
                ms(service.p99_us),
                pair.echo.cpu_us_per_rpc,
                service.cpu_us_per_rpc,
                service.failed + pair.echo.failed,
            );
        }
    }
    md
}

fn replicas_section(w: &mut String, run: &Run) {
    if run.replicas.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "\n## Get (`minimize_latency`) on one PostgreSQL replica and on three\n"
    );
    let _ = writeln!(
        w,
        "| round | one replica RPS | p99 | three replicas RPS (sum) | p99 | three / one |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|");
    for round in &run.replicas {
        let _ = writeln!(
            w,
            "| {} | {:.0} | {} | {:.0} | {} | {:.2} |",
            round.round,
            round.one.rps,
            ms(round.one.p99_us),
            round.three.rps,
            ms(round.three.p99_us),
            round.three.rps / round.one.rps
        );
    }
}

fn watch_section(w: &mut String, run: &Run) {
    let watch = &run.watch;
    let _ = writeln!(w, "\n## Watch\n");
    let _ = writeln!(
        w,
        "{} streams; {} Sets acknowledged ({} failed) in {:.1} s. Acknowledgement to delivery \
         over every (stream, write) pair: p50 {}, p99 {}, max {}; {} pairs missing, {} streams \
         failed{}. CPU from the first Set until delivery ended: provisiond {:.1} s, the client \
         reading the streams (bench-run) {:.1} s. VmRSS {} before the streams, {} with them \
         open: {:.1} KiB per idle stream.",
        watch.streams,
        watch.writes,
        watch.failed_writes,
        watch.seconds,
        ms(watch.p50_us),
        ms(watch.p99_us),
        ms(watch.max_us),
        watch.missing,
        watch.stream_errors,
        watch
            .first_error
            .as_ref()
            .map_or(String::new(), |error| format!(" (first error: {error})")),
        watch.server_cpu,
        watch.client_cpu,
        mb(watch.rss_before),
        mb(watch.rss_streams_open),
        watch.rss_per_stream() / 1024.0
    );
}

fn list_section(w: &mut String, run: &Run) {
    let _ = writeln!(w, "\n## List\n");
    let listings = run
        .list
        .listings
        .iter()
        .map(|(took, policies, pages)| {
            format!(
                "{} ({policies} policies, {pages} pages)",
                duration_ms(*took)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let _ = writeln!(
        w,
        "All {} policies in pages of {}: {listings}.",
        run.list.expected,
        crate::list::PAGE_SIZE
    );
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
