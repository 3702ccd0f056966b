//! Runs the cases of `cases.json` in order against one server and compares each outcome with
//! what the case expects. See `README.md` beside this file for the format.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::{BTreeMap, HashMap, HashSet};

use prost::Message;
use provisiond::pb;
use serde::Deserialize;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::Client;
use crate::paths;
use crate::protojson;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(rename = "$comment", default)]
    pub comment: Vec<String>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique; `<rpc>/<what>` by convention.
    pub name: String,
    /// Why the case is there, for a person.
    #[serde(default)]
    pub note: Option<String>,
    /// The method of provision.v1.ProvisionPolicyService, e.g. `SetProvisionPolicy`.
    pub rpc: String,
    /// The request in ProtoJSON, with the generators of `protojson::expand` and `{{name}}`
    /// references to captured values.
    pub request: Value,
    pub expect: Expect,
    /// Values of the response to keep for later cases: name → dotted ProtoJSON path of a
    /// string (e.g. `"nextPageToken"`), used as `{{name}}` in a later request.
    #[serde(default)]
    pub capture: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The gRPC code name: OK, INVALID_ARGUMENT, NOT_FOUND, …
    pub code: String,
    /// The ErrorInfo reason (domain "provisiond"); required for every code but OK.
    #[serde(default)]
    pub reason: Option<String>,
    /// ValidateProvisionPolicyResponse.valid; required for ValidateProvisionPolicy.
    #[serde(default)]
    pub valid: Option<bool>,
    /// Exactly these violations, in this order: the BadRequest field violations of an error,
    /// the `warnings` of a SetProvisionPolicy that succeeded, the `violations` of a
    /// ValidateProvisionPolicy. Absent on an OK Set or Validate: there must be none.
    #[serde(default)]
    pub violations: Option<Vec<ExpectedViolation>>,
    /// Instead of `violations`, for long lists: these are among them (in this order)…
    #[serde(default)]
    pub violations_include: Option<Vec<ExpectedViolation>>,
    /// …and there are this many.
    #[serde(default)]
    pub violation_count: Option<usize>,
    /// Substrings of the status message.
    #[serde(default)]
    pub message_contains: Vec<String>,
    /// The ResourceInfo detail.
    #[serde(default)]
    pub resource_info: Option<ExpectedResource>,
    /// The PreconditionFailure detail's violations, in order.
    #[serde(default)]
    pub precondition_failures: Option<Vec<ExpectedPrecondition>>,
    /// A subset of the response in ProtoJSON: every field given must match (lists must have
    /// the same length; a field left out of the response matches its default value).
    #[serde(default)]
    pub response: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedViolation {
    pub field: String,
    /// The PolicyViolation reason (FieldViolation.reason in a BadRequest); "" for the entry
    /// that says how many violations were left out of an error.
    pub reason: String,
    /// ERROR or WARNING; only for violations returned as data (a BadRequest has no severity).
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub description_contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedResource {
    pub resource_type: String,
    pub resource_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedPrecondition {
    #[serde(rename = "type")]
    pub kind: String,
    pub subject: String,
    #[serde(default)]
    pub description_contains: Option<String>,
}

pub fn load(path: &std::path::Path) -> CaseFile {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("parse {}: {error}", path.display()))
}

/// The methods of the service, as the cases name them.
pub const RPCS: &[&str] = &[
    "GetProvisionPolicy",
    "SetProvisionPolicy",
    "ValidateProvisionPolicy",
    "CreateProxyBinding",
    "DeleteProxyBinding",
    "ListProxyBindings",
    "ListProvisionPolicies",
    "DeleteProvisionPolicy",
    "ListProvisionPolicyRevisions",
    "RollbackProvisionPolicy",
    "WatchProvisionPolicies",
    "ResolveProvisionPlan",
    "ListDependents",
];

fn request_type(rpc: &str) -> String {
    format!("{rpc}Request")
}

/// The request of `case`, expanded, with captures substituted; as ProtoJSON and as the
/// DynamicMessage the server will decode.
pub fn prepare(
    case: &Case,
    captured: &HashMap<String, String>,
) -> Result<(Value, prost_reflect::DynamicMessage), String> {
    if !RPCS.contains(&case.rpc.as_str()) {
        return Err(format!("unknown rpc {:?}; one of {RPCS:?}", case.rpc));
    }
    let json = substitute(&protojson::expand(&case.request)?, captured)?;
    let dynamic = protojson::dynamic_from_json(&request_type(&case.rpc), &json)?;
    Ok((json, dynamic))
}

fn substitute(value: &Value, captured: &HashMap<String, String>) -> Result<Value, String> {
    Ok(match value {
        Value::String(text) if text.contains("{{") => {
            let mut out = text.clone();
            for (name, captured_value) in captured {
                out = out.replace(&format!("{{{{{name}}}}}"), captured_value);
            }
            if out.contains("{{") {
                return Err(format!(
                    "{text:?} refers to a value no earlier case captured"
                ));
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| substitute(item, captured))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, field)| Ok((key.clone(), substitute(field, captured)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// What an RPC answered, in the terms the cases compare.
pub struct Answer {
    /// The response in ProtoJSON.
    pub response: Value,
    /// Set's warnings or Validate's violations.
    pub violations: Vec<pb::PolicyViolation>,
    pub valid: Option<bool>,
}

fn decode<T: Message + Default>(bytes: &[u8]) -> T {
    T::decode(bytes).expect("the request was encoded from the same descriptors")
}

/// Sends the request to `rpc`.
pub async fn call(
    client: &mut Client,
    rpc: &str,
    request: &prost_reflect::DynamicMessage,
) -> Result<Answer, tonic::Status> {
    let bytes = request.encode_to_vec();
    let plain = |response: Value| Answer {
        response,
        violations: Vec::new(),
        valid: None,
    };
    Ok(match rpc {
        "GetProvisionPolicy" => {
            let response = client
                .get_provision_policy(decode::<pb::GetProvisionPolicyRequest>(&bytes))
                .await?
                .into_inner();
            plain(protojson::to_json("GetProvisionPolicyResponse", &response))
        }
        "SetProvisionPolicy" => {
            let response = client
                .set_provision_policy(decode::<pb::SetProvisionPolicyRequest>(&bytes))
                .await?
                .into_inner();
            Answer {
                response: protojson::to_json("SetProvisionPolicyResponse", &response),
                violations: response.warnings,
                valid: None,
            }
        }
        "ValidateProvisionPolicy" => {
            let response = client
                .validate_provision_policy(decode::<pb::ValidateProvisionPolicyRequest>(&bytes))
                .await?
                .into_inner();
            Answer {
                response: protojson::to_json("ValidateProvisionPolicyResponse", &response),
                valid: Some(response.valid),
                violations: response.violations,
            }
        }
        "CreateProxyBinding" => {
            let response = client
                .create_proxy_binding(decode::<pb::CreateProxyBindingRequest>(&bytes))
                .await?
                .into_inner();
            plain(protojson::to_json("CreateProxyBindingResponse", &response))
        }
        "DeleteProxyBinding" => {
            let response = client
                .delete_proxy_binding(decode::<pb::DeleteProxyBindingRequest>(&bytes))
                .await?
                .into_inner();
            plain(protojson::to_json("DeleteProxyBindingResponse", &response))
        }
        "ListProxyBindings" => {
            let response = client
                .list_proxy_bindings(decode::<pb::ListProxyBindingsRequest>(&bytes))
                .await?
                .into_inner();
            plain(protojson::to_json("ListProxyBindingsResponse", &response))
        }
        "ListProvisionPolicies" => {
            let response = client
                .list_provision_policies(decode::<pb::ListProvisionPoliciesRequest>(&bytes))
                .await?
                .into_inner();
            plain(protojson::to_json(
                "ListProvisionPoliciesResponse",
                &response,
            ))
        }
        "DeleteProvisionPolicy" => {
            let response = client
                .delete_provision_policy(decode::<pb::DeleteProvisionPolicyRequest>(&bytes))
                .await?
                .into_inner();
            plain(protojson::to_json(
                "DeleteProvisionPolicyResponse",
                &response,
            ))
        }
        "ListProvisionPolicyRevisions" => {
            let request = decode::<pb::ListProvisionPolicyRevisionsRequest>(&bytes);
            let response = client
                .list_provision_policy_revisions(request)
                .await?
                .into_inner();
            plain(protojson::to_json(
                "ListProvisionPolicyRevisionsResponse",
                &response,
            ))
        }
        "RollbackProvisionPolicy" => {
            let response = client
                .rollback_provision_policy(decode::<pb::RollbackProvisionPolicyRequest>(&bytes))
                .await?
                .into_inner();
            Answer {
                response: protojson::to_json("RollbackProvisionPolicyResponse", &response),
                violations: response.warnings,
                valid: None,
            }
        }
        "ResolveProvisionPlan" => {
            let response = client
                .resolve_provision_plan(decode::<pb::ResolveProvisionPlanRequest>(&bytes))
                .await?
                .into_inner();
            Answer {
                response: protojson::to_json("ResolveProvisionPlanResponse", &response),
                violations: response.violations,
                valid: None,
            }
        }
        "ListDependents" => {
            let response = client
                .list_dependents(decode::<pb::ListDependentsRequest>(&bytes))
                .await?
                .into_inner();
            plain(protojson::to_json("ListDependentsResponse", &response))
        }
        // A stream's errors come before its first message; an OK case compares that message.
        "WatchProvisionPolicies" => {
            let mut stream = client
                .watch_provision_policies(decode::<pb::WatchProvisionPoliciesRequest>(&bytes))
                .await?
                .into_inner();
            let first = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
                .await
                .map_err(|_| tonic::Status::deadline_exceeded("no first message in 30 s"))??
                .unwrap_or_default();
            plain(protojson::to_json("WatchProvisionPoliciesResponse", &first))
        }
        other => unreachable!("rpc {other} was checked in prepare"),
    })
}

const CODES: &[(&str, Code)] = &[
    ("OK", Code::Ok),
    ("CANCELLED", Code::Cancelled),
    ("UNKNOWN", Code::Unknown),
    ("INVALID_ARGUMENT", Code::InvalidArgument),
    ("DEADLINE_EXCEEDED", Code::DeadlineExceeded),
    ("NOT_FOUND", Code::NotFound),
    ("ALREADY_EXISTS", Code::AlreadyExists),
    ("PERMISSION_DENIED", Code::PermissionDenied),
    ("RESOURCE_EXHAUSTED", Code::ResourceExhausted),
    ("FAILED_PRECONDITION", Code::FailedPrecondition),
    ("ABORTED", Code::Aborted),
    ("OUT_OF_RANGE", Code::OutOfRange),
    ("UNIMPLEMENTED", Code::Unimplemented),
    ("INTERNAL", Code::Internal),
    ("UNAVAILABLE", Code::Unavailable),
    ("DATA_LOSS", Code::DataLoss),
    ("UNAUTHENTICATED", Code::Unauthenticated),
];

fn code_name(code: Code) -> &'static str {
    CODES
        .iter()
        .find(|(_, c)| *c == code)
        .map_or("?", |(name, _)| name)
}

fn severity_name(severity: i32) -> &'static str {
    match pb::Severity::try_from(severity) {
        Ok(pb::Severity::Error) => "ERROR",
        Ok(pb::Severity::Warning) => "WARNING",
        _ => "UNSPECIFIED",
    }
}

/// What a case file asks that makes no sense, before anything is sent.
pub fn lint(case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let expect = &case.expect;
    let ok = expect.code == "OK";
    if !CODES.iter().any(|(name, _)| *name == expect.code) {
        problems.push(format!("unknown code {:?}", expect.code));
    }
    if ok == expect.reason.is_some() {
        problems.push("`reason` (the ErrorInfo reason) goes with every code but OK".to_owned());
    }
    if (case.rpc == "ValidateProvisionPolicy" && ok) != expect.valid.is_some() {
        problems.push("`valid` goes with an OK ValidateProvisionPolicy, and only there".to_owned());
    }
    if expect.violations.is_some() && expect.violations_include.is_some() {
        problems.push("give `violations` or `violations_include`, not both".to_owned());
    }
    if expect.code == "INVALID_ARGUMENT"
        && expect.violations.is_none()
        && expect.violations_include.is_none()
    {
        problems.push("an INVALID_ARGUMENT case lists its violations".to_owned());
    }
    let all = expect
        .violations
        .iter()
        .chain(expect.violations_include.iter())
        .flatten();
    for violation in all {
        if !ok && violation.severity.is_some() {
            problems.push(format!(
                "{}: a BadRequest field violation has no severity",
                violation.field
            ));
        }
    }
    if case.capture.contains_key("index") {
        problems.push("`index` is taken by $repeat".to_owned());
    }
    problems
}

/// Compares the outcome of `case` with its expectation; every difference found.
pub fn compare(
    case: &Case,
    request: &prost_reflect::DynamicMessage,
    outcome: &Result<Answer, tonic::Status>,
) -> Vec<String> {
    let mut differences = Vec::new();
    let expect = &case.expect;
    let mut differ = |text: String| differences.push(text);
    match outcome {
        Ok(answer) => {
            if expect.code != "OK" {
                differ(format!(
                    "expected {} ({}), got OK: {}",
                    expect.code,
                    expect.reason.as_deref().unwrap_or(""),
                    answer.response
                ));
                return differences;
            }
            if expect.valid.is_some() && expect.valid != answer.valid {
                differ(format!(
                    "expected valid = {:?}, got {:?}",
                    expect.valid, answer.valid
                ));
            }
            let got: Vec<Got> = answer
                .violations
                .iter()
                .map(|v| Got {
                    field: v.field.clone(),
                    reason: v.reason.clone(),
                    severity: Some(severity_name(v.severity)),
                    description: v.description.clone(),
                })
                .collect();
            compare_violations(expect, &got, request, &mut differ);
            if let Some(expected) = &expect.response {
                subset(expected, &answer.response, "response", &mut differ);
            }
        }
        Err(status) => {
            if code_name(status.code()) != expect.code {
                differ(format!(
                    "expected {}, got {} {:?}",
                    expect.code,
                    code_name(status.code()),
                    status.message()
                ));
                return differences;
            }
            let details = status.get_error_details();
            match details.error_info() {
                None => differ("no ErrorInfo detail".to_owned()),
                Some(info) => {
                    if info.domain != "provisiond" {
                        differ(format!("ErrorInfo domain {:?}", info.domain));
                    }
                    if Some(&info.reason) != expect.reason.as_ref() {
                        differ(format!(
                            "expected ErrorInfo reason {:?}, got {:?}",
                            expect.reason, info.reason
                        ));
                    }
                }
            }
            let got: Vec<Got> = details
                .bad_request()
                .map(|bad| {
                    bad.field_violations
                        .iter()
                        .map(|v| Got {
                            field: v.field.clone(),
                            reason: v.reason.clone(),
                            severity: None,
                            description: v.description.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if details.bad_request().is_none()
                && (expect.violations.is_some() || expect.violations_include.is_some())
            {
                differ("no BadRequest detail".to_owned());
            }
            compare_violations(expect, &got, request, &mut differ);
            for needle in &expect.message_contains {
                if !status.message().contains(needle.as_str()) {
                    differ(format!(
                        "message {:?} does not contain {needle:?}",
                        status.message()
                    ));
                }
            }
            match (&expect.resource_info, details.resource_info()) {
                (None, _) => {}
                (Some(_), None) => differ("no ResourceInfo detail".to_owned()),
                (Some(expected), Some(got)) => {
                    if (
                        expected.resource_type.as_str(),
                        expected.resource_name.as_str(),
                    ) != (got.resource_type.as_str(), got.resource_name.as_str())
                    {
                        differ(format!(
                            "expected ResourceInfo {} {}, got {} {}",
                            expected.resource_type,
                            expected.resource_name,
                            got.resource_type,
                            got.resource_name
                        ));
                    }
                }
            }
            match (
                &expect.precondition_failures,
                details.precondition_failure(),
            ) {
                (None, _) => {}
                (Some(_), None) => differ("no PreconditionFailure detail".to_owned()),
                (Some(expected), Some(got)) => {
                    let got: Vec<(&str, &str, &str)> = got
                        .violations
                        .iter()
                        .map(|v| {
                            (
                                v.r#type.as_str(),
                                v.subject.as_str(),
                                v.description.as_str(),
                            )
                        })
                        .collect();
                    let matches = expected.len() == got.len()
                        && expected.iter().zip(&got).all(|(e, (kind, subject, text))| {
                            e.kind == *kind
                                && e.subject == *subject
                                && e.description_contains
                                    .as_ref()
                                    .is_none_or(|needle| text.contains(needle.as_str()))
                        });
                    if !matches {
                        differ(format!(
                            "expected PreconditionFailure {expected:?}, got {got:?}"
                        ));
                    }
                }
            }
        }
    }
    differences
}

struct Got {
    field: String,
    reason: String,
    severity: Option<&'static str>,
    description: String,
}

impl std::fmt::Debug for Got {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.field, self.reason)?;
        if let Some(severity) = self.severity {
            write!(f, " {severity}")?;
        }
        write!(f, " ({:?})", self.description)
    }
}

fn matches(expected: &ExpectedViolation, got: &Got) -> bool {
    expected.field == got.field
        && expected.reason == got.reason
        && (expected.severity.is_none() || expected.severity.as_deref() == got.severity)
        && expected
            .description_contains
            .as_ref()
            .is_none_or(|needle| got.description.contains(needle.as_str()))
}

fn expected_line(expected: &ExpectedViolation) -> String {
    let mut line = format!("{} {}", expected.field, expected.reason);
    if let Some(severity) = &expected.severity {
        line.push_str(&format!(" {severity}"));
    }
    if let Some(needle) = &expected.description_contains {
        line.push_str(&format!(" (…{needle:?}…)"));
    }
    line
}

fn compare_violations(
    expect: &Expect,
    got: &[Got],
    request: &prost_reflect::DynamicMessage,
    differ: &mut impl FnMut(String),
) {
    for violation in got {
        if let Err(error) = paths::resolve(request, &violation.field) {
            differ(format!("violation {violation:?}: {error}"));
        }
    }
    if let Some(expected) = &expect.violations {
        let same =
            expected.len() == got.len() && expected.iter().zip(got).all(|(e, g)| matches(e, g));
        if !same {
            differ(format!(
                "violations differ\n      expected: {}\n      got:      {}",
                expected
                    .iter()
                    .map(expected_line)
                    .collect::<Vec<_>>()
                    .join("\n                "),
                got.iter()
                    .map(|g| format!("{g:?}"))
                    .collect::<Vec<_>>()
                    .join("\n                ")
            ));
        }
    } else if let Some(included) = &expect.violations_include {
        let mut rest = got.iter();
        for expected in included {
            if !rest.any(|g| matches(expected, g)) {
                differ(format!(
                    "violation {} {} not found (in order) among {got:?}",
                    expected.field, expected.reason
                ));
            }
        }
    } else if !got.is_empty() && expect.code == "OK" {
        differ(format!("expected no violations, got {got:?}"));
    }
    if let Some(count) = expect.violation_count
        && count != got.len()
    {
        differ(format!("expected {count} violations, got {}", got.len()));
    }
}

fn is_default(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0",
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
    }
}

fn subset(expected: &Value, actual: &Value, at: &str, differ: &mut impl FnMut(String)) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(have)) => {
            for (key, want_value) in want {
                let here = format!("{at}.{key}");
                match have.get(key) {
                    Some(have_value) => subset(want_value, have_value, &here, differ),
                    None if is_default(want_value) => {}
                    None => differ(format!("{here}: expected {want_value}, absent")),
                }
            }
        }
        (Value::Array(want), Value::Array(have)) if want.len() == have.len() => {
            for (index, (w, h)) in want.iter().zip(have).enumerate() {
                subset(w, h, &format!("{at}[{index}]"), differ);
            }
        }
        (want, have) if want == have => {}
        (want, have) => differ(format!("{at}: expected {want}, got {have}")),
    }
}

/// The value at a dotted ProtoJSON path of a response, for `capture`.
pub fn capture(response: &Value, path: &str) -> Result<String, String> {
    let mut here = response;
    for key in path.split('.') {
        here = here
            .get(key)
            .ok_or_else(|| format!("capture: no {path} in {response}"))?;
    }
    here.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("capture: {path} is not a string"))
}

/// Runs every case in order; returns the report of each case that did not match.
pub async fn run(client: &mut Client, file: &CaseFile) -> Vec<String> {
    let mut failures = Vec::new();
    let mut captured: HashMap<String, String> = HashMap::new();
    let mut names = HashSet::new();
    for (number, case) in file.cases.iter().enumerate() {
        let label = format!("case {} {:?}", number + 1, case.name);
        let mut problems = lint(case);
        if !names.insert(case.name.as_str()) {
            problems.push("duplicate name".to_owned());
        }
        if !problems.is_empty() {
            failures.push(format!("{label}: bad case: {}", problems.join("; ")));
            continue;
        }
        let (_, request) = match prepare(case, &captured) {
            Ok(prepared) => prepared,
            Err(error) => {
                failures.push(format!("{label}: bad request: {error}"));
                continue;
            }
        };
        let outcome = call(client, &case.rpc, &request).await;
        let differences = compare(case, &request, &outcome);
        if !differences.is_empty() {
            failures.push(format!("{label}:\n    {}", differences.join("\n    ")));
        }
        if let Ok(answer) = &outcome {
            for (name, path) in &case.capture {
                match capture(&answer.response, path) {
                    Ok(value) => {
                        captured.insert(name.clone(), value);
                    }
                    Err(error) => failures.push(format!("{label}: {error}")),
                }
            }
        }
    }
    failures
}

/// The SetProvisionPolicyRequest a Set or Validate case sends (a Validate's policy as a Set's),
/// for the fuzz corpus.
pub fn as_set_request(case: &Case) -> Option<pb::SetProvisionPolicyRequest> {
    let (_, dynamic) = prepare(case, &HashMap::new()).ok()?;
    let bytes = dynamic.encode_to_vec();
    match case.rpc.as_str() {
        "SetProvisionPolicy" => pb::SetProvisionPolicyRequest::decode(bytes.as_slice()).ok(),
        "ValidateProvisionPolicy" => {
            let validate = pb::ValidateProvisionPolicyRequest::decode(bytes.as_slice()).ok()?;
            Some(pb::SetProvisionPolicyRequest {
                policy: validate.policy,
                ..Default::default()
            })
        }
        _ => None,
    }
}
