//! The advisory locks that order replicas. Keys are (class, object) pairs: the class names the
//! purpose, the object the schema, so deployments in different schemas of one database do not
//! wait for each other.

/// Every mutation (policy write, binding create or delete) holds this for its transaction.
const WRITE_CLASS: i32 = 0x5052_5644; // "PRVD"
/// Migrations at open hold this for their transaction.
const MIGRATE_CLASS: i32 = 0x5052_564d; // "PRVM"

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LockKey {
    pub class: i32,
    pub object: i32,
}

impl LockKey {
    pub(super) fn write(schema: &str) -> Self {
        Self {
            class: WRITE_CLASS,
            object: schema_hash(schema),
        }
    }

    pub(super) fn migrate(schema: &str) -> Self {
        Self {
            class: MIGRATE_CLASS,
            object: schema_hash(schema),
        }
    }
}

/// The LISTEN/NOTIFY channel on which the writers of `schema` announce their commits: named
/// like the write lock, so replicas of one schema share it and other schemas stay apart.
pub(super) fn changes_channel(schema: &str) -> String {
    let object = u32::from_ne_bytes(schema_hash(schema).to_ne_bytes());
    format!("provisiond_changes_{object:08x}")
}

/// FNV-1a, folded to 32 bits: stable across builds and platforms, which is all a lock key
/// shared by replicas needs (a collision only makes two schemas share a lock).
fn schema_hash(schema: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in schema.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_differ_by_purpose_and_schema() {
        // Replicas of different builds must agree: the value is part of the protocol.
        assert_eq!(schema_hash("public"), schema_hash("public"));
        assert_eq!(
            schema_hash(""),
            i32::from_ne_bytes(0x811c_9dc5_u32.to_ne_bytes())
        );
        assert_ne!(LockKey::write("a"), LockKey::migrate("a"));
        assert_ne!(LockKey::write("a"), LockKey::write("b"));
    }
}
