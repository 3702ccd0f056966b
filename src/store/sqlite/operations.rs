//! What the writer does for each kind of request, inside the request's savepoint: a policy
//! write, a delete, and the creation and deletion of a proxy binding. Each that stands takes
//! the next position of the change log and appends its changes there, in the same savepoint.

use prost::Message;
use rusqlite::Connection;

use super::error::Failure;
use super::lookup::run_check;
use super::queries;
use super::writer::Operation;
use crate::pb;
use crate::policy;
use crate::store::changes;
use crate::store::changes::ChangeSet;
use crate::store::head::{self, Audit, Head};
use crate::store::record::clear_output_fields;
use crate::store::{
    Delete, DeleteOutcome, StoreError, StoredBinding, StoredRevision, Write, WriteOutcome,
};

fn record_of(
    resource: pb::EntitlementProvisionPolicy,
    head: Head,
    change_seq: u64,
    audit: Audit<'_>,
) -> Result<StoredRevision, StoreError> {
    head::record(resource, head, change_seq, audit, queries::time_from_micros)
}

impl Operation for Write {
    type Output = WriteOutcome;

    /// Preconditions, implicit bindings, check, then the new record, its delegation edges and
    /// its log entry. The bindings come before the check, which must see them; a write that
    /// does not stand takes them back with its savepoint.
    fn stage(self, conn: &Connection) -> Result<(WriteOutcome, Option<ChangeSet>), StoreError> {
        let Write {
            mut resource,
            delegation_targets,
            implicit_binding_sources,
            expected_revision,
            create_only,
            validate_only,
            check,
            actor,
            change_cause,
        } = self;
        let audit = Audit {
            actor: &actor,
            change_cause: &change_cause,
        };
        clear_output_fields(&mut resource);
        let key = resource
            .entitlement
            .clone()
            .ok_or(Failure::MissingEntitlement)?;
        let head = queries::head(conn, &key)?;
        head::check_expected(expected_revision, head)?;
        head::check_create_only(create_only, head)?;

        let now = queries::now_micros();
        let mut created = Vec::new();
        for source in &implicit_binding_sources {
            // An existing binding, explicit or not, is kept as it is.
            if queries::insert_binding(conn, source, &key, true, now)? {
                created.push(StoredBinding {
                    source: source.clone(),
                    destination: key.clone(),
                    implicit: true,
                    create_time: queries::time_from_micros(now)?,
                });
            }
        }

        let violations = run_check(check, conn)?;
        if policy::has_errors(&violations) {
            return Ok((WriteOutcome::Rejected { violations }, None));
        }

        let new = head::next(head, now, false);
        if validate_only {
            let record = record_of(resource, new, 0, audit)?;
            return Ok((WriteOutcome::Written { record, violations }, None));
        }
        let seq = queries::next_seq(conn)?;
        queries::store_revision(conn, &key, &resource.encode_to_vec(), new, seq, audit)?;
        queries::replace_delegations(conn, &key, &delegation_targets)?;
        let record = record_of(resource, new, seq, audit)?;
        let mut log = vec![changes::put(&record)];
        log.extend(created.iter().map(changes::binding_created));
        let logged = queries::append_change(conn, seq, new.update_time, log)?;
        Ok((WriteOutcome::Written { record, violations }, Some(logged)))
    }
}

impl Operation for Delete {
    type Output = DeleteOutcome;

    /// Preconditions, dependants, then the tombstone: the head's resource replaced by the bare
    /// entitlement, its edges dropped, and a DELETE entry carrying the last live resource.
    fn stage(self, conn: &Connection) -> Result<(DeleteOutcome, Option<ChangeSet>), StoreError> {
        let Delete {
            entitlement: key,
            expected_revision,
            validate_only,
            allow_missing,
            actor,
            change_cause,
        } = self;
        let audit = Audit {
            actor: &actor,
            change_cause: &change_cause,
        };
        let Some(head) = queries::head(conn, &key)?.filter(|head| !head.deleted) else {
            return match allow_missing {
                true => Ok((DeleteOutcome::Missing, None)),
                false => Err(StoreError::NotFound),
            };
        };
        head::check_expected(expected_revision, Some(head))?;
        let dependents = queries::dependants(conn, &key)?;
        if !dependents.is_empty() {
            return Err(StoreError::HasDependants { dependents });
        }
        let tombstone = head::next(Some(head), queries::now_micros(), true);
        if validate_only {
            let outcome = DeleteOutcome::Deleted {
                revision: tombstone.revision,
                change_seq: 0,
            };
            return Ok((outcome, None));
        }
        let last = queries::current(conn, &key)?.ok_or(Failure::MissingEntitlement)?;
        let seq = queries::next_seq(conn)?;
        let bare = head::tombstone(&key).encode_to_vec();
        queries::store_revision(conn, &key, &bare, tombstone, seq, audit)?;
        queries::replace_delegations(conn, &key, &[])?;
        let log = vec![changes::delete(tombstone.revision, audit, &last)];
        let logged = queries::append_change(conn, seq, tombstone.update_time, log)?;
        let outcome = DeleteOutcome::Deleted {
            revision: tombstone.revision,
            change_seq: seq,
        };
        Ok((outcome, Some(logged)))
    }
}

pub(super) struct CreateBinding {
    pub source: pb::EntitlementRef,
    pub destination: pb::EntitlementRef,
    pub implicit: bool,
}

impl Operation for CreateBinding {
    type Output = StoredBinding;

    fn stage(self, conn: &Connection) -> Result<(StoredBinding, Option<ChangeSet>), StoreError> {
        let Self {
            source,
            destination,
            implicit,
        } = self;
        let create_time = queries::now_micros();
        if !queries::insert_binding(conn, &source, &destination, implicit, create_time)? {
            return Err(StoreError::AlreadyExists);
        }
        let binding = StoredBinding {
            source,
            destination,
            implicit,
            create_time: queries::time_from_micros(create_time)?,
        };
        let seq = queries::next_seq(conn)?;
        let log = vec![changes::binding_created(&binding)];
        let logged = queries::append_change(conn, seq, create_time, log)?;
        Ok((binding, Some(logged)))
    }
}

pub(super) struct DeleteBinding {
    pub source: pb::EntitlementRef,
    pub destination: pb::EntitlementRef,
}

impl Operation for DeleteBinding {
    type Output = ();

    /// A binding is in use while the destination's current resource delegates to the source:
    /// then the delete is taken back with the savepoint.
    fn stage(self, conn: &Connection) -> Result<((), Option<ChangeSet>), StoreError> {
        let Self {
            source,
            destination,
        } = self;
        let Some(binding) = queries::delete_binding(conn, &source, &destination)? else {
            return Err(StoreError::NotFound);
        };
        if queries::delegates_to(conn, &destination, &source)? {
            return Err(StoreError::InUse {
                dependents: vec![destination],
            });
        }
        let seq = queries::next_seq(conn)?;
        let log = vec![changes::binding_deleted(&binding)];
        let logged = queries::append_change(conn, seq, queries::now_micros(), log)?;
        Ok(((), Some(logged)))
    }
}
