//! `provisionctl validate FILES… [--fail-on-warn]`, offline unless a server is named.
//!
//! Offline it runs exactly the server's code for a Set: `policy::lifecycle::check_set_request`
//! on the request and `policy::check_static` on the resource (its output-only fields cleared,
//! as the server does). The graph rules (DANGLING_DELEGATION, DELEGATION_CYCLE,
//! MISSING_PROXY_BINDING, …) need the stored policies: one notice says so when a file delegates.
//! With `--server` (or PROVISIONCTL_SERVER) each file goes to ValidateProvisionPolicy, which runs
//! every rule against what is stored; its violations are located with the same mapping.

use super::files::{self, PolicyFile};
use super::output::{self, Finding, Severity};
use super::{Cli, Exit, Files};
use crate::pb;
use crate::policy;

pub async fn run(cli: &Cli, files: &Files, fail_on_warn: bool) -> Exit {
    let loaded = match files::expand(files) {
        Ok(loaded) => loaded,
        Err(error) => {
            eprintln!("provisionctl: {error}");
            return Exit::Invalid;
        }
    };
    let mut client = match &cli.connection.server {
        None => None,
        Some(server) => {
            eprintln!(
                "provisionctl: validating {} file(s) against {server}",
                loaded.len()
            );
            match cli.connection.client().await {
                Ok(client) => Some(client),
                Err(error) => {
                    eprintln!("provisionctl: {error}");
                    return Exit::Unreachable;
                }
            }
        }
    };
    let mut findings = Vec::new();
    let mut exit = Exit::Ok;
    let mut notice_given = false;
    let mut entitlements: Vec<(String, String)> = Vec::new();
    for file in &loaded {
        findings.extend(files::duplicate_keys(file));
        let parsed = match files::parse(file) {
            Ok(parsed) => parsed,
            Err(errors) => {
                findings.extend(errors);
                continue;
            }
        };
        let request = parsed.request;
        findings.extend(output::findings_of(
            file,
            &policy::lifecycle::check_set_request(&request),
        ));
        let mut resource = request.policy.unwrap_or_default();
        crate::store::record::clear_output_fields(&mut resource);
        if let Some(finding) = same_entitlement(file, &resource, &mut entitlements) {
            findings.push(finding);
        }
        match &mut client {
            None => {
                findings.extend(output::findings_of(file, &policy::check_static(&resource)));
                if !notice_given && policy::needs_graph_check(&resource) {
                    notice_given = true;
                    findings.push(graph_notice(file, &resource));
                }
            }
            Some(client) => {
                let request = pb::ValidateProvisionPolicyRequest {
                    policy: Some(resource),
                    consistency: None,
                };
                match client.validate_provision_policy(request).await {
                    Ok(response) => {
                        findings.extend(output::findings_of(file, &response.get_ref().violations));
                    }
                    Err(status) => {
                        eprintln!(
                            "provisionctl: {}: ValidateProvisionPolicy failed: {:?}: {}",
                            file.path,
                            status.code(),
                            status.message()
                        );
                        let located = output::findings_of_status(file, &status);
                        if located.is_empty() {
                            findings.push(Finding {
                                path: file.path.clone(),
                                location: super::locate::Location::START,
                                field: String::new(),
                                reason: format!("{:?}", status.code()).to_uppercase(),
                                severity: Severity::Error,
                                message: status.message().to_owned(),
                            });
                        }
                        findings.extend(located);
                        exit = exit.max(Exit::of_code(status.code()));
                    }
                }
            }
        }
    }
    print!(
        "{}",
        output::report(cli.output, cli.color, &loaded, &findings)
    );
    let failing = findings.iter().any(|finding| {
        finding.severity == Severity::Error
            || (fail_on_warn && finding.severity == Severity::Warning)
    });
    if failing {
        exit = exit.max(Exit::Invalid);
    }
    exit
}

/// One entitlement in two files: which one would win is an accident of the order.
fn same_entitlement(
    file: &PolicyFile,
    resource: &pb::EntitlementProvisionPolicy,
    seen: &mut Vec<(String, String)>,
) -> Option<Finding> {
    let entitlement = resource.entitlement.as_ref()?;
    let name = format!("{}/{}", entitlement.app_id, entitlement.entitlement_id);
    if let Some((_, first)) = seen.iter().find(|(seen, _)| *seen == name) {
        let field = "policy.entitlement".to_owned();
        return Some(Finding {
            path: file.path.clone(),
            location: super::locate::locate(&file.text, &field),
            field,
            reason: "DUPLICATE_ENTITLEMENT".to_owned(),
            severity: Severity::Error,
            message: format!("{name} is also the entitlement of {first}; one file per entitlement"),
        });
    }
    seen.push((name, file.path.clone()));
    None
}

/// The notice that the delegation rules were not run, at the file's first delegation.
fn graph_notice(file: &PolicyFile, resource: &pb::EntitlementProvisionPolicy) -> Finding {
    let field = first_delegation(resource).unwrap_or_else(|| "policy".to_owned());
    Finding {
        path: file.path.clone(),
        location: super::locate::locate_key(&file.text, &field),
        field,
        reason: "GRAPH_RULES_NOT_CHECKED".to_owned(),
        severity: Severity::Notice,
        message: "the delegation rules (DANGLING_DELEGATION, DELEGATION_CYCLE, \
                  DELEGATION_TOO_DEEP, MISSING_PROXY_BINDING) need the stored policies: \
                  validate with --server to check them"
            .to_owned(),
    }
}

fn first_delegation(resource: &pb::EntitlementProvisionPolicy) -> Option<String> {
    use pb::provision_policy::Typ;
    let sides = [
        ("provision_policy", resource.provision_policy.as_ref()),
        ("deprovision_policy", resource.deprovision_policy.as_ref()),
    ];
    for (name, policy) in sides {
        match policy.and_then(|policy| policy.typ.as_ref()) {
            Some(Typ::Delegated(_)) => return Some(format!("policy.{name}.delegated")),
            Some(Typ::MultiStep(multi_step)) => {
                for (index, step) in multi_step.provision_steps.iter().enumerate() {
                    if matches!(step.typ, Some(Typ::Delegated(_))) {
                        return Some(format!(
                            "policy.{name}.multi_step.provision_steps[{index}].delegated"
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    None
}
