//! How a stored revision becomes the resource a client sees: the output-only fields are derived
//! from the record, never stored in the encoded bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{StoredBinding, StoredRevision};
use crate::pb;

/// The RFC 7232 quoted entity tag of a revision. It is derived from the revision alone, which
/// increases with every write of one entitlement, so equal etags mean the same revision.
pub fn etag(revision: i64) -> String {
    format!("\"{revision}\"")
}

/// The revision an etag names; `None` for a string this service never issued (it can match no
/// revision, so the write fails as a mismatch).
pub fn revision_of_etag(etag: &str) -> Option<i64> {
    let digits = etag.strip_prefix('"')?.strip_suffix('"')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|revision| *revision > 0)
}

/// Clears what the client may send but the server owns.
pub fn clear_output_fields(resource: &mut pb::EntitlementProvisionPolicy) {
    resource.etag.clear();
    resource.revision = 0;
    resource.create_time = None;
    resource.update_time = None;
    // A client must not be able to name someone else as the author of its write.
    resource.actor.clear();
    resource.change_cause.clear();
}

pub fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}

impl StoredRevision {
    /// The resource with its output-only fields filled in.
    pub fn into_resource(self) -> pb::EntitlementProvisionPolicy {
        let mut resource = self.resource;
        resource.etag = etag(self.revision);
        resource.revision = self.revision;
        resource.create_time = Some(timestamp(self.create_time));
        resource.update_time = Some(timestamp(self.update_time));
        resource.actor = self.actor;
        resource.change_cause = self.change_cause;
        resource
    }
}

impl StoredBinding {
    /// The binding as the API shows it.
    pub fn into_binding(self) -> pb::ProxyBinding {
        pb::ProxyBinding {
            source: Some(self.source),
            destination: Some(self.destination),
            implicit: self.implicit,
            create_time: Some(timestamp(self.create_time)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_round_trips() {
        for revision in [1, 42, i64::MAX] {
            assert_eq!(revision_of_etag(&etag(revision)), Some(revision));
        }
    }

    #[test]
    fn foreign_etags_name_no_revision() {
        for foreign in [
            "",
            "1",
            "\"\"",
            "W/\"1\"",
            "\"-1\"",
            "\"0\"",
            "\"1a\"",
            "\"99999999999999999999\"",
        ] {
            assert_eq!(revision_of_etag(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn output_fields_come_from_the_record() {
        let record = StoredRevision {
            resource: pb::EntitlementProvisionPolicy::default(),
            revision: 3,
            create_time: UNIX_EPOCH + std::time::Duration::from_micros(1_500_000),
            update_time: UNIX_EPOCH + std::time::Duration::from_secs(2),
            change_seq: 1,
            actor: "alice".into(),
            change_cause: "ticket 7".into(),
        };
        let resource = record.into_resource();
        assert_eq!(resource.etag, "\"3\"");
        assert_eq!(resource.revision, 3);
        assert_eq!(resource.actor, "alice");
        assert_eq!(resource.change_cause, "ticket 7");
        assert_eq!(
            resource.create_time,
            Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            resource.update_time,
            Some(prost_types::Timestamp {
                seconds: 2,
                nanos: 0
            })
        );
    }
}
