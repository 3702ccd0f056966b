//! The Set load generator as a process: prints one JSON object with what it measured
//! (see `provisiond_bench::load`).

use std::time::Duration;

use clap::Parser;
use provisiond_bench::load::{self, SetLoad};

/// Drives SetProvisionPolicy with a new key and value on every call; counts non-OK statuses.
#[derive(Parser)]
struct Args {
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(long)]
    endpoint: String,
    /// HTTP/2 connections (h2load's -c).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight in total (h2load's -c times -m).
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    warm_up: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// First key written (`ent-NNNNNN` of the benchmark app).
    #[arg(long, default_value_t = 1)]
    first_key: u64,
    /// How many keys are written in turn.
    #[arg(long, default_value_t = 9_999)]
    keys: u64,
    /// Mixed into every value, so that runs never repeat a value.
    #[arg(long, default_value_t = 0)]
    salt: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // One thread, like h2load -t 1: the client gets one core of the two.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(load::run(SetLoad {
        endpoint: args.endpoint,
        connections: args.connections,
        in_flight: args.in_flight,
        warm_up: Duration::from_secs_f64(args.warm_up),
        duration: Duration::from_secs_f64(args.seconds),
        first_key: args.first_key,
        keys: args.keys,
        salt: args.salt,
    }))?;
    println!("{}", result.to_json());
    Ok(())
}
