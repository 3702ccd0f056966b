//! The rules of `ManualProvision` and of its `ProvisionerAssignment`.

use super::path::Path;
use super::violations::Violations;
use super::{cel, ids, lists, reason, text};
use crate::pb;
use crate::pb::provisioner_assignment::Typ;

pub(super) fn check<'a>(
    violations: &mut Violations<'a>,
    path: &Path,
    manual: &'a pb::ManualProvision,
) {
    let has_user_ids = !manual.user_ids.is_empty();
    if !has_user_ids && manual.assignee.is_none() {
        violations.error(
            path,
            reason::NO_PROVISIONER,
            "must name a provisioner: set assignee (or the deprecated user_ids)",
        );
    }
    text::check_instructions(
        violations,
        &path.field("instructions"),
        &manual.instructions,
    );
    let user_ids_path = path.field("user_ids");
    if has_user_ids && manual.assignee.is_some() {
        violations.warning(
            &user_ids_path,
            reason::SUPERSEDED_FIELD,
            "is ignored because assignee is set; remove it",
        );
    }
    lists::check_each(violations, &user_ids_path, &manual.user_ids, ids::check);
    if let Some(assignee) = &manual.assignee {
        check_assignee(violations, &path.field("assignee"), assignee);
    }
}

fn check_assignee<'a>(
    violations: &mut Violations<'a>,
    path: &Path,
    assignee: &'a pb::ProvisionerAssignment,
) {
    let fallback = |violations: &mut Violations<'a>, path: &Path, ids: &'a [String]| {
        lists::check_each(
            violations,
            &path.field("fallback_user_ids"),
            ids,
            ids::check,
        )
    };
    match &assignee.typ {
        None => violations.error(
            path,
            reason::REQUIRED,
            "must set exactly one of users, app_owners, group, manager, expression, \
             entitlement_owners",
        ),
        Some(Typ::Users(users)) => lists::check_required_each(
            violations,
            &path.field("users").field("user_ids"),
            &users.user_ids,
            "user id",
            ids::check,
        ),
        Some(Typ::AppOwners(owners)) => fallback(
            violations,
            &path.field("app_owners"),
            &owners.fallback_user_ids,
        ),
        Some(Typ::Group(group)) => {
            let path = path.field("group");
            ids::check_required(violations, &path.field("app_id"), &group.app_id);
            ids::check_required(violations, &path.field("app_group_id"), &group.app_group_id);
            fallback(violations, &path, &group.fallback_user_ids);
        }
        Some(Typ::Manager(manager)) => fallback(
            violations,
            &path.field("manager"),
            &manager.fallback_user_ids,
        ),
        Some(Typ::Expression(expression)) => {
            let path = path.field("expression");
            lists::check_required_each(
                violations,
                &path.field("expressions"),
                &expression.expressions,
                "CEL expression",
                cel::check_expression,
            );
            fallback(violations, &path, &expression.fallback_user_ids);
        }
        Some(Typ::EntitlementOwners(owners)) => fallback(
            violations,
            &path.field("entitlement_owners"),
            &owners.fallback_user_ids,
        ),
    }
}
