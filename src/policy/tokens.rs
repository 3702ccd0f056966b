//! The opaque strings this service hands out and takes back: change cursors and page tokens.
//! Each is the hex of a few fields joined by newlines (ids never hold one) behind a tag naming
//! its kind, so a token of one kind is never read as another. They carry no secret: opacity is
//! a contract (clients must not build them), not a protection.

use super::request::{hex, unhex};
use crate::pb;

const CURSOR: &str = "cursor/1";
const POLICY_PAGE: &str = "policies/1";
const REVISION_PAGE: &str = "revisions/1";
const DEPENDENTS_PAGE: &str = "dependents/1";
/// Longer input is garbage: every token this service issues is far shorter.
const MAX_TOKEN_CHARS: usize = 2048;

/// A position of one store's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub store_id: String,
    pub seq: u64,
}

impl Cursor {
    pub fn encode(&self) -> String {
        pack(&[CURSOR, &self.store_id, &self.seq.to_string()])
    }

    pub fn decode(text: &str) -> Option<Self> {
        with_fields(text, |fields| match fields {
            [CURSOR, store_id, seq] => Some(Self {
                store_id: (*store_id).to_owned(),
                seq: seq.parse().ok()?,
            }),
            _ => None,
        })
    }
}

/// Where the next page of a ListProvisionPolicies listing starts: the listing's log position
/// and filter, and the last key of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyPage {
    pub read_at: Cursor,
    pub app_id: String,
    pub after: pb::EntitlementRef,
}

impl PolicyPage {
    pub fn encode(&self) -> String {
        pack(&[
            POLICY_PAGE,
            &self.read_at.store_id,
            &self.read_at.seq.to_string(),
            &self.app_id,
            &self.after.app_id,
            &self.after.entitlement_id,
        ])
    }

    pub fn decode(text: &str) -> Option<Self> {
        with_fields(text, |fields| match fields {
            [
                POLICY_PAGE,
                store_id,
                seq,
                app_id,
                after_app,
                after_entitlement,
            ] => Some(Self {
                read_at: Cursor {
                    store_id: (*store_id).to_owned(),
                    seq: seq.parse().ok()?,
                },
                app_id: (*app_id).to_owned(),
                after: pb::EntitlementRef {
                    app_id: (*after_app).to_owned(),
                    entitlement_id: (*after_entitlement).to_owned(),
                },
            }),
            _ => None,
        })
    }
}

/// Where the next page of a revision history starts: the entitlement and the oldest revision
/// of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionPage {
    pub entitlement: pb::EntitlementRef,
    pub before: i64,
}

impl RevisionPage {
    pub fn encode(&self) -> String {
        pack(&[
            REVISION_PAGE,
            &self.entitlement.app_id,
            &self.entitlement.entitlement_id,
            &self.before.to_string(),
        ])
    }

    pub fn decode(text: &str) -> Option<Self> {
        with_fields(text, |fields| match fields {
            [REVISION_PAGE, app_id, entitlement_id, before] => Some(Self {
                entitlement: pb::EntitlementRef {
                    app_id: (*app_id).to_owned(),
                    entitlement_id: (*entitlement_id).to_owned(),
                },
                before: before.parse().ok().filter(|before| *before > 1)?,
            }),
            _ => None,
        })
    }
}

/// Where the next page of a ListDependents listing starts: the request's entitlement and
/// `transitive`, and the last dependent of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependentsPage {
    pub of: pb::EntitlementRef,
    pub transitive: bool,
    pub after: pb::EntitlementRef,
}

impl DependentsPage {
    pub fn encode(&self) -> String {
        pack(&[
            DEPENDENTS_PAGE,
            &self.of.app_id,
            &self.of.entitlement_id,
            if self.transitive { "1" } else { "0" },
            &self.after.app_id,
            &self.after.entitlement_id,
        ])
    }

    pub fn decode(text: &str) -> Option<Self> {
        let entitlement = |app_id: &str, entitlement_id: &str| pb::EntitlementRef {
            app_id: app_id.to_owned(),
            entitlement_id: entitlement_id.to_owned(),
        };
        with_fields(text, |fields| match fields {
            [DEPENDENTS_PAGE, app, id, transitive, after_app, after_id] => Some(Self {
                of: entitlement(app, id),
                transitive: match *transitive {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                },
                after: entitlement(after_app, after_id),
            }),
            _ => None,
        })
    }
}

fn pack(fields: &[&str]) -> String {
    hex(fields.join("\n").as_bytes())
}

#[cfg(test)]
mod hex_tests {
    use super::super::request::{hex, unhex};

    #[test]
    fn hex_is_lower_case_two_digits_a_byte_and_unhex_reverses_it() {
        let bytes: Vec<u8> = (0..=255).collect();
        let text = hex(&bytes);
        assert_eq!(text.len(), 512);
        assert!(text.starts_with("000102") && text.ends_with("fdfeff"));
        assert_eq!(unhex(&text), Some(bytes));
        assert_eq!(hex(b"cursor/1"), "637572736f722f31");
    }
}

/// Runs `read` on the fields of a token; `None` for anything that is not the hex of UTF-8 text.
fn with_fields<T>(text: &str, read: impl FnOnce(&[&str]) -> Option<T>) -> Option<T> {
    if text.len() > MAX_TOKEN_CHARS {
        return None;
    }
    let text = String::from_utf8(unhex(text)?).ok()?;
    let fields: Vec<&str> = text.split('\n').collect();
    read(&fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_never_pass_for_another_kind() {
        let cursor = Cursor {
            store_id: "0123abcd".into(),
            seq: 42,
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor.clone()));
        let page = PolicyPage {
            read_at: cursor.clone(),
            app_id: String::new(),
            after: pb::EntitlementRef {
                app_id: "a".into(),
                entitlement_id: "b".into(),
            },
        };
        assert_eq!(PolicyPage::decode(&page.encode()), Some(page.clone()));
        let revisions = RevisionPage {
            entitlement: page.after.clone(),
            before: 7,
        };
        assert_eq!(
            RevisionPage::decode(&revisions.encode()),
            Some(revisions.clone())
        );
        assert_eq!(Cursor::decode(&page.encode()), None);
        assert_eq!(PolicyPage::decode(&cursor.encode()), None);
        assert_eq!(RevisionPage::decode(&cursor.encode()), None);
        for garbage in ["", "z", "abc", "ffff", &"00".repeat(5000), "e282ac"] {
            assert_eq!(Cursor::decode(garbage), None, "{garbage}");
            assert_eq!(PolicyPage::decode(garbage), None, "{garbage}");
        }
        let negative = pack(&[CURSOR, "id", "-1"]);
        assert_eq!(Cursor::decode(&negative), None);
    }
}
