//! The stable machine-readable reasons of [`crate::pb::PolicyViolation`], documented in the proto.

pub const REQUIRED: &str = "REQUIRED";
pub const INVALID_ID: &str = "INVALID_ID";
pub const NO_PROVISIONER: &str = "NO_PROVISIONER";
pub const SUPERSEDED_FIELD: &str = "SUPERSEDED_FIELD";
pub const INVALID_CEL: &str = "INVALID_CEL";
pub const INVALID_CONFIG_VALUE: &str = "INVALID_CONFIG_VALUE";
pub const EMPTY_MULTI_STEP: &str = "EMPTY_MULTI_STEP";
pub const TOO_MANY_STEPS: &str = "TOO_MANY_STEPS";
pub const TOO_DEEP: &str = "TOO_DEEP";
pub const TOO_MANY_NODES: &str = "TOO_MANY_NODES";
pub const NESTED_MULTI_STEP: &str = "NESTED_MULTI_STEP";
pub const DUPLICATE_VALUE: &str = "DUPLICATE_VALUE";
pub const TOO_LONG: &str = "TOO_LONG";
pub const INVALID_TEXT: &str = "INVALID_TEXT";
pub const SELF_DELEGATION: &str = "SELF_DELEGATION";
pub const DANGLING_DELEGATION: &str = "DANGLING_DELEGATION";
pub const DELEGATION_CYCLE: &str = "DELEGATION_CYCLE";
pub const DELEGATION_TOO_DEEP: &str = "DELEGATION_TOO_DEEP";
pub const MISSING_PROXY_BINDING: &str = "MISSING_PROXY_BINDING";
/// An `unconfigured` arm as a step of a multi_step.
pub const UNCONFIGURED_STEP: &str = "UNCONFIGURED_STEP";
/// More violations than are listed; see [`super::limits::MAX_VIOLATIONS`].
pub const TOO_MANY_VIOLATIONS: &str = "TOO_MANY_VIOLATIONS";

/// Every reason a policy violation may carry (the proto documents the same list): the label
/// set of the violations metric, and what the golden and fuzz checks accept.
pub const POLICY: &[&str] = &[
    REQUIRED,
    UNCONFIGURED_STEP,
    INVALID_ID,
    NO_PROVISIONER,
    SUPERSEDED_FIELD,
    INVALID_CEL,
    INVALID_CONFIG_VALUE,
    EMPTY_MULTI_STEP,
    TOO_MANY_STEPS,
    TOO_DEEP,
    TOO_MANY_NODES,
    NESTED_MULTI_STEP,
    DUPLICATE_VALUE,
    TOO_LONG,
    INVALID_TEXT,
    SELF_DELEGATION,
    DANGLING_DELEGATION,
    DELEGATION_CYCLE,
    DELEGATION_TOO_DEEP,
    MISSING_PROXY_BINDING,
    TOO_MANY_VIOLATIONS,
];

/// Request-level reasons (outside the policy resource).
pub const INVALID_REVISION: &str = "INVALID_REVISION";
pub const INVALID_PAGE_SIZE: &str = "INVALID_PAGE_SIZE";
pub const INVALID_PAGE_TOKEN: &str = "INVALID_PAGE_TOKEN";
/// A change cursor that is malformed or from another store.
pub const INVALID_CURSOR: &str = "INVALID_CURSOR";
/// A duration out of its range.
pub const INVALID_DURATION: &str = "INVALID_DURATION";
/// A `consistency` mode set to false.
pub const INVALID_CONSISTENCY: &str = "INVALID_CONSISTENCY";
/// Two request fields of which at most one may be set.
pub const CONFLICTING_FIELDS: &str = "CONFLICTING_FIELDS";
