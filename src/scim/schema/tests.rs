//! Tests of the attribute tables and the discovery documents.

use serde_json::Value;

use super::*;

const BASE: &str = "https://broker.example/scim/v2/";

fn schema_by_id(id: &str) -> Value {
    schemas(BASE)
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("schema {id} missing"))
}

fn attr<'a>(schema: &'a Value, name: &str) -> &'a Value {
    schema["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("attribute {name} missing"))
}

#[test]
fn schemas_lists_user_group_and_enterprise() {
    let all = schemas(BASE);
    let ids: Vec<&str> = all.iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [USER_SCHEMA, GROUP_SCHEMA, ENTERPRISE_USER_SCHEMA]);
    let names: Vec<&str> = all.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["User", "Group", "EnterpriseUser"]);
    for s in &all {
        assert_eq!(s["schemas"], serde_json::json!([SCHEMA_SCHEMA]));
        assert_eq!(s["meta"]["resourceType"], "Schema");
        let loc = format!(
            "https://broker.example/scim/v2/Schemas/{}",
            s["id"].as_str().unwrap()
        );
        assert_eq!(s["meta"]["location"], loc.as_str());
    }
}

#[test]
fn attribute_counts_are_sane() {
    let count = |id| schema_by_id(id)["attributes"].as_array().unwrap().len();
    // RFC 7643 §4.1: 21 User attributes; §4.2: 2 Group attributes; §4.3: 6 enterprise.
    assert_eq!(count(USER_SCHEMA), 21);
    assert_eq!(count(GROUP_SCHEMA), 2);
    assert_eq!(count(ENTERPRISE_USER_SCHEMA), 6);
    // The lookup tables add the three common attributes to each core schema.
    assert_eq!(core_attributes(ResourceKind::User).len(), 24);
    assert_eq!(core_attributes(ResourceKind::Group).len(), 5);
    assert_eq!(enterprise_attributes().len(), 6);
}

#[test]
fn user_schema_lists_every_rfc_attribute() {
    let user = schema_by_id(USER_SCHEMA);
    for name in [
        "userName",
        "name",
        "displayName",
        "nickName",
        "profileUrl",
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "active",
        "password",
        "emails",
        "phoneNumbers",
        "ims",
        "photos",
        "addresses",
        "groups",
        "entitlements",
        "roles",
        "x509Certificates",
    ] {
        attr(&user, name);
    }
    let name_subs: Vec<&str> = attr(&user, "name")["subAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        name_subs,
        [
            "formatted",
            "familyName",
            "givenName",
            "middleName",
            "honorificPrefix",
            "honorificSuffix"
        ]
    );
}

#[test]
fn common_attributes_are_in_lookup_but_not_published() {
    let id = find_attr(core_attributes(ResourceKind::User), "ID").unwrap();
    assert_eq!(id.name, "id");
    assert_eq!(id.kind, AttrType::String);
    assert!(id.case_exact);
    assert!(!id.multi_valued);
    assert_eq!(id.mutability, Mutability::ReadOnly);
    assert_eq!(id.returned, Returned::Always);
    assert_eq!(id.uniqueness, Uniqueness::Server);
    let ext = find_attr(core_attributes(ResourceKind::Group), "externalid").unwrap();
    assert_eq!(
        (ext.mutability, ext.case_exact),
        (Mutability::ReadWrite, true)
    );
    let meta = find_attr(core_attributes(ResourceKind::Group), "meta").unwrap();
    assert_eq!(
        (meta.mutability, meta.returned),
        (Mutability::ReadOnly, Returned::Default)
    );
    assert!(meta.sub("LASTMODIFIED").is_some());
    for s in schemas(BASE) {
        for a in s["attributes"].as_array().unwrap() {
            assert!(!["id", "externalId", "meta"].contains(&a["name"].as_str().unwrap()));
        }
    }
}

#[test]
fn characteristics_follow_rfc_7643() {
    let user = schema_by_id(USER_SCHEMA);
    let user_name = attr(&user, "userName");
    assert_eq!(user_name["type"], "string");
    assert_eq!(user_name["required"], true);
    assert_eq!(user_name["caseExact"], false);
    assert_eq!(user_name["uniqueness"], "server");
    assert_eq!(user_name["returned"], "default");
    let password = attr(&user, "password");
    assert_eq!(password["mutability"], "writeOnly");
    assert_eq!(password["returned"], "never");
    let groups = attr(&user, "groups");
    assert_eq!(groups["mutability"], "readOnly");
    assert_eq!(groups["multiValued"], true);
    let emails = attr(&user, "emails");
    assert_eq!(emails["type"], "complex");
    let email_type = &emails["subAttributes"][2];
    assert_eq!(email_type["name"], "type");
    assert_eq!(
        email_type["canonicalValues"],
        serde_json::json!(["work", "home", "other"])
    );
    assert_eq!(attr(&user, "active")["type"], "boolean");
    assert_eq!(
        attr(&user, "profileUrl")["referenceTypes"],
        serde_json::json!(["external"])
    );
    assert_eq!(
        attr(&user, "x509Certificates")["subAttributes"][0]["type"],
        "binary"
    );

    let group = schema_by_id(GROUP_SCHEMA);
    assert_eq!(attr(&group, "displayName")["required"], true);
    let members = attr(&group, "members");
    let subs: Vec<&str> = members["subAttributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(subs, ["value", "$ref", "type"]);
    assert_eq!(members["subAttributes"][0]["mutability"], "immutable");

    let ent = schema_by_id(ENTERPRISE_USER_SCHEMA);
    let manager = attr(&ent, "manager");
    assert_eq!(manager["subAttributes"][2]["name"], "displayName");
    assert_eq!(manager["subAttributes"][2]["mutability"], "readOnly");
    assert_eq!(
        manager["subAttributes"][1]["referenceTypes"],
        serde_json::json!(["User"])
    );
}

#[test]
fn every_complex_attribute_has_sub_attributes() {
    fn walk(defs: &[AttrDef]) {
        for d in defs {
            assert!(!d.description.is_empty(), "{} has no description", d.name);
            assert_eq!(
                d.kind == AttrType::Complex,
                !d.sub_attributes.is_empty(),
                "{}",
                d.name
            );
            walk(d.sub_attributes);
        }
    }
    walk(core_attributes(ResourceKind::User));
    walk(core_attributes(ResourceKind::Group));
    walk(enterprise_attributes());
}

#[test]
fn schema_attributes_resolves_urns() {
    assert_eq!(
        schema_attributes(&USER_SCHEMA.to_lowercase()).map(<[_]>::len),
        Some(24)
    );
    assert_eq!(schema_attributes(GROUP_SCHEMA).map(<[_]>::len), Some(5));
    assert_eq!(
        schema_attributes(ENTERPRISE_USER_SCHEMA).map(<[_]>::len),
        Some(6)
    );
    assert!(schema_attributes("urn:example:unknown").is_none());
}

#[test]
fn service_provider_config_advertises_capabilities() {
    let spc = service_provider_config("https://b.example/scim/v2", 200);
    assert_eq!(spc["schemas"], serde_json::json!([SPC_SCHEMA]));
    assert_eq!(spc["patch"]["supported"], true);
    assert_eq!(spc["bulk"]["supported"], false);
    assert_eq!(spc["bulk"]["maxOperations"], 0);
    assert_eq!(spc["filter"]["supported"], true);
    assert_eq!(spc["filter"]["maxResults"], 200);
    assert_eq!(spc["changePassword"]["supported"], false);
    assert_eq!(spc["sort"]["supported"], true);
    assert_eq!(spc["etag"]["supported"], true);
    let schemes = spc["authenticationSchemes"].as_array().unwrap();
    assert_eq!(schemes.len(), 1);
    assert_eq!(schemes[0]["type"], "oauthbearertoken");
    assert_eq!(
        spc["meta"]["location"],
        "https://b.example/scim/v2/ServiceProviderConfig"
    );
}

#[test]
fn resource_types_describe_users_and_groups() {
    let rts = resource_types(BASE);
    assert_eq!(rts.len(), 2);
    let user = &rts[0];
    assert_eq!(user["id"], "User");
    assert_eq!(user["endpoint"], "/Users");
    assert_eq!(user["schema"], USER_SCHEMA);
    assert_eq!(
        user["schemaExtensions"][0]["schema"],
        ENTERPRISE_USER_SCHEMA
    );
    assert_eq!(user["schemaExtensions"][0]["required"], false);
    assert_eq!(
        user["meta"]["location"],
        "https://broker.example/scim/v2/ResourceTypes/User"
    );
    let group = &rts[1];
    assert_eq!(group["id"], "Group");
    assert_eq!(group["endpoint"], "/Groups");
    assert_eq!(group["schema"], GROUP_SCHEMA);
    assert_eq!(
        group["meta"]["location"],
        "https://broker.example/scim/v2/ResourceTypes/Group"
    );
}
