//! provisionctl: the command-line client. It shares the server's rules (`policy::check_static`
//! for offline validation) and its generated client; its own code is file loading, mapping field
//! paths to lines, output formats and exit codes.
//!
//! Modules: `files` (FILES… into policy files, strict ProtoJSON), `locate` (field path → line and
//! column), `output` (text, json, github, sarif, junit), `validate`; `connect` (server, TLS,
//! token), `plan` (diff, apply), `resources` (get, history, rollback, delete, watch),
//! `bindings`, `contexts`; `exit` (the exit codes).

pub mod connect;
pub mod exit;
pub mod files;
pub mod locate;
pub mod output;
pub mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use connect::Connection;
pub use exit::Exit;

/// provisionctl: validate, diff and apply provision policy files; read, roll back and watch the
/// policies of a provisiond.
#[derive(Debug, Parser)]
#[command(
    name = "provisionctl",
    version,
    about = "Validate, diff and apply provision policy files; read, roll back and watch the policies of a provisiond"
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: Connection,

    /// The output format of results (stdout). Logs and prompts go to stderr.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,

    /// Colour in text output: auto (a terminal, and NO_COLOR unset), always, never.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Github,
    Sarif,
    Junit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// Which files: paths of files or directories (their `*.json`), or `-` for standard input.
#[derive(Debug, Clone, clap::Args)]
pub struct Files {
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Recurse into subdirectories.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// No policy file found is fine (exit 0) instead of an error.
    #[arg(long)]
    pub allow_empty: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check policy files: offline with the server's own static rules, or with --server also
    /// against what is stored (delegations, bindings, cycles).
    Validate {
        #[command(flatten)]
        files: Files,
        /// Warnings fail too (exit 1).
        #[arg(long)]
        fail_on_warn: bool,
    },
    /// Compare policy files with the server: a unified diff per entitlement and the plan.
    Diff {
        #[command(flatten)]
        files: Files,
        /// Exit 2 when changes are pending, 0 when none.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Write the plan (entitlements, actions, etags) for `apply --plan`.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write policy files to the server: nothing for unchanged ones, the rest guarded by etags.
    Apply {
        #[command(flatten)]
        files: Files,
        /// Apply a plan written by `diff --out` (nothing is written if anything changed since).
        #[arg(long)]
        plan: Option<PathBuf>,
        /// Check everything on the server, write nothing (validate_only).
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Print an entitlement's policy (`-o json`: a file `apply` accepts unchanged).
    Get {
        /// APP/ENTITLEMENT
        entitlement: String,
        #[arg(long)]
        revision: Option<i64>,
    },
    /// The revisions of an entitlement, newest first.
    History {
        entitlement: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Write a past revision's policies as a new revision.
    Rollback {
        entitlement: String,
        #[arg(long)]
        to: i64,
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Delete an entitlement's policy (a tombstone revision; history stays).
    Delete {
        entitlement: String,
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Proxy bindings.
    Bindings {
        #[command(subcommand)]
        command: BindingsCommand,
    },
    /// Stream changes, one line (or `-o json`: one object) per change.
    Watch {
        /// Resume after this cursor.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        app: Option<String>,
    },
    /// Named contexts (endpoints and file paths, never a token) in the XDG config dir.
    Context {
        #[command(subcommand)]
        command: ContextCommand,
    },
    /// Print a shell completion script.
    Completion { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
pub enum BindingsCommand {
    List {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        destination: Option<String>,
    },
    Create {
        #[arg(long)]
        source: String,
        #[arg(long)]
        destination: String,
    },
    Delete {
        #[arg(long)]
        source: String,
        #[arg(long)]
        destination: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    Set { name: String },
    Use { name: String },
    List,
}

/// Parses the arguments (usage errors exit 64, help and version 0) and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Ok.into()
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("provisionctl: cannot start: {error}");
            return Exit::Internal.into();
        }
    };
    runtime.block_on(run(cli)).into()
}

async fn run(cli: Cli) -> Exit {
    match &cli.command {
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "provisionctl", &mut std::io::stdout());
            Exit::Ok
        }
        Command::Validate {
            files,
            fail_on_warn,
        } => validate::run(&cli, files, *fail_on_warn).await,
        other => {
            eprintln!("provisionctl: {other:?} is not built yet");
            Exit::Internal
        }
    }
}
