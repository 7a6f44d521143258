//! Faults around the vend path: the system of record going away (warm vends keep working from
//! the vault projection, writes fail closed), the vault being flushed (tokens are re-minted,
//! never resurrected, and a deactivated user stays refused), a sealed token copied into another
//! user's or connector's record (it does not open there), and a vend/revoke round on Redis
//! Cluster and on Redis Sentinel across a failover.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::redis_fixture::{RedisServer, cluster, free_port, private_sentinel, redis_url};
use crate::support::{
    ACME_GATEWAY, Backend, CutProxy, TestServer, admin_database_url, fresh_database, jwt_claims,
    test_config, with_github, with_redis,
};

const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Vends `user`'s `github` token, asserting 200; returns the token.
async fn vend_ok(s: &TestServer, user: &str) -> String {
    let r = s.vend(user).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["access_token"].as_str().unwrap().to_string()
}

/// RFC 7662 introspection with acme's gateway key; returns `active`.
async fn active(s: &TestServer, token: &str) -> bool {
    let body = s.introspect(token).await;
    body["active"]
        .as_bool()
        .unwrap_or_else(|| panic!("introspection without `active`: {body}"))
}

async fn deactivate_entra(s: &TestServer, user: &str) {
    let r = s.acme().set_active_entra(user, false).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["active"], false);
}

fn assert_refused(r: &crate::support::Resp, code: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], code, "{:?}", r.body);
}

/// The user's vault hash (`ab:{<org>/<user>}`, see `store::vault_redis`).
fn vault_key(user: &str) -> String {
    format!("ab:{{acme/{user}}}")
}

/// A plain connection to a test's private Redis, to play the operator (or the attacker).
async fn redis_on(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("redis on port {port}: {e}"))
}

async fn flushall(port: u16) {
    let mut c = redis_on(port).await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(n, 0, "the vault is empty after FLUSHALL");
}

/// A broker on a fresh PostgreSQL database and a private Redis of its own.
async fn on_private_redis() -> (TestServer, RedisServer) {
    let port = free_port();
    let redis = RedisServer::start(port).expect("redis starts");
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(
        with_github(test_config(&url, &dir)),
        &format!("redis://127.0.0.1:{port}"),
    );
    (TestServer::start_with(Backend::Postgres, cfg).await, redis)
}

/// Where the suite's PostgreSQL listens.
async fn postgres_addr() -> SocketAddr {
    let admin = admin_database_url();
    let hostport = admin
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("the test database URL names user@host:port")
        .to_string();
    tokio::net::lookup_host(hostport)
        .await
        .unwrap()
        .next()
        .unwrap()
}

async fn wait_ready(s: &TestServer, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let r = s
            .http
            .get(format!("{}/readyz", s.base()))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            return;
        }
        assert!(Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_vends_survive_a_database_outage() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let upstream = postgres_addr().await;
    let proxy = CutProxy::start(upstream).await;
    let proxied = url.replacen(&upstream.to_string(), &proxy.addr.to_string(), 1);
    assert_ne!(proxied, url, "database URL must name {upstream}");
    let cfg = with_redis(with_github(test_config(&proxied, &dir)), &redis_url());
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    let ann = engineer(&s, "pg-outage@acme.example").await;
    let cold = engineer(&s, "pg-cold@acme.example").await;
    // The vault forgets one user entirely (as after a flush): nothing to decide from.
    let mut shared = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("the suite's Redis");
    let removed: i64 = redis::cmd("DEL")
        .arg(vault_key(&cold))
        .query_async(&mut shared)
        .await
        .unwrap();
    assert_eq!(removed, 1, "provisioning wrote the user's projection");
    let token = vend_ok(&s, &ann).await;
    assert_eq!(
        vend_ok(&s, &ann).await,
        token,
        "warm: served from the vault"
    );

    proxy.cut().await;
    let r = s
        .http
        .get(format!("{}/readyz", s.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the database is really gone"
    );
    for _ in 0..5 {
        let started = Instant::now();
        let r = s.vend(&ann).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(
            r.body["access_token"],
            token.as_str(),
            "the same token, from the vault projection"
        );
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "a warm vend does not wait for a database connection (2 s): {:?}",
            started.elapsed()
        );
    }
    assert!(
        active(&s, &token).await,
        "introspection needs no database either"
    );
    // A user without a projection cannot be decided without the system of record.
    let r = s.vend(&cold).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.body["code"], "unavailable");
    // Writes to the system of record fail closed, and fast.
    let started = Instant::now();
    let r = s
        .acme()
        .post(
            "/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "during@acme.example"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert_eq!(r.body["status"], "503");
    assert!(started.elapsed() < Duration::from_secs(10));

    proxy.restore().await;
    wait_ready(&s, Duration::from_secs(15)).await;
    let bo = s.acme().create_user("after@acme.example").await;
    let r = s
        .acme()
        .get("/Users?filter=userName+eq+%22during%40acme.example%22")
        .await;
    assert_eq!(r.body["totalResults"], 0, "nothing half-written");
    let r = s
        .acme()
        .patch(
            &format!("/Users/{bo}"),
            json!({"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "displayName", "value": "Bo"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(vend_ok(&s, &ann).await, token);
    vend_ok(&s, &cold).await;

    // The vends served during the outage were audited: their records reach the database.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.audit_of(&ann).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let vends = r.body["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rec| rec["action"] == "token.vend")
            // Repeated vends of one token are folded into one record with a count.
            .map(|rec| rec["summary"]["count"].as_u64().unwrap_or(0))
            .sum::<u64>();
        if vends >= 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {vends} of 8 vend records reached the audit log"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_vault_re_mints_and_never_resurrects() {
    let (s, redis) = on_private_redis().await;
    let ann = engineer(&s, "flush@acme.example").await;
    let old = vend_ok(&s, &ann).await;
    assert!(active(&s, &old).await);

    flushall(redis.port).await;
    assert!(
        !active(&s, &old).await,
        "no projection: introspection fails closed"
    );
    let new = vend_ok(&s, &ann).await;
    assert_ne!(new, old, "re-minted, not served from nowhere");
    assert_eq!(jwt_claims(&new)["sub"], ann.as_str());
    assert!(
        jwt_claims(&new)["ab_ep"].as_u64() > jwt_claims(&old)["ab_ep"].as_u64(),
        "the rebuilt projection's epoch is newer"
    );
    assert!(
        !active(&s, &old).await,
        "a token minted before the flush stays dead"
    );
    assert!(active(&s, &new).await);
    assert_eq!(vend_ok(&s, &ann).await, new, "and the new one is warm");

    // A deactivated user stays refused when the vault forgets everything.
    let bo = engineer(&s, "flush-bo@acme.example").await;
    let bo_token = vend_ok(&s, &bo).await;
    deactivate_entra(&s, &bo).await;
    assert_refused(&s.vend(&bo).await, "user_inactive");
    flushall(redis.port).await;
    assert_refused(&s.vend(&bo).await, "user_inactive");
    assert_refused(&s.vend(&bo).await, "user_inactive");
    assert!(!active(&s, &bo_token).await);
    // Ann is unaffected by Bo, and re-minted once more after the second flush.
    let third = vend_ok(&s, &ann).await;
    assert_ne!(third, new);
    assert!(!active(&s, &new).await);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_token_copied_to_another_user_does_not_open() {
    let (s, redis) = on_private_redis().await;
    let ann = engineer(&s, "swap-ann@acme.example").await;
    let bob = engineer(&s, "swap-bob@acme.example").await;
    let ann_token = vend_ok(&s, &ann).await;
    let bob_token = vend_ok(&s, &bob).await;
    assert_ne!(ann_token, bob_token);

    let mut c = redis_on(redis.port).await;
    let sealed: Vec<u8> = redis::cmd("HGET")
        .arg(vault_key(&ann))
        .arg("t:github")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(!sealed.is_empty(), "ann's sealed token is in her hash");
    assert!(
        !sealed
            .windows(ann_token.len())
            .any(|w| w == ann_token.as_bytes()),
        "the vault holds the token sealed, not in clear"
    );

    // Copied under Bob's key: it fails to open under Bob's AAD and is replaced.
    let _: () = redis::cmd("HSET")
        .arg(vault_key(&bob))
        .arg("t:github")
        .arg(&sealed)
        .query_async(&mut c)
        .await
        .unwrap();
    let r = s.vend(&bob).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let got = r.body["access_token"].as_str().unwrap();
    assert_ne!(got, ann_token, "Bob never receives Ann's token");
    assert_eq!(jwt_claims(got)["sub"], bob.as_str());
    assert!(active(&s, got).await);
    let stored: Vec<u8> = redis::cmd("HGET")
        .arg(vault_key(&bob))
        .arg("t:github")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_ne!(stored, sealed, "the foreign ciphertext was replaced");

    // Even with Bob's epoch forged to Ann's, so that only the user differs in the AAD.
    let ann_epoch: i64 = redis::cmd("HGET")
        .arg(vault_key(&ann))
        .arg("_e")
        .query_async(&mut c)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(vault_key(&bob))
        .arg("t:github")
        .arg(&sealed)
        .arg("_e")
        .arg(ann_epoch)
        .query_async(&mut c)
        .await
        .unwrap();
    let r = s.vend(&bob).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let got = r.body["access_token"].as_str().unwrap();
    assert_ne!(got, ann_token, "Bob never receives Ann's token");
    assert_eq!(jwt_claims(got)["sub"], bob.as_str());
    assert_eq!(jwt_claims(got)["ab_ep"].as_i64(), Some(ann_epoch));

    // Copied under another connector of Ann's: the connector is in the AAD too.
    let r = s
        .admin(
            reqwest::Method::POST,
            "/admin/v1/orgs/acme/connectors",
            Some(json!({"id": "linear", "strategy": "broker_jwt",
                "audience": "https://mcp.linear.example", "scopes": ["read"], "enabled": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let r = s
        .admin(
            reqwest::Method::POST,
            "/admin/v1/orgs/acme/grants",
            Some(
                json!({"group": "Engineering", "connector": "linear", "scopes": ["read"],
                "actions": {"read": "allow", "write": "blocked", "delete": "blocked"}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let vend_linear = || {
        s.gateway(
            ACME_GATEWAY,
            reqwest::Method::POST,
            "/internal/v1/token",
            Some(json!({"org": "acme", "user": {"id": ann}, "connector": "linear"})),
        )
    };
    let r = vend_linear().await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let _: () = redis::cmd("HSET")
        .arg(vault_key(&ann))
        .arg("t:linear")
        .arg(&sealed)
        .query_async(&mut c)
        .await
        .unwrap();
    let r = vend_linear().await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let got = r.body["access_token"].as_str().unwrap();
    assert_ne!(
        got, ann_token,
        "the GitHub token is never served for Linear"
    );
    assert_eq!(jwt_claims(got)["aud"], "https://mcp.linear.example");

    // Ann's own record was never touched.
    assert_eq!(vend_ok(&s, &ann).await, ann_token);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vend_and_revoke_on_redis_cluster() {
    let cluster = cluster().await;
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(with_github(test_config(&url, &dir)), &cluster.url());
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    let ann = engineer(&s, "cluster@acme.example").await;
    let token = vend_ok(&s, &ann).await;
    assert_eq!(vend_ok(&s, &ann).await, token);
    assert!(active(&s, &token).await);

    // The record really lives in the cluster, in the user's slot.
    let nodes: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    let mut c = redis::cluster::ClusterClient::new(nodes)
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(vault_key(&ann))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(fields.contains(&"t:github".to_string()), "{fields:?}");

    deactivate_entra(&s, &ann).await;
    assert_refused(&s.vend(&ann).await, "user_inactive");
    assert!(!active(&s, &token).await);
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(vault_key(&ann))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        !fields.iter().any(|f| f.starts_with("t:")),
        "no token left in the cluster: {fields:?}"
    );

    // Reactivation mints a new token; the old one stays dead.
    let r = s.acme().set_active_entra(&ann, true).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let again = vend_ok(&s, &ann).await;
    assert_ne!(again, token);
    assert!(!active(&s, &token).await);
    assert!(active(&s, &again).await);
    s.stop().await;
}

/// The broker on Redis Sentinel: vend, deactivate, then fail the master over. The revoked
/// user stays refused and the old token dead on the new master; a reactivated user is
/// served a new token from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vend_and_revoke_on_redis_sentinel_across_a_failover() {
    let (sentinel, _servers) = private_sentinel().await;
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut cfg = with_redis(with_github(test_config(&url, &dir)), &sentinel.url());
    cfg.storage.redis_timeout_ms = 300;
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    let ann = engineer(&s, "sentinel@acme.example").await;
    let bo = engineer(&s, "sentinel2@acme.example").await;
    let token = vend_ok(&s, &ann).await;
    let kept = vend_ok(&s, &bo).await;
    assert_eq!(vend_ok(&s, &ann).await, token);
    assert!(active(&s, &token).await);

    deactivate_entra(&s, &ann).await;
    assert_refused(&s.vend(&ann).await, "user_inactive");
    assert!(!active(&s, &token).await);

    // The revocation has reached the replica; the replica becomes the master.
    sentinel
        .wait_replicated(Duration::from_secs(5))
        .expect("replicated");
    let new_master = tokio::task::spawn_blocking({
        let sentinel = sentinel.clone();
        move || sentinel.failover(Duration::from_secs(20))
    })
    .await
    .unwrap()
    .expect("failover");
    assert_ne!(new_master, sentinel.master_port);
    // The broker follows the sentinels' announcement, or asks once a second: until it has,
    // the old master (not yet demoted) still answers, with the same data.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Within a bounded time the broker serves from the new master: bo is served (his token,
    // or a re-minted one if the broker read the old master while it was being emptied to
    // resynchronise as a replica: a missing projection is rebuilt with a newer epoch, which
    // never revives anything), ann stays refused and her old token dead.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.vend(&bo).await;
        if r.status == StatusCode::OK {
            let served = r.body["access_token"].as_str().unwrap().to_string();
            assert_eq!(jwt_claims(&served)["sub"], bo.as_str());
            assert!(active(&s, &served).await, "served and active");
            if served != kept {
                assert!(!active(&s, &kept).await, "a re-mint retires the old token");
            }
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert!(
            Instant::now() < deadline,
            "not served after the failover: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes land on the new master too (the old one may still answer as a master for a
    // while): a vend that mints must store there.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.vend(&ann).await;
        assert_ne!(
            r.status,
            StatusCode::OK,
            "a deactivated user is never served"
        );
        if r.body["code"] == "user_inactive" {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!active(&s, &token).await);
    // Reactivation, retried while the failover still answers 503 (a legitimate, transient
    // answer); then her new token must be stored on the new master.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.acme().set_active_entra(&ann, true).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        assert!(Instant::now() < deadline, "reactivation: {:?}", r.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut c = redis::Client::open(format!("redis://127.0.0.1:{new_master}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.vend(&ann).await;
        if r.status == StatusCode::OK {
            assert_ne!(r.body["access_token"], token.as_str());
            let fields: Vec<String> = redis::cmd("HKEYS")
                .arg(vault_key(&ann))
                .query_async(&mut c)
                .await
                .unwrap();
            if fields.contains(&"t:github".to_string()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not on the new master: {fields:?}"
            );
        } else {
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
            assert!(Instant::now() < deadline, "{:?}", r.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

/// A user in Engineering (created on first use); returns the user's id.
async fn engineer(s: &TestServer, name: &str) -> String {
    crate::support::engineer_in_group(s, name).await.0
}
