//! The violations found so far, in the order they were found, and the wording shared by the
//! descriptions.

use super::cel;
use super::limits::{MAX_ECHO_CHARS, MAX_VIOLATIONS};
use super::path::{Path, quote};
use super::reason;
use crate::pb;

/// Every violation found so far. The rules only ever append, so the order of the walk (field
/// order) is the order of the answer. CEL parses are queued in that order too and run together
/// in [`Violations::finish`], on a thread of their own (see [`cel::parse_all`]).
#[derive(Debug, Default)]
pub(super) struct Violations<'a> {
    found: Vec<Found<'a>>,
    /// Violations past [`MAX_VIOLATIONS`], counted but not kept: a 1 MiB request of empty ids
    /// would otherwise make an answer of tens of megabytes, more than clients accept.
    dropped: usize,
    dropped_errors: bool,
}

#[derive(Debug)]
enum Found<'a> {
    Violation(pb::PolicyViolation),
    CelToParse { path: Path, source: &'a str },
}

impl<'a> Violations<'a> {
    pub(super) fn error(&mut self, path: &Path, reason: &str, description: impl Into<String>) {
        self.push(path, reason, description.into(), pb::Severity::Error);
    }

    /// An error about a structural limit: kept even past [`MAX_VIOLATIONS`], since it explains
    /// why the rest of the input went unchecked (at most one per policy node).
    pub(super) fn limit_error(
        &mut self,
        path: &Path,
        reason: &str,
        description: impl Into<String>,
    ) {
        self.found.push(Found::Violation(violation(
            path,
            reason,
            description.into(),
            pb::Severity::Error,
        )));
    }

    pub(super) fn warning(&mut self, path: &Path, reason: &str, description: impl Into<String>) {
        self.push(path, reason, description.into(), pb::Severity::Warning);
    }

    /// Queues the parse of the CEL expression `source`; an INVALID_CEL error takes this place
    /// in the order if it does not parse.
    pub(super) fn parse_cel_later(&mut self, path: &Path, source: &'a str) {
        if self.is_full() {
            // Unparsed, so it may be fine or not: count it as a possible error.
            self.drop_one(pb::Severity::Error);
            return;
        }
        self.found.push(Found::CelToParse {
            path: path.clone(),
            source,
        });
    }

    fn is_full(&self) -> bool {
        self.found.len() >= MAX_VIOLATIONS
    }

    fn drop_one(&mut self, severity: pb::Severity) {
        self.dropped += 1;
        self.dropped_errors |= severity == pb::Severity::Error;
    }

    fn push(&mut self, path: &Path, reason: &str, description: String, severity: pb::Severity) {
        if self.is_full() {
            self.drop_one(severity);
            return;
        }
        self.found.push(Found::Violation(violation(
            path,
            reason,
            description,
            severity,
        )));
    }

    /// Runs the queued parses and returns every violation in the order found.
    pub(super) fn finish(self) -> Vec<pb::PolicyViolation> {
        let sources: Vec<&str> = self
            .found
            .iter()
            .filter_map(|found| match found {
                Found::CelToParse { source, .. } => Some(*source),
                Found::Violation(_) => None,
            })
            .collect();
        let mut parse_errors = cel::parse_all(&sources).into_iter();
        let (dropped, dropped_errors) = (self.dropped, self.dropped_errors);
        let mut violations: Vec<pb::PolicyViolation> = self
            .found
            .into_iter()
            .filter_map(|found| match found {
                Found::Violation(violation) => Some(violation),
                Found::CelToParse { path, .. } => parse_errors.next().flatten().map(|error| {
                    violation(
                        &path,
                        reason::INVALID_CEL,
                        format!("must be a valid CEL expression: {error}"),
                        pb::Severity::Error,
                    )
                }),
            })
            .collect();
        if dropped > 0 {
            let severity = if dropped_errors {
                pb::Severity::Error
            } else {
                pb::Severity::Warning
            };
            violations.push(violation(
                &Path::resource(),
                reason::TOO_MANY_VIOLATIONS,
                format!(
                    "has {dropped} more violation(s) past the first {MAX_VIOLATIONS}, not listed; \
                     fix these and check again"
                ),
                severity,
            ));
        }
        violations
    }
}

fn violation(
    path: &Path,
    reason: &str,
    description: String,
    severity: pb::Severity,
) -> pb::PolicyViolation {
    pb::PolicyViolation {
        field: path.to_string(),
        reason: reason.to_owned(),
        description,
        severity: severity as i32,
    }
}

/// `value` quoted for a description, cut short when long: the caller sent the whole value and
/// needs only enough of it to find it.
pub(super) fn echo(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        None => quote(value),
        Some((cut, _)) => format!("{}… ({} bytes)", quote(&value[..cut]), value.len()),
    }
}

/// `text` cut to `max` characters, marked when cut.
pub(super) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}
