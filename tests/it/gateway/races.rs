//! Revocation against concurrency: vends in flight while a user is deactivated, and two
//! replicas sharing PostgreSQL and Redis seeing each other's revocations.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use super::{Vault, server};
use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, TestServer, engineer_in_group as engineer, fresh_database, test_config,
    with_github, with_redis,
};

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
    let view = s.user_view(&ann).await;
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

/// A token response that missed the fence's deadline (its thread stalled between the vend's
/// decision and the socket write) reads the epoch again on the real vault: it leaves when
/// nothing moved, and is withheld once a revocation moved the epoch, leaving a `withheld`
/// record in the audit log on PostgreSQL.
mod late_responses {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use auth_broker::domain::ports::{AuditLog, OrgRecord, Tenants};
    use auth_broker::domain::vault::{Projection, Vault};
    use auth_broker::domain::{OrgId, UserId};
    use auth_broker::http::fenced_body::{FenceCounters, FencedBody};
    use auth_broker::service::access::VendFence;
    use auth_broker::service::audit_sink::{AuditSink, VendAudit, VendSubject, WithheldAudit};
    use auth_broker::service::tokens::TokenRecord;
    use auth_broker::service::vend::{Reconfirm, Served};
    use auth_broker::store::SqlStore;
    use auth_broker::store::vault_redis::RedisVault;
    use axum::body::Bytes;
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;

    use crate::redis_fixture::{cluster, require_reachable, standalone_vault};
    use crate::support::{Backend, fresh_database, open_store};

    /// An audit log on a fresh PostgreSQL database that knows `org`.
    async fn audit_log(org: &OrgId) -> Arc<SqlStore> {
        let (url, _) = fresh_database(Backend::Postgres).await;
        let store = open_store(&url).await;
        store.migrate().await.unwrap();
        let record = OrgRecord {
            id: org.clone(),
            display_name: "late".into(),
        };
        store.upsert_org(&record).await.unwrap();
        Arc::new(store)
    }

    /// A clock standing a moment after the vends the test records.
    struct Later;
    impl auth_broker::domain::clock::Clock for Later {
        fn now_ms(&self) -> i64 {
            1_800_000_000_005
        }
    }

    async fn late_body_follows_the_epoch(vault: Arc<dyn Vault>) {
        let org = OrgId::new(format!("late-{}", uuid::Uuid::new_v4().simple()));
        let user = UserId::new("u1");
        let p = Projection {
            active: true,
            epoch: 1,
            connectors: Default::default(),
        };
        let epoch = vault.put_projection(&org, &user, &p).await.unwrap();
        let store = audit_log(&org).await;
        let (sink, _writer) = AuditSink::start(store.clone());
        let counters = Arc::new(FenceCounters::default());
        // The `ok` record the vend of token `jti` queued before its response.
        let vended = |jti: &str| VendAudit {
            org: org.clone(),
            at_ms: 1_800_000_000_000,
            gateway: Arc::from("gw"),
            outcome: "ok",
            subject: VendSubject::Served {
                token: Arc::new(Served::new(
                    &TokenRecord {
                        access_token: "t".into(),
                        expires_at: 1_800_000_600,
                        scopes: vec![],
                        jti: jti.into(),
                        minted_at: 1_800_000_000,
                    },
                    "github",
                    "u1",
                )),
                cached: true,
            },
        };
        let late = |epoch: u64, jti: &str| {
            let check = Reconfirm::new(
                vault.clone(),
                VendFence,
                org.clone(),
                user.clone(),
                epoch,
                Instant::now() - Duration::from_millis(20),
            );
            FencedBody::new(
                Bytes::from_static(b"{\"access_token\":\"t\"}"),
                Instant::now() - Duration::from_millis(1),
                Some(check),
                counters.clone(),
            )
            .audited(WithheldAudit::new(
                sink.clone(),
                Arc::new(Later),
                vended(jti),
            ))
        };

        let sent = late(epoch, "sent")
            .collect()
            .await
            .expect("sent after a re-read");
        assert_eq!(&sent.to_bytes()[..], b"{\"access_token\":\"t\"}");
        assert_eq!(counters.reconfirmed.load(Ordering::Relaxed), 1);
        assert_eq!(counters.late.load(Ordering::Relaxed), 0);

        let (moved, _) = vault.revoke(&org, &user, &p, None).await.unwrap();
        assert!(moved > epoch);
        assert!(
            late(epoch, "held").collect().await.is_err(),
            "withheld after the revocation"
        );
        assert_eq!(counters.reconfirmed.load(Ordering::Relaxed), 2);
        assert_eq!(counters.late.load(Ordering::Relaxed), 1);

        // The withheld response, and only it, is in the audit log.
        sink.flush().await;
        let records = store
            .audit_query(&org, Some("u1"), None, None, 10)
            .await
            .unwrap();
        assert_eq!(records.len(), 1, "{records:#?}");
        let summary = &records[0].entry.summary;
        assert_eq!(records[0].entry.action, "token.vend");
        assert_eq!(summary["outcome"], "withheld");
        assert_eq!(summary["token_id"], "held");
        assert!(records[0].entry.at_ms >= 1_800_000_000_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_standalone_redis() {
        let vault = standalone_vault(Duration::from_millis(500)).await;
        late_body_follows_the_epoch(Arc::new(vault)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_redis_cluster() {
        let c = cluster().await;
        let vault = RedisVault::connect(&c.url(), Duration::from_millis(500))
            .await
            .unwrap();
        require_reachable(&vault).await;
        late_body_follows_the_epoch(Arc::new(vault)).await;
    }
}
