//! ID-JAGs issued by the org's own IdP (`id_jag_source = "idp_exchange"`, as Okta Cross App
//! Access does), end to end against two real peers: `oidc-provider` as the org's IdP (sign-in
//! with `offline_access`, rotating refresh tokens, RFC 8693 exchange issuing ID-JAGs) and
//! `oidc-provider` as the upstream AS, which trusts the IdP and not the broker.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::peer::{CLIENT_ID as UPSTREAM_CLIENT, UpstreamAs};
use super::{broker_config, declare, eventually, vend, vend_ok};
use crate::idp::{
    CLIENT_ID as SIGN_IN_CLIENT, RealIdp, browser, session_cookie, sign_in, with_oidc,
};
use crate::support::{Backend, TestServer, read};

const SIGN_IN_SECRET: &str = "idp-exchange-sign-in-secret-made-for-this-test";
const SUBJECT: &str = "okta-00u1";

/// The broker, its org's IdP, an upstream trusting only that IdP, and Ann (SCIM-provisioned
/// with the IdP's subject as `externalId`, in Engineering) with `connectors` declared as
/// `id_jag` from the IdP and granted to Engineering.
struct World {
    s: TestServer,
    idp: RealIdp,
    up: UpstreamAs,
    ann: String,
    http: reqwest::Client,
}

async fn world(connectors: &[&str]) -> World {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // The upstream trusts the IdP; the IdP learns the upstream once it runs.
    let idp = RealIdp::start_with(
        0,
        json!([{"client_id": SIGN_IN_CLIENT, "client_secret": SIGN_IN_SECRET,
                "redirect_uris": [format!("{base}/auth/acme/oidc/callback")],
                "grant_types": ["authorization_code", "refresh_token"]}]),
        json!({SUBJECT: {"email": "ann@acme.example", "email_verified": true, "name": "Ann",
                          "groups": ["Engineering"]}}),
        json!({}),
    )
    .await;
    let up = UpstreamAs::start_trusting(
        json!([{"issuer": idp.issuer, "jwks_uri": format!("{}/jwks", idp.issuer)}]),
        // Never used: these connectors need no consent at the upstream.
        vec![format!("{base}/auth/acme/connect/unused/callback")],
        300,
    )
    .await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/_test/id-jag-audiences", idp.issuer))
        .json(&json!({up.issuer.clone(): {"client_id": UPSTREAM_CLIENT}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    crate::log_capture::register(SIGN_IN_SECRET);
    let config = with_oidc(broker_config(60).await, &idp.issuer, SIGN_IN_SECRET, |s| {
        s.oidc
            .as_mut()
            .unwrap()
            .scopes
            .push("offline_access".into());
    });
    let s = TestServer::start_on(listener, Backend::Postgres, config).await;
    let r = s
        .acme()
        .post(
            "/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "ann@acme.example", "externalId": SUBJECT, "active": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let ann = r.body["id"].as_str().unwrap().to_string();
    s.acme().create_group("Engineering", &[&ann]).await;
    for c in connectors {
        declare(
            &s,
            &up,
            c,
            "id_jag",
            json!({"id_jag_source": "idp_exchange"}),
        )
        .await;
    }
    World {
        s,
        idp,
        up,
        ann,
        http,
    }
}

impl World {
    /// Ann signs in through the IdP in a fresh browser; the browser.
    async fn sign_in(&self) -> reqwest::Client {
        let b = browser();
        let start = format!("{}/auth/acme/login?return_to=/auth/acme/me", self.s.base());
        let r = read(b.get(&start).send().await.unwrap()).await;
        assert_eq!(r.status, StatusCode::FOUND, "{:?}", r.body);
        let to = format!("{}&login_hint={SUBJECT}", r.header("location").unwrap());
        let (r, _) = sign_in(&b, &to).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
        assert!(session_cookie(&r).is_some());
        b
    }

    /// Each connector's state on Ann's `/me` page.
    async fn states(&self, b: &reqwest::Client) -> Value {
        let r = read(
            b.get(format!("{}/auth/acme/me", self.s.base()))
                .header("accept", "application/json")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        r.body["connectors"].clone()
    }

    async fn idp(&self, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.idp.issuer);
        let req = match body {
            Some(b) => self.http.post(url).json(&b),
            None => self.http.get(url),
        };
        req.send().await.unwrap().json().await.unwrap()
    }

    /// ID-JAGs the IdP issued and refused so far.
    async fn jags(&self) -> (u64, u64) {
        let v = self.idp("/_test/id-jag-count", None).await;
        (
            v["issued"].as_u64().unwrap(),
            v["refused"].as_u64().unwrap(),
        )
    }

    async fn disable(&self, disabled: bool) {
        self.idp(
            "/_test/disable",
            Some(json!({"sub": SUBJECT, "disabled": disabled})),
        )
        .await;
    }
}

fn state_of(states: &Value, connector: &str) -> String {
    states
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["connector"] == connector)
        .map(|c| c["consent"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_org_idp_issues_the_id_jag_and_the_upstream_trusts_it() {
    let w = world(&["linear", "notes"]).await;

    // Before Ann signs in there is no IdP grant: consent (signing in) is required.
    let r = vend(&w.s, &w.ann, "linear").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["code"], "consent_required");
    let consent_url = r.body["consent_url"].as_str().unwrap().to_string();
    assert!(
        consent_url.ends_with("/auth/acme/connect/linear"),
        "{consent_url}"
    );

    let b = w.sign_in().await;
    assert_eq!(state_of(&w.states(&b).await, "linear"), "connected");
    // Connecting such a connector is signing in again.
    let r = read(b.get(&consent_url).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::FOUND, "{:?}", r.body);
    assert!(
        r.header("location")
            .unwrap()
            .ends_with("/auth/acme/login?return_to=/auth/acme/me"),
        "{:?}",
        r.header("location")
    );

    // The upstream token comes from an ID-JAG the IdP signed: its subject is the IdP's.
    let token = vend_ok(&w.s, &w.ann, "linear").await;
    let at_as = w.up.token(&token).await;
    assert_eq!(at_as["active"], true, "{at_as}");
    assert_eq!(at_as["sub"], SUBJECT, "{at_as}");
    assert_eq!(w.jags().await, (1, 0));
    // Served from the vault while fresh: no second exchange.
    assert_eq!(vend_ok(&w.s, &w.ann, "linear").await, token);
    assert_eq!(w.jags().await.0, 1);

    // Tenants are walls: a globex gateway key vends nothing of acme's, and Ann's acme session
    // connects nothing at globex.
    let r =
        w.s.gateway(
            crate::support::GLOBEX_GATEWAY,
            Method::POST,
            "/internal/v1/token",
            Some(json!({"org": "acme", "user": {"id": w.ann}, "connector": "linear"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], "org_forbidden");
    let r = read(
        b.get(format!("{}/auth/globex/connect/linear", w.s.base()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let to = r.header("location").unwrap_or_default();
    assert!(
        !to.starts_with(&w.idp.issuer) && !to.contains("/auth/acme/"),
        "{} {to}",
        r.status
    );
    assert_eq!(w.jags().await.0, 1);

    // The IdP disables Ann: the next mint gets nothing, and her grant needs a new sign-in.
    w.disable(true).await;
    let r = vend(&w.s, &w.ann, "notes").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert_eq!(r.body["code"], "consent_required");
    assert_eq!(state_of(&w.states(&b).await, "notes"), "needs_reconsent");
    assert_eq!(w.jags().await.0, 1, "no ID-JAG for a disabled account");

    // Enabled again and signed in again: a new grant works.
    w.disable(false).await;
    let b = w.sign_in().await;
    assert_eq!(state_of(&w.states(&b).await, "notes"), "connected");
    let notes = vend_ok(&w.s, &w.ann, "notes").await;
    assert_eq!(w.up.token(&notes).await["sub"], SUBJECT);
    assert_eq!(w.jags().await, (2, 0));

    // Offboarding removes the IdP grant and revokes it at the IdP, on the receipt.
    let r = w.s.okta_deactivate(&w.ann).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let idp_row = |receipt: &Value| {
        receipt["upstream"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["connector"] == "~idp")
            .cloned()
    };
    let receipt = w.s.offboarding_of(&w.ann).await.body;
    let row = idp_row(&receipt).expect("the IdP grant is on the receipt");
    assert_eq!(row["token_kind"], "refresh_token", "{row}");
    let revoked = eventually(Duration::from_secs(15), || async {
        idp_row(&w.s.offboarding_of(&w.ann).await.body).is_some_and(|r| r["status"] == "revoked")
    })
    .await;
    assert!(revoked, "{}", w.s.offboarding_of(&w.ann).await.body);
    assert_eq!(
        vend(&w.s, &w.ann, "notes").await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connectors_minting_at_once_use_the_idp_refresh_token_one_at_a_time() {
    // The IdP rotates refresh tokens and ends the whole family when one is used twice: four
    // connectors minting at once must take turns, or every later mint would fail.
    let connectors = ["linear", "notes", "wiki", "docs"];
    let w = world(&connectors).await;
    let _b = w.sign_in().await;
    let vends: Vec<_> = connectors
        .iter()
        .flat_map(|c| std::iter::repeat_n(*c, 5))
        .map(|c| vend(&w.s, &w.ann, c))
        .collect();
    let answers = futures_util::future::join_all(vends).await;
    for r in &answers {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    }
    assert_eq!(w.jags().await, (connectors.len() as u64, 0));
    // The grant survived: one more connector still mints.
    declare(
        &w.s,
        &w.up,
        "extra",
        "id_jag",
        json!({"id_jag_source": "idp_exchange"}),
    )
    .await;
    vend_ok(&w.s, &w.ann, "extra").await;
    assert_eq!(w.jags().await.0, connectors.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_exchange_needs_the_org_to_sign_in_with_oidc() {
    // The default test org signs in with nothing: valid input its configuration cannot serve.
    let t = super::setup("id_jag", json!({}), 300, 60).await;
    let r =
        t.s.admin(
            Method::POST,
            "/admin/v1/orgs/acme/connectors",
            Some(
                json!({"id": "jag", "strategy": "id_jag", "audience": "https://a.example",
                "scopes": ["read"], "upstream": {"issuer": t.up.issuer, "client_id": "c",
                "client_secret": "s", "id_jag_source": "idp_exchange"}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{:?}", r.body);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("upstream.id_jag_source"),
        "{:?}",
        r.body
    );
}
