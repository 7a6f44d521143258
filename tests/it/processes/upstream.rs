//! Upstream refresh across two real broker processes sharing PostgreSQL and Redis, against a
//! real authorization server that rotates refresh tokens and revokes the whole family on a
//! reuse: 200 concurrent vends of an expiring token make exactly one upstream refresh, and a
//! broker killed while the AS rotates its grant leaves a grant that is usable or explicitly
//! dead, never silently broken.

use base64::Engine;
use secrecy::ExposeSecret;

use super::*;
use crate::upstream::peer::{CLIENT_ID, CLIENT_SECRET, UpstreamAs};

/// The deployment's config `name` (vault `keys`, `active` sealing) with a 3 s refresh margin
/// and no background refresher: these tests decide when tokens are renewed.
pub(super) fn upstream_config(d: &Deployment, name: &str, keys: &[&str], active: &str) -> PathBuf {
    let path = d.config(name, keys, active);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[broker]\n",
        "[upstream]\nrefresher_interval_ms = 0\n\n[broker]\nrefresh_margin_secs = 3\n",
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the AS trusting the deployment's org issuer, whose keys `jwks_from` publishes;
/// access tokens live 6 s (fresh for 3 s with the 3 s margin).
pub(super) async fn upstream_for(d: &Deployment, jwks_from: &Broker) -> UpstreamAs {
    let trusted = json!([{
        "issuer": format!("https://broker.{}.test/orgs/{}", d.org, d.org),
        "jwks_uri": format!("{}/orgs/{}/jwks.json", jwks_from.base, d.org),
    }]);
    UpstreamAs::start_trusting(trusted, vec!["http://127.0.0.1:9/cb".into()], 6).await
}

/// An admin API call on the deployment's org.
pub(super) async fn admin(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = api
        .http
        .request(
            method,
            format!("{}/admin/v1/orgs/{}{path}", api.base, api.org),
        )
        .bearer_auth(&api.admin_key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let (s, body) = call(req).await;
    assert!((200..300).contains(&s), "{path}: {s} {body}");
    body
}

/// Declares `linear` (token exchange at `up`, its client secret stored sealed, `extra` merged
/// into `upstream`), granted to Engineering.
pub(super) async fn declare_linear(api: &Api, up: &UpstreamAs, extra: Value) {
    let mut upstream =
        json!({"issuer": up.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET});
    if let (Some(u), Some(e)) = (upstream.as_object_mut(), extra.as_object()) {
        u.extend(e.clone());
    }
    let connector = json!({"id": "linear", "strategy": "token_exchange",
        "audience": "https://linear.example", "scopes": ["read", "write"], "upstream": upstream});
    admin(api, reqwest::Method::POST, "/connectors", Some(connector)).await;
    let grant = json!({"group": "Engineering", "connector": "linear", "scopes": ["read", "write"],
        "actions": {"read": "allow", "write": "allow", "delete": "blocked"}});
    admin(api, reqwest::Method::POST, "/grants", Some(grant)).await;
}

/// The refresh token the system of record holds for `user`, opened with both vault keys.
pub(super) async fn stored_refresh_token(d: &Deployment, user: &str) -> (String, String) {
    use auth_broker::crypto::seal::{KeyRing, VaultKey};
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&d.database_url).await.unwrap();
    let sealed: String =
        sqlx::query_scalar("SELECT sealed FROM upstream_grants WHERE user_id = $1")
            .bind(user)
            .fetch_one(&mut c)
            .await
            .unwrap();
    c.close().await.ok();
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .unwrap();
    let keys = ["k1", "k2"].map(|k| {
        let text = std::fs::read_to_string(d.dir.join(k)).unwrap();
        VaultKey::from_base64(k, text.trim()).unwrap()
    });
    let ring = KeyRing::new("k1", keys.into()).unwrap();
    let rt = auth_broker::service::upstream::secrets::open_grant(
        &ring,
        &auth_broker::domain::OrgId::new(d.org.as_str()),
        &auth_broker::domain::UserId::new(user),
        "linear",
        &sealed,
    )
    .expect("the stored grant opens");
    (rt.expose_secret().to_string(), key_id(&sealed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_refresh_an_expiring_token_once_for_200_concurrent_vends() {
    let d = Deployment::new().await;
    let cfg = upstream_config(&d, "broker", &["k1"], "k1");
    let (pa, pb) = (
        Broker::start(&cfg, &d.dir, "a").await,
        Broker::start(&cfg, &d.dir, "b").await,
    );
    let (a, b) = (Api::new(&d, &pa), Api::new(&d, &pb));
    let up = upstream_for(&d, &pa).await;
    declare_linear(&a, &up, json!({})).await;
    let ann = a.engineer("ann@upstream.example").await;
    let first = a.token(&ann, "linear").await;
    let rt1 = stored_refresh_token(&d, &ann).await.0;
    tokio::time::sleep(Duration::from_millis(3200)).await;

    up.reset_stats().await;
    let vends: Vec<_> = (0..200)
        .map(|i| {
            let api = if i % 2 == 0 { a.clone() } else { b.clone() };
            let ann = ann.clone();
            tokio::spawn(async move { api.vend(&ann, "linear").await })
        })
        .collect();
    let mut tokens = std::collections::BTreeSet::new();
    for v in vends {
        let (status, body) = v.await.unwrap();
        assert_eq!(status, 200, "{body}");
        tokens.insert(body["access_token"].as_str().unwrap().to_string());
    }
    let stats = up.stats().await;
    assert_eq!(
        stats["refreshes"], 1,
        "exactly one upstream refresh: {stats}"
    );
    assert_eq!(
        stats["reuse_detected"], 0,
        "the family was never revoked: {stats}"
    );
    assert_eq!(stats["token_exchange"], 0, "{stats}");
    assert_eq!(tokens.len(), 1, "every caller got the one new token");
    let second = tokens.into_iter().next().unwrap();
    assert_ne!(second, first);
    assert!(
        up.active(&second).await,
        "the token every caller got is valid"
    );
    // The newest refresh token is the one stored, and it is live; the one before is spent.
    let rt2 = stored_refresh_token(&d, &ann).await.0;
    assert_ne!(rt2, rt1);
    let now = up.token(&rt2).await;
    assert_eq!(
        (now["active"].clone(), now["consumed"].clone()),
        (json!(true), json!(false)),
        "{now}"
    );
    assert_eq!(up.token(&rt1).await["active"], false);

    pa.stop(&a).await;
    pb.stop(&b).await;
    up.stop().await;
    d.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_while_the_upstream_rotates_leaves_no_silently_broken_grant() {
    let d = Deployment::new().await;
    let cfg = upstream_config(&d, "broker", &["k1"], "k1");
    // Replica B stays up (it publishes the org's keys to the AS); replica A is killed.
    let pa = Broker::start(&cfg, &d.dir, "a").await;
    let pb = Broker::start(&cfg, &d.dir, "b").await;
    let a = Api::new(&d, &pa);
    let up = upstream_for(&d, &pb).await;
    declare_linear(&a, &up, json!({})).await;
    let ann = a.engineer("ann@upstream.example").await;
    a.token(&ann, "linear").await;
    let rt1 = stored_refresh_token(&d, &ann).await.0;
    tokio::time::sleep(Duration::from_millis(3200)).await;

    // The AS rotates at once and answers 2 s later; the broker is killed (SIGKILL) while it
    // waits for the answer.
    // The AS rotates anyway: RT1 is spent, and the RT2 it issued reaches nobody.
    up.reset_stats().await;
    up.fault(json!({"mode": "slow_answer", "ms": 2000, "count": 1}))
        .await;
    let vending = {
        let a = a.clone();
        let ann = ann.clone();
        tokio::spawn(async move {
            try_call(
                a.http
                    .post(format!("{}/internal/v1/token", a.base))
                    .bearer_auth(&a.gateway_key)
                    .json(&json!({"org": a.org, "user": {"id": ann}, "connector": "linear"})),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(pa); // kills the process
    assert!(
        vending.await.unwrap().is_err(),
        "the vend died with the broker"
    );
    let rotated = crate::upstream::eventually(Duration::from_secs(10), || async {
        up.stats().await["refreshes"] == 1
    })
    .await;
    assert!(rotated, "the AS rotated the grant: {}", up.stats().await);
    assert_eq!(
        stored_refresh_token(&d, &ann).await.0,
        rt1,
        "the broker stored nothing"
    );

    // On restart the stored grant is RT1, spent at the AS. The broker presents it, the AS
    // sees a reuse and ends the whole family (RT2 included, so nothing is left dangling),
    // a fresh read shows the same grant refused, and it is declared dead. For token
    // exchange the broker needs nobody's consent: a new exchange makes it usable again (for
    // `authorization_code` the same path ends in 409 `consent_required`, see
    // upstream::consent). Never silently broken: every vend gets a valid token or a clear
    // answer.
    let pc = Broker::start(&cfg, &d.dir, "a-restarted").await;
    let c = Api::new(&d, &pc);
    let token = c.token(&ann, "linear").await;
    assert!(up.active(&token).await);
    let stats = up.stats().await;
    assert_eq!(stats["reuse_detected"], 1, "{stats}");
    assert_eq!(stats["token_exchange"], 1, "{stats}");
    let rt3 = stored_refresh_token(&d, &ann).await.0;
    assert_ne!(rt3, rt1);
    assert_eq!(up.token(&rt3).await["active"], true);
    pc.stop(&c).await;
    let b = Api::new(&d, &pb);
    pb.stop(&b).await;
    up.stop().await;
    d.remove().await;
}
