//! What the writer does for each kind of request, inside the request's savepoint: a policy
//! write, and the creation and deletion of a proxy binding.

use rusqlite::Connection;

use super::error::Failure;
use super::lookup::run_check;
use super::queries::{self, Head};
use super::writer::Operation;
use crate::pb;
use crate::policy;
use crate::store::record::clear_output_fields;
use crate::store::{StoreError, StoredBinding, StoredRevision, Write, WriteOutcome};

impl Operation for Write {
    type Output = WriteOutcome;

    /// Precondition, implicit bindings, check, then the new record and its delegation edges.
    /// The bindings come before the check, which must see them; a write that does not stand
    /// takes them back with its savepoint.
    fn stage(self, conn: &Connection) -> Result<(WriteOutcome, bool), StoreError> {
        let Write {
            mut resource,
            delegation_targets,
            implicit_binding_sources,
            expected_revision,
            validate_only,
            check,
        } = self;
        clear_output_fields(&mut resource);
        let key = resource
            .entitlement
            .as_ref()
            .ok_or(Failure::MissingEntitlement)?;
        let head = queries::head(conn, key)?;
        if let Some(expected) = expected_revision {
            let actual = head.map(|head| head.revision);
            if actual.unwrap_or(0) != expected {
                return Err(StoreError::RevisionMismatch { expected, actual });
            }
        }

        let now = queries::now_micros();
        for source in &implicit_binding_sources {
            // An existing binding, explicit or not, is kept as it is.
            queries::insert_binding(conn, source, key, true, now)?;
        }

        let violations = run_check(check, conn)?;
        if policy::has_errors(&violations) {
            return Ok((WriteOutcome::Rejected { violations }, false));
        }

        // A clock stepped back must not make a revision older than the one it replaces.
        let update_time = head.map_or(now, |head| now.max(head.update_time));
        let new = Head {
            revision: head.map_or(1, |head| head.revision + 1),
            create_time: head.map_or(update_time, |head| head.create_time),
            update_time,
        };
        if !validate_only {
            queries::store_revision(conn, key, &prost::Message::encode_to_vec(&resource), new)?;
            queries::replace_delegations(conn, key, &delegation_targets)?;
        }
        let record = StoredRevision {
            revision: new.revision,
            create_time: queries::time_from_micros(new.create_time)?,
            update_time: queries::time_from_micros(new.update_time)?,
            resource,
        };
        Ok((WriteOutcome::Written { record, violations }, !validate_only))
    }
}

pub(super) struct CreateBinding {
    pub source: pb::EntitlementRef,
    pub destination: pb::EntitlementRef,
    pub implicit: bool,
}

impl Operation for CreateBinding {
    type Output = StoredBinding;

    fn stage(self, conn: &Connection) -> Result<(StoredBinding, bool), StoreError> {
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
        Ok((binding, true))
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
    fn stage(self, conn: &Connection) -> Result<((), bool), StoreError> {
        let Self {
            source,
            destination,
        } = self;
        if !queries::delete_binding(conn, &source, &destination)? {
            return Err(StoreError::NotFound);
        }
        if queries::delegates_to(conn, &destination, &source)? {
            return Err(StoreError::InUse {
                dependents: vec![destination],
            });
        }
        Ok(((), true))
    }
}
