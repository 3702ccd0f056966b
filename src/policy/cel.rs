//! CEL values: ExpressionProvisioner expressions and account `config` values. They are parsed,
//! never evaluated: the variables they read exist only when a grant is provisioned.

use std::panic::{AssertUnwindSafe, catch_unwind};

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
pub(super) fn parse_all(sources: &[&str]) -> Vec<Option<String>> {
    if sources.is_empty() {
        return Vec::new();
    }
    stacker::maybe_grow(CEL_STACK_BYTES, CEL_STACK_BYTES, || {
        sources
            .iter()
            .map(|source| {
                catch_unwind(AssertUnwindSafe(|| parse_error(source)))
                    .unwrap_or_else(|_| Some("the CEL parser failed on this expression".to_owned()))
            })
            .collect()
    })
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
