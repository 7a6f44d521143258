//! Sign-in through OIDC: the happy path against a real OpenID provider (oidc-provider, with
//! a signing-key rotation mid-test), and a hostile provider whose every forgery must end in
//! a clear 4xx page, an audit record and no session.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::idp::{Attack, HostileIdp, RealIdp, browser, session_cookie, sign_in, with_oidc};
use crate::support::{Backend, TestServer, fresh_database, read, test_config, with_github};

const SECRET: &str = "test-client-secret-generated-for-this-run";

/// A broker whose `acme` org signs in through `issuer`.
async fn broker(
    listener: TcpListener,
    issuer: &str,
    f: impl FnOnce(&mut auth_broker::config::SignInConfig),
) -> TestServer {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let c = with_oidc(with_github(test_config(&url, &dir)), issuer, SECRET, f);
    TestServer::start_on(listener, Backend::Postgres, c).await
}

async fn provision(s: &TestServer, user_name: &str, external_id: &str, groups: &[&str]) -> String {
    let r = s
        .acme()
        .post(
            "/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": user_name, "externalId": external_id, "active": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    for g in groups {
        s.acme().create_group(g, &[&id]).await;
    }
    id
}

async fn me(b: &reqwest::Client, s: &TestServer) -> crate::support::Resp {
    read(
        b.get(format!("{}/auth/acme/me", s.base()))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn audit_actions(s: &TestServer) -> Vec<Value> {
    // Records are queued; give the writer a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let r = s
        .admin(Method::GET, "/admin/v1/orgs/acme/audit?limit=1000", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.body["records"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_provider_signs_people_in_and_survives_a_key_rotation() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let idp = RealIdp::start(
        &format!("{base}/auth/acme/oidc/callback"),
        SECRET,
        json!({
            "okta-00u1": {"email": "ann@acme.example", "email_verified": true, "name": "Ann",
                          "groups": ["Engineering", "Broker Admins"]},
            "okta-00u2": {"email": "bob@acme.example", "name": "Bob", "groups": ["Engineering"]},
        }),
    )
    .await;
    let s = broker(listener, &idp.issuer, |_| {}).await;
    let ann = provision(
        &s,
        "ann@acme.example",
        "okta-00u1",
        &["Engineering", "Broker Admins"],
    )
    .await;

    // Without a session the page sends the browser to sign in.
    let b = browser();
    let r = read(b.get(format!("{base}/auth/acme/me")).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::FOUND);
    assert_eq!(
        r.header("location").unwrap(),
        "/auth/acme/login?return_to=/auth/acme/me"
    );
    assert_eq!(me(&b, &s).await.status, StatusCode::UNAUTHORIZED);

    // The login goes to the provider with PKCE S256, state and nonce.
    let r = read(
        b.get(format!("{base}/auth/acme/login?return_to=/auth/acme/me"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let to = reqwest::Url::parse(&r.header("location").unwrap()).unwrap();
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    assert!(to.as_str().starts_with(&idp.issuer));
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["response_type"], "code");
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32);
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    let login_cookie = r.header("set-cookie").unwrap();
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Lax"));

    // Ann signs in (login_hint picks the account at the test provider).
    let (r, _) = sign_in(&b, &format!("{}&login_hint=okta-00u1", to)).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    assert_eq!(r.header("location").unwrap(), "/auth/acme/me");
    let cookie = session_cookie(&r).expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/")
    );
    assert!(
        !cookie.contains("Secure"),
        "plain http on loopback: no Secure flag"
    );

    let page = me(&b, &s).await;
    assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
    assert_eq!(page.body["user"]["id"], ann.as_str());
    assert_eq!(page.body["identity"]["issuer"], idp.issuer.as_str());
    assert_eq!(page.body["identity"]["subject"], "okta-00u1");
    assert_eq!(page.body["admin"], true);
    let github = &page.body["connectors"][0];
    assert_eq!(github["connector"], "github");
    assert_eq!(github["scopes"], json!(["repo:read", "repo:write"]));
    assert_eq!(github["actions"]["write"], "needs_approval");
    assert_eq!(github["token"], "none");
    // The same page as HTML, escaped and plain.
    let html = b.get(format!("{base}/auth/acme/me")).send().await.unwrap();
    assert_eq!(html.status(), StatusCode::OK);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let text = html.text().await.unwrap();
    assert!(
        text.contains("GitHub") && text.contains("repo:read"),
        "{text}"
    );

    // An admin's session reaches the admin API, but not from another site.
    let r = read(
        b.get(format!("{base}/admin/v1/orgs/acme/connectors"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = read(
        b.post(format!("{base}/admin/v1/orgs/acme/users/{ann}/revoke"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["code"], "cross_site_request");

    // The provider rotates its signing key: the next login's ID token has a kid the broker
    // has never seen, and it fetches the key set again.
    let kid = idp.rotate_keys().await;
    assert!(!kid.is_empty());
    let b2 = browser();
    next_login(&idp, "okta-00u1").await;
    let (r, _) = sign_in(&b2, &format!("{base}/auth/acme/login")).await;
    assert_eq!(
        r.status,
        StatusCode::SEE_OTHER,
        "after rotation: {:?}",
        r.body
    );
    assert!(session_cookie(&r).is_some());

    // Bob has no SCIM user and the org has no just-in-time creation: refused, no session.
    next_login(&idp, "okta-00u2").await;
    let b3 = browser();
    let (r, _) = sign_in(&b3, &format!("{base}/auth/acme/login")).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert!(r.body.as_str().unwrap().contains("not_provisioned"));
    assert!(session_cookie(&r).is_none());
    assert_eq!(me(&b3, &s).await.status, StatusCode::UNAUTHORIZED);

    // Logout ends the session on the server, not just in the browser.
    let stolen = cookie.split(';').next().unwrap().to_string();
    let r = b
        .post(format!("{base}/auth/acme/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let replay = read(
        reqwest::Client::new()
            .get(format!("{base}/auth/acme/me"))
            .header("cookie", stolen)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        replay.status,
        StatusCode::UNAUTHORIZED,
        "a logged-out session is dead"
    );

    let records = audit_actions(&s).await;
    let successes = records
        .iter()
        .filter(|r| r["action"] == "signin.success")
        .count();
    assert_eq!(successes, 2, "{records:#?}");
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "signin.failure" && r["summary"]["code"] == "not_provisioned")
    );
    assert!(records.iter().any(|r| r["action"] == "signin.logout"));
    s.stop().await;
    idp.stop().await;
}

/// Which account the test provider signs in next.
async fn next_login(idp: &RealIdp, sub: &str) {
    let r = reqwest::Client::new()
        .post(format!("{}/_test/next-login", idp.issuer))
        .json(&json!({"sub": sub}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

async fn hostile_setup(
    f: impl FnOnce(&mut auth_broker::config::SignInConfig),
) -> (HostileIdp, TestServer, String) {
    let idp = HostileIdp::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let s = broker(listener, &idp.issuer, f).await;
    let ann = provision(&s, "ann@acme.example", "u1", &["Engineering"]).await;
    (idp, s, ann)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forged_id_token_is_refused_with_no_session() {
    let (idp, s, _ann) = hostile_setup(|_| {}).await;
    let start = format!("{}/auth/acme/login", s.base());

    // The control case: the honest token signs in.
    let b = browser();
    let (r, _) = sign_in(&b, &start).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    let first = session_cookie(&r).unwrap();
    // Signing in again in the same browser replaces the session: the old one is dead.
    let (r, _) = sign_in(&b, &start).await;
    let second = session_cookie(&r).unwrap();
    assert_ne!(first, second);
    let old = read(
        reqwest::Client::new()
            .get(format!("{}/auth/acme/me", s.base()))
            .header("cookie", first.split(';').next().unwrap())
            .header("accept", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        old.status,
        StatusCode::UNAUTHORIZED,
        "the session was rotated"
    );
    assert_eq!(me(&b, &s).await.status, StatusCode::OK);

    for (attack, code) in [
        (Attack::AlgNone, "invalid_id_token"),
        (Attack::BadSignature, "invalid_id_token"),
        (Attack::Hs256WithPublicKey, "invalid_id_token"),
        (Attack::WrongAudience, "invalid_id_token"),
        (Attack::WrongIssuer, "invalid_id_token"),
        (Attack::Expired, "invalid_id_token"),
        (Attack::IatInFuture, "invalid_id_token"),
        (Attack::NonceMismatch, "invalid_id_token"),
        (Attack::WrongAzp, "invalid_id_token"),
        (Attack::MixUpIss, "issuer_mismatch"),
    ] {
        idp.set_attack(attack.clone());
        let b = browser();
        let (r, at) = sign_in(&b, &start).await;
        assert!(
            r.status.is_client_error(),
            "{attack:?} must be refused with a 4xx: {} {:?}",
            r.status,
            r.body
        );
        let page = r.body.as_str().unwrap_or_default();
        assert!(page.contains(code), "{attack:?}: {page}");
        assert!(page.contains("Sign-in failed"));
        assert!(session_cookie(&r).is_none(), "{attack:?} set a session");
        assert_eq!(
            me(&b, &s).await.status,
            StatusCode::UNAUTHORIZED,
            "{attack:?}"
        );
        // The same callback as JSON: problem+json.
        assert!(at.contains("/auth/acme/oidc/callback"));
    }
    // The mix-up was caught before the code was spent at the provider.
    let records = audit_actions(&s).await;
    let failures: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "signin.failure")
        .collect();
    assert_eq!(
        failures.len(),
        10,
        "one audit record per refusal: {failures:#?}"
    );
    let text = serde_json::to_string(&records).unwrap();
    assert!(!text.contains("eyJ"), "no ID token in the audit log");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_single_use_and_bound_to_the_browser() {
    let (idp, s, _ann) = hostile_setup(|_| {}).await;
    let start = format!("{}/auth/acme/login", s.base());
    let b = browser();
    let (r, callback) = sign_in(&b, &start).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);

    // Replaying the same callback (same state and code): refused.
    let again = read(b.get(&callback).send().await.unwrap()).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.body.as_str().unwrap().contains("invalid_state"));
    assert!(session_cookie(&again).is_none());

    // A state nobody issued.
    let forged = callback.replace("state=", "state=x");
    let r = read(browser().get(&forged).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // A login started in one browser and finished in another (login CSRF): refused, and the
    // state is spent.
    let victim = browser();
    let attacker = browser();
    let r = read(attacker.get(&start).send().await.unwrap()).await;
    let to = r.header("location").unwrap();
    let r = read(attacker.get(&to).send().await.unwrap()).await;
    let cb = r.header("location").unwrap();
    let r = read(victim.get(&cb).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.body.as_str().unwrap().contains("invalid_state"));
    assert!(session_cookie(&r).is_none());
    let r = read(attacker.get(&cb).send().await.unwrap()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "the state was spent");

    // An error from the provider is shown, not followed.
    let r = read(attacker.get(&start).send().await.unwrap()).await;
    let to = reqwest::Url::parse(&r.header("location").unwrap()).unwrap();
    let state = to
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .to_string();
    let r = read(
        attacker
            .get(format!(
                "{}/auth/acme/oidc/callback?error=access_denied&state={state}&iss={}",
                s.base(),
                idp.issuer
            ))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["code"], "idp_error");
    assert_eq!(
        idp.token_calls(),
        1,
        "only the first, good callback exchanged a code"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_key_ids_fetches_the_key_set_at_most_once() {
    let (idp, s, _ann) = hostile_setup(|_| {}).await;
    let start = format!("{}/auth/acme/login", s.base());
    idp.set_attack(Attack::UnknownKid);
    for _ in 0..20 {
        let (r, _) = sign_in(&browser(), &start).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    }
    // Discovery fetched the key set once; the first unknown kid once more; then nothing for
    // the configured 30 s.
    assert_eq!(idp.jwks_fetches(), 2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_redirects_are_refused() {
    let (_idp, s, _ann) = hostile_setup(|_| {}).await;
    for evil in ["https://evil.example/", "//evil.example", "/\\evil.example"] {
        let b = browser();
        let start = format!("{}/auth/acme/login?return_to={}", s.base(), urlencode(evil));
        let (r, _) = sign_in(&b, &start).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(r.header("location").unwrap(), "/auth/acme/me", "{evil}");
    }
    s.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A broker whose groups come from sign-in, and a person the IdP never pushed, created on
/// first sign-in with the asserted `groups`; returns the IdP, the broker and the user's id.
async fn signed_in_jit(subject: &str, groups: &[&str]) -> (HostileIdp, TestServer, String) {
    let (idp, s, _) = hostile_setup(|c| {
        c.jit = true;
        c.groups_source = auth_broker::config::GroupsSource::Assertion;
    })
    .await;
    idp.set_user(subject, groups);
    let (r, _) = sign_in(&browser(), &format!("{}/auth/acme/login", s.base())).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    let found = s
        .acme()
        .get(&format!("/Users?filter=externalId%20eq%20%22{subject}%22"))
        .await;
    let id = found.body["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (idp, s, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asserted_groups_grant_and_revoke_like_scim_groups() {
    // A person the IdP never pushed: created on first sign-in, entitled by asserted groups.
    let (idp, s, id) = signed_in_jit("jit-1", &["Engineering"]).await;
    let start = format!("{}/auth/acme/login", s.base());
    let token = s.vend(&id).await;
    assert_eq!(token.status, StatusCode::OK, "{:?}", token.body);

    // The next sign-in no longer asserts the group: the token is revoked before the login
    // completes, exactly as a SCIM group removal would.
    idp.set_user("jit-1", &[]);
    let (r, _) = sign_in(&browser(), &start).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let denied = s.vend(&id).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.body["code"], "not_entitled");
    let offboarding = s.offboarding_of(&id).await;
    assert!(
        offboarding.body.to_string().contains("signin.groups"),
        "{:?}",
        offboarding.body
    );

    // Entra's overage marker with groups taken from sign-in: refused with a clear reason,
    // and the groups of the earlier sign-in stop counting (fail closed).
    idp.set_user("jit-1", &["Engineering"]);
    let (r, _) = sign_in(&browser(), &start).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(s.vend(&id).await.status, StatusCode::OK);
    idp.set_user("jit-1", &[]);
    idp.set_extra(json!({"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph.example"}}}));
    let (r, _) = sign_in(&browser(), &start).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.as_str().unwrap().contains("groups_overage"));
    let denied = s.vend(&id).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{:?}", denied.body);

    // A deactivated user cannot sign in.
    idp.set_extra(json!({}));
    let r = s
        .acme()
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations": [{"op": "replace", "value": {"active": false}}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let (r, _) = sign_in(&browser(), &start).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.as_str().unwrap().contains("user_inactive"));
    s.stop().await;
}

/// Admin changes that take access away reach users whose groups come from sign-in, not only
/// members of SCIM groups: a deleted grant and a disabled connector revoke their tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_revoke_users_whose_groups_come_from_sign_in() {
    let (_idp, s, id) = signed_in_jit("jit-admin", &["Engineering"]).await;
    let token = s.vend(&id).await.body["access_token"]
        .as_str()
        .expect("entitled by the asserted group")
        .to_string();

    // The grant naming the asserted group is deleted.
    let r = s
        .admin(
            Method::DELETE,
            "/admin/v1/orgs/acme/grants/eng-github",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.body);
    assert_eq!(s.introspect(&token).await["active"], false);
    let denied = s.vend(&id).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{:?}", denied.body);
    assert_eq!(denied.body["code"], "not_entitled");

    // Granted again, then the connector is disabled.
    let r = s
        .admin(
            Method::POST,
            "/admin/v1/orgs/acme/grants",
            Some(
                json!({"group": "engineering", "connector": "github", "scopes": ["repo:read"],
                "actions": {"read": "allow", "write": "allow", "delete": "blocked"}}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let token = s.vend(&id).await.body["access_token"]
        .as_str()
        .expect("entitled again")
        .to_string();
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
    assert_eq!(s.introspect(&token).await["active"], false);
    assert_eq!(s.vend(&id).await.body["code"], "not_entitled");
    s.stop().await;
}

/// Anyone may start a sign-in, so the state it stores is capped per org: beyond
/// `server.max_pending_logins` the login route answers 429, and other orgs are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_sign_ins_are_capped_per_org() {
    let idp = HostileIdp::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut c = with_oidc(
        with_github(test_config(&url, &dir)),
        &idp.issuer,
        SECRET,
        |_| {},
    );
    c.server.max_pending_logins = 5;
    let s = TestServer::start_on(listener, Backend::Postgres, c).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = format!("{}/auth/acme/login", s.base());
    for i in 0..5 {
        let r = http.get(&start).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FOUND, "sign-in {i}");
    }
    let r = http.get(&start).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let body = r.text().await.unwrap();
    assert!(body.contains("too_many_logins"), "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_behind_https() {
    let idp = HostileIdp::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut c = with_oidc(
        with_github(test_config(&url, &dir)),
        &idp.issuer,
        SECRET,
        |_| {},
    );
    // Reached through a TLS-terminating proxy.
    c.server.public_url = Some("https://broker.example".into());
    let s = TestServer::start_on(listener, Backend::Postgres, c).await;
    let r = read(
        browser()
            .get(format!("{}/auth/acme/login", s.base()))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.contains("; Secure")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let to = r.header("location").unwrap();
    assert!(
        to.contains(&urlencode("https://broker.example/auth/acme/oidc/callback")),
        "the redirect URI is the public one: {to}"
    );
    s.stop().await;
}
