//! The gateway API end to end: provision over SCIM, grant, vend, deactivate (Okta and Entra
//! forms), and see the token gone everywhere — on PostgreSQL + Redis and on the embedded
//! SQLite + in-process vault.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, GLOBEX_GATEWAY, TestServer, engineer_in_group as engineer,
    fresh_database, jwt_claims, test_config, with_github, with_redis,
};

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
    // The JWKS verifies it.
    let jwks = s.get_json("/.well-known/jwks.json").await;
    let keys: Vec<auth_broker::crypto::signing::VerifyingKey> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| auth_broker::crypto::signing::VerifyingKey::from_jwk(k).unwrap())
        .collect();
    let now = claims["iat"].as_i64().unwrap();
    auth_broker::crypto::signing::verify_jwt(&token, &keys, now, 5)
        .expect("token verifies against the JWKS");
    let meta = s.get_json("/.well-known/oauth-authorization-server").await;
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
    let view = s
        .admin(
            Method::GET,
            &format!("/admin/v1/orgs/acme/users/{ann}"),
            None,
        )
        .await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    assert_eq!(
        view.body["live_tokens"],
        json!([]),
        "the vault holds nothing for her"
    );
    let receipts = s
        .admin(
            Method::GET,
            &format!("/admin/v1/orgs/acme/users/{ann}/offboarding"),
            None,
        )
        .await;
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
    let r = s
        .admin(
            Method::POST,
            &format!("/admin/v1/orgs/acme/users/{bo}/revoke"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(s.introspect(&token).await["active"], false);
    let receipts = s
        .admin(
            Method::GET,
            &format!("/admin/v1/orgs/acme/users/{bo}/offboarding"),
            None,
        )
        .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_token_after_the_deactivation_answers() {
    let s = server(Backend::Postgres, Vault::Redis).await;
    let (ann, _) = engineer(&s, "race@acme.example").await;
    assert_eq!(s.vend(&ann).await.status, StatusCode::OK);
    let base = s.base();
    let http = s.http.clone();
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (http, base, ann) = (http.clone(), base.clone(), ann.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(300 * (i % 20))).await;
            let sent = http
                .post(format!("{base}/internal/v1/token"))
                .bearer_auth(ACME_GATEWAY)
                .json(&json!({"org": "acme", "user": {"id": ann}, "connector": "github",
                              "scopes": if i % 3 == 0 { json!(["repo:read"]) } else { json!(null) }}))
                .send()
                .await;
            // A response the vend fence withheld (too late to send) drops the connection.
            let Ok(r) = sent else {
                return (None, Instant::now(), serde_json::Value::Null);
            };
            let status = r.status();
            match r.json::<serde_json::Value>().await {
                Ok(body) => (Some(status), Instant::now(), body),
                Err(_) => (None, Instant::now(), serde_json::Value::Null),
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    let r = s.okta_deactivate(&ann).await;
    let answered = Instant::now();
    assert_eq!(r.status, StatusCode::OK);
    let mut served = Vec::new();
    let mut withheld = 0;
    for t in tasks {
        let (status, at, body) = t.await.unwrap();
        let Some(status) = status else {
            withheld += 1;
            continue;
        };
        if status == StatusCode::OK {
            assert!(
                at <= answered,
                "a token was returned after the deactivation answered"
            );
            served.push(body["access_token"].as_str().unwrap().to_string());
        } else {
            assert!(
                matches!(
                    status,
                    StatusCode::FORBIDDEN | StatusCode::SERVICE_UNAVAILABLE
                ),
                "{status}"
            );
        }
    }
    eprintln!(
        "race: {} served before the answer, {withheld} withheld by the fence",
        served.len()
    );
    assert!(withheld < 100, "some vends were answered");
    // Nothing remains in the vault, and nothing that was served is still active.
    let view = s
        .admin(
            Method::GET,
            &format!("/admin/v1/orgs/acme/users/{ann}"),
            None,
        )
        .await;
    assert_eq!(view.body["live_tokens"], json!([]));
    for t in served {
        assert_eq!(s.introspect(&t).await["active"], false);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_see_each_others_revocations() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    // Replicas behind one address share one issuer (each test server has its own port).
    cfg.broker.issuer = Some("https://broker.acme.test".into());
    let a = TestServer::start_with(Backend::Postgres, cfg.clone()).await;
    let b = TestServer::start_with(Backend::Postgres, cfg).await;
    let (ann, _) = engineer(&a, "two@acme.example").await;
    // Subscribe to B's event stream before the revocation happens on A.
    let mut events = b.events().await;
    let token = a.vend(&ann).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        b.vend(&ann).await.body["access_token"],
        token.as_str(),
        "one vault, one token"
    );
    assert_eq!(
        b.introspect(&token).await["active"],
        true,
        "B honours A's token"
    );
    a.acme().delete(&format!("/Users/{ann}")).await;
    let r = b.vend(&ann).await;
    // The vault remembers the deleted user as inactive: fail closed without a database query.
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], "user_inactive");
    assert_eq!(b.introspect(&token).await["active"], false);
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains("user.deactivated") && Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(1), events.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.contains("event: user.deactivated"), "{seen}");
    assert!(seen.contains(&ann));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_key_rotation_reseals_online_and_signing_keys_rotate_with_overlap() {
    use auth_broker::config::SecretRef;
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut base = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    // Replicas share one issuer (each test server listens on its own port).
    base.broker.issuer = Some("https://broker.acme.test".into());
    let a = TestServer::start_with(Backend::Postgres, base.clone()).await;
    let (ann, _) = engineer(&a, "rotate@acme.example").await;
    let token = a.vend(&ann).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    a.halt().await;

    // Step 1: every replica learns k2 and seals with it; k1 still opens old records.
    let k2 = dir.join("k2");
    let key: [u8; 32] = rand::random();
    use base64::Engine;
    std::fs::write(&k2, base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
    let mut both = base.clone();
    both.vault.keys.insert(
        "k2".into(),
        SecretRef {
            env: None,
            file: Some(k2.clone()),
        },
    );
    both.vault.active_key = Some("k2".into());
    // And the signing key is due for rotation at this start.
    both.broker.signing_key_max_age_days = 0;
    let b = TestServer::start_with(Backend::Postgres, both.clone()).await;
    assert_eq!(
        b.vend(&ann).await.body["access_token"],
        token.as_str(),
        "k1 records still open"
    );
    let jwks: serde_json::Value = b
        .http
        .get(format!("{}/.well-known/jwks.json", b.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "old signing key stays published: {jwks}"
    );
    assert_eq!(
        b.introspect(&token).await["active"],
        true,
        "tokens of the retired key still verify"
    );

    // Step 2: re-seal online, while B serves.
    let report = auth_broker::rotate_keys(&both).await.unwrap();
    assert!(report.resealed >= 1, "{report:?}");
    assert_eq!(report.unreadable, 0);
    assert_eq!(
        report.signing_keys, 1,
        "the retired signing key, sealed under k1, is re-sealed"
    );
    let again = auth_broker::rotate_keys(&both).await.unwrap();
    assert_eq!(again.resealed, 0, "idempotent: {again:?}");
    b.halt().await;

    // Step 3: k1 is gone; everything still opens.
    let mut only_k2 = both.clone();
    only_k2.vault.keys.remove("k1");
    only_k2.broker.signing_key_max_age_days = 30;
    let c = TestServer::start_with(Backend::Postgres, only_k2).await;
    assert_eq!(
        c.vend(&ann).await.body["access_token"],
        token.as_str(),
        "re-sealed under k2"
    );
    c.stop().await;
}

/// The binary's way of serving: several single-threaded runtimes, each given its share of the
/// connections and its own vault connection. Fresh connections land on every thread; all
/// serve the one stored token, all see the deactivation, and the vends folded in the audit
/// writer at shutdown are written before the store closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_threads_share_one_port_one_vault_and_the_audit_log() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    let s = TestServer::start_threaded(Backend::Postgres, cfg.clone(), 3).await;
    let (ann, _) = engineer(&s, "ann@acme.example").await;
    let body = json!({"org": "acme", "user": {"id": ann}, "connector": "github"});
    // A new connection per vend: they are handed to the three threads in turn.
    let vend_fresh = || async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let r = http
            .post(format!("{}/internal/v1/token", s.base()))
            .bearer_auth(ACME_GATEWAY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    let mut tokens = std::collections::HashSet::new();
    for _ in 0..24 {
        let (status, body) = vend_fresh().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokens.insert(body["access_token"].as_str().unwrap().to_string());
    }
    assert_eq!(tokens.len(), 1, "every thread serves the one stored token");

    let r = s.okta_deactivate(&ann).await;
    assert_eq!(r.status, StatusCode::OK);
    for _ in 0..24 {
        let (status, body) = vend_fresh().await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["code"], "user_inactive");
    }

    // Stopped at once: the folded vend records are written on the way out.
    s.halt().await;
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    let r = s.audit_of(&ann).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let counted = |outcome: &str| -> u64 {
        r.body["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rec| rec["action"] == "token.vend" && rec["summary"]["outcome"] == outcome)
            .map(|rec| rec["summary"]["count"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(counted("ok"), 24, "{:?}", r.body);
    assert_eq!(counted("user_inactive"), 24, "{:?}", r.body);
    s.stop().await;
}
