//! A signing key rotation while two replicas (sharing PostgreSQL and Redis) serve without a
//! pause: the new key is in both replicas' JWKS before anything it signed is vended, no vend
//! fails and every token introspects active on both replicas throughout, tokens carry the
//! new kid once it activates, and the old kid stays published. A key past its age is rotated
//! the same way by a running replica's reload, without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth_broker::keys::RotationOutcome;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{connector, grant};
use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, TestServer, engineer_in_group, fresh_database, jwks_kids, jwt_claims,
    kid_of, test_config, with_github, with_redis,
};

/// The publication lead and reload interval of this test (production: 600 s and 10 s).
const LEAD_SECS: u64 = 3;
const POLL_MS: u64 = 200;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One replica, as a gateway and a JWKS reader see it.
#[derive(Clone)]
struct Replica {
    http: reqwest::Client,
    base: String,
}

impl Replica {
    fn of(s: &TestServer) -> Self {
        Self {
            http: s.http.clone(),
            base: s.base(),
        }
    }

    async fn vend(&self, user: &str, connector: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/internal/v1/token", self.base))
            .bearer_auth(ACME_GATEWAY)
            .json(&json!({"org": "acme", "user": {"id": user}, "connector": connector}))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    async fn active(&self, token: &str) -> bool {
        let r = self
            .http
            .post(format!("{}/oauth/introspect", self.base))
            .bearer_auth(ACME_GATEWAY)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["active"] == true
    }

    async fn kids(&self) -> Vec<String> {
        let jwks: Value = self
            .http
            .get(format!("{}/orgs/acme/jwks.json", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks_kids(&jwks)
    }
}

/// One vend of the load and what became of its token.
struct Vended {
    replica: usize,
    connector: &'static str,
    /// When the request was sent (Unix ms).
    sent_ms: i64,
    status: StatusCode,
    body: Value,
    kid: String,
    iat: i64,
    /// Introspection on each replica.
    active: [bool; 2],
}

/// Vends round-robin over users and connectors on `replicas[me]` until `stop`, introspecting
/// every token on both replicas.
fn load(
    replicas: Arc<[Replica; 2]>,
    me: usize,
    users: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Vended>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut i = me;
        while !stop.load(Ordering::Relaxed) {
            let user = &users[i % users.len()];
            let connector = if (i / users.len()).is_multiple_of(2) {
                "jira"
            } else {
                "github"
            };
            i += 1;
            let sent_ms = now_ms();
            let (status, body) = replicas[me].vend(user, connector).await;
            let token = body["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut active = [false; 2];
            let (mut kid, mut iat) = (String::new(), 0);
            if status == StatusCode::OK {
                for (r, a) in replicas.iter().zip(active.iter_mut()) {
                    *a = r.active(&token).await;
                }
                kid = kid_of(&token);
                iat = jwt_claims(&token)["iat"].as_i64().unwrap();
            }
            out.push(Vended {
                replica: me,
                connector,
                sent_ms,
                status,
                body,
                kid,
                iat,
                active,
            });
        }
        out
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_rotation_is_published_on_every_replica_before_it_signs() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    cfg.broker.issuer = Some("https://broker.acme.test".into());
    cfg.broker.signing_key_publish_lead_secs = LEAD_SECS;
    cfg.broker.signing_key_poll_interval_ms = POLL_MS;
    // jira: 61 s tokens with the default 60 s refresh margin, so minted anew (signed with the
    // key in force) on any vend a second after the last; github's stay in the vault.
    let acme = cfg.orgs.get_mut("acme").unwrap();
    let mut jira = connector("https://mcp.jira.example", &["issue:read"]);
    jira.token_ttl_secs = Some(61);
    acme.connectors.insert("jira".into(), jira);
    acme.grants.push(grant("eng-jira", "jira", &["issue:read"]));
    let a = TestServer::start_with(Backend::Postgres, cfg.clone()).await;
    let b = TestServer::start_with(Backend::Postgres, cfg.clone()).await;
    let replicas = Arc::new([Replica::of(&a), Replica::of(&b)]);
    let mut users = Vec::new();
    for n in 0..4 {
        users.push(
            engineer_in_group(&a, &format!("rot{n}@acme.example"))
                .await
                .0,
        );
    }
    let old = replicas[0].kids().await;
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(replicas[1].kids().await, old, "one key, shared");
    let old = old[0].clone();

    let users = Arc::new(users);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..2)
        .map(|me| load(replicas.clone(), me, users.clone(), stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;

    // The rotation, as `auth-broker keys rotate-signing --org acme` makes it, against the
    // replicas' database while they serve.
    let rotated_ms = now_ms();
    let outcome = auth_broker::rotate_signing_keys(&cfg, Some("acme"))
        .await
        .unwrap();
    let [
        RotationOutcome::Scheduled {
            kid: new,
            activates_ms,
            ..
        },
    ] = &outcome[..]
    else {
        panic!("one rotation scheduled: {outcome:?}");
    };
    let (new, activates_ms) = (new.clone(), *activates_ms);
    assert!(activates_ms >= rotated_ms + LEAD_SECS as i64 * 1000);
    let again = auth_broker::rotate_signing_keys(&cfg, Some("acme"))
        .await
        .unwrap();
    assert!(
        matches!(&again[..], [RotationOutcome::UnderWay { kid, .. }] if *kid == new),
        "a second rotation waits for the first: {again:?}"
    );

    // Published by both replicas within a reload or two.
    let deadline = Instant::now() + Duration::from_secs(LEAD_SECS);
    let published_ms = loop {
        let (ka, kb) = (replicas[0].kids().await, replicas[1].kids().await);
        if ka.contains(&new) && kb.contains(&new) {
            break now_ms();
        }
        assert!(
            Instant::now() < deadline,
            "not published everywhere: {ka:?} {kb:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "new kid on both replicas {} ms after the rotation, {} ms before it signs",
        published_ms - rotated_ms,
        activates_ms - published_ms
    );
    assert!(published_ms < activates_ms);

    // Load goes on until well after the activation.
    while now_ms() < activates_ms + 3_000 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut vends = Vec::new();
    for t in tasks {
        vends.extend(t.await.unwrap());
    }

    for v in &vends {
        assert_eq!(
            v.status,
            StatusCode::OK,
            "a vend during the rotation: {}",
            v.body
        );
        assert_eq!(
            v.active,
            [true, true],
            "a {} token ({}) vended by replica {} does not introspect on both",
            v.connector,
            v.kid,
            v.replica
        );
        assert!(v.kid == old || v.kid == new, "{}", v.kid);
        // Signed before the activation with the old key, from it with the new one (`iat` is
        // in whole seconds).
        if v.kid == new {
            assert!(
                v.sent_ms > published_ms,
                "signed by the new key before both published it"
            );
            assert!(
                v.iat * 1000 > activates_ms - 1000,
                "new key used early: iat {}",
                v.iat
            );
        } else {
            assert!(
                v.iat * 1000 < activates_ms,
                "old key used late: iat {}",
                v.iat
            );
        }
    }
    for me in 0..2 {
        let mine: Vec<&Vended> = vends.iter().filter(|v| v.replica == me).collect();
        let during = mine
            .iter()
            .filter(|v| v.sent_ms > rotated_ms && v.sent_ms < activates_ms)
            .count();
        let late_jira: Vec<&&Vended> = mine
            .iter()
            .filter(|v| v.connector == "jira" && v.sent_ms > activates_ms + 2_000)
            .collect();
        eprintln!(
            "replica {me}: {} vends, {during} between the rotation and the activation, {} new-key tokens",
            mine.len(),
            mine.iter().filter(|v| v.kid == new).count()
        );
        assert!(during > 0, "replica {me} vended nothing during the lead");
        assert!(
            !late_jira.is_empty(),
            "replica {me} minted nothing after the activation"
        );
        assert!(
            late_jira.iter().all(|v| v.kid == new),
            "replica {me} minted with the old key after the activation"
        );
    }
    for r in replicas.iter() {
        let kids = r.kids().await;
        assert!(kids.contains(&old) && kids.contains(&new), "{kids:?}");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_replica_rotates_a_key_past_its_age_without_a_restart() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut cfg = with_github(test_config(&url, &dir));
    cfg.broker.signing_key_publish_lead_secs = LEAD_SECS;
    cfg.broker.signing_key_poll_interval_ms = POLL_MS;
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    let replica = Replica::of(&s);
    let (ann, _) = engineer_in_group(&s, "aged@acme.example").await;
    let old = replica.kids().await;
    assert_eq!(old.len(), 1);

    // The key has signed for longer than `signing_key_max_age_days` (30).
    let store = s.store().await;
    store
        .raw_execute("UPDATE signing_keys SET activates_ms = activates_ms - 2678400000")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(LEAD_SECS);
    let new = loop {
        let kids = replica.kids().await;
        if let Some(k) = kids.iter().find(|k| **k != old[0]) {
            break k.clone();
        }
        assert!(Instant::now() < deadline, "no rotation by age: {kids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Published at once, signing after the lead; the old key signs until then.
    let (status, body) = replica.vend(&ann, "github").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(kid_of(&first), old[0]);
    tokio::time::sleep(Duration::from_secs(LEAD_SECS) + Duration::from_millis(500)).await;
    let r = s.kill_switch(&ann).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (status, body) = replica.vend(&ann, "github").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(kid_of(body["access_token"].as_str().unwrap()), new);
    let kids = replica.kids().await;
    assert!(kids.contains(&old[0]) && kids.contains(&new), "{kids:?}");
    store.close().await;
    s.stop().await;
}
