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
    // Lists are short (a few user or vault ids): scanning the earlier items costs less than
    // building a map, which allocates and hashes on every call, valid or not. Long lists keep
    // the map, so the work stays linear in the length.
    let mut first_index: Option<HashMap<&str, usize>> =
        (items.len() > LINEAR_SCAN_MAX).then(|| HashMap::with_capacity(items.len()));
    for (index, item) in items.iter().enumerate() {
        let item_path = path.index(index);
        let first = match &mut first_index {
            None => items[..index].iter().position(|earlier| earlier == item),
            Some(first_index) => match first_index.get(item.as_str()) {
                Some(&first) => Some(first),
                None => {
                    first_index.insert(item, index);
                    None
                }
            },
        };
        match first {
            Some(first) => violations.warning(
                &item_path,
                reason::DUPLICATE_VALUE,
                format!("duplicates the value at index {first}; remove it"),
            ),
            None => check(violations, &item_path, item),
        }
    }
}

/// Up to this many items, duplicates are found by scanning: at most 120 string comparisons.
const LINEAR_SCAN_MAX: usize = 16;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    fn duplicates(items: &[String]) -> Vec<String> {
        let mut violations = Violations::default();
        check_each(&mut violations, &Path::resource(), items, |_, _, _| {});
        violations
            .finish()
            .into_iter()
            .map(|v: pb::PolicyViolation| format!("{} {}", v.field, v.description))
            .collect()
    }

    #[test]
    fn short_and_long_lists_flag_the_same_duplicates() {
        for len in [4, LINEAR_SCAN_MAX, LINEAR_SCAN_MAX + 1, 40] {
            let items: Vec<String> = (0..len).map(|i| format!("u{}", i % 3)).collect();
            let found = duplicates(&items);
            assert_eq!(found.len(), len - 3, "{len} items");
            assert_eq!(
                found[0],
                "policy[3] duplicates the value at index 0; remove it"
            );
            assert_eq!(
                found.last().unwrap(),
                &format!(
                    "policy[{}] duplicates the value at index {}; remove it",
                    len - 1,
                    (len - 1) % 3
                )
            );
        }
    }
}
