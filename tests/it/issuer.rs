//! The broker as one authorization server per org: each org's issuer, keys and metadata;
//! introspection and revocation scoped to the caller (gateway keys to their orgs,
//! resource-server credentials to their connector); RFC 7009 revoking one token only.
//! Gateway keys across replicas are in `replicas`.

use auth_broker::config::{ConnectorConfig, GrantConfig};
use auth_broker::crypto::signing::{Expected, JwtError, VerifyingKey, verify_jwt};
use auth_broker::domain::connector::{Action, ActionSet, Strategy};
use auth_broker::service::tokens::AccessClaims;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::both_backends;
use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, GLOBEX_GATEWAY, Resp, TestServer, engineer_in_group, fresh_database,
    jwt_claims, test_config, with_github, with_redis,
};

mod replicas;
mod rotation;

fn connector(audience: &str, scopes: &[&str]) -> ConnectorConfig {
    ConnectorConfig {
        display_name: None,
        strategy: Strategy::BrokerJwt,
        audience: audience.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        tools: Default::default(),
        default_actions: None,
        enabled: true,
        token_ttl_secs: None,
        upstream: None,
    }
}

fn grant(id: &str, connector: &str, scopes: &[&str]) -> GrantConfig {
    GrantConfig {
        id: Some(id.into()),
        group: Some("Engineering".into()),
        group_id: None,
        connector: connector.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        actions: ActionSet {
            read: Action::Allow,
            write: Action::Allow,
            delete: Action::Blocked,
        },
    }
}

/// acme: `github` and `jira`; globex: its own `github` (same audience as acme's); Redis
/// vault on PostgreSQL, in-process vault on SQLite.
async fn server(backend: Backend) -> TestServer {
    let (url, dir) = fresh_database(backend).await;
    let mut cfg = with_github(test_config(&url, &dir));
    let acme = cfg.orgs.get_mut("acme").unwrap();
    acme.connectors.insert(
        "jira".into(),
        connector("https://mcp.jira.example", &["issue:read"]),
    );
    acme.grants.push(grant("eng-jira", "jira", &["issue:read"]));
    let globex = cfg.orgs.get_mut("globex").unwrap();
    globex.connectors.insert(
        "github".into(),
        connector("https://mcp.github.example", &["repo:read"]),
    );
    globex
        .grants
        .push(grant("globex-github", "github", &["repo:read"]));
    if backend == Backend::Postgres {
        cfg = with_redis(cfg, &redis_url());
    }
    TestServer::start_with(backend, cfg).await
}

/// Vends a token with a gateway key, asserting 200.
async fn vend(s: &TestServer, key: &str, org: &str, user: &str, connector: &str) -> String {
    let r = s
        .gateway(
            key,
            Method::POST,
            "/internal/v1/token",
            Some(json!({"org": org, "user": {"id": user}, "connector": connector})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["access_token"].as_str().unwrap().to_string()
}

/// Introspects with a credential, asserting 200; returns `active`.
async fn active(s: &TestServer, key: &str, token: &str) -> bool {
    let (status, body) = s.oauth("/oauth/introspect", key, token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["active"].as_bool().expect("active is a boolean")
}

/// A globex engineer (SCIM user in globex's Engineering group).
async fn globex_engineer(s: &TestServer, name: &str) -> String {
    let globex = s.globex();
    let id = globex.create_user(name).await;
    globex.create_group("Engineering", &[&id]).await;
    id
}

async fn keys_of(s: &TestServer, org: &str) -> Vec<VerifyingKey> {
    let jwks = s.get_json(&format!("/orgs/{org}/jwks.json")).await;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| VerifyingKey::from_jwk(k).unwrap())
        .collect()
}

/// Verifies a broker access token as a resource server would: `at+jwt`, the org's issuer, the
/// connector's audience, the org's published keys.
pub(crate) fn verify_as_resource(
    token: &str,
    keys: &[VerifyingKey],
    iss: &str,
    aud: &str,
    now: i64,
) -> Result<AccessClaims, JwtError> {
    let expected = Expected {
        typ: "at+jwt",
        iss,
        aud: Some(aud),
        now,
        leeway_secs: 5,
    };
    verify_jwt(token, keys, &expected)
}

async fn status_of(s: &TestServer, path: &str) -> StatusCode {
    s.http
        .get(format!("{}{path}", s.base()))
        .send()
        .await
        .unwrap()
        .status()
}

async fn each_org_is_its_own_issuer(backend: Backend) {
    let s = server(backend).await;
    let (ann, _) = engineer_in_group(&s, "ann@acme.example").await;
    let bo = globex_engineer(&s, "bo@globex.example").await;
    let a_token = vend(&s, ACME_GATEWAY, "acme", &ann, "github").await;
    let g_token = vend(&s, GLOBEX_GATEWAY, "globex", &bo, "github").await;
    let (a, g) = (jwt_claims(&a_token), jwt_claims(&g_token));

    // Per-org metadata naming the org's issuer, JWKS and the OAuth endpoints.
    for (org, claims) in [("acme", &a), ("globex", &g)] {
        let meta = s
            .get_json(&format!(
                "/.well-known/oauth-authorization-server/orgs/{org}"
            ))
            .await;
        let iss = meta["issuer"].as_str().unwrap();
        assert!(iss.ends_with(&format!("/orgs/{org}")), "{meta}");
        assert_eq!(claims["iss"], iss, "the token names its org's issuer");
        assert_eq!(
            meta["jwks_uri"],
            format!("{}/orgs/{org}/jwks.json", s.base()),
            "{meta}"
        );
        assert_eq!(
            meta["introspection_endpoint"],
            format!("{}/oauth/introspect", s.base())
        );
        assert_eq!(
            meta["revocation_endpoint"],
            format!("{}/oauth/revoke", s.base())
        );
    }
    assert_ne!(a["iss"], g["iss"]);
    // The former single-issuer documents are gone; an unknown org has none.
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server/orgs/initech",
        "/orgs/initech/jwks.json",
    ] {
        assert_eq!(status_of(&s, path).await, StatusCode::NOT_FOUND, "{path}");
    }

    // Own keys per org: acme's token verifies with acme's JWKS only.
    let now = a["iat"].as_i64().unwrap();
    let (acme_keys, globex_keys) = (keys_of(&s, "acme").await, keys_of(&s, "globex").await);
    assert!(
        acme_keys
            .iter()
            .all(|k| globex_keys.iter().all(|o| o.kid() != k.kid())),
        "no key is shared between orgs"
    );
    let (a_iss, a_aud) = (a["iss"].as_str().unwrap(), a["aud"].as_str().unwrap());
    let (g_iss, g_aud) = (g["iss"].as_str().unwrap(), g["aud"].as_str().unwrap());
    let claims = verify_as_resource(&a_token, &acme_keys, a_iss, a_aud, now)
        .expect("acme's JWKS verifies acme's token");
    assert_eq!(claims.ab_org, "acme");
    assert_eq!(
        verify_as_resource(&a_token, &globex_keys, a_iss, a_aud, now),
        Err(JwtError::UnknownKid),
        "globex's JWKS must not verify acme's token"
    );
    assert_eq!(
        verify_as_resource(&a_token, &acme_keys, g_iss, a_aud, now),
        Err(JwtError::WrongIssuer),
        "acme's token does not pass as globex's"
    );
    verify_as_resource(&g_token, &globex_keys, g_iss, g_aud, now)
        .expect("globex's JWKS verifies globex's token");

    // Org B's gateway key: acme's token is not active there, and revoking it does nothing.
    assert!(active(&s, ACME_GATEWAY, &a_token).await);
    assert!(
        !active(&s, GLOBEX_GATEWAY, &a_token).await,
        "other org's token"
    );
    assert!(
        !active(&s, ACME_GATEWAY, &g_token).await,
        "other org's token"
    );
    assert!(active(&s, GLOBEX_GATEWAY, &g_token).await);
    let (status, _) = s.oauth("/oauth/revoke", GLOBEX_GATEWAY, &a_token).await;
    assert_eq!(status, StatusCode::OK, "RFC 7009: 200 either way");
    assert!(
        active(&s, ACME_GATEWAY, &a_token).await,
        "another org's revoke has no effect"
    );
    s.stop().await;
}
both_backends!(each_org_is_its_own_issuer);

async fn resource_credentials_see_only_their_connector(backend: Backend) {
    let s = server(backend).await;
    let (ann, _) = engineer_in_group(&s, "ann@acme.example").await;
    let bo = globex_engineer(&s, "bo@globex.example").await;
    let github = vend(&s, ACME_GATEWAY, "acme", &ann, "github").await;
    let jira = vend(&s, ACME_GATEWAY, "acme", &ann, "jira").await;
    let globex_github = vend(&s, GLOBEX_GATEWAY, "globex", &bo, "github").await;

    let path = "/admin/v1/orgs/acme/connectors/github/resource-credentials";
    // Unknown connector, wrong org's admin key.
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/connectors/nope/resource-credentials",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/globex/connectors/github/resource-credentials",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    // Created: the secret once, never cached, never listed.
    let r = s
        .admin(Method::POST, path, Some(json!({"name": "github-mcp"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let id = r.body["id"].as_str().unwrap().to_string();
    let secret = r.body["secret"].as_str().unwrap().to_string();
    crate::log_capture::register(&secret);
    let list = s.admin(Method::GET, path, None).await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let text = list.body.to_string();
    assert!(text.contains(&id), "{text}");
    assert!(!text.contains(&secret), "a listing shows no secret");
    assert_eq!(list.body["resource_credentials"][0]["name"], "github-mcp");
    assert!(list.body["resource_credentials"][0]["secret"].is_null());

    // Its connector's tokens only.
    assert!(active(&s, &secret, &github).await, "its connector's token");
    assert!(
        !active(&s, &secret, &jira).await,
        "another connector's token"
    );
    assert!(
        !active(&s, &secret, &globex_github).await,
        "another org's token, same audience"
    );
    // HTTP Basic works as well, with the credential's id as client id (and only with it).
    let basic = |id: &str, secret: &str| {
        let req = s.http.post(format!("{}/oauth/introspect", s.base()));
        req.basic_auth(id, Some(secret))
            .form(&[("token", github.as_str())])
    };
    let r = basic(&id, &secret).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    let r = basic("rc-someone-else", &secret).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // It revokes nothing of another connector.
    let (status, _) = s.oauth("/oauth/revoke", &secret, &jira).await;
    assert_eq!(status, StatusCode::OK);
    assert!(active(&s, ACME_GATEWAY, &jira).await);
    // It may revoke its own connector's tokens.
    let other = vend(&s, ACME_GATEWAY, "acme", &ann, "github").await;
    assert_eq!(other, github, "still the cached token");
    let (status, _) = s.oauth("/oauth/revoke", &secret, &github).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !active(&s, ACME_GATEWAY, &github).await,
        "revoked by its resource server"
    );
    let github = vend(&s, ACME_GATEWAY, "acme", &ann, "github").await;
    assert!(active(&s, &secret, &github).await, "the new one is active");
    // It is no gateway key: no vend, no other gateway route.
    let r: Resp = s
        .gateway(
            &secret,
            Method::POST,
            "/internal/v1/token",
            Some(json!({"org": "acme", "user": {"id": ann}, "connector": "github"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    let r = s
        .gateway(
            &secret,
            Method::GET,
            &format!("/internal/v1/entitlements?org=acme&user_id={ann}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);

    // Revoked: invalid_client from then on.
    let r = s.admin(Method::DELETE, &format!("{path}/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let (status, body) = s.oauth("/oauth/introspect", &secret, &github).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    let r = s.admin(Method::DELETE, &format!("{path}/{id}"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    let list = s.admin(Method::GET, path, None).await;
    assert_eq!(list.body["resource_credentials"], json!([]));

    // Deleting a connector revokes its credentials: a connector re-created under the same id
    // does not inherit them.
    let linear = json!({"id": "linear", "strategy": "broker_jwt",
        "audience": "https://mcp.linear.example", "scopes": ["issue:read"]});
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/connectors",
            Some(linear.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let creds = "/admin/v1/orgs/acme/connectors/linear/resource-credentials";
    let r = s.admin(Method::POST, creds, None).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let linear_secret = r.body["secret"].as_str().unwrap().to_string();
    crate::log_capture::register(&linear_secret);
    assert!(
        !active(&s, &linear_secret, &github).await,
        "authenticates, sees nothing"
    );
    let r = s
        .admin(
            Method::DELETE,
            "/admin/v1/orgs/acme/connectors/linear",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    let r = s
        .admin(Method::POST, "/admin/v1/orgs/acme/connectors", Some(linear))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let (status, _) = s.oauth("/oauth/introspect", &linear_secret, &github).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.admin(Method::GET, creds, None).await.body["resource_credentials"],
        json!([])
    );
    s.stop().await;
}
both_backends!(resource_credentials_see_only_their_connector);

async fn rfc7009_revokes_that_one_token(backend: Backend) {
    let s = server(backend).await;
    let (ann, _) = engineer_in_group(&s, "ann@acme.example").await;
    let github = vend(&s, ACME_GATEWAY, "acme", &ann, "github").await;
    let jira = vend(&s, ACME_GATEWAY, "acme", &ann, "jira").await;
    let mut events = s.events().await;
    let (status, _) = s.oauth("/oauth/revoke", ACME_GATEWAY, &github).await;
    assert_eq!(status, StatusCode::OK);
    // The gateways are told which token ended (by its jti).
    let jti = jwt_claims(&github)["jti"].as_str().unwrap().to_string();
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !seen.contains(&jti) && std::time::Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(std::time::Duration::from_secs(1), events.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(
        seen.contains("event: token.revoked") && seen.contains(&format!("\"jti\":\"{jti}\"")),
        "{seen}"
    );
    drop(events);
    assert!(
        !active(&s, ACME_GATEWAY, &github).await,
        "the revoked token"
    );
    assert!(
        active(&s, ACME_GATEWAY, &jira).await,
        "the user's other token is untouched"
    );
    // The user vends again: a new token, not the revoked one from the vault.
    let again = vend(&s, ACME_GATEWAY, "acme", &ann, "github").await;
    assert_ne!(again, github);
    assert_ne!(jwt_claims(&again)["jti"], jwt_claims(&github)["jti"]);
    assert!(active(&s, ACME_GATEWAY, &again).await);
    assert!(!active(&s, ACME_GATEWAY, &github).await);
    assert_eq!(
        vend(&s, ACME_GATEWAY, "acme", &ann, "jira").await,
        jira,
        "the other token is still the one the vault serves"
    );
    // No kill switch: the user's epoch did not move.
    let view = s.user_view(&ann).await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    let r = s
        .admin(
            Method::GET,
            &format!("/admin/v1/orgs/acme/users/{ann}/offboarding"),
            None,
        )
        .await;
    assert_eq!(r.body["receipts"], json!([]), "no revocation of the user");
    // Audited: which token (its jti, never the token), by whom.
    let jti = jwt_claims(&github)["jti"].clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let audit = s.audit_of(&ann).await;
        let records = audit.body["records"].as_array().unwrap().clone();
        if let Some(rec) = records.iter().find(|r| r["action"] == "token.revoke") {
            assert_eq!(rec["summary"]["jti"], jti, "{rec}");
            assert_eq!(rec["summary"]["connector"], "github", "{rec}");
            assert!(
                rec["actor"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("gateway:"))
            );
            assert!(!audit.body.to_string().contains(&github));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no token.revoke record: {records:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
}
both_backends!(rfc7009_revokes_that_one_token);
