//! Properties of the validation rules over random resources (proptest):
//!
//! 1. A random well-formed resource (every arm, every assignee and connector kind, MultiSteps
//!    nested within the limits, valid unique ids, parsable CEL, delegations to other
//!    entitlements that are bound and stored) validates with no ERROR, and its only warnings
//!    are NESTED_MULTI_STEP.
//! 2. Random mutations of it (clear a field, break an id, nest deeper, duplicate or empty a
//!    list, insert a control character, bad CEL, a non-string config value, delegate to itself
//!    …) never panic, and every violation names a field that exists in the mutated request —
//!    through the fuzz target's own invariants (`golden/fuzz_check.rs`) and `validate`.
//! 3. A mutation that must be refused is refused at its own path: a malformed id is INVALID_ID
//!    there, a control character in instructions INVALID_TEXT there, a ProvisionPolicy
//!    emptied of its `typ` REQUIRED there.
//! 4. Against a real server, ValidateProvisionPolicy and a validate-only SetProvisionPolicy
//!    agree on every resource, well formed or mutated, with delegations into a small pool of
//!    stored and bound entitlements: Set succeeds exactly when Validate says valid, with
//!    Validate's warnings, and otherwise lists Validate's errors.
//!
//! Mutations work on the request as a prost-reflect DynamicMessage, so they reach every field
//! without a hand-written list of them.

mod common;
#[path = "golden/fuzz_check.rs"]
mod fuzz_check;
#[path = "golden/paths.rs"]
mod paths;
#[path = "golden/protojson.rs"]
mod protojson;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use prost::Message;
use prost_reflect::{DynamicMessage, FieldDescriptor, MapKey, ReflectMessage, Value};
use provisiond::pb;
use provisiond::pb::connector_provision::account_provision::StorageType;
use provisiond::pb::connector_provision::{self, ProvisionType};
use provisiond::pb::provision_policy::Typ;
use provisiond::pb::provisioner_assignment::Typ as Assignee;
use provisiond::policy::{Lookup, LookupError, has_errors, reason, validate};
use tonic_types::StatusExt;

// === well-formed resources ===

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._:-]{0,15}"
}

fn ids(min: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set(id(), min..4).prop_map(|set| set.into_iter().collect())
}

fn cel() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z_]{0,8}".prop_map(|name| format!("subject.{name}")),
        "[a-z ]{0,12}".prop_map(|text| format!("'{text}'")),
        Just("size(subject.groups) > 0 ? subject.groups[0] : ''".to_owned()),
        Just("subject.email.endsWith('@example.com')".to_owned()),
        Just("has(subject.profile.department)".to_owned()),
    ]
}

fn instructions() -> impl Strategy<Value = String> {
    "[ -~\n\t]{0,48}"
}

fn policy(typ: Typ) -> pb::ProvisionPolicy {
    pb::ProvisionPolicy { typ: Some(typ) }
}

fn connector() -> impl Strategy<Value = pb::ProvisionPolicy> {
    let config = prop::collection::btree_map("[A-Za-z_][A-Za-z0-9_ ]{0,8}", cel(), 0..4).prop_map(
        |entries| prost_types::Struct {
            fields: entries
                .into_iter()
                .map(|(key, source)| {
                    let value = prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(source)),
                    };
                    (key, value)
                })
                .collect(),
        },
    );
    let storage = prop_oneof![
        Just(None),
        Just(Some(StorageType::DoNotSave(
            connector_provision::DoNotSave {}
        ))),
        ids(1).prop_map(|vault_ids| Some(StorageType::SaveToVault(
            connector_provision::SaveToVault { vault_ids }
        ))),
    ];
    let account = (
        id(),
        prop::option::of(id()),
        prop::option::of(config),
        storage,
    )
        .prop_map(|(connector_id, schema_id, config, storage_type)| {
            ProvisionType::Account(connector_provision::AccountProvision {
                connector_id,
                schema_id: schema_id.unwrap_or_default(),
                config,
                storage_type,
            })
        });
    let kind = prop_oneof![
        Just(None),
        prop::option::of(id()).prop_map(|connector_id| Some(ProvisionType::DefaultBehavior(
            connector_provision::DefaultBehavior {
                connector_id: connector_id.unwrap_or_default(),
            }
        ))),
        account.prop_map(Some),
        id().prop_map(|connector_id| Some(ProvisionType::DeleteAccount(
            connector_provision::DeleteAccount { connector_id }
        ))),
    ];
    kind.prop_map(|provision_type| {
        policy(Typ::Connector(pb::ConnectorProvision { provision_type }))
    })
}

fn assignee() -> impl Strategy<Value = Assignee> {
    let fallback = || prop_oneof![Just(Vec::new()), ids(1)];
    prop_oneof![
        (ids(1), any::<bool>()).prop_map(|(user_ids, allow_reassignment)| Assignee::Users(
            pb::UserProvisioner {
                user_ids,
                allow_reassignment
            }
        )),
        (fallback(), any::<bool>()).prop_map(|(fallback_user_ids, allow_reassignment)| {
            Assignee::AppOwners(pb::AppOwnerProvisioner {
                fallback_user_ids,
                allow_reassignment,
            })
        }),
        (id(), id(), fallback(), any::<bool>()).prop_map(
            |(app_id, app_group_id, fallback_user_ids, allow_reassignment)| {
                Assignee::Group(pb::GroupProvisioner {
                    app_id,
                    app_group_id,
                    fallback_user_ids,
                    allow_reassignment,
                })
            }
        ),
        (fallback(), any::<bool>()).prop_map(|(fallback_user_ids, allow_reassignment)| {
            Assignee::Manager(pb::ManagerProvisioner {
                fallback_user_ids,
                allow_reassignment,
            })
        }),
        (
            prop::collection::btree_set(cel(), 1..3),
            fallback(),
            any::<bool>()
        )
            .prop_map(|(expressions, fallback_user_ids, allow_reassignment)| {
                Assignee::Expression(pb::ExpressionProvisioner {
                    expressions: expressions.into_iter().collect(),
                    fallback_user_ids,
                    allow_reassignment,
                })
            }),
        (fallback(), any::<bool>()).prop_map(|(fallback_user_ids, allow_reassignment)| {
            Assignee::EntitlementOwners(pb::EntitlementOwnerProvisioner {
                fallback_user_ids,
                allow_reassignment,
            })
        }),
    ]
}

fn manual() -> impl Strategy<Value = pb::ProvisionPolicy> {
    // Either the deprecated user_ids or an assignee: both would be SUPERSEDED_FIELD.
    let who = prop_oneof![
        ids(1).prop_map(|user_ids| (user_ids, None)),
        assignee().prop_map(|typ| (
            Vec::new(),
            Some(pb::ProvisionerAssignment { typ: Some(typ) })
        )),
    ];
    (instructions(), who).prop_map(|(instructions, (user_ids, assignee))| {
        policy(Typ::Manual(pb::ManualProvision {
            instructions,
            user_ids,
            assignee,
        }))
    })
}

fn leaf() -> impl Strategy<Value = pb::ProvisionPolicy> {
    prop_oneof![
        connector(),
        manual(),
        // Targets live in apps named `target-…`, owners in `owner-…`: never a self-delegation.
        (id(), id(), any::<bool>()).prop_map(|(app, entitlement_id, implicit)| {
            policy(Typ::Delegated(pb::DelegatedProvision {
                app_id: format!("target-{app}"),
                entitlement_id,
                implicit,
            }))
        }),
        id().prop_map(|webhook_id| policy(Typ::Webhook(pb::WebhookProvision { webhook_id }))),
        (id(), id(), id(), instructions()).prop_map(
            |(app_id, connector_id, external_ticket_provisioner_config_id, instructions)| {
                policy(Typ::ExternalTicket(pb::ExternalTicketProvision {
                    app_id,
                    connector_id,
                    external_ticket_provisioner_config_id,
                    instructions,
                }))
            }
        ),
        (id(), id(), id(), "[A-Za-z ]{0,20}").prop_map(
            |(action_name, app_id, connector_id, display_name)| {
                policy(Typ::Action(pb::ActionProvision {
                    action_name,
                    app_id,
                    connector_id,
                    display_name,
                }))
            }
        ),
        id().prop_map(|vault_boundary_id| policy(Typ::DevicePlacement(
            pb::DevicePlacementProvision { vault_boundary_id }
        ))),
    ]
}

fn provision_policy() -> impl Strategy<Value = pb::ProvisionPolicy> {
    // At most 4 MultiStep levels (the limit) and 5 steps each.
    leaf().prop_recursive(4, 40, 5, |inner| {
        prop::collection::vec(inner, 1..5)
            .prop_map(|provision_steps| policy(Typ::MultiStep(pb::MultiStep { provision_steps })))
    })
}

fn nodes(policy: &pb::ProvisionPolicy) -> usize {
    let mut pending = vec![policy];
    let mut count = 0;
    while let Some(policy) = pending.pop() {
        count += 1;
        if let Some(Typ::MultiStep(multi)) = &policy.typ {
            pending.extend(&multi.provision_steps);
        }
    }
    count
}

fn resource() -> impl Strategy<Value = pb::EntitlementProvisionPolicy> {
    (
        id(),
        id(),
        provision_policy(),
        prop::option::of(provision_policy()),
    )
        .prop_map(
            |(app, entitlement_id, provision, deprovision)| pb::EntitlementProvisionPolicy {
                entitlement: Some(pb::EntitlementRef {
                    app_id: format!("owner-{app}"),
                    entitlement_id,
                }),
                provision_policy: Some(provision),
                deprovision_policy: deprovision,
                ..Default::default()
            },
        )
        // Well within the 256-node limit, and few enough NESTED_MULTI_STEP warnings that
        // the 100-violation cap never hides an error.
        .prop_filter("at most 64 nodes", |resource| {
            resource
                .provision_policy
                .iter()
                .chain(resource.deprovision_policy.iter())
                .map(nodes)
                .sum::<usize>()
                <= 64
        })
}

/// Every delegation target is stored and bound.
struct AllBound;

impl Lookup for AllBound {
    fn delegation_targets(
        &self,
        _: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError> {
        Ok(Some(Vec::new()))
    }

    fn binding_exists(
        &self,
        _: &pb::EntitlementRef,
        _: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        Ok(true)
    }
    fn dependants(&self, _: &pb::EntitlementRef) -> Result<Vec<pb::EntitlementRef>, LookupError> {
        Ok(Vec::new())
    }
}

fn request_of(resource: pb::EntitlementProvisionPolicy) -> pb::SetProvisionPolicyRequest {
    pb::SetProvisionPolicyRequest {
        policy: Some(resource),
        ..Default::default()
    }
}

// === mutations, on the request as a DynamicMessage ===

#[derive(Debug, Clone, Copy)]
enum Mutation {
    /// An id (a string field named `*_id` or `*_ids`) becomes malformed.
    BreakId(&'static str),
    /// An id becomes empty.
    EmptyId,
    /// A control character goes into instructions, at a position picked by the index.
    ControlChar(char, Index),
    /// Instructions grow past 16 KiB.
    LongText,
    /// A CEL expression or config value stops parsing.
    BadCel(&'static str),
    /// A config value becomes a number.
    NonStringConfig,
    /// A set field (message or string) is cleared: a oneof member leaves its oneof unset.
    Clear,
    /// A ProvisionPolicy loses its `typ`.
    ClearTyp,
    /// A list loses every element.
    EmptyList,
    /// A list gets a copy of one of its elements.
    Duplicate(Index),
    /// A ProvisionPolicy is wrapped in this many MultiSteps.
    NestDeeper(usize),
    /// A ProvisionPolicy becomes an empty MultiStep.
    EmptyMultiStep,
    /// A delegation is pointed at the entitlement that owns the resource.
    SelfDelegate,
}

const BAD_IDS: &[&str] = &[
    "has space",
    "a/b",
    "é",
    "tab\tinside",
    "sixty-five-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        prop::sample::select(BAD_IDS).prop_map(Mutation::BreakId),
        Just(Mutation::EmptyId),
        (
            prop::sample::select(&['\u{0}', '\u{7}', '\r', '\u{1b}', '\u{7f}', '\u{85}'][..]),
            any::<Index>()
        )
            .prop_map(|(c, at)| Mutation::ControlChar(c, at)),
        Just(Mutation::LongText),
        prop::sample::select(&["", " ", "(((", "a +", "subject.(", "'unterminated"][..])
            .prop_map(Mutation::BadCel),
        Just(Mutation::NonStringConfig),
        Just(Mutation::Clear),
        Just(Mutation::ClearTyp),
        Just(Mutation::EmptyList),
        any::<Index>().prop_map(Mutation::Duplicate),
        (1..4usize).prop_map(Mutation::NestDeeper),
        Just(Mutation::EmptyMultiStep),
        Just(Mutation::SelfDelegate),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(FieldDescriptor),
    Index(usize),
    Key(MapKey),
}

#[derive(Debug, Clone)]
enum SiteKind {
    /// A message: a set singular field, a list element or a map value.
    Message { full_name: String, singular: bool },
    /// A non-empty list.
    List,
    /// A string, set singular or a list element; `field` names the field holding it.
    Str { field: String },
}

#[derive(Debug, Clone)]
struct Site {
    steps: Vec<Step>,
    kind: SiteKind,
}

fn sites(root: &DynamicMessage) -> Vec<Site> {
    let mut found = Vec::new();
    let mut pending: Vec<(Vec<Step>, &DynamicMessage)> = vec![(Vec::new(), root)];
    while let Some((steps, message)) = pending.pop() {
        for (field, value) in message.fields() {
            let mut here = steps.clone();
            here.push(Step::Field(field.clone()));
            match value {
                Value::Message(inner) => {
                    found.push(Site {
                        steps: here.clone(),
                        kind: SiteKind::Message {
                            full_name: inner.descriptor().full_name().to_owned(),
                            singular: true,
                        },
                    });
                    pending.push((here, inner));
                }
                Value::String(_) => found.push(Site {
                    steps: here,
                    kind: SiteKind::Str {
                        field: field.name().to_owned(),
                    },
                }),
                Value::List(items) => {
                    found.push(Site {
                        steps: here.clone(),
                        kind: SiteKind::List,
                    });
                    for (index, item) in items.iter().enumerate() {
                        let mut at = here.clone();
                        at.push(Step::Index(index));
                        match item {
                            Value::Message(inner) => {
                                found.push(Site {
                                    steps: at.clone(),
                                    kind: SiteKind::Message {
                                        full_name: inner.descriptor().full_name().to_owned(),
                                        singular: false,
                                    },
                                });
                                pending.push((at, inner));
                            }
                            Value::String(_) => found.push(Site {
                                steps: at,
                                kind: SiteKind::Str {
                                    field: field.name().to_owned(),
                                },
                            }),
                            _ => {}
                        }
                    }
                }
                Value::Map(entries) => {
                    for (key, item) in entries {
                        if let Value::Message(inner) = item {
                            let mut at = here.clone();
                            at.push(Step::Key(key.clone()));
                            found.push(Site {
                                steps: at.clone(),
                                kind: SiteKind::Message {
                                    full_name: inner.descriptor().full_name().to_owned(),
                                    singular: false,
                                },
                            });
                            pending.push((at, inner));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // Deterministic order for a given message: the index picks the same site on replay.
    found.sort_by_key(|site| render(&site.steps));
    found
}

fn value_mut<'m>(root: &'m mut DynamicMessage, steps: &[Step]) -> &'m mut Value {
    let Some((Step::Field(first), rest)) = steps.split_first() else {
        panic!("a site starts with a field");
    };
    let mut value = root.get_field_mut(first);
    for step in rest {
        value = match step {
            Step::Field(field) => value
                .as_message_mut()
                .expect("a message")
                .get_field_mut(field),
            Step::Index(index) => &mut value.as_list_mut().expect("a list")[*index],
            Step::Key(key) => value
                .as_map_mut()
                .expect("a map")
                .get_mut(key)
                .expect("the key"),
        };
    }
    value
}

/// The path of a site as the service writes it: Struct keys follow the Struct's field.
fn render(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps {
        match step {
            Step::Field(field)
                if field.parent_message().full_name() == "google.protobuf.Struct" => {}
            Step::Field(field) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(field.name());
            }
            Step::Index(index) => path.push_str(&format!("[{index}]")),
            Step::Key(MapKey::String(key)) => {
                let identifier = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if identifier {
                    path.push('.');
                    path.push_str(key);
                } else {
                    path.push('[');
                    path.push_str(&serde_json::to_string(key).expect("quoted"));
                    path.push(']');
                }
            }
            Step::Key(other) => path.push_str(&format!("[{other:?}]")),
        }
    }
    path
}

fn is_id_field(field: &str) -> bool {
    field.ends_with("_id") || field.ends_with("_ids")
}

const PROVISION_POLICY: &str = "provision.v1.ProvisionPolicy";

/// Whether `site` is where `mutation` applies.
fn applies(mutation: Mutation, site: &Site) -> bool {
    let message =
        |name: &str| matches!(&site.kind, SiteKind::Message { full_name, .. } if full_name == name);
    let string =
        |pred: &dyn Fn(&str) -> bool| matches!(&site.kind, SiteKind::Str { field } if pred(field));
    match mutation {
        Mutation::BreakId(_) | Mutation::EmptyId => string(&is_id_field),
        Mutation::ControlChar(..) | Mutation::LongText => string(&|f| f == "instructions"),
        Mutation::BadCel(_) => string(&|f| f == "expressions" || f == "string_value"),
        Mutation::NonStringConfig => message("google.protobuf.Value"),
        Mutation::Clear => match &site.kind {
            SiteKind::Message { singular, .. } => *singular,
            SiteKind::Str { .. } => matches!(site.steps.last(), Some(Step::Field(_))),
            SiteKind::List => false,
        },
        Mutation::EmptyList | Mutation::Duplicate(_) => matches!(site.kind, SiteKind::List),
        Mutation::ClearTyp | Mutation::NestDeeper(_) | Mutation::EmptyMultiStep => {
            message(PROVISION_POLICY)
        }
        Mutation::SelfDelegate => message("provision.v1.DelegatedProvision"),
    }
}

fn provision_policy_descriptor() -> prost_reflect::MessageDescriptor {
    protojson::message_descriptor("ProvisionPolicy")
}

/// Applies `mutation` at the applicable site `pick` selects; the path of that site, if any.
fn apply(request: &mut DynamicMessage, mutation: Mutation, pick: Index) -> Option<String> {
    let candidates: Vec<Site> = sites(request)
        .into_iter()
        .filter(|site| applies(mutation, site))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let site = pick.get(&candidates).clone();
    if matches!(mutation, Mutation::Clear) {
        let (last, parent) = site.steps.split_last().expect("not the root");
        let Step::Field(field) = last else {
            unreachable!("Clear applies to singular fields")
        };
        if parent.is_empty() {
            request.clear_field(field);
        } else {
            value_mut(request, parent)
                .as_message_mut()
                .expect("a message")
                .clear_field(field);
        }
        return Some(render(&site.steps));
    }
    let owner = request.get_field_by_name("policy").and_then(|policy| {
        policy
            .as_message()?
            .get_field_by_name("entitlement")
            .map(|e| e.into_owned())
    });
    let value = value_mut(request, &site.steps);
    match mutation {
        Mutation::BreakId(bad) => *value = Value::String(bad.to_owned()),
        Mutation::EmptyId => *value = Value::String(String::new()),
        Mutation::ControlChar(c, at) => {
            let text = value.as_string_mut().expect("a string");
            let boundaries: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            text.insert(*at.get(&boundaries), c);
        }
        Mutation::LongText => {
            let text = value.as_string_mut().expect("a string");
            text.push_str(&"x".repeat(16 * 1024 + 1));
        }
        Mutation::BadCel(bad) => *value = Value::String(bad.to_owned()),
        Mutation::NonStringConfig => {
            let config_value = value.as_message_mut().expect("a google.protobuf.Value");
            config_value.clear_field_by_name("string_value");
            config_value.set_field_by_name("number_value", Value::F64(1.0));
        }
        Mutation::Clear => unreachable!("handled above"),
        Mutation::ClearTyp => {
            *value = Value::Message(DynamicMessage::new(provision_policy_descriptor()));
        }
        Mutation::EmptyList => value.as_list_mut().expect("a list").clear(),
        Mutation::Duplicate(which) => {
            let list = value.as_list_mut().expect("a list");
            let copy = which.get(list).clone();
            list.push(copy);
        }
        Mutation::NestDeeper(levels) => {
            for _ in 0..levels {
                let inner = std::mem::replace(value, Value::Bool(false));
                *value = Value::Message(multi_step_of(vec![inner]));
            }
        }
        Mutation::EmptyMultiStep => *value = Value::Message(multi_step_of(Vec::new())),
        Mutation::SelfDelegate => {
            let delegated = value.as_message_mut().expect("a DelegatedProvision");
            if let Some(Value::Message(owner)) = &owner {
                for name in ["app_id", "entitlement_id"] {
                    if let Some(id) = owner.get_field_by_name(name) {
                        delegated.set_field_by_name(name, id.into_owned());
                    }
                }
            }
        }
    }
    Some(render(&site.steps))
}

fn multi_step_of(steps: Vec<Value>) -> DynamicMessage {
    let mut multi = DynamicMessage::new(protojson::message_descriptor("MultiStep"));
    multi.set_field_by_name("provision_steps", Value::List(steps));
    let mut policy = DynamicMessage::new(provision_policy_descriptor());
    policy.set_field_by_name("multi_step", Value::Message(multi));
    policy
}

fn to_request(dynamic: &DynamicMessage) -> pb::SetProvisionPolicyRequest {
    pb::SetProvisionPolicyRequest::decode(dynamic.encode_to_vec().as_slice())
        .expect("a mutated request still decodes")
}

fn describe(violations: &[pb::PolicyViolation]) -> Vec<String> {
    violations
        .iter()
        .map(|v| format!("{} {} {}: {}", v.field, v.reason, v.severity, v.description))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn well_formed_resources_validate_without_error(resource in resource()) {
        let violations = validate(&resource, &AllBound).expect("the lookup never fails");
        prop_assert!(!has_errors(&violations), "{:#?}", describe(&violations));
        for violation in &violations {
            prop_assert_eq!(&violation.reason, reason::NESTED_MULTI_STEP);
        }
        let dynamic = protojson::to_dynamic("SetProvisionPolicyRequest", &request_of(resource.clone()));
        fuzz_check::check_violations(&dynamic, &violations, "validate");
        fuzz_check::check_request(&request_of(resource));
    }

    #[test]
    fn mutations_never_panic_and_name_fields_that_exist(
        resource in resource(),
        mutations in prop::collection::vec((mutation(), any::<Index>()), 1..4),
    ) {
        let mut dynamic = protojson::to_dynamic("SetProvisionPolicyRequest", &request_of(resource));
        for (mutation, pick) in mutations {
            apply(&mut dynamic, mutation, pick);
        }
        let request = to_request(&dynamic);
        // The fuzz invariants: paths resolve, reasons documented, canaries, bounded lookups.
        fuzz_check::check_request(&request);
        let resource = request.policy.clone().unwrap_or_default();
        let violations = validate(&resource, &AllBound).expect("the lookup never fails");
        let as_sent = protojson::to_dynamic(
            "SetProvisionPolicyRequest",
            &request_of(resource),
        );
        fuzz_check::check_violations(&as_sent, &violations, "validate");
    }

    #[test]
    fn a_refused_mutation_is_refused_at_its_own_path(
        resource in resource(),
        mutation in prop_oneof![
            prop::sample::select(BAD_IDS).prop_map(Mutation::BreakId),
            (prop::sample::select(&['\u{0}', '\u{7}', '\r', '\u{1b}'][..]), any::<Index>())
                .prop_map(|(c, at)| Mutation::ControlChar(c, at)),
            Just(Mutation::ClearTyp),
        ],
        pick in any::<Index>(),
    ) {
        let mut dynamic = protojson::to_dynamic("SetProvisionPolicyRequest", &request_of(resource));
        let Some(path) = apply(&mut dynamic, mutation, pick) else {
            return Ok(());
        };
        let resource = to_request(&dynamic).policy.unwrap_or_default();
        let violations = validate(&resource, &AllBound).expect("the lookup never fails");
        let expected = match mutation {
            Mutation::BreakId(_) => reason::INVALID_ID,
            Mutation::ControlChar(..) => reason::INVALID_TEXT,
            _ => reason::REQUIRED,
        };
        prop_assert!(
            violations.iter().any(|v| v.field == path
                && v.reason == expected
                && v.severity == pb::Severity::Error as i32),
            "{:?} at {} gave {:#?}",
            mutation,
            path,
            describe(&violations)
        );
    }
}

// === Validate and Set agree, on a real server ===

/// The entitlements the agreement property delegates to: `pool/e0`…`pool/e5`. The first four
/// are stored (e3 delegating to e0), e4 and e5 are not; every owner's delegations to them are
/// rewritten to this pool, so bindings, dangling targets and chains come into play.
const POOL: usize = 6;

fn pool_target(n: usize) -> pb::EntitlementRef {
    pb::EntitlementRef {
        app_id: "pool".to_owned(),
        entitlement_id: format!("e{n}"),
    }
}

fn into_pool(resource: &mut pb::EntitlementProvisionPolicy) {
    let mut pending: Vec<&mut pb::ProvisionPolicy> = resource
        .provision_policy
        .iter_mut()
        .chain(resource.deprovision_policy.iter_mut())
        .collect();
    while let Some(policy) = pending.pop() {
        match &mut policy.typ {
            Some(Typ::Delegated(delegated)) => {
                let n = delegated.entitlement_id.len() % POOL;
                let target = pool_target(n);
                delegated.app_id = target.app_id;
                delegated.entitlement_id = target.entitlement_id;
            }
            Some(Typ::MultiStep(multi)) => pending.extend(multi.provision_steps.iter_mut()),
            _ => {}
        }
    }
}

async fn seed_pool(client: &mut common::Client) {
    for n in 0..4 {
        let policy = if n == 3 {
            policy(Typ::Delegated(pb::DelegatedProvision {
                app_id: "pool".to_owned(),
                entitlement_id: "e0".to_owned(),
                implicit: true,
            }))
        } else {
            common::webhook(&format!("wh-{n}"))
        };
        client
            .set_provision_policy(common::set_request(
                common::resource(pool_target(n), policy),
                "",
            ))
            .await
            .expect("seed the pool");
    }
}

fn pairs(violations: &[pb::PolicyViolation]) -> Vec<(String, String)> {
    violations
        .iter()
        .map(|v| (v.field.clone(), v.reason.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_a_validate_only_set_agree() {
    let server = common::TestServer::start().await;
    let mut client = server.client.clone();
    seed_pool(&mut client).await;
    let runtime = tokio::runtime::Handle::current();
    let strategy = (
        resource(),
        prop::collection::vec((mutation(), any::<Index>()), 0..3),
    );
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 192,
        ..RunnerConfig::default()
    });
    let outcome = tokio::task::block_in_place(|| {
        runner
            .run(&strategy, |(resource, mutations)| {
                let mut resource = resource;
                into_pool(&mut resource);
                let mut dynamic =
                    protojson::to_dynamic("SetProvisionPolicyRequest", &request_of(resource));
                for (mutation, pick) in mutations {
                    apply(&mut dynamic, mutation, pick);
                }
                let mut request = to_request(&dynamic);
                request.validate_only = true;
                let mut client = client.clone();
                runtime.block_on(async move {
                    let validated = client
                        .validate_provision_policy(pb::ValidateProvisionPolicyRequest {
                            consistency: None,
                            policy: request.policy.clone(),
                        })
                        .await
                        .map_err(|status| TestCaseError::fail(format!("Validate: {status:?}")))?
                        .into_inner();
                    let (errors, warnings): (Vec<_>, Vec<_>) = validated
                        .violations
                        .iter()
                        .cloned()
                        .partition(|v| v.severity == pb::Severity::Error as i32);
                    match client.set_provision_policy(request).await {
                        Ok(set) => {
                            prop_assert!(
                                validated.valid,
                                "Set accepted what Validate refused: {:#?}",
                                describe(&errors)
                            );
                            prop_assert_eq!(pairs(&set.into_inner().warnings), pairs(&warnings));
                        }
                        Err(status) => {
                            prop_assert_eq!(
                                status.code(),
                                tonic::Code::InvalidArgument,
                                "{:?}",
                                status
                            );
                            prop_assert!(
                                !validated.valid,
                                "Set refused what Validate accepted: {:?}",
                                status
                            );
                            // The BadRequest lists Validate's errors in order, until it is cut
                            // short to stay small (the entry that says so has no reason).
                            let details = status.get_error_details();
                            let listed: Vec<(String, String)> = details
                                .bad_request()
                                .map(|bad| {
                                    bad.field_violations
                                        .iter()
                                        .filter(|v| !v.reason.is_empty())
                                        .map(|v| (v.field.clone(), v.reason.clone()))
                                        .collect()
                                })
                                .unwrap_or_default();
                            let expected = pairs(&errors);
                            prop_assert!(
                                !listed.is_empty() && expected.starts_with(&listed),
                                "Set listed {:#?}, Validate {:#?}",
                                listed,
                                expected
                            );
                        }
                    }
                    Ok(())
                })
            })
            .map_err(|failure| failure.to_string())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}
