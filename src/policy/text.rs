//! Free text for people: the instructions of manual and external-ticket provisioning, the
//! display names of actions, and the change causes of writes (shown in the history). They end up in tickets, emails and terminals, where control
//! characters can hide or rewrite what is shown (instructions may hold newlines and tabs).

use super::limits::{MAX_CHANGE_CAUSE_BYTES, MAX_DISPLAY_NAME_BYTES, MAX_INSTRUCTIONS_BYTES};
use super::path::Path;
use super::reason;
use super::violations::Violations;

pub(super) fn check_instructions(violations: &mut Violations<'_>, path: &Path, text: &str) {
    check_text(violations, path, text, MAX_INSTRUCTIONS_BYTES, true);
}

/// Checked like instructions (newlines and tabs allowed), with a smaller limit. Empty is fine.
pub(super) fn check_change_cause(violations: &mut Violations<'_>, path: &Path, text: &str) {
    check_text(violations, path, text, MAX_CHANGE_CAUSE_BYTES, true);
}

/// A one-line name: no control characters at all.
pub(super) fn check_display_name(violations: &mut Violations<'_>, path: &Path, text: &str) {
    check_text(violations, path, text, MAX_DISPLAY_NAME_BYTES, false);
}

fn check_text(
    violations: &mut Violations<'_>,
    path: &Path,
    text: &str,
    max_bytes: usize,
    multi_line: bool,
) {
    if text.len() > max_bytes {
        violations.error(
            path,
            reason::TOO_LONG,
            format!("must be at most {max_bytes} bytes, got {}", text.len()),
        );
    }
    let allowed = |c: char| multi_line && (c == '\n' || c == '\t');
    let forbidden = text
        .char_indices()
        .find(|&(_, c)| c.is_control() && !allowed(c));
    if let Some((at, c)) = forbidden {
        let what = if multi_line {
            "control characters other than newline and tab"
        } else {
            "control characters"
        };
        violations.error(
            path,
            reason::INVALID_TEXT,
            format!(
                "must not contain {what}, found U+{:04X} at byte {at}",
                c as u32
            ),
        );
    }
}
