//! Every static rule of DESIGN.md 2.4, one passing and one failing case each, with the exact
//! field, reason and severity; then the walk's limits and whole-resource behaviour.

use prost_types::value::Kind;

use super::limits::{
    MAX_CEL_BYTES, MAX_CEL_NESTING, MAX_ID_BYTES, MAX_INSTRUCTIONS_BYTES, MAX_NODES, MAX_STEPS,
};
use super::reason::*;
use super::{check_static, has_errors, walk};
use crate::pb;
use crate::pb::connector_provision::ProvisionType;
use crate::pb::connector_provision::account_provision::StorageType;
use crate::pb::provision_policy::Typ;
use crate::pb::provisioner_assignment::Typ as Assign;

const E: pb::Severity = pb::Severity::Error;
const W: pb::Severity = pb::Severity::Warning;
const P: &str = "policy.provision_policy";

// === builders ===

fn owner() -> pb::EntitlementRef {
    pb::EntitlementRef {
        app_id: "app-1".into(),
        entitlement_id: "ent-1".into(),
    }
}

fn resource(policy: pb::ProvisionPolicy) -> pb::EntitlementProvisionPolicy {
    pb::EntitlementProvisionPolicy {
        entitlement: Some(owner()),
        provision_policy: Some(policy),
        ..Default::default()
    }
}

fn with_deprovision(
    mut resource: pb::EntitlementProvisionPolicy,
    policy: pb::ProvisionPolicy,
) -> pb::EntitlementProvisionPolicy {
    resource.deprovision_policy = Some(policy);
    resource
}

fn policy(typ: Typ) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy { typ: Some(typ) }
}

fn unset() -> pb::ProvisionPolicy {
    pb::ProvisionPolicy { typ: None }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn webhook(id: &str) -> pb::ProvisionPolicy {
    policy(Typ::Webhook(pb::WebhookProvision {
        webhook_id: id.into(),
    }))
}

fn multi(steps: Vec<pb::ProvisionPolicy>) -> pb::ProvisionPolicy {
    policy(Typ::MultiStep(pb::MultiStep {
        provision_steps: steps,
    }))
}

fn connector(provision_type: Option<ProvisionType>) -> pb::ProvisionPolicy {
    policy(Typ::Connector(pb::ConnectorProvision { provision_type }))
}

fn default_behavior(connector_id: &str) -> pb::ProvisionPolicy {
    connector(Some(ProvisionType::DefaultBehavior(
        pb::connector_provision::DefaultBehavior {
            connector_id: connector_id.into(),
        },
    )))
}

fn account(
    connector_id: &str,
    schema_id: &str,
    config: &[(&str, Kind)],
    storage: Option<StorageType>,
) -> pb::ProvisionPolicy {
    let config = (!config.is_empty()).then(|| prost_types::Struct {
        fields: config
            .iter()
            .map(|(key, kind)| {
                let value = prost_types::Value {
                    kind: Some(kind.clone()),
                };
                (key.to_string(), value)
            })
            .collect(),
    });
    connector(Some(ProvisionType::Account(
        pb::connector_provision::AccountProvision {
            connector_id: connector_id.into(),
            schema_id: schema_id.into(),
            config,
            storage_type: storage,
        },
    )))
}

fn vault(ids: &[&str]) -> Option<StorageType> {
    Some(StorageType::SaveToVault(
        pb::connector_provision::SaveToVault {
            vault_ids: strings(ids),
        },
    ))
}

fn cel(source: &str) -> Kind {
    Kind::StringValue(source.into())
}

fn delete_account(connector_id: &str) -> pb::ProvisionPolicy {
    connector(Some(ProvisionType::DeleteAccount(
        pb::connector_provision::DeleteAccount {
            connector_id: connector_id.into(),
        },
    )))
}

fn manual(instructions: &str, user_ids: &[&str], assignee: Option<Assign>) -> pb::ProvisionPolicy {
    policy(Typ::Manual(pb::ManualProvision {
        instructions: instructions.into(),
        user_ids: strings(user_ids),
        assignee: assignee.map(|typ| pb::ProvisionerAssignment { typ: Some(typ) }),
    }))
}

fn assigned(typ: Assign) -> pb::ProvisionPolicy {
    manual("", &[], Some(typ))
}

fn users(ids: &[&str]) -> Assign {
    Assign::Users(pb::UserProvisioner {
        user_ids: strings(ids),
        allow_reassignment: false,
    })
}

fn group(app_id: &str, app_group_id: &str) -> Assign {
    Assign::Group(pb::GroupProvisioner {
        app_id: app_id.into(),
        app_group_id: app_group_id.into(),
        fallback_user_ids: vec![],
        allow_reassignment: true,
    })
}

fn expression(expressions: &[&str]) -> Assign {
    Assign::Expression(pb::ExpressionProvisioner {
        expressions: strings(expressions),
        fallback_user_ids: strings(&["u-1"]),
        allow_reassignment: false,
    })
}

fn app_owners(fallback: &[&str]) -> Assign {
    Assign::AppOwners(pb::AppOwnerProvisioner {
        fallback_user_ids: strings(fallback),
        allow_reassignment: false,
    })
}

fn delegated(app_id: &str, entitlement_id: &str) -> pb::ProvisionPolicy {
    policy(Typ::Delegated(pb::DelegatedProvision {
        app_id: app_id.into(),
        entitlement_id: entitlement_id.into(),
        implicit: false,
    }))
}

fn ticket(app: &str, connector: &str, config: &str, instructions: &str) -> pb::ProvisionPolicy {
    policy(Typ::ExternalTicket(pb::ExternalTicketProvision {
        app_id: app.into(),
        connector_id: connector.into(),
        external_ticket_provisioner_config_id: config.into(),
        instructions: instructions.into(),
    }))
}

/// A chain of `levels` MultiSteps, each the only step of the one above, around a webhook.
fn nested(levels: usize) -> pb::ProvisionPolicy {
    (0..levels).fold(webhook("wh-1"), |inner, _| multi(vec![inner]))
}

/// The path of the `multi_step` at `level` (1-based) of [`nested`].
fn nested_path(level: usize) -> String {
    let mut path = P.to_string();
    for _ in 1..level {
        path.push_str(".multi_step.provision_steps[0]");
    }
    path + ".multi_step"
}

// === assertions ===

type Found = (String, String, pb::Severity);

fn found(resource: &pb::EntitlementProvisionPolicy) -> Vec<Found> {
    check_static(resource)
        .into_iter()
        .map(|v| {
            let severity = pb::Severity::try_from(v.severity).expect("a known severity");
            assert_ne!(severity, pb::Severity::Unspecified, "{v:?}");
            assert!(!v.description.is_empty(), "{v:?}");
            (v.field, v.reason, severity)
        })
        .collect()
}

fn expect(expected: &[(&str, &str, pb::Severity)]) -> Vec<Found> {
    expected
        .iter()
        .map(|(field, reason, severity)| (field.to_string(), reason.to_string(), *severity))
        .collect()
}

/// One rule, one case: the resource and exactly the violations it must yield.
struct Case {
    name: &'static str,
    resource: pb::EntitlementProvisionPolicy,
    expected: Vec<Found>,
}

fn case(
    name: &'static str,
    resource: pb::EntitlementProvisionPolicy,
    expected: &[(&str, &str, pb::Severity)],
) -> Case {
    Case {
        name,
        resource,
        expected: expect(expected),
    }
}

fn run(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        let actual = found(&case.resource);
        if actual != case.expected {
            failures.push(format!(
                "{}:\n  expected {:?}\n  actual   {:?}",
                case.name, case.expected, actual
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn description(resource: &pb::EntitlementProvisionPolicy, field: &str) -> String {
    check_static(resource)
        .into_iter()
        .find(|v| v.field == field)
        .unwrap_or_else(|| panic!("no violation at {field}"))
        .description
}

// === the rules, one passing and one failing case each ===

#[test]
fn resource_fields_are_required() {
    let no_entitlement = pb::EntitlementProvisionPolicy {
        entitlement: None,
        ..resource(webhook("wh-1"))
    };
    let empty_entitlement = pb::EntitlementProvisionPolicy {
        entitlement: Some(pb::EntitlementRef::default()),
        ..resource(webhook("wh-1"))
    };
    let no_policy = pb::EntitlementProvisionPolicy {
        provision_policy: None,
        ..resource(webhook("wh-1"))
    };
    run(vec![
        case("complete", resource(webhook("wh-1")), &[]),
        case(
            "no entitlement",
            no_entitlement,
            &[("policy.entitlement", REQUIRED, E)],
        ),
        case(
            "empty entitlement",
            empty_entitlement,
            &[
                ("policy.entitlement.app_id", REQUIRED, E),
                ("policy.entitlement.entitlement_id", REQUIRED, E),
            ],
        ),
        case(
            "no provision_policy",
            no_policy,
            &[("policy.provision_policy", REQUIRED, E)],
        ),
    ]);
}

#[test]
fn typ_is_required_in_every_policy() {
    run(vec![
        case("provision_policy set", resource(webhook("wh-1")), &[]),
        case(
            "provision_policy unset",
            resource(unset()),
            &[(P, REQUIRED, E)],
        ),
        case(
            "deprovision_policy set",
            with_deprovision(resource(webhook("wh-1")), delete_account("conn-1")),
            &[],
        ),
        case(
            "deprovision_policy unset",
            with_deprovision(resource(webhook("wh-1")), unset()),
            &[("policy.deprovision_policy", REQUIRED, E)],
        ),
        case(
            "step unset",
            with_deprovision(
                resource(webhook("wh-1")),
                multi(vec![webhook("wh-1"), unset()]),
            ),
            &[(
                "policy.deprovision_policy.multi_step.provision_steps[1]",
                REQUIRED,
                E,
            )],
        ),
    ]);
    assert_eq!(
        description(&resource(unset()), P),
        "must set exactly one of connector, manual, delegated, webhook, multi_step, \
         external_ticket, unconfigured, action, device_placement"
    );
}

fn unconfigured() -> pb::ProvisionPolicy {
    policy(Typ::Unconfigured(pb::UnconfiguredProvision {}))
}

fn action(name: &str, app: &str, connector: &str, display_name: &str) -> pb::ProvisionPolicy {
    policy(Typ::Action(pb::ActionProvision {
        action_name: name.into(),
        app_id: app.into(),
        connector_id: connector.into(),
        display_name: display_name.into(),
    }))
}

fn device_placement(vault_boundary_id: &str) -> pb::ProvisionPolicy {
    policy(Typ::DevicePlacement(pb::DevicePlacementProvision {
        vault_boundary_id: vault_boundary_id.into(),
    }))
}

#[test]
fn unconfigured_is_a_whole_policy_never_a_step() {
    const STEP: &str = "policy.provision_policy.multi_step.provision_steps[1].unconfigured";
    run(vec![
        case("as the provision policy", resource(unconfigured()), &[]),
        case(
            "as the deprovision policy",
            with_deprovision(resource(webhook("wh-1")), unconfigured()),
            &[],
        ),
        case(
            "as a step",
            resource(multi(vec![webhook("wh-1"), unconfigured()])),
            &[(STEP, UNCONFIGURED_STEP, E)],
        ),
    ]);
}

#[test]
fn action_ids_are_required_and_its_display_name_is_one_line_of_text() {
    const A: &str = "policy.provision_policy.action";
    let long = "n".repeat(super::limits::MAX_DISPLAY_NAME_BYTES + 1);
    run(vec![
        case(
            "complete",
            resource(action("disable_account", "workday", "wd-prod", "Disable")),
            &[],
        ),
        case("no display name", resource(action("a", "b", "c", "")), &[]),
        case(
            "missing ids",
            resource(action("", "", "", "")),
            &[
                ("policy.provision_policy.action.action_name", REQUIRED, E),
                ("policy.provision_policy.action.app_id", REQUIRED, E),
                ("policy.provision_policy.action.connector_id", REQUIRED, E),
            ],
        ),
        case(
            "malformed ids",
            resource(action("disable account", "wd", "c/1", "")),
            &[
                ("policy.provision_policy.action.action_name", INVALID_ID, E),
                ("policy.provision_policy.action.connector_id", INVALID_ID, E),
            ],
        ),
        case(
            "display name too long",
            resource(action("a", "b", "c", &long)),
            &[(&format!("{A}.display_name"), TOO_LONG, E)],
        ),
        case(
            "display name with a newline",
            resource(action("a", "b", "c", "two\nlines")),
            &[(&format!("{A}.display_name"), INVALID_TEXT, E)],
        ),
    ]);
}

#[test]
fn device_placement_needs_its_vault_boundary() {
    const V: &str = "policy.provision_policy.device_placement.vault_boundary_id";
    run(vec![
        case("complete", resource(device_placement("boundary-1")), &[]),
        case(
            "missing",
            resource(device_placement("")),
            &[(V, REQUIRED, E)],
        ),
        case(
            "malformed",
            resource(device_placement("has space")),
            &[(V, INVALID_ID, E)],
        ),
    ]);
}

#[test]
fn ids_are_1_to_64_bytes_of_the_id_alphabet() {
    let longest = "a".repeat(MAX_ID_BYTES);
    let too_long = "a".repeat(MAX_ID_BYTES + 1);
    let bad_owner = pb::EntitlementProvisionPolicy {
        entitlement: Some(pb::EntitlementRef {
            app_id: "app 1".into(),
            entitlement_id: "ent/1".into(),
        }),
        ..resource(webhook("wh-1"))
    };
    run(vec![
        case(
            "every allowed character",
            resource(webhook("AZaz09._:-")),
            &[],
        ),
        case("64 bytes", resource(webhook(&longest)), &[]),
        case(
            "65 bytes",
            resource(webhook(&too_long)),
            &[("policy.provision_policy.webhook.webhook_id", INVALID_ID, E)],
        ),
        case(
            "non-ascii",
            resource(webhook("wébhook")),
            &[("policy.provision_policy.webhook.webhook_id", INVALID_ID, E)],
        ),
        case(
            "entitlement ids",
            bad_owner,
            &[
                ("policy.entitlement.app_id", INVALID_ID, E),
                ("policy.entitlement.entitlement_id", INVALID_ID, E),
            ],
        ),
        case(
            "default_behavior.connector_id unset",
            resource(default_behavior("")),
            &[],
        ),
        case(
            "default_behavior.connector_id malformed",
            resource(default_behavior("conn 1")),
            &[(
                "policy.provision_policy.connector.default_behavior.connector_id",
                INVALID_ID,
                E,
            )],
        ),
        case(
            "account.schema_id unset",
            resource(account("conn-1", "", &[], None)),
            &[],
        ),
        case(
            "account ids malformed",
            resource(account("conn 1", "schema 1", &[], None)),
            &[
                (
                    "policy.provision_policy.connector.account.connector_id",
                    INVALID_ID,
                    E,
                ),
                (
                    "policy.provision_policy.connector.account.schema_id",
                    INVALID_ID,
                    E,
                ),
            ],
        ),
        case(
            "delegated ids malformed",
            resource(delegated("app:2", "ent?2")),
            &[(
                "policy.provision_policy.delegated.entitlement_id",
                INVALID_ID,
                E,
            )],
        ),
        case(
            "external ticket config id malformed",
            resource(ticket("app-2", "conn-2", "cfg#2", "")),
            &[(
                "policy.provision_policy.external_ticket.external_ticket_provisioner_config_id",
                INVALID_ID,
                E,
            )],
        ),
        case(
            "group ids malformed",
            resource(assigned(group("app 2", "grp-2"))),
            &[(
                "policy.provision_policy.manual.assignee.group.app_id",
                INVALID_ID,
                E,
            )],
        ),
        case(
            "empty and malformed list entries",
            resource(manual("", &["u-1", "", "u 3"], None)),
            &[
                ("policy.provision_policy.manual.user_ids[1]", INVALID_ID, E),
                ("policy.provision_policy.manual.user_ids[2]", INVALID_ID, E),
            ],
        ),
        case(
            "fallback_user_ids entry malformed",
            resource(assigned(app_owners(&["u-1", "u\t2"]))),
            &[(
                "policy.provision_policy.manual.assignee.app_owners.fallback_user_ids[1]",
                INVALID_ID,
                E,
            )],
        ),
        case(
            "vault id malformed",
            resource(account("conn-1", "", &[], vault(&["v 1"]))),
            &[(
                "policy.provision_policy.connector.account.save_to_vault.vault_ids[0]",
                INVALID_ID,
                E,
            )],
        ),
    ]);
}

#[test]
fn invalid_id_descriptions_echo_a_short_quoted_value() {
    assert_eq!(
        description(
            &resource(webhook("a b")),
            "policy.provision_policy.webhook.webhook_id"
        ),
        r#"must be 1-64 characters of [A-Za-z0-9._:-], got "a b""#
    );
    let long = description(
        &resource(webhook(&"x\"".repeat(5000))),
        "policy.provision_policy.webhook.webhook_id",
    );
    assert!(long.ends_with("… (10000 bytes)"), "{long}");
    assert!(long.len() < 200, "{long}");
    assert!(long.contains(r#"x\"x\""#), "{long}");
}

#[test]
fn required_ids_are_required_once() {
    run(vec![
        case(
            "webhook",
            resource(webhook("")),
            &[("policy.provision_policy.webhook.webhook_id", REQUIRED, E)],
        ),
        case(
            "delegated",
            resource(delegated("", "")),
            &[
                ("policy.provision_policy.delegated.app_id", REQUIRED, E),
                (
                    "policy.provision_policy.delegated.entitlement_id",
                    REQUIRED,
                    E,
                ),
            ],
        ),
        case("delegated set", resource(delegated("app-2", "ent-2")), &[]),
        case(
            "external ticket",
            resource(ticket("", "", "", "")),
            &[
                (
                    "policy.provision_policy.external_ticket.app_id",
                    REQUIRED,
                    E,
                ),
                (
                    "policy.provision_policy.external_ticket.connector_id",
                    REQUIRED,
                    E,
                ),
                (
                    "policy.provision_policy.external_ticket.external_ticket_provisioner_config_id",
                    REQUIRED,
                    E,
                ),
            ],
        ),
        case(
            "external ticket set",
            resource(ticket("app-2", "conn-2", "cfg-2", "")),
            &[],
        ),
        case(
            "account",
            resource(account("", "", &[], None)),
            &[(
                "policy.provision_policy.connector.account.connector_id",
                REQUIRED,
                E,
            )],
        ),
        case(
            "delete account",
            resource(delete_account("")),
            &[(
                "policy.provision_policy.connector.delete_account.connector_id",
                REQUIRED,
                E,
            )],
        ),
        case(
            "delete account set",
            resource(delete_account("conn-1")),
            &[],
        ),
        case(
            "group",
            resource(assigned(group("", ""))),
            &[
                (
                    "policy.provision_policy.manual.assignee.group.app_id",
                    REQUIRED,
                    E,
                ),
                (
                    "policy.provision_policy.manual.assignee.group.app_group_id",
                    REQUIRED,
                    E,
                ),
            ],
        ),
        case(
            "group set",
            resource(assigned(group("app-2", "grp-2"))),
            &[],
        ),
    ]);
    assert_eq!(
        description(
            &resource(webhook("")),
            "policy.provision_policy.webhook.webhook_id"
        ),
        "must not be empty"
    );
}

#[test]
fn manual_needs_a_provisioner_and_assignee_supersedes_user_ids() {
    run(vec![
        case(
            "neither",
            resource(manual("Do it.", &[], None)),
            &[("policy.provision_policy.manual", NO_PROVISIONER, E)],
        ),
        case("user_ids", resource(manual("", &["u-1"], None)), &[]),
        case(
            "assignee",
            resource(manual("", &[], Some(users(&["u-1"])))),
            &[],
        ),
        case(
            "both",
            resource(manual("", &["u-1"], Some(users(&["u-2"])))),
            &[(
                "policy.provision_policy.manual.user_ids",
                SUPERSEDED_FIELD,
                W,
            )],
        ),
    ]);
}

#[test]
fn assignee_members_are_required() {
    let no_typ = policy(Typ::Manual(pb::ManualProvision {
        instructions: String::new(),
        user_ids: vec![],
        assignee: Some(pb::ProvisionerAssignment { typ: None }),
    }));
    run(vec![
        case(
            "assignee typ unset",
            resource(no_typ),
            &[("policy.provision_policy.manual.assignee", REQUIRED, E)],
        ),
        case(
            "users empty",
            resource(assigned(users(&[]))),
            &[(
                "policy.provision_policy.manual.assignee.users.user_ids",
                REQUIRED,
                E,
            )],
        ),
        case("users set", resource(assigned(users(&["u-1"]))), &[]),
        case(
            "expressions empty",
            resource(assigned(expression(&[]))),
            &[(
                "policy.provision_policy.manual.assignee.expression.expressions",
                REQUIRED,
                E,
            )],
        ),
        case(
            "expressions set",
            resource(assigned(expression(&["subject.manager"]))),
            &[],
        ),
    ]);
}

#[test]
fn cel_expressions_parse() {
    const EXPRS: &str = "policy.provision_policy.manual.assignee.expression.expressions";
    let parens = |n: usize| format!("{}x{}", "(".repeat(n), ")".repeat(n));
    let deepest = parens(MAX_CEL_NESTING as usize);
    let too_deep = parens(MAX_CEL_NESTING as usize + 1);
    run(vec![
        case(
            "valid",
            resource(assigned(expression(&[
                "subject.email",
                "c1.directory.users.v1.FindByEmail(subject.profile[\"manager\"])",
                "[1, 2].all(x, x > 0) ? a : b",
                &deepest,
            ]))),
            &[],
        ),
        case(
            "syntax error",
            resource(assigned(expression(&["subject.email", "a +"]))),
            &[(&format!("{EXPRS}[1]"), INVALID_CEL, E)],
        ),
        case(
            "empty",
            resource(assigned(expression(&[""]))),
            &[(&format!("{EXPRS}[0]"), INVALID_CEL, E)],
        ),
        case(
            "blank",
            resource(assigned(expression(&[" \n "]))),
            &[(&format!("{EXPRS}[0]"), INVALID_CEL, E)],
        ),
        case(
            "too deep",
            resource(assigned(expression(&[&too_deep]))),
            &[(&format!("{EXPRS}[0]"), INVALID_CEL, E)],
        ),
        case(
            "far too deep",
            resource(assigned(expression(&[&parens(2_000)]))),
            &[(&format!("{EXPRS}[0]"), INVALID_CEL, E)],
        ),
        case(
            "too long",
            resource(assigned(expression(&[&"a".repeat(MAX_CEL_BYTES + 1)]))),
            &[(&format!("{EXPRS}[0]"), TOO_LONG, E)],
        ),
        case(
            "longest",
            resource(assigned(expression(&[&"a".repeat(MAX_CEL_BYTES)]))),
            &[],
        ),
    ]);
    let syntax = description(
        &resource(assigned(expression(&["a +"]))),
        &format!("{EXPRS}[0]"),
    );
    assert!(
        syntax.starts_with("must be a valid CEL expression: Syntax error: mismatched input"),
        "{syntax}"
    );
    assert!(syntax.ends_with("at line 1, column 4"), "{syntax}");
    let deep = description(
        &resource(assigned(expression(&[&too_deep]))),
        &format!("{EXPRS}[0]"),
    );
    assert_eq!(
        deep,
        format!(
            "must be a valid CEL expression: nests deeper than {MAX_CEL_NESTING} levels at line 1, column 34"
        )
    );
}

/// The parser needs far more stack than a test thread (2 MiB) has for these; they must be
/// answered, not crash the process.
#[test]
fn cel_parsing_survives_inputs_that_need_a_deep_stack() {
    let half = MAX_CEL_BYTES / 2 - 1;
    let chain = format!("a{}", ".b".repeat(half));
    let index = format!("a{}", "[0]".repeat(MAX_CEL_BYTES / 3 - 1));
    let sum = format!("a{}", "+b".repeat(half));
    let lists = format!("{}1{}", "[".repeat(half), "]".repeat(half));
    let nested = format!(
        "{}a{}{}",
        "f(".repeat(MAX_CEL_NESTING as usize - 2),
        ".b".repeat(half - 100),
        ")".repeat(MAX_CEL_NESTING as usize - 2)
    );
    let exprs = [chain.as_str(), &index, &sum, &lists, &nested];
    let violations = found(&resource(assigned(expression(&exprs))));
    let invalid: Vec<_> = violations
        .iter()
        .map(|(field, ..)| field.as_str())
        .collect();
    assert_eq!(
        invalid,
        ["policy.provision_policy.manual.assignee.expression.expressions[3]"],
        "{violations:?}"
    );
}

#[test]
fn account_config_values_are_cel_strings() {
    const CONFIG: &str = "policy.provision_policy.connector.account.config";
    let valid = [
        ("email", cel("subject.email")),
        ("login", cel("subject.email.split('@')[0]")),
    ];
    let invalid = [
        ("email", cel("subject.")),
        ("home dir", Kind::NumberValue(1.0)),
        ("say \"hi\"", Kind::BoolValue(true)),
        ("shell", Kind::NullValue(0)),
        ("uid", cel("")),
    ];
    run(vec![
        case(
            "valid",
            resource(account("conn-1", "schema-1", &valid, None)),
            &[],
        ),
        case(
            "invalid",
            resource(account("conn-1", "schema-1", &invalid, None)),
            &[
                (&format!("{CONFIG}.email"), INVALID_CEL, E),
                (&format!(r#"{CONFIG}["home dir"]"#), INVALID_CONFIG_VALUE, E),
                (
                    &format!(r#"{CONFIG}["say \"hi\""]"#),
                    INVALID_CONFIG_VALUE,
                    E,
                ),
                (&format!("{CONFIG}.shell"), INVALID_CONFIG_VALUE, E),
                (&format!("{CONFIG}.uid"), INVALID_CEL, E),
            ],
        ),
    ]);
    assert_eq!(
        description(
            &resource(account("conn-1", "", &invalid, None)),
            &format!(r#"{CONFIG}["home dir"]"#)
        ),
        "must be a string holding a CEL expression, got a number"
    );
}

#[test]
fn save_to_vault_needs_a_vault() {
    run(vec![
        case(
            "empty",
            resource(account("conn-1", "", &[], vault(&[]))),
            &[(
                "policy.provision_policy.connector.account.save_to_vault.vault_ids",
                REQUIRED,
                E,
            )],
        ),
        case(
            "one",
            resource(account("conn-1", "", &[], vault(&["vault-1"]))),
            &[],
        ),
    ]);
}

#[test]
fn multi_step_has_1_to_32_steps() {
    let steps = |n: usize| (0..n).map(|i| webhook(&format!("wh-{i}"))).collect();
    run(vec![
        case(
            "empty",
            resource(multi(vec![])),
            &[(
                "policy.provision_policy.multi_step.provision_steps",
                EMPTY_MULTI_STEP,
                E,
            )],
        ),
        case("one", resource(multi(steps(1))), &[]),
        case("32", resource(multi(steps(MAX_STEPS))), &[]),
        case(
            "33",
            resource(multi(steps(MAX_STEPS + 1))),
            &[(
                "policy.provision_policy.multi_step.provision_steps",
                TOO_MANY_STEPS,
                E,
            )],
        ),
    ]);
}

#[test]
fn multi_step_inside_multi_step_is_flagged() {
    run(vec![
        case(
            "flat",
            resource(multi(vec![webhook("wh-1"), webhook("wh-2")])),
            &[],
        ),
        case(
            "nested",
            resource(multi(vec![webhook("wh-1"), multi(vec![webhook("wh-2")])])),
            &[(
                "policy.provision_policy.multi_step.provision_steps[1].multi_step",
                NESTED_MULTI_STEP,
                W,
            )],
        ),
    ]);
}

#[test]
fn multi_step_nests_at_most_4_levels() {
    let nested_warnings = |levels: std::ops::RangeInclusive<usize>| {
        levels
            .map(|level| (nested_path(level), NESTED_MULTI_STEP.to_string(), W))
            .collect::<Vec<_>>()
    };
    assert_eq!(found(&resource(nested(4))), nested_warnings(2..=4));
    let mut too_deep = nested_warnings(2..=5);
    too_deep.push((nested_path(5), TOO_DEEP.to_string(), E));
    assert_eq!(found(&resource(nested(5))), too_deep);
    let too_deep = check_static(&resource(nested(5)));
    assert_eq!(
        too_deep.last().map(|v| v.description.as_str()),
        Some("must be nested at most 4 multi_step levels deep, this one is at level 5")
    );
}

#[test]
fn a_100_level_multi_step_yields_too_deep_once() {
    let violations = found(&resource(nested(100)));
    let too_deep: Vec<_> = violations
        .iter()
        .filter(|(_, reason, _)| reason == TOO_DEEP)
        .collect();
    assert_eq!(too_deep, [&(nested_path(5), TOO_DEEP.to_string(), E)]);
    assert_eq!(violations.len(), 5, "{violations:?}");
}

#[test]
fn at_most_256_nodes_in_both_policies_together() {
    // 1 + 31 * (1 + 7) + 1 = 250 nodes to provision, 1 + 5 = 6 to deprovision: 256.
    let inner = || multi((0..7).map(|i| webhook(&format!("wh-{i}"))).collect());
    let mut steps: Vec<_> = (0..31).map(|_| inner()).collect();
    steps.push(webhook("wh-last"));
    let provision = multi(steps);
    let deprovision = |n: usize| multi((0..n).map(|i| webhook(&format!("wh-{i}"))).collect());
    let at_limit = with_deprovision(resource(provision.clone()), deprovision(5));
    assert_eq!(walk::Walk::new(&at_limit).count(), MAX_NODES);
    let violations = found(&at_limit);
    assert!(
        violations
            .iter()
            .all(|(_, reason, _)| reason == NESTED_MULTI_STEP),
        "{violations:?}"
    );

    let over = with_deprovision(resource(provision), deprovision(6));
    let violations = found(&over);
    assert_eq!(
        violations.last(),
        Some(&(
            "policy.deprovision_policy.multi_step.provision_steps[5]".to_string(),
            TOO_MANY_NODES.to_string(),
            E
        ))
    );
    let too_many = violations
        .iter()
        .filter(|(_, reason, _)| reason == TOO_MANY_NODES)
        .count();
    assert_eq!(too_many, 1);
}

#[test]
fn a_1000_step_multi_step_yields_too_many_steps_and_stops_at_256_nodes() {
    let steps = (0..1000).map(|_| unset()).collect();
    let violations = found(&resource(multi(steps)));
    let count = |wanted: &str| {
        violations
            .iter()
            .filter(|(_, reason, _)| reason == wanted)
            .count()
    };
    assert_eq!(count(TOO_MANY_STEPS), 1);
    assert_eq!(count(TOO_MANY_NODES), 1);
    // The steps within the node limit are still checked, those past it are not, and of the
    // 255 REQUIRED only the first ones fit under the cap: one TOO_MANY_VIOLATIONS counts the rest
    // while the limit errors are always kept.
    let listed_required = crate::policy::limits::MAX_VIOLATIONS - 1;
    assert_eq!(count(REQUIRED), listed_required);
    assert_eq!(count(crate::policy::reason::TOO_MANY_VIOLATIONS), 1);
    let summary = violations.last().expect("summary");
    assert!(
        summary.1 == crate::policy::reason::TOO_MANY_VIOLATIONS && summary.2 == E,
        "{summary:?}"
    );
    assert_eq!(
        violations[0],
        (
            "policy.provision_policy.multi_step.provision_steps".to_string(),
            TOO_MANY_STEPS.to_string(),
            E
        )
    );
}

#[test]
fn duplicate_values_are_flagged_at_the_repeat() {
    run(vec![
        case(
            "user_ids",
            resource(manual("", &["u-1", "u-2", "u-1"], None)),
            &[(
                "policy.provision_policy.manual.user_ids[2]",
                DUPLICATE_VALUE,
                W,
            )],
        ),
        case(
            "distinct user_ids",
            resource(manual("", &["u-1", "u-2"], None)),
            &[],
        ),
        case(
            "assignee user_ids",
            resource(assigned(users(&["u-1", "u-1"]))),
            &[(
                "policy.provision_policy.manual.assignee.users.user_ids[1]",
                DUPLICATE_VALUE,
                W,
            )],
        ),
        case(
            "vault_ids",
            resource(account("conn-1", "", &[], vault(&["v-1", "v-1"]))),
            &[(
                "policy.provision_policy.connector.account.save_to_vault.vault_ids[1]",
                DUPLICATE_VALUE,
                W,
            )],
        ),
        case(
            "fallback_user_ids",
            resource(assigned(app_owners(&["u-1", "u-2", "u-2"]))),
            &[(
                "policy.provision_policy.manual.assignee.app_owners.fallback_user_ids[2]",
                DUPLICATE_VALUE,
                W,
            )],
        ),
        case(
            "expressions",
            resource(assigned(expression(&["a", "b", "a"]))),
            &[(
                "policy.provision_policy.manual.assignee.expression.expressions[2]",
                DUPLICATE_VALUE,
                W,
            )],
        ),
        case(
            // The value is wrong once, at its first occurrence.
            "duplicate of a malformed id",
            resource(manual("", &["u 1", "u 1"], None)),
            &[
                ("policy.provision_policy.manual.user_ids[0]", INVALID_ID, E),
                (
                    "policy.provision_policy.manual.user_ids[1]",
                    DUPLICATE_VALUE,
                    W,
                ),
            ],
        ),
    ]);
}

#[test]
fn instructions_are_short_printable_text() {
    const MANUAL: &str = "policy.provision_policy.manual.instructions";
    const TICKET: &str = "policy.provision_policy.external_ticket.instructions";
    let longest = "a".repeat(MAX_INSTRUCTIONS_BYTES);
    let too_long = "a".repeat(MAX_INSTRUCTIONS_BYTES + 1);
    let manual_with = |text: &str| resource(manual(text, &["u-1"], None));
    let ticket_with = |text: &str| resource(ticket("app-2", "conn-2", "cfg-2", text));
    run(vec![
        case(
            "newline, tab, unicode",
            manual_with("1. Open the console.\n\t2. Grant — then close ✓"),
            &[],
        ),
        case("16 KiB", manual_with(&longest), &[]),
        case(
            "over 16 KiB",
            manual_with(&too_long),
            &[(MANUAL, TOO_LONG, E)],
        ),
        case(
            "carriage return",
            manual_with("line\r\nline"),
            &[(MANUAL, INVALID_TEXT, E)],
        ),
        case(
            "escape",
            manual_with("\u{1b}[2J"),
            &[(MANUAL, INVALID_TEXT, E)],
        ),
        case(
            "C1 control",
            manual_with("a\u{85}b"),
            &[(MANUAL, INVALID_TEXT, E)],
        ),
        case("ticket", ticket_with("See the runbook.\n"), &[]),
        case(
            "ticket, long and with NUL",
            ticket_with(&format!("{too_long}\0")),
            &[(TICKET, TOO_LONG, E), (TICKET, INVALID_TEXT, E)],
        ),
    ]);
    assert_eq!(
        description(&manual_with(&"é".repeat(10_000)), MANUAL),
        "must be at most 16384 bytes, got 20000"
    );
    assert_eq!(
        description(&manual_with("ok\rno"), MANUAL),
        "must not contain control characters other than newline and tab, found U+000D at \
         byte 2"
    );
}

#[test]
fn delegating_to_itself_is_refused() {
    run(vec![
        case(
            "itself",
            resource(delegated("app-1", "ent-1")),
            &[("policy.provision_policy.delegated", SELF_DELEGATION, E)],
        ),
        case(
            "itself, in a deprovision step",
            with_deprovision(
                resource(webhook("wh-1")),
                multi(vec![delegated("app-1", "ent-1")]),
            ),
            &[(
                "policy.deprovision_policy.multi_step.provision_steps[0].delegated",
                SELF_DELEGATION,
                E,
            )],
        ),
        case(
            "same entitlement id in another app",
            resource(delegated("app-2", "ent-1")),
            &[],
        ),
        case(
            "another entitlement of the same app",
            resource(delegated("app-1", "ent-2")),
            &[],
        ),
    ]);
}

// === whole resources ===

#[test]
fn a_valid_policy_of_every_arm_yields_nothing() {
    let steps = vec![
        connector(None),
        default_behavior(""),
        default_behavior("conn-1"),
        account(
            "conn-1",
            "schema-1",
            &[("email", cel("subject.email"))],
            vault(&["vault-1", "vault-2"]),
        ),
        account(
            "conn-1",
            "",
            &[],
            Some(StorageType::DoNotSave(
                pb::connector_provision::DoNotSave {},
            )),
        ),
        account("conn-1", "", &[], None),
        delete_account("conn-1"),
        manual("Grant it in the console.", &["u-1", "u-2"], None),
        assigned(users(&["u-1"])),
        assigned(app_owners(&[])),
        assigned(app_owners(&["u-1"])),
        assigned(group("app-2", "grp-2")),
        assigned(Assign::Manager(pb::ManagerProvisioner {
            fallback_user_ids: strings(&["u-1"]),
            allow_reassignment: true,
        })),
        assigned(expression(&[
            "subject.manager",
            "subject.department == 'it'",
        ])),
        assigned(Assign::EntitlementOwners(pb::EntitlementOwnerProvisioner {
            fallback_user_ids: strings(&["u-1"]),
            allow_reassignment: false,
        })),
        delegated("app-2", "ent-2"),
        policy(Typ::Delegated(pb::DelegatedProvision {
            app_id: "app-3".into(),
            entitlement_id: "ent-3".into(),
            implicit: true,
        })),
        webhook("wh-1"),
        ticket("app-2", "conn-2", "cfg-2", "Open a ticket.\n\tThen wait."),
    ];
    let every_arm = with_deprovision(
        resource(multi(steps.clone())),
        multi(vec![delete_account("conn-1"), webhook("wh-2")]),
    );
    assert_eq!(found(&every_arm), []);
    for step in steps {
        let alone = with_deprovision(resource(step.clone()), step);
        assert_eq!(found(&alone), [], "{alone:?}");
    }
    assert_eq!(found(&resource(nested(1))), []);
}

#[test]
fn every_violation_is_collected_in_field_order() {
    let bad = pb::EntitlementProvisionPolicy {
        entitlement: Some(pb::EntitlementRef {
            app_id: String::new(),
            entitlement_id: "ent 1".into(),
        }),
        provision_policy: Some(multi(vec![
            webhook(""),
            manual("a\u{7}", &["u-1", "u-1"], Some(expression(&["x +", "y"]))),
            unset(),
            multi(vec![]),
            account("conn-1", "", &[("n", Kind::NumberValue(1.0))], vault(&[])),
        ])),
        deprovision_policy: Some(ticket("", "conn-1", "cfg-1", "")),
        ..Default::default()
    };
    let steps = "policy.provision_policy.multi_step.provision_steps";
    let expected = [
        ("policy.entitlement.app_id".to_string(), REQUIRED, E),
        (
            "policy.entitlement.entitlement_id".to_string(),
            INVALID_ID,
            E,
        ),
        (format!("{steps}[0].webhook.webhook_id"), REQUIRED, E),
        (format!("{steps}[1].manual.instructions"), INVALID_TEXT, E),
        (format!("{steps}[1].manual.user_ids"), SUPERSEDED_FIELD, W),
        (format!("{steps}[1].manual.user_ids[1]"), DUPLICATE_VALUE, W),
        (
            format!("{steps}[1].manual.assignee.expression.expressions[0]"),
            INVALID_CEL,
            E,
        ),
        (format!("{steps}[2]"), REQUIRED, E),
        (format!("{steps}[3].multi_step"), NESTED_MULTI_STEP, W),
        (
            format!("{steps}[3].multi_step.provision_steps"),
            EMPTY_MULTI_STEP,
            E,
        ),
        (
            format!("{steps}[4].connector.account.config.n"),
            INVALID_CONFIG_VALUE,
            E,
        ),
        (
            format!("{steps}[4].connector.account.save_to_vault.vault_ids"),
            REQUIRED,
            E,
        ),
        (
            "policy.deprovision_policy.external_ticket.app_id".to_string(),
            REQUIRED,
            E,
        ),
    ];
    let expected: Vec<Found> = expected
        .into_iter()
        .map(|(field, reason, severity)| (field, reason.to_string(), severity))
        .collect();
    assert_eq!(found(&bad), expected);
}

#[test]
fn has_errors_only_counts_errors() {
    assert!(!has_errors(&[]));
    let warnings = check_static(&resource(manual("", &["u-1"], Some(users(&["u-2"])))));
    assert_eq!(warnings.len(), 1);
    assert!(!has_errors(&warnings));
    let errors = check_static(&resource(webhook("")));
    assert_eq!(errors.len(), 1);
    assert!(has_errors(&errors));
    let both: Vec<_> = warnings.into_iter().chain(errors).collect();
    assert!(has_errors(&both));
}

#[test]
fn delegations_are_found_in_both_policies_at_every_level() {
    let resource = with_deprovision(
        resource(multi(vec![
            delegated("app-2", "ent-2"),
            multi(vec![webhook("wh-1"), delegated("app-3", "ent-3")]),
        ])),
        delegated("app-4", "ent-4"),
    );
    let found: Vec<_> = walk::delegations(&resource)
        .map(|(path, delegated)| (path.to_string(), delegated.entitlement_id.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "policy.provision_policy.multi_step.provision_steps[0].delegated".to_string(),
                "ent-2"
            ),
            (
                "policy.provision_policy.multi_step.provision_steps[1].multi_step\
                 .provision_steps[1].delegated"
                    .to_string(),
                "ent-3"
            ),
            ("policy.deprovision_policy.delegated".to_string(), "ent-4"),
        ]
    );
}
