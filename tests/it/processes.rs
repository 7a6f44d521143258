//! Acceptance points that only real processes show: two `auth-broker serve` processes sharing
//! PostgreSQL and Redis see each other's revocations at once, and `auth-broker keys rotate`
//! re-seals the vault while a process serves under continuous vending.
//!
//! Every broker here is the real binary, started from a generated TOML file (hashed
//! credentials, a key ring in files) on a scratch PostgreSQL database and a logical Redis
//! database of its own, so its pub/sub channel and keys never meet those of the in-process
//! tests sharing the server. Each test uses a fresh org id as well.

mod broker;
mod interleavings;
mod replicas;
mod rotation;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use auth_broker::crypto::secret::hash_str;
use serde_json::{Value, json};

use crate::redis_fixture::redis_url;
use crate::support::{Backend, admin_database_url, fresh_database};
use broker::Broker;

const BIN: &str = env!("CARGO_BIN_EXE_auth-broker");
/// The logical Redis database of these tests (pub/sub channel `ab:events:db7`).
const REDIS_DB: u8 = 7;
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Longest wait for anything asynchronous (start-up, an event, a CLI run).
const WAIT: Duration = Duration::from_secs(30);

/// A scratch deployment: database, key files, credentials and a unique org.
struct Deployment {
    dir: PathBuf,
    org: String,
    database_url: String,
    redis_url: String,
    scim_token: String,
    gateway_key: String,
    admin_key: String,
}

impl Deployment {
    async fn new() -> Self {
        let (database_url, dir) = fresh_database(Backend::Postgres).await;
        let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
        for k in ["k1", "k2"] {
            // The real CLI generates the key material.
            let out = Command::new(BIN)
                .args(["keys", "generate"])
                .output()
                .unwrap();
            assert!(out.status.success(), "keys generate exits 0");
            std::fs::write(dir.join(k), out.stdout).unwrap();
        }
        Self {
            dir,
            org: format!("proc-{id}"),
            database_url,
            redis_url: redis_db_url(REDIS_DB),
            scim_token: format!("ab_scim_processes_{id}_0123456789"),
            gateway_key: format!("ab_gw_processes_{id}_0123456789"),
            admin_key: format!("ab_admin_processes_{id}_0123456789"),
        }
    }

    /// Writes `<name>.toml` with the given vault keys, `active` sealing.
    fn config(&self, name: &str, keys: &[&str], active: &str) -> PathBuf {
        let org = &self.org;
        let mut toml = format!(
            r#"[server]
shutdown_grace_secs = 2

[storage]
data_dir = "{data}"
database_url = "{db}"
redis_url = "{redis}"

[log]
level = "warn"

[broker]
# Replicas behind one load balancer share one issuer.
issuer = "https://broker.{org}.test"

[vault]
active_key = "{active}"

[orgs.{org}]
scim_token_hashes = ["{scim}"]
gateway_key_hashes = ["{gw}"]
admin_key_hashes = ["{admin}"]

[orgs.{org}.connectors.github]
strategy = "broker_jwt"
audience = "https://mcp.github.example"
scopes = ["repo:read", "repo:write"]

# 61 s tokens with the default 60 s refresh margin: re-minted (a vault write) on any vend
# more than a second after the last.
[orgs.{org}.connectors.jira]
strategy = "broker_jwt"
audience = "https://mcp.jira.example"
scopes = ["issue:read"]
token_ttl_secs = 61

[[orgs.{org}.grants]]
group = "Engineering"
connector = "github"
scopes = ["repo:read", "repo:write"]
actions = {{ read = "allow", write = "needs_approval", delete = "blocked" }}

[[orgs.{org}.grants]]
group = "Engineering"
connector = "jira"
scopes = ["issue:read"]
actions = {{ read = "allow", write = "allow", delete = "blocked" }}
"#,
            data = self.dir.join("data").display(),
            db = self.database_url,
            redis = self.redis_url,
            scim = hash_str(&self.scim_token),
            gw = hash_str(&self.gateway_key),
            admin = hash_str(&self.admin_key),
        );
        for k in keys {
            toml.push_str(&format!(
                "\n[vault.keys.{k}]\nfile = \"{}\"\n",
                self.dir.join(k).display()
            ));
        }
        let path = self.dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        let check = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .env_clear()
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "generated config is valid: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        path
    }

    /// Removes the scratch database, the org's Redis keys and the directory.
    async fn remove(self) {
        let mut c = redis_conn(&self.redis_url).await;
        for key in vault_keys(&mut c, &self.org).await {
            let _: i64 = redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
        }
        if let Some((_, db)) = self.database_url.rsplit_once('/') {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin_database_url())
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.ok();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The suite's Redis with the logical database `db` (replacing any in the URL).
fn redis_db_url(db: u8) -> String {
    let url = redis_url();
    let rest = url
        .strip_prefix("redis://")
        .unwrap_or_else(|| panic!("AUTH_BROKER_TEST_REDIS_URL must be redis://…, got {url}"));
    let host = rest.split('/').next().unwrap_or(rest);
    format!("redis://{host}/{db}")
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis is required by the integration suite ({url}): {e}"))
}

/// The org's vault hashes (`ab:{<org>/<user>}`).
async fn vault_keys(c: &mut redis::aio::MultiplexedConnection, org: &str) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("ab:{{{org}/*"))
        .query_async(c)
        .await
        .unwrap();
    keys.sort();
    keys
}

/// Every sealed token of the org: (hash key, field, sealed bytes).
async fn sealed_tokens(url: &str, org: &str) -> Vec<(String, String, Vec<u8>)> {
    let mut c = redis_conn(url).await;
    let mut out = Vec::new();
    for key in vault_keys(&mut c, org).await {
        let all: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(&mut c)
            .await
            .unwrap();
        for (field, value) in all {
            if field.starts_with("t:") {
                out.push((key.clone(), field, value));
            }
        }
    }
    out
}

/// The key id a sealed record names (`0x01 | id length | id | nonce | ciphertext`).
fn key_id(sealed: &[u8]) -> String {
    assert_eq!(sealed.first(), Some(&1), "sealed record format version 1");
    let len = sealed[1] as usize;
    String::from_utf8(sealed[2..2 + len].to_vec()).unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Status and JSON body of a request.
async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    try_call(req).await.expect("request answered")
}

/// Status and JSON body, or the transport error (a dropped connection).
async fn try_call(req: reqwest::RequestBuilder) -> Result<(u16, Value), reqwest::Error> {
    let r = req.send().await?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// What a test does against one broker process, with the deployment's credentials.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    org: String,
    scim_token: String,
    gateway_key: String,
    admin_key: String,
    /// Vends whose connection was dropped without an answer (then retried).
    dropped: Arc<AtomicU64>,
    /// Vends answered 503 `unavailable` (then retried).
    shed: Arc<AtomicU64>,
}

impl Api {
    fn new(d: &Deployment, b: &Broker) -> Self {
        Self {
            http: client(),
            base: b.base.clone(),
            org: d.org.clone(),
            scim_token: d.scim_token.clone(),
            gateway_key: d.gateway_key.clone(),
            admin_key: d.admin_key.clone(),
            dropped: Arc::default(),
            shed: Arc::default(),
        }
    }

    async fn scim(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/scim/v2/{}{path}", self.base, self.org))
            .bearer_auth(&self.scim_token)
            .header("content-type", "application/scim+json");
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        call(req).await
    }

    /// Creates a user over SCIM and adds it to Engineering (created on first use).
    async fn engineer(&self, user_name: &str) -> String {
        use reqwest::Method;
        let (s, user) = self
            .scim(
                Method::POST,
                "/Users",
                Some(
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name, "active": true}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{user}");
        let id = user["id"].as_str().unwrap().to_string();
        let (s, found) = self
            .scim(
                Method::GET,
                "/Groups?filter=displayName+eq+%22Engineering%22",
                None,
            )
            .await;
        assert_eq!(s, 200, "{found}");
        let (s, body) = match found["Resources"][0]["id"].as_str() {
            Some(gid) => {
                self.scim(
                    Method::PATCH,
                    &format!("/Groups/{gid}"),
                    Some(json!({"schemas": [PATCH_OP], "Operations": [
                        {"op": "add", "path": "members", "value": [{"value": id}]}]})),
                )
                .await
            }
            None => {
                let (s, body) = self
                    .scim(
                        Method::POST,
                        "/Groups",
                        Some(
                            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                            "displayName": "Engineering", "members": [{"value": id}]}),
                        ),
                    )
                    .await;
                assert_eq!(s, 201, "{body}");
                return id;
            }
        };
        assert_eq!(s, 200, "{body}");
        id
    }

    /// Deactivates a user the way Okta does.
    async fn okta_deactivate(&self, user: &str) -> (u16, Value) {
        self.scim(
            reqwest::Method::PATCH,
            &format!("/Users/{user}"),
            Some(json!({"schemas": [PATCH_OP],
                "Operations": [{"op": "replace", "value": {"active": false}}]})),
        )
        .await
    }

    /// `POST /internal/v1/token`, retried as a gateway retries a 503 (bounded, and counted
    /// for `Broker::stop` to account for: only a vend whose user's access kept changing under
    /// it answers 503). A dropped connection is counted too, and must never happen.
    async fn vend(&self, user: &str, connector: &str) -> (u16, Value) {
        let body = json!({"org": self.org, "user": {"id": user}, "connector": connector});
        for _ in 0..10 {
            let req = self
                .http
                .post(format!("{}/internal/v1/token", self.base))
                .bearer_auth(&self.gateway_key)
                .json(&body);
            match try_call(req).await {
                Err(_) => self.dropped.fetch_add(1, Ordering::Relaxed),
                Ok((503, b)) if b["code"] == "unavailable" => {
                    self.shed.fetch_add(1, Ordering::Relaxed)
                }
                Ok(answer) => return answer,
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "vend {connector} for {user} at {}: shed 10 times in a row",
            self.base
        );
    }

    /// Vends and returns the token, asserting 200.
    async fn token(&self, user: &str, connector: &str) -> String {
        let (s, body) = self.vend(user, connector).await;
        assert_eq!(
            s, 200,
            "vend {connector} for {user} at {}: {body}",
            self.base
        );
        body["access_token"].as_str().unwrap().to_string()
    }

    /// RFC 7662 introspection with the gateway key: is the token active?
    async fn active(&self, token: &str) -> bool {
        let (s, body) = call(
            self.http
                .post(format!("{}/oauth/introspect", self.base))
                .bearer_auth(&self.gateway_key)
                .form(&[("token", token)]),
        )
        .await;
        assert_eq!(s, 200, "{body}");
        body["active"].as_bool().expect("introspection says active")
    }

    async fn kill_switch(&self, user: &str) -> (u16, Value) {
        call(
            self.http
                .post(format!(
                    "{}/admin/v1/orgs/{}/users/{user}/revoke",
                    self.base, self.org
                ))
                .bearer_auth(&self.admin_key),
        )
        .await
    }

    /// Opens the gateway event stream (no overall timeout: reads are bounded one by one).
    async fn events(&self) -> Events {
        let r = reqwest::Client::new()
            .get(format!("{}/internal/v1/events", self.base))
            .bearer_auth(&self.gateway_key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        Events {
            resp: r,
            buf: String::new(),
        }
    }
}

/// A server-sent event stream being read.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    /// Waits (bounded) for an event about `user` whose kind is one of `kinds`; returns the
    /// kind, or panics with what was left unread.
    async fn expect(&mut self, user: &str, kinds: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                };
                let (Some(kind), Some(data)) = (field("event:"), field("data:")) else {
                    continue;
                };
                let data: Value = serde_json::from_str(&data).unwrap();
                if data["user_id"] == user && kinds.contains(&kind.as_str()) {
                    return kind;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {kinds:?} event for {user}; rest: {}",
                self.buf
            );
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(c))) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                Ok(other) => panic!("event stream ended: {other:?}"),
                Err(_) => {}
            }
        }
    }
}
