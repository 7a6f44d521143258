//! Revocation against concurrency: vends in flight while a user is deactivated, and two
//! replicas sharing PostgreSQL and Redis seeing each other's revocations (with the epoch).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use super::{Vault, server};
use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, TestServer, engineer_in_group as engineer, fresh_database, test_config,
    with_github, with_redis,
};

/// Vends race a deactivation. Stated as data: every token served carries an epoch, and every
/// one served under an epoch the deactivation's revocation superseded is inactive at
/// introspection; no vend sent after the deactivation answered gets a token; nothing is left
/// in the vault. A response already on the wire may arrive after the answer: its lower epoch
/// is what tells the gateway to drop it (CONTRACT.md, the gateway's rule).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_token_of_the_old_epoch_survives_a_deactivation() {
    let s = server(Backend::Postgres, Vault::Redis).await;
    let (ann, _) = engineer(&s, "race@acme.example").await;
    assert_eq!(s.vend(&ann).await.status, StatusCode::OK);
    let base = s.base();
    let http = s.http.clone();
    let answered = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let (http, base, ann, answered) =
            (http.clone(), base.clone(), ann.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(150 * (i % 40))).await;
            let sent_after = answered.get().is_some();
            let r = http
                .post(format!("{base}/internal/v1/token"))
                .bearer_auth(ACME_GATEWAY)
                .json(&json!({"org": "acme", "user": {"id": ann}, "connector": "github",
                              "scopes": if i % 3 == 0 { json!(["repo:read"]) } else { json!(null) }}))
                .send()
                .await
                .unwrap();
            let status = r.status();
            (sent_after, status, r.json::<serde_json::Value>().await.unwrap())
        }));
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    let r = s.okta_deactivate(&ann).await;
    answered.set(Instant::now()).unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let receipts = s.offboarding_of(&ann).await.body["receipts"].clone();
    let revoked_at = receipts
        .as_array()
        .and_then(|r| r.last())
        .and_then(|r| r["epoch"].as_u64())
        .expect("the deactivation left a receipt with its epoch");
    let (mut served, mut refused_after) = (Vec::new(), 0);
    for t in tasks {
        let (sent_after, status, body) = t.await.unwrap();
        if status == StatusCode::OK {
            assert!(
                !sent_after,
                "a vend sent after the deactivation answered got a token"
            );
            let epoch = body["epoch"]
                .as_u64()
                .expect("every token response carries its epoch");
            assert!(
                epoch < revoked_at,
                "served under {epoch}, revoked at {revoked_at}"
            );
            served.push(body["access_token"].as_str().unwrap().to_string());
        } else {
            // Refused, or (under this load) asked to retry: never a token.
            match status {
                StatusCode::FORBIDDEN => assert_eq!(body["code"], "user_inactive"),
                StatusCode::SERVICE_UNAVAILABLE => assert_eq!(body["code"], "unavailable"),
                other => panic!("{other}: {body}"),
            }
            refused_after += usize::from(sent_after);
        }
    }
    eprintln!(
        "race: {} served under an older epoch, {refused_after} refused after the answer",
        served.len()
    );
    // Nothing remains in the vault, and nothing that was served is still active.
    let view = s.user_view(&ann).await;
    assert_eq!(view.body["live_tokens"], json!([]));
    assert_eq!(view.body["epoch"], json!(revoked_at));
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
    // Ann's own event: the stream carries every acme event on this Redis, other tests' too.
    let anns = |seen: &str| {
        seen.split("\n\n")
            .any(|e| e.contains("event: user.deactivated") && e.contains(&ann))
    };
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !anns(&seen) && Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_secs(1), events.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(anns(&seen), "{seen}");
    a.stop().await;
    b.stop().await;
}

/// Point 1 of the revocation guarantee, with the fault placed between two steps: broker A's
/// vault is slowed down (every command it sends arrives 40 ms late), so A's group change is
/// held between its reads and its projection write while broker B deactivates the same user.
/// Whatever the offset, the deactivation is what the data says afterwards: the user is
/// inactive in the projection and refused, never written back as active by A's stale read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_held_in_flight_cannot_undo_a_deactivation() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    let upstream = redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let slow = crate::support::CutProxy::start_slow(upstream, Duration::from_millis(40)).await;
    let mut cfg_a = cfg.clone();
    cfg_a.storage.redis_url = Some(format!("redis://{}", slow.addr));
    cfg_a.storage.redis_timeout_ms = 1_000;
    let a = TestServer::start_with(Backend::Postgres, cfg_a).await;
    let b = TestServer::start_with(Backend::Postgres, cfg).await;
    let design = b.acme().create_group("Design", &[]).await;
    let mut resurrected = Vec::new();
    for (trial, offset_ms) in (0..=60).step_by(5).enumerate() {
        let (ann, _) = engineer(&b, &format!("held-{trial}@acme.example")).await;
        assert_eq!(b.vend(&ann).await.status, StatusCode::OK);
        let join = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "add", "path": "members", "value": [{"value": ann}]}]});
        let held = {
            let scim = a.acme();
            let path = format!("/Groups/{design}");
            tokio::spawn(async move { scim.patch(&path, join).await })
        };
        tokio::time::sleep(Duration::from_millis(offset_ms)).await;
        let r = b.okta_deactivate(&ann).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let r = held.await.unwrap();
        assert!(
            matches!(r.status.as_u16(), 200 | 503),
            "{} {:?}",
            r.status,
            r.body
        );
        let view = b.user_view(&ann).await;
        let vend = b.vend(&ann).await;
        if view.body["projection"]["active"] != false || vend.status == StatusCode::OK {
            resurrected.push((offset_ms, view.body.clone()));
        } else {
            assert_eq!(vend.body["code"], "user_inactive");
        }
    }
    assert!(
        resurrected.is_empty(),
        "deactivations undone by a change held in flight: {resurrected:?}"
    );
    a.stop().await;
    b.stop().await;
}
