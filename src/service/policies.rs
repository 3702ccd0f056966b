//! The policy resource RPCs: get, set, validate, list, delete, history and rollback.

use bytes::Bytes;
use prost::Message;
use tracing::Instrument;

use crate::error::Error;
use crate::pb;
use crate::policy;
use crate::policy::consistency::{self, ConsistencyError, Freshness};
use crate::policy::lifecycle;
use crate::policy::tokens::{PolicyPage, RevisionPage};
use crate::store::record::{clear_output_fields, etag, revision_of_etag, timestamp};
use crate::store::{
    Delete, DeleteOutcome, PolicyQuery, RevisionQuery, Store, StoreError, StoredRevision, Write,
    WriteOutcome, read_position,
};

use super::{cursor_of, plans};

/// The static rules in a span of their own, `policy.validate`, with how many violations they
/// found.
fn check_static(resource: &pb::EntitlementProvisionPolicy) -> Vec<pb::PolicyViolation> {
    let span = tracing::info_span!("policy.validate", violations = tracing::field::Empty);
    let _entered = span.enter();
    let violations = policy::check_static(resource);
    // As i64: tracing-opentelemetry exports unsigned fields as strings.
    span.record("violations", violations.len() as i64);
    violations
}

/// The answer to a Get, encoded (an encoded `GetProvisionPolicyResponse`): the current
/// revision's bytes come ready from memory, so they are copied behind the response's own
/// fields, never decoded and encoded again (`get_route.rs` sends them as they are).
pub(super) async fn get(
    store: &impl Store,
    request: pb::GetProvisionPolicyRequest,
) -> Result<Bytes, Error> {
    let problems = policy::check_get_request(&request);
    if !problems.is_empty() {
        return Err(Error::InvalidRequest(problems));
    }
    let freshness = freshness_of(store, request.consistency.as_ref())?;
    let entitlement = request.entitlement.unwrap_or_default();
    let revision = (request.revision > 0).then_some(request.revision);
    let not_found = |entitlement| Error::NotFound {
        entitlement,
        revision,
    };
    match revision {
        None => {
            let served = store
                .get_current(&entitlement, freshness)
                .await
                .map_err(|error| read_error(store, error))?;
            let policy = served.value.ok_or_else(|| not_found(entitlement))?;
            Ok(get_response(&policy, cursor_of(store, served.at)))
        }
        // Revisions never change: the database has every one there is.
        Some(revision) => {
            let at = database_position(store, freshness).await?;
            let record = store.get(&entitlement, Some(revision)).await?;
            let record = record.ok_or_else(|| not_found(entitlement))?;
            let response = pb::GetProvisionPolicyResponse {
                policy: Some(record.into_resource()),
                served_at: cursor_of(store, at),
            };
            Ok(response.encode_to_vec().into())
        }
    }
}

/// An encoded `GetProvisionPolicyResponse` of the encoded `policy`: field 1 written by hand
/// around the ready bytes, the rest by prost.
fn get_response(policy: &[u8], served_at: String) -> Bytes {
    use prost::encoding::{WireType, encode_key, encode_varint};
    let rest = pb::GetProvisionPolicyResponse {
        policy: None,
        served_at,
    };
    let mut bytes = Vec::with_capacity(policy.len() + rest.encoded_len() + 11);
    encode_key(1, WireType::LengthDelimited, &mut bytes);
    encode_varint(policy.len() as u64, &mut bytes);
    bytes.extend_from_slice(policy);
    rest.encode_raw(&mut bytes);
    bytes.into()
}

/// The freshness a request's `consistency` asks for.
fn freshness_of(
    store: &impl Store,
    consistency: Option<&pb::Consistency>,
) -> Result<Freshness, Error> {
    consistency::parse(consistency, store.store_id()).map_err(|error| match error {
        ConsistencyError::Invalid(violations) => Error::InvalidRequest(violations),
        ConsistencyError::Cursor(violations) => Error::InvalidCursor(violations),
    })
}

/// The position a read that goes to the database itself is served at. Such a read sees every
/// commit before it, so `fully_consistent` needs no round trip for the head: the head this
/// replica knows is a true lower bound. A cursor ahead of the log is still refused.
async fn database_position(store: &impl Store, freshness: Freshness) -> Result<u64, Error> {
    let freshness = match freshness {
        Freshness::Latest => Freshness::Any,
        other => other,
    };
    read_position(store, freshness)
        .await
        .map_err(|error| read_error(store, error))
}

/// A read's store error, with the head's cursor for one ahead of the log.
fn read_error(store: &impl Store, error: StoreError) -> Error {
    match error {
        StoreError::CursorAhead { given, head } => Error::CursorAhead {
            given,
            head,
            head_cursor: cursor_of(store, head),
        },
        other => Error::from(other),
    }
}

/// `actor` is the caller's principal, from the transport.
pub(super) async fn set(
    store: &impl Store,
    request: pb::SetProvisionPolicyRequest,
    actor: String,
) -> Result<pb::SetProvisionPolicyResponse, Error> {
    let problems = lifecycle::check_set_request(&request);
    if !problems.is_empty() {
        return Err(Error::InvalidRequest(problems));
    }
    let resource = request.policy.unwrap_or_default();
    let intent = Intent {
        etag: request.etag,
        validate_only: request.validate_only,
        create_only: request.create_only,
        actor,
        change_cause: request.change_cause,
    };
    let (record, warnings) = write(store, resource, intent).await?;
    // Counted after the commit, not under the write lock: the blast radius, as now stored.
    let dependent_count =
        plans::count_dependents(store, record.resource.entitlement.as_ref()).await?;
    Ok(pb::SetProvisionPolicyResponse {
        change_cursor: write_cursor(store, &record),
        policy: Some(record.into_resource()),
        warnings,
        dependent_count,
    })
}

pub(super) async fn validate(
    store: &impl Store,
    request: pb::ValidateProvisionPolicyRequest,
) -> Result<pb::ValidateProvisionPolicyResponse, Error> {
    let freshness = freshness_of(store, request.consistency.as_ref())?;
    let mut resource = request.policy.unwrap_or_default();
    clear_output_fields(&mut resource);
    let mut violations = check_static(&resource);
    // The stored state the rules read: memory when it is fresh enough (always, on SQLite),
    // else one read view of the database.
    let needs_graph = policy::needs_graph_check(&resource);
    let served = store
        .read_current(
            freshness,
            Box::new(move |snapshot| {
                let lookup: &dyn policy::Lookup = snapshot;
                let graph = match needs_graph {
                    true => policy::check_graph(&resource, lookup)?,
                    false => Vec::new(),
                };
                let count = plans::dependent_count(resource.entitlement.as_ref(), lookup)?;
                Ok((graph, count))
            }),
        )
        .await
        .map_err(|error| read_error(store, error))?;
    let (graph, dependent_count) = served.value;
    violations.extend(graph);
    Ok(pb::ValidateProvisionPolicyResponse {
        valid: !policy::has_errors(&violations),
        violations,
        dependent_count,
        served_at: cursor_of(store, served.at),
    })
}

pub(super) async fn list(
    store: &impl Store,
    request: pb::ListProvisionPoliciesRequest,
) -> Result<pb::ListProvisionPoliciesResponse, Error> {
    let page = lifecycle::parse_list_policies_request(&request, store.store_id())
        .map_err(Error::InvalidRequest)?;
    // Every page reads at the first page's position; later writes are the Watch's to tell.
    let freshness = freshness_of(store, request.consistency.as_ref())?;
    let at = match &page.continues {
        Some(token) => token.read_at.seq,
        None => read_position(store, freshness)
            .await
            .map_err(|error| read_error(store, error))?,
    };
    // One more than the page holds tells whether another page follows.
    let query = PolicyQuery {
        app_id: page.app_id.clone(),
        at,
        after: page.continues.as_ref().map(|token| token.after.clone()),
        limit: page.size + 1,
    };
    let mut policies = store.list_policies(query).await?;
    let read_at = cursor_of(store, at);
    let next_page_token = if policies.len() > page.size {
        policies.truncate(page.size);
        let last = policies.last().expect("a full page");
        PolicyPage {
            read_at: policy::tokens::Cursor {
                store_id: store.store_id().to_owned(),
                seq: at,
            },
            app_id: request.app_id,
            after: last.resource.entitlement.clone().unwrap_or_default(),
        }
        .encode()
    } else {
        String::new()
    };
    Ok(pb::ListProvisionPoliciesResponse {
        policies: policies
            .into_iter()
            .map(StoredRevision::into_resource)
            .collect(),
        next_page_token,
        read_at,
    })
}

pub(super) async fn delete(
    store: &impl Store,
    request: pb::DeleteProvisionPolicyRequest,
    actor: String,
) -> Result<pb::DeleteProvisionPolicyResponse, Error> {
    let problems = lifecycle::check_delete_request(&request);
    if !problems.is_empty() {
        return Err(Error::InvalidRequest(problems));
    }
    let entitlement = request.entitlement.unwrap_or_default();
    let delete = Delete {
        entitlement: entitlement.clone(),
        expected_revision: expected_revision(&entitlement, &request.etag)?,
        validate_only: request.validate_only,
        allow_missing: request.allow_missing,
        actor,
        change_cause: request.change_cause,
    };
    let outcome = store.delete(delete).await.map_err(|error| match error {
        StoreError::NotFound => Error::NotFound {
            entitlement: entitlement.clone(),
            revision: None,
        },
        StoreError::HasDependants { dependents } => Error::HasDependants {
            entitlement: entitlement.clone(),
            dependents,
        },
        other => etag_error(other, &entitlement, &request.etag),
    })?;
    Ok(match outcome {
        DeleteOutcome::Deleted {
            revision,
            change_seq,
        } => pb::DeleteProvisionPolicyResponse {
            revision,
            change_cursor: if change_seq == 0 {
                String::new()
            } else {
                cursor_of(store, change_seq)
            },
        },
        DeleteOutcome::Missing => pb::DeleteProvisionPolicyResponse::default(),
    })
}

pub(super) async fn history(
    store: &impl Store,
    request: pb::ListProvisionPolicyRevisionsRequest,
) -> Result<pb::ListProvisionPolicyRevisionsResponse, Error> {
    let page = lifecycle::parse_list_revisions_request(&request).map_err(Error::InvalidRequest)?;
    let query = RevisionQuery {
        entitlement: page.entitlement.clone(),
        before: page.before,
        limit: page.size + 1,
    };
    let mut entries = store.list_revisions(query).await?;
    if entries.is_empty() && page.before.is_none() {
        return Err(Error::NotFound {
            entitlement: page.entitlement,
            revision: None,
        });
    }
    let next_page_token = if entries.len() > page.size {
        entries.truncate(page.size);
        let last = entries.last().expect("a full page");
        RevisionPage {
            entitlement: page.entitlement.clone(),
            before: last.record.revision,
        }
        .encode()
    } else {
        String::new()
    };
    let revisions = entries
        .into_iter()
        .map(|entry| pb::ProvisionPolicyRevision {
            entitlement: Some(page.entitlement.clone()),
            revision: entry.record.revision,
            deleted: entry.deleted,
            create_time: Some(timestamp(entry.record.update_time)),
            change_cursor: cursor_of(store, entry.record.change_seq),
            // A tombstone has no policy, so the revision itself says who deleted it and why.
            actor: entry.record.actor.clone(),
            change_cause: entry.record.change_cause.clone(),
            policy: (!entry.deleted).then(|| entry.record.into_resource()),
        })
        .collect();
    Ok(pb::ListProvisionPolicyRevisionsResponse {
        revisions,
        next_page_token,
    })
}

/// The new revision is the roller-back's: its actor and cause are this request's, not those of
/// the revision whose policies it writes again.
pub(super) async fn rollback(
    store: &impl Store,
    request: pb::RollbackProvisionPolicyRequest,
    actor: String,
) -> Result<pb::RollbackProvisionPolicyResponse, Error> {
    let problems = lifecycle::check_rollback_request(&request);
    if !problems.is_empty() {
        return Err(Error::InvalidRequest(problems));
    }
    let entitlement = request.entitlement.unwrap_or_default();
    // Revisions never change, so reading k outside the write is safe; the write checks
    // everything against today's state.
    let query = RevisionQuery {
        entitlement: entitlement.clone(),
        before: request.revision.checked_add(1),
        limit: 1,
    };
    let old = store
        .list_revisions(query)
        .await?
        .into_iter()
        .next()
        .filter(|entry| entry.record.revision == request.revision)
        .ok_or_else(|| Error::NotFound {
            entitlement: entitlement.clone(),
            revision: Some(request.revision),
        })?;
    if old.deleted {
        return Err(Error::RevisionDeleted {
            entitlement,
            revision: request.revision,
        });
    }
    let intent = Intent {
        etag: request.etag,
        validate_only: request.validate_only,
        create_only: false,
        actor,
        change_cause: request.change_cause,
    };
    let (record, warnings) = write(store, old.record.resource, intent).await?;
    Ok(pb::RollbackProvisionPolicyResponse {
        change_cursor: write_cursor(store, &record),
        policy: Some(record.into_resource()),
        warnings,
    })
}

/// How a write (Set or Rollback) is conditioned, and who makes it why.
struct Intent {
    etag: String,
    validate_only: bool,
    create_only: bool,
    actor: String,
    change_cause: String,
}

/// Every check of a Set, then the write: the static rules first (a policy failing them never
/// reaches the writer), then the graph rules inside the write transaction.
async fn write(
    store: &impl Store,
    mut resource: pb::EntitlementProvisionPolicy,
    intent: Intent,
) -> Result<(StoredRevision, Vec<pb::PolicyViolation>), Error> {
    clear_output_fields(&mut resource);
    let entitlement = resource.entitlement.clone().unwrap_or_default();
    let static_violations = check_static(&resource);
    if policy::has_errors(&static_violations) {
        // A read view still finds the graph errors, so the caller sees them all at once.
        let violations = with_graph_violations(store, &resource, static_violations).await?;
        return Err(Error::InvalidPolicy(errors_only(violations)));
    }
    let checked = resource.clone();
    let edges = policy::graph::edges(&resource);
    let write = Write {
        resource,
        delegation_targets: edges.targets,
        implicit_binding_sources: edges.implicit_sources,
        expected_revision: expected_revision(&entitlement, &intent.etag)?,
        create_only: intent.create_only,
        validate_only: intent.validate_only,
        check: Box::new(move |lookup| {
            let mut violations = static_violations;
            violations.extend(policy::check_graph(&checked, lookup)?);
            Ok(violations)
        }),
        actor: intent.actor,
        change_cause: intent.change_cause,
    };
    // Made current for the call, which queues the job at once: the writer takes the span with
    // the job, records the batch size on it and puts the batch's `store.commit` under it. Its
    // time is the whole wait: queue, the graph checks in the writer's savepoint, the commit.
    let span = tracing::info_span!("store.write", batch_size = tracing::field::Empty);
    let written = span.in_scope(|| store.write(write)).instrument(span).await;
    match written {
        Ok(WriteOutcome::Written { record, violations }) => Ok((record, violations)),
        Ok(WriteOutcome::Rejected { violations }) => {
            Err(Error::InvalidPolicy(errors_only(violations)))
        }
        Err(StoreError::AlreadyExists) => Err(Error::AlreadyExists { entitlement }),
        Err(other) => Err(etag_error(other, &entitlement, &intent.etag)),
    }
}

/// The revision an etag names; one this service never issued matches nothing.
fn expected_revision(entitlement: &pb::EntitlementRef, given: &str) -> Result<Option<i64>, Error> {
    match given {
        "" => Ok(None),
        given => revision_of_etag(given)
            .map(Some)
            .ok_or_else(|| Error::EtagMismatch {
                entitlement: entitlement.clone(),
                given: given.to_owned(),
                current: None,
            }),
    }
}

fn etag_error(error: StoreError, entitlement: &pb::EntitlementRef, given: &str) -> Error {
    match error {
        StoreError::RevisionMismatch { actual, .. } => Error::EtagMismatch {
            entitlement: entitlement.clone(),
            given: given.to_owned(),
            current: actual.map(etag),
        },
        other => Error::from(other),
    }
}

fn write_cursor(store: &impl Store, record: &StoredRevision) -> String {
    if record.change_seq == 0 {
        return String::new();
    }
    cursor_of(store, record.change_seq)
}

/// `violations` plus those against stored state, through a read view.
async fn with_graph_violations(
    store: &impl Store,
    resource: &pb::EntitlementProvisionPolicy,
    mut violations: Vec<pb::PolicyViolation>,
) -> Result<Vec<pb::PolicyViolation>, Error> {
    if !policy::needs_graph_check(resource) {
        return Ok(violations);
    }
    let snapshot = resource.clone();
    let graph = store
        .check(Box::new(move |lookup| {
            policy::check_graph(&snapshot, lookup)
        }))
        .await?;
    violations.extend(graph);
    Ok(violations)
}

fn errors_only(violations: Vec<pb::PolicyViolation>) -> Vec<pb::PolicyViolation> {
    violations
        .into_iter()
        .filter(|v| v.severity == pb::Severity::Error as i32)
        .collect()
}
