//! Free text for people: the instructions of manual and external-ticket provisioning. They end
//! up in tickets, emails and terminals, where control characters other than newline and tab can
//! hide or rewrite what is shown.

use super::limits::MAX_INSTRUCTIONS_BYTES;
use super::path::Path;
use super::reason;
use super::violations::Violations;

pub(super) fn check_instructions(violations: &mut Violations<'_>, path: &Path, text: &str) {
    if text.len() > MAX_INSTRUCTIONS_BYTES {
        violations.error(
            path,
            reason::TOO_LONG,
            format!(
                "must be at most {MAX_INSTRUCTIONS_BYTES} bytes, got {}",
                text.len()
            ),
        );
    }
    let forbidden = text
        .char_indices()
        .find(|&(_, c)| c.is_control() && c != '\n' && c != '\t');
    if let Some((at, c)) = forbidden {
        violations.error(
            path,
            reason::INVALID_TEXT,
            format!(
                "must not contain control characters other than newline and tab, \
                 found U+{:04X} at byte {at}",
                c as u32
            ),
        );
    }
}
