//! Repeated fields: required lists and duplicate values.

use std::collections::HashMap;

use super::path::Path;
use super::reason;
use super::violations::Violations;

/// Checks each element of `items` with `check`, except duplicates: a repeated value draws one
/// DUPLICATE_VALUE warning at its own index, and no second copy of whatever is wrong with the
/// value (that is reported at its first occurrence).
pub(super) fn check_each<'a>(
    violations: &mut Violations<'a>,
    path: &Path,
    items: &'a [String],
    mut check: impl FnMut(&mut Violations<'a>, &Path, &'a str),
) {
    let mut first_index: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_path = path.index(index);
        match first_index.get(item.as_str()) {
            Some(first) => violations.warning(
                &item_path,
                reason::DUPLICATE_VALUE,
                format!("duplicates the value at index {first}; remove it"),
            ),
            None => {
                first_index.insert(item, index);
                check(violations, &item_path, item);
            }
        }
    }
}

/// Like [`check_each`], for a list that must not be empty; `what` names one element.
pub(super) fn check_required_each<'a>(
    violations: &mut Violations<'a>,
    path: &Path,
    items: &'a [String],
    what: &str,
    check: impl FnMut(&mut Violations<'a>, &Path, &'a str),
) {
    if items.is_empty() {
        violations.error(
            path,
            reason::REQUIRED,
            format!("must list at least one {what}"),
        );
    } else {
        check_each(violations, path, items, check);
    }
}
