//! The operational and admin surfaces: `/metrics` counts what the contract names and the
//! admin API's errors are stable problem+json codes; the OpenAPI document against the router
//! is in [`openapi`].

use std::collections::BTreeSet;

use auth_broker::crypto::secret::hash_str;
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_ADMIN, ACME_GATEWAY, Backend, Resp, TestServer, fresh_database, read, sample, test_config,
    with_github, with_redis,
};

mod openapi;

/// The admin key of `globex`.
const GLOBEX_ADMIN: &str = "ab_admin_globex_test_admin_key_0123456789";

async fn server(backend: Backend) -> TestServer {
    let (url, dir) = fresh_database(backend).await;
    let mut cfg = with_github(test_config(&url, &dir));
    cfg.orgs.get_mut("globex").unwrap().admin_key_hashes = vec![hash_str(GLOBEX_ADMIN).to_string()];
    if backend == Backend::Postgres {
        cfg = with_redis(cfg, &redis_url());
    }
    TestServer::start_with(backend, cfg).await
}

async fn metrics(s: &TestServer) -> String {
    let r = s
        .http
        .get(format!("{}/metrics", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    r.text().await.unwrap()
}

fn must(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("{series} is not exported:\n{text}"))
}

fn assert_problem(r: &Resp, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["code"], code, "{:?}", r.body);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/problem+json"),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["status"], status.as_u16());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_vends_mints_and_revocations() {
    let s = server(Backend::Postgres).await;
    let ann = engineer(&s, "metrics@acme.example").await;
    for _ in 0..3 {
        let r = s.vend(&ann).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    assert_eq!(s.vend("nobody").await.status, StatusCode::NOT_FOUND);
    let r = s
        .gateway(
            "ab_gw_wrong",
            Method::POST,
            "/internal/v1/token",
            Some(json!({"org": "acme", "user": {"id": ann}, "connector": "github"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let before = metrics(&s).await;

    let r = s.okta_deactivate(&ann).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(s.vend(&ann).await.body["code"], "user_inactive");
    let text = metrics(&s).await;

    for family in [
        "auth_broker_vend_total",
        "auth_broker_vend_seconds",
        "auth_broker_mints_total",
        "auth_broker_revocations_total",
        "auth_broker_audit_backlog",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# TYPE {family} "))),
            "{family} has a TYPE line:\n{text}"
        );
    }
    assert!(must(&text, "auth_broker_vend_total{code=\"ok\"}") >= 3.0);
    assert!(must(&text, "auth_broker_vend_total{code=\"unknown_user\"}") >= 1.0);
    assert!(must(&text, "auth_broker_vend_total{code=\"unauthenticated\"}") >= 1.0);
    assert!(must(&text, "auth_broker_vend_total{code=\"user_inactive\"}") >= 1.0);

    // The latency histogram: cumulative buckets ending in +Inf == count.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("auth_broker_vend_seconds_bucket{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(buckets.len() >= 2, "{text}");
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "buckets are cumulative: {buckets:?}"
    );
    let count = must(&text, "auth_broker_vend_seconds_count");
    assert!(count >= 6.0, "every vend is timed, refusals too: {count}");
    assert_eq!(
        must(&text, "auth_broker_vend_seconds_bucket{le=\"+Inf\"}"),
        count
    );
    assert!(must(&text, "auth_broker_vend_seconds_sum") > 0.0);

    assert!(must(&text, "auth_broker_mints_total") >= 1.0);
    assert!(must(&text, "auth_broker_vault_cache_hits_total") >= 2.0);
    // The reconciler's and the projection writer's counters are exported from the start.
    for series in [
        "auth_broker_reconciler_repairs_total",
        "auth_broker_projection_write_retries_total",
    ] {
        must(&text, series);
    }
    let revocations = must(&text, "auth_broker_revocations_total");
    assert!(
        revocations >= must(&before, "auth_broker_revocations_total") + 1.0,
        "the deactivation's revocation is counted: {revocations}"
    );
    assert!(must(&text, "auth_broker_audit_backlog") >= 0.0);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_request_latency_per_route() {
    let s = server(Backend::Postgres).await;
    let ann = engineer(&s, "routes@acme.example").await;
    assert_eq!(s.vend(&ann).await.status, StatusCode::OK);
    assert_eq!(
        s.acme().get(&format!("/Users/{ann}")).await.status,
        StatusCode::OK
    );
    let text = metrics(&s).await;
    let histograms: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .collect();
    let per_route: Vec<&str> = text
        .lines()
        .filter(|l| {
            histograms
                .iter()
                .any(|h| l.starts_with(&format!("{h}_bucket{{")))
        })
        .filter(|l| {
            ["route=", "path=", "endpoint="]
                .iter()
                .any(|k| l.contains(k))
        })
        .collect();
    assert!(
        per_route.iter().any(|l| l.contains("/internal/v1/token")),
        "CONTRACT: request latency histograms per route; none for the vend route:\n{text}"
    );
    assert!(
        per_route
            .iter()
            .any(|l| l.contains("/scim/v2/") && l.contains("Users")),
        "no request latency histogram for the SCIM Users route:\n{text}"
    );
    assert!(
        !text.contains(&ann),
        "routes are labelled by template, never by ids"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_errors_and_gateway_keys() {
    let s = server(Backend::Postgres).await;
    let connectors = "/admin/v1/orgs/acme/connectors";

    // Authentication and tenancy.
    let r = s.gateway("", Method::GET, connectors, None).await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
    let r = read(
        s.http
            .get(format!("{}{connectors}", s.base()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
    let r = s
        .gateway(
            "ab_admin_wrong_key_0123456789",
            Method::GET,
            connectors,
            None,
        )
        .await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
    let r = s.gateway(ACME_GATEWAY, Method::GET, connectors, None).await;
    assert_problem(&r, StatusCode::UNAUTHORIZED, "unauthenticated");
    let r = s
        .gateway(
            ACME_ADMIN,
            Method::GET,
            "/admin/v1/orgs/globex/connectors",
            None,
        )
        .await;
    assert_problem(&r, StatusCode::FORBIDDEN, "org_forbidden");
    let r = s
        .gateway(
            ACME_ADMIN,
            Method::POST,
            "/admin/v1/orgs/globex/gateways",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_problem(&r, StatusCode::FORBIDDEN, "org_forbidden");
    let r = s.gateway(GLOBEX_ADMIN, Method::GET, connectors, None).await;
    assert_problem(&r, StatusCode::FORBIDDEN, "org_forbidden");
    let r = s
        .gateway(
            GLOBEX_ADMIN,
            Method::GET,
            "/admin/v1/orgs/globex/connectors",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["connectors"], json!([]), "globex sees only its own");

    // Malformed input.
    let r = read(
        s.http
            .post(format!("{}{connectors}", s.base()))
            .bearer_auth(ACME_ADMIN)
            .header("content-type", "application/json")
            .body("{\"id\": \"jira\", \"strategy\": ")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "malformed_request");
    let r = s
        .admin(
            Method::POST,
            connectors,
            Some(json!({"id": "jira", "audience": "https://jira.example"})),
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "malformed_request");
    let r = s
        .admin(
            Method::POST,
            connectors,
            Some(json!({"id": "jira", "strategy": "carrier_pigeon", "audience": "https://jira.example"})),
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "malformed_request");
    let r = s
        .admin(
            Method::POST,
            connectors,
            Some(json!({"id": "Not An Id!", "strategy": "broker_jwt", "audience": "https://jira.example"})),
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "invalid_request");

    // Create, conflict, read, unknown.
    let jira = json!({"id": "jira", "strategy": "broker_jwt", "audience": "https://jira.example",
                      "scopes": ["read:jira-work"]});
    let r = s.admin(Method::POST, connectors, Some(jira.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = s.admin(Method::POST, connectors, Some(jira)).await;
    assert_problem(&r, StatusCode::CONFLICT, "conflict");
    let r = s
        .admin(Method::GET, &format!("{connectors}/jira"), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["audience"], "https://jira.example");
    let r = s
        .admin(Method::GET, &format!("{connectors}/nope"), None)
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "not_found");
    let r = s
        .admin(
            Method::PUT,
            &format!("{connectors}/nope"),
            Some(json!({"strategy": "broker_jwt", "audience": "https://nope.example"})),
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "not_found");
    let r = s
        .admin(
            Method::DELETE,
            "/admin/v1/orgs/acme/grants/no-such-grant",
            None,
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, "not_found");
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/grants",
            Some(
                json!({"group": "Engineering", "connector": "jira", "scopes": ["admin:everything"],
                        "actions": {"read": "allow", "write": "allow", "delete": "blocked"}}),
            ),
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "invalid_request");

    // A new gateway key: shown once, usable at once, bound to its org only.
    let gateways = "/admin/v1/orgs/acme/gateways";
    let r = s
        .admin(Method::POST, gateways, Some(json!({"name": ""})))
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = s
        .admin(Method::POST, gateways, Some(json!({"nme": "gw2"})))
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "malformed_request");
    let r = s
        .admin(Method::POST, gateways, Some(json!({"name": "gw2"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.header("cache-control").as_deref(), Some("no-store"));
    let key = r.body["key"].as_str().unwrap().to_string();
    let id = r.body["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("ab_gw_"), "{key}");
    assert!(!id.is_empty() && !key.contains(&id));
    let ann = engineer(&s, "gw2@acme.example").await;
    let r = s
        .gateway(
            &key,
            Method::POST,
            "/internal/v1/token",
            Some(json!({"org": "acme", "user": {"id": ann}, "connector": "github"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(
        r.body["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    let r = s
        .gateway(
            &key,
            Method::POST,
            "/internal/v1/token",
            Some(json!({"org": "globex", "user": {"id": ann}, "connector": "github"})),
        )
        .await;
    assert_problem(&r, StatusCode::FORBIDDEN, "org_forbidden");
    // A second key is a different key; both work.
    let r = s
        .admin(Method::POST, gateways, Some(json!({"name": "gw3"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_ne!(r.body["key"], key.as_str());
    assert_ne!(r.body["id"], id.as_str());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_gateway_key_is_audited() {
    let s = server(Backend::Postgres).await;
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/gateways",
            Some(json!({"name": "audited-gw"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    let key = r.body["key"].as_str().unwrap().to_string();
    // A new credential is a security event: who created which key, when (never the key).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = s
            .admin(Method::GET, "/admin/v1/orgs/acme/audit?limit=1000", None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let text = r.body.to_string();
        assert!(!text.contains(&key), "the key itself is never audited");
        let found = r.body["records"].as_array().unwrap().iter().find(|rec| {
            rec["resource_id"] == id.as_str() || rec["summary"].to_string().contains(&id)
        });
        if let Some(rec) = found {
            assert_eq!(rec["actor"], "admin:config:acme#0", "{rec}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no audit record names the new gateway key {id}: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_each_refusal_under_its_own_code() {
    let s = server(Backend::Sqlite).await;
    let big = "x".repeat(1_100_000);
    let r = s
        .gateway(
            ACME_GATEWAY,
            Method::POST,
            "/internal/v1/token",
            Some(json!({"org": "acme", "user": {"id": big}, "connector": "github"})),
        )
        .await;
    assert_problem(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let r = s
        .gateway(
            ACME_GATEWAY,
            Method::POST,
            "/internal/v1/token",
            Some(json!({"org": "acme"})),
        )
        .await;
    assert_problem(&r, StatusCode::BAD_REQUEST, "malformed_request");
    let text = metrics(&s).await;
    assert_eq!(
        sample(&text, "auth_broker_vend_total{code=\"malformed_request\"}"),
        Some(1.0),
        "only the malformed request counts as malformed:\n{text}"
    );
    assert!(
        sample(&text, "auth_broker_vend_total{code=\"payload_too_large\"}")
            .is_some_and(|n| n >= 1.0),
        "the 413 is counted under the code it answered:\n{text}"
    );
    s.stop().await;
}

/// A caller without a valid gateway key is answered before the broker reads its body: a
/// request that announces a body and never sends it gets its 401 at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_route_authenticates_before_reading_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(Backend::Sqlite).await;
    let addr = s.base().trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /internal/v1/token HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer ab_gw_wrong\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(3), tcp.read(&mut buf))
        .await
        .expect("answered without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    s.stop().await;
}

/// A user in Engineering (created on first use); returns the user's id.
async fn engineer(s: &TestServer, name: &str) -> String {
    crate::support::engineer_in_group(s, name).await.0
}
