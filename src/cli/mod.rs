//! provisionctl: the command-line client. It shares the server's rules (`policy::check_static`
//! for offline validation) and its generated client; its own code is file loading, mapping field
//! paths to lines, output formats and exit codes.
//!
//! Modules: `files` (FILES… into policy files, strict ProtoJSON), `locate` (field path → line and
//! column), `output` (text, json, github, sarif, junit), `validate`; `connect` (server, TLS,
//! token), `plan` (diff, apply), `resources` (get, history, rollback, delete, watch),
//! `bindings`, `contexts`; `exit` (the exit codes).

pub mod bindings;
pub mod canonical;
pub mod connect;
pub mod contexts;
pub mod exit;
pub mod files;
pub mod locate;
pub mod output;
pub mod plan;
pub mod resources;
pub mod ui;
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

    /// The named context (see `context list`) whose settings fill in what flags and env leave
    /// unset; default: the config's current context.
    #[arg(long, env = "PROVISIONCTL_CONTEXT", global = true)]
    pub context: Option<String>,

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
        /// Policy files or directories (their `*.json`), or `-`; not with --plan.
        #[arg(required_unless_present = "plan", conflicts_with = "plan")]
        paths: Vec<PathBuf>,
        /// Recurse into subdirectories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// No policy file found is fine (exit 0) instead of an error.
        #[arg(long)]
        allow_empty: bool,
        /// Apply a plan written by `diff --out`: exactly its requests, nothing written if any
        /// entitlement changed since (exit 3).
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
    /// List bindings, optionally of one source and/or destination.
    List {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        destination: Option<String>,
    },
    /// Let DESTINATION delegate to SOURCE.
    Create {
        #[arg(long)]
        source: String,
        #[arg(long)]
        destination: String,
    },
    /// Remove a binding no current policy delegates through.
    Delete {
        #[arg(long)]
        source: String,
        #[arg(long)]
        destination: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Create or update a context from the connection flags given with it (--server,
    /// --ca-cert, --cert/--key, --token-file, --timeout); others keep their value.
    Set { name: String },
    /// Make a context the current one.
    Use { name: String },
    /// List the contexts (`*` marks the current one).
    List,
    /// Remove a context.
    Delete { name: String },
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

async fn run(mut cli: Cli) -> Exit {
    // The selected context fills in what flags and env left unset, for every command that may
    // talk to a server (so `validate` goes online with a context's server too).
    if !matches!(
        cli.command,
        Command::Context { .. } | Command::Completion { .. }
    ) && let Err(error) = contexts::resolve(&mut cli.connection, cli.context.as_deref())
    {
        eprintln!("provisionctl: {error}");
        return Exit::Usage;
    }
    match &cli.command {
        Command::Completion { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "provisionctl", &mut std::io::stdout());
            Exit::Ok
        }
        Command::Diff {
            files,
            detailed_exitcode,
            out,
        } => plan::diff(&cli, files, *detailed_exitcode, out.as_deref()).await,
        Command::Apply {
            paths,
            recursive,
            allow_empty,
            plan,
            dry_run,
            yes,
        } => {
            let files = Files {
                paths: paths.clone(),
                recursive: *recursive,
                allow_empty: *allow_empty,
            };
            plan::apply(&cli, &files, plan.as_deref(), *dry_run, *yes).await
        }
        Command::Get {
            entitlement,
            revision,
        } => resources::get(&cli, entitlement, *revision).await,
        Command::History { entitlement, limit } => {
            resources::history(&cli, entitlement, *limit).await
        }
        Command::Rollback {
            entitlement,
            to,
            yes,
        } => resources::rollback(&cli, entitlement, *to, *yes).await,
        Command::Delete { entitlement, yes } => resources::delete(&cli, entitlement, *yes).await,
        Command::Bindings { command } => bindings::run(&cli, command).await,
        Command::Watch { from, app } => {
            resources::watch(&cli, from.as_deref(), app.as_deref()).await
        }
        Command::Context { command } => context(&cli, command),
        Command::Validate {
            files,
            fail_on_warn,
        } => validate::run(&cli, files, *fail_on_warn).await,
    }
}

fn context(cli: &Cli, command: &ContextCommand) -> Exit {
    let result = (|| -> Result<(), contexts::ContextError> {
        let path = contexts::path()?;
        let mut config = contexts::Config::load(&path)?;
        match command {
            ContextCommand::Set { name } => {
                let context = contexts::merged(config.contexts.get(name), &cli.connection)?;
                config.contexts.insert(name.clone(), context);
                if config.current.is_none() {
                    config.current = Some(name.clone());
                }
                config.save(&path)?;
                eprintln!("provisionctl: context {name:?} saved in {}", path.display());
            }
            ContextCommand::Use { name } => {
                if !config.contexts.contains_key(name) {
                    return Err(contexts::ContextError::Unknown(name.clone(), path));
                }
                config.current = Some(name.clone());
                config.save(&path)?;
                eprintln!("provisionctl: now using context {name:?}");
            }
            ContextCommand::Delete { name } => {
                if config.contexts.remove(name).is_none() {
                    return Err(contexts::ContextError::Unknown(name.clone(), path));
                }
                if config.current.as_deref() == Some(name.as_str()) {
                    config.current = None;
                }
                config.save(&path)?;
            }
            ContextCommand::List => {
                if cli.output == Format::Json {
                    ui::print_json(&serde_json::to_value(&config).expect("the config is JSON"));
                } else {
                    for (name, context) in &config.contexts {
                        let mark = if config.current.as_deref() == Some(name.as_str()) {
                            "*"
                        } else {
                            " "
                        };
                        let mut line = format!(
                            "{mark} {name}  {}",
                            context.server.as_deref().unwrap_or("-")
                        );
                        if let Some(ca) = &context.ca_cert {
                            line.push_str(&format!("  ca-cert={}", ca.display()));
                        }
                        if let Some(cert) = &context.cert {
                            line.push_str(&format!("  cert={}", cert.display()));
                        }
                        if let Some(token) = &context.token_file {
                            line.push_str(&format!("  token-file={}", token.display()));
                        }
                        println!("{line}");
                    }
                }
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Exit::Ok,
        Err(error) => {
            eprintln!("provisionctl: {error}");
            match error {
                contexts::ContextError::Unknown(..) | contexts::ContextError::Empty => Exit::Usage,
                _ => Exit::Invalid,
            }
        }
    }
}
