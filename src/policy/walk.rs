//! The walk over every `ProvisionPolicy` of a resource: `provision_policy`, then
//! `deprovision_policy`, each node before its MultiStep steps (field order).
//!
//! The walk is iterative, with one frame per open MultiStep, and stays within the limits that
//! the rules enforce: it does not enter a MultiStep nested deeper than
//! [`MAX_MULTI_STEP_DEPTH`], and stops after [`MAX_NODES`] nodes. A resource past either
//! limit is refused anyway, so what lies beyond is never looked at, and neither the stack nor
//! the work grows with the input.

use super::limits::{MAX_MULTI_STEP_DEPTH, MAX_NODES};
use super::path::Path;
use crate::pb;
use crate::pb::provision_policy::Typ;

/// One `ProvisionPolicy` met by the walk.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    /// Where it is, e.g. `policy.provision_policy.multi_step.provision_steps[1]`.
    pub path: Path,
    pub policy: &'a pb::ProvisionPolicy,
    /// How many MultiSteps enclose it: 0 for `provision_policy` and `deprovision_policy`
    /// themselves. A MultiStep node is at level `enclosing_multi_steps + 1`.
    pub enclosing_multi_steps: usize,
}

/// Whether a MultiStep at `level` (1 for a top-level one) is within the nesting limit.
pub fn multi_step_level_allowed(level: usize) -> bool {
    level <= MAX_MULTI_STEP_DEPTH
}

/// An iterator over the nodes of a resource; see the module documentation.
#[derive(Debug)]
pub struct Walk<'a> {
    /// The roots not yet entered, last one first.
    roots: Vec<(Path, &'a pb::ProvisionPolicy)>,
    /// The open MultiSteps, innermost last.
    frames: Vec<Frame<'a>>,
    visited: usize,
    first_unvisited: Option<Path>,
}

#[derive(Debug)]
struct Frame<'a> {
    /// The path of the `provision_steps` field.
    path: Path,
    steps: &'a [pb::ProvisionPolicy],
    next: usize,
    /// The `enclosing_multi_steps` of each step.
    enclosing: usize,
}

impl<'a> Walk<'a> {
    pub fn new(resource: &'a pb::EntitlementProvisionPolicy) -> Self {
        let root = Path::resource();
        let mut roots = Vec::with_capacity(2);
        if let Some(policy) = &resource.deprovision_policy {
            roots.push((root.field("deprovision_policy"), policy));
        }
        if let Some(policy) = &resource.provision_policy {
            roots.push((root.field("provision_policy"), policy));
        }
        Walk {
            roots,
            frames: Vec::with_capacity(MAX_MULTI_STEP_DEPTH),
            visited: 0,
            first_unvisited: None,
        }
    }

    /// Once the walk has ended: the path of the first node left out because the resource holds
    /// more than [`MAX_NODES`] nodes, if it does.
    pub fn first_unvisited(&self) -> Option<&Path> {
        self.first_unvisited.as_ref()
    }

    fn next_pending(&mut self) -> Option<(Path, &'a pb::ProvisionPolicy, usize)> {
        while let Some(frame) = self.frames.last_mut() {
            if let Some(step) = frame.steps.get(frame.next) {
                let path = frame.path.index(frame.next);
                frame.next += 1;
                return Some((path, step, frame.enclosing));
            }
            self.frames.pop();
        }
        let (path, policy) = self.roots.pop()?;
        Some((path, policy, 0))
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = Node<'a>;

    fn next(&mut self) -> Option<Node<'a>> {
        if self.first_unvisited.is_some() {
            return None;
        }
        let (path, policy, enclosing_multi_steps) = self.next_pending()?;
        if self.visited == MAX_NODES {
            self.first_unvisited = Some(path);
            self.frames.clear();
            self.roots.clear();
            return None;
        }
        self.visited += 1;
        if let Some(Typ::MultiStep(multi_step)) = &policy.typ {
            let level = enclosing_multi_steps + 1;
            if multi_step_level_allowed(level) {
                self.frames.push(Frame {
                    path: path.field("multi_step").field("provision_steps"),
                    steps: &multi_step.provision_steps,
                    next: 0,
                    enclosing: level,
                });
            }
        }
        Some(Node {
            path,
            policy,
            enclosing_multi_steps,
        })
    }
}

/// Every DelegatedProvision of the resource with the path of its `delegated` field, in
/// `provision_policy` and `deprovision_policy`, at every MultiStep level the walk enters.
pub fn delegations(
    resource: &pb::EntitlementProvisionPolicy,
) -> impl Iterator<Item = (Path, &pb::DelegatedProvision)> {
    Walk::new(resource).filter_map(|node| match &node.policy.typ {
        Some(Typ::Delegated(delegated)) => Some((node.path.field("delegated"), delegated)),
        _ => None,
    })
}
