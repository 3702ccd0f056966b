//! ProtoJSON in and out of the generated prost types, through prost-reflect's DynamicMessage over
//! `provisiond::pb::FILE_DESCRIPTOR_SET`, and the small generators the golden cases use to
//! describe large inputs compactly.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::OnceLock;

use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use serde_json::Value;

/// The package of every message named here.
pub const PACKAGE: &str = "provision.v1";

/// The descriptors of `provision.v1` (and the well-known types it imports).
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(provisiond::pb::FILE_DESCRIPTOR_SET)
            .expect("provisiond::pb::FILE_DESCRIPTOR_SET decodes")
    })
}

/// The descriptor of `provision.v1.<name>`.
pub fn message_descriptor(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(&format!("{PACKAGE}.{name}"))
        .unwrap_or_else(|| panic!("no message {PACKAGE}.{name}"))
}

/// Parses ProtoJSON (unknown fields refused) into a message of type `provision.v1.<name>`.
pub fn dynamic_from_json(name: &str, json: &Value) -> Result<DynamicMessage, String> {
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(message_descriptor(name), json, &options)
        .map_err(|error| format!("not a valid {PACKAGE}.{name} in ProtoJSON: {error}"))
}

/// ProtoJSON into the generated prost type `T`, which must be `provision.v1.<name>`.
pub fn from_json<T: Message + Default>(name: &str, json: &Value) -> Result<T, String> {
    let dynamic = dynamic_from_json(name, json)?;
    T::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|error| format!("{PACKAGE}.{name} does not decode as the prost type: {error}"))
}

/// A prost message as a DynamicMessage of type `provision.v1.<name>`.
pub fn to_dynamic<T: Message>(name: &str, message: &T) -> DynamicMessage {
    DynamicMessage::decode(message_descriptor(name), message.encode_to_vec().as_slice())
        .unwrap_or_else(|error| panic!("{PACKAGE}.{name} round-trips: {error}"))
}

/// A prost message as ProtoJSON (lowerCamelCase names, default values left out).
pub fn to_json<T: Message>(name: &str, message: &T) -> Value {
    serde_json::to_value(to_dynamic(name, message)).expect("ProtoJSON serializes")
}

/// Expands the generators of a case file, so that large inputs stay readable there:
///
/// - `{"$repeat": {"count": N, "item": X}}` as an element of a list stands for N copies of X,
///   in place; `{{index}}` in a string of X becomes the copy's index (0, 1, …).
/// - `{"$string": {"repeat": "ab", "count": N, "prefix": "…", "suffix": "…"}}` anywhere stands
///   for the string prefix + "ab" × N + suffix (prefix and suffix optional).
pub fn expand(value: &Value) -> Result<Value, String> {
    match value {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match generator(item, "$repeat") {
                    Some(spec) => {
                        let count = count_of(spec, "$repeat")?;
                        let template = spec.get("item").ok_or("$repeat needs an \"item\"")?;
                        let template = expand(template)?;
                        for index in 0..count {
                            out.push(substitute_index(&template, index));
                        }
                    }
                    None => out.push(expand(item)?),
                }
            }
            Ok(Value::Array(out))
        }
        Value::Object(fields) => {
            if let Some(spec) = generator(value, "$string") {
                let count = count_of(spec, "$string")?;
                let text = |key: &str| spec.get(key).and_then(Value::as_str).unwrap_or("");
                let repeat = spec
                    .get("repeat")
                    .and_then(Value::as_str)
                    .ok_or("$string needs a \"repeat\" string")?;
                return Ok(Value::String(format!(
                    "{}{}{}",
                    text("prefix"),
                    repeat.repeat(count),
                    text("suffix")
                )));
            }
            if generator(value, "$repeat").is_some() {
                return Err("$repeat stands only as an element of a list".to_owned());
            }
            let mut out = serde_json::Map::with_capacity(fields.len());
            for (key, field) in fields {
                out.insert(key.clone(), expand(field)?);
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

fn generator<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
    let fields = value.as_object()?;
    if fields.len() == 1 {
        fields.get(name)
    } else {
        None
    }
}

fn count_of(spec: &Value, name: &str) -> Result<usize, String> {
    spec.get("count")
        .and_then(Value::as_u64)
        .map(|count| count as usize)
        .ok_or_else(|| format!("{name} needs a \"count\""))
}

fn substitute_index(value: &Value, index: usize) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace("{{index}}", &index.to_string())),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| substitute_index(item, index))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, field)| (key.clone(), substitute_index(field, index)))
                .collect(),
        ),
        other => other.clone(),
    }
}
