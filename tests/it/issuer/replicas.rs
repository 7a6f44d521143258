//! Gateway keys in the system of record: created on one replica, usable on every replica;
//! revoked on one, refused on every replica within a second; listed without the key; audited.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::both_backends;
use crate::redis_fixture::redis_url;
use crate::support::{
    Backend, TestServer, engineer_in_group, fresh_database, test_config, with_github, with_redis,
};

/// Vends for `user` on acme's github with `key`; returns the status.
async fn vend_status(s: &TestServer, key: &str, user: &str) -> StatusCode {
    s.gateway(
        key,
        Method::POST,
        "/internal/v1/token",
        Some(json!({"org": "acme", "user": {"id": user}, "connector": "github"})),
    )
    .await
    .status
}

/// Polls until the vend answers `want`; returns how long that took (fails after 5 s).
async fn until_vend(s: &TestServer, key: &str, user: &str, want: StatusCode) -> Duration {
    let start = Instant::now();
    loop {
        let got = vend_status(s, key, user).await;
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still {got} after 5 s, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_keys_reach_every_replica_within_a_second() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    // Replicas behind one address share one issuer base (each test server has its own port).
    cfg.broker.issuer = Some("https://broker.acme.test".into());
    let a = TestServer::start_with(Backend::Postgres, cfg.clone()).await;
    let b = TestServer::start_with(Backend::Postgres, cfg).await;
    let (ann, _) = engineer_in_group(&a, "replicas@acme.example").await;

    let r = a
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/gateways",
            Some(json!({"name": "made-on-a"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let key = r.body["key"].as_str().unwrap().to_string();
    crate::log_capture::register(&key);
    // Usable at once where it was made, and on the other replica within a second.
    assert_eq!(vend_status(&a, &key, &ann).await, StatusCode::OK);
    let took = until_vend(&b, &key, &ann, StatusCode::OK).await;
    assert!(
        took < Duration::from_secs(1),
        "created key reached B after {took:?}"
    );

    // B lists it (no key), beside the key config declares.
    let list = b
        .admin(Method::GET, "/admin/v1/orgs/acme/gateways", None)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{:?}", list.body);
    let text = list.body.to_string();
    assert!(!text.contains(&key), "a listing never shows a key: {text}");
    let gateways = list.body["gateways"].as_array().unwrap();
    let made = gateways
        .iter()
        .find(|g| g["id"] == id.as_str())
        .expect("the new key is listed on B");
    assert_eq!(made["name"], "made-on-a");
    assert_eq!(made["source"], "api");
    assert!(made["created_at"].is_string());
    assert!(made["key"].is_null());
    let declared = gateways
        .iter()
        .find(|g| g["source"] == "config")
        .expect("the config-declared key is listed");
    let r = b
        .admin(
            Method::DELETE,
            &format!(
                "/admin/v1/orgs/acme/gateways/{}",
                declared["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "config keys are read-only here"
    );

    // Revoked on A: refused on A at once, on B within a second.
    let r = a
        .admin(
            Method::DELETE,
            &format!("/admin/v1/orgs/acme/gateways/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_eq!(vend_status(&a, &key, &ann).await, StatusCode::UNAUTHORIZED);
    let took = until_vend(&b, &key, &ann, StatusCode::UNAUTHORIZED).await;
    assert!(
        took < Duration::from_secs(1),
        "revoked key still worked on B for {took:?}"
    );
    let r = b
        .admin(
            Method::DELETE,
            &format!("/admin/v1/orgs/acme/gateways/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);

    // Both changes are audited (who, which key; never the key).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = a
            .admin(Method::GET, "/admin/v1/orgs/acme/audit?limit=1000", None)
            .await;
        let records = r.body["records"].as_array().unwrap().clone();
        let actions: Vec<&str> = records
            .iter()
            .filter(|x| x["resource_id"] == id.as_str())
            .filter_map(|x| x["action"].as_str())
            .collect();
        if actions.contains(&"admin.gateway.create") && actions.contains(&"admin.gateway.revoke") {
            assert!(!r.body.to_string().contains(&key));
            break;
        }
        assert!(Instant::now() < deadline, "audit records: {actions:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.stop().await;
    b.stop().await;
}

/// One replica on either system of record: create, list, revoke.
async fn gateway_keys_can_be_listed_and_revoked(backend: Backend) {
    let (url, dir) = fresh_database(backend).await;
    let s = TestServer::start_with(backend, with_github(test_config(&url, &dir))).await;
    let (ann, _) = engineer_in_group(&s, "listed@acme.example").await;
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/gateways",
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let key = r.body["key"].as_str().unwrap().to_string();
    crate::log_capture::register(&key);
    assert_eq!(vend_status(&s, &key, &ann).await, StatusCode::OK);
    let list = s
        .admin(Method::GET, "/admin/v1/orgs/acme/gateways", None)
        .await;
    assert!(
        list.body["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == id.as_str())
    );
    let r = s
        .admin(
            Method::DELETE,
            &format!("/admin/v1/orgs/acme/gateways/{id}"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_eq!(vend_status(&s, &key, &ann).await, StatusCode::UNAUTHORIZED);
    let list = s
        .admin(Method::GET, "/admin/v1/orgs/acme/gateways", None)
        .await;
    assert!(
        !list.body["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["id"] == id.as_str())
    );
    s.stop().await;
}
both_backends!(gateway_keys_can_be_listed_and_revoked);
