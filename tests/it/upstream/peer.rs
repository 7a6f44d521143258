//! The upstream authorization server of these tests: `oidc-provider` (tests/peers/oidc/
//! upstream.mjs), a real AS with rotating refresh tokens, reuse detection, RFC 7009
//! revocation, `jwt-bearer` (ID-JAG) and token exchange grants, and injectable faults.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

/// The broker's client at the AS.
pub const CLIENT_ID: &str = "broker";
/// Its secret.
pub const CLIENT_SECRET: &str = "broker-upstream-secret";

/// A running upstream AS.
pub struct UpstreamAs {
    pub issuer: String,
    http: reqwest::Client,
    child: tokio::process::Child,
}

impl UpstreamAs {
    /// Starts it trusting the broker at `broker` (the org `acme`'s issuer and JWKS), with the
    /// broker's consent callbacks as redirect URIs, and access tokens living `access_ttl`.
    pub async fn start(broker: &str, access_ttl: u64) -> Self {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the upstream test peer is not installed: run `npm ci --prefix tests/peers/oidc`"
        );
        let redirects: Vec<String> = ["linear", "notes", "wiki"]
            .iter()
            .map(|c| format!("{broker}/auth/acme/connect/{c}/callback"))
            .collect();
        let trusted = json!([{
            "issuer": format!("{broker}/orgs/acme"),
            "jwks_uri": format!("{broker}/orgs/acme/jwks.json"),
        }]);
        Self::start_trusting(trusted, redirects, access_ttl).await
    }

    /// Starts it trusting the issuers in `trusted` (`[{"issuer","jwks_uri"}]`), with the
    /// broker's client redirecting to `redirects`.
    pub async fn start_trusting(trusted: Value, redirects: Vec<String>, access_ttl: u64) -> Self {
        // The broker's client secret at the AS must never reach the logs.
        crate::log_capture::register(CLIENT_SECRET);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/oidc");
        let clients = json!([{
            "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": redirects,
        }]);
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("upstream.mjs"))
            .env("UP_PORT", "0")
            .env("UP_CLIENTS", clients.to_string())
            .env("UP_TRUSTED", trusted.to_string())
            .env("UP_ACCESS_TTL", access_ttl.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the upstream test peer");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the upstream peer becomes ready")
            .unwrap()
            .expect("the upstream peer prints its ready line");
        let ready: Value = serde_json::from_str(&line).unwrap();
        Self {
            issuer: ready["issuer"].as_str().unwrap().to_string(),
            http: reqwest::Client::new(),
            child,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}{path}", self.issuer))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The account the next authorization request logs in.
    pub async fn next_login(&self, sub: &str) {
        self.post("/_test/next-login", json!({"sub": sub})).await;
    }

    /// Injects a fault (see tests/peers/oidc/README.md).
    pub async fn fault(&self, fault: Value) {
        self.post("/_test/fault", fault).await;
    }

    /// The AS's counters.
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_test/stats", self.issuer))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Zeroes the counters.
    pub async fn reset_stats(&self) {
        self.post("/_test/stats/reset", json!({})).await;
    }

    /// What the AS knows of a token: `{"active","kind","sub",…}`.
    pub async fn token(&self, token: &str) -> Value {
        self.post("/_test/active", json!({"token": token})).await
    }

    /// Whether the AS still honours a token.
    pub async fn active(&self, token: &str) -> bool {
        self.token(token).await["active"] == true
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
