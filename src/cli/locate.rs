//! Field path → line and column of a policy file.
//!
//! The rules name the offending field by its path in the request, with proto field names, list
//! indices and map keys (`policy.provision_policy.multi_step.provision_steps[2].webhook.webhook_id`,
//! `policy.provision_policy.connector.account.config["home dir"]`, see `src/policy/path.rs`).
//! The path is walked over the file's JSON syntax tree (jsonc-parser, run strictly), matching a
//! key by its proto name or its lowerCamel JSON name:
//!
//! - resolved: the span of the value (of the key with [`locate_key`]);
//! - a missing field (REQUIRED points at what is not there): the key of the nearest ancestor
//!   that is present, or the top-level object;
//! - anything else (an index past the list, a missing map key, a malformed path, a file that
//!   does not parse): line 1, column 1. A violation is never dropped for want of a place.
//!
//! Lines and columns are 1-based; columns count Unicode scalar values (chars), not bytes; the
//! end is exclusive (the column just past the span). [`utf16_column`] gives the UTF-16 column
//! SARIF wants.

use crate::policy::path::{self, Segment};
use jsonc_parser::ast::{ObjectPropName, Value};
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions};

/// A span in a file: 1-based, columns in chars, the end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    pub end_line: usize,
    pub end_column: usize,
}

impl Location {
    /// Line 1, column 1: where a violation goes whose path does not resolve.
    pub const START: Location = Location {
        line: 1,
        column: 1,
        end_line: 1,
        end_column: 1,
    };

    /// The span of the bytes `start..end` of `text`.
    pub fn of_bytes(text: &str, start: usize, end: usize) -> Location {
        let (line, column) = line_column(text, start);
        let (end_line, end_column) = line_column(text, end.max(start));
        Location {
            line,
            column,
            end_line,
            end_column,
        }
    }

    /// The empty span at the byte `offset` of `text`.
    pub fn at_byte(text: &str, offset: usize) -> Location {
        Self::of_bytes(text, offset, offset)
    }
}

/// Where the value at `field_path` is in `text`. Never fails (see the module docs).
pub fn locate(text: &str, field_path: &str) -> Location {
    span(text, field_path, false)
}

/// Like [`locate`], but the span of the key of the field rather than of its value (for
/// SUPERSEDED_FIELD: the key is what to change). A list element, having no key, gives its value.
pub fn locate_key(text: &str, field_path: &str) -> Location {
    span(text, field_path, true)
}

fn span(text: &str, field_path: &str, key: bool) -> Location {
    // A malformed path (none the rules write) points at the start, like an unresolved one.
    let Ok(segments) = path::parse(field_path) else {
        return Location::START;
    };
    let Ok(parsed) = jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &strict()) else {
        return Location::START;
    };
    let Some(root) = parsed.value else {
        return Location::START;
    };
    match walk(&root, &segments) {
        Some(found) => {
            let range = match (key, found.key) {
                (true, Some(key)) => key,
                _ => found.value,
            };
            Location::of_bytes(text, range.0, range.1)
        }
        None => Location::START,
    }
}

/// The options under which jsonc-parser accepts plain JSON only.
pub(crate) fn strict() -> ParseOptions {
    ParseOptions {
        allow_comments: false,
        allow_loose_object_property_names: false,
        allow_trailing_commas: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

/// The lowerCamel JSON name protoc gives a proto field name.
pub(crate) fn json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

struct Found {
    /// Byte range of the key (of the nearest keyed ancestor, for a list element).
    key: Option<(usize, usize)>,
    value: (usize, usize),
}

fn range_of(ranged: &impl Ranged) -> (usize, usize) {
    let range = ranged.range();
    (range.start, range.end)
}

fn walk(root: &Value<'_>, segments: &[Segment]) -> Option<Found> {
    let mut here = root;
    let mut key: Option<(usize, usize)> = None;
    for segment in segments {
        let next = match (here, segment) {
            (Value::Object(object), Segment::Field(name) | Segment::Key(name)) => {
                let camel = json_name(name);
                let name_of = |prop: &jsonc_parser::ast::ObjectProp<'_>| match &prop.name {
                    ObjectPropName::String(literal) => literal.value.to_string(),
                    ObjectPropName::Word(word) => word.value.to_owned(),
                };
                // The exact key first (a proto name, or a Struct key), then the JSON name.
                object
                    .properties
                    .iter()
                    .rev()
                    .find(|prop| name_of(prop) == *name)
                    .or_else(|| {
                        matches!(segment, Segment::Field(_))
                            .then(|| {
                                object
                                    .properties
                                    .iter()
                                    .rev()
                                    .find(|prop| name_of(prop) == camel)
                            })
                            .flatten()
                    })
                    .map(|prop| (Some(range_of(&prop.name)), &prop.value))
            }
            (Value::Array(array), Segment::Index(index)) => {
                array.elements.get(*index).map(|element| (None, element))
            }
            _ => None,
        };
        match next {
            Some((new_key, value)) => {
                // A list element has no key: its own span stands for one.
                key = new_key.or(Some(range_of(value)));
                here = value;
            }
            None if matches!(segment, Segment::Field(_)) && matches!(here, Value::Object(_)) => {
                // A field that is not there (REQUIRED, or a default message on the way to it):
                // the nearest present ancestor, by its key when it has one.
                let value = range_of(here);
                let at = key.unwrap_or((value.0, value.0 + 1));
                return Some(Found {
                    key: Some(at),
                    value: at,
                });
            }
            None => return None,
        }
    }
    Some(Found {
        key,
        value: range_of(here),
    })
}

/// The 1-based line and char column of the byte `offset` of `text` (clamped to the text and to
/// a char boundary).
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = text[line_start..offset].chars().count() + 1;
    (line, column)
}

/// The byte offset of 1-based `line` and char `column` of `text` (clamped to the line's end).
pub fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(at) => start += at + 1,
            None => return text.len(),
        }
    }
    let line_text = &text[start..];
    let line_text = &line_text[..line_text.find('\n').unwrap_or(line_text.len())];
    start
        + line_text
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(line_text.len(), |(at, _)| at)
}

/// The 1-based UTF-16 column (as SARIF counts) of 1-based `line` and char `column` of `text`.
pub fn utf16_column(text: &str, line: usize, column: usize) -> usize {
    let offset = byte_offset(text, line, column);
    let line_start = text[..offset].rfind('\n').map_or(0, |at| at + 1);
    text[line_start..offset].encode_utf16().count() + 1
}

/// The text of 1-based `line` (without its line break); empty past the end.
pub fn line_text(text: &str, line: usize) -> &str {
    text.split('\n')
        .nth(line.saturating_sub(1))
        .map_or("", |line| line.strip_suffix('\r').unwrap_or(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{
  "policy": {
    "entitlement": {"appId": "é🙂", "entitlement_id": "x"},
    "provisionPolicy": {
      "multiStep": {"provisionSteps": [
        {"webhook": {}},
        {"connector": {"account": {"config": {"home dir": "/h", "email": 1}}}}
      ]}
    }
  }
}"#;

    fn at(needle: &str) -> (usize, usize) {
        line_column(TEXT, TEXT.find(needle).expect("needle in text"))
    }

    fn start(location: Location) -> (usize, usize) {
        (location.line, location.column)
    }

    #[test]
    fn camel_and_snake_keys_resolve() {
        assert_eq!(
            start(locate(TEXT, "policy.entitlement.app_id")),
            at(r#""é🙂""#)
        );
        assert_eq!(
            start(locate(TEXT, "policy.entitlement.entitlement_id")),
            at(r#""x""#)
        );
        assert_eq!(
            start(locate_key(TEXT, "policy.entitlement.entitlement_id")),
            at(r#""entitlement_id""#)
        );
    }

    #[test]
    fn map_keys_with_spaces_and_bare_keys_resolve() {
        let path = r#"policy.provision_policy.multi_step.provision_steps[1].connector.account.config["home dir"]"#;
        assert_eq!(start(locate(TEXT, path)), at(r#""/h""#));
        let path =
            "policy.provision_policy.multi_step.provision_steps[1].connector.account.config.email";
        assert_eq!(start(locate(TEXT, path)), at("1}}}}"));
    }

    #[test]
    fn a_missing_field_points_at_its_parent() {
        let path = "policy.provision_policy.multi_step.provision_steps[0].webhook.webhook_id";
        assert_eq!(start(locate(TEXT, path)), at(r#""webhook""#));
        assert_eq!(start(locate(TEXT, "etag")), (1, 1));
    }

    #[test]
    fn unresolvable_paths_point_at_line_one() {
        for path in [
            "policy.provision_policy.multi_step.provision_steps[7].webhook",
            "policy.entitlement.app_id[0]",
            "policy..x",
            "",
        ] {
            assert_eq!(locate(TEXT, path), Location::START, "{path}");
        }
        assert_eq!(locate("{ not json", "policy"), Location::START);
    }

    #[test]
    fn columns_count_chars_and_utf16_units() {
        let location = locate(TEXT, "policy.entitlement.entitlement_id");
        let line = line_text(TEXT, location.line);
        let byte_column = line.find(r#""x""#).unwrap() + 1;
        // "é🙂" is 2 chars, 6 bytes and 3 UTF-16 units.
        assert_eq!(location.column, byte_column - 4);
        assert_eq!(
            utf16_column(TEXT, location.line, location.column),
            location.column + 1
        );
        assert_eq!(location.end_column, location.column + 3);
    }
}
