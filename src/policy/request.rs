//! Checks of request fields outside the policy resource.

use super::ids;
use super::path::Path;
use super::reason;
use super::violations::Violations;
use crate::pb;

/// The violations of a GetProvisionPolicyRequest: the entitlement must be named with valid ids
/// and the revision must not be negative.
pub fn check_get_request(request: &pb::GetProvisionPolicyRequest) -> Vec<pb::PolicyViolation> {
    let mut violations = Violations::default();
    ids::check_entitlement(
        &mut violations,
        &Path::request_field("entitlement"),
        request.entitlement.as_ref(),
    );
    if request.revision < 0 {
        violations.error(
            &Path::request_field("revision"),
            reason::INVALID_REVISION,
            format!(
                "must be 0 (the current revision) or a past revision, got {}",
                request.revision
            ),
        );
    }
    violations.finish()
}

/// The violations of a CreateProxyBindingRequest: both entitlements named with valid ids, and
/// not the same one.
pub fn check_create_binding_request(
    request: &pb::CreateProxyBindingRequest,
) -> Vec<pb::PolicyViolation> {
    let mut violations = Violations::default();
    let path = Path::request_field("binding");
    match &request.binding {
        None => violations.error(&path, reason::REQUIRED, "must be set"),
        Some(binding) => check_pair(
            &mut violations,
            &path,
            binding.source.as_ref(),
            binding.destination.as_ref(),
        ),
    }
    violations.finish()
}

/// The violations of a DeleteProxyBindingRequest.
pub fn check_delete_binding_request(
    request: &pb::DeleteProxyBindingRequest,
) -> Vec<pb::PolicyViolation> {
    let mut violations = Violations::default();
    let (source, destination) = (request.source.as_ref(), request.destination.as_ref());
    ids::check_entitlement(&mut violations, &Path::request_field("source"), source);
    ids::check_entitlement(
        &mut violations,
        &Path::request_field("destination"),
        destination,
    );
    violations.finish()
}

fn check_pair(
    violations: &mut Violations<'_>,
    path: &Path,
    source: Option<&pb::EntitlementRef>,
    destination: Option<&pb::EntitlementRef>,
) {
    ids::check_entitlement(violations, &path.field("source"), source);
    ids::check_entitlement(violations, &path.field("destination"), destination);
    if source.is_some() && source == destination {
        violations.error(
            &path.field("destination"),
            reason::SELF_DELEGATION,
            "must differ from source: an entitlement cannot delegate to itself",
        );
    }
}

/// Bindings a page holds when the request does not say.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// Bindings a page holds at most.
pub const MAX_PAGE_SIZE: usize = 1000;

/// A ListProxyBindingsRequest, checked: the filters, where the page starts and its size.
#[derive(Debug, Clone, PartialEq)]
pub struct BindingsPage {
    pub source: Option<pb::EntitlementRef>,
    pub destination: Option<pb::EntitlementRef>,
    /// The last (source, destination) of the previous page.
    pub after: Option<(pb::EntitlementRef, pb::EntitlementRef)>,
    pub size: usize,
}

/// Checks a ListProxyBindingsRequest and decodes its page token.
pub fn parse_list_bindings_request(
    request: &pb::ListProxyBindingsRequest,
) -> Result<BindingsPage, Vec<pb::PolicyViolation>> {
    let mut violations = Violations::default();
    for (name, filter) in [
        ("source", &request.source),
        ("destination", &request.destination),
    ] {
        if let Some(filter) = filter {
            ids::check_entitlement(&mut violations, &Path::request_field(name), Some(filter));
        }
    }
    if request.page_size < 0 {
        violations.error(
            &Path::request_field("page_size"),
            reason::INVALID_PAGE_SIZE,
            format!("must not be negative, got {}", request.page_size),
        );
    }
    let after = match request.page_token.as_str() {
        "" => None,
        token => {
            let cursor = decode_page_token(token).filter(|cursor| {
                cursor.source == request.source && cursor.destination == request.destination
            });
            if cursor.is_none() {
                violations.error(
                    &Path::request_field("page_token"),
                    reason::INVALID_PAGE_TOKEN,
                    "must be a next_page_token returned for the same source and destination \
                     filters",
                );
            }
            cursor.and_then(|cursor| Some((cursor.after_source?, cursor.after_destination?)))
        }
    };
    let violations = violations.finish();
    if !violations.is_empty() {
        return Err(violations);
    }
    let size = match usize::try_from(request.page_size).unwrap_or(0) {
        0 => DEFAULT_PAGE_SIZE,
        size => size.min(MAX_PAGE_SIZE),
    };
    Ok(BindingsPage {
        source: request.source.clone(),
        destination: request.destination.clone(),
        after,
        size,
    })
}

/// The token of the page after the one ending at (`last_source`, `last_destination`): the
/// filters and the last key, so a token only continues the listing it came from.
pub fn next_page_token(
    page: &BindingsPage,
    last_source: &pb::EntitlementRef,
    last_destination: &pb::EntitlementRef,
) -> String {
    // The request message itself carries the cursor: no second schema to keep in step.
    let cursor = pb::ListProxyBindingsRequest {
        source: page.source.clone(),
        destination: page.destination.clone(),
        page_size: 0,
        page_token: hex(&prost::Message::encode_to_vec(&pb::ProxyBinding {
            source: Some(last_source.clone()),
            destination: Some(last_destination.clone()),
            implicit: false,
            create_time: None,
        })),
    };
    hex(&prost::Message::encode_to_vec(&cursor))
}

struct Cursor {
    source: Option<pb::EntitlementRef>,
    destination: Option<pb::EntitlementRef>,
    after_source: Option<pb::EntitlementRef>,
    after_destination: Option<pb::EntitlementRef>,
}

fn decode_page_token(token: &str) -> Option<Cursor> {
    use prost::Message;
    let outer = pb::ListProxyBindingsRequest::decode(unhex(token)?.as_slice()).ok()?;
    let last = pb::ProxyBinding::decode(unhex(&outer.page_token)?.as_slice()).ok()?;
    Some(Cursor {
        source: outer.source,
        destination: outer.destination,
        after_source: last.source,
        after_destination: last.destination,
    })
}

/// Lower-case hex: the text of every token this service issues. Written into one allocation:
/// a cursor is in every Get, Set and watch message, and a `format!` per byte made its encoding
/// a fifth of a Get's instructions (callgrind).
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 4096 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(app: &str, id: &str) -> pb::EntitlementRef {
        pb::EntitlementRef {
            app_id: app.into(),
            entitlement_id: id.into(),
        }
    }

    #[test]
    fn page_tokens_round_trip_and_are_tied_to_their_filters() {
        let request = pb::ListProxyBindingsRequest {
            source: Some(ent("a", "x")),
            page_size: 5,
            ..Default::default()
        };
        let page = parse_list_bindings_request(&request).expect("valid");
        assert_eq!(page.size, 5);
        let token = next_page_token(&page, &ent("a", "x"), &ent("b", "y"));
        let next = pb::ListProxyBindingsRequest {
            page_token: token.clone(),
            ..request.clone()
        };
        let next = parse_list_bindings_request(&next).expect("continues");
        assert_eq!(next.after, Some((ent("a", "x"), ent("b", "y"))));

        let other_filter = pb::ListProxyBindingsRequest {
            source: Some(ent("c", "z")),
            page_token: token,
            ..Default::default()
        };
        let violations = parse_list_bindings_request(&other_filter).expect_err("tied to filters");
        assert_eq!(violations[0].reason, reason::INVALID_PAGE_TOKEN);
        for garbage in ["zz", "abc", "00ff00ff"] {
            let request = pb::ListProxyBindingsRequest {
                page_token: garbage.into(),
                ..Default::default()
            };
            assert!(parse_list_bindings_request(&request).is_err(), "{garbage}");
        }
    }

    #[test]
    fn page_sizes_default_clamp_and_refuse_negatives() {
        let size = |page_size| {
            parse_list_bindings_request(&pb::ListProxyBindingsRequest {
                page_size,
                ..Default::default()
            })
            .map(|page| page.size)
        };
        assert_eq!(size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(size(7), Ok(7));
        assert_eq!(size(1_000_000), Ok(MAX_PAGE_SIZE));
        assert_eq!(size(-1).unwrap_err()[0].reason, reason::INVALID_PAGE_SIZE);
    }

    #[test]
    fn binding_requests_need_two_distinct_valid_entitlements() {
        let check = |source, destination| {
            check_create_binding_request(&pb::CreateProxyBindingRequest {
                binding: Some(pb::ProxyBinding {
                    source,
                    destination,
                    ..Default::default()
                }),
            })
            .into_iter()
            .map(|v| (v.field, v.reason))
            .collect::<Vec<_>>()
        };
        assert!(check(Some(ent("a", "x")), Some(ent("b", "y"))).is_empty());
        assert_eq!(
            check(Some(ent("a", "x")), Some(ent("a", "x"))),
            vec![(
                "binding.destination".to_owned(),
                reason::SELF_DELEGATION.to_owned()
            )]
        );
        assert_eq!(
            check(None, Some(ent("b", "bad id"))),
            vec![
                ("binding.source".to_owned(), reason::REQUIRED.to_owned()),
                (
                    "binding.destination.entitlement_id".to_owned(),
                    reason::INVALID_ID.to_owned()
                ),
            ]
        );
        let missing = check_create_binding_request(&pb::CreateProxyBindingRequest::default());
        assert_eq!(missing[0].field, "binding");
        let delete = check_delete_binding_request(&pb::DeleteProxyBindingRequest::default());
        assert_eq!(delete.len(), 2);
    }
}
