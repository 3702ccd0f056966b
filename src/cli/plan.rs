//! `diff` and `apply`: policy files against the server, guarded by etags.
//!
//! A plan (`diff --out plan.json`) stores, per entitlement, the action, the revision and etag the
//! diff saw, the SHA-256 of the file's canonical policy, the file's path (for messages and line
//! numbers) and **the request itself**: `apply --plan` writes exactly what was reviewed, even if
//! the files changed or are gone since. Before writing anything it reads every entitlement again;
//! if any etag differs from the plan's (or a planned create now exists), the plan is stale:
//! exit 3 and nothing is written.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use prost_reflect::{DeserializeOptions, DynamicMessage};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::canonical::{self, name};
use super::connect::Client;
use super::files::{self, PolicyFile};
use super::output::{self, Finding, Severity};
use super::{Cli, Exit, Files, Format, ui};
use crate::pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Noop,
}

impl Action {
    fn verb(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Action::Create, false) => "created",
            (Action::Update, false) => "updated",
            (Action::Create, true) => "would create",
            (Action::Update, true) => "would update",
            (Action::Noop, _) => "unchanged",
        }
    }
}

/// The plan file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub version: u32,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `APP/ENTITLEMENT`.
    pub entitlement: String,
    pub action: Action,
    /// The current revision the diff saw (0 for a create).
    pub revision: i64,
    /// The current etag the diff saw (empty for a create).
    pub etag: String,
    /// SHA-256 of the canonical text of the file's policy.
    pub sha256: String,
    /// The file it came from.
    pub path: String,
    /// The `SetProvisionPolicyRequest` to send (ProtoJSON; its etag and flags are set by apply).
    pub request: Value,
}

/// One file's policy and what the server holds for its entitlement.
struct Item {
    file: PolicyFile,
    name: String,
    request: pb::SetProvisionPolicyRequest,
    /// The canonical text of the file's policy.
    text: String,
    current: Option<pb::EntitlementProvisionPolicy>,
}

impl Item {
    fn action(&self) -> Action {
        match &self.current {
            None => Action::Create,
            Some(current) if canonical::text(current) == self.text => Action::Noop,
            Some(_) => Action::Update,
        }
    }

    fn etag(&self) -> String {
        self.current
            .as_ref()
            .map(|current| current.etag.clone())
            .unwrap_or_default()
    }

    fn revision(&self) -> i64 {
        self.current
            .as_ref()
            .map(|current| current.revision)
            .unwrap_or_default()
    }

    fn entry(&self) -> Entry {
        let mut request = self.request.clone();
        request.etag.clear();
        request.validate_only = false;
        request.create_only = false;
        Entry {
            entitlement: self.name.clone(),
            action: self.action(),
            revision: self.revision(),
            etag: self.etag(),
            sha256: canonical::sha256(&self.text),
            path: self.file.path.clone(),
            request: canonical::to_json("SetProvisionPolicyRequest", &request),
        }
    }
}

/// Reads and parses FILES…; one entitlement in two files is an error. Findings are printed in
/// the chosen format.
fn load(
    cli: &Cli,
    files: &Files,
) -> Result<Vec<(PolicyFile, pb::SetProvisionPolicyRequest)>, Exit> {
    let found = match files::expand(files) {
        Ok(found) => found,
        Err(error) => {
            eprintln!("provisionctl: {error}");
            return Err(Exit::Invalid);
        }
    };
    let mut findings = Vec::new();
    let mut loaded = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for file in &found {
        match files::parse(file) {
            Ok(parsed) => {
                let Some(entitlement) = parsed
                    .request
                    .policy
                    .as_ref()
                    .and_then(|policy| policy.entitlement.as_ref())
                else {
                    findings.push(whole_file(
                        file,
                        "MISSING_ENTITLEMENT",
                        "the file has no policy.entitlement",
                    ));
                    continue;
                };
                let entitlement = name(entitlement);
                if let Some(first) = seen.insert(entitlement.clone(), file.path.clone()) {
                    findings.push(whole_file(
                        file,
                        "DUPLICATE_ENTITLEMENT",
                        &format!("{entitlement} is also in {first}"),
                    ));
                    continue;
                }
                loaded.push((file.clone(), parsed.request));
            }
            Err(mut errors) => findings.append(&mut errors),
        }
    }
    if findings
        .iter()
        .any(|finding| finding.severity == Severity::Error)
    {
        print!(
            "{}",
            output::report(cli.output, cli.color, &found, &findings)
        );
        return Err(Exit::Invalid);
    }
    Ok(loaded)
}

fn whole_file(file: &PolicyFile, reason: &str, message: &str) -> Finding {
    Finding {
        path: file.path.clone(),
        location: super::locate::locate(&file.text, "policy.entitlement"),
        field: "policy.entitlement".to_owned(),
        reason: reason.to_owned(),
        severity: Severity::Error,
        message: message.to_owned(),
    }
}

/// What the server holds now; NOT_FOUND is None.
async fn current(
    client: &mut Client,
    entitlement: &str,
    reference: pb::EntitlementRef,
) -> Result<Option<pb::EntitlementProvisionPolicy>, Exit> {
    let request = pb::GetProvisionPolicyRequest {
        entitlement: Some(reference),
        revision: 0,
        // The default, fully_consistent: a pipeline reads what it just wrote.
        consistency: None,
    };
    match client.get_provision_policy(request).await {
        Ok(response) => Ok(response.into_inner().policy),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(ui::failed(&format!("get {entitlement}"), &status)),
    }
}

async fn items(
    client: &mut Client,
    loaded: Vec<(PolicyFile, pb::SetProvisionPolicyRequest)>,
) -> Result<Vec<Item>, Exit> {
    let mut items = Vec::with_capacity(loaded.len());
    for (file, request) in loaded {
        let policy = request.policy.clone().unwrap_or_default();
        let reference = policy.entitlement.clone().unwrap_or_default();
        let name = name(&reference);
        let current = current(client, &name, reference).await?;
        items.push(Item {
            file,
            name,
            text: canonical::text(&policy),
            request,
            current,
        });
    }
    Ok(items)
}

/// A unified diff (3 lines of context), empty when equal.
pub fn unified(before: &str, after: &str, from: &str, to: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(from, to)
        .to_string()
}

fn colored(diff: &str, color: bool) -> String {
    if !color {
        return diff.to_owned();
    }
    diff.lines()
        .map(|line| {
            let code = if line.starts_with("+++") || line.starts_with("---") {
                "1"
            } else if line.starts_with('+') {
                "32"
            } else if line.starts_with('-') {
                "31"
            } else if line.starts_with("@@") {
                "36"
            } else {
                return format!("{line}\n");
            };
            format!("\x1b[{code}m{line}\x1b[0m\n")
        })
        .collect()
}

fn item_diff(item: &Item) -> String {
    let before = item
        .current
        .as_ref()
        .map(canonical::text)
        .unwrap_or_default();
    let from = match &item.current {
        Some(current) => format!("{} (server, revision {})", item.name, current.revision),
        None => format!("{} (not on the server)", item.name),
    };
    unified(&before, &item.text, &from, &item.file.path)
}

fn summary_line(item: &Item) -> String {
    match item.action() {
        Action::Create => format!("create    {}  ({})", item.name, item.file.path),
        Action::Update => format!(
            "update    {}  (revision {}, etag {}; {})",
            item.name,
            item.revision(),
            item.etag(),
            item.file.path
        ),
        Action::Noop => format!(
            "no change {}  (revision {}, etag {})",
            item.name,
            item.revision(),
            item.etag()
        ),
    }
}

fn counts(actions: impl Iterator<Item = Action>) -> String {
    let (mut create, mut update, mut noop) = (0, 0, 0);
    for action in actions {
        match action {
            Action::Create => create += 1,
            Action::Update => update += 1,
            Action::Noop => noop += 1,
        }
    }
    format!("Plan: {create} to create, {update} to update, {noop} unchanged.")
}

/// `diff FILES… [--detailed-exitcode] [--out plan.json]`.
pub async fn diff(cli: &Cli, files: &Files, detailed_exitcode: bool, out: Option<&Path>) -> Exit {
    let loaded = match load(cli, files) {
        Ok(loaded) => loaded,
        Err(exit) => return exit,
    };
    let mut client = match ui::client(cli).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let items = match items(&mut client, loaded).await {
        Ok(items) => items,
        Err(exit) => return exit,
    };
    let plan = Plan {
        version: 1,
        entries: items.iter().map(Item::entry).collect(),
    };
    if let Some(out) = out {
        let mut text = serde_json::to_string_pretty(&plan).expect("the plan prints");
        text.push('\n');
        if let Err(error) = std::fs::write(out, text) {
            eprintln!("provisionctl: cannot write {}: {error}", out.display());
            return Exit::Invalid;
        }
    }
    if cli.output == Format::Json {
        ui::print_json(&serde_json::to_value(&plan).expect("the plan is JSON"));
    } else {
        let color = output::use_color(cli.color);
        for item in &items {
            print!("{}", colored(&item_diff(item), color));
        }
        for item in &items {
            println!("{}", summary_line(item));
        }
        println!("{}", counts(items.iter().map(Item::action)));
        if let Some(out) = out {
            println!("Plan written to {}.", out.display());
        }
    }
    let pending = items.iter().any(|item| item.action() != Action::Noop);
    if detailed_exitcode && pending {
        Exit::Changes
    } else {
        Exit::Ok
    }
}

/// The plan's entries as items, each re-read from the server; a stale plan is exit 3.
async fn plan_items(client: &mut Client, path: &Path) -> Result<Vec<(Item, Entry)>, Exit> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        eprintln!("provisionctl: cannot read {}: {error}", path.display());
        Exit::Invalid
    })?;
    let plan: Plan = serde_json::from_str(&text).map_err(|error| {
        eprintln!("provisionctl: {} is not a plan: {error}", path.display());
        Exit::Invalid
    })?;
    if plan.version != 1 {
        eprintln!(
            "provisionctl: {}: plan version {} is not supported (1 is)",
            path.display(),
            plan.version
        );
        return Err(Exit::Invalid);
    }
    let descriptor = canonical::descriptor("SetProvisionPolicyRequest");
    let mut items = Vec::new();
    let mut stale = Vec::new();
    for entry in plan.entries {
        let request: pb::SetProvisionPolicyRequest = DynamicMessage::deserialize_with_options(
            descriptor.clone(),
            &entry.request,
            &DeserializeOptions::new(),
        )
        .map_err(|error| error.to_string())
        .and_then(|dynamic| dynamic.transcode_to().map_err(|error| error.to_string()))
        .map_err(|error| {
            eprintln!(
                "provisionctl: {}: the request of {} does not parse: {error}",
                path.display(),
                entry.entitlement
            );
            Exit::Invalid
        })?;
        let policy = request.policy.clone().unwrap_or_default();
        let reference = policy.entitlement.clone().unwrap_or_default();
        let text = canonical::text(&policy);
        if canonical::sha256(&text) != entry.sha256 || name(&reference) != entry.entitlement {
            eprintln!(
                "provisionctl: {}: the entry of {} was edited (its sha256 does not match its request)",
                path.display(),
                entry.entitlement
            );
            return Err(Exit::Invalid);
        }
        let current = current(client, &entry.entitlement, reference).await?;
        let now = current
            .as_ref()
            .map(|current| current.etag.as_str())
            .unwrap_or("");
        let fresh = match entry.action {
            Action::Create => current.is_none(),
            Action::Update | Action::Noop => current.is_some() && now == entry.etag,
        };
        if !fresh {
            stale.push(format!(
                "{}: planned at etag {}, now {}",
                entry.entitlement,
                if entry.etag.is_empty() {
                    "(none)"
                } else {
                    &entry.etag
                },
                if now.is_empty() { "(none)" } else { now },
            ));
        }
        // Line numbers point into the file when it still holds the planned policy.
        let file = match std::fs::read_to_string(&entry.path) {
            Ok(text) if file_matches(&entry, &text) => PolicyFile {
                path: entry.path.clone(),
                text,
            },
            _ => PolicyFile {
                path: format!("{}#{}", path.display(), entry.entitlement),
                text: serde_json::to_string_pretty(&entry.request).expect("JSON prints"),
            },
        };
        items.push((
            Item {
                file,
                name: entry.entitlement.clone(),
                request,
                text,
                current,
            },
            entry,
        ));
    }
    if !stale.is_empty() {
        eprintln!("provisionctl: plan is stale (changed since the diff); nothing written:");
        for line in stale {
            eprintln!("  {line}");
        }
        return Err(Exit::Conflict);
    }
    Ok(items)
}

fn file_matches(entry: &Entry, text: &str) -> bool {
    let file = PolicyFile {
        path: entry.path.clone(),
        text: text.to_owned(),
    };
    match files::parse(&file) {
        Ok(parsed) => parsed
            .request
            .policy
            .as_ref()
            .is_some_and(|policy| canonical::sha256(&canonical::text(policy)) == entry.sha256),
        Err(_) => false,
    }
}

/// `apply FILES… | --plan plan.json [--dry-run] [--yes]`.
pub async fn apply(
    cli: &Cli,
    files: &Files,
    plan: Option<&Path>,
    dry_run: bool,
    yes: bool,
) -> Exit {
    let loaded = if plan.is_none() {
        match load(cli, files) {
            Ok(loaded) => Some(loaded),
            Err(exit) => return exit,
        }
    } else {
        None
    };
    let mut client = match ui::client(cli).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let items: Vec<Item> = match (plan, loaded) {
        (Some(path), _) => match plan_items(&mut client, path).await {
            // A fresh plan's etags are the current ones; its noop entries stay noops.
            Ok(items) => items.into_iter().map(|(item, _)| item).collect(),
            Err(exit) => return exit,
        },
        (None, Some(loaded)) => match items(&mut client, loaded).await {
            Ok(items) => items,
            Err(exit) => return exit,
        },
        (None, None) => unreachable!("files were loaded"),
    };
    let changes: Vec<&Item> = items
        .iter()
        .filter(|item| item.action() != Action::Noop)
        .collect();
    if changes.is_empty() {
        report_results(cli, &items, &BTreeMap::new(), dry_run);
        return Exit::Ok;
    }
    for item in &changes {
        eprintln!("{}", summary_line(item));
    }
    eprintln!("{}", counts(items.iter().map(Item::action)));
    if !dry_run && let Err(exit) = ui::confirm("Apply these changes?", yes) {
        return exit;
    }
    let progress = if changes.len() > 1 && std::io::stderr().is_terminal() {
        indicatif::ProgressBar::with_draw_target(
            Some(changes.len() as u64),
            indicatif::ProgressDrawTarget::stderr(),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut written: BTreeMap<String, (i64, String)> = BTreeMap::new();
    let mut findings = Vec::new();
    let mut exit = Exit::Ok;
    for item in &changes {
        progress.set_message(item.name.clone());
        let mut request = item.request.clone();
        let create = item.action() == Action::Create;
        request.etag = if create { String::new() } else { item.etag() };
        request.create_only = create;
        request.validate_only = dry_run;
        if let Some(policy) = request.policy.as_mut() {
            *policy = canonical::strip(policy);
        }
        match client.set_provision_policy(request).await {
            Ok(response) => {
                let response = response.into_inner();
                let policy = response.policy.unwrap_or_default();
                written.insert(item.name.clone(), (policy.revision, policy.etag));
                findings.extend(output::findings_of(&item.file, &response.warnings));
            }
            Err(status) => {
                let violations = output::violations_of_status(&status);
                let code = Exit::of_code(status.code());
                if code == Exit::Invalid && !violations.is_empty() {
                    findings.extend(output::findings_of(&item.file, &violations));
                    exit = exit.max(Exit::Invalid);
                } else {
                    progress.abandon();
                    let what = format!("set {} ({})", item.name, item.file.path);
                    let exit = exit.max(ui::failed(&what, &status));
                    if !written.is_empty() && !dry_run {
                        eprintln!(
                            "provisionctl: written before the failure: {}",
                            written.keys().cloned().collect::<Vec<_>>().join(", ")
                        );
                    }
                    return exit;
                }
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    if !findings.is_empty() {
        let files: Vec<PolicyFile> = items.iter().map(|item| item.file.clone()).collect();
        let text = output::report(
            if exit == Exit::Ok {
                Format::Text
            } else {
                cli.output
            },
            cli.color,
            &files,
            &findings,
        );
        if exit == Exit::Ok {
            // Warnings only: on stderr, so stdout stays the results.
            eprint!("{text}");
        } else {
            print!("{text}");
            eprintln!(
                "provisionctl: some policies were refused; the others were {}",
                if dry_run { "validated" } else { "written" }
            );
            return exit;
        }
    }
    report_results(cli, &items, &written, dry_run);
    exit
}

fn report_results(
    cli: &Cli,
    items: &[Item],
    written: &BTreeMap<String, (i64, String)>,
    dry_run: bool,
) {
    if cli.output == Format::Json {
        let results: Vec<Value> = items
            .iter()
            .map(|item| {
                let (revision, etag) = written
                    .get(&item.name)
                    .cloned()
                    .unwrap_or_else(|| (item.revision(), item.etag()));
                json!({
                    "entitlement": item.name,
                    "path": item.file.path,
                    "action": item.action(),
                    "written": !dry_run && item.action() != Action::Noop,
                    "revision": revision,
                    "etag": etag,
                })
            })
            .collect();
        ui::print_json(&json!({"version": 1, "dryRun": dry_run, "results": results}));
        return;
    }
    for item in items {
        let action = item.action();
        match (action, written.get(&item.name)) {
            (Action::Noop, _) => {
                println!("unchanged {}  (revision {})", item.name, item.revision())
            }
            (_, Some((revision, _))) if !dry_run => {
                println!(
                    "{} {}  (revision {revision})",
                    action.verb(false),
                    item.name
                )
            }
            _ => println!("{} {}  (validated)", action.verb(true), item.name),
        }
    }
}
