//! Tests of the upstream client against scripted authorization servers served in-process on
//! 127.0.0.1:0: what each request carried (method, path, headers, form or JSON body) and how
//! each kind of answer is read. Each test starts its own servers, so breakers and budgets
//! (keyed by origin) never leak between tests. Durations are short and explicit so the whole
//! set runs in well under a few seconds.

mod discovery;
mod faults;
mod grants;
mod revocation;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::*;
use crate::domain::upstream::{ClientAuth, Provider, Revocation, Upstream};

/// One scripted answer.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    status: u16,
    body: String,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, v: Value) -> Self {
        Self {
            status,
            body: v.to_string(),
            headers: vec![("content-type", "application/json".into())],
            delay: Duration::ZERO,
        }
    }

    /// An answer with an empty body.
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            body: String::new(),
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// A typical successful token answer.
    pub fn token() -> Self {
        Self::json(
            200,
            json!({"access_token":"AT-1","token_type":"Bearer","expires_in":3600,
                   "refresh_token":"RT-1","scope":"read write"}),
        )
    }

    /// Answers after `d`.
    pub fn after(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, k: &'static str, v: &str) -> Self {
        self.headers.push((k, v.into()));
        self
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: String,
}

impl Seen {
    /// The form body as a map (each field at most once, which the tests rely on).
    pub fn form(&self) -> BTreeMap<String, String> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&self.body).unwrap();
        let map: BTreeMap<_, _> = pairs.iter().cloned().collect();
        assert_eq!(
            map.len(),
            pairs.len(),
            "a repeated form field: {}",
            self.body
        );
        map
    }

    /// A header's value.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).map(|v| v.to_str().unwrap())
    }
}

/// Per path, in order: each reply answers once, except the last, which repeats until another
/// is scripted (`bool`: it has answered).
type Script = HashMap<String, VecDeque<(Reply, bool)>>;

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Script>>,
}

/// A scripted authorization server.
pub(super) struct TestAs {
    pub base: String,
    shared: Shared,
}

async fn answer(State(s): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts.uri.path().to_string();
    s.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let reply = {
        let mut script = s.script.lock().unwrap();
        match script.get_mut(&path) {
            Some(q) if q.len() > 1 => q.pop_front().map(|(r, _)| r),
            Some(q) => q.front_mut().map(|(r, used)| {
                *used = true;
                r.clone()
            }),
            None => None,
        }
    };
    let Some(reply) = reply else {
        return (StatusCode::NOT_FOUND, "no such path").into_response();
    };
    tokio::time::sleep(reply.delay).await;
    let mut resp = Response::builder().status(reply.status);
    for (k, v) in &reply.headers {
        resp = resp.header(*k, v);
    }
    resp.body(Body::from(reply.body)).unwrap()
}

impl TestAs {
    /// Serves on a fresh port until the test's runtime ends.
    pub async fn start() -> Self {
        let shared = Shared::default();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, shared }
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Scripts the next answer for `path`: it answers once if another is scripted after it,
    /// else until then (a repeating answer that has answered makes way for the new one).
    pub fn on(&self, path: &str, reply: Reply) -> &Self {
        let mut script = self.shared.script.lock().unwrap();
        let q = script.entry(path.to_string()).or_default();
        if q.back().is_some_and(|(_, used)| *used) {
            q.pop_back();
        }
        q.push_back((reply, false));
        self
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// How many requests reached `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("a request reached the server")
    }
}

/// A client with short, explicit limits.
pub(super) fn client_with(
    failures_to_open: u32,
    open_for_ms: u64,
    budget: BudgetOptions,
) -> UpstreamClient {
    UpstreamClient::new(ClientOptions {
        default_timeout: Duration::from_secs(2),
        breaker: BreakerOptions {
            failures_to_open,
            open_for: Duration::from_millis(open_for_ms),
        },
        budget,
    })
}

/// A client whose limits stay out of the way.
pub(super) fn client() -> UpstreamClient {
    client_with(5, 10_000, BudgetOptions::default())
}

/// A generic upstream at `a` with explicit endpoints and `client_secret_basic`.
pub(super) fn upstream(a: &TestAs) -> Upstream {
    Upstream {
        provider: Provider::Generic,
        token_endpoint: Some(a.url("/token")),
        authorization_endpoint: Some(a.url("/authorize")),
        revocation_endpoint: Some(a.url("/revoke")),
        client_id: "broker".into(),
        client_auth: ClientAuth::ClientSecretBasic,
        ..Upstream::default()
    }
}

/// Endpoints pointing at `a`, without discovery.
pub(super) fn endpoints(a: &TestAs, revocation: Revocation) -> Endpoints {
    Endpoints {
        issuer: Some(a.base.clone()),
        authorization_endpoint: Some(a.url("/authorize").parse().unwrap()),
        token_endpoint: a.url("/token").parse().unwrap(),
        revocation_endpoint: Some(a.url("/revoke").parse().unwrap()),
        introspection_endpoint: None,
        revocation,
        sends_iss: false,
    }
}

/// The test client secret.
pub(super) fn secret() -> SecretString {
    SecretString::from("s3cret")
}

/// Client authentication with the test secret.
pub(super) fn with_secret(secret: &SecretString) -> ClientAuthn<'_> {
    ClientAuthn {
        client_id: "broker",
        secret: Some(secret),
        assertion: None,
    }
}

/// Runs `grant` for `u` at `a`'s endpoints with the test secret.
pub(super) async fn token_at(
    c: &UpstreamClient,
    a: &TestAs,
    u: &Upstream,
    grant: TokenGrant<'_>,
) -> Result<TokenSet, UpstreamError> {
    let s = secret();
    let ep = endpoints(a, Revocation::Rfc7009);
    c.token(u, &ep, &with_secret(&s), grant).await
}

/// A refresh grant, the cheapest request to script.
pub(super) const REFRESH: TokenGrant<'static> = TokenGrant::RefreshToken {
    refresh_token: "RT-0",
    scopes: None,
};
