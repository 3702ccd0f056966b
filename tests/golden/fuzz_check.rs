//! The body of the `check_policy` fuzz target (`fuzz/fuzz_targets/check_policy.rs`), kept here so
//! the test suite compiles it and runs it over the golden corpus (`tests/golden.rs`).
//!
//! It decodes arbitrary bytes as a SetProvisionPolicyRequest, runs `check_static` and then
//! `check_graph` against [`FuzzLookup`], a stored graph derived from the names in the request,
//! and asserts what must hold for any input:
//!
//! - no panic, and the delegation walk looks up a bounded number of entitlements;
//! - at most 100 violations plus one TOO_MANY_VIOLATIONS from each check;
//! - every violation has a documented reason, a severity, a description, and a field path that
//!   resolves in the request (see `paths.rs`);
//! - canaries: a node of the walk with no `typ`, or with a malformed required id (webhook,
//!   delegated, external ticket), never passes without an ERROR; and TOO_MANY_NODES is reported
//!   exactly when the walkable nodes are more than 256 (counted here independently).
#![allow(dead_code)] // each test binary uses a different part of this module

use std::cell::Cell;

use prost::Message;
use provisiond::pb;
use provisiond::pb::provision_policy::Typ;
use provisiond::policy::limits::{MAX_DELEGATION_LOOKUPS, MAX_MULTI_STEP_DEPTH, MAX_NODES};
use provisiond::policy::walk::Walk;
use provisiond::policy::{Lookup, LookupError, check_graph, check_static, has_errors, reason};

use crate::paths;
use crate::protojson;

/// Every reason a policy violation may carry (the proto documents the same list).
pub const POLICY_REASONS: &[&str] = reason::POLICY;

/// One fuzz input: never panics unless an invariant is broken.
pub fn check_request_bytes(data: &[u8]) {
    let Ok(request) = pb::SetProvisionPolicyRequest::decode(data) else {
        return;
    };
    check_request(&request);
}

/// The invariants for one decoded request.
pub fn check_request(request: &pb::SetProvisionPolicyRequest) {
    let resource = request.policy.clone().unwrap_or_default();
    let as_sent = pb::SetProvisionPolicyRequest {
        policy: Some(resource.clone()),
        ..Default::default()
    };
    let dynamic = protojson::to_dynamic("SetProvisionPolicyRequest", &as_sent);

    let static_violations = check_static(&resource);
    check_violations(&dynamic, &static_violations, "check_static");
    canaries(&resource, &static_violations);

    let lookup = FuzzLookup::new(&resource);
    let graph_violations = check_graph(&resource, &lookup).expect("the fuzz lookup never fails");
    check_violations(&dynamic, &graph_violations, "check_graph");
    assert!(
        lookup.lookups.get() <= MAX_DELEGATION_LOOKUPS + 2,
        "check_graph made {} lookups",
        lookup.lookups.get()
    );
}

/// Checks each violation; `dynamic` is the request the paths point into.
pub fn check_violations(
    dynamic: &prost_reflect::DynamicMessage,
    violations: &[pb::PolicyViolation],
    what: &str,
) {
    assert!(
        violations.len() <= 101,
        "{what}: {} violations, more than 100 plus TOO_MANY_VIOLATIONS",
        violations.len()
    );
    for violation in violations {
        assert!(
            POLICY_REASONS.contains(&violation.reason.as_str()),
            "{what}: undocumented reason in {violation:?}"
        );
        assert!(
            violation.severity == pb::Severity::Error as i32
                || violation.severity == pb::Severity::Warning as i32,
            "{what}: no severity in {violation:?}"
        );
        assert!(
            !violation.description.is_empty(),
            "{what}: no description in {violation:?}"
        );
        if let Err(error) = paths::resolve(dynamic, &violation.field) {
            panic!("{what}: {error}, in {violation:?}");
        }
    }
}

fn canaries(resource: &pb::EntitlementProvisionPolicy, violations: &[pb::PolicyViolation]) {
    let errors = has_errors(violations);
    for node in Walk::new(resource) {
        let must_fail = match &node.policy.typ {
            None => Some("a policy with no typ"),
            Some(Typ::Webhook(webhook)) if !valid_id(&webhook.webhook_id) => {
                Some("a malformed webhook_id")
            }
            Some(Typ::Delegated(delegated))
                if !valid_id(&delegated.app_id) || !valid_id(&delegated.entitlement_id) =>
            {
                Some("a malformed delegation target")
            }
            Some(Typ::ExternalTicket(ticket))
                if !valid_id(&ticket.app_id)
                    || !valid_id(&ticket.connector_id)
                    || !valid_id(&ticket.external_ticket_provisioner_config_id) =>
            {
                Some("a malformed external ticket id")
            }
            Some(Typ::Action(action))
                if !valid_id(&action.action_name)
                    || !valid_id(&action.app_id)
                    || !valid_id(&action.connector_id) =>
            {
                Some("a malformed action id")
            }
            Some(Typ::DevicePlacement(placement)) if !valid_id(&placement.vault_boundary_id) => {
                Some("a malformed vault_boundary_id")
            }
            Some(Typ::Unconfigured(_)) if node.enclosing_multi_steps > 0 => {
                Some("an unconfigured step of a multi_step")
            }
            _ => None,
        };
        if let Some(what) = must_fail {
            assert!(errors, "{what} at {} passed without ERROR", node.path);
        }
    }
    let too_many = violations
        .iter()
        .any(|v| v.reason == reason::TOO_MANY_NODES);
    let counted = walkable_nodes(resource);
    // Past 100 violations the rest are only counted, TOO_MANY_NODES among them.
    let capped = violations
        .iter()
        .any(|v| v.reason == reason::TOO_MANY_VIOLATIONS);
    if !capped {
        assert_eq!(
            too_many,
            counted > MAX_NODES,
            "TOO_MANY_NODES reported {too_many} with {counted} walkable nodes"
        );
    }
}

/// The ProvisionPolicy messages of the resource, not counting the steps of a MultiStep nested
/// deeper than the limit; counting stops one past the limit.
fn walkable_nodes(resource: &pb::EntitlementProvisionPolicy) -> usize {
    let mut pending: Vec<(&pb::ProvisionPolicy, usize)> = Vec::new();
    pending.extend(resource.provision_policy.iter().map(|p| (p, 0)));
    pending.extend(resource.deprovision_policy.iter().map(|p| (p, 0)));
    let mut count = 0;
    while let Some((policy, enclosing)) = pending.pop() {
        count += 1;
        if count > MAX_NODES {
            break;
        }
        if let Some(Typ::MultiStep(multi)) = &policy.typ
            && enclosing < MAX_MULTI_STEP_DEPTH
        {
            pending.extend(
                multi
                    .provision_steps
                    .iter()
                    .map(|step| (step, enclosing + 1)),
            );
        }
    }
    count
}

/// 1-64 bytes of `[A-Za-z0-9._:-]`, written out again so the canaries do not trust the code
/// under test.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
}

/// A stored graph that depends only on names, so the fuzzer can steer it:
///
/// - `chain/e<N>` (N ≤ 20) has a stored policy delegating to `chain/e<N+1>`, and `chain/e21`
///   one that delegates nowhere: delegating to `chain/e0` is a chain of 22;
/// - `loop/e<N>` delegates to `loop/e<(N+1) mod 3>`: `loop/e0` delegating to `loop/e1` closes
///   a cycle;
/// - any other entitlement has a stored policy unless the hash of its name is 0 mod 5, which
///   delegates to those of the request's own targets its hash picks;
/// - a binding exists when the hash of the pair is even.
pub struct FuzzLookup {
    targets: Vec<pb::EntitlementRef>,
    pub lookups: Cell<usize>,
}

impl FuzzLookup {
    pub fn new(resource: &pb::EntitlementProvisionPolicy) -> Self {
        let mut targets = provisiond::policy::graph::edges(resource).targets;
        targets.extend(resource.entitlement.clone());
        Self {
            targets,
            lookups: Cell::new(0),
        }
    }
}

fn hash(parts: &[&str]) -> u64 {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for part in parts {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

fn entitlement(app_id: &str, entitlement_id: String) -> pb::EntitlementRef {
    pb::EntitlementRef {
        app_id: app_id.to_owned(),
        entitlement_id,
    }
}

impl Lookup for FuzzLookup {
    fn delegation_targets(
        &self,
        entitlement_ref: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError> {
        self.lookups.set(self.lookups.get() + 1);
        let numbered = entitlement_ref
            .entitlement_id
            .strip_prefix('e')
            .and_then(|n| n.parse::<u32>().ok());
        match (entitlement_ref.app_id.as_str(), numbered) {
            ("chain", Some(n)) if n <= 20 => {
                return Ok(Some(vec![entitlement("chain", format!("e{}", n + 1))]));
            }
            ("chain", Some(_)) => return Ok(Some(Vec::new())),
            ("loop", Some(n)) => {
                return Ok(Some(vec![entitlement("loop", format!("e{}", (n + 1) % 3))]));
            }
            _ => {}
        }
        let own = hash(&[&entitlement_ref.app_id, &entitlement_ref.entitlement_id]);
        if own.is_multiple_of(5) {
            return Ok(None);
        }
        let picked = self
            .targets
            .iter()
            .filter(|target| {
                hash(&[
                    &entitlement_ref.app_id,
                    &entitlement_ref.entitlement_id,
                    &target.app_id,
                    &target.entitlement_id,
                ])
                .is_multiple_of(3)
            })
            .cloned()
            .collect();
        Ok(Some(picked))
    }

    fn binding_exists(
        &self,
        source: &pb::EntitlementRef,
        destination: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        Ok(hash(&[
            &source.app_id,
            &source.entitlement_id,
            &destination.app_id,
            &destination.entitlement_id,
        ])
        .is_multiple_of(2))
    }

    fn dependants(&self, _: &pb::EntitlementRef) -> Result<Vec<pb::EntitlementRef>, LookupError> {
        Ok(Vec::new())
    }
}
