//! No secret ever reaches the logs: the real binary, at debug level with JSON logs, driven
//! through a whole life cycle (provisioning with a password, vends, introspection, the admin
//! API, deactivation, a new gateway key, failed authentication), then its stderr is searched
//! for every credential, token, password and key it saw. The embedded database is searched
//! for the plain values too: only hashes and sealed records may be at rest.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth_broker::crypto::secret::hash_str;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Resp, read};

const BIN: &str = env!("CARGO_BIN_EXE_auth-broker");
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// Per-run random secrets, so a match in the logs can only come from this run.
struct Secrets {
    scim: String,
    gateway: String,
    admin: String,
    password: String,
    second_password: String,
}

impl Secrets {
    fn new() -> Self {
        let r = || uuid::Uuid::new_v4().simple().to_string();
        Self {
            scim: format!("ab_scim_{}", r()),
            gateway: format!("ab_gw_{}", r()),
            admin: format!("ab_admin_{}", r()),
            password: format!("Pw-{}!", r()),
            second_password: format!("Pw2-{}!", r()),
        }
    }
}

fn config_toml(data_dir: &Path, s: &Secrets) -> String {
    format!(
        r#"[storage]
data_dir = "{data_dir}"

[log]
format = "json"
level = "debug"

[orgs.acme]
display_name = "Acme"
scim_token_hashes = ["{scim}"]
gateway_key_hashes = ["{gateway}"]
admin_key_hashes = ["{admin}"]

[orgs.acme.connectors.github]
display_name = "GitHub"
strategy = "broker_jwt"
audience = "https://mcp.github.example"
scopes = ["repo:read", "repo:write"]

[orgs.acme.connectors.github.tools]
create_issue = "write"
delete_repo = "delete"

[[orgs.acme.grants]]
id = "eng-github"
group = "Engineering"
connector = "github"
scopes = ["repo:read", "repo:write"]
actions = {{ read = "allow", write = "needs_approval", delete = "blocked" }}
"#,
        data_dir = data_dir.display(),
        scim = hash_str(&s.scim),
        gateway = hash_str(&s.gateway),
        admin = hash_str(&s.admin),
    )
}

/// The binary, serving, with its stderr collected line by line.
struct Broker {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    base: String,
}

impl Broker {
    fn start(dir: &Path, config: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .current_dir(dir)
            .env_remove("AUTH_BROKER_CONFIG")
            .env_remove("AUTH_BROKER__LOG__LEVEL")
            .env_remove("AUTH_BROKER__LOG__FORMAT")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary starts");
        let err = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut broker = Self {
            child,
            stderr,
            reader: Some(reader),
            base: String::new(),
        };
        broker.base = format!("http://{}", broker.wait_for_listen());
        broker
    }

    /// The bound address, from the start-up log line.
    fn wait_for_listen(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.stderr.lock().unwrap().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "auth-broker serving")
                    .then(|| v["fields"]["listen"].as_str().map(str::to_string))?
            });
            if let Some(addr) = found {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "broker exited with {status} before serving:\n{}",
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no `auth-broker serving` line within 30 s:\n{}",
                self.stderr.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, a graceful exit, and every line it wrote.
    fn stop(mut self) -> Vec<String> {
        crate::support::send_signal(self.child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "graceful shutdown exits 0, got {status}");
                break;
            }
            assert!(Instant::now() < deadline, "did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        std::mem::take(&mut *self.stderr.lock().unwrap())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Only reached with the process still running when the test failed part-way.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP client that remembers every `Authorization` value it sent.
struct Client {
    http: reqwest::Client,
    base: String,
    sent_authorization: Vec<String>,
}

impl Client {
    async fn call(&mut self, method: Method, path: &str, key: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {key}");
        self.sent_authorization.push(auth.clone());
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", auth);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/scim+json")
                .body(b.to_string());
        }
        read(req.send().await.expect("request sent")).await
    }

    async fn form(&mut self, path: &str, key: &str, token: &str) -> Resp {
        let auth = format!("Bearer {key}");
        self.sent_authorization.push(auth.clone());
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", auth)
            .form(&[("token", token)])
            .send()
            .await
            .expect("request sent");
        read(resp).await
    }
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("ab-nosecrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn vend_body(user: &str) -> Value {
    json!({"org": "acme", "user": {"id": user}, "connector": "github"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let dir = temp_dir();
    let data = dir.join("data");
    let s = Secrets::new();
    let config = dir.join("auth-broker.toml");
    std::fs::write(&config, config_toml(&data, &s)).unwrap();
    let broker = Broker::start(&dir, &config);
    let mut c = Client {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        base: broker.base.clone(),
        sent_authorization: Vec::new(),
    };
    let mut tokens = Vec::new();

    // Provisioning, with a password the IdP pushes (accepted, never kept).
    let r = c
        .call(
            Method::POST,
            "/scim/v2/acme/Users",
            &s.scim,
            Some(
                json!({"schemas": [USER], "userName": "ann@acme.example", "active": true,
                        "password": s.password,
                        "emails": [{"value": "ann@acme.example", "primary": true}]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(
        r.body.get("password").is_none(),
        "password is never returned"
    );
    let ann = r.body["id"].as_str().unwrap().to_string();
    let r = c
        .call(
            Method::PATCH,
            &format!("/scim/v2/acme/Users/{ann}"),
            &s.scim,
            Some(json!({"schemas": [PATCH], "Operations": [
                {"op": "replace", "path": "password", "value": s.second_password}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = c
        .call(
            Method::GET,
            &format!(
                "/scim/v2/acme/Users?filter=password+eq+%22{}%22",
                s.password
            ),
            &s.scim,
            None,
        )
        .await;
    assert!(
        r.status == StatusCode::OK || r.status == StatusCode::BAD_REQUEST,
        "{:?}",
        r
    );
    let r = c
        .call(
            Method::POST,
            "/scim/v2/acme/Groups",
            &s.scim,
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                        "displayName": "Engineering", "members": [{"value": ann}]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let group = r.body["id"].as_str().unwrap().to_string();

    // Vend, vend again (warm), introspect, the admin view.
    let r = c
        .call(
            Method::POST,
            "/internal/v1/token",
            &s.gateway,
            Some(vend_body(&ann)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let vend_request_id = r.header("x-request-id").expect("x-request-id");
    let token = r.body["access_token"].as_str().unwrap().to_string();
    tokens.push(token.clone());
    let r = c
        .call(
            Method::POST,
            "/internal/v1/token",
            &s.gateway,
            Some(vend_body(&ann)),
        )
        .await;
    assert_eq!(r.body["access_token"], token.as_str());
    let r = c
        .call(
            Method::POST,
            "/internal/v1/token",
            &s.gateway,
            Some(
                json!({"org": "acme", "user": {"user_name": "ann@acme.example"},
                        "connector": "github", "scopes": ["repo:read"]}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    tokens.push(r.body["access_token"].as_str().unwrap().to_string());
    let r = c.form("/oauth/introspect", &s.gateway, &token).await;
    assert_eq!(r.body["active"], true, "{:?}", r.body);
    let r = c
        .call(
            Method::GET,
            &format!("/admin/v1/orgs/acme/users/{ann}"),
            &s.admin,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // Deactivation, then the refusal.
    let r = c
        .call(
            Method::PATCH,
            &format!("/scim/v2/acme/Users/{ann}"),
            &s.scim,
            Some(json!({"schemas": [PATCH], "Operations": [
                {"op": "replace", "value": {"active": false}}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = c
        .call(
            Method::POST,
            "/internal/v1/token",
            &s.gateway,
            Some(vend_body(&ann)),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    assert_eq!(r.body["code"], "user_inactive");
    let r = c.form("/oauth/introspect", &s.gateway, &token).await;
    assert_eq!(r.body["active"], false, "{:?}", r.body);

    // A new gateway key from the admin API, used at once for another engineer.
    let r = c
        .call(
            Method::POST,
            "/admin/v1/orgs/acme/gateways",
            &s.admin,
            Some(json!({"name": "ci-gateway"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let new_gateway = r.body["key"].as_str().unwrap().to_string();
    let r = c
        .call(
            Method::POST,
            "/scim/v2/acme/Users",
            &s.scim,
            Some(json!({"schemas": [USER], "userName": "cy@acme.example", "active": true})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let cy = r.body["id"].as_str().unwrap().to_string();
    let r = c
        .call(
            Method::PATCH,
            &format!("/scim/v2/acme/Groups/{group}"),
            &s.scim,
            Some(json!({"schemas": [PATCH], "Operations": [
                {"op": "add", "path": "members", "value": [{"value": cy}]}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = c
        .call(
            Method::POST,
            "/internal/v1/token",
            &new_gateway,
            Some(vend_body(&cy)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let cy_token = r.body["access_token"].as_str().unwrap().to_string();
    tokens.push(cy_token.clone());
    let r = c.form("/oauth/introspect", &new_gateway, &cy_token).await;
    assert_eq!(r.body["active"], true, "{:?}", r.body);
    let r = c.form("/oauth/revoke", &new_gateway, &cy_token).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);

    // Failed authentication of every kind, including near-misses of real keys.
    let wrong: Vec<String> = vec![
        format!("{}x", s.scim),
        format!("{}x", s.gateway),
        format!("{}x", s.admin),
        format!("ab_gw_{}", uuid::Uuid::new_v4().simple()),
    ];
    let r = c
        .call(Method::GET, "/scim/v2/acme/Users", &wrong[0], None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = c
        .call(
            Method::POST,
            "/internal/v1/token",
            &wrong[1],
            Some(vend_body(&cy)),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = c
        .call(
            Method::GET,
            "/admin/v1/orgs/acme/connectors",
            &wrong[2],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = c.form("/oauth/introspect", &wrong[3], &cy_token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = c
        .call(Method::GET, "/admin/v1/orgs/acme/audit", &s.gateway, None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "a gateway key is no admin key"
    );
    let r = c
        .call(Method::GET, "/scim/v2/acme/Users", &s.admin, None)
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "an admin key is no SCIM token"
    );
    let basic = {
        use base64::Engine;
        let pair = format!("ann@acme.example:{}", s.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let resp = c
        .http
        .get(format!("{}/scim/v2/acme/Users", c.base))
        .header("authorization", &basic)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    c.sent_authorization.push(basic);

    let vault_key = std::fs::read_to_string(data.join("vault.key"))
        .expect("the embedded vault key is kept in data/vault.key");
    let lines = broker.stop();
    let logs = lines.join("\n");

    // The logs are JSON lines, at debug level, with the request span and its id.
    assert!(lines.len() > 20, "logs were captured: {logs}");
    let parsed: Vec<Value> = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    assert!(
        parsed.iter().any(|v| v["level"] == "DEBUG"),
        "debug lines were emitted, so they were searched too"
    );
    assert!(
        parsed.iter().any(|v| v["span"]["name"] == "request"
            && v["span"]["request_id"] == vend_request_id.as_str()
            && v["span"]["path"] == "/internal/v1/token"),
        "the vend's log lines carry its request id: {logs}"
    );

    let mut secrets: Vec<(&str, String)> = vec![
        ("SCIM token", s.scim.clone()),
        ("gateway key", s.gateway.clone()),
        ("admin key", s.admin.clone()),
        ("created gateway key", new_gateway.clone()),
        ("password", s.password.clone()),
        ("second password", s.second_password.clone()),
        ("vault key", vault_key.trim().to_string()),
    ];
    for t in &tokens {
        secrets.push(("access token", t.clone()));
        secrets.push((
            "access token signature",
            t.rsplit('.').next().unwrap().to_string(),
        ));
    }
    for w in &wrong {
        secrets.push(("presented wrong key", w.clone()));
    }
    for a in &c.sent_authorization {
        secrets.push(("Authorization header value", a.clone()));
    }
    for (what, value) in &secrets {
        assert!(value.len() >= 16, "{what} is long enough to search for");
        if let Some(line) = lines.iter().find(|l| l.contains(value.as_str())) {
            panic!("the {what} appears in the logs: {line}");
        }
    }
    assert!(
        !logs.to_lowercase().contains("bearer ab_"),
        "no Authorization header is logged"
    );

    // At rest, only hashes and sealed records: no plain credential, password or token.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n == "vault.key") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for (what, value) in &secrets {
            if *what == "vault key" {
                continue;
            }
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "the {what} is stored in clear in {}",
                path.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sign-in through OIDC and SAML on the real binary at debug level: no ID token, code,
/// state, client secret, assertion, RelayState or cookie value reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_material_never_reaches_the_logs() {
    use crate::idp::{Attack, HostileIdp, browser, session_cookie, sign_in};
    let dir = temp_dir();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let s = Secrets::new();
    let idp = HostileIdp::start().await;
    let forge = crate::saml::Forge::new().await;
    let client_secret = format!("oidc-secret-{}", uuid::Uuid::new_v4().simple());
    std::fs::write(dir.join("oidc-secret"), &client_secret).unwrap();
    let mut toml = config_toml(&data, &s);
    toml.push_str(&format!(
        r#"
[orgs.acme.sign_in.oidc]
issuer = "{issuer}"
client_id = "{client}"
client_secret_file = "{secret}"
algorithms = ["ES256"]

[orgs.globex]
scim_token_hashes = ["{scim}"]

[orgs.globex.sign_in.saml]
idp_entity_id = "https://idp.example/saml/metadata"
idp_sso_url = "https://idp.example/saml/sso"
idp_certificates = ["""{cert}"""]
"#,
        issuer = idp.issuer,
        client = crate::idp::CLIENT_ID,
        secret = dir.join("oidc-secret").display(),
        scim = hash_str(&s.scim),
        cert = forge.cert(),
    ));
    let config = dir.join("auth-broker.toml");
    std::fs::write(&config, toml).unwrap();
    let broker = Broker::start(&dir, &config);
    let base = broker.base.clone();
    let http = reqwest::Client::new();
    for (org, external) in [("acme", "u1"), ("globex", "ann@acme.example")] {
        let r = http
            .post(format!("{base}/scim/v2/{org}/Users"))
            .bearer_auth(&s.scim)
            .json(&json!({"schemas": [USER], "userName": "ann@acme.example",
                          "externalId": external, "active": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    let mut secrets: Vec<(&str, String)> = vec![("OIDC client secret", client_secret)];
    // OIDC: one good login, one forged token.
    let b = browser();
    let (r, callback) = sign_in(&b, &format!("{base}/auth/acme/login")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    let cookie = session_cookie(&r).unwrap();
    secrets.push(("session cookie", cookie_value(&cookie)));
    let q: std::collections::HashMap<String, String> = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    secrets.push(("OIDC state", q["state"].clone()));
    let me = b
        .get(format!("{base}/auth/acme/me"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    idp.set_attack(Attack::BadSignature);
    let (r, _) = sign_in(&browser(), &format!("{base}/auth/acme/login")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    for issued in idp.issued() {
        secrets.push(("OIDC code or ID token", issued.clone()));
        if let Some(sig) = issued.rsplit('.').next().filter(|x| x.len() >= 16) {
            secrets.push(("ID token signature", sig.to_string()));
        }
    }

    // SAML: one good login, one wrapped forgery.
    let saml_base = base.clone();
    let st = start_globex(&forge, &saml_base).await;
    let resp = forge_globex(&forge, "valid", &saml_base, &st.request_id).await;
    let r = post_globex(&saml_base, &st, &resp).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{:?}", r.body);
    secrets.push((
        "SAML session cookie",
        cookie_value(&session_cookie(&r).unwrap()),
    ));
    secrets.push(("SAMLResponse", resp.clone()));
    secrets.push(("RelayState", st.relay.clone()));
    secrets.push(("SAML binding cookie", cookie_value(&st.cookie)));
    let decoded = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &resp).unwrap(),
    )
    .unwrap();
    let sig = decoded
        .split("SignatureValue>")
        .nth(1)
        .unwrap()
        .trim_end_matches("</ds:")
        .chars()
        .filter(|c| !c.is_whitespace())
        .take(40)
        .collect::<String>();
    secrets.push(("assertion signature", sig));
    let st = start_globex(&forge, &saml_base).await;
    let forged = forge_globex(&forge, "xsw3", &saml_base, &st.request_id).await;
    let r = post_globex(&saml_base, &st, &forged).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    secrets.push(("forged SAMLResponse", forged));

    let lines = broker.stop();
    assert!(
        lines.iter().any(|l| l.contains("sign-in refused")),
        "the refusals were logged, so the search covers them"
    );
    for (what, value) in &secrets {
        assert!(value.len() >= 16, "{what} is long enough to search for");
        if let Some(line) = lines.iter().find(|l| l.contains(value.as_str())) {
            panic!("the {what} appears in the logs: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap()
}

async fn start_globex(forge: &crate::saml::Forge, base: &str) -> crate::saml::Started {
    crate::saml::start_org(forge, base, "globex").await
}

async fn forge_globex(forge: &crate::saml::Forge, case: &str, base: &str, req: &str) -> String {
    forge
        .response_for("globex", case, base, req, json!({}))
        .await
}

async fn post_globex(base: &str, st: &crate::saml::Started, resp: &str) -> Resp {
    crate::saml::post_acs_org(base, "globex", st, resp).await
}
