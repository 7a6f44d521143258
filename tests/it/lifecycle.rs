//! A broker-minted token's life, on PostgreSQL + Redis: what it carries (RFC 9068), how it is
//! re-minted before it expires, how RFC 7009 revocation ends it, and what every revocation
//! trigger leaves behind (refusal, inactive introspection, event, receipt, audit record).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, TestServer, engineer_in_group as engineer, fresh_database, jwt_claims,
    test_config, with_github, with_redis,
};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

async fn server_with(tune: impl FnOnce(&mut auth_broker::config::Config)) -> TestServer {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    tune(&mut cfg);
    TestServer::start_with(Backend::Postgres, cfg).await
}

fn token_of(r: &crate::support::Resp) -> String {
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["access_token"].as_str().unwrap().to_string()
}

fn header_of(token: &str) -> Value {
    use base64::Engine;
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(h)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_tokens_are_rfc9068_and_the_metadata_is_rfc8414() {
    let s = server_with(|_| {}).await;
    let (ann, _) = engineer(&s, "claims@acme.example").await;
    let (bo, _) = engineer(&s, "claims2@acme.example").await;
    let t1 = token_of(&s.vend(&ann).await);
    let t2 = token_of(&s.vend(&bo).await);

    let h = header_of(&t1);
    assert_eq!(h["typ"], "at+jwt", "RFC 9068 §2.1");
    assert_eq!(h["alg"], "ES256");
    assert!(h["kid"].as_str().is_some_and(|k| !k.is_empty()));
    let (c1, c2) = (jwt_claims(&t1), jwt_claims(&t2));
    for claim in [
        "iss",
        "sub",
        "aud",
        "client_id",
        "scope",
        "jti",
        "iat",
        "exp",
    ] {
        assert!(!c1[claim].is_null(), "{claim} missing from {c1}");
    }
    assert_eq!(c1["aud"], "https://mcp.github.example");
    assert_eq!(c1["sub"], ann.as_str());
    assert_ne!(c1["jti"], c2["jti"], "every token has its own jti");
    assert_eq!(c1["client_id"], c2["client_id"], "the same gateway asked");
    let lifetime = c1["exp"].as_i64().unwrap() - c1["iat"].as_i64().unwrap();
    assert_eq!(lifetime, 900, "the configured default lifetime");

    // Introspection answers with the same claims while active.
    let i = s.introspect(&t1).await;
    assert_eq!(i["active"], true);
    for claim in ["iss", "sub", "aud", "client_id", "scope", "jti", "exp"] {
        assert_eq!(i[claim], c1[claim], "{claim}");
    }

    let meta = s
        .get_json("/.well-known/oauth-authorization-server/orgs/acme")
        .await;
    assert_eq!(meta["issuer"], c1["iss"]);
    assert!(
        c1["iss"]
            .as_str()
            .is_some_and(|i| i.ends_with("/orgs/acme")),
        "each org is its own issuer: {c1}"
    );
    let jwks_uri = meta["jwks_uri"].as_str().expect("jwks_uri");
    assert!(jwks_uri.ends_with("/orgs/acme/jwks.json"), "{jwks_uri}");
    assert!(
        meta["introspection_endpoint"]
            .as_str()
            .is_some_and(|u| u.ends_with("/oauth/introspect"))
    );
    assert!(
        meta["revocation_endpoint"]
            .as_str()
            .is_some_and(|u| u.ends_with("/oauth/revoke"))
    );
    // The key that signed the token is in the key set, as a P-256 public key only.
    let jwks = s.get_json("/orgs/acme/jwks.json").await;
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == h["kid"])
        .expect("the signing kid is published");
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert!(key["d"].is_null(), "no private part in the JWKS");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_re_minted_before_they_expire() {
    // A 60 s token is fresh for 2 s, then re-minted on the next vend.
    let s = server_with(|c| {
        c.broker.token_ttl_secs = 60;
        c.broker.refresh_margin_secs = 58;
    })
    .await;
    let (ann, _) = engineer(&s, "remint@acme.example").await;
    let first = token_of(&s.vend(&ann).await);
    let c1 = jwt_claims(&first);
    let exp1 = c1["exp"].as_i64().unwrap();
    assert_eq!(exp1 - c1["iat"].as_i64().unwrap(), 60);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    // Still fresh: the same token comes back from the vault.
    if now() < (exp1 - 58) as f64 - 0.3 {
        assert_eq!(
            token_of(&s.vend(&ann).await),
            first,
            "fresh: served from the vault"
        );
    }
    // Past the refresh margin (but long before expiry): a new token, expiring later.
    let due = (exp1 - 58) as f64 + 0.2;
    while now() < due {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = s.vend(&ann).await;
    let second = token_of(&r);
    assert_ne!(second, first, "re-minted inside the refresh margin");
    let c2 = jwt_claims(&second);
    assert!(c2["exp"].as_i64().unwrap() > exp1, "{c2} vs {c1}");
    assert_ne!(c2["jti"], c1["jti"]);
    let expires_at = r.body["expires_at"].as_str().unwrap();
    let parsed =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(parsed.unix_timestamp(), c2["exp"].as_i64().unwrap());
    // The new one is what the vault now serves, and it introspects as active.
    assert_eq!(token_of(&s.vend(&ann).await), second);
    assert_eq!(s.introspect(&second).await["active"], true);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc7009_revocation_ends_the_token_at_once() {
    let s = server_with(|_| {}).await;
    let (ann, _) = engineer(&s, "rfc7009@acme.example").await;
    let token = token_of(&s.vend(&ann).await);
    assert_eq!(s.introspect(&token).await["active"], true);

    // Without a gateway key: RFC 6749 error body, nothing revoked.
    let (status, body) = s.oauth("/oauth/revoke", "ab_gw_wrong", &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(s.introspect(&token).await["active"], true);
    // An unknown token is not an error (RFC 7009 §2.2).
    let (status, _) = s.oauth("/oauth/revoke", ACME_GATEWAY, "not-a-token").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.introspect(&token).await["active"], true);

    let (status, _) = s.oauth("/oauth/revoke", ACME_GATEWAY, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s.introspect(&token).await["active"], false);
    // The vault no longer serves it: the next vend is a new token.
    let again = token_of(&s.vend(&ann).await);
    assert_ne!(again, token);
    assert_eq!(s.introspect(&token).await["active"], false);
    assert_eq!(s.introspect(&again).await["active"], true);
    // A garbled or tampered token never introspects as active.
    let mut tampered = again.clone();
    tampered.pop();
    tampered.push(if again.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(s.introspect(&tampered).await["active"], false);
    s.stop().await;
}

/// Reads the SSE stream until `needle` shows up (at most a few seconds).
async fn events_until(events: &mut reqwest::Response, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.contains(needle) && Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), events.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// One way of taking access away, and what a gateway sees afterwards.
struct Trigger {
    name: &'static str,
    /// The vend refusal's `code` afterwards.
    code: &'static str,
    /// The receipt's `reason`.
    reason: &'static str,
    /// The event announced to gateways.
    event: &'static str,
    /// The audit action recorded.
    action: &'static str,
}

const TRIGGERS: &[Trigger] = &[
    Trigger {
        name: "scim put without active",
        code: "user_inactive",
        reason: "scim.user.replace",
        event: "user.deactivated",
        action: "access.revoke",
    },
    Trigger {
        name: "entra patch",
        code: "user_inactive",
        reason: "scim.user.patch",
        event: "user.deactivated",
        action: "access.revoke",
    },
    Trigger {
        name: "scim delete",
        code: "user_inactive",
        reason: "scim.user.delete",
        event: "user.deactivated",
        action: "access.revoke",
    },
    Trigger {
        name: "group removal",
        code: "not_entitled",
        reason: "scim.group.patch",
        event: "token.revoked",
        action: "access.revoke",
    },
    Trigger {
        name: "connector disabled",
        code: "not_entitled",
        reason: "admin.connector.update",
        event: "token.revoked",
        action: "access.revoke",
    },
    Trigger {
        name: "grant deleted",
        code: "not_entitled",
        reason: "admin.grant.delete",
        event: "token.revoked",
        action: "access.revoke",
    },
    Trigger {
        name: "kill switch",
        code: "",
        reason: "admin.kill_switch",
        event: "token.revoked",
        action: "access.kill_switch",
    },
    Trigger {
        name: "admin lock",
        code: "user_locked",
        reason: "admin.lock",
        event: "user.locked",
        action: "access.lock",
    },
];

/// Enables or disables acme's `github` connector through the admin API.
async fn github(s: &TestServer, enabled: bool) -> crate::support::Resp {
    s.admin(
        Method::PUT,
        "/admin/v1/orgs/acme/connectors/github",
        Some(
            json!({"strategy": "broker_jwt", "audience": "https://mcp.github.example",
            "scopes": ["repo:read", "repo:write", "admin:org"],
            "tools": {"create_issue": "write", "delete_repo": "delete"}, "enabled": enabled}),
        ),
    )
    .await
}

/// Puts back what a trigger took from everyone (the connector, the grant), so that the next
/// trigger starts from the same access.
async fn restore(s: &TestServer, t: &Trigger) {
    let r = match t.name {
        "connector disabled" => github(s, true).await,
        "grant deleted" => {
            s.admin(
                Method::POST,
                "/admin/v1/orgs/acme/grants",
                Some(json!({"group": "Engineering", "connector": "github",
                    "scopes": ["repo:read", "repo:write"],
                    "actions": {"read": "allow", "write": "needs_approval", "delete": "blocked"}})),
            )
            .await
        }
        _ => return,
    };
    assert!(
        r.status.is_success(),
        "restoring after {}: {:?}",
        t.name,
        r.body
    );
}

async fn fire(s: &TestServer, t: &Trigger, user: &str, user_name: &str, group: &str) {
    let acme = s.acme();
    let r = match t.name {
        "scim put without active" => {
            acme.put(
                &format!("/Users/{user}"),
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                       "userName": user_name}),
            )
            .await
        }
        "entra patch" => acme.set_active_entra(user, false).await,
        "scim delete" => acme.delete(&format!("/Users/{user}")).await,
        "group removal" => {
            acme.patch(
                &format!("/Groups/{group}"),
                json!({"schemas": [PATCH], "Operations": [
                    {"op": "remove", "path": format!("members[value eq \"{user}\"]")}]}),
            )
            .await
        }
        "kill switch" => s.kill_switch(user).await,
        "admin lock" => {
            s.admin(
                Method::POST,
                &format!("/admin/v1/orgs/acme/users/{user}/lock"),
                Some(json!({"reason": "laptop stolen"})),
            )
            .await
        }
        "connector disabled" => github(s, false).await,
        "grant deleted" => {
            s.admin(
                Method::DELETE,
                "/admin/v1/orgs/acme/grants/eng-github",
                None,
            )
            .await
        }
        other => unreachable!("{other}"),
    };
    assert!(
        r.status.is_success(),
        "{}: {} {:?}",
        t.name,
        r.status,
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_trigger_refuses_announces_receipts_and_audits() {
    let s = server_with(|_| {}).await;
    let mut events = s.events().await;
    let mut seen = String::new();
    for (i, t) in TRIGGERS.iter().enumerate() {
        let name = format!("trigger{i}@acme.example");
        let (user, group) = engineer(&s, &name).await;
        let token = token_of(&s.vend(&user).await);
        fire(&s, t, &user, &name, &group).await;

        // Before the response returned: the token is dead and no new one is handed out.
        assert_eq!(
            s.introspect(&token).await["active"],
            false,
            "{}: introspection",
            t.name
        );
        let r = s.vend(&user).await;
        if t.code.is_empty() {
            // The kill switch revokes what exists; an entitled user may be served again,
            // but never the revoked token.
            assert_ne!(token_of(&r), token, "{}", t.name);
        } else {
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{}: {:?}", t.name, r.body);
            assert_eq!(r.body["code"], t.code, "{}", t.name);
        }

        // The gateways were told.
        events_until(&mut events, &mut seen, &user).await;
        let announced = seen
            .split("\n\n")
            .find(|e| e.contains(&user))
            .unwrap_or_default()
            .to_string();
        assert!(
            announced.contains(&format!("event: {}", t.event)),
            "{}: {announced:?}",
            t.name
        );

        // The receipt.
        let receipts = s.offboarding_of(&user).await;
        assert_eq!(
            receipts.status,
            StatusCode::OK,
            "{}: {:?}",
            t.name,
            receipts.body
        );
        let reasons: Vec<&str> = receipts.body["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["reason"].as_str().unwrap())
            .collect();
        assert!(reasons.contains(&t.reason), "{}: {reasons:?}", t.name);
        assert!(
            receipts.body["receipts"][0]["connectors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == "github"),
            "{}: {:?}",
            t.name,
            receipts.body
        );

        // The audit record (written within the audit window).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let audit = s.audit_of(&user).await;
            let text = serde_json::to_string(&audit.body["records"]).unwrap();
            assert!(!text.contains(&token), "no token in the audit log");
            if text.contains(t.action) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {}: {text}",
                t.name,
                t.action
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        restore(&s, t).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_decisions_are_audited_with_their_outcome() {
    let s = server_with(|_| {}).await;
    let (ann, _) = engineer(&s, "decide@acme.example").await;
    for (tool, expected) in [
        ("create_issue", "needs_approval"),
        ("delete_repo", "blocked"),
        ("unknown_tool", "needs_approval"),
    ] {
        let r = s
            .gateway(
                ACME_GATEWAY,
                Method::POST,
                "/internal/v1/authorize",
                Some(json!({"org": "acme", "user": {"id": ann}, "connector": "github", "tool": tool})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.body["decision"], expected, "{tool}");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let audit = s.audit_of(&ann).await;
        let decisions: Vec<(String, String)> = audit.body["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "tool.authorize")
            .map(|r| {
                (
                    r["summary"]["tool"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    r["summary"]["decision"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        if decisions.len() >= 3 {
            for (tool, d) in [
                ("create_issue", "needs_approval"),
                ("delete_repo", "blocked"),
                ("unknown_tool", "needs_approval"),
            ] {
                assert!(
                    decisions.contains(&(tool.to_string(), d.to_string())),
                    "{decisions:?}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "decisions not audited: {decisions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

/// `INFO commandstats` of a Redis, as (command, calls).
fn command_calls(port: u16) -> Vec<(String, u64)> {
    crate::redis_fixture::redis_cli(port, &["INFO", "commandstats"])
        .expect("redis-cli runs")
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_vend_is_one_redis_command() {
    let port = crate::redis_fixture::free_port();
    let _redis = crate::redis_fixture::RedisServer::start(port).expect("redis starts");
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut cfg = with_redis(
        with_github(test_config(&url, &dir)),
        &format!("redis://127.0.0.1:{port}"),
    );
    // The reconciler's passes read the vault too: kept out of the counted window.
    cfg.reconciler.events_interval_ms = 3_600_000;
    cfg.reconciler.sweep_interval_secs = 3_600;
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    let (ann, _) = engineer(&s, "warm@acme.example").await;
    let token = token_of(&s.vend(&ann).await);
    // Let the start-up and the first mint's background work settle, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(crate::redis_fixture::redis_cli(port, &["CONFIG", "RESETSTAT"]).is_some());
    const VENDS: u64 = 40;
    for _ in 0..VENDS {
        assert_eq!(token_of(&s.vend(&ann).await), token, "warm: the same token");
    }
    let calls = command_calls(port);
    let hmget = calls
        .iter()
        .find(|(c, _)| c == "hmget")
        .map_or(0, |(_, n)| *n);
    assert_eq!(hmget, VENDS, "one HMGET per warm vend: {calls:?}");
    // Nothing else ran on the vend path (INFO itself is the only other command counted).
    let others: Vec<_> = calls
        .iter()
        .filter(|(c, _)| c != "hmget" && c != "info" && c != "config|resetstat")
        .collect();
    assert!(
        others.is_empty(),
        "other commands during warm vends: {others:?}"
    );
    s.stop().await;
}
