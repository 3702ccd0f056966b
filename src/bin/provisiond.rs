//! The provisiond binary: parse flags, set up logging, serve until SIGTERM or ctrl-c.

use std::io::IsTerminal;
use std::process::ExitCode;

use std::io::Read;

use clap::Parser;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use provisiond::config::{Command, Config, LogFormat};
use provisiond::server::principal::Role;
use provisiond::server::tokens;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::HashToken { name, role }) = &config.command {
        return hash_token(name, role);
    }
    let tracer_provider = match config
        .otlp_endpoint
        .as_deref()
        .map(provisiond::server::trace::otlp_tracer_provider)
    {
        None => None,
        Some(Ok(provider)) => Some(provider),
        Some(Err(error)) => {
            eprintln!("cannot export traces to --otlp-endpoint: {error}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config, tracer_provider.as_ref());
    let code = run(&config).await;
    if let Some(provider) = tracer_provider {
        // Sends the last batch: blocking, so off the runtime's workers (the export itself
        // runs on the runtime).
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot flush the last trace spans"),
            Err(error) => tracing::warn!(%error, "cannot flush the last trace spans"),
        }
    }
    code
}

async fn run(config: &Config) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(listen = %config.listen, %error, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match provisiond::server::serve(listener, config, shutdown_signal()).await {
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

/// Logs to stderr (text or JSON); with a tracer provider, spans are exported too. The one
/// filter (`--log`) decides for both.
fn init_tracing(config: &Config, tracer_provider: Option<&SdkTracerProvider>) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|error| {
        eprintln!(
            "invalid --log filter {:?} ({error}); using `info`",
            config.log
        );
        EnvFilter::new("info")
    });
    // Colours only on a terminal: redirected logs stay plain text.
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // JSON lines carry the fields of their spans (`span`, `spans`): the RPC span's `trace_id`.
    let log = match config.log_format {
        LogFormat::Text => log.boxed(),
        LogFormat::Json => log.json().boxed(),
    };
    let spans = tracer_provider.map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer(env!("CARGO_PKG_NAME")))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(log)
        .with(spans)
        .init();
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
