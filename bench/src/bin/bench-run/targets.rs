//! The targets of issue #10, each against what the run measured: "met", "**missed**", or "not
//! measured" (the PostgreSQL ones without `--postgres`).

use std::time::Duration;

use crate::report::{Side, median, ms, summarize};
use crate::{Rpc, Run};

const GET_SQLITE: f64 = 0.90;
const GET_POSTGRES: f64 = 0.85;
const VALIDATE: f64 = 0.85;
const SET_SQLITE: f64 = 0.45;
/// Set's p99 at most this many times echo's p99 in the same round.
const SET_P99_TO_ECHO: f64 = 2.0;
const SET_POSTGRES: f64 = 0.25;
/// Three replicas' total RPS at least this many times one replica's.
const REPLICAS_SCALE: f64 = 2.0;
const WATCH_P99: Duration = Duration::from_millis(50);
const WATCH_RSS_PER_STREAM: f64 = 64.0 * 1024.0;
const LIST_ALL: Duration = Duration::from_secs(2);
const START_100K: Duration = Duration::from_secs(1);
const RSS_100K: u64 = 150 * 1000 * 1000;

pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

impl Verdict {
    pub fn of(met: bool) -> Self {
        if met { Verdict::Met } else { Verdict::Missed }
    }

    pub fn text(&self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::NotMeasured => "not measured (no `--postgres`)",
        }
    }
}

pub struct Target {
    pub target: String,
    pub measured: String,
    pub verdict: Verdict,
}

/// The ratio target of a row of the results table, if it has one.
pub fn ratio_target(rpc: Rpc, side: Side) -> Option<f64> {
    match (rpc, side == Side::Postgres) {
        (Rpc::Get, false) => Some(GET_SQLITE),
        (Rpc::GetMinimizeLatency, true) => Some(GET_POSTGRES),
        (Rpc::Validate, false) => Some(VALIDATE),
        (Rpc::Set, false) => Some(SET_SQLITE),
        (Rpc::Set, true) => Some(SET_POSTGRES),
        _ => None,
    }
}

fn ratio(run: &Run, rpc: Rpc, side: Side, target: &str, extra: &str) -> Target {
    let wanted = ratio_target(rpc, side).expect("a row with a target");
    let target = format!("{target}: ≥ {wanted:.2} of echo");
    if side == Side::Postgres && run.postgres.is_none() {
        return Target {
            target,
            measured: "–".to_owned(),
            verdict: Verdict::NotMeasured,
        };
    }
    let s = summarize(&run.pairs, rpc, side);
    Target {
        target,
        measured: format!("{:.2}{extra}", s.ratio),
        verdict: Verdict::of(s.ratio >= wanted),
    }
}

pub fn targets(run: &Run, nproc: usize) -> Vec<Target> {
    let mut targets = vec![ratio(
        run,
        Rpc::Get,
        Side::Sqlite,
        "Get, SQLite, current revision",
        "",
    )];
    let fully = if run.postgres.is_some() {
        format!(
            " (`fully_consistent` beside it: {:.2})",
            summarize(&run.pairs, Rpc::Get, Side::Postgres).ratio
        )
    } else {
        String::new()
    };
    targets.push(ratio(
        run,
        Rpc::GetMinimizeLatency,
        Side::Postgres,
        "Get, PostgreSQL, `minimize_latency`",
        &fully,
    ));
    targets.push(ratio(
        run,
        Rpc::Validate,
        Side::Sqlite,
        "Validate (5-step policy, one delegation), SQLite",
        "",
    ));
    targets.push(ratio(
        run,
        Rpc::Set,
        Side::Sqlite,
        "Set, SQLite, fsync-durable",
        "",
    ));

    // p99 against echo's p99 of the same round, then the median over rounds.
    let mut p99_ratios: Vec<f64> = run
        .pairs
        .iter()
        .filter(|pair| pair.rpc == Rpc::Set && pair.echo.p99_us > 0.0)
        .map(|pair| pair.service.p99_us / pair.echo.p99_us)
        .collect();
    let p99_ratio = median(&mut p99_ratios);
    let set = summarize(&run.pairs, Rpc::Set, Side::Sqlite);
    targets.push(Target {
        target: format!("Set, SQLite: p99 ≤ {SET_P99_TO_ECHO:.0}× echo's p99 in the same round"),
        measured: format!(
            "{p99_ratio:.2}× (median of the rounds' ratios; p99 {}, echo {})",
            ms(set.service.p99_us),
            ms(set.echo.p99_us)
        ),
        verdict: Verdict::of(p99_ratio <= SET_P99_TO_ECHO),
    });
    targets.push(ratio(run, Rpc::Set, Side::Postgres, "Set, PostgreSQL", ""));

    let replicas_target = format!(
        "Get (`minimize_latency`) with 3 PostgreSQL replicas behind one load generator: total \
         RPS ≥ {REPLICAS_SCALE:.0}× one replica's"
    );
    targets.push(if run.replicas.is_empty() {
        Target {
            target: replicas_target,
            measured: "–".to_owned(),
            verdict: Verdict::NotMeasured,
        }
    } else {
        let mut scales: Vec<f64> = run
            .replicas
            .iter()
            .map(|round| round.three.rps / round.one.rps)
            .collect();
        let scale = median(&mut scales);
        Target {
            target: replicas_target,
            measured: format!(
                "{scale:.2}× (median of the rounds' ratios); caveat: {nproc} cores here, shared by \
                 the load generator, the 3 replicas and PostgreSQL, so replicas cannot add CPU"
            ),
            verdict: Verdict::of(scale >= REPLICAS_SCALE),
        }
    });

    let watch = &run.watch;
    targets.push(Target {
        target: format!(
            "Watch, {} streams, {} Sets/s: p99 from acknowledgement to delivery on every stream \
             ≤ {} ms",
            watch.streams,
            crate::watch::SETS_PER_SECOND,
            WATCH_P99.as_millis()
        ),
        measured: format!(
            "{} over {} writes × {} streams; {} (stream, write) pairs missing, {} streams failed",
            ms(watch.p99_us),
            watch.writes,
            watch.streams,
            watch.missing,
            watch.stream_errors
        ),
        verdict: Verdict::of(
            watch.p99_us <= WATCH_P99.as_micros() as f64
                && watch.missing == 0
                && watch.stream_errors == 0
                && watch.writes > 0,
        ),
    });
    targets.push(Target {
        target: "Watch: server RSS per idle stream ≤ 64 KiB".to_owned(),
        measured: format!("{:.1} KiB", watch.rss_per_stream() / 1024.0),
        verdict: Verdict::of(watch.rss_per_stream() <= WATCH_RSS_PER_STREAM),
    });

    let list = &run.list;
    let mut times: Vec<f64> = list
        .listings
        .iter()
        .map(|(took, _, _)| took.as_secs_f64())
        .collect();
    let list_time = Duration::from_secs_f64(median(&mut times));
    let complete = !list.listings.is_empty()
        && list
            .listings
            .iter()
            .all(|(_, policies, _)| *policies == list.expected);
    targets.push(Target {
        target: format!(
            "List of {} policies in pages of {}: all pages ≤ {} s",
            list.expected,
            crate::list::PAGE_SIZE,
            LIST_ALL.as_secs()
        ),
        measured: format!(
            "{:.0} ms (median of {}){}",
            list_time.as_secs_f64() * 1000.0,
            list.listings.len(),
            if complete {
                String::new()
            } else {
                format!(
                    "; counts {:?}, expected {}",
                    list.listings.iter().map(|l| l.1).collect::<Vec<_>>(),
                    list.expected
                )
            }
        ),
        verdict: Verdict::of(complete && list_time <= LIST_ALL),
    });

    if let Some(size) = run
        .sizes
        .iter()
        .find(|size| size.policies == run.args.big_policies)
    {
        let mut starts: Vec<f64> = size.startups.iter().map(Duration::as_secs_f64).collect();
        let start = Duration::from_secs_f64(median(&mut starts));
        targets.push(Target {
            target: format!(
                "Start to SERVING with {} policies ≤ {} s",
                size.policies,
                START_100K.as_secs()
            ),
            measured: format!("{:.0} ms", start.as_secs_f64() * 1000.0),
            verdict: Verdict::of(start <= START_100K),
        });
        let hwm = size.after_load.map_or(0, |(_, hwm)| hwm);
        targets.push(Target {
            target: format!(
                "RSS after load with {} policies ≤ 150 MB (VmHWM)",
                size.policies
            ),
            measured: format!("{:.1} MB", hwm as f64 / 1e6),
            verdict: Verdict::of(hwm <= RSS_100K),
        });
    }
    targets
}
