//! Tests of body normalization against what Okta and Entra actually send.

use serde_json::{Value, json};

use super::*;
use crate::scim::ScimType;

const ENT: &str = ENTERPRISE_USER_SCHEMA;

fn user_err(body: Value) -> ScimError {
    match normalize_user(body) {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

fn group_err(body: Value) -> ScimError {
    match normalize_group(body) {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

#[test]
fn okta_create_user_body() {
    let body = json!({
        "schemas": [USER_SCHEMA],
        "userName": "isaac.brock@example.com",
        "name": { "givenName": "Isaac", "familyName": "Brock" },
        "emails": [{ "primary": true, "value": "isaac.brock@example.com", "type": "work" }],
        "displayName": "Isaac Brock",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [],
        "password": "1mz050nq",
        "active": true
    });
    let expected = json!({
        "schemas": [USER_SCHEMA],
        "userName": "isaac.brock@example.com",
        "name": { "givenName": "Isaac", "familyName": "Brock" },
        "emails": [{ "primary": true, "value": "isaac.brock@example.com", "type": "work" }],
        "displayName": "Isaac Brock",
        "locale": "en-US",
        "externalId": "00ujl29u0le5T6Aj10h7",
        "active": true
    });
    assert_eq!(normalize_user(body).unwrap(), expected);
}

#[test]
fn entra_create_user_body() {
    for (active, manager) in [
        (json!("True"), json!("mgr-42")),
        (json!(true), json!({ "value": "mgr-42" })),
        (
            json!("true"),
            json!({ "Value": "mgr-42", "displayName": "ignored, read-only" }),
        ),
    ] {
        let body = json!({
            "schemas": [USER_SCHEMA, ENT],
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "userName": "Test_User_ab6490ee@contoso.com",
            "active": active,
            "displayName": "Test User",
            "emails": [
                { "primary": true, "type": "work", "value": "Test_User_fd0ea19b@contoso.com" }
            ],
            "meta": { "resourceType": "User" },
            "name": {
                "formatted": "givenName familyName",
                "familyName": "familyName",
                "givenName": "givenName"
            },
            "title": "Engineer",
            ENT: { "department": "R&D", "employeeNumber": "1234", "manager": manager }
        });
        let expected = json!({
            "schemas": [USER_SCHEMA, ENT],
            "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef",
            "userName": "Test_User_ab6490ee@contoso.com",
            "active": true,
            "displayName": "Test User",
            "emails": [
                { "primary": true, "type": "work", "value": "Test_User_fd0ea19b@contoso.com" }
            ],
            "name": {
                "formatted": "givenName familyName",
                "familyName": "familyName",
                "givenName": "givenName"
            },
            "title": "Engineer",
            ENT: { "department": "R&D", "employeeNumber": "1234", "manager": { "value": "mgr-42" } }
        });
        assert_eq!(normalize_user(body).unwrap(), expected);
    }
}

#[test]
fn missing_schemas_is_filled_in() {
    let out = normalize_user(json!({ "userName": "a" })).unwrap();
    assert_eq!(out, json!({ "schemas": [USER_SCHEMA], "userName": "a" }));
    let out = normalize_group(json!({ "displayName": "Eng" })).unwrap();
    assert_eq!(
        out,
        json!({ "schemas": [GROUP_SCHEMA], "displayName": "Eng" })
    );
}

#[test]
fn unknown_schema_urns_are_tolerated_and_not_echoed() {
    let out = normalize_user(json!({
        "schemas": [USER_SCHEMA, "urn:okta:custom:1.0"],
        "userName": "a",
        "urn:okta:custom:1.0": { "x": 1 },
        "nonsense": 3
    }))
    .unwrap();
    assert_eq!(out, json!({ "schemas": [USER_SCHEMA], "userName": "a" }));
}

#[test]
fn key_case_is_canonicalized() {
    let out = normalize_user(json!({
        "SCHEMAS": [USER_SCHEMA],
        "username": "a",
        "NAME": { "GIVENNAME": "Ann", "familyname": "Lee" },
        "Emails": [{ "Value": "a@example.com", "TYPE": "work", "Primary": "TRUE" }],
        "phonenumbers": [{ "value": "+1 555", "type": "mobile" }],
        "X509CERTIFICATES": [{ "VALUE": "TUlJ" }],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": { "DEPARTMENT": "Ops" }
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({
            "schemas": [USER_SCHEMA, ENT],
            "userName": "a",
            "name": { "givenName": "Ann", "familyName": "Lee" },
            "emails": [{ "value": "a@example.com", "type": "work", "primary": true }],
            "phoneNumbers": [{ "value": "+1 555", "type": "mobile" }],
            "x509Certificates": [{ "value": "TUlJ" }],
            ENT: { "department": "Ops" }
        })
    );
}

#[test]
fn urn_prefixed_keys_are_folded() {
    let out = normalize_user(json!({
        "userName": "a",
        "urn:ietf:params:scim:schemas:core:2.0:User:displayName": "A",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": "m-1",
        ENT: { "costCenter": "42" }
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({
            "schemas": [USER_SCHEMA, ENT],
            "userName": "a",
            "displayName": "A",
            ENT: { "department": "Sales", "costCenter": "42", "manager": { "value": "m-1" } }
        })
    );
}

#[test]
fn string_booleans_are_coerced() {
    for (raw, want) in [
        (json!(true), true),
        (json!(false), false),
        (json!("True"), true),
        (json!("False"), false),
        (json!("tRuE"), true),
        (json!("false"), false),
    ] {
        let out = normalize_user(json!({
            "userName": "a",
            "active": raw.clone(),
            "roles": [{ "value": "admin", "primary": raw }]
        }))
        .unwrap();
        assert_eq!(out["active"], want);
        assert_eq!(out["roles"][0]["primary"], want);
    }
    for bad in [json!("yes"), json!(1), json!([true]), json!({})] {
        let err = user_err(json!({ "userName": "a", "active": bad }));
        assert_eq!(err.scim_type, Some(ScimType::InvalidValue));
        assert!(err.detail.contains("active"), "{}", err.detail);
    }
}

#[test]
fn bool_attr_reads_scim_booleans() {
    assert_eq!(bool_attr(&json!(true)), Some(true));
    assert_eq!(bool_attr(&json!("FALSE")), Some(false));
    assert_eq!(bool_attr(&json!(" true")), None);
    assert_eq!(bool_attr(&json!(0)), None);
    assert_eq!(bool_attr(&Value::Null), None);
}

#[test]
fn manager_forms() {
    let ext = |manager: Value| {
        normalize_user(json!({ "userName": "a", ENT: { "manager": manager, "division": "D" } }))
            .unwrap()[ENT]
            .clone()
    };
    assert_eq!(
        ext(json!("m")),
        json!({ "division": "D", "manager": { "value": "m" } })
    );
    assert_eq!(
        ext(json!({ "value": "m", "$ref": "https://b/Users/m" })),
        json!({ "division": "D", "manager": { "value": "m", "$ref": "https://b/Users/m" } })
    );
    for none in [
        json!(""),
        json!({ "value": "" }),
        json!(null),
        json!({ "displayName": "x" }),
    ] {
        assert_eq!(ext(none), json!({ "division": "D" }));
    }
    let err = user_err(json!({ "userName": "a", ENT: { "manager": 7 } }));
    assert_eq!(err.scim_type, Some(ScimType::InvalidValue));
}

#[test]
fn empty_extension_is_dropped_with_its_urn() {
    for ext in [
        json!({}),
        json!(null),
        json!({ "manager": "" }),
        json!({ "bogus": 1 }),
    ] {
        let out =
            normalize_user(json!({ "schemas": [USER_SCHEMA, ENT], "userName": "a", ENT: ext }))
                .unwrap();
        assert_eq!(out, json!({ "schemas": [USER_SCHEMA], "userName": "a" }));
    }
}

#[test]
fn unstored_and_null_attributes_are_dropped() {
    let out = normalize_user(json!({
        "id": "client-chosen",
        "meta": { "resourceType": "User" },
        "groups": [{ "value": "g1" }],
        "password": "hunter2",
        "userName": "a",
        "displayName": null,
        "nickName": "n",
        "emails": [],
        "phoneNumbers": [null],
        "name": { "givenName": null },
        "addresses": [{ "locality": "Paris", "bogus": 1 }]
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({
            "schemas": [USER_SCHEMA],
            "userName": "a",
            "nickName": "n",
            "addresses": [{ "locality": "Paris" }]
        })
    );
}

#[test]
fn single_value_for_multi_valued_is_wrapped() {
    let out = normalize_user(json!({ "userName": "a", "emails": { "value": "a@x" } })).unwrap();
    assert_eq!(out["emails"], json!([{ "value": "a@x" }]));
}

#[test]
fn user_errors() {
    use ScimType::{InvalidSyntax, InvalidValue};
    let cases: Vec<(Value, ScimType, &str)> = vec![
        (json!([{ "userName": "a" }]), InvalidSyntax, "JSON object"),
        (json!("userName"), InvalidSyntax, "JSON object"),
        (json!({}), InvalidValue, "userName"),
        (json!({ "userName": "" }), InvalidValue, "userName"),
        (json!({ "userName": "   " }), InvalidValue, "userName"),
        (json!({ "userName": null }), InvalidValue, "userName"),
        (json!({ "userName": 42 }), InvalidValue, "userName"),
        (
            json!({ "userName": "a", "emails": "a@x" }),
            InvalidValue,
            "emails[0]",
        ),
        (
            json!({ "userName": "a", "emails": ["a@x"] }),
            InvalidValue,
            "emails[0]",
        ),
        (
            json!({ "userName": "a", "emails": [[{ "value": "a@x" }]] }),
            InvalidValue,
            "emails[0]",
        ),
        (
            json!({ "userName": "a", "emails": [{ "value": 1 }] }),
            InvalidValue,
            "emails[0].value",
        ),
        (
            json!({ "userName": "a", "emails": [
                { "value": "a@x", "primary": true }, { "value": "b@x", "primary": "True" }
            ] }),
            InvalidValue,
            "primary",
        ),
        (
            json!({ "userName": "a", "UserName": "b" }),
            InvalidSyntax,
            "userName",
        ),
        (
            json!({ "userName": "a", "name": { "givenName": "x", "GivenName": "y" } }),
            InvalidSyntax,
            "givenName",
        ),
        (
            json!({ "userName": "a", "schemas": [USER_SCHEMA], "Schemas": [] }),
            InvalidSyntax,
            "schemas",
        ),
        (
            json!({ "userName": "a", ENT: { "department": "x" },
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:Department": "y" }),
            InvalidSyntax,
            "department",
        ),
        (
            json!({ "userName": "a", ENT: {},
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {} }),
            InvalidSyntax,
            ENT,
        ),
        (
            json!({ "userName": "a", "schemas": USER_SCHEMA }),
            InvalidValue,
            "schemas",
        ),
        (
            json!({ "userName": "a", "schemas": [USER_SCHEMA, 3] }),
            InvalidValue,
            "schemas",
        ),
        (
            json!({ "userName": "a", "name": "Ann Lee" }),
            InvalidValue,
            "name",
        ),
        (json!({ "userName": "a", ENT: "R&D" }), InvalidValue, ENT),
        (
            json!({ "userName": "a", "title": true }),
            InvalidValue,
            "title",
        ),
        (
            json!({ "userName": "a", "profileUrl": 5 }),
            InvalidValue,
            "profileUrl",
        ),
    ];
    for (body, scim_type, mention) in cases {
        let err = user_err(body.clone());
        assert_eq!(err.kind, crate::scim::ScimErrorKind::BadRequest, "{body}");
        assert_eq!(err.scim_type, Some(scim_type), "{body}: {}", err.detail);
        assert!(err.detail.contains(mention), "{body}: {}", err.detail);
    }
}

#[test]
fn size_guards() {
    let long = "x".repeat(MAX_STRING_BYTES + 1);
    let err = user_err(json!({ "userName": long }));
    assert_eq!(err.scim_type, Some(ScimType::InvalidValue));
    assert!(normalize_user(json!({ "userName": "x".repeat(MAX_STRING_BYTES) })).is_ok());

    let emails: Vec<Value> = (0..=MAX_MULTI_VALUES)
        .map(|i| json!({ "value": format!("{i}@x") }))
        .collect();
    let err = user_err(json!({ "userName": "a", "emails": emails }));
    assert!(err.detail.contains("emails"), "{}", err.detail);

    let members: Vec<Value> = (0..1000)
        .map(|i| json!({ "value": format!("u{i}") }))
        .collect();
    let out = normalize_group(json!({ "displayName": "big", "members": members })).unwrap();
    assert_eq!(out["members"].as_array().unwrap().len(), 1000);

    let too_many: Vec<Value> = (0..=MAX_GROUP_MEMBERS)
        .map(|_| json!({ "value": "u" }))
        .collect();
    let err = group_err(json!({ "displayName": "big", "members": too_many }));
    assert!(err.detail.contains("members"), "{}", err.detail);
}

#[test]
fn okta_and_entra_group_bodies() {
    let okta = json!({
        "schemas": [GROUP_SCHEMA],
        "displayName": "Test SCIMv2",
        "members": [{ "value": "u1", "display": "user1@example.com" }]
    });
    // `members.display` is not in RFC 7643's Group schema: it is not stored.
    assert_eq!(
        normalize_group(okta).unwrap(),
        json!({
            "schemas": [GROUP_SCHEMA],
            "displayName": "Test SCIMv2",
            "members": [{ "value": "u1" }]
        })
    );

    let entra = json!({
        "schemas": [
            GROUP_SCHEMA,
            "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/Group"
        ],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "displayName",
        "meta": { "resourceType": "Group" },
        "members": []
    });
    assert_eq!(
        normalize_group(entra).unwrap(),
        json!({
            "schemas": [GROUP_SCHEMA],
            "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
            "displayName": "displayName"
        })
    );
}

#[test]
fn group_members_are_canonicalized() {
    let out = normalize_group(json!({
        "DisplayName": "Eng",
        "id": "ignored",
        "Members": [
            {
                "Value": "u1", "$REF": "https://b/Users/u1", "TYPE": "User", "Display": "Ann",
                "primary": true
            },
            { "value": "u2" },
            { "value": "u1", "display": "duplicate" },
            null
        ]
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({
            "schemas": [GROUP_SCHEMA],
            "displayName": "Eng",
            "members": [
                { "value": "u1", "$ref": "https://b/Users/u1", "type": "User" },
                { "value": "u2" }
            ]
        })
    );
}

#[test]
fn group_errors() {
    use ScimType::{InvalidSyntax, InvalidValue};
    let cases: Vec<(Value, ScimType, &str)> = vec![
        (json!(null), InvalidSyntax, "JSON object"),
        (json!({}), InvalidValue, "displayName"),
        (json!({ "displayName": "" }), InvalidValue, "displayName"),
        (json!({ "displayName": 1 }), InvalidValue, "displayName"),
        (
            json!({ "displayName": "g", "members": [{}] }),
            InvalidValue,
            "members[0].value",
        ),
        (
            json!({ "displayName": "g", "members": [{ "value": "" }] }),
            InvalidValue,
            "members[0].value",
        ),
        (
            json!({ "displayName": "g", "members": [{ "display": "x" }] }),
            InvalidValue,
            "members[0].value",
        ),
        (
            json!({ "displayName": "g", "members": [{ "value": 5 }] }),
            InvalidValue,
            "members[0].value",
        ),
        (
            json!({ "displayName": "g", "members": ["u1"] }),
            InvalidValue,
            "members[0]",
        ),
        (
            json!({ "displayName": "g", "members": [{ "value": "a", "VALUE": "b" }] }),
            InvalidSyntax,
            "value",
        ),
        (
            json!({ "displayName": "g", "displayname": "h" }),
            InvalidSyntax,
            "displayName",
        ),
    ];
    for (body, scim_type, mention) in cases {
        let err = group_err(body.clone());
        assert_eq!(err.scim_type, Some(scim_type), "{body}: {}", err.detail);
        assert!(err.detail.contains(mention), "{body}: {}", err.detail);
    }
}

#[test]
fn normalization_is_idempotent() {
    let first = normalize_user(json!({
        "username": "a",
        "active": "False",
        "emails": [{ "value": "a@x", "primary": "true" }],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": "m"
    }))
    .unwrap();
    assert_eq!(normalize_user(first.clone()).unwrap(), first);
}
