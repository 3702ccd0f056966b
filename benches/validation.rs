//! Validation cost without a server: the static rules and the graph rules (against an empty
//! store) of a small and a large policy, and the protobuf decode that every Set and Validate
//! pays first. `cargo bench --bench validation`.

mod fixtures;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use provisiond::pb;
use provisiond::policy::{self, Lookup, LookupError};

/// A store with nothing in it: every delegation target is dangling, no binding exists.
struct EmptyStore;

impl Lookup for EmptyStore {
    fn stored_policy(
        &self,
        _entitlement: &pb::EntitlementRef,
    ) -> Result<Option<pb::EntitlementProvisionPolicy>, LookupError> {
        Ok(None)
    }

    fn binding_exists(
        &self,
        _source: &pb::EntitlementRef,
        _destination: &pb::EntitlementRef,
    ) -> Result<bool, LookupError> {
        Ok(false)
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
    group.finish();
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
