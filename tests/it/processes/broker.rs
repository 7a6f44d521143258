//! One real `auth-broker serve` process for the multi-process tests: started from a
//! generated config, waited for until ready, and stopped with SIGTERM, after which what the
//! test's [`Api`] retried is accounted for against the broker's own counters and log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Api, BIN, WAIT, client};
use crate::redis_fixture::free_port;

/// One `auth-broker serve` process; killed when dropped (a panicking test leaves none).
pub(super) struct Broker {
    child: Child,
    pub(super) base: String,
    log: PathBuf,
}

impl Broker {
    pub(super) async fn start(config: &Path, dir: &Path, name: &str) -> Self {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        // Only the generated file configures it.
        for (k, _) in std::env::vars() {
            if k.starts_with("AUTH_BROKER") || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        let mut b = Self {
            child: cmd.spawn().expect("the broker binary starts"),
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let http = client();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = b.child.try_wait() {
                panic!("{name} exited at start-up ({status}): {}", b.log_text());
            }
            if let Ok(r) = http.get(format!("{}/readyz", b.base)).send().await
                && r.status() == 200
            {
                return b;
            }
            assert!(Instant::now() < deadline, "{name} never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the process must drain and exit 0 on its own. Then accounts for what `api`
    /// retried: no vend connection was ever dropped, and every 503 was a vend whose user's
    /// access kept changing under it (its log says so), never a failure of another kind.
    pub(super) async fn stop(mut self, api: &Api) {
        crate::support::send_signal(self.child.id(), rustix::process::Signal::TERM);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit {status}: {}", self.log_text());
                break;
            }
            assert!(Instant::now() < deadline, "did not stop on SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = self.log_text();
        let unavailable: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"vend unavailable\""))
            .collect();
        for line in &unavailable {
            assert!(line.contains("kept changing"), "{line}");
        }
        let dropped = api.dropped.load(Ordering::Relaxed);
        let shed = api.shed.load(Ordering::Relaxed);
        assert_eq!(dropped, 0, "dropped vend connections at {}", self.base);
        // Each 503 `api` saw left its line (other clients' 503s did too).
        assert!(
            shed <= unavailable.len() as u64,
            "503s at {}: {log}",
            self.base
        );
        if shed > 0 {
            eprintln!("{}: {shed} vends answered 503 and retried", self.base);
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
