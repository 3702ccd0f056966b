//! Validation cost without a server: the static rules and the graph rules (against an empty
//! store) of a small and a large policy, and the protobuf decode that every Set and Validate
//! pays first. `cargo bench --bench validation`.

mod fixtures;

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use provisiond::pb;
use provisiond::policy::{self, Lookup, LookupError};

/// A store with nothing in it: every delegation target is dangling, no binding exists.
struct EmptyStore;

impl Lookup for EmptyStore {
    fn delegation_targets(
        &self,
        _entitlement: &pb::EntitlementRef,
    ) -> Result<Option<Vec<pb::EntitlementRef>>, LookupError> {
        Ok(None)
    }

    fn binding_exists(
        &self,
        _source: &pb::EntitlementRef,
        _destination: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        Ok(false)
    }
    fn dependants(&self, _: &pb::EntitlementRef) -> Result<Vec<pb::EntitlementRef>, LookupError> {
        Ok(Vec::new())
    }
}

fn policies() -> [(&'static str, pb::EntitlementProvisionPolicy); 2] {
    [
        (
            "five_step",
            fixtures::five_step(fixtures::entitlement(0), 0),
        ),
        ("large", fixtures::large(fixtures::entitlement(0))),
    ]
}

fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    for (name, resource) in policies() {
        assert!(
            !policy::has_errors(&policy::validate(&resource, &EmptyStore).expect("lookup")),
            "the {name} fixture must be valid"
        );
        group.throughput(Throughput::Bytes(resource.encoded_len() as u64));
        group.bench_with_input(
            BenchmarkId::new("static", name),
            &resource,
            |b, resource| b.iter(|| policy::check_static(resource)),
        );
        group.bench_with_input(BenchmarkId::new("all", name), &resource, |b, resource| {
            b.iter(|| policy::validate(resource, &EmptyStore))
        });
    }
    // The parse verdicts of CEL sources are kept, so the loops above parse nothing after their
    // first call: here every call brings an expression never seen, as the first Set of a new
    // policy does (one parse, two kept verdicts).
    let fresh = AtomicU64::new(0);
    group.bench_function("static/five_step_new_expression", |b| {
        b.iter_batched(
            || {
                let n = fresh.fetch_add(1, Ordering::Relaxed);
                let mut resource = fixtures::five_step(fixtures::entitlement(0), 0);
                set_manual_expression(&mut resource, format!("subject.manager_{n}"));
                resource
            },
            |resource| policy::check_static(&resource),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// Replaces the expression of the manual step of a `fixtures::five_step` resource.
fn set_manual_expression(resource: &mut pb::EntitlementProvisionPolicy, expression: String) {
    use pb::provision_policy::Typ;
    use pb::provisioner_assignment::Typ as Assignee;
    let Some(Typ::MultiStep(steps)) = resource
        .provision_policy
        .as_mut()
        .and_then(|p| p.typ.as_mut())
    else {
        panic!("five_step is a multi_step");
    };
    for step in &mut steps.provision_steps {
        if let Some(Typ::Manual(manual)) = &mut step.typ
            && let Some(Assignee::Expression(assignee)) =
                manual.assignee.as_mut().and_then(|a| a.typ.as_mut())
        {
            assignee.expressions = vec![expression];
            return;
        }
    }
    panic!("five_step has a manual step with an expression assignee");
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (name, resource) in policies() {
        let bytes = resource.encode_to_vec();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &bytes, |b, bytes| {
            b.iter(|| pb::EntitlementProvisionPolicy::decode(bytes.as_slice()))
        });
    }
    group.finish();
}

criterion_group!(benches, validate, decode);
criterion_main!(benches);
