//! The tokens file: who may call, with which role. One principal per line:
//!
//! ```text
//! # comments and blank lines are ignored
//! ci-deployer   writer  sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! payments-svc  reader  cert:CN=payments,O=Acme
//! ```
//!
//! A token line holds the SHA-256 of the token, never the token: the file can be read by the
//! operators who deploy it without handing them the credentials. Tokens are random strings of at
//! least 128 bits, so a plain digest is enough (no slow KDF). A `cert:` line gives a role to the
//! principal of a verified client certificate (its subject, see `tls.rs`).

use std::collections::HashMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::principal::{Principal, Role};

/// Shorter tokens are refused by `hash-token`: they could be guessed.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest name of a principal: it goes into logs and audit records.
const MAX_NAME_BYTES: usize = 128;

/// The principals of one tokens file.
#[derive(Debug, Default, Clone)]
pub struct Tokens {
    digests: Vec<([u8; 32], Principal)>,
    certificates: HashMap<String, Principal>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {problem}")]
pub struct TokensError {
    pub line: usize,
    pub problem: String,
}

impl Tokens {
    pub fn parse(text: &str) -> Result<Self, TokensError> {
        let mut tokens = Tokens::default();
        let mut roles: HashMap<String, Role> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fail = |problem: String| TokensError { line, problem };
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let mut fields = content.splitn(3, char::is_whitespace);
            let (Some(name), Some(role), Some(credential)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(fail(
                    "expected `NAME ROLE sha256:HEX` or `NAME ROLE cert:SUBJECT`".to_owned(),
                ));
            };
            let credential = credential.trim();
            check_name(name).map_err(fail)?;
            let role = Role::parse(role).ok_or_else(|| {
                fail(format!(
                    "unknown role {role:?}: expected reader, writer or admin"
                ))
            })?;
            // One name, one role: a name on two lines (a token being rotated) keeps its role.
            if let Some(earlier) = roles.insert(name.to_owned(), role)
                && earlier != role
            {
                return Err(fail(format!(
                    "{name} has role {earlier} on an earlier line and {role} here"
                )));
            }
            let principal = Principal {
                name: name.to_owned(),
                role,
            };
            if let Some(hex) = credential.strip_prefix("sha256:") {
                let digest = parse_digest(hex).ok_or_else(|| {
                    fail(
                        "a sha256: digest is 64 hexadecimal digits (see `provisiond hash-token`)"
                            .to_owned(),
                    )
                })?;
                if tokens.digests.iter().any(|(known, _)| *known == digest) {
                    return Err(fail(
                        "the same token digest is on an earlier line".to_owned(),
                    ));
                }
                tokens.digests.push((digest, principal));
            } else if let Some(subject) = credential.strip_prefix("cert:") {
                if subject.is_empty() {
                    return Err(fail("cert: needs the certificate's subject".to_owned()));
                }
                if tokens
                    .certificates
                    .insert(subject.to_owned(), principal)
                    .is_some()
                {
                    return Err(fail(format!(
                        "certificate {subject:?} is on an earlier line"
                    )));
                }
            } else {
                return Err(fail(
                    "the credential must start with sha256: or cert: (tokens themselves never go in this file)"
                        .to_owned(),
                ));
            }
        }
        Ok(tokens)
    }

    /// The principal holding `token`. Every digest is compared, in constant time, whatever
    /// matches: the time taken says nothing about which token or how much of it was right.
    pub fn by_token(&self, token: &str) -> Option<&Principal> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (digest, principal) in &self.digests {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(principal);
            }
        }
        found
    }

    /// The principal a certificate subject was given.
    pub fn by_certificate(&self, subject: &str) -> Option<&Principal> {
        self.certificates.get(subject)
    }

    pub fn len(&self) -> usize {
        self.digests.len() + self.certificates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let plausible = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._@:-".contains(c));
    if !plausible || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the name {:?} must be at most {MAX_NAME_BYTES} letters, digits or . _ @ : -",
            name.chars().take(MAX_NAME_BYTES).collect::<String>()
        ));
    }
    Ok(())
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(digest)
}

/// The tokens-file line for `token`, as `provisiond hash-token` prints it.
pub fn line_for(name: &str, role: Role, token: &str) -> Result<String, String> {
    check_name(name)?;
    if token.len() < MIN_TOKEN_BYTES {
        return Err(format!(
            "the token is {} bytes; use at least {MIN_TOKEN_BYTES} random bytes (e.g. `openssl rand -hex 32`)",
            token.len()
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the token must not contain spaces or control characters".to_owned());
    }
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(token.as_bytes()) {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(format!("{name} {role} sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "a-long-random-token-0123456789";

    #[test]
    fn a_hashed_line_parses_back_to_its_principal() {
        let line = line_for("ci", Role::Writer, TOKEN).unwrap();
        assert!(!line.contains(TOKEN));
        let tokens = Tokens::parse(&format!("# ours\n\n{line}  # the deployer\n")).unwrap();
        let principal = tokens.by_token(TOKEN).unwrap();
        assert_eq!(
            (principal.name.as_str(), principal.role),
            ("ci", Role::Writer)
        );
        assert!(tokens.by_token("a-long-random-token-012345678").is_none());
        assert!(tokens.by_token("").is_none());
    }

    #[test]
    fn certificate_lines_keep_the_whole_subject() {
        let tokens = Tokens::parse("svc reader cert:CN=payments, O=Acme Corp\n").unwrap();
        let principal = tokens.by_certificate("CN=payments, O=Acme Corp").unwrap();
        assert_eq!(principal.role, Role::Reader);
        assert!(tokens.by_certificate("CN=payments").is_none());
    }

    #[test]
    fn malformed_files_name_the_line() {
        let good = line_for("ci", Role::Writer, TOKEN).unwrap();
        let cases = [
            ("ci writer", "expected"),
            ("ci owner sha256:00", "unknown role"),
            ("ci writer sha256:abc", "64 hexadecimal"),
            ("ci writer s3cr3t-token-in-clear", "sha256: or cert:"),
            ("c/i writer cert:CN=x", "name"),
            ("svc reader cert:", "subject"),
            (
                &format!("ci admin sha256:{}", "0".repeat(64)),
                "earlier line",
            ),
        ];
        for (line, problem) in cases {
            let error = Tokens::parse(&format!("{good}\n# note\n{line}\n")).unwrap_err();
            assert_eq!(error.line, 3, "{line}");
            assert!(error.problem.contains(problem), "{line}: {error}");
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
        }
        let twice = Tokens::parse(&format!("{good}\n{good}\n")).unwrap_err();
        assert_eq!(twice.line, 2);
    }

    #[test]
    fn hash_token_refuses_weak_or_odd_tokens() {
        assert!(line_for("ci", Role::Reader, "short").is_err());
        assert!(line_for("ci", Role::Reader, "with a space inside it!").is_err());
        assert!(line_for("bad name", Role::Reader, TOKEN).is_err());
    }
}
