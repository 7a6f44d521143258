//! One-time consent (`authorization_code`) driven end to end over HTTP: a signed-in person
//! connects at `/auth/acme/connect/linear`, the upstream AS logs them in and redirects back,
//! and from then on gateways get that person's upstream token; a consent finished in another
//! person's session grants nothing; a grant the AS refuses for good asks for consent again.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{UpstreamAs, broker_config, declare, vend, vend_ok};
use crate::idp::{HostileIdp, browser, sign_in, with_oidc};
use crate::support::{Backend, Resp, TestServer, read};

const IDP_SECRET: &str = "upstream-consent-idp-secret";

/// A broker with OIDC sign-in (the in-process provider) and the upstream AS; two people in
/// Engineering, `u1` (Ann) and `u2` (Bob) at the IdP. Returns their broker ids.
async fn consent_setup() -> (HostileIdp, TestServer, UpstreamAs, String, String) {
    let idp = HostileIdp::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = format!("http://{}", listener.local_addr().unwrap());
    let up = UpstreamAs::start(&broker, 6).await;
    let config = with_oidc(broker_config(3).await, &idp.issuer, IDP_SECRET, |_| {});
    let s = TestServer::start_on(listener, Backend::Postgres, config).await;
    declare(&s, &up, "linear", "authorization_code", json!({})).await;
    let mut ids = Vec::new();
    for (name, sub) in [("ann@acme.example", "u1"), ("bob@acme.example", "u2")] {
        let r = s
            .acme()
            .post(
                "/Users",
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                       "userName": name, "externalId": sub, "active": true}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    s.acme()
        .create_group("Engineering", &[&ids[0], &ids[1]])
        .await;
    let (ann, bob) = (ids[0].clone(), ids[1].clone());
    (idp, s, up, ann, bob)
}

/// A browser signed in to the broker as the IdP's `sub`.
async fn signed_in(idp: &HostileIdp, s: &TestServer, sub: &str) -> reqwest::Client {
    idp.set_user(sub, &["Engineering"]);
    let b = browser();
    let (r, _) = sign_in(&b, &format!("{}/auth/acme/login", s.base())).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    b
}

/// Follows redirects from `url` (broker and AS alike) until the AS sends the browser back to
/// the broker's callback; returns that callback URL (not yet visited).
async fn to_callback(b: &reqwest::Client, url: &str) -> String {
    let mut url = reqwest::Url::parse(url).unwrap();
    for _ in 0..10 {
        if url.path().ends_with("/callback") {
            return url.to_string();
        }
        let r = b.get(url.clone()).send().await.unwrap();
        assert!(r.status().is_redirection(), "{} at {url}", r.status());
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        url = url.join(&loc).unwrap();
    }
    panic!("no callback reached from {url}");
}

/// The whole consent in a signed-in browser: connect, log in at the AS, back to the broker.
async fn connect_once(b: &reqwest::Client, connect: &str) {
    let start = b.get(connect).send().await.unwrap();
    let callback = to_callback(b, start.headers()["location"].to_str().unwrap()).await;
    let done = b.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
}

async fn get(b: &reqwest::Client, url: &str) -> Resp {
    read(
        b.get(url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn consent_of(me: &Value, connector: &str) -> Value {
    me["connectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connector"] == connector)
        .map(|c| c["consent"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_consents_once_and_gateways_get_their_upstream_token() {
    let (idp, s, up, ann, _bob) = consent_setup().await;
    let me_url = format!("{}/auth/acme/me", s.base());
    let connect = format!("{}/auth/acme/connect/linear", s.base());

    // Before consent: 409 with where to consent; the person's page says so.
    let r = vend(&s, &ann, "linear").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["code"], "consent_required");
    assert_eq!(r.body["consent_url"], connect);
    let b = signed_in(&idp, &s, "u1").await;
    assert_eq!(
        consent_of(&get(&b, &me_url).await.body, "linear"),
        "needs_consent"
    );
    up.next_login("u1").await;

    // Connect: broker → AS (PKCE S256, state) → AS login → back to the broker's callback.
    let start = b.get(&connect).send().await.unwrap();
    assert_eq!(start.status(), StatusCode::FOUND);
    let to_as = start.headers()["location"].to_str().unwrap().to_string();
    assert!(to_as.starts_with(&up.issuer), "{to_as}");
    let q: std::collections::HashMap<String, String> = reqwest::Url::parse(&to_as)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], super::CLIENT_ID);
    assert!(q["state"].len() >= 22, "128 bits of state");
    let callback = to_callback(&b, &to_as).await;
    assert!(
        callback.contains("iss="),
        "RFC 9207 iss is sent: {callback}"
    );
    let done = b.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(done.headers()["location"], "/auth/acme/me");
    assert_eq!(
        consent_of(&get(&b, &me_url).await.body, "linear"),
        "connected"
    );

    // The state is single use: replaying the callback changes nothing and is refused.
    let again = get(&b, &callback).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{:?}", again.body);
    assert_eq!(again.body["code"], "invalid_state");

    // Gateways now get Ann's token from the AS (minted by refreshing her grant).
    let token = vend_ok(&s, &ann, "linear").await;
    let at = up.token(&token).await;
    assert_eq!(
        (at["active"].clone(), at["sub"].clone()),
        (json!(true), json!("u1")),
        "{at}"
    );
    assert_eq!(
        vend_ok(&s, &ann, "linear").await,
        token,
        "served from the vault"
    );
    let stats = up.stats().await;
    assert_eq!(stats["refreshes"], 1, "{stats}");
    assert_eq!(stats["reuse_detected"], 0, "{stats}");

    // The consent is audited.
    let audited = super::eventually(Duration::from_secs(5), || async {
        s.audit_of(&ann)
            .await
            .body
            .to_string()
            .contains("upstream.consent.granted")
    })
    .await;
    assert!(audited, "{:?}", s.audit_of(&ann).await.body);
    up.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_finished_in_another_persons_session_grants_nothing() {
    let (idp, s, up, ann, bob) = consent_setup().await;
    let connect = format!("{}/auth/acme/connect/linear", s.base());

    // Ann starts a consent and logs in at the AS; instead of finishing it, the callback link
    // reaches Bob, who is signed in to the broker in his own browser.
    let ann_browser = signed_in(&idp, &s, "u1").await;
    up.next_login("u1").await;
    let start = ann_browser.get(&connect).send().await.unwrap();
    let to_as = start.headers()["location"].to_str().unwrap().to_string();
    let callback = to_callback(&ann_browser, &to_as).await;
    let bob_browser = signed_in(&idp, &s, "u2").await;
    let r = get(&bob_browser, &callback).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], "consent_session_mismatch");

    // Nobody got a grant: neither Bob (who finished) nor Ann (whose link was used up).
    for user in [&ann, &bob] {
        let v = vend(&s, user, "linear").await;
        assert_eq!(v.body["code"], "consent_required", "{:?}", v.body);
    }
    // And without a broker session the callback is refused outright.
    let anonymous = get(&crate::idp::browser(), &callback).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);

    // Tenants are walls: Ann's acme session means nothing at globex's connect URL, and a
    // globex gateway key vends nothing of acme's.
    let r = ann_browser
        .get(format!("{}/auth/globex/connect/linear", s.base()))
        .send()
        .await
        .unwrap();
    let to = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(!to.starts_with(&up.issuer), "{} {to}", r.status());
    let r = s
        .gateway(
            crate::support::GLOBEX_GATEWAY,
            reqwest::Method::POST,
            "/internal/v1/token",
            Some(json!({"org": "acme", "user": {"id": ann}, "connector": "linear"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], "org_forbidden");
    // Audited (the audit writer batches: it lands within moments).
    let audited = super::eventually(Duration::from_secs(5), || async {
        s.audit_of(&bob)
            .await
            .body
            .to_string()
            .contains("upstream.consent.refused")
    })
    .await;
    assert!(audited, "{:?}", s.audit_of(&bob).await.body);
    up.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_the_upstream_refuses_for_good_asks_for_consent_again() {
    let (idp, s, up, ann, _bob) = consent_setup().await;
    let b = signed_in(&idp, &s, "u1").await;
    up.next_login("u1").await;
    let connect = format!("{}/auth/acme/connect/linear", s.base());
    connect_once(&b, &connect).await;
    vend_ok(&s, &ann, "linear").await;

    // The token nears expiry (margin 3 s of 6) and the AS refuses the grant for good: a
    // fresh read shows the same grant, so it is dead; gateways are told, the page says so.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let mut events = s.events().await;
    up.fault(json!({"mode": "invalid_grant"})).await;
    let r = vend(&s, &ann, "linear").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["code"], "consent_required");
    let me = get(&b, &format!("{}/auth/acme/me", s.base())).await;
    assert_eq!(consent_of(&me.body, "linear"), "needs_reconsent");
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains("consent.required") && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(Some(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), events.chunk()).await
        {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    assert!(seen.contains("consent.required"), "{seen}");

    // Connecting again restores it.
    up.fault(json!({"mode": "none"})).await;
    connect_once(&b, &connect).await;
    vend_ok(&s, &ann, "linear").await;
    up.stop().await;
    s.stop().await;
}

/// The callback URL with its `iss` replaced by `iss` (or removed when `None`).
fn with_iss(callback: &str, iss: Option<&str>) -> String {
    let mut url = reqwest::Url::parse(callback).unwrap();
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != "iss")
        .collect();
    let mut q = url.query_pairs_mut();
    q.clear();
    for (k, v) in &kept {
        q.append_pair(k, v);
    }
    if let Some(iss) = iss {
        q.append_pair("iss", iss);
    }
    drop(q);
    url.to_string()
}

/// RFC 9207 mix-up defence: an authorization response naming another issuer is refused, and
/// so is one without `iss` from an AS whose metadata says it sends one. Neither grants
/// anything, and the state each used is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorization_response_from_another_issuer_or_without_iss_grants_nothing() {
    let (idp, s, up, ann, _bob) = consent_setup().await;
    let connect = format!("{}/auth/acme/connect/linear", s.base());
    let b = signed_in(&idp, &s, "u1").await;
    let metadata: Value = reqwest::get(format!(
        "{}/.well-known/openid-configuration",
        up.issuer.trim_end_matches('/')
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(
        metadata["authorization_response_iss_parameter_supported"], true,
        "the AS says it sends iss: {metadata}"
    );
    for iss in [Some("https://evil.example"), None] {
        up.next_login("u1").await;
        let start = b.get(&connect).send().await.unwrap();
        let to_as = start.headers()["location"].to_str().unwrap().to_string();
        let callback = to_callback(&b, &to_as).await;
        let forged = with_iss(&callback, iss);
        let r = get(&b, &forged).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "iss {iss:?}: {:?}",
            r.body
        );
        assert_eq!(r.body["code"], "issuer_mismatch", "iss {iss:?}");
        // The genuine response cannot be used after the forged one: the state is spent.
        let r = get(&b, &callback).await;
        assert_eq!(r.body["code"], "invalid_state", "iss {iss:?}: {:?}", r.body);
        let v = vend(&s, &ann, "linear").await;
        assert_eq!(
            v.body["code"], "consent_required",
            "iss {iss:?}: {:?}",
            v.body
        );
    }
    // The genuine flow, iss and all, still connects.
    up.next_login("u1").await;
    connect_once(&b, &connect).await;
    vend_ok(&s, &ann, "linear").await;
    up.stop().await;
    s.stop().await;
}
