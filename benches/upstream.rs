//! Upstream mint and refresh throughput: the broker's own overhead, as a ratio to the same
//! authorization server called directly by a minimal client in the same run.
//!
//! `cargo bench --bench upstream` (or `scripts/bench-upstream.sh`) starts the upstream AS
//! (`oidc-provider`, tests/peers/oidc/upstream.mjs: `npm ci --prefix tests/peers/oidc` first)
//! and a broker in this process (the embedded default: SQLite and the in-process vault, or
//! PostgreSQL and Redis when `AUTH_BROKER__STORAGE__DATABASE_URL` / `…__REDIS_URL` are set).
//! For each phase, `N` people (or tokens) at `C` concurrent requests:
//!
//! - `id_jag`: broker vends of distinct people (each one ID-JAG signed by the broker and one
//!   `jwt-bearer` request), against a client that signs its own ID-JAGs (an issuer the AS also
//!   trusts) and redeems them;
//! - `token_exchange`: the same with RFC 8693;
//! - `refresh`: vends of people whose token is due (each one refresh of their stored grant,
//!   rotation included), against a client refreshing tokens it holds.
//!
//! Each phase prints `RESULT <phase> broker_per_s=… direct_per_s=… ratio=…`. Run with no
//! `--bench` argument (as `cargo test --all-targets` does) it does nothing.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_broker::crypto::signing::SigningKey;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const N: usize = 300;
const C: usize = 16;
const ORG: &str = "default";
const SCIM: &str = "ab_scim_bench_upstream_0123456789abcdef";
const GATEWAY: &str = "ab_gw_bench_upstream_0123456789abcdef";
const ADMIN: &str = "ab_admin_bench_upstream_0123456789abcdef";
const CLIENT: (&str, &str) = ("broker", "bench-upstream-secret");

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match rt.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-upstream: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The minimal direct client's own issuer: a key and the JWKS the AS fetches.
struct Direct {
    issuer: String,
    key: Arc<SigningKey>,
}

async fn direct_issuer() -> anyhow::Result<Direct> {
    let key = Arc::new(SigningKey::generate("bench-direct"));
    let jwks = json!({"keys": [key.public_jwk()]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Direct { issuer, key })
}

async fn start_as(trusted: Value) -> anyhow::Result<(tokio::process::Child, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc");
    anyhow::ensure!(
        dir.join("node_modules/oidc-provider").exists(),
        "run `npm ci --prefix tests/peers/oidc` first"
    );
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("upstream.mjs"))
        .env("UP_PORT", "0")
        .env(
            "UP_CLIENTS",
            json!([{"client_id": CLIENT.0, "client_secret": CLIENT.1,
                    "redirect_uris": ["http://127.0.0.1:9/cb"]}])
            .to_string(),
        )
        .env("UP_TRUSTED", trusted.to_string())
        // Tokens live 4 s, so after 2 s every stored token is due for a refresh.
        .env("UP_ACCESS_TTL", "4")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the AS printed no ready line"))?;
    let ready: Value = serde_json::from_str(&line)?;
    Ok((
        child,
        ready["issuer"].as_str().unwrap_or_default().to_string(),
    ))
}

async fn start_broker(
    listener: tokio::net::TcpListener,
    dir: &std::path::Path,
) -> anyhow::Result<tokio::sync::oneshot::Sender<()>> {
    let mut config = auth_broker::config::Config::default();
    config.storage.data_dir = dir.to_path_buf();
    config.storage.database_url = std::env::var("AUTH_BROKER__STORAGE__DATABASE_URL").ok();
    config.storage.redis_url = std::env::var("AUTH_BROKER__STORAGE__REDIS_URL").ok();
    config.upstream.refresher_interval_ms = 0;
    // The broker's own overhead is measured: its per-upstream rate budget (20/s by default)
    // would otherwise be the figure.
    config.upstream.rate_per_second = 0.0;
    config.log.level = "error".into();
    let secrets = auth_broker::service::bootstrap::BootstrapSecrets {
        scim_token: Some(SCIM.to_string().into()),
        gateway_key: Some(GATEWAY.to_string().into()),
        admin_key: Some(ADMIN.to_string().into()),
    };
    let addr = listener.local_addr()?;
    let prepared = auth_broker::prepare(&config, secrets, Some(addr)).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(auth_broker::serve(
        prepared,
        listener,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(2),
    ));
    Ok(tx)
}

/// Runs `n` jobs at `C` at a time; operations per second.
async fn throughput<F, Fut>(n: usize, job: F) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..C)
        .map(|_| {
            let (job, next) = (job.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return Ok::<(), anyhow::Error>(());
                    }
                    job(i).await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// One token request at the AS with the broker's client credentials.
async fn token(
    http: &reqwest::Client,
    as_url: &str,
    form: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let r = http
        .post(format!("{as_url}/token"))
        .basic_auth(CLIENT.0, Some(CLIENT.1))
        .form(form)
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    anyhow::ensure!(status.is_success(), "{status} {body}");
    Ok(body)
}

fn assertion(d: &Direct, as_url: &str, sub: &str, typ: &str, client_id: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_secs() as i64)
        .unwrap_or_default();
    let mut claims = json!({"iss": d.issuer, "sub": sub, "aud": as_url,
        "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 300,
        "scope": "read write"});
    if let Some(c) = client_id {
        claims["client_id"] = json!(c);
    }
    d.key.sign_jwt(typ, &claims).unwrap_or_default()
}

/// A token exchange by the direct client for `sub`, with an assertion it signs itself.
async fn exchange(
    http: &reqwest::Client,
    d: &Direct,
    as_url: &str,
    sub: &str,
) -> anyhow::Result<Value> {
    let a = assertion(d, as_url, sub, "JWT", None);
    token(
        http,
        as_url,
        &[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", &a),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ("scope", "read write"),
        ],
    )
    .await
}

async fn run() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ab-bench-upstream-{}", uuid::Uuid::new_v4()));
    let direct = Arc::new(direct_issuer().await?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (as_child, as_url) = start_as(json!([
        {"issuer": format!("{base}/orgs/{ORG}"), "jwks_uri": format!("{base}/orgs/{ORG}/jwks.json")},
        {"issuer": direct.issuer, "jwks_uri": format!("{}/jwks.json", direct.issuer)},
    ]))
    .await?;
    let stop = start_broker(listener, &dir).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(C)
        .build()?;
    let admin = |path: &str, body: Value| {
        http.post(format!("{base}/admin/v1/orgs/{ORG}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    for (id, strategy) in [("jag", "id_jag"), ("tx", "token_exchange")] {
        let r = admin(
            "/connectors",
            json!({"id": id, "strategy": strategy,
            "audience": "https://bench.example", "scopes": ["read", "write"],
            "upstream": {"issuer": as_url, "client_id": CLIENT.0, "client_secret": CLIENT.1}}),
        )
        .await?;
        anyhow::ensure!(r.status() == 201, "connector {id}: {}", r.text().await?);
        let r = admin(
            "/grants",
            json!({"group": "Engineering", "connector": id,
            "scopes": ["read", "write"],
            "actions": {"read": "allow", "write": "allow", "delete": "allow"}}),
        )
        .await?;
        anyhow::ensure!(r.status() == 201, "grant {id}: {}", r.text().await?);
    }
    // N people in Engineering.
    let mut users = Vec::new();
    for i in 0..N {
        let r: Value = http
            .post(format!("{base}/scim/v2/{ORG}/Users"))
            .bearer_auth(SCIM)
            .json(
                &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": format!("bench-{i}@example.com"), "active": true}),
            )
            .send()
            .await?
            .json()
            .await?;
        users.push(r["id"].as_str().unwrap_or_default().to_string());
    }
    let members: Vec<Value> = users.iter().map(|u| json!({"value": u})).collect();
    let r = http
        .post(format!("{base}/scim/v2/{ORG}/Groups"))
        .bearer_auth(SCIM)
        .json(
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": "Engineering", "members": members}),
        )
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "group: {}", r.text().await?);
    let users = Arc::new(users);

    let vend = |connector: &'static str| {
        let (http, base, users) = (http.clone(), base.clone(), users.clone());
        move |i: usize| {
            let (http, base, user) = (http.clone(), base.clone(), users[i].clone());
            async move {
                let r = http
                    .post(format!("{base}/internal/v1/token"))
                    .bearer_auth(GATEWAY)
                    .json(&json!({"org": ORG, "user": {"id": user}, "connector": connector}))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "vend: {}", r.text().await?);
                Ok(())
            }
        }
    };
    let direct_grant = |typ: &'static str| {
        let (http, as_url, d) = (http.clone(), as_url.clone(), direct.clone());
        move |i: usize| {
            let (http, as_url, d) = (http.clone(), as_url.clone(), d.clone());
            async move {
                let sub = format!("direct-{i}");
                if typ == "jag" {
                    let a = assertion(&d, &as_url, &sub, "oauth-id-jag+jwt", Some(CLIENT.0));
                    token(
                        &http,
                        &as_url,
                        &[
                            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                            ("assertion", &a),
                            ("scope", "read write"),
                        ],
                    )
                    .await?;
                } else {
                    exchange(&http, &d, &as_url, &sub).await?;
                }
                Ok(())
            }
        }
    };

    let mut results = Vec::new();
    // Mints: the broker's first vend of each person against the direct client's grants.
    let broker_jag = throughput(N, vend("jag")).await?;
    let direct_jag = throughput(N, direct_grant("jag")).await?;
    results.push(("id_jag", broker_jag, direct_jag));
    let broker_tx = throughput(N, vend("tx")).await?;
    let direct_tx = throughput(N, direct_grant("tx")).await?;
    results.push(("token_exchange", broker_tx, direct_tx));

    // Refresh: the direct client's own refresh tokens, from exchanges of its own.
    let mut rts = Vec::new();
    for i in 0..N {
        let t = exchange(&http, &direct, &as_url, &format!("direct-rt-{i}")).await?;
        rts.push(t["refresh_token"].as_str().unwrap_or_default().to_string());
    }
    // Every stored token (4 s) is due once 2 s have passed since the exchanges above.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let broker_rf = throughput(N, vend("tx")).await?;
    let rts = Arc::new(rts);
    let direct_rf = {
        let (http, as_url) = (http.clone(), as_url.clone());
        throughput(N, move |i| {
            let (http, as_url, rt) = (http.clone(), as_url.clone(), rts[i].clone());
            async move {
                token(
                    &http,
                    &as_url,
                    &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
                )
                .await?;
                Ok(())
            }
        })
        .await?
    };
    results.push(("refresh", broker_rf, direct_rf));
    let stats: Value = http
        .get(format!("{as_url}/_test/stats"))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        stats["reuse_detected"] == 0,
        "the AS saw a refresh token reused: {stats}"
    );
    for (phase, broker, direct) in results {
        println!(
            "RESULT {phase} n={N} concurrency={C} broker_per_s={broker:.0} direct_per_s={direct:.0} ratio={:.2}",
            broker / direct
        );
    }
    let _ = stop.send(());
    drop(as_child);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
