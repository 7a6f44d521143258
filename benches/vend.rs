//! Gateway vend benchmark: the load generators behind `scripts/bench-vend.sh`.
//!
//! The script starts a release broker as its own process (PostgreSQL + Redis), measures the
//! raw Redis baseline and the closed-loop vend throughput (`wrk`), and calls this binary for
//! the parts that need a purpose-built client:
//!
//! - `setup`: provisions the users the load runs vend for (SCIM), puts them in the group the
//!   config grants `github` to, vends once for each so every later vend is warm, and writes
//!   their ids to a file.
//! - `rate`: an open-loop client. Requests are scheduled at fixed intervals, handed round-robin
//!   to keep-alive connections, and latency is measured from the *scheduled* send time, so a
//!   slow response delays the requests queued behind it and that delay is counted (no
//!   coordinated omission). The end of a request is the kernel's receive timestamp of the
//!   response (`SO_TIMESTAMPNS`), so the client's own wake-up delay is not charged to the
//!   server; the time the client had read it is reported too.
//!
//!   The client shares the machine with the broker, so it keeps out of its way and keeps its
//!   own delays out of the figure the target is read on (the *server* figure):
//!   - each connection's exchanges are replayed on a timeline without the client's send
//!     delays: each keeps its time on the wire (send to receive timestamp) and starts when it
//!     was due or when the previous one would have ended, whichever is later;
//!   - it runs in `SCHED_BATCH` (`--sched normal` to change), so its wake-ups do not preempt
//!     the broker.
//!
//!   Schedule and connections share one thread (a `timerfd` wakes the schedule). Prints
//!   p50 / p99 / p99.9 of both figures. Against a `redis://` base it sends raw `GET`s instead:
//!   the floor of this client on this machine.
//! - `deactivation`: a user holding one token on each of N connectors is deactivated with the
//!   Okta PATCH (`{"op":"replace","value":{"active":false}}`); the PATCH latency is measured,
//!   the vault is checked to be empty of the user's tokens when the response arrives, the user
//!   is reactivated and the N tokens are vended again; repeated. Prints p50 / p99.
//!
//! Each command ends with one line `RESULT <command> key=value …` for the script to read.
//! Run with no command (as `cargo test --all-targets` does) it only checks its own parsers.
//!
//! ```sh
//! cargo bench --bench vend -- rate --base http://127.0.0.1:8080 --org bench \
//!     --gateway-key ab_gw_… --users users.txt --rate 15000 --duration 10
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[path = "vend/cpu_gaps.rs"]
mod cpu_gaps;
#[path = "vend/deactivation.rs"]
mod deactivation;
#[path = "vend/provision.rs"]
mod provision;
#[path = "vend/self_check.rs"]
mod self_check;
#[path = "vend/stamped.rs"]
mod stamped;
#[path = "vend/wire.rs"]
mod wire;

use deactivation::deactivation;
use provision::setup;
use self_check::self_check;
use wire::*;

const USAGE: &str = "\
usage: vend <command> [--flag value]...
  setup        --base URL --org ORG --scim-token T --gateway-key K --users N --out FILE
               [--group Engineering] [--connector github]
  rate         --base http://HOST:PORT --org ORG --gateway-key K --users FILE --rate PER_SEC
               [--duration 10] [--warmup 1] [--connections 50] [--connector github]
               [--sched batch|normal]
  rate         --base redis://HOST:PORT[/DB] --key KEY --rate PER_SEC [--duration 10]
               [--warmup 1] [--connections 50] [--sched batch|normal]
               (the same client against raw Redis GETs)
  deactivation --base URL --org ORG --scim-token T --gateway-key K --redis-url URL
               [--iterations 200] [--tokens 20] [--group Offboarding] [--prefix svc]";

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; flags are `--name value` pairs after the command.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(command) = args.first().filter(|a| !a.starts_with('-')).cloned() else {
        self_check();
        println!(
            "vend: parsers ok; nothing to measure without a command (see scripts/bench-vend.sh)"
        );
        return ExitCode::SUCCESS;
    };
    let flags = match Flags::parse(&args[1..]) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vend: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = match command.as_str() {
        "setup" => rt.block_on(setup(&flags)),
        "rate" => rate(&flags),
        "deactivation" => rt.block_on(deactivation(&flags)),
        other => Err(format!("unknown command {other}\n{USAGE}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vend {command}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs.
struct Flags(HashMap<String, String>);

impl Flags {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(name) = it.next() {
            let Some(key) = name.strip_prefix("--") else {
                return Err(format!("unexpected argument {name}"));
            };
            let value = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_string(), value.clone());
        }
        Ok(Self(map))
    }

    fn get(&self, key: &str) -> Result<&str, String> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required"))
    }

    fn or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.0.get(key).map(String::as_str).unwrap_or(default)
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{key}: {v} is not a number")),
        }
    }
}

/// The value at quantile `q` of ascending `sorted` (nearest rank).
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(nanos: u64) -> f64 {
    nanos as f64 / 1e6
}

/// Per-connection results of a `rate` run.
#[derive(Default)]
struct Tally {
    /// Latencies (ns) of 200s after the warm-up, from the scheduled send time to the kernel's
    /// receive timestamp of the response.
    latencies: Vec<u64>,
    /// The same on a timeline without the client's own delays: each exchange keeps its time
    /// on the wire (send to kernel receive timestamp) but starts when it was due or when the
    /// connection's previous exchange would have ended, whichever is later. What a gateway
    /// with a CPU of its own would see.
    server_latencies: Vec<u64>,
    /// The same as `latencies`, to the moment the client had read the whole response.
    read_latencies: Vec<u64>,
    /// How late (ns) each measured request started to be written.
    lags: Vec<u64>,
    /// Per 200: (due, server-figure latency, time on the wire), ns, for `--timeline`.
    trace: Vec<(u64, u64, u64)>,
    /// Responses that carried a kernel receive timestamp.
    stamped: u64,
    /// Non-200 statuses after the warm-up.
    statuses: BTreeMap<u16, u64>,
    /// Failed exchanges after the warm-up, with the first reason.
    failures: u64,
    first_failure: Option<String>,
    /// Requests completed after the warm-up.
    measured: u64,
}

fn rate(f: &Flags) -> Result<(), String> {
    let base = f.get("base")?.trim_end_matches('/');
    let per_sec: f64 = f.num("rate", 0.0)?;
    let duration: f64 = f.num("duration", 10.0)?;
    let warmup: f64 = f.num("warmup", 1.0)?;
    let connections: usize = f.num("connections", 50)?;
    if per_sec < 1.0 || duration <= 0.0 || connections == 0 {
        return Err("--rate, --duration and --connections must be positive".into());
    }
    // http:// is the broker; redis:// is the same schedule and client against raw Redis
    // GETs, the floor this machine and this client give any server at that rate.
    let (host, requests, resp, select) = if let Some(host) = base.strip_prefix("redis://") {
        let (host, db) = match host.split_once('/') {
            Some((h, db)) => (h, db.parse::<u32>().map_err(|_| "bad Redis db")?),
            None => (host, 0),
        };
        let key = f.get("key")?;
        (
            host.to_string(),
            vec![resp_command(&["GET", key])],
            true,
            db,
        )
    } else {
        let host = base
            .strip_prefix("http://")
            .ok_or("--base must be an http:// or redis:// URL")?;
        let org = f.get("org")?;
        let key = f.get("gateway-key")?;
        let users_file = f.get("users")?;
        let connector = f.or("connector", "github");
        let users: Vec<String> = std::io::BufReader::new(
            std::fs::File::open(users_file).map_err(|e| format!("{users_file}: {e}"))?,
        )
        .lines()
        .map_while(Result::ok)
        .filter(|l| !l.trim().is_empty())
        .collect();
        if users.is_empty() {
            return Err(format!("{users_file} lists no users"));
        }
        let requests = users
            .iter()
            .map(|u| token_request(host, key, org, u, connector))
            .collect();
        (host.to_string(), requests, false, 0)
    };
    let requests = Arc::new(requests);

    // One thread does it all: the schedule wakes on a timerfd and hands each due request to
    // its connection's task on the same thread, so the instrument costs the machine as
    // little CPU and as few wake-ups as it can.
    let interval_ns = 1e9 / per_sec;
    let total = ((warmup + duration) * per_sec).round() as usize;
    let warm_count = (warmup * per_sec).round() as usize;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("client runtime: {e}"))?;
    let wires = rt.block_on(async {
        let mut wires = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut w = Wire::new(&host, resp);
            w.connect()
                .await
                .map_err(|e| format!("connect {host}: {e}"))?;
            if select != 0 {
                w.select(select).await?;
            }
            wires.push(w);
        }
        Ok::<_, String>(wires)
    })?;

    // What this machine's scheduler alone adds to a wake-up, for reading the tail below.
    let jitter = timer_jitter(Duration::from_secs(1));
    // What the machine takes from a thread that always wants a CPU, just before the run.
    let gaps = cpu_gaps::probe(Duration::from_secs(1));
    // Sharing the machine with the broker, the client must not preempt it on every wake-up;
    // its own delays are kept out of the server figure below either way.
    match f.or("sched", "batch") {
        "batch" => {
            stamped::yield_on_wakeup(libc::SCHED_BATCH).map_err(|e| format!("SCHED_BATCH: {e}"))?
        }
        "idle" => {
            stamped::yield_on_wakeup(libc::SCHED_IDLE).map_err(|e| format!("SCHED_IDLE: {e}"))?
        }
        "normal" => {}
        other => return Err(format!("--sched {other}: expected batch or normal")),
    }
    let histogram_before = if resp {
        Err("no histogram".to_string())
    } else {
        broker_histogram(&host)
    };
    let (tallies, scheduled_end) =
        rt.block_on(open_loop(wires, requests, interval_ns, total, warm_count))?;
    let drained_ns = stamped::real_ns().saturating_sub(scheduled_end);
    let histogram_after = match &histogram_before {
        Ok(_) => broker_histogram(&host),
        Err(e) => Err(e.clone()),
    };
    let inside = match (histogram_before, histogram_after) {
        (Ok(before), Ok(after)) => Some(
            after
                .iter()
                .zip(&before)
                .map(|((le, a), (_, b))| (*le, a.saturating_sub(*b)))
                .collect::<Vec<_>>(),
        ),
        _ => None,
    };
    let mut all = Tally::default();
    for t in tallies {
        all.latencies.extend(t.latencies);
        all.read_latencies.extend(t.read_latencies);
        all.server_latencies.extend(t.server_latencies);
        all.trace.extend(t.trace);
        all.lags.extend(t.lags);
        all.stamped += t.stamped;
        for (s, n) in t.statuses {
            *all.statuses.entry(s).or_default() += n;
        }
        all.failures += t.failures;
        if all.first_failure.is_none() {
            all.first_failure = t.first_failure;
        }
        all.measured += t.measured;
    }
    all.latencies.sort_unstable();
    all.read_latencies.sort_unstable();
    all.server_latencies.sort_unstable();
    if let Ok(path) = f.get("timeline") {
        all.trace.sort_unstable();
        let t0 = all.trace.first().map(|t| t.0).unwrap_or(0);
        let mut csv = String::from("due_us,server_us,wire_us\n");
        for (due, server, wire) in &all.trace {
            csv.push_str(&format!(
                "{},{},{}\n",
                (due - t0) / 1000,
                server / 1000,
                wire / 1000
            ));
        }
        std::fs::write(path, csv).map_err(|e| format!("{path}: {e}"))?;
    }
    all.lags.sort_unstable();
    let lags = &all.lags;
    let reads = &all.read_latencies;
    let served = &all.server_latencies;
    let l = &all.latencies;
    let (p50, p90, p99, p999) = (
        percentile(l, 0.50),
        percentile(l, 0.90),
        percentile(l, 0.99),
        percentile(l, 0.999),
    );
    let max = l.last().copied().unwrap_or(0);
    let non_ok: u64 = all.statuses.values().sum();
    let achieved = all.measured as f64 / (duration + drained_ns as f64 / 1e9);
    println!(
        "rate: {per_sec:.0}/s scheduled over {connections} connections for {duration}s \
         (+{warmup}s warm-up, not counted); {} measured, {:.0}/s completed",
        all.measured, achieved
    );
    println!(
        "rate: latency from scheduled send to the response's arrival at the client socket \
         (kernel receive timestamp, {} of {} stamped): p50 {:.3} ms, p90 {:.3} ms, \
         p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        all.stamped,
        l.len(),
        ms(p50),
        ms(p90),
        ms(p99),
        ms(p999),
        ms(max)
    );
    println!(
        "rate: latency from scheduled send to the client having read the response (adds the \
         client's own wake-up): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
        ms(percentile(reads, 0.50)),
        ms(percentile(reads, 0.99)),
        ms(percentile(reads, 0.999)),
    );
    println!(
        "rate: server figure (each connection's exchanges replayed without the client's own \
         send delays, each keeping its time on the wire): p50 {:.3} ms, p99 {:.3} ms, \
         p99.9 {:.3} ms, max {:.3} ms",
        ms(percentile(served, 0.50)),
        ms(percentile(served, 0.99)),
        ms(percentile(served, 0.999)),
        ms(served.last().copied().unwrap_or(0)),
    );
    println!(
        "rate: client send lag (included in both): p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms; \
         last response {:.3} ms after the last scheduled send",
        ms(percentile(lags, 0.99)),
        ms(percentile(lags, 0.999)),
        ms(lags.last().copied().unwrap_or(0)),
        drained_ns as f64 / 1e6
    );
    println!(
        "rate: machine timer jitter before the run (200 us sleeps, idle broker): p99 {:.3} ms, \
         p99.9 {:.3} ms, max {:.3} ms",
        ms(percentile(&jitter, 0.99)),
        ms(percentile(&jitter, 0.999)),
        ms(jitter.last().copied().unwrap_or(0)),
    );
    println!(
        "rate: CPU taken from a spinning thread pinned to each CPU, 1 s before the run: \
         {:.1} ms per CPU-second, {:.1} gaps of 1 ms or more per second, longest {:.3} ms",
        gaps.lost_ms_per_s, gaps.over_1ms_per_s, gaps.max_ms
    );
    let mut inside_shares = String::new();
    if let Some(buckets) = &inside {
        let count = buckets.last().map(|(_, n)| *n).unwrap_or(0).max(1);
        let share = |limit: f64| {
            buckets
                .iter()
                .find(|(le, _)| (*le - limit).abs() < 1e-9)
                .map(|(_, n)| 100.0 * *n as f64 / count as f64)
                .unwrap_or(f64::NAN)
        };
        let (s1, s2, s5) = (share(0.001), share(0.002), share(0.005));
        // The histogram is cumulative: the first bound holding 99 % of the vends bounds the p99.
        let p99_le_ms = buckets
            .iter()
            .find(|(_, n)| *n as f64 >= 0.99 * count as f64)
            .map_or(f64::NAN, |(le, _)| le * 1000.0);
        println!(
            "rate: time inside the broker's handler (its /metrics histogram): p99 <= {p99_le_ms:.2} ms, \
             {s1:.2} % <= 1 ms, {s2:.2} % <= 2 ms, {s5:.2} % <= 5 ms"
        );
        inside_shares = format!(
            " inside_p99_le_ms={p99_le_ms:.2} inside_le1ms_pct={s1:.2} inside_le2ms_pct={s2:.2} \
             inside_le5ms_pct={s5:.2}"
        );
    }
    if non_ok > 0 || all.failures > 0 {
        println!(
            "rate: {non_ok} non-200 responses {:?}, {} failed exchanges{}",
            all.statuses,
            all.failures,
            all.first_failure
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    println!(
        "RESULT rate target={per_sec:.0} measured={} ok={} non_ok={non_ok} failed={} \
         p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} lag_p99_ms={:.3} \
         read_p99_ms={:.3} server_p50_ms={:.3} server_p99_ms={:.3} server_p999_ms={:.3} \
         stamped={} jitter_p99_ms={:.3} jitter_max_ms={:.3} cpu_lost_ms_per_s={:.1} \
         cpu_gaps_1ms_per_s={:.1} cpu_gap_max_ms={:.3}{inside_shares}",
        all.measured,
        l.len(),
        all.failures,
        ms(p50),
        ms(p90),
        ms(p99),
        ms(p999),
        ms(max),
        ms(percentile(lags, 0.99)),
        ms(percentile(reads, 0.99)),
        ms(percentile(served, 0.50)),
        ms(percentile(served, 0.99)),
        ms(percentile(served, 0.999)),
        all.stamped,
        ms(percentile(&jitter, 0.99)),
        ms(jitter.last().copied().unwrap_or(0)),
        gaps.lost_ms_per_s,
        gaps.over_1ms_per_s,
        gaps.max_ms,
    );
    Ok(())
}

/// Runs the schedule: request i is due at `start + i * interval` on connection i % n. Returns
/// each connection's tally and when the last request was due (ns, `CLOCK_REALTIME`).
async fn open_loop(
    wires: Vec<Wire>,
    requests: Arc<Vec<Vec<u8>>>,
    interval_ns: f64,
    total: usize,
    warm_count: usize,
) -> Result<(Vec<Tally>, u64), String> {
    let mut senders = Vec::with_capacity(wires.len());
    let mut tasks = Vec::with_capacity(wires.len());
    for mut wire in wires {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, usize, bool)>();
        senders.push(tx);
        let requests = requests.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            // When this connection would have been free had the client never waited for a
            // CPU: each exchange keeps the time it took on the wire, but starts at its due
            // time or when the previous one would have ended, whichever is later.
            let mut ideal_free = 0u64;
            while let Some((due, user, measured)) = rx.recv().await {
                let sent = stamped::real_ns();
                let outcome = wire.exchange(&requests[user]).await;
                let read = stamped::real_ns();
                // A stamp outside [sent, read] would be a clock mix-up: use the read.
                let arrived = wire.arrived.filter(|a| (sent..=read).contains(a));
                let ideal_end = ideal_end(due, ideal_free, sent, arrived.unwrap_or(read));
                ideal_free = ideal_end;
                if measured {
                    t.record(due, sent, read, arrived, ideal_end, outcome);
                }
            }
            t
        }));
    }
    let timer = stamped::Timer::new().map_err(|e| format!("timerfd: {e}"))?;
    let start = stamped::real_ns() + 20_000_000;
    let due = |i: usize| start + (i as f64 * interval_ns) as u64;
    let n = senders.len();
    let mut i = 0usize;
    while i < total {
        timer
            .until(due(i))
            .await
            .map_err(|e| format!("timerfd: {e}"))?;
        let now = stamped::real_ns();
        while i < total && due(i) <= now {
            let _ = senders[i % n].send((due(i), i % requests.len(), i >= warm_count));
            i += 1;
        }
    }
    drop(senders);
    let mut tallies = Vec::with_capacity(tasks.len());
    for t in tasks {
        tallies.push(t.await.map_err(|e| format!("connection task: {e}"))?);
    }
    Ok((tallies, due(total)))
}

/// When an exchange sent at `sent` and answered at `end` would have been answered by a client
/// that never waited for a CPU: it keeps its time on the wire but starts when it was `due` or
/// when the connection's previous exchange would have ended (`free`), whichever is later.
fn ideal_end(due: u64, free: u64, sent: u64, end: u64) -> u64 {
    due.max(free) + end.saturating_sub(sent)
}

impl Tally {
    /// Counts one measured exchange: due at `due`, sent at `sent`, read at `read`, its
    /// response's kernel receive timestamp `arrived`, and when it would have ended had the
    /// client never waited for a CPU (`ideal_end`).
    fn record(
        &mut self,
        due: u64,
        sent: u64,
        read: u64,
        arrived: Option<u64>,
        ideal_end: u64,
        outcome: Outcome,
    ) {
        self.measured += 1;
        self.lags.push(sent.saturating_sub(due));
        match outcome {
            Outcome::Ok => {
                self.stamped += u64::from(arrived.is_some());
                let end = arrived.unwrap_or(read);
                self.latencies.push(end.saturating_sub(due));
                self.server_latencies.push(ideal_end.saturating_sub(due));
                self.trace
                    .push((due, ideal_end.saturating_sub(due), end.saturating_sub(sent)));
                self.read_latencies.push(read.saturating_sub(due));
            }
            Outcome::Status(s) => *self.statuses.entry(s).or_default() += 1,
            Outcome::Failed(e) => {
                self.failures += 1;
                self.first_failure.get_or_insert(e);
            }
        }
    }
}

/// Oversleep of 200 us sleeps on this thread for `span`, ascending (ns).
fn timer_jitter(span: Duration) -> Vec<u64> {
    let nap = Duration::from_micros(200);
    let end = Instant::now() + span;
    let mut out = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        std::thread::sleep(nap);
        out.push(t.elapsed().saturating_sub(nap).as_nanos() as u64);
    }
    out.sort_unstable();
    out
}

/// The broker's vend latency histogram from `/metrics`: (upper bound in seconds, count).
fn broker_histogram(host: &str) -> Result<Vec<(f64, u64)>, String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(host).map_err(|e| format!("metrics: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| format!("metrics: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("metrics: {e}"))?;
    Ok(parse_histogram(&text))
}

/// `auth_broker_vend_seconds_bucket{le="0.002"} 123` lines, `+Inf` as infinity.
fn parse_histogram(text: &str) -> Vec<(f64, u64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("auth_broker_vend_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// deactivation
