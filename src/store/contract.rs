//! The behaviour every [`Store`] backend owes the service, written once. A backend runs the
//! whole suite with [`store_contract_tests!`] and a [`Backend`] that starts empty.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use super::{Store, StoreError, StoredRevision, Write, WriteCheck, WriteOutcome};
use crate::pb;

/// Opens the store under test.
pub(crate) trait Backend: Send + Sync + 'static {
    type Store: Store;
    /// Every call on one `Backend` opens the same data; a new `Backend` starts empty.
    fn open(&self) -> impl Future<Output = Self::Store> + Send;
}

/// One `#[tokio::test]` per case of this module, each on a fresh `$backend`.
macro_rules! store_contract_tests {
    ($backend:expr) => {
        $crate::store::contract::store_contract_tests!(
            @cases $backend;
            missing_key_is_none,
            first_write_is_revision_1,
            overwrite_keeps_create_time,
            every_revision_stays_readable,
            unknown_revision_is_none,
            stale_expected_revision_is_a_mismatch,
            expected_revision_0_on_existing_is_a_mismatch,
            expected_revision_on_missing_is_a_mismatch,
            matching_expected_revision_writes,
            validate_only_writes_nothing,
            error_violations_reject_the_write,
            warnings_do_not_block_the_write,
            write_check_sees_stored_state,
            check_sees_stored_state_and_writes_nothing,
            concurrent_conditional_writes_have_one_winner,
            concurrent_unconditional_writes_all_land,
            reopen_keeps_everything,
        );
    };
    (@cases $backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::store::contract::$case(&$backend).await;
            }
        )*
    };
}
pub(crate) use store_contract_tests;

pub(crate) fn entitlement(app_id: &str, entitlement_id: &str) -> pb::EntitlementRef {
    pb::EntitlementRef {
        app_id: app_id.into(),
        entitlement_id: entitlement_id.into(),
    }
}

/// A resource whose content is told apart by `webhook_id`.
pub(crate) fn resource(
    entitlement: &pb::EntitlementRef,
    webhook_id: &str,
) -> pb::EntitlementProvisionPolicy {
    pb::EntitlementProvisionPolicy {
        entitlement: Some(entitlement.clone()),
        provision_policy: Some(pb::ProvisionPolicy {
            typ: Some(pb::provision_policy::Typ::Webhook(pb::WebhookProvision {
                webhook_id: webhook_id.into(),
            })),
        }),
        ..Default::default()
    }
}

fn webhook_id(resource: &pb::EntitlementProvisionPolicy) -> &str {
    match resource
        .provision_policy
        .as_ref()
        .and_then(|p| p.typ.as_ref())
    {
        Some(pb::provision_policy::Typ::Webhook(webhook)) => &webhook.webhook_id,
        other => panic!("not a webhook policy: {other:?}"),
    }
}

pub(crate) fn passing() -> WriteCheck {
    Box::new(|_| Ok(Vec::new()))
}

pub(crate) fn returning(violations: Vec<pb::PolicyViolation>) -> WriteCheck {
    Box::new(move |_| Ok(violations))
}

pub(crate) fn violation(reason: &str, severity: pb::Severity) -> pb::PolicyViolation {
    pb::PolicyViolation {
        field: "policy.provision_policy".into(),
        reason: reason.into(),
        description: format!("{reason} for the test"),
        severity: severity as i32,
    }
}

/// An unconditional write that passes its check.
pub(crate) fn put(resource: pb::EntitlementProvisionPolicy) -> Write {
    Write {
        resource,
        expected_revision: None,
        validate_only: false,
        check: passing(),
    }
}

pub(crate) fn put_if(resource: pb::EntitlementProvisionPolicy, expected_revision: i64) -> Write {
    Write {
        expected_revision: Some(expected_revision),
        ..put(resource)
    }
}

/// The record of a write that must succeed.
pub(crate) async fn written(store: &impl Store, write: Write) -> StoredRevision {
    match store.write(write).await {
        Ok(WriteOutcome::Written { record, .. }) => record,
        other => panic!("expected Written, got {other:?}"),
    }
}

fn assert_mismatch(result: Result<WriteOutcome, StoreError>, expected: i64, actual: Option<i64>) {
    match result {
        Err(StoreError::RevisionMismatch {
            expected: e,
            actual: a,
        }) => assert_eq!((e, a), (expected, actual), "mismatch details"),
        other => panic!("expected RevisionMismatch({expected}, {actual:?}), got {other:?}"),
    }
}

pub(crate) async fn missing_key_is_none(backend: &impl Backend) {
    let store = backend.open().await;
    let missing = entitlement("app", "missing");
    assert_eq!(store.get(&missing, None).await.unwrap(), None);
    assert_eq!(store.get(&missing, Some(1)).await.unwrap(), None);
}

pub(crate) async fn first_write_is_revision_1(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "first");
    // Output-only fields of the input are ignored, not stored.
    let input = pb::EntitlementProvisionPolicy {
        etag: "\"99\"".into(),
        revision: 99,
        create_time: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        update_time: Some(prost_types::Timestamp {
            seconds: 2,
            nanos: 0,
        }),
        ..resource(&key, "hook-1")
    };
    let record = written(&store, put(input)).await;
    assert_eq!(record.revision, 1);
    assert_eq!(record.create_time, record.update_time);
    assert_eq!(record.resource, resource(&key, "hook-1"));
    assert_eq!(store.get(&key, None).await.unwrap(), Some(record.clone()));
    assert_eq!(store.get(&key, Some(1)).await.unwrap(), Some(record));
}

pub(crate) async fn overwrite_keeps_create_time(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "overwritten");
    let first = written(&store, put(resource(&key, "hook-1"))).await;
    let second = written(&store, put(resource(&key, "hook-2"))).await;
    assert_eq!(second.revision, 2);
    assert_eq!(second.create_time, first.create_time);
    assert!(second.update_time >= first.update_time);
    assert_eq!(webhook_id(&second.resource), "hook-2");
    assert_eq!(store.get(&key, None).await.unwrap(), Some(second));
}

pub(crate) async fn every_revision_stays_readable(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "history");
    let mut records = Vec::new();
    for n in 1..=5 {
        records.push(written(&store, put(resource(&key, &format!("hook-{n}")))).await);
    }
    for record in &records {
        let read = store.get(&key, Some(record.revision)).await.unwrap();
        assert_eq!(read.as_ref(), Some(record), "revision {}", record.revision);
        assert_eq!(read.unwrap().create_time, records[0].create_time);
    }
    let times: Vec<_> = records.iter().map(|r| r.update_time).collect();
    assert!(times.is_sorted(), "update times go backwards: {times:?}");
    assert_eq!(
        store.get(&key, None).await.unwrap().as_ref(),
        records.last()
    );
}

pub(crate) async fn unknown_revision_is_none(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "two-revisions");
    written(&store, put(resource(&key, "hook-1"))).await;
    written(&store, put(resource(&key, "hook-2"))).await;
    for revision in [0, 3, 1000, -1] {
        assert_eq!(
            store.get(&key, Some(revision)).await.unwrap(),
            None,
            "{revision}"
        );
    }
    let other = entitlement("app", "never-written");
    assert_eq!(store.get(&other, Some(1)).await.unwrap(), None);
}

pub(crate) async fn stale_expected_revision_is_a_mismatch(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "stale");
    written(&store, put(resource(&key, "hook-1"))).await;
    let current = written(&store, put(resource(&key, "hook-2"))).await;
    let result = store.write(put_if(resource(&key, "hook-stale"), 1)).await;
    assert_mismatch(result, 1, Some(2));
    assert_eq!(store.get(&key, None).await.unwrap(), Some(current));
    assert_eq!(store.get(&key, Some(3)).await.unwrap(), None);
}

pub(crate) async fn expected_revision_0_on_existing_is_a_mismatch(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "exists");
    let current = written(&store, put(resource(&key, "hook-1"))).await;
    let result = store.write(put_if(resource(&key, "hook-again"), 0)).await;
    assert_mismatch(result, 0, Some(1));
    assert_eq!(store.get(&key, None).await.unwrap(), Some(current));
}

pub(crate) async fn expected_revision_on_missing_is_a_mismatch(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "absent");
    let result = store.write(put_if(resource(&key, "hook-1"), 5)).await;
    assert_mismatch(result, 5, None);
    assert_eq!(store.get(&key, None).await.unwrap(), None);
}

pub(crate) async fn matching_expected_revision_writes(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "conditional");
    let first = written(&store, put_if(resource(&key, "hook-1"), 0)).await;
    assert_eq!(first.revision, 1);
    let second = written(&store, put_if(resource(&key, "hook-2"), 1)).await;
    assert_eq!(second.revision, 2);
    assert_eq!(store.get(&key, None).await.unwrap(), Some(second));
}

pub(crate) async fn validate_only_writes_nothing(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "validated");
    let dry = |webhook: &str| Write {
        validate_only: true,
        ..put(resource(&key, webhook))
    };

    let would_be = written(&store, dry("hook-1")).await;
    assert_eq!(would_be.revision, 1);
    assert_eq!(would_be.create_time, would_be.update_time);
    assert_eq!(would_be.resource, resource(&key, "hook-1"));
    assert_eq!(store.get(&key, None).await.unwrap(), None);

    let stored = written(&store, put(resource(&key, "hook-1"))).await;
    let would_be = written(&store, dry("hook-2")).await;
    assert_eq!(would_be.revision, 2);
    assert_eq!(would_be.create_time, stored.create_time);
    assert_eq!(webhook_id(&would_be.resource), "hook-2");
    assert_eq!(store.get(&key, None).await.unwrap(), Some(stored));
    assert_eq!(store.get(&key, Some(2)).await.unwrap(), None);

    // The precondition applies to a dry run too.
    let stale = Write {
        validate_only: true,
        ..put_if(resource(&key, "hook-3"), 7)
    };
    assert_mismatch(store.write(stale).await, 7, Some(1));
    assert_eq!(
        written(&store, put(resource(&key, "hook-4")))
            .await
            .revision,
        2
    );
}

pub(crate) async fn error_violations_reject_the_write(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "rejected");
    let violations = vec![
        violation("REQUIRED", pb::Severity::Error),
        violation("DUPLICATE_VALUE", pb::Severity::Warning),
    ];
    let rejected = |webhook: &str| Write {
        check: returning(violations.clone()),
        ..put(resource(&key, webhook))
    };

    match store.write(rejected("hook-1")).await {
        Ok(WriteOutcome::Rejected { violations: got }) => assert_eq!(got, violations),
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(store.get(&key, None).await.unwrap(), None);

    let stored = written(&store, put(resource(&key, "hook-2"))).await;
    assert!(matches!(
        store.write(rejected("hook-3")).await,
        Ok(WriteOutcome::Rejected { .. })
    ));
    assert_eq!(store.get(&key, None).await.unwrap(), Some(stored));
    assert_eq!(store.get(&key, Some(2)).await.unwrap(), None);
}

pub(crate) async fn warnings_do_not_block_the_write(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "warned");
    let warnings = vec![
        violation("SUPERSEDED_FIELD", pb::Severity::Warning),
        violation("DANGLING_DELEGATION", pb::Severity::Warning),
    ];
    let write = Write {
        check: returning(warnings.clone()),
        ..put(resource(&key, "hook-1"))
    };
    match store.write(write).await {
        Ok(WriteOutcome::Written { record, violations }) => {
            assert_eq!(violations, warnings);
            assert_eq!(store.get(&key, None).await.unwrap(), Some(record));
        }
        other => panic!("expected Written, got {other:?}"),
    }
}

/// What a check's [`crate::policy::Lookup`] answered, carried out of the `'static` closure.
type Seen = Arc<Mutex<Option<(Option<pb::EntitlementProvisionPolicy>, bool, bool)>>>;

/// A check that records whether `target` is stored and whether bindings are seen, then passes.
fn observing(target: pb::EntitlementRef, seen: &Seen) -> WriteCheck {
    let seen = Arc::clone(seen);
    Box::new(move |lookup| {
        let policy = lookup.stored_policy(&target)?;
        let missing = lookup.stored_policy(&entitlement("app", "nowhere"))?;
        let bound = lookup.binding_exists(&target, &entitlement("app", "nowhere"))?;
        *seen.lock().unwrap() = Some((policy, missing.is_some(), bound));
        Ok(Vec::new())
    })
}

pub(crate) async fn write_check_sees_stored_state(backend: &impl Backend) {
    let store = backend.open().await;
    let target = entitlement("app", "target");
    let stored = written(&store, put(resource(&target, "hook-target"))).await;
    let seen = Seen::default();
    let write = Write {
        check: observing(target.clone(), &seen),
        ..put(resource(&entitlement("app", "delegating"), "hook-1"))
    };
    written(&store, write).await;
    let seen = seen.lock().unwrap().take().expect("the check ran");
    assert_eq!(seen, (Some(stored.resource), false, false));
}

pub(crate) async fn check_sees_stored_state_and_writes_nothing(backend: &impl Backend) {
    let store = backend.open().await;
    let target = entitlement("app", "target");
    let stored = written(&store, put(resource(&target, "hook-target"))).await;
    let seen = Seen::default();
    let warnings = vec![violation("DANGLING_DELEGATION", pb::Severity::Warning)];
    let observe = observing(target.clone(), &seen);
    let answer = warnings.clone();
    let got = store
        .check(Box::new(move |lookup| {
            observe(lookup)?;
            Ok(answer)
        }))
        .await
        .unwrap();
    assert_eq!(got, warnings);
    let seen = seen.lock().unwrap().take().expect("the check ran");
    assert_eq!(seen, (Some(stored.resource.clone()), false, false));
    assert_eq!(store.get(&target, None).await.unwrap(), Some(stored));
}

pub(crate) async fn concurrent_conditional_writes_have_one_winner(backend: &impl Backend) {
    let store = Arc::new(backend.open().await);
    let key = entitlement("app", "contended");
    written(&*store, put(resource(&key, "hook-0"))).await;
    let mut tasks = JoinSet::new();
    for n in 0..32 {
        let (store, key) = (Arc::clone(&store), key.clone());
        tasks.spawn(async move {
            let result = store
                .write(put_if(resource(&key, &format!("hook-{n}")), 1))
                .await;
            (n, result)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (n, Ok(WriteOutcome::Written { record, .. })) => {
                assert_eq!(record.revision, 2);
                winners.push(n);
            }
            (_, result) => assert_mismatch(result, 1, Some(2)),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let current = store.get(&key, None).await.unwrap().unwrap();
    assert_eq!(current.revision, 2);
    assert_eq!(
        webhook_id(&current.resource),
        format!("hook-{}", winners[0])
    );
}

pub(crate) async fn concurrent_unconditional_writes_all_land(backend: &impl Backend) {
    const WRITES: i64 = 200;
    let store = Arc::new(backend.open().await);
    let key = entitlement("app", "hammered");
    let mut tasks = JoinSet::new();
    for n in 0..WRITES {
        let (store, key) = (Arc::clone(&store), key.clone());
        tasks.spawn(
            async move { written(&*store, put(resource(&key, &format!("hook-{n}")))).await },
        );
    }
    let mut acknowledged = Vec::new();
    while let Some(record) = tasks.join_next().await {
        acknowledged.push(record.unwrap());
    }
    acknowledged.sort_by_key(|record| record.revision);
    let revisions: Vec<i64> = acknowledged.iter().map(|record| record.revision).collect();
    assert_eq!(revisions, (1..=WRITES).collect::<Vec<_>>());

    let mut contents = Vec::new();
    for record in &acknowledged {
        let read = store.get(&key, Some(record.revision)).await.unwrap();
        assert_eq!(read.as_ref(), Some(record));
        contents.push(webhook_id(&record.resource).to_owned());
    }
    contents.sort();
    let mut expected: Vec<_> = (0..WRITES).map(|n| format!("hook-{n}")).collect();
    expected.sort();
    assert_eq!(contents, expected, "every write landed once");
    assert_eq!(
        store.get(&key, None).await.unwrap().as_ref(),
        acknowledged.last()
    );
}

pub(crate) async fn reopen_keeps_everything(backend: &impl Backend) {
    let keys = [
        entitlement("app", "kept-1"),
        entitlement("other-app", "kept-2"),
    ];
    let mut records = Vec::new();
    {
        let store = backend.open().await;
        for key in &keys {
            for n in 1..=3 {
                records.push(written(&store, put(resource(key, &format!("hook-{n}")))).await);
            }
        }
        store.close().await.unwrap();
    }
    let store = backend.open().await;
    for record in &records {
        let key = record.resource.entitlement.as_ref().unwrap();
        let read = store.get(key, Some(record.revision)).await.unwrap();
        assert_eq!(read.as_ref(), Some(record));
    }
    for key in &keys {
        let current = store.get(key, None).await.unwrap().unwrap();
        assert_eq!(current.revision, 3);
    }
    // Writing goes on from the stored revision.
    assert_eq!(
        written(&store, put(resource(&keys[0], "hook-4")))
            .await
            .revision,
        4
    );
    store.close().await.unwrap();
}
