//! Redis for the integration suite: the shared standalone server (it must be running; the
//! suite fails, never skips), throw-away `redis-server` processes on free loopback ports for
//! fault tests, a three-master Redis Cluster started once per test binary, and Sentinel
//! deployments (master, replica, sentinel) shared or private to a test that fails them over.
//!
//! Every process started here is also watched by a small shell loop that shuts it down when
//! the test binary exits, however it exits (statics are never dropped, and a killed test
//! binary runs no destructors).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use auth_broker::domain::vault::Vault;
use auth_broker::store::vault_redis::RedisVault;

/// The standalone Redis the suite uses (`AUTH_BROKER_TEST_REDIS_URL`).
pub fn redis_url() -> String {
    std::env::var("AUTH_BROKER_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A vault on the shared standalone Redis, failing the test when Redis is not there.
pub async fn standalone_vault(op_timeout: Duration) -> RedisVault {
    let url = redis_url();
    let vault = RedisVault::connect(&url, op_timeout)
        .await
        .unwrap_or_else(|e| panic!("bad AUTH_BROKER_TEST_REDIS_URL: {e}"));
    require_reachable(&vault).await;
    vault
}

/// Fails (never skips) when the vault's Redis does not answer within a few seconds.
pub async fn require_reachable(vault: &RedisVault) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match vault.ping().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!(
                "Redis is required by the integration suite ({}): {e}. Start it (see .ci/run) \
                 or set AUTH_BROKER_TEST_REDIS_URL.",
                vault.redacted_url()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A free loopback port below the kernel's ephemeral range, for servers a test kills while
/// others still point at them: `free_port` and every `bind(0)` of the suite draw from the
/// ephemeral range, so no other test's server can start on the dead one's address.
pub fn fixture_port() -> u16 {
    loop {
        let port = 20_000 + rand::random::<u16>() % 10_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral loopback port")
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ab-redis-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// Runs `redis-cli` against the loopback server on `port`; its output when it succeeded.
pub fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Shuts the server on `port` down and removes `dir` once this test binary has exited.
fn watchdog(port: u16, dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         redis-cli -h 127.0.0.1 -p {port} shutdown nosave >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display(),
    );
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// One `redis-server` process on a loopback port, killed when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    dir: PathBuf,
    extra: Vec<String>,
    config: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a standalone server on `port` and waits until it answers.
    pub fn start(port: u16) -> Result<Self, String> {
        Self::spawn(port, &scratch_dir(&format!("s{port}")), &[])
    }

    fn spawn(port: u16, dir: &Path, extra: &[String]) -> Result<Self, String> {
        Self::spawn_with(None, port, dir, extra)
    }

    /// Starts `redis-server [config] --port … extra…` (a config file must come first).
    fn spawn_with(
        config: Option<&Path>,
        port: u16,
        dir: &Path,
        extra: &[String],
    ) -> Result<Self, String> {
        let mut child = Command::new("redis-server")
            .args(config)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join(format!("redis-{port}.log")))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("redis-server cannot be started (is it installed?): {e}"))?;
        watchdog(port, dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            if redis_cli(port, &["ping"]).is_some_and(|o| o.trim() == "PONG") {
                // Another test's server may hold the port (free_port is only a guess): then
                // this one failed to bind and is about to exit.
                let pid = redis_cli(port, &["info", "server"]).and_then(|i| {
                    i.lines()
                        .find_map(|l| l.trim().strip_prefix("process_id:")?.parse::<u32>().ok())
                });
                if pid != Some(child.id()) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("port {port} is served by another process"));
                }
                return Ok(Self {
                    port,
                    child,
                    dir: dir.to_path_buf(),
                    extra: extra.to_vec(),
                    config: config.map(Path::to_path_buf),
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {port} did not answer within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process (SIGSTOP) without closing its connections: it neither reads nor
    /// answers until [`RedisServer::resume`], as a server stalled by its host.
    pub fn pause(&self) {
        crate::support::send_signal(self.child.id(), rustix::process::Signal::STOP);
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        crate::support::send_signal(self.child.id(), rustix::process::Signal::CONT);
    }

    /// Starts the server again on the same port with the same options and directory (a
    /// cluster node comes back with its identity and slots from its nodes file).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let again = Self::spawn_with(self.config.as_deref(), self.port, &self.dir, &self.extra)?;
        *self = again;
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A three-master Redis Cluster on loopback, shared by every test of this binary.
#[derive(Debug, Clone)]
pub struct ClusterFixture {
    /// The masters' client ports.
    pub ports: [u16; 3],
    /// How long starting it took.
    pub started_in: Duration,
}

impl ClusterFixture {
    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`
    pub fn url(&self) -> String {
        self.url_from(0)
    }

    /// The same URL with the seed list rotated to start at seed `first` (so a second client
    /// subscribes to events through another node).
    pub fn url_from(&self, first: usize) -> String {
        let seeds: Vec<String> = (0..3)
            .map(|i| format!("127.0.0.1:{}", self.ports[(first + i) % 3]))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }
}

/// Waits until the node on `port` reports `cluster_state:ok`; says how long it took.
pub fn wait_cluster_ok(port: u16, within: Duration) -> Result<Duration, String> {
    let began = Instant::now();
    loop {
        if redis_cli(port, &["cluster", "info"]).is_some_and(|i| i.contains("cluster_state:ok")) {
            return Ok(began.elapsed());
        }
        if began.elapsed() > within {
            return Err(format!(
                "node {port} not cluster_state:ok within {within:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A cluster of this test's own, for tests that break it; its nodes die with the returned
/// servers.
pub async fn private_cluster() -> (ClusterFixture, Vec<RedisServer>) {
    private_cluster_of(0, &[]).await
}

/// A cluster of this test's own with one replica per master and a one-second node timeout
/// (a crashed master is failed over in a few seconds); its nodes die with the returned servers.
pub async fn private_cluster_with_replicas() -> (ClusterFixture, Vec<RedisServer>) {
    private_cluster_of(1, &["--cluster-node-timeout", "1000"]).await
}

async fn private_cluster_of(
    replicas: usize,
    extra: &'static [&'static str],
) -> (ClusterFixture, Vec<RedisServer>) {
    tokio::task::spawn_blocking(move || {
        let began = Instant::now();
        let mut last_error = String::new();
        for _ in 0..5 {
            match try_start_cluster_with(replicas, extra) {
                Ok((ports, nodes)) => {
                    let started_in = began.elapsed();
                    return (ClusterFixture { ports, started_in }, nodes);
                }
                Err(e) => last_error = e,
            }
        }
        panic!("private Redis Cluster ({replicas} replicas per master): {last_error}")
    })
    .await
    .expect("cluster start-up task")
}

static CLUSTER: OnceLock<Result<ClusterFixture, String>> = OnceLock::new();
static CLUSTER_NODES: Mutex<Vec<RedisServer>> = Mutex::new(Vec::new());

/// The shared cluster, started on first use (a few seconds).
pub async fn cluster() -> ClusterFixture {
    let started = tokio::task::spawn_blocking(|| CLUSTER.get_or_init(start_cluster).clone())
        .await
        .expect("cluster start-up task");
    started.unwrap_or_else(|e| panic!("Redis Cluster fixture: {e}"))
}

fn start_cluster() -> Result<ClusterFixture, String> {
    let began = Instant::now();
    let mut last_error = String::new();
    for _ in 0..5 {
        match try_start_cluster() {
            Ok((ports, nodes)) => {
                CLUSTER_NODES
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(nodes);
                let fixture = ClusterFixture {
                    ports,
                    started_in: began.elapsed(),
                };
                eprintln!(
                    "redis cluster {} up in {:?}",
                    fixture.url(),
                    fixture.started_in
                );
                return Ok(fixture);
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn try_start_cluster() -> Result<([u16; 3], Vec<RedisServer>), String> {
    try_start_cluster_with(0, &[])
}

/// Three masters with `replicas` replicas each; every node gets `extra` options too. Gives
/// the masters' ports and every server.
fn try_start_cluster_with(
    replicas: usize,
    extra: &[&str],
) -> Result<([u16; 3], Vec<RedisServer>), String> {
    let dir = scratch_dir("cluster");
    let mut nodes = Vec::new();
    for _ in 0..3 * (1 + replicas) {
        // The cluster bus needs a second port; the default (port + 10000) may not exist.
        let (port, bus) = (free_port(), free_port());
        let mut options = vec![
            "--cluster-enabled".to_string(),
            "yes".into(),
            "--cluster-config-file".into(),
            format!("nodes-{port}.conf"),
            "--cluster-port".into(),
            bus.to_string(),
        ];
        options.extend(extra.iter().map(|o| o.to_string()));
        nodes.push(RedisServer::spawn(port, &dir, &options)?);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let masters: Vec<u16> = nodes
        .iter()
        .map(|n| n.port)
        .filter(|p| redis_cli(*p, &["role"]).is_some_and(|r| r.starts_with("master")))
        .collect();
    let ports: [u16; 3] = masters
        .try_into()
        .map_err(|m| format!("expected 3 masters, found {m:?}"))?;
    for n in &nodes {
        wait_cluster_ok(n.port, Duration::from_secs(30))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in nodes.iter().filter(|n| !ports.contains(&n.port)) {
        while !redis_cli(n.port, &["info", "replication"])
            .is_some_and(|i| i.contains("master_link_status:up"))
        {
            if Instant::now() > deadline {
                return Err(format!("replica {} never synchronised", n.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok((ports, nodes))
}

/// A Sentinel deployment on loopback: one master, one replica, one sentinel (quorum 1,
/// `down-after-milliseconds` 1000, `failover-timeout` 5000).
#[derive(Debug, Clone)]
pub struct SentinelFixture {
    /// The master's port at start (after a failover the replica's is the master).
    pub master_port: u16,
    /// The replica's port at start.
    pub replica_port: u16,
    /// The sentinel's port.
    pub sentinel_port: u16,
    /// The monitored master name.
    pub name: String,
    /// How long starting it took.
    pub started_in: Duration,
}

impl SentinelFixture {
    /// `redis+sentinel://127.0.0.1:S/<name>`
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{}",
            self.sentinel_port, self.name
        )
    }

    /// The same deployment behind a dead sentinel listed first (clients must skip it).
    pub fn url_behind_dead_sentinel(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{}",
            free_port(),
            self.sentinel_port,
            self.name
        )
    }

    /// The port the sentinel names as master now.
    pub fn current_master(&self) -> Option<u16> {
        let out = redis_cli(
            self.sentinel_port,
            &["sentinel", "get-master-addr-by-name", &self.name],
        )?;
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Waits until the master has replicated every write to the replica (`WAIT 1`).
    pub fn wait_replicated(&self, within: Duration) -> Result<(), String> {
        let master = self
            .current_master()
            .ok_or("the sentinel names no master")?;
        let ms = within.as_millis().to_string();
        match redis_cli(master, &["wait", "1", &ms]) {
            Some(out) if out.trim() == "1" => Ok(()),
            other => Err(format!("WAIT 1 {ms} on {master}: {other:?}")),
        }
    }

    /// `SENTINEL FAILOVER <name>`, retried while the sentinel has no replica it can promote
    /// yet; returns once the sentinel names another master.
    pub fn failover(&self, within: Duration) -> Result<u16, String> {
        let began = Instant::now();
        let before = self
            .current_master()
            .ok_or("the sentinel names no master")?;
        let mut last = String::new();
        while began.elapsed() < within {
            if let Some(now) = self.current_master().filter(|p| *p != before) {
                return Ok(now);
            }
            if last != "OK" {
                last = redis_cli(self.sentinel_port, &["sentinel", "failover", &self.name])
                    .unwrap_or_default()
                    .trim()
                    .to_string();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "no failover within {within:?} (last answer {last:?})"
        ))
    }
}

fn start_sentinel() -> Result<(SentinelFixture, Vec<RedisServer>), String> {
    let began = Instant::now();
    let dir = scratch_dir("sentinel");
    let name = format!("vault-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // Either node may serve a full sync: start it at once (Redis waits 5 s by default).
    let no_delay = ["--repl-diskless-sync-delay".to_string(), "0".into()];
    let master = RedisServer::spawn(fixture_port(), &dir, &no_delay)?;
    let mut replica_of = vec!["--replicaof".to_string(), "127.0.0.1".into()];
    replica_of.push(master.port.to_string());
    replica_of.extend(no_delay);
    let replica = RedisServer::spawn(fixture_port(), &dir, &replica_of)?;
    wait_until(Duration::from_secs(10), "the replica to sync", || {
        redis_cli(replica.port, &["info", "replication"])
            .is_some_and(|i| i.contains("master_link_status:up"))
    })?;
    // Sentinel rewrites its config file: it must be writable, in the scratch directory.
    let sentinel_port = fixture_port();
    let config = dir.join(format!("sentinel-{sentinel_port}.conf"));
    std::fs::write(
        &config,
        format!(
            "sentinel monitor {name} 127.0.0.1 {master} 1\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n",
            master = master.port
        ),
    )
    .map_err(|e| format!("write {}: {e}", config.display()))?;
    let sentinel = RedisServer::spawn_with(
        Some(&config),
        sentinel_port,
        &dir,
        &["--sentinel".to_string()],
    )?;
    // Ready when the sentinel sees the master and a healthy replica it could promote.
    wait_until(
        Duration::from_secs(15),
        "the sentinel to see the replica",
        || {
            redis_cli(sentinel_port, &["sentinel", "replicas", &name]).is_some_and(|r| {
                r.contains(&format!("127.0.0.1:{}", replica.port))
                    && r.contains("flags\nslave\n")
                    && r.contains("master-link-status\nok\n")
            })
        },
    )?;
    let fixture = SentinelFixture {
        master_port: master.port,
        replica_port: replica.port,
        sentinel_port,
        name,
        started_in: began.elapsed(),
    };
    Ok((fixture, vec![master, replica, sentinel]))
}

fn wait_until(within: Duration, what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let began = Instant::now();
    while !ready() {
        if began.elapsed() > within {
            return Err(format!("timed out after {within:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A Sentinel deployment of this test's own, for tests that fail it over; its processes die
/// with the returned servers.
pub async fn private_sentinel() -> (SentinelFixture, Vec<RedisServer>) {
    tokio::task::spawn_blocking(|| {
        start_sentinel()
            .or_else(|e| {
                eprintln!("redis sentinel start-up failed ({e}); starting it again");
                start_sentinel()
            })
            .unwrap_or_else(|e| panic!("private Redis Sentinel: {e}"))
    })
    .await
    .expect("sentinel start-up task")
}

static SENTINEL: OnceLock<Result<SentinelFixture, String>> = OnceLock::new();
static SENTINEL_NODES: Mutex<Vec<RedisServer>> = Mutex::new(Vec::new());

/// The shared Sentinel deployment, started on first use (about a second); never failed over.
pub async fn sentinel() -> SentinelFixture {
    let started = tokio::task::spawn_blocking(|| {
        SENTINEL
            .get_or_init(|| {
                // A start-up that misses one of its deadlines on a loaded machine is tried once
                // more on fresh ports; a second failure fails every test that needs it.
                let (fixture, nodes) = start_sentinel().or_else(|e| {
                    eprintln!("redis sentinel start-up failed ({e}); starting it again");
                    start_sentinel()
                })?;
                SENTINEL_NODES
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(nodes);
                eprintln!(
                    "redis sentinel {} up in {:?}",
                    fixture.url(),
                    fixture.started_in
                );
                Ok(fixture)
            })
            .clone()
    })
    .await
    .expect("sentinel start-up task");
    started.unwrap_or_else(|e| panic!("Redis Sentinel fixture: {e}"))
}
