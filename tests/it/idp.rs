//! Identity providers for the sign-in tests: the real `oidc-provider` (Node, from
//! tests/peers/oidc) and a hostile provider that signs whatever a test asks for.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth_broker::config::{Config, GroupsSource, OidcConfig, SignInConfig};
use axum::extract::{Form, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use p256::ecdsa::signature::Signer;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;

use crate::support::{Resp, read};

pub const CLIENT_ID: &str = "auth-broker-test";

/// Adds OIDC sign-in for `acme` with `issuer`; the client secret comes from a file.
pub fn with_oidc(
    mut c: Config,
    issuer: &str,
    secret: &str,
    f: impl FnOnce(&mut SignInConfig),
) -> Config {
    let file = c.storage.data_dir.join("oidc-client-secret");
    std::fs::create_dir_all(&c.storage.data_dir).unwrap();
    std::fs::write(&file, secret).unwrap();
    let mut sign_in = SignInConfig {
        jit: false,
        groups_source: GroupsSource::Scim,
        admin_group: Some("Broker Admins".into()),
        session_ttl_secs: 3600,
        oidc: Some(OidcConfig {
            issuer: issuer.to_string(),
            client_id: CLIENT_ID.into(),
            client_secret_env: None,
            client_secret_file: Some(file),
            scopes: vec![
                "openid".into(),
                "email".into(),
                "profile".into(),
                "groups".into(),
            ],
            groups_claim: "groups".into(),
            subject_claim: "sub".into(),
            algorithms: vec!["ES256".into(), "RS256".into()],
            max_iat_skew_secs: 300,
            jwks_min_refresh_secs: 30,
        }),
        saml: None,
    };
    f(&mut sign_in);
    c.orgs.get_mut("acme").unwrap().sign_in = Some(sign_in);
    let problems = c.validate();
    assert!(problems.is_empty(), "{problems:?}");
    c
}

/// A browser: cookie jar, no automatic redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Follows a login from `start` through the provider until the broker's callback has
/// answered; returns that answer and the callback URL it came from.
pub async fn sign_in(browser: &reqwest::Client, start: &str) -> (Resp, String) {
    let mut url = reqwest::Url::parse(start).unwrap();
    for _ in 0..12 {
        let resp = browser.get(url.clone()).send().await.unwrap();
        let is_callback = url.path().ends_with("/oidc/callback");
        if is_callback || !resp.status().is_redirection() {
            let at = url.to_string();
            return (read(resp).await, at);
        }
        let loc = resp.headers()["location"].to_str().unwrap().to_string();
        url = url.join(&loc).unwrap();
    }
    panic!("too many redirects from {start}");
}

/// The session cookie the broker set, if any.
pub fn session_cookie(r: &Resp) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ab_session=") && !v.starts_with("ab_session=;"))
        .map(str::to_string)
}

// ---------------------------------------------------------------------------------------
// The real provider

/// `oidc-provider` on loopback.
pub struct RealIdp {
    pub issuer: String,
    child: tokio::process::Child,
}

impl RealIdp {
    /// Starts it with one confidential client redirecting to `redirect_uri`.
    pub async fn start(redirect_uri: &str, secret: &str, accounts: Value) -> Self {
        let clients = json!([{
            "client_id": CLIENT_ID, "client_secret": secret, "redirect_uris": [redirect_uri],
        }]);
        Self::start_with(0, clients, accounts, json!({})).await
    }

    /// Starts it on `port` (0: any) with `clients` and `accounts`, issuing ID-JAGs by token
    /// exchange for the `audiences` (`{"<AS issuer>": {"client_id": …}}`).
    pub async fn start_with(port: u16, clients: Value, accounts: Value, audiences: Value) -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the OIDC test peer is not installed: run `npm ci --prefix tests/peers/oidc`"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("provider.mjs"))
            .env("OP_PORT", port.to_string())
            .env("OP_CLIENTS", clients.to_string())
            .env("OP_ACCOUNTS", accounts.to_string())
            .env("OP_ID_JAG_AUDIENCES", audiences.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the OIDC test peer");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the OIDC peer becomes ready")
            .unwrap()
            .expect("the OIDC peer prints its ready line");
        let ready: Value = serde_json::from_str(&line).unwrap();
        Self {
            issuer: ready["issuer"].as_str().unwrap().to_string(),
            child,
        }
    }

    /// Makes the provider sign with a new key; returns its kid.
    pub async fn rotate_keys(&self) -> String {
        let r: Value = reqwest::Client::new()
            .post(format!("{}/_test/rotate-keys", self.issuer))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["kid"].as_str().unwrap().to_string()
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

// ---------------------------------------------------------------------------------------
// The hostile provider

/// What the hostile provider does to the next ID token.
#[derive(Debug, Clone, PartialEq)]
pub enum Attack {
    /// A valid token (the control case).
    Honest,
    /// `alg: none`, no signature.
    AlgNone,
    /// A valid header and claims, with a signature from another key.
    BadSignature,
    /// HS256, keyed with the provider's public key (algorithm confusion).
    Hs256WithPublicKey,
    /// `aud` is another client.
    WrongAudience,
    /// `iss` is another issuer.
    WrongIssuer,
    /// `exp` in the past.
    Expired,
    /// `iat` an hour in the future.
    IatInFuture,
    /// `nonce` not the one the broker sent.
    NonceMismatch,
    /// Signed with a key id not in the key set.
    UnknownKid,
    /// The authorization response carries another issuer's `iss` (mix-up).
    MixUpIss,
    /// `azp` is another client.
    WrongAzp,
}

struct Pending {
    nonce: String,
}

struct IdpState {
    issuer: String,
    key: p256::ecdsa::SigningKey,
    other: p256::ecdsa::SigningKey,
    attack: Mutex<Attack>,
    subject: Mutex<String>,
    groups: Mutex<Vec<String>>,
    extra: Mutex<Value>,
    pending: Mutex<std::collections::HashMap<String, Pending>>,
    jwks_fetches: AtomicUsize,
    token_calls: AtomicUsize,
    issued: Mutex<Vec<String>>,
}

/// A provider under the test's control.
pub struct HostileIdp {
    pub issuer: String,
    state: Arc<IdpState>,
    task: tokio::task::JoinHandle<()>,
}

impl HostileIdp {
    /// Starts it on loopback.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let state = Arc::new(IdpState {
            issuer: issuer.clone(),
            key: p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
            other: p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
            attack: Mutex::new(Attack::Honest),
            subject: Mutex::new("u1".into()),
            groups: Mutex::new(vec!["Engineering".into()]),
            extra: Mutex::new(json!({})),
            pending: Mutex::default(),
            jwks_fetches: AtomicUsize::new(0),
            token_calls: AtomicUsize::new(0),
            issued: Mutex::default(),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            issuer,
            state,
            task,
        }
    }

    /// Sets what the next logins get.
    pub fn set_attack(&self, a: Attack) {
        *self.state.attack.lock().unwrap() = a;
    }

    /// Sets the subject and groups of the next logins.
    pub fn set_user(&self, sub: &str, groups: &[&str]) {
        *self.state.subject.lock().unwrap() = sub.into();
        *self.state.groups.lock().unwrap() = groups.iter().map(|g| g.to_string()).collect();
    }

    /// Extra claims merged into the next ID tokens.
    pub fn set_extra(&self, v: Value) {
        *self.state.extra.lock().unwrap() = v;
    }

    /// How many times the key set was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Every ID token and code it handed out (to search logs for).
    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }

    /// How many code exchanges it served.
    pub fn token_calls(&self) -> usize {
        self.state.token_calls.load(Ordering::SeqCst)
    }
}

impl Drop for HostileIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn public_jwk(key: &p256::ecdsa::SigningKey, kid: &str) -> Value {
    let jwk = p256::PublicKey::from(key.verifying_key()).to_jwk();
    let mut v = serde_json::to_value(&jwk).unwrap();
    v["kid"] = json!(kid);
    v["alg"] = json!("ES256");
    v["use"] = json!("sig");
    v
}

async fn discovery(State(s): State<Arc<IdpState>>) -> Json<Value> {
    let i = &s.issuer;
    Json(json!({
        "issuer": i,
        "authorization_endpoint": format!("{i}/authorize"),
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "authorization_response_iss_parameter_supported": true,
    }))
}

async fn jwks(State(s): State<Arc<IdpState>>) -> Json<Value> {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Json(json!({"keys": [public_jwk(&s.key, "k1")]}))
}

async fn authorize(
    State(s): State<Arc<IdpState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let code = b64(&rand::random::<[u8; 16]>());
    s.issued.lock().unwrap().push(code.clone());
    s.pending.lock().unwrap().insert(
        code.clone(),
        Pending {
            nonce: q.get("nonce").cloned().unwrap_or_default(),
        },
    );
    let iss = if *s.attack.lock().unwrap() == Attack::MixUpIss {
        "https://attacker.example".to_string()
    } else {
        s.issuer.clone()
    };
    let mut to = reqwest::Url::parse(&q["redirect_uri"]).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""))
        .append_pair("iss", &iss);
    Redirect::to(to.as_str()).into_response()
}

async fn token(
    State(s): State<Arc<IdpState>>,
    Form(f): Form<std::collections::HashMap<String, String>>,
) -> Response {
    s.token_calls.fetch_add(1, Ordering::SeqCst);
    let Some(p) = f
        .get("code")
        .and_then(|c| s.pending.lock().unwrap().remove(c))
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    if f.get("code_verifier").is_none_or(|v| v.len() < 43) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let attack = s.attack.lock().unwrap().clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut claims = json!({
        "iss": s.issuer, "sub": *s.subject.lock().unwrap(), "aud": super::idp::CLIENT_ID,
        "iat": now, "exp": now + 300, "nonce": p.nonce,
        "email": format!("{}@acme.example", s.subject.lock().unwrap()),
        "name": "Test Person", "groups": *s.groups.lock().unwrap(),
    });
    if let (Some(m), Some(extra)) = (claims.as_object_mut(), s.extra.lock().unwrap().as_object()) {
        for (k, v) in extra {
            m.insert(k.clone(), v.clone());
        }
    }
    let mut kid = "k1".to_string();
    match attack {
        Attack::WrongAudience => claims["aud"] = json!("someone-else"),
        Attack::WrongIssuer => claims["iss"] = json!("https://attacker.example"),
        Attack::Expired => {
            claims["iat"] = json!(now - 120);
            claims["exp"] = json!(now - 60);
        }
        Attack::IatInFuture => {
            claims["iat"] = json!(now + 3600);
            claims["exp"] = json!(now + 7200);
        }
        Attack::NonceMismatch => claims["nonce"] = json!("not-the-nonce"),
        Attack::UnknownKid => kid = format!("unknown-{}", b64(&rand::random::<[u8; 6]>())),
        Attack::WrongAzp => claims["azp"] = json!("someone-else"),
        _ => {}
    }
    let id_token = match attack {
        Attack::AlgNone => {
            let h = b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes());
            format!("{h}.{}.", b64(claims.to_string().as_bytes()))
        }
        Attack::Hs256WithPublicKey => {
            let h = b64(json!({"alg": "HS256", "kid": "k1", "typ": "JWT"})
                .to_string()
                .as_bytes());
            let input = format!("{h}.{}", b64(claims.to_string().as_bytes()));
            let key = public_jwk(&s.key, "k1").to_string();
            format!(
                "{input}.{}",
                b64(&hmac_sha256(key.as_bytes(), input.as_bytes()))
            )
        }
        Attack::BadSignature => es256(&s.other, "k1", &claims),
        _ => es256(&s.key, &kid, &claims),
    };
    s.issued.lock().unwrap().push(id_token.clone());
    Json(json!({
        "access_token": b64(&rand::random::<[u8; 16]>()),
        "token_type": "Bearer", "expires_in": 300, "id_token": id_token,
    }))
    .into_response()
}

fn es256(key: &p256::ecdsa::SigningKey, kid: &str, claims: &Value) -> String {
    let h = b64(json!({"alg": "ES256", "kid": kid, "typ": "JWT"})
        .to_string()
        .as_bytes());
    let input = format!("{h}.{}", b64(claims.to_string().as_bytes()));
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&sig.to_bytes()))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([ipad.as_slice(), msg].concat());
    Sha256::digest([opad.as_slice(), inner.as_slice()].concat()).to_vec()
}
