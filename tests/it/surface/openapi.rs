//! The OpenAPI document against the router: every documented operation is served (and
//! answers 401/404 as documented without a key), every declared route is documented, and the
//! statuses the API answers are listed.

use std::collections::BTreeSet;

use auth_broker::http::openapi::ROUTES;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{assert_problem, server};
use crate::support::{Backend, Resp, TestServer, read};

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

    let documented: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, ..)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented.len(), ROUTES.len(), "no operation listed twice");
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
    // The document holds nothing beyond ROUTES.
    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
    for (path, item) in paths {
        for m in item.as_object().unwrap().keys() {
            assert!(METHODS.contains(&m.as_str()), "{m} {path}");
            assert!(
                documented.contains(&(m.clone(), path.clone())),
                "{m} {path} is documented but not in ROUTES"
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
    let documented: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, ..)| (m.to_string(), p.to_string()))
        .collect();
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
