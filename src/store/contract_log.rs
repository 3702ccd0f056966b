//! The lifecycle half of the store contract: the change log, deletes, create-only writes,
//! listing at a point of the log and the revision history. A backend runs it with
//! [`store_log_contract_tests!`], beside the first half.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::contract::{Backend, delegating, entitlement, put, put_if, resource, returning};
use super::contract::{targets_of, violation, written};
use super::{
    Delete, DeleteOutcome, HistoryEntry, PolicyQuery, RevisionQuery, Store, StoreError,
    StoredRevision, Write, WriteOutcome,
};
use crate::pb;
use crate::pb::policy_change::Kind;

/// One `#[tokio::test]` per case of this module, each on a fresh `$backend`.
macro_rules! store_log_contract_tests {
    ($backend:expr) => {
        $crate::store::contract::store_contract_tests!(
            @cases_in contract_log $backend;
            a_new_store_has_an_id_and_an_empty_log,
            every_mutation_is_one_log_entry_in_order,
            an_implicit_binding_travels_with_its_put,
            writes_that_do_not_stand_leave_no_entry,
            delete_writes_a_tombstone_and_revisions_go_on,
            delete_checks_its_preconditions,
            delete_is_refused_while_others_delegate,
            create_only_writes_only_a_missing_policy,
            concurrent_create_only_writes_have_one_winner,
            listing_at_a_point_ignores_later_writes,
            listing_pages_and_filters_by_app,
            revisions_list_newest_first_in_pages,
            subscribers_see_a_commit_before_it_is_acknowledged,
            reopen_keeps_the_log_and_its_id,
            concurrent_writers_fill_the_log_without_gaps,
            has_dependants_sees_current_delegations_only,
            every_revision_keeps_its_actor_and_cause,
            the_log_tells_who_wrote_and_who_deleted,
        );
    };
}
pub(crate) use store_log_contract_tests;

fn kinds(changes: &[pb::PolicyChange]) -> Vec<Kind> {
    changes
        .iter()
        .map(|c| Kind::try_from(c.kind).expect("a known kind"))
        .collect()
}

fn delete(key: &pb::EntitlementRef) -> Delete {
    Delete {
        entitlement: key.clone(),
        expected_revision: None,
        validate_only: false,
        allow_missing: false,
        actor: "tester".into(),
        change_cause: String::new(),
    }
}

fn create_only(resource: pb::EntitlementProvisionPolicy) -> Write {
    Write {
        create_only: true,
        ..put(resource)
    }
}

async fn deleted(store: &impl Store, key: &pb::EntitlementRef) -> (i64, u64) {
    match store.delete(delete(key)).await {
        Ok(DeleteOutcome::Deleted {
            revision,
            change_seq,
        }) => (revision, change_seq),
        other => panic!("expected Deleted, got {other:?}"),
    }
}

fn at(at: u64) -> PolicyQuery {
    PolicyQuery {
        app_id: None,
        at,
        after: None,
        limit: 1000,
    }
}

fn keys(records: &[StoredRevision]) -> Vec<(String, String, i64)> {
    records
        .iter()
        .map(|r| {
            let key = r.resource.entitlement.as_ref().expect("entitlement");
            (key.app_id.clone(), key.entitlement_id.clone(), r.revision)
        })
        .collect()
}

fn history(entries: &[HistoryEntry]) -> Vec<(i64, bool)> {
    entries
        .iter()
        .map(|e| (e.record.revision, e.deleted))
        .collect()
}

pub(crate) async fn a_new_store_has_an_id_and_an_empty_log(backend: &impl Backend) {
    let store = backend.open().await;
    assert!(!store.store_id().is_empty());
    assert_eq!(store.head().await.unwrap(), 0);
    assert_eq!(*store.subscribe().borrow(), 0);
    assert!(store.read_changes(0, 10).await.unwrap().is_empty());
}

pub(crate) async fn every_mutation_is_one_log_entry_in_order(backend: &impl Backend) {
    let store = backend.open().await;
    let (a, b) = (entitlement("app", "a"), entitlement("app", "b"));
    let first = written(&store, put(resource(&a, "hook-1"))).await;
    assert_eq!(first.change_seq, 1);
    let binding = store
        .create_binding(a.clone(), b.clone(), false)
        .await
        .unwrap();
    store.delete_binding(a.clone(), b.clone()).await.unwrap();
    let second = written(&store, put(resource(&b, "hook-2"))).await;
    assert_eq!(second.change_seq, 4);
    assert_eq!(deleted(&store, &a).await, (2, 5));
    assert_eq!(store.head().await.unwrap(), 5);

    let log = store.read_changes(0, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|s| s.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let all: Vec<Vec<Kind>> = log.iter().map(|s| kinds(&s.changes)).collect();
    assert_eq!(
        all,
        [
            vec![Kind::Put],
            vec![Kind::BindingCreated],
            vec![Kind::BindingDeleted],
            vec![Kind::Put],
            vec![Kind::Delete],
        ]
    );
    assert_eq!(
        log[0].changes[0].policy,
        Some(first.clone().into_resource())
    );
    assert_eq!(log[0].changes[0].revision, 1);
    assert_eq!(
        log[1].changes[0].binding,
        Some(binding.clone().into_binding())
    );
    assert_eq!(log[2].changes[0].binding, Some(binding.into_binding()));
    assert_eq!(log[2].changes[0].entitlement, Some(b.clone()));
    // A delete carries its tombstone's revision and the last live resource.
    assert_eq!(log[4].changes[0].revision, 2);
    assert_eq!(log[4].changes[0].policy, Some(first.into_resource()));
    assert!(log.windows(2).all(|w| w[0].commit_time <= w[1].commit_time));

    let middle = store.read_changes(2, 2).await.unwrap();
    assert_eq!(middle.iter().map(|s| s.seq).collect::<Vec<_>>(), [3, 4]);
    assert!(store.read_changes(5, 10).await.unwrap().is_empty());
}

pub(crate) async fn an_implicit_binding_travels_with_its_put(backend: &impl Backend) {
    let store = backend.open().await;
    let (source, key) = (entitlement("app", "source"), entitlement("app", "key"));
    let implicit = || Write {
        implicit_binding_sources: vec![source.clone()],
        ..delegating(&key, [source.clone()])
    };
    let record = written(&store, implicit()).await;
    let log = store.read_changes(0, 10).await.unwrap();
    assert_eq!(log.len(), 1, "one write, one entry");
    assert_eq!(kinds(&log[0].changes), [Kind::Put, Kind::BindingCreated]);
    assert_eq!(log[0].seq, record.change_seq);
    let binding = log[0].changes[1].binding.clone().expect("binding");
    assert_eq!(binding.source, Some(source.clone()));
    assert_eq!(binding.destination, Some(key.clone()));
    assert!(binding.implicit);

    // The binding exists now: a second write creates none and says so.
    written(&store, implicit()).await;
    let log = store.read_changes(1, 10).await.unwrap();
    assert_eq!(kinds(&log[0].changes), [Kind::Put]);
}

pub(crate) async fn writes_that_do_not_stand_leave_no_entry(backend: &impl Backend) {
    let store = backend.open().await;
    let (a, b) = (entitlement("app", "a"), entitlement("app", "b"));
    written(&store, put(resource(&a, "hook-1"))).await;
    store
        .create_binding(a.clone(), b.clone(), false)
        .await
        .unwrap();
    let head = store.head().await.unwrap();

    let rejected = Write {
        check: returning(vec![violation("TEST", pb::Severity::Error)]),
        implicit_binding_sources: vec![b.clone()],
        ..put(resource(&a, "hook-2"))
    };
    assert!(matches!(
        store.write(rejected).await,
        Ok(WriteOutcome::Rejected { .. })
    ));
    let dry = Write {
        validate_only: true,
        implicit_binding_sources: vec![b.clone()],
        ..put(resource(&a, "hook-3"))
    };
    let would_be = written(&store, dry).await;
    assert_eq!(would_be.change_seq, 0);
    assert!(matches!(
        store.write(put_if(resource(&a, "hook-4"), 9)).await,
        Err(StoreError::RevisionMismatch { .. })
    ));
    assert!(matches!(
        store.create_binding(a.clone(), b.clone(), false).await,
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        store.delete_binding(b.clone(), a.clone()).await,
        Err(StoreError::NotFound)
    ));
    let dry_delete = Delete {
        validate_only: true,
        ..delete(&a)
    };
    assert_eq!(
        store.delete(dry_delete).await.unwrap(),
        DeleteOutcome::Deleted {
            revision: 2,
            change_seq: 0
        }
    );
    assert!(matches!(
        store.delete(delete(&b)).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(store.read_changes(0, 100).await.unwrap().len() as u64, head);
    assert_eq!(store.get(&a, None).await.unwrap().unwrap().revision, 1);
}

pub(crate) async fn delete_writes_a_tombstone_and_revisions_go_on(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "doomed");
    let first = written(&store, put(resource(&key, "hook-1"))).await;
    let second = written(&store, put(resource(&key, "hook-2"))).await;
    assert_eq!(deleted(&store, &key).await.0, 3);

    assert_eq!(store.get(&key, None).await.unwrap(), None);
    assert_eq!(store.get(&key, Some(1)).await.unwrap(), Some(first.clone()));
    assert_eq!(store.get(&key, Some(2)).await.unwrap(), Some(second));
    assert_eq!(store.get(&key, Some(3)).await.unwrap(), None, "a tombstone");
    assert_eq!(
        targets_of(&store, &key).await,
        None,
        "no resource for the rules"
    );

    let again = written(&store, put(resource(&key, "hook-4"))).await;
    assert_eq!(again.revision, 4, "revision numbers never restart");
    assert_eq!(
        again.create_time, first.create_time,
        "the time of revision 1"
    );
    let entries = store
        .list_revisions(RevisionQuery {
            entitlement: key.clone(),
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        history(&entries),
        [(4, false), (3, true), (2, false), (1, false)]
    );
    assert_eq!(entries[0].record, again);
    assert_eq!(entries[1].record.resource.entitlement, Some(key.clone()));
    assert_eq!(entries[1].record.resource.provision_policy, None);
    assert!(
        entries
            .windows(2)
            .all(|w| w[0].record.change_seq > w[1].record.change_seq)
    );
}

pub(crate) async fn delete_checks_its_preconditions(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "guarded");
    assert!(matches!(
        store.delete(delete(&key)).await,
        Err(StoreError::NotFound)
    ));
    let lenient = Delete {
        allow_missing: true,
        expected_revision: Some(7),
        ..delete(&key)
    };
    assert_eq!(
        store.delete(lenient.clone()).await.unwrap(),
        DeleteOutcome::Missing
    );

    written(&store, put(resource(&key, "hook-1"))).await;
    let stale = Delete {
        expected_revision: Some(7),
        ..delete(&key)
    };
    match store.delete(stale).await {
        Err(StoreError::RevisionMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (7, Some(1)));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    let current = Delete {
        expected_revision: Some(1),
        ..delete(&key)
    };
    assert_eq!(
        store.delete(current).await.unwrap(),
        DeleteOutcome::Deleted {
            revision: 2,
            change_seq: 2
        }
    );
    assert!(matches!(
        store.delete(delete(&key)).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.delete(lenient).await.unwrap(), DeleteOutcome::Missing);
    // After a delete, the policy is missing for the precondition of a write too.
    match store.write(put_if(resource(&key, "hook-3"), 2)).await {
        Err(StoreError::RevisionMismatch { expected, actual }) => {
            assert_eq!((expected, actual), (2, None));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert_eq!(store.head().await.unwrap(), 2);
}

pub(crate) async fn delete_is_refused_while_others_delegate(backend: &impl Backend) {
    let store = backend.open().await;
    let (target, first, second) = (
        entitlement("app", "target"),
        entitlement("app", "first"),
        entitlement("other", "second"),
    );
    written(&store, put(resource(&target, "hook"))).await;
    written(&store, delegating(&first, [target.clone()])).await;
    written(&store, delegating(&second, [target.clone()])).await;
    match store.delete(delete(&target)).await {
        Err(StoreError::HasDependants { mut dependents }) => {
            dependents.sort_by(|a, b| a.app_id.cmp(&b.app_id));
            assert_eq!(dependents, [first.clone(), second.clone()]);
        }
        other => panic!("expected HasDependants, got {other:?}"),
    }
    // A dependant rewritten without the delegation, the other deleted: its edges go with it.
    written(&store, put(resource(&first, "hook"))).await;
    deleted(&store, &second).await;
    assert_eq!(targets_of(&store, &second).await, None);
    deleted(&store, &target).await;
}

pub(crate) async fn create_only_writes_only_a_missing_policy(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "created");
    let created = written(&store, create_only(resource(&key, "hook-1"))).await;
    assert_eq!(created.revision, 1);
    assert!(matches!(
        store.write(create_only(resource(&key, "hook-2"))).await,
        Err(StoreError::AlreadyExists)
    ));
    deleted(&store, &key).await;
    let recreated = written(&store, create_only(resource(&key, "hook-3"))).await;
    assert_eq!(recreated.revision, 3);
    assert_eq!(store.head().await.unwrap(), 3);
}

pub(crate) async fn concurrent_create_only_writes_have_one_winner(backend: &impl Backend) {
    let store = Arc::new(backend.open().await);
    let key = entitlement("app", "raced");
    let mut tasks = JoinSet::new();
    for n in 0..16 {
        let (store, key) = (Arc::clone(&store), key.clone());
        tasks.spawn(async move {
            store
                .write(create_only(resource(&key, &format!("hook-{n}"))))
                .await
        });
    }
    let mut winners = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(WriteOutcome::Written { record, .. }) => {
                assert_eq!(record.revision, 1);
                winners += 1;
            }
            Err(StoreError::AlreadyExists) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.head().await.unwrap(), 1);
}

pub(crate) async fn listing_at_a_point_ignores_later_writes(backend: &impl Backend) {
    let store = backend.open().await;
    let (a, b, c, d) = (
        entitlement("app", "a"),
        entitlement("app", "b"),
        entitlement("app", "c"),
        entitlement("app", "d"),
    );
    for key in [&a, &b, &c] {
        written(&store, put(resource(key, "hook-1"))).await;
    }
    let before = store.head().await.unwrap();
    let snapshot = store.list_policies(at(before)).await.unwrap();
    written(&store, put(resource(&b, "hook-2"))).await;
    deleted(&store, &c).await;
    written(&store, put(resource(&d, "hook-1"))).await;

    let then = store.list_policies(at(before)).await.unwrap();
    assert_eq!(then, snapshot, "the same state, whatever came after");
    assert_eq!(
        keys(&then),
        [
            ("app".into(), "a".into(), 1),
            ("app".into(), "b".into(), 1),
            ("app".into(), "c".into(), 1)
        ]
    );
    let now = store
        .list_policies(at(store.head().await.unwrap()))
        .await
        .unwrap();
    assert_eq!(
        keys(&now),
        [
            ("app".into(), "a".into(), 1),
            ("app".into(), "b".into(), 2),
            ("app".into(), "d".into(), 1)
        ]
    );
    assert_eq!(now[1], store.get(&b, None).await.unwrap().unwrap());
    assert!(store.list_policies(at(0)).await.unwrap().is_empty());
}

pub(crate) async fn listing_pages_and_filters_by_app(backend: &impl Backend) {
    let store = backend.open().await;
    for app in ["b-app", "a-app"] {
        for n in (0..5).rev() {
            written(
                &store,
                put(resource(&entitlement(app, &format!("e{n}")), "hook")),
            )
            .await;
        }
    }
    let head = store.head().await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_policies(PolicyQuery {
                after: after.clone(),
                limit: 3,
                ..at(head)
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().and_then(|r| r.resource.entitlement.clone());
        seen.extend(keys(&page));
    }
    let mut expected: Vec<_> = ["a-app", "b-app"]
        .iter()
        .flat_map(|app| (0..5).map(move |n| (app.to_string(), format!("e{n}"), 1)))
        .collect();
    assert_eq!(seen, expected, "every policy once, in key order");
    let only_b = store
        .list_policies(PolicyQuery {
            app_id: Some("b-app".into()),
            ..at(head)
        })
        .await
        .unwrap();
    expected.drain(..5);
    assert_eq!(keys(&only_b), expected);
}

pub(crate) async fn revisions_list_newest_first_in_pages(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "history");
    let other = entitlement("app", "other");
    for n in 1..=5 {
        written(&store, put(resource(&key, &format!("hook-{n}")))).await;
        written(&store, put(resource(&other, &format!("hook-{n}")))).await;
    }
    let page = |before, limit| {
        store.list_revisions(RevisionQuery {
            entitlement: key.clone(),
            before,
            limit,
        })
    };
    assert_eq!(
        history(&page(None, 2).await.unwrap()),
        [(5, false), (4, false)]
    );
    assert_eq!(
        history(&page(Some(4), 10).await.unwrap()),
        [(3, false), (2, false), (1, false)]
    );
    assert!(page(Some(1), 10).await.unwrap().is_empty());
    let newest = &page(None, 1).await.unwrap()[0];
    assert_eq!(newest.record, store.get(&key, None).await.unwrap().unwrap());
    let none = store
        .list_revisions(RevisionQuery {
            entitlement: entitlement("app", "never"),
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub(crate) async fn subscribers_see_a_commit_before_it_is_acknowledged(backend: &impl Backend) {
    let store = backend.open().await;
    let mut heads = store.subscribe();
    let key = entitlement("app", "seen");
    for n in 1..=3 {
        let record = written(&store, put(resource(&key, &format!("hook-{n}")))).await;
        assert!(*store.subscribe().borrow() >= record.change_seq);
    }
    let (_, seq) = deleted(&store, &key).await;
    assert!(*store.subscribe().borrow() >= seq);
    assert!(heads.has_changed().unwrap());
    assert_eq!(*heads.borrow_and_update(), 4);
}

pub(crate) async fn reopen_keeps_the_log_and_its_id(backend: &impl Backend) {
    let key = entitlement("app", "kept");
    let (id, log) = {
        let store = backend.open().await;
        written(&store, put(resource(&key, "hook-1"))).await;
        deleted(&store, &key).await;
        let log = store.read_changes(0, 10).await.unwrap();
        let id = store.store_id().to_owned();
        store.close().await.unwrap();
        (id, log)
    };
    let store = backend.open().await;
    assert_eq!(store.store_id(), id);
    assert_eq!(store.head().await.unwrap(), 2);
    assert_eq!(*store.subscribe().borrow(), 2);
    assert_eq!(store.read_changes(0, 10).await.unwrap(), log);
    assert_eq!(
        written(&store, put(resource(&key, "hook-3")))
            .await
            .change_seq,
        3
    );
}

pub(crate) async fn concurrent_writers_fill_the_log_without_gaps(backend: &impl Backend) {
    let store = Arc::new(backend.open().await);
    let mut tasks = JoinSet::new();
    for writer in 0..8 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let key = entitlement("app", &format!("writer-{writer}"));
            let mut acknowledged = Vec::new();
            for n in 0..10 {
                let record = written(&*store, put(resource(&key, &format!("hook-{n}")))).await;
                acknowledged.push((record.change_seq, key.clone(), record.revision));
            }
            acknowledged
        });
    }
    let mut acknowledged = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        acknowledged.extend(joined.unwrap());
    }
    let log = store.read_changes(0, 1000).await.unwrap();
    assert_eq!(
        log.iter().map(|s| s.seq).collect::<Vec<_>>(),
        (1..=80).collect::<Vec<u64>>(),
        "gap-free, in order"
    );
    let seqs: BTreeSet<u64> = acknowledged.iter().map(|(seq, ..)| *seq).collect();
    assert_eq!(seqs.len(), 80, "each write its own entry");
    for (seq, key, revision) in acknowledged {
        let change = &log[usize::try_from(seq - 1).unwrap()].changes[0];
        assert_eq!(
            (change.entitlement.as_ref(), change.revision),
            (Some(&key), revision)
        );
    }
}

pub(crate) async fn has_dependants_sees_current_delegations_only(backend: &impl Backend) {
    let store = backend.open().await;
    let (target, other, dependant) = (
        entitlement("app", "target"),
        entitlement("app", "other"),
        entitlement("app", "dependant"),
    );
    written(&store, put(resource(&target, "hook"))).await;
    assert!(!store.has_dependants(&target).await.unwrap());
    written(&store, delegating(&dependant, [target.clone()])).await;
    assert!(store.has_dependants(&target).await.unwrap());
    assert!(!store.has_dependants(&other).await.unwrap());
    written(&store, put(resource(&dependant, "hook"))).await;
    assert!(
        !store.has_dependants(&target).await.unwrap(),
        "its current policy no longer does"
    );
    written(&store, delegating(&dependant, [target.clone()])).await;
    deleted(&store, &dependant).await;
    assert!(
        !store.has_dependants(&target).await.unwrap(),
        "a deleted policy delegates nowhere"
    );
}

fn by(actor: &str, change_cause: &str, write: Write) -> Write {
    Write {
        actor: actor.into(),
        change_cause: change_cause.into(),
        ..write
    }
}

fn audit_of(record: &StoredRevision) -> (&str, &str) {
    (&record.actor, &record.change_cause)
}

/// Alice writes, Bob overwrites, Carol deletes, Dave writes again: the history of
/// `app/audited` on `store`.
async fn audited_history(store: &impl Store, key: &pb::EntitlementRef) {
    // The resource's own output-only fields are ignored: a body cannot name its author.
    let mut claimed = resource(key, "hook-1");
    claimed.actor = "mallory".into();
    claimed.change_cause = "claimed".into();
    let first = written(store, by("alice", "first", put(claimed))).await;
    assert_eq!(audit_of(&first), ("alice", "first"));
    written(store, by("bob", "", put(resource(key, "hook-2")))).await;
    let tombstone = Delete {
        actor: "carol".into(),
        change_cause: "retired\nsee ticket 7".into(),
        ..delete(key)
    };
    assert!(matches!(
        store.delete(tombstone).await,
        Ok(DeleteOutcome::Deleted { revision: 3, .. })
    ));
    let dry = Write {
        validate_only: true,
        ..by("eve", "dry run", put(resource(key, "hook-dry")))
    };
    let dry = written(store, dry).await;
    assert_eq!(audit_of(&dry), ("eve", "dry run"), "what would be stored");
    written(store, by("dave", "back", put(resource(key, "hook-4")))).await;
}

pub(crate) async fn every_revision_keeps_its_actor_and_cause(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "audited");
    audited_history(&store, &key).await;

    let current = store.get(&key, None).await.unwrap().expect("current");
    assert_eq!(audit_of(&current), ("dave", "back"));
    let first = store.get(&key, Some(1)).await.unwrap().expect("revision 1");
    assert_eq!(audit_of(&first), ("alice", "first"));
    assert_eq!(
        first.resource.actor, "",
        "kept beside the resource, not in it"
    );
    let second = store.get(&key, Some(2)).await.unwrap().expect("revision 2");
    assert_eq!(audit_of(&second), ("bob", ""));

    let entries = store
        .list_revisions(RevisionQuery {
            entitlement: key.clone(),
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    let trail: Vec<_> = entries
        .iter()
        .map(|e| (e.record.revision, e.deleted, audit_of(&e.record)))
        .collect();
    assert_eq!(
        trail,
        [
            (4, false, ("dave", "back")),
            (3, true, ("carol", "retired\nsee ticket 7")),
            (2, false, ("bob", "")),
            (1, false, ("alice", "first")),
        ]
    );

    let listed = store.list_policies(at(store.head().await.unwrap())).await;
    let listed = listed.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(audit_of(&listed[0]), ("dave", "back"));
    let before_delete = store.list_policies(at(2)).await.unwrap();
    assert_eq!(audit_of(&before_delete[0]), ("bob", ""));

    drop(store);
    let reopened = backend.open().await;
    let current = reopened.get(&key, None).await.unwrap().expect("current");
    assert_eq!(audit_of(&current), ("dave", "back"), "stored, not cached");
}

pub(crate) async fn the_log_tells_who_wrote_and_who_deleted(backend: &impl Backend) {
    let store = backend.open().await;
    let key = entitlement("app", "audited");
    audited_history(&store, &key).await;

    let log = store.read_changes(0, 100).await.unwrap();
    let changes: Vec<&pb::PolicyChange> = log.iter().flat_map(|set| &set.changes).collect();
    let trail: Vec<_> = changes
        .iter()
        .map(|c| {
            let policy = c.policy.as_ref().expect("a policy change");
            (
                Kind::try_from(c.kind).expect("a known kind"),
                c.revision,
                (c.actor.as_str(), c.change_cause.as_str()),
                (policy.actor.as_str(), policy.change_cause.as_str()),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            (Kind::Put, 1, ("alice", "first"), ("alice", "first")),
            (Kind::Put, 2, ("bob", ""), ("bob", "")),
            // The deleter on the change; the last live resource keeps its writer.
            (
                Kind::Delete,
                3,
                ("carol", "retired\nsee ticket 7"),
                ("bob", "")
            ),
            (Kind::Put, 4, ("dave", "back"), ("dave", "back")),
        ]
    );
}
