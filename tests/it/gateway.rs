//! The gateway API end to end: provision over SCIM, grant, vend, deactivate (Okta and Entra
//! forms), and see the token gone everywhere — on PostgreSQL + Redis and on the embedded
//! SQLite + in-process vault. Races and replicas are in `races`, key rotation and the I/O
//! threads in `serving`.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, GLOBEX_GATEWAY, TestServer, engineer_in_group as engineer,
    fresh_database, jwt_claims, test_config, with_github, with_redis,
};

mod races;
mod serving;

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Clone, Copy, Debug)]
enum Vault {
    Redis,
    Memory,
}

async fn server(backend: Backend, vault: Vault) -> TestServer {
    let (url, dir) = fresh_database(backend).await;
    let mut cfg = with_github(test_config(&url, &dir));
    if let Vault::Redis = vault {
        cfg = with_redis(cfg, &redis_url());
    }
    TestServer::start_with(backend, cfg).await
}

async fn vend_and_revoke(backend: Backend, vault: Vault) {
    let s = server(backend, vault).await;
    let (ann, _) = engineer(&s, "ann@acme.example").await;

    let r = s.vend(&ann).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let token = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["user_id"], ann.as_str());
    assert_eq!(r.body["scopes"], json!(["repo:read", "repo:write"]));
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let claims = jwt_claims(&token);
    assert_eq!(claims["aud"], "https://mcp.github.example");
    assert_eq!(claims["sub"], ann.as_str());
    assert_eq!(claims["scope"], "repo:read repo:write");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    // The org's JWKS verifies it.
    let jwks = s.get_json("/orgs/acme/jwks.json").await;
    let keys: Vec<auth_broker::crypto::signing::VerifyingKey> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| auth_broker::crypto::signing::VerifyingKey::from_jwk(k).unwrap())
        .collect();
    let now = claims["iat"].as_i64().unwrap();
    let iss = claims["iss"].as_str().unwrap();
    let verified =
        crate::issuer::verify_as_resource(&token, &keys, iss, "https://mcp.github.example", now)
            .expect("token verifies against the JWKS");
    assert_eq!(verified.sub, ann.as_str());
    let meta = s
        .get_json("/.well-known/oauth-authorization-server/orgs/acme")
        .await;
    assert_eq!(meta["issuer"], claims["iss"]);

    // Warm: the same token again, from the vault.
    let r2 = s.vend(&ann).await;
    assert_eq!(r2.body["access_token"], token.as_str());
    assert_eq!(s.introspect(&token).await["active"], true);

    // A narrower scope set is a different token carrying only that scope.
    let r = s
        .gateway(ACME_GATEWAY, Method::POST, "/internal/v1/token",
            Some(json!({"org": "acme", "user": {"user_name": "ANN@acme.example"}, "connector": "github", "scopes": ["repo:read"]})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["scopes"], json!(["repo:read"]));
    let narrow = r.body["access_token"].as_str().unwrap().to_string();
    assert_ne!(narrow, token);

    // Okta deactivation: before the SCIM response returns, the tokens are gone.
    let r = s.okta_deactivate(&ann).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.introspect(&token).await["active"], false);
    assert_eq!(s.introspect(&narrow).await["active"], false);
    let r = s.vend(&ann).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["code"], "user_inactive");
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json")
    );
    let view = s.user_view(&ann).await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    assert_eq!(
        view.body["live_tokens"],
        json!([]),
        "the vault holds nothing for her"
    );
    let receipts = s.offboarding_of(&ann).await;
    assert_eq!(receipts.body["receipts"][0]["reason"], "scim.user.patch");
    assert_eq!(
        receipts.body["receipts"][0]["connectors"],
        json!(["github"])
    );

    // Reactivate, vend again, then Entra's soft delete.
    let r = s.acme().set_active_entra(&ann, true).await;
    assert_eq!(r.body["active"], true);
    let r = s.vend(&ann).await;
    assert_eq!(r.status, StatusCode::OK);
    let again = r.body["access_token"].as_str().unwrap().to_string();
    assert_ne!(again, token, "a revoked token is never served again");
    assert_eq!(
        s.introspect(&token).await["active"],
        false,
        "reactivation does not revive old tokens"
    );
    s.acme().set_active_entra(&ann, false).await;
    assert_eq!(s.vend(&ann).await.body["code"], "user_inactive");
    assert_eq!(s.introspect(&again).await["active"], false);

    // Audit: the vends and the revocations, never the token. Repeated vends are folded for a
    // moment before they are written: wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let records2 = loop {
        let audit = s.audit_of(&ann).await;
        let records = audit.body["records"].as_array().unwrap().clone();
        let text = serde_json::to_string(&records).unwrap();
        if text.contains("user_inactive") || Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = serde_json::to_string(&records2).unwrap();
    assert!(text.contains("token.vend"), "{text}");
    assert!(text.contains("user_inactive"));
    assert!(text.contains("access.revoke"));
    assert!(!text.contains(&token), "no token in the audit log");
    s.stop().await;
}

mod vend_and_revoke {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_redis() {
        vend_and_revoke(Backend::Postgres, Vault::Redis).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_memory() {
        vend_and_revoke(Backend::Sqlite, Vault::Memory).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_removal_and_grant_deletion_revoke() {
    let s = server(Backend::Postgres, Vault::Redis).await;
    let (bo, gid) = engineer(&s, "bo@acme.example").await;
    let token = s.vend(&bo).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Okta removes her from the group: entitlement and token gone before the response.
    let r = s
        .acme()
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
            {"op": "remove", "path": format!("members[value eq \"{bo}\"]")}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.introspect(&token).await["active"], false);
    let r = s.vend(&bo).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["code"], "not_entitled");

    // Back in the group; then the admin deletes the grant.
    s.acme()
        .patch(
            &format!("/Groups/{gid}"),
            json!({"schemas": [PATCH], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": bo}]}]}),
        )
        .await;
    let token = s.vend(&bo).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .admin(
            Method::DELETE,
            "/admin/v1/orgs/acme/grants/eng-github",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_eq!(s.introspect(&token).await["active"], false);
    assert_eq!(s.vend(&bo).await.body["code"], "not_entitled");

    // A grant through the admin API brings access back; disabling the connector revokes.
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/grants",
            Some(json!({
            "group": "Engineering", "connector": "github", "scopes": ["repo:read"],
            "actions": {"read": "allow", "write": "needs_approval", "delete": "blocked"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = s.vend(&bo).await;
    assert_eq!(r.body["scopes"], json!(["repo:read"]));
    let token = r.body["access_token"].as_str().unwrap().to_string();
    let r = s
        .admin(
            Method::PUT,
            "/admin/v1/orgs/acme/connectors/github",
            Some(json!({
            "strategy": "broker_jwt", "audience": "https://mcp.github.example",
            "scopes": ["repo:read", "repo:write"], "enabled": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(s.introspect(&token).await["active"], false);
    assert_eq!(s.vend(&bo).await.body["code"], "not_entitled");

    // Kill switch.
    s.admin(
        Method::PUT,
        "/admin/v1/orgs/acme/connectors/github",
        Some(json!({
        "strategy": "broker_jwt", "audience": "https://mcp.github.example",
        "scopes": ["repo:read", "repo:write"], "enabled": true})),
    )
    .await;
    let token = s.vend(&bo).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.kill_switch(&bo).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(s.introspect(&token).await["active"], false);
    let receipts = s.offboarding_of(&bo).await;
    let reasons: Vec<&str> = receipts.body["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"admin.kill_switch"), "{reasons:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors() {
    let s = server(Backend::Sqlite, Vault::Memory).await;
    let (ann, _) = engineer(&s, "ann@acme.example").await;
    let outsider = s.acme().create_user("out@acme.example").await;
    let call = |key: &'static str, body: serde_json::Value| {
        let s = &s;
        async move {
            s.gateway(key, Method::POST, "/internal/v1/token", Some(body))
                .await
        }
    };
    let r = call(
        "ab_gw_wrong",
        json!({"org": "acme", "user": {"id": ann}, "connector": "github"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let r = call(
        GLOBEX_GATEWAY,
        json!({"org": "acme", "user": {"id": ann}, "connector": "github"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("org_forbidden"))
    );
    let r = call(
        ACME_GATEWAY,
        json!({"org": "acme", "user": {"id": "nobody"}, "connector": "github"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_user"))
    );
    let r = call(
        ACME_GATEWAY,
        json!({"org": "acme", "user": {"id": ann}, "connector": "gitlab"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_connector"))
    );
    let r = call(
        ACME_GATEWAY,
        json!({"org": "acme", "user": {"id": outsider}, "connector": "github"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_entitled"))
    );
    let r = call(
        ACME_GATEWAY,
        json!({"org": "acme", "user": {"id": ann}, "connector": "github", "scopes": ["admin:org"]}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("scope_not_entitled"))
    );
    let r = call(
        ACME_GATEWAY,
        json!({"org": "acme", "user": {"id": ann, "email": "x"}, "connector": "github"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(ACME_GATEWAY, json!({"org": "acme"})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["code"], "malformed_request");
    let big = "x".repeat(1_100_000);
    let r = call(
        ACME_GATEWAY,
        json!({"org": "acme", "user": {"id": big}, "connector": "github"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = s
        .gateway(ACME_GATEWAY, Method::POST, "/internal/v1/token", None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Authorize and entitlements: what a gateway needs to filter tools/list.
    let r = s.gateway(ACME_GATEWAY, Method::POST, "/internal/v1/authorize", Some(json!({
        "org": "acme", "user": {"email": "ann@acme.example"}, "connector": "github", "tool": "create_issue"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["decision"], "needs_approval");
    let r = s.gateway(ACME_GATEWAY, Method::POST, "/internal/v1/authorize", Some(json!({
        "org": "acme", "user": {"id": ann}, "connector": "github", "tool": "delete_repo", "category": "read"}))).await;
    assert_eq!(
        r.body["decision"], "blocked",
        "the connector's tool map overrides the hint"
    );
    let r = s.gateway(ACME_GATEWAY, Method::POST, "/internal/v1/authorize", Some(json!({
        "org": "acme", "user": {"id": ann}, "connector": "github", "tool": "list_repos", "category": "read"}))).await;
    assert_eq!(r.body["decision"], "allow");
    let r = s
        .gateway(
            ACME_GATEWAY,
            Method::POST,
            "/internal/v1/authorize",
            Some(json!({
        "org": "acme", "user": {"id": ann}, "connector": "github", "tool": "mystery"})),
        )
        .await;
    assert_eq!(
        r.body["decision"], "needs_approval",
        "unknown tools count as write"
    );
    let r = s
        .gateway(
            ACME_GATEWAY,
            Method::GET,
            "/internal/v1/entitlements?org=acme&user_name=ann%40acme.example",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["connectors"][0]["connector"], "github");
    assert_eq!(r.body["connectors"][0]["actions"]["delete"], "blocked");
    assert_eq!(
        r.body["connectors"][0]["tools"]["create_issue"],
        "needs_approval"
    );
    s.stop().await;
}
