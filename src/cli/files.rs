//! FILES… into policy files, and a policy file into its request.
//!
//! One policy file is one `SetProvisionPolicyRequest` in ProtoJSON (the format of
//! `examples/policies/`). Arguments are files, directories (their `*.json`, sorted; `-R`
//! recurses; symbolic links met inside a directory are skipped) or `-` for standard input.
//!
//! Parsing is strict ProtoJSON: prost-reflect over the service's own descriptors, unknown keys
//! refused, two arms of a oneof refused, and serde_json's JSON (no trailing commas, no
//! comments). Every error carries the line and column it was found at.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jsonc_parser::ast::{ObjectPropName, Value};
use jsonc_parser::common::Ranged;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};

use super::Files;
use super::locate::{self, Location};
use super::output::{Finding, Severity};
use crate::pb;

/// A policy file as read: its path as given or found (`-` for standard input) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub path: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not UTF-8")]
    NotUtf8 { path: String },
    #[error("no policy file (*.json) in {0}; --allow-empty makes that fine")]
    Empty(String),
}

/// The policy files FILES… name, in the order given (a directory's files sorted by name).
pub fn expand(files: &Files) -> Result<Vec<PolicyFile>, FilesError> {
    let mut found = Vec::new();
    let mut stdin_read = false;
    for path in &files.paths {
        if path.as_os_str() == "-" {
            if stdin_read {
                continue;
            }
            stdin_read = true;
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|source| FilesError::Read {
                    path: "-".to_owned(),
                    source,
                })?;
            found.push(into_file("-".to_owned(), bytes)?);
            continue;
        }
        let metadata = std::fs::metadata(path).map_err(|source| FilesError::Read {
            path: display(path),
            source,
        })?;
        if metadata.is_dir() {
            let mut paths = Vec::new();
            directory(path, files.recursive, &mut paths)?;
            paths.sort();
            for path in paths {
                found.push(read(&path)?);
            }
        } else {
            found.push(read(path)?);
        }
    }
    if found.is_empty() && !files.allow_empty {
        let named: Vec<String> = files.paths.iter().map(|path| display(path)).collect();
        return Err(FilesError::Empty(named.join(", ")));
    }
    Ok(found)
}

fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn read(path: &Path) -> Result<PolicyFile, FilesError> {
    let bytes = std::fs::read(path).map_err(|source| FilesError::Read {
        path: display(path),
        source,
    })?;
    into_file(display(path), bytes)
}

fn into_file(path: String, bytes: Vec<u8>) -> Result<PolicyFile, FilesError> {
    let text = String::from_utf8(bytes).map_err(|_| FilesError::NotUtf8 { path: path.clone() })?;
    // A byte order mark is not JSON; editors on some systems write one.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    };
    Ok(PolicyFile { path, text })
}

/// The `*.json` files of `dir` (and of its subdirectories with `recursive`), no symlinks.
fn directory(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), FilesError> {
    let error = |source| FilesError::Read {
        path: display(dir),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(error)? {
        let entry = entry.map_err(error)?;
        let kind = entry.file_type().map_err(error)?;
        let path = entry.path();
        if kind.is_symlink() {
            continue;
        }
        if kind.is_dir() {
            if recursive {
                directory(&path, recursive, out)?;
            }
        } else if kind.is_file() && path.extension().is_some_and(|ext| ext == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// A policy file's request.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub request: pb::SetProvisionPolicyRequest,
}

/// The descriptor of `provision.v1.SetProvisionPolicyRequest`.
fn request_descriptor() -> &'static MessageDescriptor {
    static DESCRIPTOR: OnceLock<MessageDescriptor> = OnceLock::new();
    DESCRIPTOR.get_or_init(|| {
        DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
            .expect("pb::FILE_DESCRIPTOR_SET decodes")
            .get_message_by_name("provision.v1.SetProvisionPolicyRequest")
            .expect("provision.v1.SetProvisionPolicyRequest is described")
    })
}

/// Strict ProtoJSON of `file` into its request; else the errors, located.
pub fn parse(file: &PolicyFile) -> Result<Parsed, Vec<Finding>> {
    let text = &file.text;
    let mut json = serde_json::Deserializer::from_str(text);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let dynamic =
        DynamicMessage::deserialize_with_options(request_descriptor().clone(), &mut json, &options)
            .and_then(|message| json.end().map(|()| message));
    let dynamic = match dynamic {
        Ok(dynamic) => dynamic,
        Err(error) => return Err(vec![parse_error(file, &error)]),
    };
    match dynamic.transcode_to::<pb::SetProvisionPolicyRequest>() {
        Ok(request) => Ok(Parsed { request }),
        Err(error) => Err(vec![Finding {
            path: file.path.clone(),
            location: Location::START,
            field: String::new(),
            reason: "INVALID_PROTOJSON".to_owned(),
            severity: Severity::Error,
            message: format!("not a SetProvisionPolicyRequest: {error}"),
        }]),
    }
}

/// Keys given twice in one object (serde_json and prost-reflect keep the last silently, but a
/// second arm of a oneof is refused): one warning each, at the later key. Only for text that
/// parses as JSON.
pub fn duplicate_keys(file: &PolicyFile) -> Vec<Finding> {
    let Some(root) = ast(&file.text) else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    let mut pending = vec![&root];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(object) => {
                let mut seen = std::collections::HashSet::new();
                for prop in &object.properties {
                    let name = prop_name(&prop.name);
                    if !seen.insert(name.clone()) {
                        let range = prop.name.range();
                        findings.push(Finding {
                            path: file.path.clone(),
                            location: Location::of_bytes(&file.text, range.start, range.end),
                            field: name.clone(),
                            reason: "DUPLICATE_KEY".to_owned(),
                            severity: Severity::Warning,
                            message: format!(
                                "the key {name:?} is given twice in one object; the last one counts"
                            ),
                        });
                    }
                    pending.push(&prop.value);
                }
            }
            Value::Array(array) => pending.extend(array.elements.iter()),
            _ => {}
        }
    }
    findings.sort_by_key(|finding| finding.location);
    findings
}

fn ast(text: &str) -> Option<Value<'_>> {
    jsonc_parser::parse_to_ast(text, &Default::default(), &locate::strict())
        .ok()?
        .value
}

fn prop_name(name: &ObjectPropName<'_>) -> String {
    match name {
        ObjectPropName::String(literal) => literal.value.to_string(),
        ObjectPropName::Word(word) => word.value.to_owned(),
    }
}

/// A serde_json or prost-reflect error as a finding: at serde_json's line and column, moved to
/// the offending key when the error names one (an unknown key, a second oneof arm).
fn parse_error(file: &PolicyFile, error: &serde_json::Error) -> Finding {
    let text = &file.text;
    let message = error.to_string();
    // serde_json appends " at line L column C"; the finding has its own place.
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    let (line, column) = (error.line().max(1), error.column());
    // serde_json's column is the 1-based byte column of the char it stopped at (peeked).
    let offset = line_byte(text, line) + column.saturating_sub(1);
    let offset = offset.min(text.len());
    let (reason, location) = if let Some(name) = quoted_after(&message, "unrecognized field name '")
    {
        let location = key_before(text, offset, |prop| prop_name(&prop.name) == name)
            .unwrap_or_else(|| at_error(text, offset));
        ("UNKNOWN_FIELD", location)
    } else if message.starts_with("multiple fields provided for oneof") {
        let location = value_ending_before(text, offset).unwrap_or_else(|| at_error(text, offset));
        ("CONFLICTING_FIELDS", location)
    } else if error.is_syntax() || error.is_eof() {
        ("INVALID_JSON", at_error(text, offset))
    } else {
        ("INVALID_PROTOJSON", at_error(text, offset))
    };
    Finding {
        path: file.path.clone(),
        location,
        field: String::new(),
        reason: reason.to_owned(),
        severity: Severity::Error,
        message,
    }
}

/// The byte where 1-based `line` starts.
fn line_byte(text: &str, line: usize) -> usize {
    locate::byte_offset(text, line, 1)
}

/// The place of the char serde_json stopped at.
fn at_error(text: &str, offset: usize) -> Location {
    let mut start = offset;
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let end = text[start..]
        .chars()
        .next()
        .map_or(start, |c| start + c.len_utf8());
    Location::of_bytes(text, start, end)
}

fn quoted_after<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    let rest = &message[message.find(prefix)? + prefix.len()..];
    Some(&rest[..rest.rfind('\'')?])
}

/// The key, among those starting before `offset`, that starts last and matches: the key
/// serde_json just read. Needs only the text up to the key to be JSON, so it parses a
/// permissive tree of the text (errors after the key do not matter).
fn key_before(
    text: &str,
    offset: usize,
    matches: impl Fn(&jsonc_parser::ast::ObjectProp<'_>) -> bool,
) -> Option<Location> {
    let root = permissive_ast(text)?;
    let mut best: Option<(usize, usize)> = None;
    visit_props(&root, &mut |prop| {
        let range = prop.name.range();
        if range.start < offset
            && matches(prop)
            && best.is_none_or(|(start, _)| range.start > start)
        {
            best = Some((range.start, range.end));
        }
    });
    best.map(|(start, end)| Location::of_bytes(text, start, end))
}

/// The key of the property whose value ends last before `offset` (outermost on a tie): the
/// second oneof arm, whose value prost-reflect had read when it refused it.
fn value_ending_before(text: &str, offset: usize) -> Option<Location> {
    let root = permissive_ast(text)?;
    let mut best: Option<(usize, usize, usize)> = None;
    visit_props(&root, &mut |prop| {
        let end = prop.value.range().end;
        let name = prop.name.range();
        if end <= offset && best.is_none_or(|(best_end, _, _)| end > best_end) {
            best = Some((end, name.start, name.end));
        }
    });
    best.map(|(_, start, end)| Location::of_bytes(text, start, end))
}

fn permissive_ast(text: &str) -> Option<Value<'_>> {
    jsonc_parser::parse_to_ast(text, &Default::default(), &Default::default())
        .ok()?
        .value
}

fn visit_props<'a>(value: &Value<'a>, visit: &mut impl FnMut(&jsonc_parser::ast::ObjectProp<'a>)) {
    match value {
        Value::Object(object) => {
            for prop in &object.properties {
                visit(prop);
                visit_props(&prop.value, visit);
            }
        }
        Value::Array(array) => {
            for element in &array.elements {
                visit_props(element, visit);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> PolicyFile {
        PolicyFile {
            path: "p.json".to_owned(),
            text: text.to_owned(),
        }
    }

    fn error_of(text: &str) -> Finding {
        let mut findings = parse(&file(text)).expect_err("refused");
        assert_eq!(findings.len(), 1);
        findings.remove(0)
    }

    fn at(text: &str, needle: &str) -> (usize, usize) {
        locate::line_column(text, text.find(needle).expect("needle"))
    }

    #[test]
    fn examples_parse() {
        let text = std::fs::read_to_string(
            "examples/policies/12-github-contractors-delegated-implicit.json",
        )
        .unwrap();
        let parsed = parse(&file(&text)).expect("parses");
        assert!(parsed.request.policy.is_some());
    }

    #[test]
    fn unknown_keys_point_at_the_key() {
        let text =
            "{\n  \"policy\": {\n    \"entitlement\": {\"appId\": \"a\", \"bogus\": 1}\n  }\n}\n";
        let finding = error_of(text);
        assert_eq!(finding.reason, "UNKNOWN_FIELD");
        assert_eq!(
            (finding.location.line, finding.location.column),
            at(text, "\"bogus\"")
        );
    }

    #[test]
    fn two_oneof_arms_point_at_the_second() {
        let text = "{\"policy\": {\"provisionPolicy\": {\n  \"connector\": {},\n  \"webhook\": {\"webhookId\": \"w\"}\n}}}";
        let finding = error_of(text);
        assert_eq!(finding.reason, "CONFLICTING_FIELDS", "{finding:?}");
        assert_eq!(
            (finding.location.line, finding.location.column),
            at(text, "\"webhook\"")
        );
    }

    #[test]
    fn trailing_commas_are_syntax_errors() {
        let text = "{\n  \"policy\": {\n    \"entitlement\": {\"appId\": \"a\",}\n  }\n}\n";
        let finding = error_of(text);
        assert_eq!(finding.reason, "INVALID_JSON");
        assert_eq!(
            (finding.location.line, finding.location.column),
            at(text, "}\n  }")
        );
    }

    #[test]
    fn duplicate_keys_warn() {
        let text = "{\"policy\": {\"entitlement\": {\"appId\": \"a\", \"appId\": \"b\"}}}";
        let findings = duplicate_keys(&file(text));
        assert_eq!(findings.len(), 1);
        assert_eq!(
            findings[0].location.column,
            text.rfind("\"appId\"").unwrap() + 1
        );
    }
}
