//! The binary: embedded default first start, bootstrap variables, PostgreSQL switch,
//! check-config, hash-secret, migrate.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::support::{Backend, fresh_database};

const BIN: &str = env!("CARGO_BIN_EXE_auth-broker");

/// The binary serving the embedded default in a directory of its own.
pub(crate) struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    pub(crate) fn start(dir: &std::path::Path, envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .current_dir(dir)
            .env_remove("AUTH_BROKER_CONFIG")
            .env("AUTH_BROKER__LOG__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("binary starts");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines: rx }
    }

    /// Lines printed until the banner ends (or a short quiet period).
    pub(crate) fn banner(&self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(3)) {
            let done = l.trim_start().starts_with("admin key:");
            out.push(l);
            if done {
                break;
            }
        }
        out
    }

    pub(crate) fn stop(mut self) {
        // SIGTERM for a graceful stop; the process must exit on its own.
        crate::support::send_signal(self.child.id(), rustix::process::Signal::TERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "graceful shutdown exits 0, got {status}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(crate) fn value_of(lines: &[String], label: &str) -> Option<String> {
    lines
        .iter()
        .find(|l| l.trim_start().starts_with(label))
        .map(|l| l.split_whitespace().last().unwrap().to_string())
}

async fn wait_ready(base: &str) {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("broker at {base} never became ready");
}

pub(crate) fn temp_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("ab-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_prints_credentials_once() {
    let dir = temp_dir();
    let run = Running::start(&dir, &[]);
    let banner = run.banner();
    let token = value_of(&banner, "SCIM token:").expect("SCIM token printed on first start");
    let base = value_of(&banner, "SCIM base URL:").expect("SCIM base printed");
    assert!(
        value_of(&banner, "gateway key:")
            .unwrap()
            .starts_with("ab_gw_")
    );
    assert!(
        value_of(&banner, "admin key:")
            .unwrap()
            .starts_with("ab_admin_")
    );
    assert!(base.ends_with("/scim/v2/default"), "{base}");
    assert!(
        dir.join("data/auth-broker.db").exists(),
        "SQLite created under --data-dir"
    );
    let root = base.trim_end_matches("/scim/v2/default").to_string();
    wait_ready(&root).await;
    let r = reqwest::Client::new()
        .get(format!("{base}/Users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    run.stop();

    // Second start: same data, nothing printed, the old token still works.
    let run = Running::start(&dir, &[]);
    let banner = run.banner();
    assert!(
        value_of(&banner, "SCIM token:").is_none(),
        "credentials are printed only once: {banner:?}"
    );
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_variables_and_postgres_switch() {
    let dir = temp_dir();
    let (url, _) = fresh_database(Backend::Postgres).await;
    let token = "ab_scim_given_by_automation_0123456789";
    let run = Running::start(
        &dir,
        &[
            ("AUTH_BROKER_BOOTSTRAP_SCIM_TOKEN", token),
            ("AUTH_BROKER__STORAGE__DATABASE_URL", &url),
        ],
    );
    let banner = run.banner();
    assert!(
        value_of(&banner, "SCIM token:").is_none(),
        "a supplied token is not echoed"
    );
    let base = value_of(&banner, "SCIM base URL:").unwrap();
    let root = base.trim_end_matches("/scim/v2/default").to_string();
    wait_ready(&root).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{base}/Users"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    run.stop();
    assert!(
        !dir.join("data/auth-broker.db").exists(),
        "PostgreSQL was used, not SQLite"
    );
    // The default org and its credentials live in PostgreSQL.
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM credentials WHERE org_id = 'default'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 3);
    conn.close().await.ok();
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = temp_dir();
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        "[storage]\ndatabase_url = \"mysql://nope\"\n[scim]\nmax_results = 0\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("storage.database_url"), "{err}");
    assert!(err.contains("scim.max_results"), "{err}");

    std::fs::write(&cfg, "[storage]\nunknown_key = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_key"));

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.toml");
    let out = Command::new(BIN)
        .args(["check-config", "--config", example])
        .env("ACME_SCIM_TOKEN", "ab_scim_example_value_0123456789")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "example config validates: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hash_secret_matches_what_config_accepts() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-secret")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"ab_scim_some_long_secret_value\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let expected =
        auth_broker::crypto::secret::hash_str("ab_scim_some_long_secret_value").to_string();
    assert_eq!(printed.trim(), expected);

    let out = Command::new(BIN)
        .args(["keys", "generate"])
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap();
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .unwrap();
    assert_eq!(bytes.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_and_is_idempotent() {
    let (url, _) = fresh_database(Backend::Postgres).await;
    for _ in 0..2 {
        let out = Command::new(BIN)
            .arg("migrate")
            .env("AUTH_BROKER__STORAGE__DATABASE_URL", &url)
            .env_remove("AUTH_BROKER_CONFIG")
            .current_dir(temp_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count() as i64;
    assert_eq!(n, files, "every embedded migration is recorded once");
    conn.close().await.ok();
}

/// SIGTERM as soon as the first start prints its banner (before the server runs) still stops
/// the broker gracefully: the handlers are installed before storage is opened.
#[test]
fn a_signal_during_start_up_stops_gracefully() {
    let dir = temp_dir();
    let run = Running::start(&dir, &[]);
    let first = run
        .lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the broker prints its first start");
    assert!(first.contains("first start"), "{first}");
    run.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
