//! `auth-broker keys rotate` over what upstream connectors seal, with real processes and a
//! real authorization server (`upstream::peer`): a connector's client secret, a person's
//! grant and the pending rows of the revocation outbox are re-sealed while a broker serves,
//! and a broker with only the new key in its ring refreshes the grant (with the client
//! secret) and delivers the queued revocations. A refresh that races the rotation keeps the
//! refresh token the AS rotated to.

use base64::Engine;

use super::*;
use crate::processes::upstream::{
    admin, declare_linear, stored_refresh_token, upstream_config, upstream_for,
};
use crate::upstream::eventually;

/// The upstream rows of a user's offboarding receipt.
async fn receipt_rows(api: &Api, user: &str) -> Vec<Value> {
    let path = format!("/users/{user}/offboarding");
    let body = admin(api, reqwest::Method::GET, &path, None).await;
    body["upstream"].as_array().cloned().unwrap_or_default()
}

/// What the database holds sealed for upstreams, as the key id of each: the connectors'
/// client secrets, the grants, the pending outbox rows.
async fn sealed_upstream(d: &Deployment) -> [Vec<String>; 3] {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&d.database_url).await.unwrap();
    let mut out: [Vec<String>; 3] = Default::default();
    let queries = [
        "SELECT upstream_secret FROM connectors WHERE upstream_secret IS NOT NULL",
        "SELECT sealed FROM upstream_grants",
        "SELECT sealed FROM upstream_revocations WHERE status = 'pending'",
    ];
    for (q, ids) in queries.iter().zip(out.iter_mut()) {
        let rows: Vec<String> = sqlx::query_scalar(*q).fetch_all(&mut c).await.unwrap();
        *ids = rows
            .iter()
            .map(|b64| {
                key_id(
                    &base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                )
            })
            .collect();
    }
    c.close().await.ok();
    out
}

/// The figures of a summary line `<what>: A re-sealed, B already current, C skipped (changed
/// meanwhile), D unreadable`.
fn counts(stdout: &str, what: &str) -> [u64; 4] {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(what)?.strip_prefix(": "))
        .unwrap_or_else(|| panic!("no {what} line in {stdout:?}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    n.try_into().unwrap_or_else(|n| panic!("{line}: {n:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_reseals_upstream_secrets_grants_and_queued_revocations_while_serving() {
    let d = Deployment::new().await;
    let only_k1 = upstream_config(&d, "k1", &["k1"], "k1");
    let both = upstream_config(&d, "k1-k2", &["k1", "k2"], "k2");
    let only_k2 = upstream_config(&d, "k2", &["k2"], "k2");

    // Under k1: linear's client secret, Ann's grant, and Bob's revocations queued while the
    // AS's revocation endpoint is down.
    let p1 = Broker::start(&only_k1, &d.dir, "k1").await;
    let api = Api::new(&d, &p1);
    let up = upstream_for(&d, &p1).await;
    declare_linear(&api, &up, json!({})).await;
    let ann = api.engineer("ann@rotate.example").await;
    let bob = api.engineer("bob@rotate.example").await;
    api.token(&ann, "linear").await;
    api.token(&ann, "github").await;
    api.token(&bob, "linear").await;
    up.fault(json!({"mode": "unavailable", "path": "revocation"}))
        .await;
    let (s, body) = api.okta_deactivate(&bob).await;
    assert_eq!(s, 200, "{body}");
    let tried = eventually(Duration::from_secs(15), || async {
        let rows = receipt_rows(&api, &bob).await;
        !rows.is_empty()
            && rows
                .iter()
                .all(|r| r["status"] == "pending" && r["attempts"].as_u64() >= Some(1))
    })
    .await;
    let queued = receipt_rows(&api, &bob).await;
    assert!(tried, "{queued:?}");
    assert_eq!(
        queued.len(),
        2,
        "Bob's refresh and access tokens: {queued:?}"
    );
    let [secrets, grants, pending] = sealed_upstream(&d).await;
    assert_eq!((secrets.len(), grants.len(), pending.len()), (1, 1, 2));
    for id in secrets.iter().chain(&grants).chain(&pending) {
        assert_eq!(id, "k1");
    }
    p1.stop(&api).await;

    // Every replica seals with k2; `keys rotate` while Ann's tokens are vended (her linear
    // token is refreshed every 3 s, rewriting her grant).
    let p2 = Broker::start(&both, &d.dir, "k1-k2").await;
    let api = Api::new(&d, &p2);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (api, ann, stop) = (api.clone(), ann.clone(), stop.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for c in ["linear", "github"] {
                    answers.push((c, api.vend(&ann, c).await));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, out, err) = rotate(&both).await;
    assert_eq!(code, Some(0), "keys rotate while serving: {out}{err}");
    assert_eq!(
        counts(&out, "upstream client secrets"),
        [1, 0, 0, 0],
        "{out}"
    );
    let g = counts(&out, "upstream grants");
    assert_eq!((g[0] + g[1], g[3]), (1, 0), "Ann's grant: {out}");
    assert_eq!(
        counts(&out, "pending upstream revocations"),
        [2, 0, 0, 0],
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = tokio::time::timeout(WAIT, load).await.unwrap().unwrap();
    assert!(answers.len() >= 10, "{}", answers.len());
    for (c, (s, body)) in &answers {
        assert_eq!(*s, 200, "a {c} vend during the rotation: {body}");
    }
    let (code, out, err) = rotate(&both).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        counts(&out, "upstream client secrets"),
        [0, 1, 0, 0],
        "{out}"
    );
    assert_eq!(counts(&out, "upstream grants"), [0, 1, 0, 0], "{out}");
    assert_eq!(
        counts(&out, "pending upstream revocations"),
        [0, 2, 0, 0],
        "{out}"
    );
    for id in sealed_upstream(&d).await.iter().flatten() {
        assert_eq!(id, "k2", "still sealed under k1");
    }
    // The client secret's re-seal is an audited change of the connector.
    let audit = admin(&api, reqwest::Method::GET, "/audit?limit=1000", None).await;
    let resealed = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "keys.rotate.client_secret")
        .unwrap_or_else(|| panic!("no audit record: {audit}"));
    assert_eq!(resealed["resource_id"], "linear");
    assert_eq!(resealed["actor"], "cli:keys-rotate");
    p2.stop(&api).await;

    // Only k2 left. Ann's access token is due: her grant is refreshed with the client secret
    // (no new exchange), and Bob's queued revocations reach the AS once it is back.
    let p3 = Broker::start(&only_k2, &d.dir, "k2").await;
    let api = Api::new(&d, &p3);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    up.reset_stats().await;
    let token = api.token(&ann, "linear").await;
    assert!(up.active(&token).await);
    let stats = up.stats().await;
    assert_eq!(
        stats["refreshes"], 1,
        "the re-sealed grant refreshed: {stats}"
    );
    assert_eq!(stats["token_exchange"], 0, "{stats}");
    up.fault(json!({"mode": "none"})).await;
    let delivered = eventually(Duration::from_secs(90), || async {
        receipt_rows(&api, &bob)
            .await
            .iter()
            .all(|r| r["status"] == "revoked")
    })
    .await;
    let rows = receipt_rows(&api, &bob).await;
    assert!(delivered, "{rows:?}");
    assert_eq!(rows.len(), 2);
    assert_eq!(up.stats().await["revocations"], 2);
    p3.stop(&api).await;
    up.stop().await;
    d.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_racing_the_rotation_keeps_the_token_the_upstream_rotated_to() {
    let d = Deployment::new().await;
    // The broker seals with k1 (and opens k2); the rotation re-seals under k2.
    let serving = upstream_config(&d, "k1-active", &["k1", "k2"], "k1");
    let both = upstream_config(&d, "k1-k2", &["k1", "k2"], "k2");
    let p = Broker::start(&serving, &d.dir, "broker").await;
    let api = Api::new(&d, &p);
    let up = upstream_for(&d, &p).await;
    declare_linear(&api, &up, json!({"timeout_ms": 20000})).await;
    let ann = api.engineer("ann@race.example").await;
    api.token(&ann, "linear").await;
    let (rt1, _) = stored_refresh_token(&d, &ann).await;
    tokio::time::sleep(Duration::from_millis(3200)).await;

    // The AS rotates Ann's refresh token at once and answers 8 s later (within the test
    // client's 10 s); meanwhile the rotation re-seals the grant the refresh read.
    up.reset_stats().await;
    up.fault(json!({"mode": "slow_answer", "ms": 8000, "count": 1}))
        .await;
    let vending = {
        let (api, ann) = (api.clone(), ann.clone());
        tokio::spawn(async move { api.vend(&ann, "linear").await })
    };
    let reached = eventually(Duration::from_secs(10), || async {
        up.stats().await["faults_applied"] == 1
    })
    .await;
    assert!(reached, "the refresh reached the AS: {}", up.stats().await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, out, err) = rotate(&both).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(counts(&out, "upstream grants"), [1, 0, 0, 0], "{out}");
    assert!(
        !vending.is_finished(),
        "the refresh was still waiting for the AS when its grant was re-sealed"
    );

    // The refresh stores the rotated token over the re-sealed grant and serves: no replay of
    // the spent token, no family revoked, no new exchange.
    let (s, body) = vending.await.unwrap();
    assert_eq!(s, 200, "{body}");
    let stats = up.stats().await;
    assert_eq!(stats["refreshes"], 1, "{stats}");
    assert_eq!(stats["reuse_detected"], 0, "{stats}");
    assert_eq!(stats["token_exchange"], 0, "{stats}");
    let (rt2, sealed_under) = stored_refresh_token(&d, &ann).await;
    assert_ne!(rt2, rt1);
    assert_eq!(
        sealed_under, "k1",
        "the refresh wrote last, as its broker seals"
    );
    let now = up.token(&rt2).await;
    assert_eq!(
        (now["active"].clone(), now["consumed"].clone()),
        (json!(true), json!(false)),
        "{now}"
    );
    p.stop(&api).await;
    up.stop().await;
    d.remove().await;
}
