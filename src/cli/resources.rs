//! get, history, rollback, delete and watch: one entitlement's policy and the change log.

use serde_json::{Value, json};

use super::canonical::{self, name, parse_name};
use super::{Cli, Exit, Format, ui};
use crate::pb;

fn entitlement_arg(text: &str) -> Result<pb::EntitlementRef, Exit> {
    parse_name(text).map_err(|error| {
        eprintln!("provisionctl: {error}");
        Exit::Usage
    })
}

fn timestamp(time: &Option<prost_types::Timestamp>) -> String {
    time.as_ref()
        .map(|time| time.to_string())
        .unwrap_or_default()
}

/// `get APP/ENT [--revision N]`: `-o json` prints the canonical file (what `apply` takes);
/// text adds the output-only fields as a header above it.
pub async fn get(cli: &Cli, entitlement: &str, revision: Option<i64>) -> Exit {
    let reference = match entitlement_arg(entitlement) {
        Ok(reference) => reference,
        Err(exit) => return exit,
    };
    let mut client = match ui::client(cli).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let request = pb::GetProvisionPolicyRequest {
        entitlement: Some(reference),
        revision: revision.unwrap_or(0),
        // The default, fully_consistent: a pipeline reads what it just wrote.
        consistency: None,
    };
    let policy = match client.get_provision_policy(request).await {
        Ok(response) => response.into_inner().policy.unwrap_or_default(),
        Err(status) => return ui::failed(&format!("get {entitlement}"), &status),
    };
    if cli.output != Format::Json {
        println!("# {entitlement}");
        println!("# revision:    {}", policy.revision);
        println!("# etag:        {}", policy.etag);
        println!("# updated:     {}", timestamp(&policy.update_time));
        println!("# actor:       {}", policy.actor);
        if !policy.change_cause.is_empty() {
            println!("# cause:       {}", policy.change_cause.replace('\n', " "));
        }
    }
    print!("{}", canonical::text(&policy));
    Exit::Ok
}

/// `history APP/ENT [--limit N]`: newest first, deletes included.
pub async fn history(cli: &Cli, entitlement: &str, limit: u32) -> Exit {
    let reference = match entitlement_arg(entitlement) {
        Ok(reference) => reference,
        Err(exit) => return exit,
    };
    let mut client = match ui::client(cli).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let mut revisions = Vec::new();
    let mut page_token = String::new();
    while revisions.len() < limit as usize {
        let request = pb::ListProvisionPolicyRevisionsRequest {
            entitlement: Some(reference.clone()),
            page_size: (limit as usize - revisions.len()).min(1000) as i32,
            page_token: page_token.clone(),
        };
        match client.list_provision_policy_revisions(request).await {
            Ok(response) => {
                let response = response.into_inner();
                revisions.extend(response.revisions);
                page_token = response.next_page_token;
                if page_token.is_empty() {
                    break;
                }
            }
            Err(status) => return ui::failed(&format!("history {entitlement}"), &status),
        }
    }
    revisions.truncate(limit as usize);
    if cli.output == Format::Json {
        let entries: Vec<Value> = revisions
            .iter()
            .map(|revision| {
                let mut value = canonical::to_json("ProvisionPolicyRevision", revision);
                if let (Some(object), Some(policy)) = (value.as_object_mut(), &revision.policy) {
                    // The policy as a file would hold it; its output-only fields are the entry's.
                    let file: Value =
                        serde_json::from_str(&canonical::text(policy)).expect("canonical JSON");
                    object.insert("policy".into(), file["policy"].clone());
                }
                value
            })
            .collect();
        ui::print_json(&json!({ "entitlement": entitlement, "revisions": entries }));
        return Exit::Ok;
    }
    println!(
        "{:<9} {:<8} {:<24} {:<16} CAUSE",
        "REVISION", "KIND", "TIME", "ACTOR"
    );
    for revision in &revisions {
        let kind = if revision.deleted { "delete" } else { "set" };
        let actor = if revision.actor.is_empty() {
            "-"
        } else {
            &revision.actor
        };
        println!(
            "{:<9} {:<8} {:<24} {:<16} {}",
            revision.revision,
            kind,
            timestamp(&revision.create_time),
            actor,
            revision.change_cause.replace('\n', " ")
        );
    }
    Exit::Ok
}

/// `rollback APP/ENT --to N`: shows what changes, asks, then rolls back guarded by the etag it
/// showed (a write in between: exit 3, nothing written).
pub async fn rollback(cli: &Cli, entitlement: &str, to: i64, yes: bool) -> Exit {
    let reference = match entitlement_arg(entitlement) {
        Ok(reference) => reference,
        Err(exit) => return exit,
    };
    let mut client = match ui::client(cli).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let target = match client
        .get_provision_policy(pb::GetProvisionPolicyRequest {
            entitlement: Some(reference.clone()),
            revision: to,
            // The default, fully_consistent: a pipeline reads what it just wrote.
            consistency: None,
        })
        .await
    {
        Ok(response) => response.into_inner().policy.unwrap_or_default(),
        Err(status) => {
            return ui::failed(&format!("get {entitlement} revision {to}"), &status);
        }
    };
    let current = match client
        .get_provision_policy(pb::GetProvisionPolicyRequest {
            entitlement: Some(reference.clone()),
            revision: 0,
            // The default, fully_consistent: a pipeline reads what it just wrote.
            consistency: None,
        })
        .await
    {
        Ok(response) => response.into_inner().policy,
        Err(status) if status.code() == tonic::Code::NotFound => None,
        Err(status) => return ui::failed(&format!("get {entitlement}"), &status),
    };
    let before = current.as_ref().map(canonical::text).unwrap_or_default();
    let after = canonical::text(&target);
    let header = match &current {
        Some(current) => format!("{entitlement} revision {}", current.revision),
        None => format!("{entitlement} (deleted)"),
    };
    eprint!(
        "{}",
        super::plan::unified(&before, &after, &header, &format!("revision {to}"))
    );
    if let Err(exit) = ui::confirm(&format!("Roll {entitlement} back to revision {to}?"), yes) {
        return exit;
    }
    let request = pb::RollbackProvisionPolicyRequest {
        entitlement: Some(reference),
        revision: to,
        etag: current.map(|current| current.etag).unwrap_or_default(),
        ..Default::default()
    };
    match client.rollback_provision_policy(request).await {
        Ok(response) => {
            let response = response.into_inner();
            let policy = response.policy.unwrap_or_default();
            if cli.output == Format::Json {
                ui::print_json(&json!({
                    "entitlement": entitlement,
                    "revision": policy.revision,
                    "etag": policy.etag,
                    "changeCursor": response.change_cursor,
                }));
            } else {
                println!(
                    "rolled back {entitlement} to revision {to}: now revision {}",
                    policy.revision
                );
            }
            Exit::Ok
        }
        Err(status) => ui::failed(&format!("rollback {entitlement}"), &status),
    }
}

/// `delete APP/ENT`: a tombstone revision, guarded by the etag of the policy it asked about.
pub async fn delete(cli: &Cli, entitlement: &str, yes: bool) -> Exit {
    let reference = match entitlement_arg(entitlement) {
        Ok(reference) => reference,
        Err(exit) => return exit,
    };
    let mut client = match ui::client(cli).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let current = match client
        .get_provision_policy(pb::GetProvisionPolicyRequest {
            entitlement: Some(reference.clone()),
            revision: 0,
            // The default, fully_consistent: a pipeline reads what it just wrote.
            consistency: None,
        })
        .await
    {
        Ok(response) => response.into_inner().policy.unwrap_or_default(),
        Err(status) => return ui::failed(&format!("get {entitlement}"), &status),
    };
    if let Err(exit) = ui::confirm(
        &format!("Delete {entitlement} (revision {})?", current.revision),
        yes,
    ) {
        return exit;
    }
    let request = pb::DeleteProvisionPolicyRequest {
        entitlement: Some(reference),
        etag: current.etag,
        ..Default::default()
    };
    match client.delete_provision_policy(request).await {
        Ok(response) => {
            let response = response.into_inner();
            if cli.output == Format::Json {
                ui::print_json(&json!({
                    "entitlement": entitlement,
                    "revision": response.revision,
                    "changeCursor": response.change_cursor,
                }));
            } else {
                println!("deleted {entitlement}: revision {}", response.revision);
            }
            Exit::Ok
        }
        Err(status) => ui::failed(&format!("delete {entitlement}"), &status),
    }
}

fn kind_name(kind: i32) -> &'static str {
    use pb::policy_change::Kind;
    match Kind::try_from(kind) {
        Ok(Kind::Put) => "put",
        Ok(Kind::Delete) => "delete",
        Ok(Kind::BindingCreated) => "binding-created",
        Ok(Kind::BindingDeleted) => "binding-deleted",
        Ok(Kind::Initial) => "initial",
        _ => "unknown",
    }
}

/// One change as a line: `CURSOR KIND APP/ENT revision N actor` (bindings: `SOURCE -> DEST`).
fn change_line(cursor: &str, change: &pb::PolicyChange) -> String {
    let subject = match &change.binding {
        Some(binding) => format!(
            "{} -> {}",
            binding.source.as_ref().map(name).unwrap_or_default(),
            binding.destination.as_ref().map(name).unwrap_or_default()
        ),
        None => change.entitlement.as_ref().map(name).unwrap_or_default(),
    };
    let mut line = format!("{cursor} {} {subject}", kind_name(change.kind));
    if change.revision != 0 {
        line.push_str(&format!(" revision {}", change.revision));
    }
    if !change.actor.is_empty() {
        line.push_str(&format!(" by {}", change.actor));
    }
    line
}

/// One change as a JSON object: the cursor and commit time of its write, then the change's
/// ProtoJSON (its policy as a file would hold it).
fn change_json(message: &pb::WatchProvisionPoliciesResponse, change: &pb::PolicyChange) -> Value {
    let mut value = canonical::to_json("PolicyChange", change);
    if let Some(object) = value.as_object_mut() {
        object.insert("kind".into(), Value::from(kind_name(change.kind)));
        object.insert("cursor".into(), Value::from(message.cursor.clone()));
        if let Some(time) = &message.commit_time {
            object.insert("commitTime".into(), Value::from(time.to_string()));
        }
        if let Some(policy) = &change.policy {
            let file: Value =
                serde_json::from_str(&canonical::text(policy)).expect("canonical JSON");
            object.insert("policy".into(), file["policy"].clone());
            object.insert("revision".into(), Value::from(change.revision));
        }
    }
    value
}

/// `watch [--from CURSOR] [--app APP]`: one line (or JSON object) per change, flushed as it
/// comes; every line carries the cursor to resume after it. It runs until interrupted or the
/// server ends the stream (then exit 4 with the cursor to resume from).
pub async fn watch(cli: &Cli, from: Option<&str>, app: Option<&str>) -> Exit {
    let mut client = match ui::client(cli).await {
        Ok(client) => client,
        Err(exit) => return exit,
    };
    let request = pb::WatchProvisionPoliciesRequest {
        start_cursor: from.unwrap_or_default().to_owned(),
        app_id: app.unwrap_or_default().to_owned(),
        ..Default::default()
    };
    let mut stream = match client.watch_provision_policies(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return ui::failed("watch", &status),
    };
    let mut last = from.unwrap_or_default().to_owned();
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                for change in &message.changes {
                    if cli.output == Format::Json {
                        println!("{}", change_json(&message, change));
                    } else {
                        println!("{}", change_line(&message.cursor, change));
                    }
                }
                last = message.cursor;
            }
            Ok(None) => {
                eprintln!("provisionctl: watch: the stream ended; resume with --from {last}");
                return Exit::Unreachable;
            }
            Err(status) => {
                let exit = ui::failed("watch", &status);
                if !last.is_empty() {
                    eprintln!("provisionctl: resume with --from {last}");
                }
                return exit;
            }
        }
    }
}
