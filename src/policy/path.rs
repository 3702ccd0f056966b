//! Field paths of violations: proto field names joined by `.`, list indices in brackets, map
//! keys as a bare name when they are an identifier and as a quoted string otherwise:
//! `policy.provision_policy.multi_step.provision_steps[2].webhook.webhook_id`,
//! `policy.provision_policy.connector.account.config["home dir"]`.

use std::fmt;

/// The path of one field. Each child is a new value: the walk keeps paths of siblings apart
/// without undo bookkeeping, and paths are short.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path(String);

impl Path {
    /// The path of the resource itself: `policy`, the field that holds it in both
    /// SetProvisionPolicyRequest and ValidateProvisionPolicyRequest.
    pub fn resource() -> Self {
        Self::request_field("policy")
    }

    /// The path of the top-level field `name` of a request.
    pub fn request_field(name: &str) -> Self {
        Path(name.to_owned())
    }

    /// The path of the field `name` of the message at this path.
    ///
    /// One allocation of the final size: rules build a path for every field they look at, valid
    /// or not, and cloning then growing the parent's string cost a second allocation and a copy.
    pub fn field(&self, name: &str) -> Self {
        let mut path = String::with_capacity(self.0.len() + 1 + name.len());
        path.push_str(&self.0);
        path.push('.');
        path.push_str(name);
        Path(path)
    }

    /// The path of element `index` of the list at this path.
    pub fn index(&self, index: usize) -> Self {
        use std::fmt::Write as _;
        // `[`, at most 20 digits, `]`.
        let mut path = String::with_capacity(self.0.len() + 22);
        path.push_str(&self.0);
        let _ = write!(path, "[{index}]");
        Path(path)
    }

    /// The path of the entry `key` of the map at this path.
    pub fn key(&self, key: &str) -> Self {
        if is_identifier(key) {
            self.field(key)
        } else {
            Path(format!("{}[{}]", self.0, quote(key)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Path> for String {
    fn from(path: Path) -> String {
        path.0
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A JSON string literal: the escaping every client of the API can read back.
pub(super) fn quote(key: &str) -> String {
    let mut quoted = String::with_capacity(key.len() + 2);
    quoted.push('"');
    for c in key.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// One step of a field path, as [`parse`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A field (proto name), or a map key that is an identifier.
    Field(String),
    Index(usize),
    /// A quoted map key.
    Key(String),
}

/// Reads a path as [`Path`] writes it back into its segments, or says why it is not one: the
/// golden checks resolve violations' paths with it, and provisionctl points them at lines.
pub fn parse(path: &str) -> Result<Vec<Segment>, String> {
    let bytes = path.as_bytes();
    let mut segments = Vec::new();
    let mut at = 0;
    let identifier = |from: usize| -> Result<(String, usize), String> {
        let end = path[from..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(path.len(), |offset| from + offset);
        let name = &path[from..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(format!("expected a name at byte {from}"));
        }
        Ok((name.to_owned(), end))
    };
    let (first, end) = identifier(0)?;
    segments.push(Segment::Field(first));
    at = at.max(end);
    while at < bytes.len() {
        match bytes[at] {
            b'.' => {
                let (name, end) = identifier(at + 1)?;
                segments.push(Segment::Field(name));
                at = end;
            }
            b'[' if bytes.get(at + 1) == Some(&b'"') => {
                let (key, end) = quoted(path, at + 1)?;
                if bytes.get(end) != Some(&b']') {
                    return Err(format!("expected ] at byte {end}"));
                }
                segments.push(Segment::Key(key));
                at = end + 1;
            }
            b'[' => {
                let close = path[at..]
                    .find(']')
                    .map(|offset| at + offset)
                    .ok_or("unclosed [")?;
                let digits = &path[at + 1..close];
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("expected an index at byte {}", at + 1));
                }
                if digits.len() > 1 && digits.starts_with('0') {
                    return Err(format!("index {digits} has a leading zero"));
                }
                let index = digits
                    .parse()
                    .map_err(|_| format!("index {digits} too big"))?;
                segments.push(Segment::Index(index));
                at = close + 1;
            }
            other => return Err(format!("unexpected {:?} at byte {at}", other as char)),
        }
    }
    Ok(segments)
}

/// The JSON string literal starting at byte `from` (a `"`), and the byte after it.
fn quoted(path: &str, from: usize) -> Result<(String, usize), String> {
    let bytes = path.as_bytes();
    let mut at = from + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => {
                let key: String = serde_json::from_str(&path[from..=at])
                    .map_err(|error| format!("bad quoted key: {error}"))?;
                return Ok((key, at + 1));
            }
            _ => at += 1,
        }
    }
    Err("unclosed quoted key".to_owned())
}
