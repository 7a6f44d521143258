//! Sign-in through SAML 2.0: responses signed at test time with a test IdP key
//! (tests/peers/saml/forge.py, keys generated per test), and a battery of forgeries that
//! must each end in a 4xx page with no session.

use std::path::PathBuf;
use std::process::Stdio;

use auth_broker::config::{Config, GroupsSource, SamlConfig, SignInConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::idp::{browser, session_cookie};
use crate::support::{
    Backend, Resp, TestServer, fresh_database, read, test_config, with_github, with_redis,
};

const IDP: &str = "https://idp.example/saml/metadata";
const SSO: &str = "https://idp.example/saml/sso";

/// The SAML IdP of the tests: a key pair and the forgery tool.
pub struct Forge {
    python: PathBuf,
    script: PathBuf,
    dir: PathBuf,
}

impl Forge {
    /// Generates fresh IdP and attacker keys.
    pub async fn new() -> Self {
        let venv = std::env::var("AUTH_BROKER_SAML_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/auth-broker-saml-venv")
            });
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "the SAML test IdP needs its venv: python3 -m venv {0} && {0}/bin/pip install -r tests/peers/saml/requirements.txt",
            venv.display()
        );
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/saml/forge.py");
        let dir = std::env::temp_dir().join(format!("ab-saml-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = tokio::process::Command::new(&python)
            .arg(&script)
            .arg("keygen")
            .arg(&dir)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            python,
            script,
            dir,
        }
    }

    /// The IdP certificate, PEM.
    pub fn cert(&self) -> String {
        std::fs::read_to_string(self.dir.join("idp.crt")).unwrap()
    }

    /// The cases and whether a strict SP accepts them.
    pub async fn cases(&self) -> Vec<(String, bool)> {
        let out = tokio::process::Command::new(&self.python)
            .arg(&self.script)
            .arg("cases")
            .output()
            .await
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(c, v)| (c.to_string(), v.trim() == "accept"))
            .collect()
    }

    /// The request ID inside a redirect-binding `SAMLRequest`.
    pub async fn request_id(&self, saml_request: &str) -> String {
        let out = tokio::process::Command::new(&self.python)
            .arg(&self.script)
            .arg("inspect-request")
            .arg(saml_request)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// A base64 SAMLResponse for `case`, addressed to `acme`.
    pub async fn response(&self, case: &str, base: &str, request_id: &str, extra: Value) -> String {
        self.response_for("acme", case, base, request_id, extra)
            .await
    }

    /// A base64 SAMLResponse for `case`, addressed to `org`.
    pub async fn response_for(
        &self,
        org: &str,
        case: &str,
        base: &str,
        request_id: &str,
        extra: Value,
    ) -> String {
        let mut params = json!({
            "dir": self.dir, "case": case, "idp_entity_id": IDP,
            "sp_entity_id": format!("{base}/auth/{org}/saml/metadata"),
            "acs_url": format!("{base}/auth/{org}/saml/acs"),
            "request_id": request_id, "name_id": "ann@acme.example",
            "attributes": {"email": ["ann@acme.example"], "groups": ["Engineering"]},
        });
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        let mut child = tokio::process::Command::new(&self.python)
            .arg(&self.script)
            .arg("response")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(params.to_string().as_bytes())
            .await
            .unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Forge {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn with_saml(mut c: Config, cert: &str, f: impl FnOnce(&mut SignInConfig)) -> Config {
    let mut sign_in = SignInConfig {
        jit: false,
        groups_source: GroupsSource::Scim,
        admin_group: None,
        session_ttl_secs: 3600,
        oidc: None,
        saml: Some(SamlConfig {
            idp_entity_id: IDP.into(),
            idp_sso_url: SSO.into(),
            idp_certificates: vec![cert.to_string()],
            idp_certificate_files: vec![],
            sp_entity_id: None,
            subject_attribute: None,
            groups_attribute: "groups".into(),
            email_attribute: "email".into(),
            signature_algorithms: auth_broker::config::SAML_ALGORITHMS
                .iter()
                .map(|a| a.to_string())
                .collect(),
            max_response_bytes: 256 * 1024,
        }),
    };
    f(&mut sign_in);
    c.orgs.get_mut("acme").unwrap().sign_in = Some(sign_in);
    let problems = c.validate();
    assert!(problems.is_empty(), "{problems:?}");
    c
}

/// A login started at `base`: the RelayState, the browser-binding cookie, the request ID.
pub struct Started {
    pub relay: String,
    pub cookie: String,
    pub request_id: String,
}

pub async fn start(forge: &Forge, base: &str) -> Started {
    start_org(forge, base, "acme").await
}

/// Starts a login of `org`.
pub async fn start_org(forge: &Forge, base: &str, org: &str) -> Started {
    let r = read(
        browser()
            .get(format!("{base}/auth/{org}/login"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::FOUND, "{:?}", r.body);
    let to = reqwest::Url::parse(&r.header("location").unwrap()).unwrap();
    assert!(to.as_str().starts_with(SSO), "{to}");
    let q: std::collections::HashMap<_, _> = to.query_pairs().into_owned().collect();
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.contains("SameSite=None") && set.contains("Secure") && set.contains("HttpOnly"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    Started {
        relay: q["RelayState"].clone(),
        cookie,
        request_id: forge.request_id(&q["SAMLRequest"]).await,
    }
}

pub async fn post_acs(base: &str, st: &Started, response: &str) -> Resp {
    post_acs_org(base, "acme", st, response).await
}

/// Posts a response to the ACS of `org`.
pub async fn post_acs_org(base: &str, org: &str, st: &Started, response: &str) -> Resp {
    read(
        browser()
            .post(format!("{base}/auth/{org}/saml/acs"))
            .header("cookie", &st.cookie)
            .form(&[
                ("SAMLResponse", response),
                ("RelayState", st.relay.as_str()),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn broker_with(listener: TcpListener, c: Config) -> TestServer {
    TestServer::start_on(listener, Backend::Postgres, c).await
}

async fn provision_ann(s: &TestServer) -> String {
    let r = s
        .acme()
        .post(
            "/Users",
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "ann@acme.example", "externalId": "ann@acme.example", "active": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let id = r.body["id"].as_str().unwrap().to_string();
    s.acme().create_group("Engineering", &[&id]).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_responses_sign_in_and_every_forgery_is_refused() {
    let forge = Forge::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let c = with_saml(with_github(test_config(&url, &dir)), &forge.cert(), |_| {});
    let s = broker_with(listener, c).await;
    let ann = provision_ann(&s).await;

    // SP metadata names our entity id and ACS.
    let md = s
        .http
        .get(format!("{base}/auth/acme/saml/metadata"))
        .send()
        .await
        .unwrap();
    let status = md.status();
    let md = md.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{md}");
    assert!(md.contains(&format!("{base}/auth/acme/saml/acs")), "{md}");
    assert!(md.contains(&format!("{base}/auth/acme/saml/metadata")));
    assert!(md.contains("WantAssertionsSigned=\"true\""), "{md}");

    let cases = forge.cases().await;
    assert!(cases.len() >= 25, "{cases:?}");
    let mut accepted = 0;
    for (case, accept) in &cases {
        let st = start(&forge, &base).await;
        let resp = forge.response(case, &base, &st.request_id, json!({})).await;
        let r = post_acs(&base, &st, &resp).await;
        if *accept {
            assert_eq!(
                r.status,
                StatusCode::SEE_OTHER,
                "{case} must sign in: {:?}",
                r.body
            );
            let cookie = session_cookie(&r).expect("a session");
            let me = read(
                reqwest::Client::new()
                    .get(format!("{base}/auth/acme/me"))
                    .header("cookie", cookie.split(';').next().unwrap())
                    .header("accept", "application/json")
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(me.body["user"]["id"], ann.as_str(), "{case}");
            accepted += 1;
        } else {
            assert!(
                r.status.is_client_error(),
                "{case} must be refused with a 4xx, got {} {:?}",
                r.status,
                r.body
            );
            assert!(session_cookie(&r).is_none(), "{case} opened a session");
            let page = r.body.as_str().unwrap_or_default();
            let reason = page
                .split("<p>")
                .nth(1)
                .and_then(|p| p.split("</p>").next())
                .unwrap_or_default();
            eprintln!("refused {case}: {} {reason}", r.status);
        }
    }
    assert!(accepted >= 2);

    // Failures are audited, with no assertion in the record.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let audit = s
        .admin(Method::GET, "/admin/v1/orgs/acme/audit?limit=1000", None)
        .await;
    let failures = audit.body["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "signin.failure")
        .count();
    assert_eq!(failures, cases.iter().filter(|(_, a)| !a).count());
    assert!(
        !audit.body.to_string().contains("PHNhbWxw"),
        "no SAMLResponse in the audit log"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_state_and_browser_binding_are_enforced() {
    let forge = Forge::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let c = with_saml(with_github(test_config(&url, &dir)), &forge.cert(), |_| {});
    let s = broker_with(listener, c).await;
    provision_ann(&s).await;

    // Posted from another browser (no binding cookie): refused, and the login is spent.
    let st = start(&forge, &base).await;
    let resp = forge
        .response("valid", &base, &st.request_id, json!({}))
        .await;
    let stranger = Started {
        cookie: "ab_saml=someone-else".into(),
        relay: st.relay.clone(),
        request_id: st.request_id.clone(),
    };
    let r = post_acs(&base, &stranger, &resp).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body.as_str().unwrap().contains("invalid_state"));
    let r = post_acs(&base, &st, &resp).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "the RelayState is single-use"
    );

    // IdP-initiated (no RelayState): off.
    let r = read(
        reqwest::Client::new()
            .post(format!("{base}/auth/acme/saml/acs"))
            .form(&[("SAMLResponse", resp.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // An oversized body is refused before decoding.
    let st = start(&forge, &base).await;
    let huge = "A".repeat(300 * 1024);
    let r = post_acs(&base, &st, &huge).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert!(r.body.as_str().unwrap().contains("larger than allowed"));
    let huge = "A".repeat(2 * 1024 * 1024);
    let st = start(&forge, &base).await;
    let r = post_acs(&base, &st, &huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_replayed_on_a_second_broker_process_is_refused() {
    let redis = crate::redis_fixture::redis_url();
    crate::redis_fixture::standalone_vault(std::time::Duration::from_secs(1)).await;
    let forge = Forge::new().await;
    let la = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_a = format!("http://{}", la.local_addr().unwrap());
    let base_b = format!("http://{}", lb.local_addr().unwrap());
    let (url, dir) = fresh_database(Backend::Postgres).await;
    // Two replicas behind one public URL, sharing PostgreSQL, Redis and the vault key.
    let mut c = with_saml(
        with_redis(with_github(test_config(&url, &dir)), &redis),
        &forge.cert(),
        |_| {},
    );
    c.server.public_url = Some(base_a.clone());
    let a = broker_with(la, c.clone()).await;
    let b = broker_with(lb, c).await;
    provision_ann(&a).await;

    let st = start(&forge, &base_a).await;
    let fixed = format!("_assertion-{}", rand::random::<u64>());
    let resp = forge
        .response(
            "valid",
            &base_a,
            &st.request_id,
            json!({"assertion_id": fixed}),
        )
        .await;
    let r = post_acs(&base_a, &st, &resp).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);

    // The same assertion (same IdP, same ID), presented through the other replica for a new
    // login: the shared replay cache refuses it.
    let st = start(&forge, &base_b).await;
    let resp = forge
        .response(
            "valid",
            &base_a,
            &st.request_id,
            json!({"assertion_id": fixed}),
        )
        .await;
    let r = post_acs(&base_b, &st, &resp).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{:?}", r.body);
    assert!(r.body.as_str().unwrap().contains("assertion_replayed"));
    assert!(session_cookie(&r).is_none());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_fails_closed_when_the_shared_store_is_down() {
    let port = crate::redis_fixture::free_port();
    let mut redis = crate::redis_fixture::RedisServer::start(port).expect("redis starts");
    let forge = Forge::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let c = with_saml(
        with_redis(
            with_github(test_config(&url, &dir)),
            &format!("redis://127.0.0.1:{port}"),
        ),
        &forge.cert(),
        |_| {},
    );
    let s = broker_with(listener, c).await;
    provision_ann(&s).await;
    let st = start(&forge, &base).await;
    let resp = forge
        .response("valid", &base, &st.request_id, json!({}))
        .await;
    // The login state and the replay cache live in Redis: without it, no session.
    redis.kill();
    let r = post_acs(&base, &st, &resp).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    assert!(session_cookie(&r).is_none());
    // And no login can start.
    let r = read(
        browser()
            .get(format!("{base}/auth/acme/login"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_group_overage_in_saml_is_reported_not_ignored() {
    let forge = Forge::new().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let c = with_saml(with_github(test_config(&url, &dir)), &forge.cert(), |c| {
        c.groups_source = GroupsSource::Assertion;
    });
    let s = broker_with(listener, c).await;
    provision_ann(&s).await;
    let st = start(&forge, &base).await;
    let link = "http://schemas.microsoft.com/claims/groups.link";
    let resp = forge
        .response(
            "valid",
            &base,
            &st.request_id,
            json!({"attributes": {"email": ["ann@acme.example"], link: ["https://graph.microsoft.com/v1.0/users/x/getMemberObjects"]}}),
        )
        .await;
    let r = post_acs(&base, &st, &resp).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.body.as_str().unwrap().contains("groups_overage"));
    assert!(session_cookie(&r).is_none());
    s.stop().await;
}
