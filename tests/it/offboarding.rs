//! Offboarding that nothing can undo, point by point, on real PostgreSQL and Redis:
//! - a deprovisioning that the vault failed after the database committed (Redis cut between
//!   the two) answers 503, and the IdP's retry of the same request completes it (a DELETE
//!   answers 404 only once the revocation is in force; a group PATCH that changes nothing
//!   still revokes); if nobody retries, the reconciler repairs it and counts the repair;
//! - a config change found at start-up (grant removed, connector disabled) revokes before the
//!   broker serves;
//! - the vend path bounds a stale projection by the connector's own definition;
//! - an admin lock holds until it is lifted, through every other change.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::redis_fixture::redis_url;
use crate::support::{
    Backend, CutProxy, TestServer, engineer_in_group as engineer, fresh_database, sample,
    test_config, with_github, with_redis,
};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// A broker whose Redis is reached through a proxy the test can cut.
async fn behind_a_cut_proxy(events_interval_ms: u64) -> (TestServer, CutProxy) {
    let upstream = redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .expect("AUTH_BROKER_TEST_REDIS_URL names host:port");
    let proxy = CutProxy::start(upstream).await;
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut cfg = with_redis(
        with_github(test_config(&url, &dir)),
        &format!("redis://{}", proxy.addr),
    );
    cfg.reconciler.events_interval_ms = events_interval_ms;
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    (s, proxy)
}

/// A broker on a fresh PostgreSQL database and the suite's Redis; also returns its config.
async fn on_postgres_and_redis() -> (TestServer, auth_broker::config::Config) {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    (
        TestServer::start_with(Backend::Postgres, cfg.clone()).await,
        cfg,
    )
}

fn token_of(r: &crate::support::Resp) -> String {
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["access_token"].as_str().unwrap().to_string()
}

/// Waits until the broker answers vends again after Redis came back.
async fn vault_back(s: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.readyz().await != StatusCode::OK {
        assert!(Instant::now() < deadline, "the vault did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_deprovisioning_is_completed_by_the_retry() {
    // The reconciler is kept out of the way: the retry alone must complete the revocation.
    let (s, proxy) = behind_a_cut_proxy(3_600_000).await;

    // DELETE: the database commits, the vault is cut: 503. The retry finds no user; it
    // answers 404 only after the revocation is in force.
    let (ann, _) = engineer(&s, "delete-retry@acme.example").await;
    let token = token_of(&s.vend(&ann).await);
    proxy.cut().await;
    let r = s.acme().delete(&format!("/Users/{ann}")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    proxy.restore().await;
    vault_back(&s).await;
    // Usually the cut leaves the token in force, but a vault command the broker gave up on
    // during the cut can still reach Redis once it is back, and then the revocation holds
    // already. Either way, after the retry it must.
    let r = s.acme().delete(&format!("/Users/{ann}")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);
    assert_eq!(s.introspect(&token).await["active"], false);
    let r = s.vend(&ann).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(s.user_view(&ann).await.status, StatusCode::NOT_FOUND);

    // A group PATCH removing a member: 503, then the IdP's identical retry changes nothing in
    // the directory and still revokes.
    let (bob, group) = engineer(&s, "group-retry@acme.example").await;
    let token = token_of(&s.vend(&bob).await);
    let removal = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]});
    proxy.cut().await;
    let r = s
        .acme()
        .patch(&format!("/Groups/{group}"), removal.clone())
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    proxy.restore().await;
    vault_back(&s).await;
    // As above: in force unless a command given up on during the cut landed afterwards.
    let r = s.acme().patch(&format!("/Groups/{group}"), removal).await;
    assert!(r.status.is_success(), "{:?}", r.body);
    assert_eq!(s.introspect(&token).await["active"], false);
    let r = s.vend(&bob).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], "not_entitled");

    // A deactivation PATCH: 503, then the identical retry (no change in the directory).
    let (cy, _) = engineer(&s, "patch-retry@acme.example").await;
    let token = token_of(&s.vend(&cy).await);
    proxy.cut().await;
    assert_eq!(
        s.okta_deactivate(&cy).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    proxy.restore().await;
    vault_back(&s).await;
    assert_eq!(s.okta_deactivate(&cy).await.status, StatusCode::OK);
    assert_eq!(s.introspect(&token).await["active"], false);
    assert_eq!(s.vend(&cy).await.body["code"], "user_inactive");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_repairs_what_nobody_retried() {
    let (s, proxy) = behind_a_cut_proxy(200).await;
    let (ann, _) = engineer(&s, "never-retried@acme.example").await;
    let (bob, group) = engineer(&s, "never-retried-2@acme.example").await;
    let (cy, _) = engineer(&s, "never-retried-3@acme.example").await;
    let ta = token_of(&s.vend(&ann).await);
    let tb = token_of(&s.vend(&bob).await);
    let tc = token_of(&s.vend(&cy).await);
    let before = sample(
        &s.metrics_text().await,
        "auth_broker_reconciler_repairs_total",
    )
    .unwrap();

    proxy.cut().await;
    assert_eq!(
        s.okta_deactivate(&ann).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let removal = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{bob}\"]")}]});
    assert_eq!(
        s.acme()
            .patch(&format!("/Groups/{group}"), removal)
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        s.acme().delete(&format!("/Users/{cy}")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    proxy.restore().await;
    vault_back(&s).await;

    // Nobody retries. The reconciler follows the directory's events and repairs all three.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let live = [
            s.introspect(&ta).await["active"] == true,
            s.introspect(&tb).await["active"] == true,
            s.introspect(&tc).await["active"] == true,
        ];
        if live == [false; 3] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not repaired within 15 s: {live:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s.vend(&ann).await.body["code"], "user_inactive");
    assert_eq!(s.vend(&bob).await.body["code"], "not_entitled");
    assert_eq!(s.vend(&cy).await.status, StatusCode::FORBIDDEN);
    let after = sample(
        &s.metrics_text().await,
        "auth_broker_reconciler_repairs_total",
    )
    .unwrap();
    assert!(
        after >= before + 3.0,
        "repairs counted: {before} -> {after}"
    );
    // Each repair is a revocation with its receipt.
    let receipts = s.offboarding_of(&ann).await;
    assert!(
        receipts.body.to_string().contains("reconciler.repair"),
        "{:?}",
        receipts.body
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_found_at_start_up_revoke_before_serving() {
    let (s, cfg) = on_postgres_and_redis().await;
    let (ann, _) = engineer(&s, "config-grant@acme.example").await;
    let token = token_of(&s.vend(&ann).await);
    s.halt().await;

    // The grant is gone from the file: the user is revoked before the first request.
    let mut narrowed = cfg.clone();
    narrowed.orgs.get_mut("acme").unwrap().grants.clear();
    let s = TestServer::start_with(Backend::Postgres, narrowed).await;
    assert_eq!(s.introspect(&token).await["active"], false);
    let r = s.vend(&ann).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], "not_entitled");
    assert!(
        s.offboarding_of(&ann)
            .await
            .body
            .to_string()
            .contains("config.change")
    );
    s.halt().await;

    // Back, then the connector disabled in the file.
    let s = TestServer::start_with(Backend::Postgres, cfg.clone()).await;
    let token = token_of(&s.vend(&ann).await);
    s.halt().await;
    let mut disabled = cfg;
    disabled
        .orgs
        .get_mut("acme")
        .unwrap()
        .connectors
        .get_mut("github")
        .unwrap()
        .enabled = false;
    let s = TestServer::start_with(Backend::Postgres, disabled).await;
    assert_eq!(s.introspect(&token).await["active"], false);
    assert_eq!(s.vend(&ann).await.body["code"], "not_entitled");
    s.stop().await;
}

/// A projection that says more than the connector now allows (as one not yet re-derived
/// would) vends nothing beyond the connector's definition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vend_path_bounds_a_stale_projection_by_the_connector() {
    let (s, _) = on_postgres_and_redis().await;
    let (ann, _) = engineer(&s, "stale@acme.example").await;
    token_of(&s.vend(&ann).await);
    // The stale projection: a scope the connector does not offer.
    let mut c = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("ab:{{acme/{ann}}}");
    let state = json!({"active": true, "locked": false,
        "connectors": {"github": ["repo:read", "repo:write", "repo:delete"]}});
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("_s")
        .arg(state.to_string())
        .query_async(&mut c)
        .await
        .unwrap();
    let r = s
        .gateway(
            crate::support::ACME_GATEWAY,
            Method::POST,
            "/internal/v1/token",
            Some(
                json!({"org": "acme", "user": {"id": ann}, "connector": "github",
                "scopes": ["repo:delete"]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], "scope_not_entitled");
    // And the connector disabled behind a projection that still names it.
    let r = s
        .admin(
            Method::PUT,
            "/admin/v1/orgs/acme/connectors/github",
            Some(
                json!({"strategy": "broker_jwt", "audience": "https://mcp.github.example",
                "scopes": ["repo:read", "repo:write", "admin:org"], "enabled": false}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("_s")
        .arg(state.to_string())
        .query_async(&mut c)
        .await
        .unwrap();
    let r = s.vend(&ann).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], "not_entitled");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holds_until_it_is_lifted() {
    let (s, _) = on_postgres_and_redis().await;
    let (ann, group) = engineer(&s, "locked@acme.example").await;
    let token = token_of(&s.vend(&ann).await);
    let mut events = s.events().await;
    let lock_path = format!("/admin/v1/orgs/acme/users/{ann}/lock");
    let lock = |body| s.admin(Method::POST, &lock_path, body);
    // A reason is required.
    let r = lock(Some(json!({"reason": "  "}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = lock(None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    let r = lock(Some(json!({"reason": "laptop stolen"}))).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let epoch = r.body["epoch"].as_u64().unwrap();
    assert_eq!(s.introspect(&token).await["active"], false);
    assert_eq!(s.vend(&ann).await.body["code"], "user_locked");

    // The gateways were told, with the new epoch (the reconciler may have announced the lock
    // first, under the epoch before: the lock's own event follows).
    let wanted = format!("\"epoch\":{epoch}");
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let told = |seen: &str| {
        seen.split("\n\n")
            .any(|e| e.contains("event: user.locked") && e.contains(&wanted))
    };
    while !told(&seen) && Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(1), events.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(told(&seen), "{seen} (lock answered {:?})", r.body);

    // Nothing else lifts it: a group change that re-derives access, the kill switch, a
    // reactivation from the IdP.
    let readd = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "remove", "path": format!("members[value eq \"{ann}\"]")}]});
    assert!(
        s.acme()
            .patch(&format!("/Groups/{group}"), readd)
            .await
            .status
            .is_success()
    );
    let add = json!({"schemas": [PATCH_OP], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": ann}]}]});
    assert!(
        s.acme()
            .patch(&format!("/Groups/{group}"), add)
            .await
            .status
            .is_success()
    );
    assert_eq!(s.kill_switch(&ann).await.status, StatusCode::OK);
    let r = s
        .acme()
        .patch(
            &format!("/Users/{ann}"),
            json!({"schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": true}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(s.vend(&ann).await.body["code"], "user_locked");

    // The admin view shows it, with its reason.
    let view = s.user_view(&ann).await;
    assert_eq!(view.body["locked"], true, "{:?}", view.body);
    assert_eq!(view.body["lock"]["reason"], "laptop stolen");
    assert_eq!(view.body["projection"]["locked"], true);

    // Another org's admin cannot lift it; lifting restores vending with a new token.
    let other = s
        .gateway(
            crate::support::GLOBEX_GATEWAY,
            Method::DELETE,
            &format!("/admin/v1/orgs/acme/users/{ann}/lock"),
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED, "{:?}", other.body);
    let r = s
        .admin(
            Method::DELETE,
            &format!("/admin/v1/orgs/acme/users/{ann}/lock"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let fresh = token_of(&s.vend(&ann).await);
    assert_ne!(fresh, token);
    assert_eq!(s.user_view(&ann).await.body["locked"], false);
    // Lifting it again: nothing to lift.
    let r = s
        .admin(
            Method::DELETE,
            &format!("/admin/v1/orgs/acme/users/{ann}/lock"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{:?}", r.body);

    // Both are audited.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = s.audit_of(&ann).await.body.to_string();
        if text.contains("access.lock") && text.contains("access.unlock") {
            assert!(text.contains("laptop stolen"));
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}
