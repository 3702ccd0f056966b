//! The rules of `ConnectorProvision`. Every member is optional: an empty `connector {}` means
//! "the app's connector provisions as usual".

use super::path::Path;
use super::violations::Violations;
use super::{cel, ids, lists};
use crate::pb;
use crate::pb::connector_provision::ProvisionType;
use crate::pb::connector_provision::account_provision::StorageType;

pub(super) fn check<'a>(
    violations: &mut Violations<'a>,
    path: &Path,
    connector: &'a pb::ConnectorProvision,
) {
    match &connector.provision_type {
        None => {}
        Some(ProvisionType::DefaultBehavior(default)) => ids::check_optional(
            violations,
            &path.field("default_behavior").field("connector_id"),
            &default.connector_id,
        ),
        Some(ProvisionType::Account(account)) => {
            check_account(violations, &path.field("account"), account)
        }
        Some(ProvisionType::DeleteAccount(delete)) => ids::check_required(
            violations,
            &path.field("delete_account").field("connector_id"),
            &delete.connector_id,
        ),
    }
}

fn check_account<'a>(
    violations: &mut Violations<'a>,
    path: &Path,
    account: &'a pb::connector_provision::AccountProvision,
) {
    ids::check_required(
        violations,
        &path.field("connector_id"),
        &account.connector_id,
    );
    ids::check_optional(violations, &path.field("schema_id"), &account.schema_id);
    if let Some(config) = &account.config {
        cel::check_config(violations, &path.field("config"), config);
    }
    match &account.storage_type {
        None | Some(StorageType::DoNotSave(_)) => {}
        Some(StorageType::SaveToVault(vault)) => lists::check_required_each(
            violations,
            &path.field("save_to_vault").field("vault_ids"),
            &vault.vault_ids,
            "vault id",
            ids::check,
        ),
    }
}
