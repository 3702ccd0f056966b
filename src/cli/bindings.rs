//! `bindings list|create|delete`: proxy bindings, `--source/--destination APP/ENT`.

use serde_json::{Value, json};

use super::canonical::{self, name, parse_name};
use super::{BindingsCommand, Cli, Exit, Format, ui};
use crate::pb;

fn reference(flag: &str, text: Option<&str>) -> Result<Option<pb::EntitlementRef>, Exit> {
    match text {
        None => Ok(None),
        Some(text) => parse_name(text).map(Some).map_err(|error| {
            eprintln!("provisionctl: {flag}: {error}");
            Exit::Usage
        }),
    }
}

fn binding_line(binding: &pb::ProxyBinding) -> String {
    format!(
        "{} -> {}{}",
        binding.source.as_ref().map(name).unwrap_or_default(),
        binding.destination.as_ref().map(name).unwrap_or_default(),
        if binding.implicit { " (implicit)" } else { "" }
    )
}

pub async fn run(cli: &Cli, command: &BindingsCommand) -> Exit {
    match bindings(cli, command).await {
        Ok(exit) | Err(exit) => exit,
    }
}

async fn bindings(cli: &Cli, command: &BindingsCommand) -> Result<Exit, Exit> {
    match command {
        BindingsCommand::List {
            source,
            destination,
        } => {
            let source = reference("--source", source.as_deref())?;
            let destination = reference("--destination", destination.as_deref())?;
            let mut client = ui::client(cli).await?;
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = pb::ListProxyBindingsRequest {
                    source: source.clone(),
                    destination: destination.clone(),
                    page_size: 1000,
                    page_token,
                };
                let response = client
                    .list_proxy_bindings(request)
                    .await
                    .map_err(|status| ui::failed("list bindings", &status))?
                    .into_inner();
                all.extend(response.bindings);
                page_token = response.next_page_token;
                if page_token.is_empty() {
                    break;
                }
            }
            if cli.output == Format::Json {
                let items: Vec<Value> = all
                    .iter()
                    .map(|binding| canonical::to_json("ProxyBinding", binding))
                    .collect();
                ui::print_json(&json!({ "bindings": items }));
            } else {
                for binding in &all {
                    println!("{}", binding_line(binding));
                }
            }
            Ok(Exit::Ok)
        }
        BindingsCommand::Create {
            source,
            destination,
        } => {
            let source = reference("--source", Some(source))?;
            let destination = reference("--destination", Some(destination))?;
            let mut client = ui::client(cli).await?;
            let request = pb::CreateProxyBindingRequest {
                binding: Some(pb::ProxyBinding {
                    source,
                    destination,
                    ..Default::default()
                }),
            };
            let binding = client
                .create_proxy_binding(request)
                .await
                .map_err(|status| ui::failed("create binding", &status))?
                .into_inner()
                .binding
                .unwrap_or_default();
            if cli.output == Format::Json {
                ui::print_json(&canonical::to_json("ProxyBinding", &binding));
            } else {
                println!("created {}", binding_line(&binding));
            }
            Ok(Exit::Ok)
        }
        BindingsCommand::Delete {
            source,
            destination,
        } => {
            let source_ref = reference("--source", Some(source))?;
            let destination_ref = reference("--destination", Some(destination))?;
            let mut client = ui::client(cli).await?;
            client
                .delete_proxy_binding(pb::DeleteProxyBindingRequest {
                    source: source_ref,
                    destination: destination_ref,
                })
                .await
                .map_err(|status| ui::failed("delete binding", &status))?;
            if cli.output == Format::Json {
                ui::print_json(&json!({"deleted": {"source": source, "destination": destination}}));
            } else {
                println!("deleted {source} -> {destination}");
            }
            Ok(Exit::Ok)
        }
    }
}
