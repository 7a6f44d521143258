//! Filter grammar tests: parsing, precedence, matching rules, IdP filters and hostile input.

use super::*;
use crate::scim::error::ScimType;
use serde_json::json;
use std::cmp::Ordering;

const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn user() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENT],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "Ext-ABC",
        "userName": "Bjensen@example.com",
        "name": {"givenName": "Barbara", "familyName": "Jensen"},
        "displayName": "Babs Jensen",
        "nickName": "",
        "title": "Tour Guide",
        "active": true,
        "loginCount": 42,
        "score": 3.5,
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "x509Certificates": [],
        ENT: {
            "employeeNumber": "701984",
            "department": "Tour Operations",
            "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}
        },
        "meta": {
            "resourceType": "User",
            "created": "2010-01-23T04:56:22Z",
            "lastModified": "2011-05-13T04:42:34+02:00",
            "version": "W/\"3694e05e9dff590\""
        }
    })
}

fn group() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g1",
        "displayName": "Engineering",
        "members": [{"value": "u1", "display": "a@x"}, {"value": "U2"}]
    })
}

fn check(resource: &Value, cases: &[(&str, bool)]) {
    for (filter, want) in cases {
        let parsed = parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
        assert_eq!(parsed.matches(resource), *want, "{filter}");
        // Display re-parses to the same tree.
        let shown = parsed.to_string();
        assert_eq!(
            parse(&shown).as_ref(),
            Ok(&parsed),
            "round trip of {filter} via {shown}"
        );
    }
}

#[test]
fn every_operator_on_strings() {
    check(
        &user(),
        &[
            (r#"userName eq "bjensen@example.com""#, true),
            (r#"userName eq "bjensen""#, false),
            (r#"userName ne "x""#, true),
            (r#"userName ne "BJENSEN@example.com""#, false),
            (r#"userName co "JENSEN""#, true),
            (r#"userName co "smith""#, false),
            (r#"userName sw "bj""#, true),
            (r#"userName sw "jensen""#, false),
            (r#"userName ew ".COM""#, true),
            (r#"userName ew ".org""#, false),
            (r#"userName gt "a""#, true),
            (r#"userName gt "z""#, false),
            (r#"userName ge "bjensen@example.com""#, true),
            (r#"userName lt "c""#, true),
            (r#"userName lt "bjensen@example.com""#, false),
            (r#"userName le "BJENSEN@EXAMPLE.COM""#, true),
        ],
    );
}

#[test]
fn numbers_booleans_and_type_mismatches() {
    check(
        &user(),
        &[
            ("loginCount eq 42", true),
            ("loginCount eq 42.0", true),
            ("loginCount ne 42", false),
            ("loginCount gt 41", true),
            ("loginCount ge 42", true),
            ("loginCount lt 42", false),
            ("loginCount le 42", true),
            ("loginCount gt -1", true),
            ("score gt 3.4", true),
            ("score lt 1e1", true),
            ("score eq 3.5", true),
            (r#"loginCount eq "42""#, false),
            (r#"userName gt 1"#, false),
            ("active eq true", true),
            ("active eq TRUE", true),
            ("active eq false", false),
            ("active ne false", true),
            ("active gt false", false),
            ("active le true", false),
            (r#"active eq "true""#, false),
            (r#"name eq "Barbara""#, false),
            (r#"name gt "a""#, false),
            (r#"userName co 1"#, false),
        ],
    );
}

#[test]
fn presence_and_null() {
    check(
        &user(),
        &[
            ("title pr", true),
            ("nickName pr", false),
            ("emails pr", true),
            ("x509Certificates pr", false),
            ("missing pr", false),
            ("name pr", true),
            ("name.givenName pr", true),
            ("name.middleName pr", false),
            ("emails.type pr", true),
            ("missing eq null", true),
            ("title eq null", false),
            ("title ne null", true),
            ("missing ne null", false),
            (r#"missing ne "x""#, true),
            (r#"missing eq "x""#, false),
            (r#"missing co "x""#, false),
        ],
    );
}

#[test]
fn keywords_are_case_insensitive_and_precedence_holds() {
    check(
        &user(),
        &[
            (r#"USERNAME EQ "BJENSEN@EXAMPLE.COM""#, true),
            (r#"title Pr AnD active Eq True"#, true),
            // and binds tighter than or.
            (r#"title eq "x" and userName pr or active eq true"#, true),
            (r#"title eq "x" or userName pr and active eq false"#, false),
            (
                r#"(title eq "x" or userName pr) and active eq false"#,
                false,
            ),
            (r#"active eq false and title eq "x" or title pr"#, true),
            (r#"active eq false and (title eq "x" or title pr)"#, false),
            // not binds tighter than and/or.
            (r#"not (active eq true) or title pr"#, true),
            (r#"not (active eq true) and title pr"#, false),
            (r#"NOT (title pr and active eq false)"#, true),
            (r#"not (not (active eq true))"#, true),
            (r#"not title eq "x""#, true),
            (r#"((((title pr))))"#, true),
            (
                r#"title pr and (nickName pr or (loginCount gt 40 and not (active eq false)))"#,
                true,
            ),
        ],
    );
}

#[test]
fn case_exact_attributes() {
    check(
        &user(),
        &[
            (r#"id eq "2819c223-7f76-453a-919d-413861904646""#, true),
            (r#"id eq "2819C223-7F76-453A-919D-413861904646""#, false),
            (r#"externalId eq "Ext-ABC""#, true),
            (r#"externalId eq "ext-abc""#, false),
            (r#"externalId sw "Ext""#, true),
            (r#"externalId sw "ext""#, false),
            (r#"meta.version eq "W/\"3694e05e9dff590\"""#, true),
            (r#"meta.version eq "w/\"3694E05E9DFF590\"""#, false),
            (r#"meta.resourceType eq "user""#, true),
            (r#"title eq "TOUR GUIDE""#, true),
        ],
    );
    check(
        &group(),
        &[
            (r#"members eq "u1""#, true),
            (r#"members eq "U1""#, false),
            (r#"members eq "U2""#, true),
            (r#"members eq "u2""#, false),
            (r#"members.value eq "u1""#, true),
            (r#"members.value eq "U1""#, false),
            (r#"members[value eq "u1"]"#, true),
            (r#"members[value eq "U1"]"#, false),
            (r#"members.display eq "A@X""#, true),
            (r#"displayName eq "engineering""#, true),
        ],
    );
}

#[test]
fn multi_valued_and_value_paths() {
    check(
        &user(),
        &[
            (r#"emails eq "BABS@jensen.org""#, true),
            (r#"emails eq "nobody@x""#, false),
            (r#"emails ne "babs@jensen.org""#, false),
            (r#"emails.value co "@example""#, true),
            (r#"emails.value ew ".net""#, false),
            (r#"emails.type eq "home""#, true),
            (
                r#"emails[type eq "work" and value co "@example.com"]"#,
                true,
            ),
            (
                r#"emails[type eq "home" and value co "@example.com"]"#,
                false,
            ),
            (r#"emails[type eq "work" or type eq "other"]"#, true),
            (r#"emails[not (type eq "work")]"#, true),
            (r#"emails[primary eq true and type eq "work"]"#, true),
            (r#"emails[primary eq true and type eq "home"]"#, false),
            (
                r#"emails[type eq "work"] and not (emails[type eq "other"])"#,
                true,
            ),
            (r#"missing[type eq "work"]"#, false),
            (r#"name[givenName eq "barbara"]"#, true),
            (r#"name.givenName eq "barbara""#, true),
            (r#"name.familyName eq "smith""#, false),
        ],
    );
}

#[test]
fn urn_prefixed_paths() {
    let m = "26118915-6090-4610-87e4-49d8ca9f808d";
    check(
        &user(),
        &[
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen@example.com""#,
                true,
            ),
            (
                r#"urn:ietf:params:scim:schemas:core:2.0:User:name.familyName sw "jen""#,
                true,
            ),
            (
                r#"URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER:USERNAME pr"#,
                true,
            ),
            (&format!(r#"{ENT}:employeeNumber eq "701984""#), true),
            (&format!(r#"{ENT}:department co "tour""#), true),
            (&format!(r#"{ENT}:manager.value eq "{m}""#), true),
            (&format!(r#"{ENT}:manager eq "{m}""#), true),
            (
                &format!(r#"{ENT}:manager.displayName eq "john smith""#),
                true,
            ),
            (&format!(r#"{ENT}:costCenter pr"#), false),
            (r#"employeeNumber eq "701984""#, false),
            (r#"urn:example:custom:1.0:Thing:x pr"#, false),
        ],
    );
}

#[test]
fn date_comparisons() {
    check(
        &user(),
        &[
            (r#"meta.created gt "2010-01-01T00:00:00Z""#, true),
            (r#"meta.created lt "2010-01-01T00:00:00Z""#, false),
            (r#"meta.created eq "2010-01-23T04:56:22.000Z""#, true),
            (r#"meta.created eq "2010-01-23T05:56:22+01:00""#, true),
            (r#"meta.created lt "2010-01-23T04:56:22.000Z""#, false),
            (r#"meta.created le "2010-01-23T04:56:22.000Z""#, true),
            (r#"meta.created ge "2010-01-23T04:56:22Z""#, true),
            // 04:42:34+02:00 is 02:42:34Z, although it sorts after "03:00" as text.
            (r#"meta.lastModified eq "2011-05-13T02:42:34Z""#, true),
            (r#"meta.lastModified lt "2011-05-13T03:00:00Z""#, true),
            (r#"meta.lastModified gt "2011-05-13T03:00:00Z""#, false),
            (r#"meta.lastModified ne "2011-05-13T02:42:34Z""#, false),
            (r#"meta.lastModified sw "2011-05-13""#, true),
        ],
    );
}

#[test]
fn idp_filters() {
    let okta = json!({"id": "a", "userName": "Alice@Example.com"});
    check(&okta, &[(r#"userName eq "alice@example.com""#, true)]);
    let entra = json!({"id": "a", "externalId": "8e3a1b5c-0f6e-4d2a-9d0b-7b9f1c2d3e4f"});
    check(
        &entra,
        &[
            (
                r#"externalId eq "8e3a1b5c-0f6e-4d2a-9d0b-7b9f1c2d3e4f""#,
                true,
            ),
            (
                r#"externalId eq "8E3A1B5C-0F6E-4D2A-9D0B-7B9F1C2D3E4F""#,
                false,
            ),
        ],
    );
    check(
        &group(),
        &[
            (r#"id eq "g1" and members eq "u1""#, true),
            (r#"id eq "g1" and members eq "u9""#, false),
            (r#"id eq "G1" and members eq "u1""#, false),
            (r#"displayName eq "Engineering""#, true),
        ],
    );
}

#[test]
fn parse_tree_shape() {
    let p = |s: &str| parse(s).unwrap();
    let path = |n: &str| AttrPath::new(n, None);
    let cmp = |n: &str, v: Value| Filter::Compare {
        path: path(n),
        op: CompareOp::Eq,
        value: v,
    };
    assert_eq!(
        p(r#"a eq "1" or b eq "2" and c eq "3""#),
        Filter::Or(
            Box::new(cmp("a", json!("1"))),
            Box::new(Filter::And(
                Box::new(cmp("b", json!("2"))),
                Box::new(cmp("c", json!("3")))
            )),
        )
    );
    assert_eq!(
        p("not a pr and b pr"),
        Filter::And(
            Box::new(Filter::Not(Box::new(Filter::Present(path("a"))))),
            Box::new(Filter::Present(path("b")))
        )
    );
    assert_eq!(p(r#"x eq "a\"b\\c\u00e9""#), cmp("x", json!("a\"b\\cé")));
    assert_eq!(p(r#"x eq "ünï""#), cmp("x", json!("ünï")));
    assert_eq!(p("x eq -2.5"), cmp("x", json!(-2.5)));
    assert_eq!(p("x eq 1e3"), cmp("x", json!(1000.0)));
    assert_eq!(p("x eq NULL"), cmp("x", Value::Null));
    assert_eq!(p("x eq False"), cmp("x", json!(false)));
    assert_eq!(
        p("members.$ref pr"),
        Filter::Present(AttrPath::new("members", Some("$ref")))
    );
    assert_eq!(p("not pr"), Filter::Present(path("not")));
    assert_eq!(
        p("and pr or not pr"),
        Filter::Or(
            Box::new(Filter::Present(path("and"))),
            Box::new(Filter::Present(path("not")))
        )
    );
    let Filter::ValuePath { path: vp, filter } = p(r#"emails[type eq "work"]"#) else {
        panic!()
    };
    assert_eq!(vp, path("emails"));
    assert_eq!(*filter, cmp("type", json!("work")));
    let Filter::Present(ap) = p(&format!("{ENT}:manager.value pr")) else {
        panic!()
    };
    assert_eq!(ap.urn.as_deref(), Some(ENT));
    assert_eq!(
        (ap.name.as_str(), ap.sub.as_deref()),
        ("manager", Some("value"))
    );
    assert!(ap.is_enterprise() && !ap.is_core());
    assert_eq!(ap.dotted(), "manager.value");
    assert_eq!(ap.to_string(), format!("{ENT}:manager.value"));
}

#[test]
fn attr_path_parse() {
    let ap = AttrPath::parse(" name.givenName ").unwrap();
    assert_eq!(ap, AttrPath::new("name", Some("givenName")));
    assert!(ap.is_core());
    for bad in [
        "", "a.b.c", "1a", "a b", "urn:x", "foo:bar", "name.", ".x", "a[x]",
    ] {
        let err = AttrPath::parse(bad).unwrap_err();
        assert_eq!(err.scim_type, Some(ScimType::InvalidPath), "{bad}");
    }
}

#[test]
fn hostile_and_malformed_input_is_a_clean_error() {
    let deep_parens = format!("{}title pr{}", "(".repeat(10_000), ")".repeat(10_000));
    let deep_under_limit = format!("{}title pr{}", "(".repeat(40), ")".repeat(40));
    let deep_not = format!("{}title pr", "not (".repeat(40));
    let deep_brackets = format!("emails[{}type pr{}]", "(".repeat(32), ")".repeat(32));
    let too_long = format!(r#"userName eq "{}""#, "x".repeat(MAX_FILTER_LEN));
    let cases: Vec<&str> = vec![
        "",
        "   ",
        "userName eq",
        r#"eq "x""#,
        r#"userName "x""#,
        r#"userName eq "x"#,
        r#"userName eq "x\"#,
        r#"userName eq "x" extra"#,
        r#"userName eq "x" and"#,
        r#"userName eq "x" or"#,
        r#"and userName pr"#,
        r#"(userName eq "x""#,
        r#"userName eq "x")"#,
        r#"()"#,
        r#"userName xx "x""#,
        r#"userName === "x""#,
        r#"userName eq x"#,
        r#"userName eq ("x")"#,
        r#"userName pr "x""#,
        r#"userName eq "\x""#,
        r#"userName eq "\u00""#,
        "userName eq \"line\nbreak\"",
        r#"userName eq 1.2.3"#,
        r#"userName eq -"#,
        r#"userName eq 1 2"#,
        r#"a.b.c eq "x""#,
        r#"urn:x eq "y""#,
        r#"foo:bar eq "x""#,
        r#"1abc eq "x""#,
        r#"üser eq "x""#,
        "userName eq \"x\" \u{0}",
        "userName\u{200b} eq \"x\"",
        r#"emails[type eq "work""#,
        r#"emails[type eq "work"]]"#,
        r#"emails[value[type pr]]"#,
        r#"emails[]"#,
        r#"emails["x"]"#,
        r#"not"#,
        r#"not ()"#,
        r#"userName eq "x" not (title pr)"#,
        "}",
        &deep_parens,
        &deep_under_limit,
        &deep_not,
        &deep_brackets,
        &too_long,
    ];
    for input in cases {
        let err = parse(input).unwrap_err();
        assert_eq!(err.scim_type, Some(ScimType::InvalidFilter), "{input:.80}");
        assert_eq!(err.kind, crate::scim::ScimErrorKind::BadRequest);
        if !input.trim().is_empty() && input.len() <= MAX_FILTER_LEN {
            assert!(
                err.detail.contains("position"),
                "{input:.80}: {}",
                err.detail
            );
        }
    }
}

#[test]
fn error_messages_are_precise() {
    let detail = |s: &str| parse(s).unwrap_err().detail;
    assert_eq!(
        detail("userName eq"),
        "missing value after 'eq' at position 12"
    );
    assert_eq!(
        detail(r#"userName zz "x""#),
        "unknown operator 'zz' at position 10"
    );
    assert_eq!(
        detail(r#"userName eq "x" extra"#),
        "unexpected 'extra' after a complete expression at position 17"
    );
    assert_eq!(
        detail(r#"é eq "x""#),
        "unexpected character 'é' at position 1"
    );
    assert_eq!(
        detail(r#"(a pr"#),
        "no ')' closes this bracket at position 1"
    );
    assert!(detail(r#"a eq "x"#).starts_with("unterminated string at position 6"));
    assert!(detail(&"(".repeat(33)).contains("deeper than 32"));
}

#[test]
fn depth_limit_boundary() {
    let ok = format!("{}title pr{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse(&ok).unwrap().matches(&user()));
    let over = format!(
        "{}title pr{}",
        "(".repeat(MAX_DEPTH + 1),
        ")".repeat(MAX_DEPTH + 1)
    );
    assert!(parse(&over).is_err());
}

#[test]
fn long_flat_chains_within_the_length_limit() {
    let chain = vec!["title pr"; 600].join(" and ");
    assert!(chain.len() <= MAX_FILTER_LEN);
    let f = parse(&chain).unwrap();
    assert!(f.matches(&user()));
    assert_eq!(parse(&f.to_string()), Ok(f));
    // The longest chain that fits: evaluation, display and drop recurse ~1000 deep.
    let widest = vec!["a pr"; 1000].join(" or ");
    assert!(widest.len() <= MAX_FILTER_LEN);
    let f = parse(&widest).unwrap();
    assert!(!f.matches(&user()));
    assert!(f.to_string().len() >= widest.len());
    let ors = vec![r#"title eq "x""#; 500].join(" or ");
    assert!(!parse(&ors).unwrap().matches(&user()));
}

#[test]
fn eq_hint_finds_top_level_equality() {
    let hint = |s: &str| {
        let f = parse(s).unwrap();
        eq_hint(&f).map(|(p, v)| (p.to_string(), v.to_owned()))
    };
    let some = |p: &str, v: &str| Some((p.to_owned(), v.to_owned()));
    assert_eq!(hint(r#"userName eq "x""#), some("userName", "x"));
    assert_eq!(
        hint(r#"active eq true and externalId eq "e""#),
        some("externalId", "e")
    );
    assert_eq!(
        hint(r#"(a eq "1" and b eq "2") and c eq "3""#),
        some("a", "1")
    );
    assert_eq!(hint(r#"id eq "g" and members eq "u""#), some("id", "g"));
    assert_eq!(hint(r#"userName eq "x" or id eq "y""#), None);
    assert_eq!(hint(r#"not (userName eq "x")"#), None);
    assert_eq!(hint(r#"userName co "x""#), None);
    assert_eq!(hint(r#"emails[value eq "x"]"#), None);
    assert_eq!(hint("loginCount eq 3"), None);
}

#[test]
fn resolve_flattens() {
    let u = user();
    let p = |s: &str| AttrPath::parse(s).unwrap();
    assert_eq!(
        resolve(&u, &p("emails.value")),
        vec![&json!("bjensen@example.com"), &json!("babs@jensen.org")]
    );
    assert_eq!(resolve(&u, &p("emails")).len(), 2);
    assert_eq!(
        resolve(&u, &p("USERNAME")),
        vec![&json!("Bjensen@example.com")]
    );
    assert_eq!(
        resolve(&u, &p(&format!("{ENT}:manager.displayName"))),
        vec![&json!("John Smith")]
    );
    assert!(resolve(&u, &p("missing.value")).is_empty());
    assert!(resolve(&u, &p("x509Certificates")).is_empty());
    assert!(resolve(&json!("not an object"), &p("a")).is_empty());
}

#[test]
fn sort_order() {
    let mk = |v: Value| json!({"userName": v, "meta": {"created": v}, "emails": [{"value": v}]});
    let mut rows = [
        json!({"userName": "bob"}),
        json!({}),
        json!({"userName": "Alice"}),
        json!({"userName": null}),
        json!({"userName": "alice"}),
        json!({"userName": "Carol"}),
    ];
    let p = AttrPath::parse("userName").unwrap();
    rows.sort_by(|a, b| sort_key_cmp(a, b, &p));
    let names: Vec<_> = rows
        .iter()
        .map(|r| r.get("userName").cloned().unwrap_or(Value::Null))
        .collect();
    assert_eq!(
        names,
        vec![
            json!("Alice"),
            json!("alice"),
            json!("bob"),
            json!("Carol"),
            Value::Null,
            Value::Null
        ]
    );

    let created = AttrPath::parse("meta.created").unwrap();
    let early = mk(json!("2011-05-13T04:42:34+02:00"));
    let late = mk(json!("2011-05-13T03:00:00Z"));
    assert_eq!(sort_key_cmp(&early, &late, &created), Ordering::Less);
    let emails = AttrPath::parse("emails").unwrap();
    let primary = json!({"emails": [{"value": "z@x"}, {"value": "a@x", "primary": true}]});
    assert_eq!(
        sort_key_cmp(&primary, &mk(json!("b@x")), &emails),
        Ordering::Less
    );
    let id = AttrPath::parse("id").unwrap();
    assert_eq!(
        sort_key_cmp(&json!({"id": "B"}), &json!({"id": "a"}), &id),
        Ordering::Less
    );
    assert_eq!(
        sort_key_cmp(&json!({"userName": "B"}), &json!({"userName": "a"}), &p),
        Ordering::Greater
    );
    let n = AttrPath::parse("loginCount").unwrap();
    assert_eq!(
        sort_key_cmp(&json!({"loginCount": 10}), &json!({"loginCount": 9}), &n),
        Ordering::Greater
    );
    assert_eq!(
        sort_key_cmp(&json!({"loginCount": 1}), &json!({}), &n),
        Ordering::Less
    );
}

#[test]
fn element_matching_uses_parent_rules() {
    let f = parse(r#"value eq "u1""#).unwrap();
    assert!(f.matches_element(&json!({"value": "u1"}), "members"));
    assert!(!f.matches_element(&json!({"value": "U1"}), "members"));
    assert!(f.matches_element(&json!({"value": "U1"}), "emails"));
}

#[test]
fn value_filter_with_sub_attribute() {
    let user = json!({"emails": [
        {"type": "home", "value": "ann@home.example"},
        {"type": "work", "value": "ann@acme.example"}]});
    assert!(
        parse(r#"emails[type eq "work"].value co "acme""#)
            .unwrap()
            .matches(&user)
    );
    assert!(
        !parse(r#"emails[type eq "home"].value co "acme""#)
            .unwrap()
            .matches(&user)
    );
    assert!(
        parse(r#"emails[type eq "work"].value pr and not (userName pr)"#)
            .unwrap()
            .matches(&user)
    );
    assert!(parse(r#"emails[type eq "work"]. eq "x""#).is_err());
    assert!(parse(r#"emails.value eq "x""#).is_ok());
}
