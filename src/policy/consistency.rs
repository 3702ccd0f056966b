//! The `consistency` of a read request: how fresh the state it is served from must be.

use super::lifecycle::parse_cursor;
use super::path::Path;
use super::reason;
use super::violations::Violations;
use crate::pb;
use crate::pb::consistency::Requirement;

/// How fresh a read must be, as a position of the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Every write acknowledged before the read began, on any replica (`fully_consistent`).
    Latest,
    /// At least this log position (`at_least_as_fresh`).
    AtLeast(u64),
    /// Whatever this replica has (`minimize_latency`).
    Any,
}

/// Why a `consistency` was refused: a cursor (INVALID_CURSOR, like every cursor field) or
/// another mistake.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsistencyError {
    Invalid(Vec<pb::PolicyViolation>),
    Cursor(Vec<pb::PolicyViolation>),
}

/// The freshness `consistency` asks for (unset: [`Freshness::Latest`]); cursors must be this
/// store's.
pub fn parse(
    consistency: Option<&pb::Consistency>,
    store_id: &str,
) -> Result<Freshness, ConsistencyError> {
    let must_be_true = |field: &str| {
        let mut violations = Violations::default();
        violations.error(
            &Path::request_field("consistency").field(field),
            reason::INVALID_CONSISTENCY,
            "must be true when set: leave `consistency` unset, or set one of its fields to true \
             or a cursor",
        );
        ConsistencyError::Invalid(violations.finish())
    };
    match consistency.and_then(|consistency| consistency.requirement.as_ref()) {
        None | Some(Requirement::FullyConsistent(true)) => Ok(Freshness::Latest),
        Some(Requirement::MinimizeLatency(true)) => Ok(Freshness::Any),
        Some(Requirement::FullyConsistent(false)) => Err(must_be_true("fully_consistent")),
        Some(Requirement::MinimizeLatency(false)) => Err(must_be_true("minimize_latency")),
        Some(Requirement::AtLeastAsFresh(cursor)) => {
            parse_cursor(cursor, store_id, "consistency.at_least_as_fresh")
                .map(Freshness::AtLeast)
                .map_err(ConsistencyError::Cursor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tokens::Cursor;

    fn of(requirement: Requirement) -> pb::Consistency {
        pb::Consistency {
            requirement: Some(requirement),
        }
    }

    #[test]
    fn each_mode_parses_and_unset_means_fully_consistent() {
        let cursor = Cursor {
            store_id: "s1".into(),
            seq: 42,
        }
        .encode();
        assert_eq!(parse(None, "s1"), Ok(Freshness::Latest));
        assert_eq!(
            parse(Some(&pb::Consistency::default()), "s1"),
            Ok(Freshness::Latest)
        );
        let cases = [
            (Requirement::FullyConsistent(true), Freshness::Latest),
            (Requirement::MinimizeLatency(true), Freshness::Any),
            (Requirement::AtLeastAsFresh(cursor), Freshness::AtLeast(42)),
        ];
        for (requirement, freshness) in cases {
            assert_eq!(parse(Some(&of(requirement)), "s1"), Ok(freshness));
        }
    }

    #[test]
    fn false_flags_and_bad_cursors_are_refused_with_their_field() {
        let refused = |requirement: Requirement| match parse(Some(&of(requirement)), "s1") {
            Err(ConsistencyError::Invalid(v)) => {
                ("invalid", v[0].field.clone(), v[0].reason.clone())
            }
            Err(ConsistencyError::Cursor(v)) => ("cursor", v[0].field.clone(), v[0].reason.clone()),
            Ok(freshness) => panic!("accepted as {freshness:?}"),
        };
        assert_eq!(
            refused(Requirement::MinimizeLatency(false)),
            (
                "invalid",
                "consistency.minimize_latency".into(),
                "INVALID_CONSISTENCY".into()
            )
        );
        assert_eq!(
            refused(Requirement::FullyConsistent(false)),
            (
                "invalid",
                "consistency.fully_consistent".into(),
                "INVALID_CONSISTENCY".into()
            )
        );
        let other_store = Cursor {
            store_id: "s2".into(),
            seq: 1,
        }
        .encode();
        for cursor in [String::new(), "garbage".into(), other_store] {
            assert_eq!(
                refused(Requirement::AtLeastAsFresh(cursor)),
                (
                    "cursor",
                    "consistency.at_least_as_fresh".into(),
                    "INVALID_CURSOR".into()
                )
            );
        }
    }
}
