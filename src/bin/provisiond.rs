//! The provisiond binary: parse flags, set up logging, serve until SIGTERM or ctrl-c.

use std::io::IsTerminal;
use std::process::ExitCode;

use std::io::Read;

use clap::Parser;
use provisiond::config::{Command, Config, LogFormat};
use provisiond::server::principal::Role;
use provisiond::server::tokens;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::HashToken { name, role }) = &config.command {
        return hash_token(name, role);
    }
    init_tracing(&config);
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(listen = %config.listen, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match provisiond::server::serve(listener, &config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "provisiond stopped");
            ExitCode::FAILURE
        }
    }
}

/// `provisiond hash-token`: the tokens-file line for the token on standard input (one trailing
/// newline is dropped, so `echo` and `openssl rand -hex 32` both work).
fn hash_token(name: &str, role: &str) -> ExitCode {
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read the token from standard input: {error}");
        return ExitCode::from(2);
    }
    let token = input.strip_suffix('\n').unwrap_or(&input);
    let token = token.strip_suffix('\r').unwrap_or(token);
    let role = Role::parse(role).unwrap_or(Role::Reader);
    match tokens::line_for(name, role, token) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("hash-token: {problem}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|error| {
        eprintln!(
            "invalid --log filter {:?} ({error}); using `info`",
            config.log
        );
        EnvFilter::new("info")
    });
    // Colours only on a terminal: redirected logs stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM or ctrl-c (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
