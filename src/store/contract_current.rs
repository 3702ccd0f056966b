//! What every backend's in-memory current state owes the reads served from it
//! (`store/current.rs`): each freshness sees what it promises, a cursor past the log is
//! refused, and memory equals the tables after any mix of mutations and reopens.

use std::collections::BTreeMap;
use std::time::Duration;

use super::contract::{Backend, delegating, entitlement, put, resource, returning, violation};
use super::current::Served;
use super::{Delete, PolicyQuery, Store, StoreError, StoredRevision, Write};
use crate::pb;
use crate::policy::consistency::Freshness;

macro_rules! store_current_contract_tests {
    ($backend:expr) => {
        $crate::store::contract::store_contract_tests!(
            @cases_in contract_current $backend;
            every_freshness_sees_an_acknowledged_write,
            a_cursor_past_the_head_is_refused,
            memory_agrees_with_the_tables_after_random_mutations_and_reopens,
        );
    };
}
pub(crate) use store_current_contract_tests;

/// A hang guard only: memory reaches the head in milliseconds.
const WITHIN: Duration = Duration::from_secs(10);

/// The current resource as `get_current` serves it (encoded as clients see it), decoded.
async fn current(
    store: &impl Store,
    key: &pb::EntitlementRef,
    freshness: Freshness,
) -> Served<Option<pb::EntitlementProvisionPolicy>> {
    let served = store.get_current(key, freshness).await.unwrap();
    Served {
        value: served.value.map(|bytes| {
            prost::Message::decode(bytes).expect("get_current serves a resource's encoding")
        }),
        at: served.at,
    }
}

/// A stored record as clients see it: what `get_current` must serve for it.
fn client(record: &StoredRevision) -> pb::EntitlementProvisionPolicy {
    record.clone().into_resource()
}

/// Polls `minimize_latency` until memory has reached `seq`, checking on the way that what it
/// serves never goes back.
async fn settled(
    store: &impl Store,
    key: &pb::EntitlementRef,
    seq: u64,
) -> Served<Option<pb::EntitlementProvisionPolicy>> {
    let deadline = tokio::time::Instant::now() + WITHIN;
    let mut last = 0;
    loop {
        let served = current(store, key, Freshness::Any).await;
        assert!(
            served.at >= last,
            "memory went back from {last} to {}",
            served.at
        );
        last = served.at;
        if served.at >= seq {
            return served;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "memory stayed at {} below {seq}",
            served.at
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) async fn every_freshness_sees_an_acknowledged_write(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "fresh");
    for n in 1..=3 {
        let record =
            super::contract::written(&store, put(resource(&key, &format!("hook-{n}")))).await;
        let latest = current(&store, &key, Freshness::Latest).await;
        assert_eq!(
            latest.value.as_ref(),
            Some(&client(&record)),
            "fully consistent"
        );
        assert!(latest.at >= record.change_seq);
        let fresh = current(&store, &key, Freshness::AtLeast(record.change_seq)).await;
        assert_eq!(
            fresh.value.as_ref(),
            Some(&client(&record)),
            "at least as fresh"
        );
        assert!(fresh.at >= record.change_seq);
        let any = settled(&store, &key, record.change_seq).await;
        assert_eq!(
            any.value.as_ref(),
            Some(&client(&record)),
            "minimize latency, once caught up"
        );
    }
    let missing = current(&store, &entitlement("app", "never"), Freshness::Latest).await;
    assert_eq!(missing.value, None);
    store.close().await.unwrap();
}

pub(crate) async fn a_cursor_past_the_head_is_refused(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "ahead");
    let record = super::contract::written(&store, put(resource(&key, "hook"))).await;
    let head = store.head().await.unwrap();
    assert_eq!(head, record.change_seq);
    match store.get_current(&key, Freshness::AtLeast(head + 1)).await {
        Err(StoreError::CursorAhead { given, head: told }) => {
            assert_eq!((given, told), (head + 1, head));
        }
        other => panic!("a cursor past the head was served: {other:?}"),
    }
    // The head itself is served, and with it the write.
    let served = current(&store, &key, Freshness::AtLeast(head)).await;
    assert_eq!(served.value.as_ref(), Some(&client(&record)));
    // Any position before it is served too (memory may lag there, but not back past it).
    let served = current(&store, &key, Freshness::AtLeast(0)).await;
    assert!(served.value.is_none() || served.value.as_ref() == Some(&client(&record)));
    store.close().await.unwrap();
}

/// The live policies as the tables hold them at the head: (key, revision, resource).
async fn tables(store: &impl Store) -> (u64, BTreeMap<(String, String), StoredRevision>) {
    let at = store.head().await.unwrap();
    let rows = store
        .list_policies(PolicyQuery {
            app_id: None,
            at,
            after: None,
            limit: 10_000,
        })
        .await
        .unwrap();
    let rows = rows
        .into_iter()
        .map(|record| {
            let key = record.resource.entitlement.clone().unwrap();
            ((key.app_id, key.entitlement_id), record)
        })
        .collect();
    (at, rows)
}

/// Memory (served without a look at the database, once it has reached the head) against the
/// tables, key by key: the current revisions, and every lookup the delegation rules make.
async fn agree(store: &impl Store, keys: &[pb::EntitlementRef], when: &str) -> usize {
    let (at, rows) = tables(store).await;
    for key in keys {
        let served = settled(store, key, at).await;
        let stored = rows.get(&(key.app_id.clone(), key.entitlement_id.clone()));
        assert_eq!(served.value, stored.map(client), "{when}: {key:?}");
    }
    let (for_memory, for_tables) = (keys.to_vec(), keys.to_vec());
    let memory = store
        .read_current(
            Freshness::Any,
            Box::new(move |snapshot| lookups(&for_memory, snapshot)),
        )
        .await
        .unwrap();
    assert!(memory.at >= at, "{when}: memory settled at the head");
    let tables = store
        .read_snapshot(Box::new(move |snapshot| lookups(&for_tables, snapshot)))
        .await
        .unwrap();
    if memory.at == at {
        assert_eq!(memory.value, tables, "{when}: the lookups of the rules");
    }
    rows.len()
}

/// What the delegation rules and the plans can ask of stored state about `keys`.
type Lookups = Vec<(
    Option<Vec<pb::EntitlementRef>>,
    Vec<pb::EntitlementRef>,
    Vec<bool>,
    Option<pb::EntitlementProvisionPolicy>,
)>;

fn lookups(
    keys: &[pb::EntitlementRef],
    snapshot: &dyn crate::policy::Snapshot,
) -> Result<Lookups, crate::policy::LookupError> {
    keys.iter()
        .map(|key| {
            let bindings = keys
                .iter()
                .map(|source| snapshot.binding_exists(source, key))
                .collect::<Result<_, _>>()?;
            Ok((
                snapshot.delegation_targets(key)?,
                snapshot.dependants(key)?,
                bindings,
                snapshot.resource(key)?,
            ))
        })
        .collect()
}

/// A repeatable pseudo-random source: each call a number below its bound.
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    }
}

/// One random mutation of the entitlements `keys` (at most 6): a write (delegating to some of
/// the others), a delete, a rollback (revision 1's resource written again), a binding created
/// or deleted, or a write that does not stand (rejected, validate-only, stale). Fails only on an
/// outcome none of those may have.
pub(crate) async fn mutate_at_random(
    store: &impl Store,
    keys: &[pb::EntitlementRef],
    next: &mut impl FnMut(u64) -> u64,
) {
    let count = keys.len() as u64;
    let owner = &keys[next(count) as usize];
    let targets: Vec<_> = (0..next(3))
        .map(|_| keys[next(count) as usize].clone())
        .filter(|target| target != owner)
        .collect();
    let write = delegating(owner, targets);
    let outcome = match next(7) {
        0 => store
            .delete(Delete {
                entitlement: owner.clone(),
                expected_revision: None,
                validate_only: false,
                allow_missing: true,
                actor: "tester".into(),
                change_cause: String::new(),
            })
            .await
            .map(drop),
        1 => store
            .write(Write {
                check: returning(vec![violation("NO", pb::Severity::Error)]),
                ..write
            })
            .await
            .map(drop),
        2 => store
            .write(Write {
                validate_only: true,
                ..write
            })
            .await
            .map(drop),
        3 => store
            .write(Write {
                expected_revision: Some(999),
                ..write
            })
            .await
            .map(drop),
        4 => {
            let source = keys[next(count) as usize].clone();
            match store
                .create_binding(source.clone(), owner.clone(), false)
                .await
            {
                Err(StoreError::AlreadyExists) => store
                    .delete_binding(source, owner.clone())
                    .await
                    .or_else(|err| match err {
                        StoreError::InUse { .. } => Ok(()),
                        other => Err(other),
                    }),
                other => other.map(drop),
            }
        }
        5 => match store.get(owner, Some(1)).await.unwrap() {
            Some(old) => {
                let write = Write {
                    delegation_targets: crate::policy::graph::edges(&old.resource).targets,
                    ..put(old.resource)
                };
                store.write(write).await.map(drop)
            }
            None => Ok(()),
        },
        _ => store.write(write).await.map(drop),
    };
    match outcome {
        Ok(())
        | Err(StoreError::RevisionMismatch { .. })
        | Err(StoreError::HasDependants { .. }) => {}
        Err(other) => panic!("{other:?}"),
    }
}

/// Random mutations ([`mutate_at_random`]) and reopens that load memory from the tables.
pub(crate) async fn memory_agrees_with_the_tables_after_random_mutations_and_reopens(
    backend: &impl Backend,
) {
    let keys: Vec<pb::EntitlementRef> = (0..6)
        .map(|n| entitlement("mix", &format!("e{n}")))
        .collect();
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let mut store = backend.open().await;
    let (mut live_seen, mut reopens) = (0, 0);
    for round in 0..240 {
        if next(16) == 0 {
            store.close().await.unwrap();
            store = backend.open().await;
            reopens += 1;
        } else {
            mutate_at_random(&store, &keys, &mut next).await;
        }
        live_seen += agree(&store, &keys, &format!("round {round}")).await;
    }
    assert!(reopens >= 3, "the mix reopens the store: {reopens}");
    assert!(live_seen > 240, "the mix keeps policies live: {live_seen}");
    store.close().await.unwrap();
}
