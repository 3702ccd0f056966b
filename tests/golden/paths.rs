//! Resolves the field path of a violation (`policy.provision_policy.multi_step.provision_steps[2]
//! .webhook.webhook_id`, `….account.config["home dir"]`) against the request it was found in, as
//! a DynamicMessage: proto field names, list indices, and the keys of a google.protobuf.Struct
//! (bare when they are identifiers, JSON-quoted otherwise), as `src/policy/path.rs` writes them.
//!
//! Every segment before the last must be present (a set message, an index within its list, a
//! key of its map), except that an unset singular message outside a oneof reads as its empty
//! default, as in proto3. The last one may name an unset field, since REQUIRED points at what
//! is missing, but not an unset member of a oneof: no rule points at a branch not taken.
#![allow(dead_code)] // each test binary uses a different part of this module

use prost_reflect::{DynamicMessage, Kind, MapKey, ReflectMessage, Value};
use provisiond::policy::path::{Segment, parse};

const STRUCT: &str = "google.protobuf.Struct";

/// `Ok` when `path` names a field of `root`, else why not.
pub fn resolve(root: &DynamicMessage, path: &str) -> Result<(), String> {
    let segments = parse(path).map_err(|error| format!("path {path:?} is malformed: {error}"))?;
    walk(root, &segments).map_err(|error| format!("path {path:?} does not resolve: {error}"))
}

enum Here<'m> {
    Message(&'m DynamicMessage),
    Value(&'m Value),
}

fn walk(root: &DynamicMessage, segments: &[Segment]) -> Result<(), String> {
    let mut here = Here::Message(root);
    for (position, segment) in segments.iter().enumerate() {
        let last = position + 1 == segments.len();
        here = match (here, segment) {
            (Here::Message(message), Segment::Field(name) | Segment::Key(name))
                if message.descriptor().full_name() == STRUCT =>
            {
                // A Struct is addressed as the map it is: `config.email`, `config["a b"]`.
                let entry = message
                    .fields()
                    .find(|(field, _)| field.name() == "fields")
                    .and_then(|(_, map)| map.as_map()?.get(&MapKey::String(name.clone())));
                Here::Value(entry.ok_or_else(|| format!("no key {name:?} in the Struct"))?)
            }
            (Here::Message(message), Segment::Field(name)) => {
                let descriptor = message.descriptor();
                let field = descriptor
                    .get_field_by_name(name)
                    .ok_or_else(|| format!("{} has no field {name}", descriptor.full_name()))?;
                let set = message.fields().find(|(f, _)| *f == field);
                match set {
                    Some((_, value)) => Here::Value(value),
                    None if last && field.containing_oneof().is_none() => return Ok(()),
                    None if last => {
                        return Err(format!("{name} is an unset member of a oneof"));
                    }
                    None => match field.kind() {
                        // proto3 reads an unset message as its default: the service takes a
                        // missing `policy` for an empty resource, whose `policy.entitlement`
                        // is then REQUIRED.
                        Kind::Message(descriptor)
                            if field.containing_oneof().is_none() && !field.is_list() =>
                        {
                            let empty = DynamicMessage::new(descriptor);
                            return walk(&empty, &segments[position + 1..])
                                .map_err(|error| format!("{error} (in the unset {name})"));
                        }
                        _ => return Err(format!("{name} is not set")),
                    },
                }
            }
            (Here::Value(Value::Message(message)), segment) => {
                // Step into the message, then take the segment from there.
                let rest = &segments[position..];
                return walk(message, rest).map_err(|error| {
                    if matches!(segment, Segment::Field(_)) {
                        error
                    } else {
                        format!("{error} (at {segment:?})")
                    }
                });
            }
            (Here::Value(Value::List(items)), Segment::Index(index)) => Here::Value(
                items
                    .get(*index)
                    .ok_or_else(|| format!("index {index} is past the {} elements", items.len()))?,
            ),
            (Here::Value(Value::Map(map)), Segment::Key(key) | Segment::Field(key)) => Here::Value(
                map.get(&MapKey::String(key.clone()))
                    .ok_or_else(|| format!("no key {key:?}"))?,
            ),
            (Here::Message(message), segment @ (Segment::Index(_) | Segment::Key(_))) => {
                return Err(format!(
                    "{segment:?} applied to a {} message",
                    message.descriptor().full_name()
                ));
            }
            (Here::Value(value), segment) => {
                return Err(format!("{segment:?} applied to {}", kind_of(value)));
            }
        };
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Message(_) => "a message",
        Value::String(_) => "a string",
        _ => "a scalar",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_names_indices_and_keys() {
        assert_eq!(
            parse(r#"policy.a_b[12].config["home \"dir\""].x"#).unwrap(),
            vec![
                Segment::Field("policy".into()),
                Segment::Field("a_b".into()),
                Segment::Index(12),
                Segment::Field("config".into()),
                Segment::Key("home \"dir\"".into()),
                Segment::Field("x".into()),
            ]
        );
        for bad in [
            "", ".a", "a..b", "a[", "a[x]", "a[01]", "a[\"x\"", "a b", "a.1b",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
