//! The OpenAPI document against the router: every documented operation is served (and
//! answers 401/404 as documented without a key), every declared route is documented, the
//! statuses the API answers are listed, and request bodies say what is required.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{assert_problem, server};
use crate::support::{Backend, Resp, TestServer, read};

/// The (method, path) pairs the generated document describes.
fn documented_operations() -> BTreeSet<(String, String)> {
    let doc = auth_broker::http::openapi::document_json();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in item.as_object().expect("path item").keys() {
            out.insert((m.clone(), path.clone()));
        }
    }
    out
}

/// A documented path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{org}", "acme")
        .replace("{id}", "x")
        .replace("{cid}", "y")
}

async fn unauthenticated(s: &TestServer, method: &str, path: &str) -> Resp {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = s
        .http
        .request(method.clone(), format!("{}{path}", s.base()));
    if method == Method::POST || method == Method::PUT || method == Method::PATCH {
        req = req.header("content-type", "application/json").body("{}");
    }
    read(req.send().await.expect("request sent")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_router() {
    let s = server(Backend::Sqlite).await;
    let r = s
        .http
        .get(format!("{}/admin/v1/openapi.json", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.expect("the document is JSON");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().expect("paths");

    let documented = documented_operations();
    assert!(documented.len() >= 20, "{documented:?}");
    for (method, path) in &documented {
        let op = &paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} is missing from the document"))[method];
        assert!(
            op.is_object(),
            "{method} {path} is missing from the document"
        );
        assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
        for name in ["org", "id"] {
            if path.contains(&format!("{{{name}}}")) {
                assert!(
                    op["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["name"] == name)),
                    "{method} {path} documents its {name} parameter"
                );
            }
        }
    }
    // The served document is the generated one.
    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
    for (path, item) in paths {
        for m in item.as_object().unwrap().keys() {
            assert!(METHODS.contains(&m.as_str()), "{m} {path}");
            assert!(
                documented.contains(&(m.clone(), path.clone())),
                "{m} {path} is served but not generated"
            );
        }
    }

    // Every documented operation exists: without a key it is 401, never 404 or 405.
    for (method, path) in &documented {
        let r = unauthenticated(&s, method, &concrete(path)).await;
        assert_problem(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    // And the router serves no undocumented method on a documented path.
    let documented_paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in documented_paths {
        for m in METHODS {
            if documented.contains(&(m.to_string(), path.clone())) {
                continue;
            }
            let r = unauthenticated(&s, m, &concrete(path)).await;
            assert!(
                r.status == StatusCode::METHOD_NOT_ALLOWED || r.status == StatusCode::NOT_FOUND,
                "{m} {path} is served ({}) but not documented",
                r.status
            );
        }
    }
    // Undocumented paths under /admin/v1 do not exist.
    for path in [
        "/admin/v1",
        "/admin/v1/orgs/acme",
        "/admin/v1/orgs/acme/users",
        "/admin/v1/orgs/acme/secrets",
        "/admin/v1/orgs/acme/connectors/github/tokens",
        "/admin/v1/orgs/acme/users/x/tokens",
        "/admin/v1/openapi.yaml",
    ] {
        let r = unauthenticated(&s, "get", path).await;
        assert_problem(&r, StatusCode::NOT_FOUND, "not_found");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_the_statuses_the_api_answers() {
    let s = server(Backend::Sqlite).await;
    let doc: Value = s.get_json("/admin/v1/openapi.json").await;
    // What the contract (and the admin test above) shows each operation answering.
    let answered: &[(&str, &str, &[&str])] = &[
        ("post", "/internal/v1/token", &["200", "409", "502"]),
        ("post", "/admin/v1/orgs/{org}/connectors", &["201", "409"]),
        (
            "put",
            "/admin/v1/orgs/{org}/connectors/{id}",
            &["200", "404"],
        ),
        ("delete", "/admin/v1/orgs/{org}/connectors/{id}", &["204"]),
        ("post", "/admin/v1/orgs/{org}/grants", &["201"]),
        (
            "delete",
            "/admin/v1/orgs/{org}/grants/{id}",
            &["204", "404"],
        ),
        ("post", "/admin/v1/orgs/{org}/gateways", &["201"]),
        ("get", "/admin/v1/orgs/{org}/gateways", &["200"]),
        (
            "delete",
            "/admin/v1/orgs/{org}/gateways/{id}",
            &["204", "404", "409"],
        ),
        (
            "post",
            "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials",
            &["201", "404"],
        ),
        (
            "delete",
            "/admin/v1/orgs/{org}/connectors/{id}/resource-credentials/{cid}",
            &["204", "404"],
        ),
    ];
    let mut missing = Vec::new();
    for (method, path, statuses) in answered {
        let responses = &doc["paths"][*path][*method]["responses"];
        assert!(responses.is_object(), "{method} {path} is documented");
        for status in *statuses {
            if !responses[*status].is_object() {
                missing.push(format!("{method} {path} {status}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "statuses the API answers but the document does not list: {missing:#?}"
    );
    s.stop().await;
}

/// The (method, path) pairs the admin and gateway routers declare, read from their source:
/// every `.route("path", get(..).post(..))` call.
fn declared_routes(source: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for call in source.split(".route(").skip(1) {
        let Some(path) = call.split('"').nth(1) else {
            continue;
        };
        // The method router runs up to the parenthesis that closes `.route(`.
        let mut depth = 1usize;
        let end = call
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(call.len(), |(i, _)| i);
        let methods = &call[..end];
        for m in ["get", "post", "put", "patch", "delete"] {
            let called = methods.match_indices(&format!("{m}(")).any(|(i, _)| {
                let before = methods.as_bytes()[..i].last().copied().unwrap_or(b' ');
                !(before.is_ascii_alphanumeric() || before == b'_')
            });
            if called {
                out.insert((m.to_string(), path.to_string()));
            }
        }
    }
    out
}

#[test]
fn every_admin_and_gateway_route_is_documented() {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut declared = BTreeSet::new();
    for file in [
        "src/http/admin.rs",
        "src/http/admin/credentials.rs",
        "src/http/gateway.rs",
    ] {
        let source = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        declared.extend(declared_routes(&source));
    }
    // The document describes the APIs; it does not list itself.
    declared.remove(&("get".to_string(), "/admin/v1/openapi.json".to_string()));
    assert!(
        declared.len() >= 10,
        "the source scan found the routes: {declared:?}"
    );
    let documented = documented_operations();
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    let phantom: Vec<_> = documented.difference(&declared).collect();
    assert!(
        phantom.is_empty(),
        "documented but not declared: {phantom:?}"
    );

    // The scanner itself reads chained and qualified method routers.
    let sample =
        r#".route("/a/{id}", get(x).put(y).delete(z)).route("/b", axum::routing::post(p))"#;
    let found = declared_routes(sample);
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found.contains(&("post".into(), "/b".into())));
}

/// The request schemas are the types serde reads: required members are required, unknown
/// members are refused, enums are enumerated, and every body is required.
#[test]
fn request_schemas_say_what_serde_accepts() {
    let doc = auth_broker::http::openapi::document_json();
    let schemas = &doc["components"]["schemas"];
    let required = |name: &str| -> BTreeSet<String> {
        schemas[name]["required"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has required members: {}", schemas[name]))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    for (name, members) in [
        ("TokenRequest", &["org", "user", "connector"][..]),
        (
            "AuthorizeRequest",
            &["org", "user", "connector", "tool"][..],
        ),
        ("ConnectorInput", &["strategy", "audience"][..]),
        ("GrantByName", &["group", "connector", "actions"][..]),
        ("GrantById", &["group_id", "connector", "actions"][..]),
        ("LockInput", &["reason"][..]),
        ("GatewayInput", &["name"][..]),
    ] {
        let want: BTreeSet<String> = members.iter().map(|m| m.to_string()).collect();
        assert_eq!(required(name), want, "{name}");
        assert_eq!(
            schemas[name]["additionalProperties"],
            Value::Bool(false),
            "{name} refuses unknown members"
        );
    }
    let strategies = schemas["Strategy"]["enum"]
        .as_array()
        .expect("Strategy enum");
    assert!(
        strategies.iter().any(|s| s == "broker_jwt"),
        "{strategies:?}"
    );
    // The upstream rules the derive cannot state are in the document: the write-only secret,
    // an upstream required by every strategy but broker_jwt, and what each needs in it.
    let upstream = &schemas["UpstreamInput"];
    assert_eq!(
        upstream["properties"]["client_secret"]["writeOnly"], true,
        "{upstream}"
    );
    assert!(
        upstream["allOf"].as_array().is_some_and(|a| a.len() == 3),
        "{upstream}"
    );
    for name in ["ConnectorInput", "NewConnector"] {
        let rules = schemas[name]["allOf"].to_string();
        assert!(
            rules.contains("\"broker_jwt\"") && rules.contains("UpstreamInput"),
            "{name}: {rules}"
        );
    }
    let user = &schemas["UserRef"]["oneOf"];
    assert_eq!(user.as_array().map(Vec::len), Some(4), "{user}");
    for (method, path) in [
        ("post", "/internal/v1/token"),
        ("post", "/admin/v1/orgs/{org}/connectors"),
        ("put", "/admin/v1/orgs/{org}/connectors/{id}"),
        ("post", "/admin/v1/orgs/{org}/grants"),
        ("post", "/admin/v1/orgs/{org}/gateways"),
    ] {
        let body = &doc["paths"][path][method]["requestBody"];
        assert_eq!(body["required"], true, "{method} {path}: {body}");
        assert!(
            doc["paths"][path][method]["responses"]["400"]["content"]["application/problem+json"]
                .is_object(),
            "{method} {path} documents its 400 as problem+json"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["admin_key"]["scheme"], "bearer");
    assert_eq!(schemes["gateway_key"]["scheme"], "bearer");
}

/// Runs each of the document's `patterns` on each of `texts` in JavaScript's own regex engine
/// (ECMA-262, the dialect JSON Schema names): `out[p][t]` is whether pattern `p` matches text `t`.
fn ecma_matches(patterns: &[&str], texts: &[String]) -> Vec<Vec<bool>> {
    let script = "const [p, t] = JSON.parse(process.argv[1]); \
                  console.log(JSON.stringify(p.map(r => t.map(s => new RegExp(r).test(s)))));";
    let out = std::process::Command::new("node")
        .args([
            "-e",
            script,
            &serde_json::json!([patterns, texts]).to_string(),
        ])
        .output()
        .expect("node runs (the tests need Node.js: see docs/testing.md)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("node prints the verdicts")
}

/// "Not blank" and "at most N characters" mean the same to a client that validates by the
/// document as to the API: every white-space-like character, and lengths counted in
/// characters. (schemathesis found the first: a gateway named U+0085 was valid by the
/// document's `\S` in ECMA-262 and refused by the API, which trims Unicode white space.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_blank_and_lengths_mean_the_same_to_the_document_and_the_api() {
    let doc = auth_broker::http::openapi::document_json();
    let schemas = &doc["components"]["schemas"];
    let name = &schemas["GatewayInput"]["properties"]["name"];
    let audience = &schemas["ConnectorInput"]["properties"]["audience"];
    assert_eq!(name["maxLength"], 200, "{name}");
    let patterns = [
        name["pattern"].as_str().expect("name has a pattern"),
        audience["pattern"]
            .as_str()
            .expect("audience has a pattern"),
    ];
    // Unicode White_Space, the other characters some dialect calls space, and two that are not.
    let mut texts: Vec<String> = "\t\n\u{b}\u{c}\r \u{85}\u{a0}\u{1680}\u{2000}\u{2001}\u{2002}\
                                  \u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200a}\
                                  \u{2028}\u{2029}\u{202f}\u{205f}\u{3000}\u{feff}\u{180e}\u{200b}\
                                  \u{1c}\u{1d}\u{1e}\u{1f}aé"
        .chars()
        .map(String::from)
        .collect();
    texts.push("  \u{3000}".into());
    let verdicts = ecma_matches(&patterns, &texts);

    let s = server(Backend::Sqlite).await;
    for (i, text) in texts.iter().enumerate() {
        let r = s
            .admin(
                Method::POST,
                "/admin/v1/orgs/acme/gateways",
                Some(serde_json::json!({ "name": text })),
            )
            .await;
        let want = if verdicts[0][i] {
            StatusCode::CREATED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status, want, "gateway name {text:?}: {:?}", r.body);
        let r = s
            .admin(
                Method::POST,
                "/admin/v1/orgs/acme/connectors",
                Some(serde_json::json!({
                    "id": format!("blank-{i}"), "strategy": "broker_jwt", "audience": text,
                })),
            )
            .await;
        let want = if verdicts[1][i] {
            StatusCode::CREATED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status, want, "audience {text:?}: {:?}", r.body);
    }
    // maxLength counts characters: 200 two-byte characters are a valid name, 201 are not.
    for (n, want) in [(200, StatusCode::CREATED), (201, StatusCode::BAD_REQUEST)] {
        let r = s
            .admin(
                Method::POST,
                "/admin/v1/orgs/acme/gateways",
                Some(serde_json::json!({ "name": "é".repeat(n) })),
            )
            .await;
        assert_eq!(r.status, want, "{n} characters: {:?}", r.body);
    }
    s.stop().await;
}
