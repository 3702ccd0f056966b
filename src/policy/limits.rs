//! The limits of DESIGN.md 2.4, named once so the rules, their descriptions and the tests agree.

/// An id is at most this many bytes (and at least one).
pub const MAX_ID_BYTES: usize = 64;

/// Instructions are at most 16 KiB: enough for a runbook, small enough to show in a ticket.
pub const MAX_INSTRUCTIONS_BYTES: usize = 16 * 1024;

/// A MultiStep has at most this many steps.
pub const MAX_STEPS: usize = 32;

/// The longest display name (of an action).
pub const MAX_DISPLAY_NAME_BYTES: usize = 256;

/// A change cause is a note for the audit trail (a ticket link, a sentence), stored with every
/// revision: 1 KiB says why without turning the history into a document store.
pub const MAX_CHANGE_CAUSE_BYTES: usize = 1024;

/// MultiSteps nest at most this many levels: a top-level `multi_step` is level 1, a `multi_step`
/// among its steps level 2, and so on.
pub const MAX_MULTI_STEP_DEPTH: usize = 4;

/// At most this many `ProvisionPolicy` messages in one resource, counting `provision_policy` and
/// `deprovision_policy` together, every MultiStep step included.
pub const MAX_NODES: usize = 256;

/// Values echoed in a description are cut to this many characters, so that a megabyte of bad
/// input gives a short message.
pub const MAX_ECHO_CHARS: usize = 40;

/// A parser message quoted in a description is cut to this many characters: parsers echo the
/// offending token, which can be arbitrarily long.
pub const MAX_PARSER_MESSAGE_CHARS: usize = 200;

/// A CEL expression is at most this many bytes. Real expressions are a line or two; the cap
/// bounds the parse time and the depth of the syntax tree (a chain like `a.b.b.b…` nests one
/// level per two bytes), hence the stack the parse needs.
pub const MAX_CEL_BYTES: usize = 4096;

/// CEL sub-expressions (parentheses, lists, calls, conditionals) nest at most this many levels;
/// the parser stops there instead of recursing further.
pub const MAX_CEL_NESTING: u16 = 32;

/// The stack CEL is parsed on. The parser recurses deeply: measured in a debug
/// build, one level of parentheses takes about 160 KiB and one `.b` of a chain about 2 KiB, so
/// the worst input the two limits above allow needs about 9 MiB, far more than the 2 MiB of a
/// tokio worker. Only the pages touched are committed.
pub const CEL_STACK_BYTES: usize = 32 << 20;

/// At most this many violations are listed; the rest are summed up in one TOO_MANY_VIOLATIONS.
pub const MAX_VIOLATIONS: usize = 100;

/// A delegation chain (this entitlement → the one it delegates to → …) has at most this many
/// delegations.
pub const MAX_DELEGATION_CHAIN: usize = 8;

/// The delegation rules look up at most this many stored entitlements for one resource: the
/// walk stays bounded however the stored graph grows.
pub const MAX_DELEGATION_LOOKUPS: usize = 4096;

/// A resolved plan visits at most this many policy nodes, across every delegation it follows:
/// delegations that fan out (a diamond of multi-steps delegating twice to one target) would
/// otherwise multiply the work with every level.
pub const MAX_PLAN_NODES: usize = 4096;
