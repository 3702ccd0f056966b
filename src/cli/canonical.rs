//! Canonical ProtoJSON of a policy: what `diff` compares, `get -o json` prints and a plan hashes.
//!
//! A policy file is a `SetProvisionPolicyRequest`; its canonical form is `{"policy": …}` with the
//! output-only fields of the resource (etag, revision, create_time, update_time, actor,
//! change_cause) cleared, serialized by prost-reflect's `DynamicMessage` (lowerCamelCase names,
//! default values left out) and pretty-printed with the keys of every object sorted. Two policies
//! are equal exactly when their canonical texts are, so the server's copy of a file compares
//! equal to the file, and `get -o json > f && apply f` writes nothing.

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::pb;

/// The descriptors of `provision.v1` and the well-known types it imports.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).expect("the built-in descriptor set")
    })
}

/// The descriptor of `provision.v1.<name>`.
pub fn descriptor(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(&format!("provision.v1.{name}"))
        .unwrap_or_else(|| panic!("no message provision.v1.{name}"))
}

/// A prost message of type `provision.v1.<name>` as ProtoJSON, keys sorted.
pub fn to_json<T: Message>(name: &str, message: &T) -> Value {
    let dynamic = DynamicMessage::decode(descriptor(name), message.encode_to_vec().as_slice())
        .expect("a generated message decodes as its own descriptor");
    let value = dynamic
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().skip_default_fields(true),
        )
        .expect("ProtoJSON serializes");
    sorted(value)
}

/// `value` with the keys of every object in sorted order, whatever serde_json's map keeps.
pub fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key, sorted(value)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The resource without its output-only fields.
pub fn strip(policy: &pb::EntitlementProvisionPolicy) -> pb::EntitlementProvisionPolicy {
    pb::EntitlementProvisionPolicy {
        entitlement: policy.entitlement.clone(),
        provision_policy: policy.provision_policy.clone(),
        deprovision_policy: policy.deprovision_policy.clone(),
        ..Default::default()
    }
}

/// The request a file of this policy holds: only `policy`, output-only fields cleared.
pub fn file_request(policy: &pb::EntitlementProvisionPolicy) -> pb::SetProvisionPolicyRequest {
    pb::SetProvisionPolicyRequest {
        policy: Some(strip(policy)),
        ..Default::default()
    }
}

/// The canonical text of a policy (a file `apply` accepts), ending in a newline.
pub fn text(policy: &pb::EntitlementProvisionPolicy) -> String {
    let value = to_json("SetProvisionPolicyRequest", &file_request(policy));
    let mut text = serde_json::to_string_pretty(&value).expect("JSON prints");
    text.push('\n');
    text
}

/// The lowercase hex SHA-256 of a canonical text.
pub fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// `APP/ENTITLEMENT`.
pub fn name(entitlement: &pb::EntitlementRef) -> String {
    format!("{}/{}", entitlement.app_id, entitlement.entitlement_id)
}

/// `APP/ENTITLEMENT` into a reference; both parts non-empty, one slash.
pub fn parse_name(text: &str) -> Result<pb::EntitlementRef, String> {
    match text.split_once('/') {
        Some((app, entitlement))
            if !app.is_empty() && !entitlement.is_empty() && !entitlement.contains('/') =>
        {
            Ok(pb::EntitlementRef {
                app_id: app.to_owned(),
                entitlement_id: entitlement.to_owned(),
            })
        }
        _ => Err(format!("expected APP/ENTITLEMENT, got {text:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(webhook: &str) -> pb::EntitlementProvisionPolicy {
        pb::EntitlementProvisionPolicy {
            entitlement: Some(pb::EntitlementRef {
                app_id: "github".into(),
                entitlement_id: "admins".into(),
            }),
            provision_policy: Some(pb::ProvisionPolicy {
                typ: Some(pb::provision_policy::Typ::Webhook(pb::WebhookProvision {
                    webhook_id: webhook.into(),
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn output_only_fields_do_not_count() {
        let mut stored = policy("wh-1");
        stored.etag = "\"3\"".into();
        stored.revision = 3;
        stored.actor = "ci".into();
        stored.change_cause = "why".into();
        stored.update_time = Some(prost_types::Timestamp {
            seconds: 5,
            nanos: 0,
        });
        assert_eq!(text(&stored), text(&policy("wh-1")));
        assert_ne!(text(&policy("wh-2")), text(&policy("wh-1")));
        assert!(!text(&stored).contains("etag"));
    }

    #[test]
    fn keys_are_sorted_and_camel_case() {
        let text = text(&policy("wh-1"));
        let entitlement = text.find("\"entitlement\"").unwrap();
        let provision = text.find("\"provisionPolicy\"").unwrap();
        assert!(entitlement < provision, "{text}");
        assert!(text.contains("\"appId\": \"github\""), "{text}");
        assert_eq!(sha256(&text).len(), 64);
    }

    #[test]
    fn names() {
        let reference = parse_name("github/admins").unwrap();
        assert_eq!(name(&reference), "github/admins");
        for bad in ["github", "/admins", "github/", "a/b/c"] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }
}
