//! The rules of one `ProvisionPolicy` node met by the walk, and of the small members of its
//! `typ`; connector and manual provisioning have files of their own.

use super::limits::{MAX_MULTI_STEP_DEPTH, MAX_STEPS};
use super::path::Path;
use super::violations::Violations;
use super::walk::{Node, multi_step_level_allowed};
use super::{connector, ids, manual, reason, text};
use crate::pb;
use crate::pb::provision_policy::Typ;

/// `owner` is the entitlement the resource belongs to, when it names one.
pub(super) fn check<'a>(
    violations: &mut Violations<'a>,
    node: &Node<'a>,
    owner: Option<&pb::EntitlementRef>,
) {
    let path = &node.path;
    match &node.policy.typ {
        None => violations.error(
            path,
            reason::REQUIRED,
            "must set exactly one of connector, manual, delegated, webhook, multi_step, \
             external_ticket, unconfigured, action, device_placement",
        ),
        Some(Typ::Connector(connector)) => {
            connector::check(violations, &path.field("connector"), connector)
        }
        Some(Typ::Manual(manual)) => manual::check(violations, &path.field("manual"), manual),
        Some(Typ::Delegated(delegated)) => {
            check_delegated(violations, &path.field("delegated"), delegated, owner)
        }
        Some(Typ::Webhook(webhook)) => ids::check_required(
            violations,
            &path.field("webhook").field("webhook_id"),
            &webhook.webhook_id,
        ),
        Some(Typ::MultiStep(multi_step)) => check_multi_step(
            violations,
            &path.field("multi_step"),
            multi_step,
            node.enclosing_multi_steps,
        ),
        Some(Typ::ExternalTicket(ticket)) => {
            check_external_ticket(violations, &path.field("external_ticket"), ticket)
        }
        Some(Typ::Unconfigured(_)) => {
            if node.enclosing_multi_steps > 0 {
                violations.error(
                    &path.field("unconfigured"),
                    reason::UNCONFIGURED_STEP,
                    "must not be a step of a multi_step: it says a whole policy provisions \
                     nothing; remove the step",
                );
            }
        }
        Some(Typ::Action(action)) => check_action(violations, &path.field("action"), action),
        Some(Typ::DevicePlacement(placement)) => ids::check_required(
            violations,
            &path.field("device_placement").field("vault_boundary_id"),
            &placement.vault_boundary_id,
        ),
    }
}

fn check_action(violations: &mut Violations<'_>, path: &Path, action: &pb::ActionProvision) {
    ids::check_required(violations, &path.field("action_name"), &action.action_name);
    ids::check_required(violations, &path.field("app_id"), &action.app_id);
    ids::check_required(
        violations,
        &path.field("connector_id"),
        &action.connector_id,
    );
    text::check_display_name(
        violations,
        &path.field("display_name"),
        &action.display_name,
    );
}

fn check_delegated(
    violations: &mut Violations<'_>,
    path: &Path,
    delegated: &pb::DelegatedProvision,
    owner: Option<&pb::EntitlementRef>,
) {
    let is_owner = owner.is_some_and(|owner| {
        !owner.app_id.is_empty()
            && !owner.entitlement_id.is_empty()
            && owner.app_id == delegated.app_id
            && owner.entitlement_id == delegated.entitlement_id
    });
    if is_owner {
        violations.error(
            path,
            reason::SELF_DELEGATION,
            "must not delegate to the entitlement this policy belongs to",
        );
    }
    ids::check_required(violations, &path.field("app_id"), &delegated.app_id);
    ids::check_required(
        violations,
        &path.field("entitlement_id"),
        &delegated.entitlement_id,
    );
}

/// The steps themselves are nodes of the walk: only the shape of the list is checked here.
fn check_multi_step(
    violations: &mut Violations<'_>,
    path: &Path,
    multi_step: &pb::MultiStep,
    enclosing_multi_steps: usize,
) {
    if enclosing_multi_steps > 0 {
        violations.warning(
            path,
            reason::NESTED_MULTI_STEP,
            "is a step of another multi_step; move its steps into the outer one",
        );
    }
    let level = enclosing_multi_steps + 1;
    if !multi_step_level_allowed(level) {
        // The walk does not enter it: one violation for the whole subtree.
        violations.limit_error(
            path,
            reason::TOO_DEEP,
            format!(
                "must be nested at most {MAX_MULTI_STEP_DEPTH} multi_step levels deep, \
                 this one is at level {level}"
            ),
        );
        return;
    }
    let steps = &multi_step.provision_steps;
    let steps_path = path.field("provision_steps");
    if steps.is_empty() {
        violations.error(
            &steps_path,
            reason::EMPTY_MULTI_STEP,
            "must list at least one step",
        );
    } else if steps.len() > MAX_STEPS {
        violations.limit_error(
            &steps_path,
            reason::TOO_MANY_STEPS,
            format!("must list at most {MAX_STEPS} steps, got {}", steps.len()),
        );
    }
}

fn check_external_ticket(
    violations: &mut Violations<'_>,
    path: &Path,
    ticket: &pb::ExternalTicketProvision,
) {
    ids::check_required(violations, &path.field("app_id"), &ticket.app_id);
    ids::check_required(
        violations,
        &path.field("connector_id"),
        &ticket.connector_id,
    );
    ids::check_required(
        violations,
        &path.field("external_ticket_provisioner_config_id"),
        &ticket.external_ticket_provisioner_config_id,
    );
    text::check_instructions(
        violations,
        &path.field("instructions"),
        &ticket.instructions,
    );
}
