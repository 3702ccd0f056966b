//! What the online commands share: connecting (with the context), reporting a failed call on
//! stderr with its exit code, and asking for confirmation.

use std::io::{BufRead, IsTerminal, Write};

use super::connect::Client;
use super::{Cli, Exit};

/// A connected client (`run` has filled in the selected context); on failure the message is
/// printed and the exit code returned.
pub async fn client(cli: &Cli) -> Result<Client, Exit> {
    cli.connection.client().await.map_err(|error| {
        eprintln!("provisionctl: {}", chain(&error));
        error.exit()
    })
}

/// An error with its sources, `a: b: c` (tonic's transport errors say little on their own).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Prints a failed call (`what`: the operation and its object) and returns its exit code.
pub fn failed(what: &str, status: &tonic::Status) -> Exit {
    let exit = Exit::of_code(status.code());
    let hint = match exit {
        Exit::Unreachable => " (server unreachable or refused)",
        Exit::Conflict => " (nothing written)",
        _ => "",
    };
    eprintln!(
        "provisionctl: {what}: {:?}: {}{hint}",
        status.code(),
        status.message()
    );
    exit
}

/// Asks `question` on a terminal; without one, `--yes` is needed (a usage error otherwise).
pub fn confirm(question: &str, yes: bool) -> Result<(), Exit> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        eprintln!("provisionctl: {question} Not on a terminal: pass --yes to go ahead");
        return Err(Exit::Usage);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return Err(Exit::Usage);
    }
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        eprintln!("provisionctl: nothing done");
        Err(Exit::Ok)
    }
}

/// Prints a JSON value on stdout, pretty.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON prints")
    );
}
