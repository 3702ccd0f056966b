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
