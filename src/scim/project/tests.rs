//! Tests of `attributes` / `excludedAttributes` projection.

use serde_json::{Value, json};

use super::*;
use crate::scim::schema::{GROUP_SCHEMA, USER_SCHEMA};

const ENT: &str = ENTERPRISE_USER_SCHEMA;

fn user() -> Value {
    json!({
        "schemas": [USER_SCHEMA, ENT],
        "id": "2819c223",
        "externalId": "701984",
        "userName": "bjensen@example.com",
        "name": { "givenName": "Barbara", "familyName": "Jensen" },
        "displayName": "Babs Jensen",
        "active": true,
        "password": "must never leave",
        "emails": [
            { "value": "bjensen@example.com", "type": "work", "primary": true },
            { "value": "babs@jensen.org", "type": "home" }
        ],
        "groups": [{ "value": "g1", "display": "Eng" }],
        "meta": {
            "resourceType": "User",
            "location": "https://b/Users/2819c223",
            "version": "W/\"1\""
        },
        ENT: {
            "department": "Tour Operations",
            "manager": { "value": "m1", "displayName": "John" }
        }
    })
}

fn group() -> Value {
    json!({
        "schemas": [GROUP_SCHEMA],
        "id": "e9e30dba",
        "displayName": "Tour Guides",
        "members": [{ "value": "2819c223", "display": "Babs Jensen", "type": "User" }],
        "meta": { "resourceType": "Group", "location": "https://b/Groups/e9e30dba" }
    })
}

fn projected(mut resource: Value, kind: ResourceKind, attributes: &str, excluded: &str) -> Value {
    project(
        &mut resource,
        kind,
        &parse_attr_list(attributes),
        &parse_attr_list(excluded),
    );
    resource
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[test]
fn parse_attr_list_trims_and_skips_empties() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        (" , ,", &[]),
        ("userName", &["userName"]),
        (
            " userName , name.givenName ,,emails ",
            &["userName", "name.givenName", "emails"],
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department,meta",
            &[
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
                "meta",
            ],
        ),
    ];
    for (raw, want) in cases {
        assert_eq!(
            parse_attr_list(raw),
            want.iter().map(|s| s.to_string()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn default_projection_drops_only_never_returned() {
    let mut expected = user();
    expected.as_object_mut().unwrap().remove("password");
    assert_eq!(projected(user(), ResourceKind::User, "", ""), expected);
    assert_eq!(projected(group(), ResourceKind::Group, "", ""), group());
}

/// What `attributes` leaves: `schemas` (with the enterprise URN when the extension survives),
/// `id`, and the given members.
fn minimal(extra: Value) -> Value {
    let mut out = json!({ "schemas": [USER_SCHEMA], "id": "2819c223" });
    let extra = extra.as_object().unwrap().clone();
    if extra.contains_key(ENT) {
        out["schemas"] = json!([USER_SCHEMA, ENT]);
    }
    out.as_object_mut().unwrap().extend(extra);
    out
}

#[test]
fn attributes_variants() {
    let user_name = json!({ "userName": "bjensen@example.com" });
    let department = json!({ ENT: { "department": "Tour Operations" } });
    let cases: &[(&str, Value)] = &[
        ("userName", user_name.clone()),
        ("USERNAME", user_name.clone()),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:userName",
            user_name.clone(),
        ),
        ("externalId", json!({ "externalId": "701984" })),
        (
            "name",
            json!({ "name": { "givenName": "Barbara", "familyName": "Jensen" } }),
        ),
        (
            "name.givenName",
            json!({ "name": { "givenName": "Barbara" } }),
        ),
        (
            "Name.GivenName",
            json!({ "name": { "givenName": "Barbara" } }),
        ),
        (
            "emails.value",
            json!({ "emails": [
                { "value": "bjensen@example.com" },
                { "value": "babs@jensen.org" }
            ] }),
        ),
        (
            "meta.location,displayName",
            json!({
                "displayName": "Babs Jensen",
                "meta": { "location": "https://b/Users/2819c223" }
            }),
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            department.clone(),
        ),
        ("department", department.clone()),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user:manager.value",
            json!({ ENT: { "manager": { "value": "m1" } } }),
        ),
        (ENT, json!({ ENT: user()[ENT].clone() })),
        ("password", json!({})),
        ("id", json!({})),
        ("nickName,name.middleName", json!({})),
        ("urn:example:other:attr", json!({})),
    ];
    for (attributes, extra) in cases {
        let out = projected(user(), ResourceKind::User, attributes, "");
        assert_eq!(out, minimal(extra.clone()), "attributes={attributes}");
    }
}

#[test]
fn meta_is_dropped_unless_requested() {
    let out = projected(user(), ResourceKind::User, "userName", "");
    assert!(out.get("meta").is_none());
    let out = projected(user(), ResourceKind::User, "userName,Meta", "");
    assert_eq!(out["meta"], user()["meta"]);
}

#[test]
fn excluded_attributes_variants() {
    let all = keys(&projected(user(), ResourceKind::User, "", ""))
        .into_iter()
        .map(str::to_owned)
        .collect::<Vec<_>>();
    let without = |gone: &[&str]| -> Vec<String> {
        all.iter()
            .filter(|k| !gone.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    let cases: &[(&str, Vec<String>)] = &[
        ("name", without(&["name"])),
        ("NAME,emails", without(&["name", "emails"])),
        ("meta,groups", without(&["meta", "groups"])),
        ("id", without(&[])),
        ("schemas", without(&[])),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:displayName",
            without(&["displayName"]),
        ),
        (ENT, without(&[ENT])),
    ];
    for (excluded, want) in cases {
        let out = projected(user(), ResourceKind::User, "", excluded);
        assert_eq!(keys(&out), *want, "excludedAttributes={excluded}");
    }
}

#[test]
fn excluded_sub_attributes() {
    let out = projected(user(), ResourceKind::User, "", "name.givenName,emails.type");
    assert_eq!(out["name"], json!({ "familyName": "Jensen" }));
    assert_eq!(
        out["emails"],
        json!([{ "value": "bjensen@example.com", "primary": true }, { "value": "babs@jensen.org" }])
    );

    let out = projected(user(), ResourceKind::User, "", "department,manager");
    assert!(out.get(ENT).is_none());
    assert_eq!(out["schemas"], json!([USER_SCHEMA]));

    let out = projected(user(), ResourceKind::User, "", "manager.displayName");
    assert_eq!(
        out[ENT],
        json!({ "department": "Tour Operations", "manager": { "value": "m1" } })
    );
}

#[test]
fn attributes_win_over_excluded_attributes() {
    let out = projected(user(), ResourceKind::User, "userName", "userName");
    let want =
        json!({ "schemas": [USER_SCHEMA], "id": "2819c223", "userName": "bjensen@example.com" });
    assert_eq!(out, want);
}

#[test]
fn group_projection() {
    let out = projected(group(), ResourceKind::Group, "", "members");
    assert_eq!(keys(&out), ["displayName", "id", "meta", "schemas"]);
    let out = projected(group(), ResourceKind::Group, "displayName", "");
    assert_eq!(
        out,
        json!({ "schemas": [GROUP_SCHEMA], "id": "e9e30dba", "displayName": "Tour Guides" })
    );
    let out = projected(group(), ResourceKind::Group, "members.value", "");
    assert_eq!(out["members"], json!([{ "value": "2819c223" }]));
    // The enterprise URN means nothing for groups.
    let out = projected(group(), ResourceKind::Group, ENT, "");
    assert_eq!(out, json!({ "schemas": [GROUP_SCHEMA], "id": "e9e30dba" }));
}

#[test]
fn non_objects_are_left_alone() {
    let mut v = json!(["not", "a", "resource"]);
    project(&mut v, ResourceKind::User, &["userName".to_owned()], &[]);
    assert_eq!(v, json!(["not", "a", "resource"]));
}
