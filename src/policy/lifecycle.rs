//! Checks of the lifecycle requests (set, list, delete, history, rollback, watch) and the
//! decoding of the tokens they carry.

use std::time::Duration;

use super::ids;
use super::path::Path;
use super::reason;
use super::request::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use super::text;
use super::tokens::{Cursor, PolicyPage, RevisionPage};
use super::violations::Violations;
use crate::pb;

/// How often an idle watch gets a checkpoint when the request does not say.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);
/// The range a requested checkpoint interval is clamped to: the floor keeps a stream from
/// costing more in checkpoints than in changes (and lets tests use short intervals).
pub const MIN_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(600);

/// A ListProvisionPoliciesRequest, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PoliciesPage {
    pub app_id: Option<String>,
    /// Where this page continues a listing; `None` for a first page.
    pub continues: Option<PolicyPage>,
    pub size: usize,
}

pub fn parse_list_policies_request(
    request: &pb::ListProvisionPoliciesRequest,
    store_id: &str,
) -> Result<PoliciesPage, Vec<pb::PolicyViolation>> {
    let mut violations = Violations::default();
    if !request.app_id.is_empty() {
        ids::check(
            &mut violations,
            &Path::request_field("app_id"),
            &request.app_id,
        );
    }
    let size = page_size(&mut violations, request.page_size);
    let continues = match request.page_token.as_str() {
        "" => None,
        token => {
            let page = PolicyPage::decode(token)
                .filter(|page| page.read_at.store_id == store_id && page.app_id == request.app_id);
            if page.is_none() {
                violations.error(
                    &Path::request_field("page_token"),
                    reason::INVALID_PAGE_TOKEN,
                    "must be a next_page_token this store returned for the same app_id",
                );
            }
            page
        }
    };
    finish(violations, || PoliciesPage {
        app_id: (!request.app_id.is_empty()).then(|| request.app_id.clone()),
        continues,
        size,
    })
}

/// The checks of a SetProvisionPolicyRequest outside its policy (which `check_static` and the
/// graph rules judge): its `change_cause`.
pub fn check_set_request(request: &pb::SetProvisionPolicyRequest) -> Vec<pb::PolicyViolation> {
    let mut violations = Violations::default();
    check_change_cause(&mut violations, &request.change_cause);
    violations.finish()
}

pub fn check_delete_request(
    request: &pb::DeleteProvisionPolicyRequest,
) -> Vec<pb::PolicyViolation> {
    let mut violations = Violations::default();
    let path = Path::request_field("entitlement");
    ids::check_entitlement(&mut violations, &path, request.entitlement.as_ref());
    check_change_cause(&mut violations, &request.change_cause);
    violations.finish()
}

/// The cause a write records in the history: free text for people, like instructions.
fn check_change_cause(violations: &mut Violations<'_>, cause: &str) {
    text::check_change_cause(violations, &Path::request_field("change_cause"), cause);
}

pub fn check_rollback_request(
    request: &pb::RollbackProvisionPolicyRequest,
) -> Vec<pb::PolicyViolation> {
    let mut violations = Violations::default();
    let path = Path::request_field("entitlement");
    ids::check_entitlement(&mut violations, &path, request.entitlement.as_ref());
    if request.revision <= 0 {
        violations.error(
            &Path::request_field("revision"),
            reason::INVALID_REVISION,
            format!(
                "must name the revision to roll back to (1 or more), got {}",
                request.revision
            ),
        );
    }
    check_change_cause(&mut violations, &request.change_cause);
    violations.finish()
}

/// A ListProvisionPolicyRevisionsRequest, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionsPage {
    pub entitlement: pb::EntitlementRef,
    /// Only revisions older than this: where the previous page ended.
    pub before: Option<i64>,
    pub size: usize,
}

pub fn parse_list_revisions_request(
    request: &pb::ListProvisionPolicyRevisionsRequest,
) -> Result<RevisionsPage, Vec<pb::PolicyViolation>> {
    let mut violations = Violations::default();
    let path = Path::request_field("entitlement");
    ids::check_entitlement(&mut violations, &path, request.entitlement.as_ref());
    let size = page_size(&mut violations, request.page_size);
    let entitlement = request.entitlement.clone().unwrap_or_default();
    let before = match request.page_token.as_str() {
        "" => None,
        token => {
            let page = RevisionPage::decode(token).filter(|page| page.entitlement == entitlement);
            if page.is_none() {
                violations.error(
                    &Path::request_field("page_token"),
                    reason::INVALID_PAGE_TOKEN,
                    "must be a next_page_token returned for the same entitlement",
                );
            }
            page.map(|page| page.before)
        }
    };
    finish(violations, || RevisionsPage {
        entitlement,
        before,
        size,
    })
}

/// A WatchProvisionPoliciesRequest, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSpec {
    /// The exclusive start; `None`: the head when the stream opens.
    pub start: Option<u64>,
    pub filter: WatchFilter,
    pub send_initial_state: bool,
    pub checkpoint_interval: Duration,
}

/// Which changes a stream sends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchFilter {
    pub app_id: Option<String>,
    pub entitlement: Option<pb::EntitlementRef>,
}

impl WatchFilter {
    /// Whether `entitlement` passes every filter set.
    pub fn matches(&self, entitlement: &pb::EntitlementRef) -> bool {
        self.app_id
            .as_ref()
            .is_none_or(|app_id| *app_id == entitlement.app_id)
            && self.entitlement.as_ref().is_none_or(|e| e == entitlement)
    }

    /// Whether the change passes: a policy change by its entitlement, a binding change when its
    /// source or its destination does.
    pub fn matches_change(&self, change: &pb::PolicyChange) -> bool {
        match &change.binding {
            Some(binding) => [&binding.source, &binding.destination]
                .into_iter()
                .flatten()
                .any(|e| self.matches(e)),
            None => change.entitlement.as_ref().is_some_and(|e| self.matches(e)),
        }
    }
}

/// Why a watch request was refused: a bad cursor has a reason of its own.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchRequestError {
    Invalid(Vec<pb::PolicyViolation>),
    Cursor(Vec<pb::PolicyViolation>),
}

pub fn parse_watch_request(
    request: &pb::WatchProvisionPoliciesRequest,
    store_id: &str,
) -> Result<WatchSpec, WatchRequestError> {
    let mut violations = Violations::default();
    if !request.app_id.is_empty() {
        ids::check(
            &mut violations,
            &Path::request_field("app_id"),
            &request.app_id,
        );
    }
    if let Some(entitlement) = &request.entitlement {
        let path = Path::request_field("entitlement");
        ids::check_entitlement(&mut violations, &path, Some(entitlement));
    }
    let checkpoint_interval = match &request.checkpoint_interval {
        None => DEFAULT_CHECKPOINT_INTERVAL,
        Some(duration) if duration.seconds < 0 || duration.nanos < 0 => {
            violations.error(
                &Path::request_field("checkpoint_interval"),
                reason::INVALID_DURATION,
                "must not be negative",
            );
            DEFAULT_CHECKPOINT_INTERVAL
        }
        Some(duration) if duration.seconds == 0 && duration.nanos == 0 => {
            DEFAULT_CHECKPOINT_INTERVAL
        }
        Some(duration) => {
            let requested = Duration::from_secs(duration.seconds.unsigned_abs())
                + Duration::from_nanos(u64::from(duration.nanos.unsigned_abs()));
            requested.clamp(MIN_CHECKPOINT_INTERVAL, MAX_CHECKPOINT_INTERVAL)
        }
    };
    let invalid = violations.finish();
    if !invalid.is_empty() {
        return Err(WatchRequestError::Invalid(invalid));
    }
    let start = match request.start_cursor.as_str() {
        "" => None,
        text => {
            Some(parse_cursor(text, store_id, "start_cursor").map_err(WatchRequestError::Cursor)?)
        }
    };
    Ok(WatchSpec {
        start,
        filter: WatchFilter {
            app_id: (!request.app_id.is_empty()).then(|| request.app_id.clone()),
            entitlement: request.entitlement.clone(),
        },
        send_initial_state: request.send_initial_state,
        checkpoint_interval,
    })
}

/// The log position a cursor of this store names.
pub fn parse_cursor(
    text: &str,
    store_id: &str,
    field: &str,
) -> Result<u64, Vec<pb::PolicyViolation>> {
    let mut violations = Violations::default();
    let path = Path::request_field(field);
    match Cursor::decode(text) {
        None => violations.error(
            &path,
            reason::INVALID_CURSOR,
            "must be a cursor this service returned (from a write response, a listing's read_at \
             or a watch message)",
        ),
        Some(cursor) if cursor.store_id != store_id => violations.error(
            &path,
            reason::INVALID_CURSOR,
            "was issued by another store: cursors are valid only with the store that issued \
             them; list again and watch from the new read_at",
        ),
        Some(cursor) => return Ok(cursor.seq),
    }
    Err(violations.finish())
}

/// A requested page size: 0 means the default, past the maximum the maximum, negative refused.
pub(super) fn page_size(violations: &mut Violations<'_>, requested: i32) -> usize {
    if requested < 0 {
        violations.error(
            &Path::request_field("page_size"),
            reason::INVALID_PAGE_SIZE,
            format!("must not be negative, got {requested}"),
        );
    }
    match usize::try_from(requested).unwrap_or(0) {
        0 => DEFAULT_PAGE_SIZE,
        size => size.min(MAX_PAGE_SIZE),
    }
}

fn finish<T>(
    violations: Violations<'_>,
    page: impl FnOnce() -> T,
) -> Result<T, Vec<pb::PolicyViolation>> {
    let violations = violations.finish();
    if violations.is_empty() {
        Ok(page())
    } else {
        Err(violations)
    }
}
