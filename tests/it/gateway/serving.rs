//! Serving over time: vault and signing keys rotated while vends go on, and the binary's
//! several I/O threads sharing one port, one vault and the audit log.

use reqwest::StatusCode;
use serde_json::json;

use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, TestServer, engineer_in_group as engineer, fresh_database, test_config,
    with_github, with_redis,
};

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
    let jwks: serde_json::Value = b.get_json("/orgs/acme/jwks.json").await;
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
        report.signing_keys, 2,
        "each org's retired signing key, sealed under k1, is re-sealed"
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

/// Many fresh connections to one broker: all serve the one stored token, all see the
/// deactivation, and the vends folded in the audit writer at shutdown are written before the
/// store closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_connections_share_one_vault_and_the_audit_log() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    let s = TestServer::start_with(Backend::Postgres, cfg.clone()).await;
    let (ann, _) = engineer(&s, "ann@acme.example").await;
    let body = json!({"org": "acme", "user": {"id": ann}, "connector": "github"});
    // A new connection per vend.
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
    assert_eq!(
        tokens.len(),
        1,
        "every connection is served the one stored token"
    );

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
