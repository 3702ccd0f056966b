//! The audit trail over the real transport: every revision's `actor` (the principal, from the
//! request extensions) and `change_cause` (from the request), as Get, the history and Watch
//! show them, on SQLite and on PostgreSQL; the cause's limit; and that the actor never comes
//! from the body.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use provisiond::pb;
use provisiond::pb::policy_change::Kind;
use provisiond::pb::provision_policy_service_server::ProvisionPolicyService;
use provisiond::server::principal::{Principal, Role};
use tonic::Code;

/// Bounds a hang only; never measures speed.
const LIMIT: Duration = Duration::from_secs(30);

fn set_with_cause(
    entitlement: &pb::EntitlementRef,
    hook: &str,
    change_cause: &str,
) -> pb::SetProvisionPolicyRequest {
    pb::SetProvisionPolicyRequest {
        change_cause: change_cause.to_owned(),
        ..set_request(resource(entitlement.clone(), webhook(hook)), "")
    }
}

fn history_of(entitlement: &pb::EntitlementRef) -> pb::ListProvisionPolicyRevisionsRequest {
    pb::ListProvisionPolicyRevisionsRequest {
        entitlement: Some(entitlement.clone()),
        ..Default::default()
    }
}

/// Set (cause "first"), Set (no cause), Delete ("retired"), Rollback to 1 ("restore"), each
/// as `anonymous`; then what Get, the history and a Watch from before the first Set show.
async fn trail_is_recorded_and_shown(client: &mut Client) {
    let ent = entitlement("audit", "trail");
    let start = client
        .list_provision_policies(pb::ListProvisionPoliciesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .read_at;

    let set = client
        .set_provision_policy(set_with_cause(&ent, "hook-1", "first"))
        .await
        .expect("set")
        .into_inner();
    let stored = set.policy.expect("policy");
    assert_eq!(
        (stored.actor.as_str(), stored.change_cause.as_str()),
        ("anonymous", "first"),
        "the Set's response shows the audit fields"
    );
    client
        .set_provision_policy(set_with_cause(&ent, "hook-2", ""))
        .await
        .expect("second set");
    client
        .delete_provision_policy(pb::DeleteProvisionPolicyRequest {
            change_cause: "retired\nsee ticket 7".into(),
            ..delete_request(&ent)
        })
        .await
        .expect("delete");
    let rolled_back = client
        .rollback_provision_policy(pb::RollbackProvisionPolicyRequest {
            entitlement: Some(ent.clone()),
            revision: 1,
            change_cause: "restore".into(),
            ..Default::default()
        })
        .await
        .expect("rollback")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(rolled_back.revision, 4);
    assert_eq!(
        (
            rolled_back.actor.as_str(),
            rolled_back.change_cause.as_str()
        ),
        ("anonymous", "restore"),
        "a rollback is the roller-back's revision, not a copy of revision 1's audit"
    );

    let get = |revision| {
        let mut client = client.clone();
        let ent = ent.clone();
        async move {
            let policy = client
                .get_provision_policy(get_request(ent, revision))
                .await
                .expect("get")
                .into_inner()
                .policy
                .expect("policy");
            (policy.actor, policy.change_cause)
        }
    };
    assert_eq!(get(0).await, ("anonymous".into(), "restore".into()));
    assert_eq!(get(1).await, ("anonymous".into(), "first".into()));
    assert_eq!(get(2).await, ("anonymous".into(), String::new()));

    let history = client
        .list_provision_policy_revisions(history_of(&ent))
        .await
        .expect("history")
        .into_inner()
        .revisions;
    let trail: Vec<_> = history
        .iter()
        .map(|r| {
            let policy_audit = r
                .policy
                .as_ref()
                .map(|p| (p.actor.as_str(), p.change_cause.as_str()));
            (
                r.revision,
                r.deleted,
                (r.actor.as_str(), r.change_cause.as_str()),
                policy_audit,
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            (
                4,
                false,
                ("anonymous", "restore"),
                Some(("anonymous", "restore"))
            ),
            (3, true, ("anonymous", "retired\nsee ticket 7"), None),
            (2, false, ("anonymous", ""), Some(("anonymous", ""))),
            (
                1,
                false,
                ("anonymous", "first"),
                Some(("anonymous", "first"))
            ),
        ]
    );

    let mut stream = client
        .watch_provision_policies(pb::WatchProvisionPoliciesRequest {
            start_cursor: start,
            entitlement: Some(ent.clone()),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let message = tokio::time::timeout(LIMIT, stream.message())
            .await
            .expect("a message in time")
            .expect("no error")
            .expect("the stream goes on");
        for change in message.changes {
            let policy = change.policy.expect("a policy change");
            seen.push((
                Kind::try_from(change.kind).expect("a known kind"),
                change.revision,
                (change.actor, change.change_cause),
                (policy.actor, policy.change_cause),
            ));
        }
    }
    let audit = |actor: &str, cause: &str| (actor.to_owned(), cause.to_owned());
    assert_eq!(
        seen,
        [
            (
                Kind::Put,
                1,
                audit("anonymous", "first"),
                audit("anonymous", "first")
            ),
            (Kind::Put, 2, audit("anonymous", ""), audit("anonymous", "")),
            // The change names the deleter; its policy is the last live resource, by its writer.
            (
                Kind::Delete,
                3,
                audit("anonymous", "retired\nsee ticket 7"),
                audit("anonymous", "")
            ),
            (
                Kind::Put,
                4,
                audit("anonymous", "restore"),
                audit("anonymous", "restore")
            ),
        ]
    );
}

#[tokio::test]
async fn every_revision_shows_its_actor_and_cause() {
    let server = TestServer::start().await;
    trail_is_recorded_and_shown(&mut server.client.clone()).await;
}

#[tokio::test]
async fn every_revision_shows_its_actor_and_cause_on_postgres() {
    let Some(schema) = postgres::TestSchema::create() else {
        return;
    };
    let url = schema.store_url();
    let server = TestServer::start_with(|config| config.store = url).await;
    trail_is_recorded_and_shown(&mut server.client.clone()).await;
    server.stop().await;
}

#[tokio::test]
async fn a_cause_over_1_kib_is_refused_and_nothing_is_written() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("audit", "long");
    let long = "a".repeat(1025);
    let expect_refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(error_reason(&status), "INVALID_REQUEST");
        assert_eq!(
            bad_request_fields(&status),
            [("change_cause".to_owned(), "TOO_LONG".to_owned())]
        );
    };

    let refused = client
        .set_provision_policy(set_with_cause(&ent, "hook", &long))
        .await
        .expect_err("too long");
    expect_refused(refused);
    let missing = client
        .get_provision_policy(get_request(ent.clone(), 0))
        .await
        .expect_err("nothing written");
    assert_eq!(missing.code(), Code::NotFound);

    // 1024 bytes is the limit, not past it.
    client
        .set_provision_policy(set_with_cause(&ent, "hook", &long[..1024]))
        .await
        .expect("a cause of exactly 1 KiB");

    let refused = client
        .delete_provision_policy(pb::DeleteProvisionPolicyRequest {
            change_cause: long.clone(),
            ..delete_request(&ent)
        })
        .await
        .expect_err("too long");
    expect_refused(refused);
    let refused = client
        .rollback_provision_policy(pb::RollbackProvisionPolicyRequest {
            entitlement: Some(ent.clone()),
            revision: 1,
            change_cause: long,
            ..Default::default()
        })
        .await
        .expect_err("too long");
    expect_refused(refused);

    let history = client
        .list_provision_policy_revisions(history_of(&ent))
        .await
        .expect("history")
        .into_inner()
        .revisions;
    assert_eq!(history.len(), 1, "only the 1 KiB Set was written");
    assert_eq!(history[0].change_cause.len(), 1024);
}

#[tokio::test]
async fn a_cause_with_control_characters_is_refused() {
    let server = TestServer::start().await;
    let refused = server
        .client
        .clone()
        .set_provision_policy(set_with_cause(
            &entitlement("audit", "escape"),
            "hook",
            "ok\u{1b}[2J",
        ))
        .await
        .expect_err("an escape sequence");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        bad_request_fields(&refused),
        [("change_cause".to_owned(), "INVALID_TEXT".to_owned())]
    );
}

#[tokio::test]
async fn an_actor_claimed_in_the_body_is_ignored() {
    let server = TestServer::start().await;
    let mut client = server.client.clone();
    let ent = entitlement("audit", "claimed");
    let mut claimed = resource(ent.clone(), webhook("hook"));
    claimed.actor = "mallory".into();
    claimed.change_cause = "not here".into();
    let stored = client
        .set_provision_policy(set_request(claimed, ""))
        .await
        .expect("set")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(stored.actor, "anonymous");
    assert_eq!(
        stored.change_cause, "",
        "the resource's cause is output-only"
    );
    let got = client
        .get_provision_policy(get_request(ent, 0))
        .await
        .expect("get")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(
        (got.actor.as_str(), got.change_cause.as_str()),
        ("anonymous", "")
    );
}

/// A request as the auth layer hands it on: the principal in its extensions.
fn as_principal<T>(name: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(Principal {
        name: name.to_owned(),
        role: Role::Writer,
    });
    request
}

#[tokio::test]
async fn the_actor_is_the_principal_in_the_request_extensions() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let store = provisiond::store::sqlite::SqliteStore::open(data_dir.path()).expect("open");
    let service = provisiond::service::PolicyService::new(Arc::new(store));
    let ent = entitlement("audit", "principal");

    let set = ProvisionPolicyService::set_provision_policy(
        &service,
        as_principal("alice", set_with_cause(&ent, "hook-1", "by alice")),
    )
    .await
    .expect("set")
    .into_inner();
    assert_eq!(set.policy.expect("policy").actor, "alice");
    ProvisionPolicyService::delete_provision_policy(
        &service,
        as_principal("bob", delete_request(&ent)),
    )
    .await
    .expect("delete");
    ProvisionPolicyService::rollback_provision_policy(
        &service,
        as_principal(
            "carol",
            pb::RollbackProvisionPolicyRequest {
                entitlement: Some(ent.clone()),
                revision: 1,
                ..Default::default()
            },
        ),
    )
    .await
    .expect("rollback");
    // Without a principal (authentication off) the caller is anonymous.
    ProvisionPolicyService::set_provision_policy(
        &service,
        tonic::Request::new(set_with_cause(&ent, "hook-4", "")),
    )
    .await
    .expect("anonymous set");

    let history = ProvisionPolicyService::list_provision_policy_revisions(
        &service,
        tonic::Request::new(history_of(&ent)),
    )
    .await
    .expect("history")
    .into_inner()
    .revisions;
    let actors: Vec<_> = history
        .iter()
        .map(|r| (r.revision, r.actor.as_str()))
        .collect();
    assert_eq!(
        actors,
        [(4, "anonymous"), (3, "carol"), (2, "bob"), (1, "alice")]
    );
    let current = ProvisionPolicyService::get_provision_policy(
        &service,
        tonic::Request::new(get_request(ent.clone(), 1)),
    )
    .await
    .expect("get")
    .into_inner()
    .policy
    .expect("policy");
    assert_eq!(
        (current.actor.as_str(), current.change_cause.as_str()),
        ("alice", "by alice")
    );
}
