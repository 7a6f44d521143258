//! Domain records → SCIM JSON (id, read-only `groups`/`members`, `meta`).

use serde_json::{Map, Value, json};

use super::etag;
use crate::domain::clock::rfc3339;
use crate::domain::directory::{Group, GroupRef, Member, User};

/// The full SCIM representation of a user.
pub fn user(u: &User, groups: &[GroupRef], base: &str) -> Value {
    let mut obj = u.attributes.as_object().cloned().unwrap_or_else(Map::new);
    obj.insert("id".into(), Value::String(u.id.to_string()));
    obj.insert(
        "groups".into(),
        Value::Array(
            groups
                .iter()
                .map(|g| {
                    json!({
                        "value": g.group_id.as_str(),
                        "display": g.display,
                        "$ref": format!("{base}/Groups/{}", g.group_id),
                        "type": "direct",
                    })
                })
                .collect(),
        ),
    );
    obj.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": rfc3339(u.created_ms),
            "lastModified": rfc3339(u.modified_ms),
            "location": user_location(base, u),
            "version": etag(u.version),
        }),
    );
    Value::Object(obj)
}

/// Where a user lives.
pub fn user_location(base: &str, u: &User) -> String {
    format!("{base}/Users/{}", u.id)
}

/// The full SCIM representation of a group.
pub fn group(g: &Group, members: &[Member], base: &str) -> Value {
    let mut obj = g.attributes.as_object().cloned().unwrap_or_else(Map::new);
    obj.insert("id".into(), Value::String(g.id.to_string()));
    obj.insert(
        "members".into(),
        Value::Array(
            members
                .iter()
                .map(|m| {
                    // RFC 7643's Group schema has no `members.display`; clients that send
                    // one get back exactly the RFC attributes.
                    json!({
                        "value": m.user_id.as_str(),
                        "$ref": format!("{base}/Users/{}", m.user_id),
                        "type": "User",
                    })
                })
                .collect(),
        ),
    );
    obj.insert(
        "meta".into(),
        json!({
            "resourceType": "Group",
            "created": rfc3339(g.created_ms),
            "lastModified": rfc3339(g.modified_ms),
            "location": group_location(base, g),
            "version": etag(g.version),
        }),
    );
    Value::Object(obj)
}

/// Where a group lives.
pub fn group_location(base: &str, g: &Group) -> String {
    format!("{base}/Groups/{}", g.id)
}
