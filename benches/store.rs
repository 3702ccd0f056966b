//! The SQLite store without a server: a point Get of a stored policy, one durable Set (one
//! transaction, one fsync), and 32 concurrent Sets (group-committed, the shape of the load
//! benchmark). `cargo bench --bench store`.

mod fixtures;

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use provisiond::store::sqlite::SqliteStore;
use provisiond::store::{Store, Write, WriteOutcome};

/// Policies stored before measuring, so reads and writes hit a b-tree of a realistic height.
const STORED: u64 = 1_000;

fn write_of(index: u64, variant: u64) -> Write {
    Write {
        resource: fixtures::five_step(fixtures::entitlement(index), variant),
        delegation_targets: Vec::new(),
        implicit_binding_sources: Vec::new(),
        expected_revision: None,
        create_only: false,
        validate_only: false,
        check: Box::new(|_| Ok(vec![])),
        actor: "bench".into(),
        change_cause: String::new(),
    }
}

async fn expect_written(
    write: impl Future<Output = Result<WriteOutcome, provisiond::store::StoreError>>,
) {
    match write.await {
        Ok(WriteOutcome::Written { .. }) => {}
        other => panic!("write failed: {other:?}"),
    }
}

fn store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path()).expect("open");
    runtime.block_on(async {
        let pending: Vec<_> = (0..STORED).map(|i| store.write(write_of(i, 0))).collect();
        for write in pending {
            expect_written(write).await;
        }
    });
    let variant = AtomicU64::new(1);

    let mut group = c.benchmark_group("store");
    let key = fixtures::entitlement(0);
    group.bench_function("get", |b| {
        b.iter(|| {
            runtime
                .block_on(store.get(&key, None))
                .expect("get")
                .expect("stored")
        })
    });
    group.bench_function("set", |b| {
        b.iter(|| {
            let n = variant.fetch_add(1, Ordering::Relaxed);
            runtime.block_on(expect_written(store.write(write_of(n % STORED, n))))
        })
    });
    group.throughput(Throughput::Elements(32));
    group.bench_function("set_32_concurrent", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let pending: Vec<_> = (0..32)
                    .map(|_| {
                        let n = variant.fetch_add(1, Ordering::Relaxed);
                        store.write(write_of(n % STORED, n))
                    })
                    .collect();
                for write in pending {
                    expect_written(write).await;
                }
            })
        })
    });
    group.finish();
    runtime.block_on(store.close()).expect("close");
}

criterion_group!(benches, store);
criterion_main!(benches);
