//! Test fixtures: a broker server per test on a fresh database of either back end, a SCIM
//! client, and a TCP proxy that can cut the database connection on demand.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use auth_broker::config::{Config, OrgConfig};
use auth_broker::crypto::secret::hash_str;
use auth_broker::service::bootstrap::BootstrapSecrets;
use auth_broker::store::{SqlOptions, SqlStore};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;

mod cut_proxy;
mod scim_client;

pub use cut_proxy::CutProxy;
pub use scim_client::{Resp, Scim, member_ids, read};

/// Which system of record a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Runs an async test body once per back end, as two test functions.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
        }
    };
}

/// The PostgreSQL server the suite uses (must be running; the suite fails, never skips).
pub fn admin_database_url() -> String {
    std::env::var("AUTH_BROKER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn with_database(url: &str, db: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{db}"),
        None => format!("{url}/{db}"),
    }
}

/// A fresh, empty database URL for one test (PostgreSQL database or SQLite file).
pub async fn fresh_database(backend: Backend) -> (String, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ab-it-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    match backend {
        Backend::Sqlite => (
            format!("sqlite://{}?mode=rwc", dir.join("broker.db").display()),
            dir,
        ),
        Backend::Postgres => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let name = format!("ab_it_{now}_{}", uuid::Uuid::new_v4().simple());
            let admin = admin_database_url();
            let mut conn = connect_pg(&admin).await;
            drop_stale_databases(&mut conn, now).await;
            use sqlx::Connection;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            conn.close().await.ok();
            (with_database(&admin, &name), dir)
        }
    }
}

/// Once per test process: drops the scratch databases of earlier runs (named with their
/// creation time; anything over two hours old), so repeated runs on one machine do not pile
/// them up. A run in progress elsewhere is never that old.
async fn drop_stale_databases(conn: &mut sqlx::PgConnection, now: u64) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'ab\\_it\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let created = name
            .strip_prefix("ab_it_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|t| t.parse::<u64>().ok());
        // Names without a time are from before they carried one: stale as well.
        if created.is_none_or(|t| now.saturating_sub(t) > 2 * 3600) {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

async fn connect_pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    match sqlx::PgConnection::connect(url).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is required by the integration suite ({url}): {e}. \
             Start it (see .ci/run) or set AUTH_BROKER_TEST_DATABASE_URL."
        ),
    }
}

/// Two orgs, each with its own SCIM token.
pub const ACME_TOKEN: &str = "ab_scim_acme_test_token_0123456789";
/// The second org's token.
pub const GLOBEX_TOKEN: &str = "ab_scim_globex_test_token_0123456789";

/// The gateway key of `acme` (also bound to nothing else).
pub const ACME_GATEWAY: &str = "ab_gw_acme_test_gateway_key_0123456789";
/// The admin key of `acme`.
pub const ACME_ADMIN: &str = "ab_admin_acme_test_admin_key_0123456789";
/// The gateway key of `globex`.
pub const GLOBEX_GATEWAY: &str = "ab_gw_globex_test_gateway_key_0123456789";

/// Points a config at a Redis vault with a key ring written to `data_dir` (test material).
pub fn with_redis(mut c: Config, redis_url: &str) -> Config {
    use base64::Engine;
    let key_file = c.storage.data_dir.join("test-vault-key");
    // Test key material, generated per test.
    let key: [u8; 32] = rand::random();
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
    crate::log_capture::register(&encoded);
    std::fs::write(&key_file, encoded).unwrap();
    c.storage.redis_url = Some(redis_url.to_string());
    c.storage.redis_timeout_ms = 150;
    c.vault.active_key = Some("k1".into());
    c.vault.keys.insert(
        "k1".into(),
        auth_broker::config::SecretRef {
            env: None,
            file: Some(key_file),
        },
    );
    c
}

/// Adds a `github` connector (broker JWTs) and an `Engineering` grant to `acme`.
pub fn with_github(mut c: Config) -> Config {
    use auth_broker::config::{ConnectorConfig, GrantConfig};
    use auth_broker::domain::connector::{Action, ActionSet, Category, Strategy};
    let acme = c.orgs.get_mut("acme").unwrap();
    acme.gateway_key_hashes = vec![hash_str(ACME_GATEWAY).to_string()];
    acme.admin_key_hashes = vec![hash_str(ACME_ADMIN).to_string()];
    acme.connectors.insert(
        "github".into(),
        ConnectorConfig {
            display_name: Some("GitHub".into()),
            strategy: Strategy::BrokerJwt,
            audience: "https://mcp.github.example".into(),
            scopes: vec!["repo:read".into(), "repo:write".into(), "admin:org".into()],
            tools: [
                ("create_issue".to_string(), Category::Write),
                ("delete_repo".to_string(), Category::Delete),
            ]
            .into_iter()
            .collect(),
            default_actions: None,
            enabled: true,
            token_ttl_secs: None,
            upstream: None,
        },
    );
    acme.grants.push(GrantConfig {
        id: Some("eng-github".into()),
        group: Some("Engineering".into()),
        group_id: None,
        connector: "github".into(),
        scopes: vec!["repo:read".into(), "repo:write".into()],
        actions: ActionSet {
            read: Action::Allow,
            write: Action::NeedsApproval,
            delete: Action::Blocked,
        },
    });
    let globex = c.orgs.get_mut("globex").unwrap();
    globex.gateway_key_hashes = vec![hash_str(GLOBEX_GATEWAY).to_string()];
    c
}

/// A config with orgs `acme` and `globex` on the given database.
pub fn test_config(database_url: &str, data_dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.storage.database_url = Some(database_url.to_string());
    c.storage.data_dir = data_dir.to_path_buf();
    // Many brokers start and run at once on two CPUs: each keeps few idle connections, and
    // waits longer for one than production would before answering 503.
    c.storage.acquire_timeout_ms = 2000;
    c.storage.min_connections = Some(2);
    c.scim.max_filter_scan = 2000;
    for (org, token) in [("acme", ACME_TOKEN), ("globex", GLOBEX_TOKEN)] {
        c.orgs.insert(
            org.into(),
            OrgConfig {
                display_name: Some(org.to_uppercase()),
                scim_token_hashes: vec![hash_str(token).to_string()],
                ..OrgConfig::default()
            },
        );
    }
    c
}

/// A running broker.
pub struct TestServer {
    pub addr: SocketAddr,
    pub backend: Backend,
    pub database_url: String,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a broker on a fresh database of `backend`.
    pub async fn start(backend: Backend) -> Self {
        let (url, dir) = fresh_database(backend).await;
        Self::start_with(backend, test_config(&url, &dir)).await
    }

    /// Starts a broker with a prepared config.
    pub async fn start_with(backend: Backend, config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, backend, config).await
    }

    /// Starts a broker on a listener bound beforehand (when peers must know its address).
    pub async fn start_on(listener: TcpListener, backend: Backend, config: Config) -> Self {
        crate::log_capture::install();
        let addr = listener.local_addr().unwrap();
        let prepared = auth_broker::prepare(&config, BootstrapSecrets::default(), Some(addr))
            .await
            .expect("broker prepares");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(auth_broker::serve(
            prepared,
            listener,
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(5),
        ));
        Self::running(addr, backend, &config, tx, task)
    }

    fn running(
        addr: SocketAddr,
        backend: Backend,
        config: &Config,
        shutdown: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    ) -> Self {
        Self {
            addr,
            backend,
            database_url: config.database_url(),
            data_dir: config.storage.data_dir.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            shutdown: Some(shutdown),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:port`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The SCIM base of an org.
    pub fn scim(&self, org: &str) -> String {
        format!("{}/scim/v2/{org}", self.base())
    }

    /// A SCIM client of `acme`.
    pub fn acme(&self) -> Scim {
        Scim {
            http: self.http.clone(),
            base: self.scim("acme"),
            token: ACME_TOKEN.into(),
        }
    }

    /// A SCIM client of `globex`.
    pub fn globex(&self) -> Scim {
        Scim {
            http: self.http.clone(),
            base: self.scim("globex"),
            token: GLOBEX_TOKEN.into(),
        }
    }

    /// Opens the same system of record directly (for assertions on audit and events).
    pub async fn store(&self) -> SqlStore {
        open_store(&self.database_url).await
    }

    /// Sends a gateway API request with a key.
    pub async fn gateway(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base()))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.expect("request sent")).await
    }

    /// GETs an unauthenticated JSON document (metadata, key sets), asserting 200.
    pub async fn get_json(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.base()))
            .send()
            .await
            .expect("request sent");
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.json().await.expect("a JSON document")
    }

    /// `GET /readyz`'s status.
    pub async fn readyz(&self) -> StatusCode {
        self.http
            .get(format!("{}/readyz", self.base()))
            .send()
            .await
            .expect("request sent")
            .status()
    }

    /// POSTs a form with `token` to an OAuth endpoint with a Bearer credential: the status
    /// and the JSON body (`Null` when there is none).
    pub async fn oauth(&self, path: &str, key: &str, token: &str) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base()))
            .bearer_auth(key)
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// RFC 7662 introspection of `token` with acme's gateway key, asserting 200.
    pub async fn introspect(&self, token: &str) -> Value {
        let r = self
            .http
            .post(format!("{}/oauth/introspect", self.base()))
            .bearer_auth(ACME_GATEWAY)
            .form(&[("token", token)])
            .send()
            .await
            .expect("request sent");
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.expect("an introspection response")
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.base()))
            .send()
            .await
            .expect("request sent");
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.expect("metrics text")
    }

    /// Vends a token for a user id on `acme`'s `github`.
    /// Subscribes to the gateway event stream (SSE) with the acme gateway key (asserting 200).
    pub async fn events(&self) -> reqwest::Response {
        let r = self
            .http
            .get(format!("{}/internal/v1/events", self.base()))
            .bearer_auth(ACME_GATEWAY)
            .send()
            .await
            .expect("event stream request sent");
        assert_eq!(r.status(), StatusCode::OK, "event stream refused");
        r
    }

    pub async fn vend(&self, user_id: &str) -> Resp {
        self.gateway(
            ACME_GATEWAY,
            Method::POST,
            "/internal/v1/token",
            Some(
                serde_json::json!({"org": "acme", "user": {"id": user_id}, "connector": "github"}),
            ),
        )
        .await
    }

    /// Deactivates an `acme` user the way Okta does (`replace` of `active` without a path).
    pub async fn okta_deactivate(&self, user_id: &str) -> Resp {
        self.acme()
            .patch(
                &format!("/Users/{user_id}"),
                serde_json::json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "value": {"active": false}}]}),
            )
            .await
    }

    /// The `acme` audit records about a user (admin API).
    pub async fn audit_of(&self, user_id: &str) -> Resp {
        self.admin(
            Method::GET,
            &format!("/admin/v1/orgs/acme/audit?user={user_id}&limit=1000"),
            None,
        )
        .await
    }

    /// The `acme` admin view of a user (its live tokens and entitlements).
    pub async fn user_view(&self, user_id: &str) -> Resp {
        self.admin(
            Method::GET,
            &format!("/admin/v1/orgs/acme/users/{user_id}"),
            None,
        )
        .await
    }

    /// The `acme` offboarding receipts of a user.
    pub async fn offboarding_of(&self, user_id: &str) -> Resp {
        self.admin(
            Method::GET,
            &format!("/admin/v1/orgs/acme/users/{user_id}/offboarding"),
            None,
        )
        .await
    }

    /// The `acme` admin kill switch for a user.
    pub async fn kill_switch(&self, user_id: &str) -> Resp {
        self.admin(
            Method::POST,
            &format!("/admin/v1/orgs/acme/users/{user_id}/revoke"),
            None,
        )
        .await
    }

    /// Sends an admin API request with acme's admin key.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        self.gateway(ACME_ADMIN, method, path, body).await
    }

    /// Stops the server but keeps its database and data directory (a later server reuses them).
    pub async fn halt(mut self) {
        self.shutdown_and_wait().await;
    }

    async fn shutdown_and_wait(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
        crate::log_capture::assert_clean();
    }

    /// Stops the server, waits for it, and removes its scratch database and data directory.
    pub async fn stop(mut self) {
        self.shutdown_and_wait().await;
        if self.backend == Backend::Postgres
            && let Some((_, db)) = self.database_url.rsplit_once('/')
            && db.starts_with("ab_it_")
        {
            use sqlx::Connection;
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_database_url()).await {
                // Another server of the same test may still use it: then it stays, harmlessly.
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
                    .execute(&mut conn)
                    .await;
                conn.close().await.ok();
            }
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Adds a new user to `acme`'s Engineering group (created on first use); returns (user, group).
pub async fn engineer_in_group(s: &TestServer, name: &str) -> (String, String) {
    let acme = s.acme();
    let id = acme.create_user(name).await;
    let r = acme
        .get("/Groups?filter=displayName+eq+%22Engineering%22")
        .await;
    let gid = match r.body["Resources"][0]["id"].as_str() {
        Some(g) => g.to_string(),
        None => acme.create_group("Engineering", &[]).await,
    };
    let r = acme
        .patch(
            &format!("/Groups/{gid}"),
            serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "add", "path": "members", "value": [{"value": id}]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    (id, gid)
}

/// A small pool on the system of record at `database_url`, for tests that read or write it
/// directly.
pub async fn open_store(database_url: &str) -> SqlStore {
    SqlStore::connect(
        database_url,
        &SqlOptions {
            max_connections: 2,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
        },
    )
    .await
    .unwrap()
}

/// The value of one series in Prometheus text (`name{labels}` exactly as exported).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The claims of a JWT (not verified: for assertions on what the broker minted).
pub fn jwt_claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The `kid` in a JWT's header.
pub fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// The `kid`s a JWKS document publishes, in its order.
pub fn jwks_kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// Sends `sig` to process `pid` (no `kill` program needed: a minimal Debian has none).
pub fn send_signal(pid: u32, sig: rustix::process::Signal) {
    let raw = i32::try_from(pid).expect("a child's pid fits pid_t");
    let pid = rustix::process::Pid::from_raw(raw).expect("a child's pid is positive");
    rustix::process::kill_process(pid, sig).unwrap_or_else(|e| panic!("kill({raw}, {sig:?}): {e}"));
}
