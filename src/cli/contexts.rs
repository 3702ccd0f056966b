//! Named contexts: endpoints and file paths (CA, client certificate and key, token file), never a
//! token, in `$XDG_CONFIG_HOME/provisionctl/config.json` (`~/.config/…` without XDG_CONFIG_HOME).
//!
//! JSON rather than TOML: serde_json is already in the tree, it is the format of the policy files
//! next to it, and unknown keys are refused (a `token` key is an error, not silently kept).
//!
//! Precedence for each connection setting: flag > `PROVISIONCTL_*` env (both clap's) > the
//! selected context (`--context` / `PROVISIONCTL_CONTEXT`, else the config's `current`) > the
//! default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::connect::{Connection, parse_duration};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default = "version")]
    pub version: u32,
    /// The context used when none is selected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

fn version() -> u32 {
    1
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Context {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// As `--timeout`: `10s`, `500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("no config directory: set XDG_CONFIG_HOME or HOME")]
    NoConfigDir,
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0} is not a provisionctl config: {1}")]
    Parse(PathBuf, serde_json::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("no context {0:?} in {1} (see `provisionctl context list`)")]
    Unknown(String, PathBuf),
    #[error("context {0:?}: bad timeout: {1}")]
    Timeout(String, String),
    #[error(
        "context set needs at least one of --server, --ca-cert, --cert/--key, --token-file, --timeout"
    )]
    Empty,
}

/// `$XDG_CONFIG_HOME/provisionctl/config.json`, or `$HOME/.config/provisionctl/config.json`.
pub fn path() -> Result<PathBuf, ContextError> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|value| !value.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|value| !value.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => return Err(ContextError::NoConfigDir),
        },
    };
    Ok(base.join("provisionctl").join("config.json"))
}

impl Config {
    /// The config at `path`; none there is an empty one.
    pub fn load(path: &Path) -> Result<Config, ContextError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| ContextError::Parse(path.to_owned(), error)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Config {
                version: 1,
                ..Config::default()
            }),
            Err(error) => Err(ContextError::Read(path.to_owned(), error)),
        }
    }

    /// Writes the config atomically (a temporary file renamed over it).
    pub fn save(&self, path: &Path) -> Result<(), ContextError> {
        let write = |error| ContextError::Write(path.to_owned(), error);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let mut text = serde_json::to_string_pretty(self).expect("the config prints");
        text.push('\n');
        let temporary = path.with_extension("json.tmp");
        std::fs::write(&temporary, text).map_err(write)?;
        std::fs::rename(&temporary, path).map_err(write)
    }
}

/// Fills the settings neither a flag nor the environment gave from the selected context.
/// Returns the name of the context used, if any.
pub fn resolve(
    connection: &mut Connection,
    selected: Option<&str>,
) -> Result<Option<String>, ContextError> {
    let path = match (selected, path()) {
        (_, Ok(path)) => path,
        (None, Err(_)) => return Ok(None),
        (Some(_), Err(error)) => return Err(error),
    };
    let config = Config::load(&path)?;
    let name = match selected.map(str::to_owned).or(config.current.clone()) {
        Some(name) => name,
        None => return Ok(None),
    };
    let context = config
        .contexts
        .get(&name)
        .ok_or_else(|| ContextError::Unknown(name.clone(), path.clone()))?;
    fill(connection, context, &name)?;
    Ok(Some(name))
}

fn fill(connection: &mut Connection, context: &Context, name: &str) -> Result<(), ContextError> {
    if connection.server.is_none() {
        connection.server = context.server.clone();
    }
    if connection.ca_cert.is_none() {
        connection.ca_cert = context.ca_cert.clone();
    }
    if connection.cert.is_none() && connection.key.is_none() {
        connection.cert = context.cert.clone();
        connection.key = context.key.clone();
    }
    if connection.token_file.is_none() {
        connection.token_file = context.token_file.clone();
    }
    if connection.timeout.is_none()
        && let Some(timeout) = &context.timeout
    {
        connection.timeout = Some(
            parse_duration(timeout)
                .map_err(|error| ContextError::Timeout(name.to_owned(), error))?,
        );
    }
    Ok(())
}

/// The context `context set` writes: the settings given (flags or env), paths made absolute;
/// settings not given keep their value in an existing context of that name.
pub fn merged(
    existing: Option<&Context>,
    connection: &Connection,
) -> Result<Context, ContextError> {
    let absolute = |path: &PathBuf| std::path::absolute(path).unwrap_or_else(|_| path.clone());
    let given = Context {
        server: connection.server.clone(),
        ca_cert: connection.ca_cert.as_ref().map(absolute),
        cert: connection.cert.as_ref().map(absolute),
        key: connection.key.as_ref().map(absolute),
        token_file: connection.token_file.as_ref().map(absolute),
        timeout: connection
            .timeout
            .map(|timeout| format!("{}ms", timeout.as_millis())),
    };
    if given == Context::default() {
        return Err(ContextError::Empty);
    }
    let mut context = existing.cloned().unwrap_or_default();
    let take = |into: &mut Option<PathBuf>, from: Option<PathBuf>| {
        if from.is_some() {
            *into = from;
        }
    };
    if given.server.is_some() {
        context.server = given.server;
    }
    take(&mut context.ca_cert, given.ca_cert);
    take(&mut context.cert, given.cert);
    take(&mut context.key, given.key);
    take(&mut context.token_file, given.token_file);
    if given.timeout.is_some() {
        context.timeout = given.timeout;
    }
    Ok(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_context() {
        let context = Context {
            server: Some("https://prod:443".into()),
            ca_cert: Some("/etc/ca.pem".into()),
            timeout: Some("3s".into()),
            ..Context::default()
        };
        let mut connection = Connection {
            server: Some("http://127.0.0.1:1".into()),
            ..Connection::default()
        };
        fill(&mut connection, &context, "prod").unwrap();
        assert_eq!(connection.server.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(connection.ca_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(connection.timeout, Some(std::time::Duration::from_secs(3)));
    }

    #[test]
    fn a_token_is_never_part_of_a_context() {
        let error = serde_json::from_str::<Config>(
            r#"{"version": 1, "contexts": {"prod": {"server": "x", "token": "secret"}}}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
    }

    #[test]
    fn set_merges_into_an_existing_context() {
        let existing = Context {
            server: Some("old:1".into()),
            ca_cert: Some("/ca.pem".into()),
            ..Context::default()
        };
        let connection = Connection {
            server: Some("new:2".into()),
            ..Connection::default()
        };
        let context = merged(Some(&existing), &connection).unwrap();
        assert_eq!(context.server.as_deref(), Some("new:2"));
        assert_eq!(context.ca_cert, Some(PathBuf::from("/ca.pem")));
        assert!(matches!(
            merged(None, &Connection::default()),
            Err(ContextError::Empty)
        ));
    }
}
