//! Who delegates to whom among the current resources, in memory: the forward edges of each
//! entitlement and how many others delegate to each. Only the writer changes `delegations`,
//! so it keeps this exact by applying the edges of each write and delete once its batch has
//! committed (before answering); `has_dependants`, asked on every Validate and Set, then costs
//! no read.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use rusqlite::Connection;

use crate::pb;

/// The delegation edges a write or delete leaves `key` with (excluding any to itself).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EdgeChange {
    pub key: pb::EntitlementRef,
    pub targets: Vec<pb::EntitlementRef>,
}

#[derive(Debug, Default)]
pub(super) struct Dependants {
    graph: Mutex<Graph>,
}

#[derive(Debug, Default)]
struct Graph {
    targets: HashMap<pb::EntitlementRef, Vec<pb::EntitlementRef>>,
    dependants: HashMap<pb::EntitlementRef, u32>,
}

impl Dependants {
    /// Reads every stored edge.
    pub(super) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let mut stmt = conn.prepare(
            "SELECT app_id, entitlement_id, target_app_id, target_entitlement_id
             FROM delegations ORDER BY app_id, entitlement_id",
        )?;
        let mut rows = stmt.query([])?;
        let mut edges: HashMap<pb::EntitlementRef, Vec<pb::EntitlementRef>> = HashMap::new();
        while let Some(row) = rows.next()? {
            let key = pb::EntitlementRef {
                app_id: row.get(0)?,
                entitlement_id: row.get(1)?,
            };
            let target = pb::EntitlementRef {
                app_id: row.get(2)?,
                entitlement_id: row.get(3)?,
            };
            edges.entry(key).or_default().push(target);
        }
        let loaded = Self::default();
        loaded.apply(
            edges
                .into_iter()
                .map(|(key, targets)| EdgeChange { key, targets }),
        );
        Ok(loaded)
    }

    /// Makes each change's targets the edges of its key.
    pub(super) fn apply(&self, changes: impl IntoIterator<Item = EdgeChange>) {
        let mut graph = self.graph.lock().unwrap_or_else(PoisonError::into_inner);
        for EdgeChange { key, mut targets } in changes {
            targets.retain(|target| *target != key);
            targets.sort_by(|a, b| {
                (&a.app_id, &a.entitlement_id).cmp(&(&b.app_id, &b.entitlement_id))
            });
            targets.dedup();
            for target in &targets {
                *graph.dependants.entry(target.clone()).or_default() += 1;
            }
            let old = if targets.is_empty() {
                graph.targets.remove(&key)
            } else {
                graph.targets.insert(key, targets)
            };
            for target in old.unwrap_or_default() {
                if let Some(count) = graph.dependants.get_mut(&target) {
                    *count -= 1;
                    if *count == 0 {
                        graph.dependants.remove(&target);
                    }
                }
            }
        }
    }

    pub(super) fn has_dependants(&self, entitlement: &pb::EntitlementRef) -> bool {
        let graph = self.graph.lock().unwrap_or_else(PoisonError::into_inner);
        graph.dependants.contains_key(entitlement)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(id: &str) -> pb::EntitlementRef {
        pb::EntitlementRef {
            app_id: "app".into(),
            entitlement_id: id.into(),
        }
    }

    fn change(key: &str, targets: &[&str]) -> EdgeChange {
        EdgeChange {
            key: e(key),
            targets: targets.iter().map(|t| e(t)).collect(),
        }
    }

    #[test]
    fn counts_follow_replaced_edges_and_ignore_self_and_repeats() {
        let graph = Dependants::default();
        graph.apply([change("a", &["t", "t", "a"]), change("b", &["t", "u"])]);
        assert!(graph.has_dependants(&e("t")) && graph.has_dependants(&e("u")));
        assert!(
            !graph.has_dependants(&e("a")),
            "a self-edge is no dependant"
        );
        graph.apply([change("b", &["t"])]);
        assert!(!graph.has_dependants(&e("u")));
        graph.apply([change("a", &[])]);
        assert!(graph.has_dependants(&e("t")), "b still delegates to t");
        graph.apply([change("b", &[])]);
        assert!(!graph.has_dependants(&e("t")));
    }
}
