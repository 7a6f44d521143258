//! Offboarding that nothing can undo, shown as a property over many interleavings: random
//! deactivations, reactivations, group additions and removals, kill switches, locks and
//! unlocks of the same users race each other and a stream of vends, sent to two brokers that
//! share the system of record and the vault. After every round the data must say:
//! - every user's projection (what the vault enforces) equals what the system of record
//!   implies (active, locked, entitled connectors), and a vend is answered accordingly;
//! - no vend sent after a deactivation answered returned a token of an epoch that
//!   deactivation superseded.
//!
//! Run on PostgreSQL with Redis standalone and Redis Cluster (two in-process brokers each),
//! on the embedded SQLite with the in-process vault (one broker), and across two real broker
//! processes (`processes::interleavings`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::redis_fixture::{cluster, redis_url};
use crate::support::{
    ACME_ADMIN, ACME_GATEWAY, ACME_TOKEN, Backend, TestServer, fresh_database, test_config,
    with_github, with_redis,
};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// Where the scenario runs: brokers sharing one deployment, and its credentials.
#[derive(Clone)]
pub struct Target {
    /// Base URLs of the brokers (requests are spread over them at random).
    pub bases: Vec<String>,
    /// The org.
    pub org: String,
    /// Its SCIM token, gateway key and admin key.
    pub scim: String,
    pub gateway: String,
    pub admin: String,
    pub http: reqwest::Client,
}

/// How much to do.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub users: usize,
    pub rounds: usize,
    /// Concurrent op streams per user and round.
    pub streams: usize,
    pub ops: usize,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Deactivate,
    Reactivate,
    GroupAdd,
    GroupRemove,
    Kill,
    Lock,
    Unlock,
}

const OPS: [Op; 7] = [
    Op::Deactivate,
    Op::Reactivate,
    Op::GroupAdd,
    Op::GroupRemove,
    Op::Kill,
    Op::Lock,
    Op::Unlock,
];

impl Target {
    fn base(&self) -> &str {
        &self.bases[rand::random_range(0..self.bases.len())]
    }

    async fn send(
        &self,
        method: Method,
        url: String,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, url).bearer_auth(key);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().await.expect("every request is answered");
        let status = r.status().as_u16();
        let bytes = r.bytes().await.expect("a whole body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn scim(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/scim/v2/{}{path}", self.base(), self.org);
        self.send(method, url, &self.scim, body).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/admin/v1/orgs/{}{path}", self.base(), self.org);
        self.send(method, url, &self.admin, body).await
    }

    async fn vend(&self, user: &str) -> (u16, Value) {
        let url = format!("{}/internal/v1/token", self.base());
        let body = json!({"org": self.org, "user": {"id": user}, "connector": "github"});
        self.send(Method::POST, url, &self.gateway, Some(body))
            .await
    }

    /// Retries a write answered 503 (the broker's "retry": the IdP's behaviour) a few times.
    async fn op(&self, op: Op, user: &str, group: &str) -> u16 {
        for _ in 0..20 {
            let (status, body) = match op {
                Op::Deactivate | Op::Reactivate => {
                    let active = matches!(op, Op::Reactivate);
                    self.scim(
                        Method::PATCH,
                        &format!("/Users/{user}"),
                        Some(json!({"schemas": [PATCH_OP],
                            "Operations": [{"op": "replace", "value": {"active": active}}]})),
                    )
                    .await
                }
                Op::GroupAdd | Op::GroupRemove => {
                    let op = if matches!(op, Op::GroupAdd) {
                        json!({"op": "add", "path": "members", "value": [{"value": user}]})
                    } else {
                        json!({"op": "remove", "path": format!("members[value eq \"{user}\"]")})
                    };
                    self.scim(
                        Method::PATCH,
                        &format!("/Groups/{group}"),
                        Some(json!({"schemas": [PATCH_OP], "Operations": [op]})),
                    )
                    .await
                }
                Op::Kill => {
                    self.admin(Method::POST, &format!("/users/{user}/revoke"), None)
                        .await
                }
                Op::Lock => {
                    self.admin(
                        Method::POST,
                        &format!("/users/{user}/lock"),
                        Some(json!({"reason": "interleavings"})),
                    )
                    .await
                }
                Op::Unlock => {
                    self.admin(Method::DELETE, &format!("/users/{user}/lock"), None)
                        .await
                }
            };
            match status {
                // 404: unlocking a user who is not locked.
                200 | 204 | 404 => return status,
                // 409: the group changed too fast for SCIM's own optimistic retries; 503: the
                // projection kept moving. Both say "retry".
                409 | 503 => tokio::time::sleep(Duration::from_millis(5)).await,
                other => panic!("{op:?} {user}: {other} {body}"),
            }
        }
        panic!("{op:?} {user}: refused 20 times in a row");
    }
}

/// Creates the users (active, not in the group) and the group granting `github`.
async fn provision(t: &Target, n: usize) -> (Vec<String>, String) {
    let mut users = Vec::new();
    for i in 0..n {
        let (s, u) = t
            .scim(
                Method::POST,
                "/Users",
                Some(
                    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": format!("il-{i}-{}@acme.example", uuid::Uuid::new_v4().simple()),
                    "active": true}),
                ),
            )
            .await;
        assert_eq!(s, 201, "{u}");
        users.push(u["id"].as_str().unwrap().to_string());
    }
    let members: Vec<Value> = users.iter().map(|u| json!({"value": u})).collect();
    let (s, g) = t
        .scim(
            Method::POST,
            "/Groups",
            Some(
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "Engineering", "members": members}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{g}");
    (users, g["id"].as_str().unwrap().to_string())
}

/// The property, over `size` rounds of random interleavings.
pub async fn run(t: &Target, size: Size) {
    let (users, group) = provision(t, size.users).await;
    let mut checked = 0;
    for round in 0..size.rounds {
        let mut tasks = Vec::new();
        for user in &users {
            // The highest epoch of any token this user was served so far, and how many
            // reactivations were started.
            let served = Arc::new(AtomicU64::new(0));
            let reactivations = Arc::new(AtomicU64::new(0));
            for stream in 0..size.streams {
                let (t, user, group, served, reactivations) = (
                    t.clone(),
                    user.clone(),
                    group.clone(),
                    served.clone(),
                    reactivations.clone(),
                );
                tasks.push(tokio::spawn(async move {
                    for _ in 0..size.ops {
                        let op = OPS[rand::random_range(0..OPS.len())];
                        if matches!(op, Op::Reactivate) {
                            reactivations.fetch_add(1, Ordering::SeqCst);
                        }
                        let before = served.load(Ordering::SeqCst);
                        let reactivated = reactivations.load(Ordering::SeqCst);
                        t.op(op, &user, &group).await;
                        // Vends race the ops; one right after a deactivation checks its epoch:
                        // unless the IdP reactivated the user meanwhile, a token served now
                        // must be newer than every token served before the deactivation.
                        let (status, body) = t.vend(&user).await;
                        if status == 200 {
                            let epoch = body["epoch"].as_u64().expect("the token's epoch");
                            if matches!(op, Op::Deactivate)
                                && reactivations.load(Ordering::SeqCst) == reactivated
                            {
                                assert!(
                                    epoch > before,
                                    "round {round} stream {stream}: after a deactivation \
                                     answered, a token of epoch {epoch} (served before: \
                                     {before})"
                                );
                            }
                            served.fetch_max(epoch, Ordering::SeqCst);
                        } else {
                            assert!(matches!(status, 403 | 503), "{status} {body}");
                        }
                    }
                }));
            }
        }
        for task in tasks {
            task.await.expect("an op stream");
        }
        for user in &users {
            check(t, user).await;
            checked += 1;
        }
    }
    eprintln!(
        "interleavings: {} ops over {} rounds on {} brokers, {checked} states checked",
        size.users * size.streams * size.ops * size.rounds,
        size.rounds,
        t.bases.len()
    );
}

/// The projection equals what the system of record implies, and a vend agrees.
async fn check(t: &Target, user: &str) {
    let (s, view) = t.admin(Method::GET, &format!("/users/{user}"), None).await;
    assert_eq!(s, 200, "{view}");
    let active = view["active"].as_bool().unwrap();
    let locked = view["locked"].as_bool().unwrap();
    let entitled: BTreeSet<String> = view["entitlements"]["connectors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let p = &view["projection"];
    if !p.is_null() {
        let held: BTreeSet<String> = p["connectors"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            (p["active"].as_bool(), p["locked"].as_bool(), &held),
            (Some(active), Some(locked), &entitled),
            "projection of {user} disagrees with the system of record: {view}"
        );
    }
    let (status, body) = t.vend(user).await;
    let expected = if locked {
        "user_locked"
    } else if !active {
        "user_inactive"
    } else if entitled.is_empty() {
        "not_entitled"
    } else {
        ""
    };
    if expected.is_empty() {
        assert_eq!(status, 200, "{user}: {body} {view}");
        let live: Vec<Value> = view["live_tokens"].as_array().cloned().unwrap_or_default();
        assert!(live.len() <= 1, "{live:?}");
    } else {
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some(expected)),
            "{view}"
        );
        let (_, again) = t.admin(Method::GET, &format!("/users/{user}"), None).await;
        assert_eq!(again["live_tokens"], json!([]), "no token held: {again}");
    }
}

fn in_process(servers: &[&TestServer]) -> Target {
    Target {
        bases: servers.iter().map(|s| s.base()).collect(),
        org: "acme".into(),
        scim: ACME_TOKEN.into(),
        gateway: ACME_GATEWAY.into(),
        admin: ACME_ADMIN.into(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
    }
}

const SIZE: Size = Size {
    users: 6,
    rounds: 5,
    streams: 3,
    ops: 8,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleavings_on_postgres_and_redis_standalone() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    let a = TestServer::start_with(Backend::Postgres, cfg.clone()).await;
    let b = TestServer::start_with(Backend::Postgres, cfg).await;
    run(&in_process(&[&a, &b]), SIZE).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleavings_on_postgres_and_redis_cluster() {
    let c = cluster().await;
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(with_github(test_config(&url, &dir)), &c.url());
    let a = TestServer::start_with(Backend::Postgres, cfg.clone()).await;
    let b = TestServer::start_with(Backend::Postgres, cfg).await;
    run(&in_process(&[&a, &b]), SIZE).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleavings_on_the_embedded_back_end() {
    let (url, dir) = fresh_database(Backend::Sqlite).await;
    let cfg = with_github(test_config(&url, &dir));
    let s = TestServer::start_with(Backend::Sqlite, cfg).await;
    run(&in_process(&[&s]), SIZE).await;
    s.stop().await;
}
