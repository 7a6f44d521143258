//! PATCH engine tests: RFC 7644 semantics, real Okta and Entra request sequences, errors,
//! and the PATCH path grammar.

use super::*;
use crate::scim::error::ScimType;
use crate::scim::filter::AttrPath;
use serde_json::json;

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const USER_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

fn user() -> Value {
    json!({
        "schemas": [USER_URN],
        "id": "u-1",
        "userName": "bjensen@example.com",
        "displayName": "Babs",
        "title": "Guide",
        "active": true,
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "emails": [
            {"value": "b@work.example", "type": "work", "primary": true},
            {"value": "b@home.example", "type": "home"}
        ],
        "meta": {"resourceType": "User", "created": "2024-01-01T00:00:00Z", "version": "W/\"1\""}
    })
}

fn bare_user() -> Value {
    json!({"schemas": [USER_URN], "id": "u-2", "userName": "ann@example.com", "meta": {"resourceType": "User"}})
}

fn group() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g-1",
        "displayName": "Engineering",
        "members": [{"value": "u0", "display": "zero@x"}],
        "meta": {"resourceType": "Group"}
    })
}

fn ops(v: Value) -> Vec<PatchOp> {
    serde_json::from_value(v).expect("test operations deserialize")
}

fn patch(mut resource: Value, kind: ResourceKind, v: Value) -> Result<Value, ScimError> {
    apply(&mut resource, &ops(v), kind)?;
    Ok(resource)
}

fn patch_user(resource: Value, v: Value) -> Value {
    patch(resource, ResourceKind::User, v).unwrap_or_else(|e| panic!("{e}"))
}

fn patch_group(v: Value) -> Value {
    patch(group(), ResourceKind::Group, v).unwrap_or_else(|e| panic!("{e}"))
}

fn member_ids(g: &Value) -> Vec<&str> {
    g["members"].as_array().map_or_else(Vec::new, |m| {
        m.iter().filter_map(|x| x["value"].as_str()).collect()
    })
}

#[test]
fn request_envelope() {
    let body = json!({"schemas": [PATCH_OP_URN], "Operations": [{"op": "Replace", "path": "active", "value": false}]});
    let req: PatchRequest = serde_json::from_value(body).unwrap();
    assert_eq!(validate_request(&req), Ok(()));
    let lower: PatchRequest = serde_json::from_value(
        json!({"schemas": [PATCH_OP_URN], "operations": [{"op": "remove", "path": "title"}]}),
    )
    .unwrap();
    assert_eq!(lower.operations.len(), 1);
    assert_eq!(validate_request(&lower), Ok(()));

    let err = |v: Value| {
        validate_request(&serde_json::from_value(v).unwrap())
            .unwrap_err()
            .scim_type
    };
    assert_eq!(
        err(json!({"Operations": [{"op": "add", "value": {}}]})),
        Some(ScimType::InvalidSyntax)
    );
    assert_eq!(
        err(json!({"schemas": ["urn:x"], "Operations": [{"op": "add"}]})),
        Some(ScimType::InvalidSyntax)
    );
    assert_eq!(
        err(json!({"schemas": [PATCH_OP_URN], "Operations": []})),
        Some(ScimType::InvalidValue)
    );
    assert_eq!(
        err(json!({"schemas": [PATCH_OP_URN]})),
        Some(ScimType::InvalidValue)
    );
    assert_eq!(
        err(json!({"schemas": [PATCH_OP_URN], "Operations": [{"op": "merge"}]})),
        Some(ScimType::InvalidSyntax)
    );
}

#[test]
fn op_names_parse_case_insensitively() {
    for (name, want) in [
        ("add", Some(OpKind::Add)),
        ("Add", Some(OpKind::Add)),
        ("ADD", Some(OpKind::Add)),
        ("remove", Some(OpKind::Remove)),
        ("Remove", Some(OpKind::Remove)),
        ("replace", Some(OpKind::Replace)),
        ("Replace", Some(OpKind::Replace)),
        (" REPLACE ", Some(OpKind::Replace)),
        ("update", None),
        ("", None),
        ("add;", None),
    ] {
        assert_eq!(OpKind::parse(name).ok(), want, "{name}");
    }
}

#[test]
fn okta_user_sequences() {
    // Deactivate.
    let u = patch_user(
        user(),
        json!([{"op": "replace", "value": {"active": false}}]),
    );
    assert_eq!(u["active"], json!(false));
    // Okta echoes id/schemas/meta in path-less replaces: ignored.
    let u = patch_user(
        user(),
        json!([{"op": "replace", "value": {"id": "u-1", "schemas": [USER_URN], "meta": {}, "active": false, "name.givenName": "Barb"}}]),
    );
    assert_eq!(
        (u["active"].clone(), u["name"]["givenName"].clone()),
        (json!(false), json!("Barb"))
    );
    assert_eq!(u["meta"], user()["meta"]);
    let u = patch_user(
        user(),
        json!([{"op": "replace", "path": "userName", "value": "new@example.com"}]),
    );
    assert_eq!(u["userName"], json!("new@example.com"));
}

#[test]
fn okta_group_push() {
    let add =
        json!([{"op": "add", "path": "members", "value": [{"value": "u1", "display": "a@x"}]}]);
    let g = patch_group(add.clone());
    assert_eq!(member_ids(&g), vec!["u0", "u1"]);
    assert_eq!(g["members"][1], json!({"value": "u1", "display": "a@x"}));
    // Re-sent add does not duplicate, even with a different display.
    let mut g2 = g.clone();
    apply(
        &mut g2,
        &ops(json!([{"op": "add", "path": "members", "value": [{"value": "u1"}]}])),
        ResourceKind::Group,
    )
    .unwrap();
    assert_eq!(member_ids(&g2), vec!["u0", "u1"]);

    let remove = json!([{"op": "remove", "path": "members[value eq \"u1\"]"}]);
    let mut g3 = g;
    apply(&mut g3, &ops(remove.clone()), ResourceKind::Group).unwrap();
    assert_eq!(member_ids(&g3), vec!["u0"]);
    // Okta re-sends removals: matching nothing succeeds.
    apply(&mut g3, &ops(remove), ResourceKind::Group).unwrap();
    assert_eq!(member_ids(&g3), vec!["u0"]);

    let g = patch_group(json!([{"op": "replace", "path": "displayName", "value": "Eng"}]));
    assert_eq!(g["displayName"], json!("Eng"));
    let g = patch_group(json!([{"op": "replace", "value": {"id": "g-1", "displayName": "Eng2"}}]));
    assert_eq!(g["displayName"], json!("Eng2"));
}

#[test]
fn entra_user_sequences() {
    // Values are kept as given; normalization happens elsewhere.
    let u = patch_user(
        user(),
        json!([{"op": "Replace", "path": "active", "value": "False"}]),
    );
    assert_eq!(u["active"], json!("False"));

    let u = patch_user(
        user(),
        json!([{"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "n@x"}]),
    );
    assert_eq!(
        u["emails"][0],
        json!({"value": "n@x", "type": "work", "primary": true})
    );
    assert_eq!(u["emails"].as_array().map(Vec::len), Some(2));

    // No work email yet: Entra's Add / Replace creates one.
    for op in ["Add", "Replace"] {
        let u = patch_user(
            bare_user(),
            json!([{"op": op, "path": "emails[type eq \"work\"].value", "value": "a@b.c"}]),
        );
        assert_eq!(
            u["emails"],
            json!([{"type": "work", "value": "a@b.c"}]),
            "{op}"
        );
    }

    let u = patch_user(
        bare_user(),
        json!([{"op": "Add", "path": "name.givenName", "value": "Ann"}]),
    );
    assert_eq!(u["name"], json!({"givenName": "Ann"}));
    let u = patch_user(
        user(),
        json!([{"op": "Add", "path": "name.givenName", "value": "Ann"}]),
    );
    assert_eq!(
        u["name"],
        json!({"givenName": "Ann", "familyName": "Jensen"})
    );

    let u = patch_user(
        bare_user(),
        json!([{"op": "Add", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Main St"},
               {"op": "Replace", "path": "addresses[type eq \"work\"].locality", "value": "Springfield"}]),
    );
    assert_eq!(
        u["addresses"],
        json!([{"type": "work", "streetAddress": "1 Main St", "locality": "Springfield"}])
    );
}

#[test]
fn entra_enterprise_manager_and_extension() {
    let u = patch_user(
        bare_user(),
        json!([{"op": "Add", "path": format!("{ENT}:manager"), "value": "mgrId"}]),
    );
    assert_eq!(u[ENT], json!({"manager": {"value": "mgrId"}}));
    assert_eq!(u["schemas"], json!([USER_URN, ENT]));
    let u = patch_user(
        u,
        json!([{"op": "Replace", "path": format!("{ENT}:manager"), "value": "other"}]),
    );
    assert_eq!(u[ENT]["manager"], json!({"value": "other"}));
    let u = patch_user(
        u,
        json!([{"op": "Replace", "path": format!("{ENT}:manager.value"), "value": "third"}]),
    );
    assert_eq!(u[ENT]["manager"], json!({"value": "third"}));
    let u = patch_user(
        u,
        json!([{"op": "Remove", "path": format!("{ENT}:manager")}]),
    );
    assert_eq!(u[ENT], json!({}));
    assert_eq!(u["schemas"], json!([USER_URN, ENT]));

    let u = patch_user(
        bare_user(),
        json!([{"op": "Add", "value": {format!("{ENT}:employeeNumber"): "42", "title": "Dev"}}]),
    );
    assert_eq!(
        (u[ENT]["employeeNumber"].clone(), u["title"].clone()),
        (json!("42"), json!("Dev"))
    );

    let u = patch_user(
        u,
        json!([{"op": "replace", "value": {ENT: {"department": "R&D", "manager": "m1"}}}]),
    );
    assert_eq!(
        u[ENT],
        json!({"employeeNumber": "42", "department": "R&D", "manager": {"value": "m1"}})
    );
    let u = patch_user(
        u,
        json!([{"op": "add", "path": ENT, "value": {"costCenter": "7"}}]),
    );
    assert_eq!(u[ENT]["costCenter"], json!("7"));
    let u = patch_user(u, json!([{"op": "remove", "path": ENT}]));
    assert!(u.get(ENT).is_none());
    assert_eq!(u["schemas"], json!([USER_URN]));
    // The extension key matches case-insensitively and is not duplicated.
    let mut odd = bare_user();
    odd[ENT.to_uppercase()] = json!({"employeeNumber": "1"});
    let u = patch_user(
        odd,
        json!([{"op": "replace", "path": format!("{ENT}:employeeNumber"), "value": "2"}]),
    );
    assert_eq!(u[ENT.to_uppercase()], json!({"employeeNumber": "2"}));
    assert!(u.get(ENT).is_none());
}

#[test]
fn entra_group_members() {
    let g = patch_group(
        json!([{"op": "Add", "path": "members", "value": [{"value": "u2"}, {"value": "u3"}]}]),
    );
    assert_eq!(member_ids(&g), vec!["u0", "u2", "u3"]);
    let mut g2 = g.clone();
    apply(
        &mut g2,
        &ops(json!([{"op": "Remove", "path": "members", "value": [{"value": "u2"}]}])),
        ResourceKind::Group,
    )
    .unwrap();
    assert_eq!(member_ids(&g2), vec!["u0", "u3"]);
    // Member ids are caseExact.
    apply(
        &mut g2,
        &ops(json!([{"op": "Remove", "path": "members", "value": [{"value": "U3"}]}])),
        ResourceKind::Group,
    )
    .unwrap();
    assert_eq!(member_ids(&g2), vec!["u0", "u3"]);
    apply(
        &mut g2,
        &ops(json!([{"op": "Remove", "path": "members[value eq \"U3\"]"}])),
        ResourceKind::Group,
    )
    .unwrap();
    assert_eq!(member_ids(&g2), vec!["u0", "u3"]);
    // Removing the last members leaves the attribute unassigned.
    apply(&mut g2, &ops(json!([{"op": "Remove", "path": "members", "value": [{"value": "u0"}, {"value": "u3"}]}])), ResourceKind::Group)
        .unwrap();
    assert!(g2.get("members").is_none());
    // Remove without a value drops all members.
    let g = patch_group(json!([{"op": "remove", "path": "members"}]));
    assert!(g.get("members").is_none());
    // Replace sets the whole list (deduplicated by value); a lone object is wrapped.
    let g = patch_group(
        json!([{"op": "replace", "path": "members", "value": [{"value": "a"}, {"value": "a"}, {"value": "b"}]}]),
    );
    assert_eq!(member_ids(&g), vec!["a", "b"]);
    let g = patch_group(json!([{"op": "add", "path": "members", "value": {"value": "solo"}}]));
    assert_eq!(member_ids(&g), vec!["u0", "solo"]);
    let mut empty = group();
    empty.as_object_mut().map(|o| o.remove("members"));
    let g = patch(
        empty,
        ResourceKind::Group,
        json!([{"op": "add", "path": "members", "value": {"value": "x"}}]),
    )
    .unwrap();
    assert_eq!(g["members"], json!([{"value": "x"}]));
}

#[test]
fn add_and_replace_semantics() {
    let new_email = json!({"value": "c@x", "type": "other", "primary": true});
    let u = patch_user(
        user(),
        json!([{"op": "add", "path": "emails", "value": [new_email, {"value": "b@home.example", "type": "home"}]}]),
    );
    let emails = u["emails"].as_array().cloned().unwrap_or_default();
    assert_eq!(emails.len(), 3, "exact duplicate skipped");
    assert_eq!(
        emails[0]["primary"],
        json!(false),
        "only one primary remains"
    );
    assert_eq!(emails[2]["primary"], json!(true));

    let u = patch_user(
        user(),
        json!([{"op": "replace", "path": "emails", "value": [{"value": "only@x"}]}]),
    );
    assert_eq!(u["emails"], json!([{"value": "only@x"}]));
    // Replacing a complex attribute keeps unspecified sub-attributes (RFC 7644 §3.5.2.3).
    let u = patch_user(
        user(),
        json!([{"op": "replace", "path": "name", "value": {"givenName": "B"}}]),
    );
    assert_eq!(u["name"], json!({"givenName": "B", "familyName": "Jensen"}));
    let u = patch_user(
        user(),
        json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "h@x"}}]),
    );
    assert_eq!(u["emails"][1], json!({"value": "h@x"}));
    let u = patch_user(
        user(),
        json!([{"op": "add", "path": "emails[type eq \"home\"]", "value": {"display": "Home"}}]),
    );
    assert_eq!(
        u["emails"][1],
        json!({"value": "b@home.example", "type": "home", "display": "Home"})
    );
    let u = patch_user(
        user(),
        json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]),
    );
    assert_eq!(
        (
            u["emails"][0]["primary"].clone(),
            u["emails"][1]["primary"].clone()
        ),
        (json!(false), json!(true))
    );
    let u = patch_user(
        bare_user(),
        json!([{"op": "add", "path": "phoneNumbers[type eq \"mobile\" and primary eq true]", "value": {"value": "+1"}}]),
    );
    assert_eq!(
        u["phoneNumbers"],
        json!([{"type": "mobile", "primary": true, "value": "+1"}])
    );
    // Path-less add appends to multi-valued attributes and merges complex ones.
    let u = patch_user(
        user(),
        json!([{"op": "add", "value": {"emails": [{"value": "d@x"}], "name": {"middleName": "M"}}}]),
    );
    assert_eq!(u["emails"].as_array().map(Vec::len), Some(3));
    assert_eq!(u["name"]["middleName"], json!("M"));
    assert_eq!(u["name"]["givenName"], json!("Barbara"));
    let u = patch_user(
        user(),
        json!([{"op": "replace", "value": {"emails[type eq \"work\"].value": "w@x"}}]),
    );
    assert_eq!(u["emails"][0]["value"], json!("w@x"));
    let u = patch_user(
        user(),
        json!([{"op": "add", "value": {"urn:ietf:params:scim:schemas:core:2.0:User": {"nickName": "B"}}}]),
    );
    assert_eq!(u["nickName"], json!("B"));
    let u = patch_user(
        user(),
        json!([{"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:title", "value": "Boss"}]),
    );
    assert_eq!(u["title"], json!("Boss"));
    // Sub-attribute without a filter applies to every element.
    let u = patch_user(
        user(),
        json!([{"op": "replace", "path": "emails.display", "value": "E"}]),
    );
    assert!(
        u["emails"]
            .as_array()
            .is_some_and(|e| e.iter().all(|x| x["display"] == json!("E")))
    );
}

#[test]
fn key_casing_is_preserved() {
    let u = patch_user(
        user(),
        json!([{"op": "replace", "path": "DISPLAYNAME", "value": "X"}]),
    );
    assert_eq!(u["displayName"], json!("X"));
    assert!(u.get("DISPLAYNAME").is_none());
    let u = patch_user(
        user(),
        json!([{"op": "replace", "value": {"UserName": "y", "NickName": "n"}}]),
    );
    assert_eq!(
        (u["userName"].clone(), u["NickName"].clone()),
        (json!("y"), json!("n"))
    );
    assert!(u.get("UserName").is_none());
    let u = patch_user(
        user(),
        json!([{"op": "replace", "path": "Name.GivenName", "value": "G"}]),
    );
    assert_eq!(u["name"]["givenName"], json!("G"));
    let u = patch_user(
        user(),
        json!([{"op": "remove", "path": "EMAILS[TYPE EQ \"HOME\"]"}]),
    );
    assert_eq!(u["emails"].as_array().map(Vec::len), Some(1));
}

#[test]
fn remove_semantics() {
    let u = patch_user(user(), json!([{"op": "remove", "path": "title"}]));
    assert!(u.get("title").is_none());
    let u = patch_user(
        user(),
        json!([{"op": "remove", "path": "nonexistent"}, {"op": "remove", "path": "name.middleName"}]),
    );
    assert_eq!(u, user());
    let u = patch_user(user(), json!([{"op": "remove", "path": "name.givenName"}]));
    assert_eq!(u["name"], json!({"familyName": "Jensen"}));
    let u = patch_user(
        user(),
        json!([{"op": "remove", "path": "emails[type eq \"home\"]"}]),
    );
    assert_eq!(
        u["emails"],
        json!([{"value": "b@work.example", "type": "work", "primary": true}])
    );
    let u = patch_user(
        user(),
        json!([{"op": "remove", "path": "emails[type eq \"work\"].primary"}]),
    );
    assert!(u["emails"][0].get("primary").is_none());
    let u = patch_user(user(), json!([{"op": "remove", "path": "emails[type pr]"}]));
    assert!(u.get("emails").is_none());
    let u = patch_user(
        user(),
        json!([{"op": "remove", "path": "emails", "value": [{"value": "b@home.example"}]}]),
    );
    assert_eq!(u["emails"].as_array().map(Vec::len), Some(1));
    let u = patch_user(
        user(),
        json!([{"op": "remove", "path": "phoneNumbers[type eq \"x\"]"}, {"op": "remove", "path": format!("{ENT}:manager")}]),
    );
    assert_eq!(u, user());
}

#[test]
fn sequences_apply_in_order() {
    let u = patch_user(
        bare_user(),
        json!([
            {"op": "add", "path": "emails", "value": [{"value": "a@x", "type": "work"}]},
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x"},
            {"op": "add", "path": "title", "value": "T"},
            {"op": "remove", "path": "title"}
        ]),
    );
    assert_eq!(u["emails"], json!([{"value": "b@x", "type": "work"}]));
    assert!(u.get("title").is_none());
}

#[test]
fn errors() {
    let user_cases: Vec<(Value, ScimType)> = vec![
        (
            json!([{"op": "merge", "path": "title", "value": "x"}]),
            ScimType::InvalidSyntax,
        ),
        (json!([{"op": "remove"}]), ScimType::NoTarget),
        (json!([{"op": "remove", "path": ""}]), ScimType::NoTarget),
        (
            json!([{"op": "remove", "path": "members[value eq"}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "remove", "path": "emails[type eq \"work\""}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "add", "path": "emails[type eq \"work\"]x", "value": "a"}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "add", "path": "bad path!", "value": "a"}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "add", "path": "name.givenName.x", "value": "a"}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "add", "path": "userName.x", "value": "a"}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "add", "path": "userName[value eq \"a\"]", "value": {}}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "add", "path": "urn:example:custom:1.0:Thing:x", "value": "a"}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "add", "path": "urn:ietf:params:scim:schemas:core:2.0:Group:displayName", "value": "a"}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "replace", "path": "id", "value": "other"}]),
            ScimType::Mutability,
        ),
        (
            json!([{"op": "remove", "path": "id"}]),
            ScimType::Mutability,
        ),
        (
            json!([{"op": "replace", "path": "meta.created", "value": "x"}]),
            ScimType::Mutability,
        ),
        (
            json!([{"op": "replace", "path": "schemas", "value": []}]),
            ScimType::Mutability,
        ),
        (
            json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
            ScimType::Mutability,
        ),
        (
            json!([{"op": "replace", "value": {"id": "other"}}]),
            ScimType::Mutability,
        ),
        (
            json!([{"op": "replace", "value": {"groups": []}}]),
            ScimType::Mutability,
        ),
        (
            json!([{"op": "replace", "path": "emails[value co \"nobody\"]", "value": {"value": "x"}}]),
            ScimType::NoTarget,
        ),
        (
            json!([{"op": "replace", "path": "emails[type eq \"x\" or type eq \"y\"].value", "value": "x"}]),
            ScimType::NoTarget,
        ),
        (
            json!([{"op": "add", "path": "emails[not (type eq \"work\") and type eq \"z\"].value", "value": "x"}]),
            ScimType::NoTarget,
        ),
        (
            json!([{"op": "add", "path": "title"}]),
            ScimType::InvalidValue,
        ),
        (
            json!([{"op": "replace", "path": "title", "value": null}]),
            ScimType::InvalidValue,
        ),
        (
            json!([{"op": "replace", "value": false}]),
            ScimType::InvalidValue,
        ),
        (json!([{"op": "add"}]), ScimType::InvalidValue),
        (
            json!([{"op": "remove", "path": "emails", "value": {"value": "b@home.example"}}]),
            ScimType::InvalidValue,
        ),
        (
            json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": "x"}]),
            ScimType::InvalidValue,
        ),
        (
            json!([{"op": "add", "path": ENT, "value": "x"}]),
            ScimType::InvalidValue,
        ),
    ];
    for (v, want) in user_cases {
        let err = patch(user(), ResourceKind::User, v.clone()).unwrap_err();
        assert_eq!(err.scim_type, Some(want), "{v}: {}", err.detail);
        assert!(err.detail.starts_with("Operations[0]: "), "{}", err.detail);
    }
    let group_cases: Vec<(Value, ScimType)> = vec![
        (
            json!([{"op": "remove", "path": "members", "value": {"value": "u0"}}]),
            ScimType::InvalidValue,
        ),
        (
            json!([{"op": "remove", "path": "members", "value": "u0"}]),
            ScimType::InvalidValue,
        ),
        (
            json!([{"op": "add", "path": format!("{ENT}:manager"), "value": "m"}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "add", "path": ENT, "value": {}}]),
            ScimType::InvalidPath,
        ),
        (
            json!([{"op": "replace", "path": "id", "value": "x"}]),
            ScimType::Mutability,
        ),
    ];
    for (v, want) in group_cases {
        let err = patch(group(), ResourceKind::Group, v.clone()).unwrap_err();
        assert_eq!(err.scim_type, Some(want), "{v}: {}", err.detail);
    }
    let second = patch(
        user(),
        ResourceKind::User,
        json!([{"op": "add", "path": "title", "value": "x"}, {"op": "bogus"}]),
    );
    assert!(second.unwrap_err().detail.starts_with("Operations[1]: "));
    assert!(apply(&mut json!([]), &[], ResourceKind::User).is_err());
}

#[test]
fn patch_paths_parse() {
    let attr = |urn: Option<&str>, name: &str, sub: Option<&str>| AttrPath {
        urn: urn.map(str::to_owned),
        name: name.to_owned(),
        sub: sub.map(str::to_owned),
    };
    let (mgr, mgr_value) = (format!("{ENT}:manager"), format!("{ENT}:manager.value"));
    let cases: Vec<(&str, AttrPath, Option<&str>, Option<&str>)> = vec![
        ("active", attr(None, "active", None), None, None),
        (
            "name.givenName",
            attr(None, "name", Some("givenName")),
            None,
            None,
        ),
        (" userName ", attr(None, "userName", None), None, None),
        (
            "emails[type eq \"work\"].value",
            attr(None, "emails", None),
            Some("type eq \"work\""),
            Some("value"),
        ),
        (
            "members[value eq \"2819c223\"]",
            attr(None, "members", None),
            Some("value eq \"2819c223\""),
            None,
        ),
        (
            "members[value eq \"a]b\"]",
            attr(None, "members", None),
            Some("value eq \"a]b\""),
            None,
        ),
        (&mgr, attr(Some(ENT), "manager", None), None, None),
        (
            &mgr_value,
            attr(Some(ENT), "manager", Some("value")),
            None,
            None,
        ),
        (
            "addresses[type eq \"work\"].streetAddress",
            attr(None, "addresses", None),
            Some("type eq \"work\""),
            Some("streetAddress"),
        ),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:emails[primary eq true].value",
            attr(Some(USER_URN), "emails", None),
            Some("primary eq true"),
            Some("value"),
        ),
    ];
    for (input, want_attr, want_filter, want_sub) in cases {
        let pp = parse_patch_path(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(pp.attr, want_attr, "{input}");
        assert_eq!(
            pp.filter,
            want_filter.map(|f| crate::scim::filter::parse(f).unwrap()),
            "{input}"
        );
        assert_eq!(pp.sub.as_deref(), want_sub, "{input}");
        assert_eq!(
            parse_patch_path(&pp.to_string()),
            Ok(pp.clone()),
            "{input} round trip"
        );
    }
    let long = format!("emails[value eq \"{}\"]", "x".repeat(9000));
    let deep = format!("emails[{}type pr{}]", "(".repeat(200), ")".repeat(200));
    let bad = [
        "",
        "   ",
        "members[value eq",
        "members[value eq \"x\"",
        "members]",
        "members[]",
        "members[value eq \"x\"]]",
        "members[value eq \"x\"]value",
        "members[value eq \"x\"].",
        "members[value eq \"x\"].a.b",
        "members[value eq \"x\"][type pr]",
        "name.givenName[value pr]",
        "[value pr]",
        "emails [type eq \"work\"]",
        "a.b.c",
        "1abc",
        "urn:x",
        "üser",
        &long,
        &deep,
    ];
    for input in bad {
        let err = parse_patch_path(input).unwrap_err();
        assert_eq!(
            err.scim_type,
            Some(ScimType::InvalidPath),
            "{input:.60}: {}",
            err.detail
        );
    }
}
