//! The echo ceiling as a process: serves `provision.v1.ProvisionPolicyService` with pre-built
//! replies (see `provisiond_bench::echo`) until SIGTERM or ctrl-c. Prints `listening ADDRESS` on
//! stdout once bound.

use std::net::SocketAddr;

use clap::Parser;

/// Bare tonic server with the provisiond API and fixed replies: the benchmark's ceiling.
#[derive(Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

// The same runtime as provisiond's `#[tokio::main]`: multi-thread, one worker per core.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening {}", listener.local_addr()?);
    provisiond_bench::echo::serve(listener, async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
    .await?;
    Ok(())
}
