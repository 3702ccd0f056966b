//! CEL values: ExpressionProvisioner expressions and account `config` values. They are parsed,
//! never evaluated: the variables they read exist only when a grant is provisioned.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use prost_types::value::Kind;

use super::limits::{CEL_STACK_BYTES, MAX_CEL_BYTES, MAX_CEL_NESTING, MAX_PARSER_MESSAGE_CHARS};
use super::path::Path;
use super::reason;
use super::violations::{Violations, shorten};

/// Checks one CEL expression; the parse itself is queued (see [`parse_all`]).
///
/// An empty (or blank) string is INVALID_CEL, not REQUIRED: the value is there and is not an
/// expression, and a blank one has to be INVALID_CEL anyway since the parser refuses it.
pub(super) fn check_expression<'a>(violations: &mut Violations<'a>, path: &Path, source: &'a str) {
    if source.trim().is_empty() {
        violations.error(
            path,
            reason::INVALID_CEL,
            "must be a CEL expression, got an empty string",
        );
    } else if source.len() > MAX_CEL_BYTES {
        violations.error(
            path,
            reason::TOO_LONG,
            format!(
                "must be at most {MAX_CEL_BYTES} bytes, got {}",
                source.len()
            ),
        );
    } else {
        violations.parse_cel_later(path, source);
    }
}

/// Checks that every value of an account `config` is a string holding a CEL expression. The
/// map is a BTreeMap: keys come sorted, so the order of violations is stable.
pub(super) fn check_config<'a>(
    violations: &mut Violations<'a>,
    path: &Path,
    config: &'a prost_types::Struct,
) {
    for (key, value) in &config.fields {
        let path = path.key(key);
        match &value.kind {
            Some(Kind::StringValue(source)) => check_expression(violations, &path, source),
            other => violations.error(
                &path,
                reason::INVALID_CONFIG_VALUE,
                format!(
                    "must be a string holding a CEL expression, got {}",
                    kind_name(other.as_ref())
                ),
            ),
        }
    }
}

fn kind_name(kind: Option<&Kind>) -> &'static str {
    match kind {
        None => "no value",
        Some(Kind::NullValue(_)) => "null",
        Some(Kind::NumberValue(_)) => "a number",
        Some(Kind::StringValue(_)) => "a string",
        Some(Kind::BoolValue(_)) => "a boolean",
        Some(Kind::StructValue(_)) => "an object",
        Some(Kind::ListValue(_)) => "a list",
    }
}

/// Parses every source and returns, for each, what is wrong with it (None: it parses).
///
/// The parser recurses far deeper than a tokio worker's 2 MiB stack allows (see
/// [`CEL_STACK_BYTES`]), so the parses run on a stack of that size, switched to on this thread
/// (a mapping, not a thread start) and only when there is something to parse. A panic of the
/// parser refuses that one expression instead of taking the caller down.
///
/// A verdict depends on the source alone, so recent ones are kept (see [`Verdicts`]) and a
/// source seen before is not parsed again.
pub(super) fn parse_all(sources: &[&str]) -> Vec<Option<String>> {
    if sources.is_empty() {
        return Vec::new();
    }
    let mut verdicts: Vec<Option<Option<String>>> = {
        let known = Verdicts::lock();
        sources.iter().map(|source| known.get(source)).collect()
    };
    let unknown: Vec<usize> = (0..sources.len())
        .filter(|&i| verdicts[i].is_none())
        .collect();
    if !unknown.is_empty() {
        let parsed: Vec<Parsed> = stacker::maybe_grow(CEL_STACK_BYTES, CEL_STACK_BYTES, || {
            unknown
                .iter()
                .map(|&i| {
                    catch_unwind(AssertUnwindSafe(|| parse_error(sources[i])))
                        .map_or(Parsed::Panicked, Parsed::Verdict)
                })
                .collect()
        });
        let mut known = Verdicts::lock();
        for (&i, parsed) in unknown.iter().zip(parsed) {
            verdicts[i] = Some(match parsed {
                Parsed::Verdict(verdict) => {
                    known.insert(sources[i], &verdict);
                    verdict
                }
                // Not kept: a parser panic is a bug to see again, not a verdict.
                Parsed::Panicked => Some("the CEL parser failed on this expression".to_owned()),
            });
        }
    }
    verdicts
        .into_iter()
        .map(|verdict| verdict.expect("every source has a verdict"))
        .collect()
}

enum Parsed {
    Verdict(Option<String>),
    Panicked,
}

/// The verdicts of recent parses, by source. A parse costs 30-100 µs of CPU, most of it in the
/// ANTLR runtime's allocations, plus mapping a fresh stack (measured: `cargo bench --bench
/// validation`, BENCHMARKS.md), while policies repeat a few expressions (`subject.manager`,
/// `subject.email`) across entitlements and every Set re-validates a whole policy. Bounded by
/// bytes: when full, it starts over.
struct Verdicts {
    by_source: HashMap<Box<str>, Option<String>>,
    bytes: usize,
}

/// What the verdicts may hold, sources and messages included.
const VERDICTS_BYTES: usize = 4 << 20;

/// What one kept verdict costs beyond its strings: the map slot and the two allocations.
const VERDICT_OVERHEAD_BYTES: usize = 96;

static VERDICTS: LazyLock<Mutex<Verdicts>> = LazyLock::new(|| {
    Mutex::new(Verdicts {
        by_source: HashMap::new(),
        bytes: 0,
    })
});

impl Verdicts {
    fn lock() -> MutexGuard<'static, Verdicts> {
        VERDICTS.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, source: &str) -> Option<Option<String>> {
        self.by_source.get(source).cloned()
    }

    fn insert(&mut self, source: &str, verdict: &Option<String>) {
        if self.by_source.contains_key(source) {
            return;
        }
        let cost = source.len() + verdict.as_ref().map_or(0, String::len) + VERDICT_OVERHEAD_BYTES;
        if self.bytes + cost > VERDICTS_BYTES {
            self.by_source.clear();
            self.bytes = 0;
        }
        self.by_source.insert(source.into(), verdict.clone());
        self.bytes += cost;
    }
}

/// The first parse error of `source`, with its position, if it does not parse.
fn parse_error(source: &str) -> Option<String> {
    let errors = cel::parser::Parser::new()
        .max_recursion_depth(MAX_CEL_NESTING)
        .parse(source)
        .err()?
        .errors;
    let first = errors.first()?;
    // The parser reports its recursion limit as a debug dump, with a limit one higher than
    // asked, followed by errors that only echo the abandoned parse.
    let nests_too_deep = first.msg.contains("Recursion limit");
    let mut text = if nests_too_deep {
        format!("nests deeper than {MAX_CEL_NESTING} levels")
    } else {
        shorten(&first.msg, MAX_PARSER_MESSAGE_CHARS)
    };
    if first.pos.0 > 0 {
        text.push_str(&format!(" at line {}, column {}", first.pos.0, first.pos.1));
    }
    if errors.len() > 1 && !nests_too_deep {
        text.push_str(&format!(" (and {} more)", errors.len() - 1));
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_verdict_is_the_parsed_one() {
        let sources = ["subject.email", "subject.", "subject.email", "subject."];
        let first = parse_all(&sources);
        assert_eq!(first[0], None);
        assert!(first[1].is_some());
        assert_eq!(first[0], first[2]);
        assert_eq!(first[1], first[3]);
        assert_eq!(parse_all(&sources), first);
        assert_eq!(Verdicts::lock().get("subject."), Some(first[1].clone()));
    }

    #[test]
    fn verdicts_start_over_when_full() {
        let mut verdicts = Verdicts {
            by_source: HashMap::new(),
            bytes: 0,
        };
        let long = "x".repeat(VERDICTS_BYTES / 3);
        for i in 0..4 {
            verdicts.insert(&format!("{long}{i}"), &None);
            assert!(verdicts.bytes <= VERDICTS_BYTES);
        }
        assert_eq!(verdicts.by_source.len(), 2);
        assert_eq!(verdicts.get(&format!("{long}3")), Some(None));
    }
}
