//! Every policy of `examples/policies/` is valid and is accepted as it is: each file, in name
//! order, is validated (valid, no violation) and set (OK, no warning) against one server on
//! 127.0.0.1:0, and the stored resource is what was sent. Together they cover every arm of
//! ProvisionPolicy, every kind of connector provisioning and every kind of assignee.

mod common;
#[path = "golden/protojson.rs"]
mod protojson;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use provisiond::pb;
use provisiond::pb::connector_provision::ProvisionType;
use provisiond::pb::connector_provision::account_provision::StorageType;
use provisiond::pb::provision_policy::Typ;
use provisiond::pb::provisioner_assignment::Typ as Assignee;

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("read {}: {error}", dir.display()))
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> pb::SetProvisionPolicyRequest {
    let text = std::fs::read_to_string(path).expect("read example");
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()));
    protojson::from_json("SetProvisionPolicyRequest", &json)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

#[tokio::test]
async fn every_example_validates_and_sets_cleanly_in_file_order() {
    let files = example_files();
    assert!(files.len() >= 8, "only {} examples", files.len());
    let server = common::TestServer::start().await;
    let mut client = server.client.clone();
    for path in &files {
        let name = path.file_name().expect("name").to_string_lossy();
        let request = load(path);
        let resource = request.policy.clone().expect("an example sets `policy`");

        let validated = client
            .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
                consistency: None,
                policy: Some(resource.clone()),
            })
            .await
            .unwrap_or_else(|status| panic!("{name}: Validate failed: {status:?}"))
            .into_inner();
        assert!(
            validated.valid && validated.violations.is_empty(),
            "{name}: {:?}",
            validated.violations
        );

        let set = client
            .set_provision_policy(request.clone())
            .await
            .unwrap_or_else(|status| panic!("{name}: Set failed: {status:?}"))
            .into_inner();
        assert!(set.warnings.is_empty(), "{name}: {:?}", set.warnings);
        let stored = set.policy.expect("the stored resource");
        assert_eq!(stored.revision, 1, "{name}");
        assert_eq!(stored.entitlement, resource.entitlement, "{name}");
        assert_eq!(stored.provision_policy, resource.provision_policy, "{name}");
        assert_eq!(
            stored.deprovision_policy, resource.deprovision_policy,
            "{name}"
        );
    }
}

/// The variants an example shows, by name: `connector.account`, `manual.assignee.group`, …
fn variants(policy: &pb::ProvisionPolicy, seen: &mut BTreeSet<&'static str>) {
    let mut pending = vec![policy];
    while let Some(policy) = pending.pop() {
        let Some(typ) = &policy.typ else { continue };
        let variant = match typ {
            Typ::Connector(connector) => match &connector.provision_type {
                None => "connector",
                Some(ProvisionType::DefaultBehavior(_)) => "connector.default_behavior",
                Some(ProvisionType::Account(account)) => {
                    if account.config.is_some() {
                        seen.insert("connector.account.config");
                    }
                    match &account.storage_type {
                        None => "connector.account",
                        Some(StorageType::SaveToVault(_)) => "connector.account.save_to_vault",
                        Some(StorageType::DoNotSave(_)) => "connector.account.do_not_save",
                    }
                }
                Some(ProvisionType::DeleteAccount(_)) => "connector.delete_account",
            },
            Typ::Manual(manual) => match manual.assignee.as_ref().and_then(|a| a.typ.as_ref()) {
                None => "manual.user_ids",
                Some(Assignee::Users(_)) => "manual.assignee.users",
                Some(Assignee::AppOwners(_)) => "manual.assignee.app_owners",
                Some(Assignee::Group(_)) => "manual.assignee.group",
                Some(Assignee::Manager(_)) => "manual.assignee.manager",
                Some(Assignee::Expression(_)) => "manual.assignee.expression",
                Some(Assignee::EntitlementOwners(_)) => "manual.assignee.entitlement_owners",
            },
            Typ::Delegated(_) => "delegated",
            Typ::Webhook(_) => "webhook",
            Typ::MultiStep(multi) => {
                pending.extend(&multi.provision_steps);
                "multi_step"
            }
            Typ::ExternalTicket(_) => "external_ticket",
            Typ::Unconfigured(_) => "unconfigured",
            Typ::Action(_) => "action",
            Typ::DevicePlacement(_) => "device_placement",
        };
        seen.insert(variant);
    }
}

#[test]
fn the_examples_cover_every_arm_and_assignee() {
    let mut seen = BTreeSet::new();
    let mut deprovision = false;
    for path in example_files() {
        let resource = load(&path).policy.expect("policy");
        for policy in resource.provision_policy.iter() {
            variants(policy, &mut seen);
        }
        if let Some(policy) = &resource.deprovision_policy {
            deprovision = true;
            variants(policy, &mut seen);
        }
    }
    let wanted = [
        "connector",
        "connector.default_behavior",
        "connector.account.config",
        "connector.account.save_to_vault",
        "connector.account.do_not_save",
        "connector.delete_account",
        "manual.assignee.users",
        "manual.assignee.app_owners",
        "manual.assignee.group",
        "manual.assignee.manager",
        "manual.assignee.expression",
        "manual.assignee.entitlement_owners",
        "delegated",
        "webhook",
        "multi_step",
        "external_ticket",
        "unconfigured",
        "action",
        "device_placement",
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|variant| !seen.contains(variant))
        .collect();
    assert!(missing.is_empty(), "no example shows {missing:?}");
    assert!(deprovision, "no example has a deprovision_policy");
}

/// After every example is set, each one's plan in both directions resolves completely to leaf
/// steps, each reached from the example's own entitlement; the delegating example's steps come
/// from its target's policy.
#[tokio::test]
async fn every_example_resolves_to_a_complete_plan_of_leaf_steps() {
    let server = common::TestServer::start().await;
    let mut client = server.client.clone();
    let mut entitlements = Vec::new();
    for path in example_files() {
        let request = load(&path);
        entitlements.push(request.policy.clone().unwrap().entitlement.unwrap());
        client.set_provision_policy(request).await.expect("set");
    }
    let mut delegated_through = 0;
    for entitlement in &entitlements {
        for direction in [
            pb::ProvisionDirection::Provision,
            pb::ProvisionDirection::Deprovision,
        ] {
            let plan = client
                .resolve_provision_plan(pb::ResolveProvisionPlanRequest {
                    entitlement: Some(entitlement.clone()),
                    policy: None,
                    direction: direction as i32,
                })
                .await
                .expect("resolve")
                .into_inner();
            let what = format!("{entitlement:?} {direction:?}");
            assert!(plan.complete, "{what}: {plan:?}");
            assert!(plan.violations.is_empty(), "{what}");
            assert!(!plan.steps.is_empty(), "{what}");
            assert!(!plan.read_at.is_empty());
            for step in &plan.steps {
                let leaf = step
                    .step
                    .as_ref()
                    .and_then(|s| s.typ.as_ref())
                    .expect("a leaf");
                assert!(
                    !matches!(leaf, Typ::MultiStep(_) | Typ::Delegated(_)),
                    "{what}: {leaf:?}"
                );
                assert_eq!(step.via.first(), Some(entitlement), "{what}");
                assert!(step.field.starts_with("policy."), "{what}: {}", step.field);
                if step.via.len() > 1 {
                    delegated_through += 1;
                }
            }
        }
    }
    assert!(
        delegated_through > 0,
        "the delegating example resolves through its target"
    );
}
