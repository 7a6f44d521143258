//! Bad input gets a precise SCIM error and changes nothing.

use auth_broker::domain::OrgId;
use auth_broker::domain::ports::AuditLog;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::support::{Backend, TestServer, fresh_database, test_config};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn raw(s: &TestServer, method: Method, path: &str, body: &str) -> crate::support::Resp {
    let resp = s
        .http
        .request(method, format!("{}{path}", s.scim("acme")))
        .bearer_auth(crate::support::ACME_TOKEN)
        .header("content-type", "application/scim+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    crate::support::read(resp).await
}

async fn bad_input(backend: Backend) {
    let s = TestServer::start(backend).await;
    let acme = s.acme();
    let id = acme.create_user("kim@acme.example").await;

    let r = raw(&s, Method::POST, "/Users", "{\"userName\": ").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["scimType"], "invalidSyntax");
    let r = raw(&s, Method::POST, "/Users", "[1,2]").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = acme.post("/Users", json!({"userName": ""})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["scimType"], "invalidValue");
    let r = acme
        .post(
            "/Users",
            json!({"userName": "x@acme.example", "active": "maybe"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);

    for bad in [
        "userName+eq",
        "userName+zz+%22x%22",
        "(userName+eq+%22x%22",
        "userName+eq+%22x",
        "%22x%22",
    ] {
        let r = acme.get(&format!("/Users?filter={bad}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
        assert_eq!(r.body["scimType"], "invalidFilter", "{bad}");
    }
    let r = acme.get("/Users?count=abc").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = acme.get("/Users?sortOrder=sideways").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    let r = acme
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "emails[type eq", "value": "x"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["scimType"], "invalidPath");
    let r = acme
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "remove"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["scimType"], "noTarget");
    let r = acme
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "jump", "path": "active", "value": false}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = acme
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "id", "value": "mine"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["scimType"], "mutability");

    // A PATCH whose second op fails leaves the first undone: one transaction or nothing.
    let audit_before = s
        .store()
        .await
        .audit_after(&OrgId::new("acme"), 0, 1000)
        .await
        .unwrap()
        .len();
    let r = acme
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "active", "value": false},
        {"op": "replace", "path": "userName", "value": 42}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = acme.get(&format!("/Users/{id}")).await;
    assert_eq!(r.body["active"], true);
    assert_eq!(r.header("etag").as_deref(), Some("W/\"1\""));
    let audit_after = s
        .store()
        .await
        .audit_after(&OrgId::new("acme"), 0, 1000)
        .await
        .unwrap()
        .len();
    assert_eq!(
        audit_before, audit_after,
        "a failed request writes no audit record"
    );

    // Renaming onto a taken userName is a 409 and nothing changes.
    acme.create_user("lee@acme.example").await;
    let r = acme
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": [PATCH], "Operations": [
        {"op": "replace", "path": "userName", "value": "LEE@acme.example"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(
        acme.get(&format!("/Users/{id}")).await.body["userName"],
        "kim@acme.example"
    );

    // Bodies over 1 MiB: 413 with a SCIM error body.
    let big = format!(
        "{{\"userName\":\"big@acme.example\",\"displayName\":\"{}\"}}",
        "x".repeat(1_100_000)
    );
    let r = raw(&s, Method::POST, "/Users", &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["status"], "413");
    assert_eq!(
        acme.get("/Users?filter=userName+eq+%22big%40acme.example%22")
            .await
            .body["totalResults"],
        0
    );
    s.stop().await;
}
both_backends!(bad_input);

async fn unbounded_filters_are_bounded(backend: Backend) {
    let (url, dir) = fresh_database(backend).await;
    let mut cfg = test_config(&url, &dir);
    cfg.scim.max_results = 5;
    cfg.scim.default_count = 5;
    cfg.scim.max_filter_scan = 10;
    let s = TestServer::start_with(backend, cfg).await;
    let acme = s.acme();
    for i in 0..11 {
        acme.create_user(&format!("u{i:02}@acme.example")).await;
    }
    let r = acme.get("/Users?count=500").await;
    assert_eq!(
        r.body["itemsPerPage"], 5,
        "count is capped at scim.max_results"
    );
    assert_eq!(r.body["totalResults"], 11);
    let r = acme.get("/Users?filter=userName+co+%22acme%22").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["scimType"], "tooMany");
    // An indexed lookup is still answered.
    let r = acme
        .get("/Users?filter=userName+eq+%22u03%40acme.example%22")
        .await;
    assert_eq!(r.body["totalResults"], 1);
    s.stop().await;
}
both_backends!(unbounded_filters_are_bounded);
