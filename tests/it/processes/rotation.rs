//! `auth-broker keys rotate` re-seals the vault while a process serves under continuous
//! vending, and refuses (exit 1) when a record names a key the ring lacks; what upstream
//! connectors seal is in `sealed`. `auth-broker keys rotate-signing` gives a running process
//! a new signing key without a restart.

use super::*;
use crate::support::{jwks_kids, kid_of};

mod sealed;

/// One vend of the background load.
struct Vended {
    at: Instant,
    user: usize,
    connector: &'static str,
    status: u16,
    body: Value,
    token: String,
    active: bool,
}

/// Vends round-robin over users and connectors until `stop`, introspecting every token.
fn vend_continuously(
    api: Api,
    users: Arc<Vec<String>>,
    worker: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Vended>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut i = worker;
        while !stop.load(Ordering::Relaxed) {
            let user = i % users.len();
            let connector = if (i / users.len()).is_multiple_of(2) {
                "github"
            } else {
                "jira"
            };
            i += 1;
            let (status, body) = api.vend(&users[user], connector).await;
            let token = body["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let active = status == 200 && api.active(&token).await;
            out.push(Vended {
                at: Instant::now(),
                user,
                connector,
                status,
                body,
                token,
                active,
            });
        }
        out
    })
}

/// Runs `auth-broker keys <args…> --config <config>` with only the file configuring it;
/// returns the exit code and stdout and stderr.
async fn keys_cli(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("keys")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("AUTH_BROKER") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("the keys command finishes")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `auth-broker keys rotate --config`.
async fn rotate(config: &Path) -> (Option<i32>, String, String) {
    keys_cli(&["rotate"], config).await
}

/// The figures of the rotate summary line (`re-sealed A record(s), B already current, C
/// skipped (changed meanwhile), D unreadable; E signing key(s) re-sealed`).
#[derive(Debug)]
struct Report {
    resealed: u64,
    unreadable: u64,
    signing_keys: u64,
}

fn report(stdout: &str) -> Report {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("re-sealed "))
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 5, "{line}");
    Report {
        resealed: n[0],
        unreadable: n[3],
        signing_keys: n[4],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_runs_while_a_process_serves() {
    const USERS: usize = 12;
    let d = Deployment::new().await;
    let only_k1 = d.config("k1", &["k1"], "k1");
    let both = d.config("k1-k2", &["k1", "k2"], "k2");
    let only_k2 = d.config("k2", &["k2"], "k2");

    // Tokens and the signing key sealed under k1.
    let p1 = Broker::start(&only_k1, &d.dir, "k1").await;
    let api = Api::new(&d, &p1);
    let mut users = Vec::new();
    let mut github = Vec::new();
    for n in 0..USERS {
        let id = api.engineer(&format!("user{n}@rotate.example")).await;
        github.push(api.token(&id, "github").await);
        api.token(&id, "jira").await;
        users.push(id);
    }
    let sealed = sealed_tokens(&d.redis_url, &d.org).await;
    assert_eq!(sealed.len(), 2 * USERS);
    assert!(sealed.iter().all(|(_, _, s)| key_id(s) == "k1"));
    p1.stop(&api).await;

    // Step 1 of the README procedure: every replica restarts knowing k2, sealing with it.
    let p2 = Broker::start(&both, &d.dir, "k1-k2").await;
    let api = Api::new(&d, &p2);
    for (u, t) in users.iter().zip(&github) {
        assert_eq!(&api.token(u, "github").await, t, "k1 records still open");
    }

    // Step 2: `keys rotate` while vends run.
    let users = Arc::new(users);
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|w| vend_continuously(api.clone(), users.clone(), w, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let (code, out, err) = rotate(&both).await;
    let finished = Instant::now();
    assert_eq!(code, Some(0), "keys rotate while serving: {out}{err}");
    let r = report(&out);
    assert!(r.resealed >= USERS as u64, "{r:?}");
    assert_eq!(r.unreadable, 0, "{r:?}");
    assert_eq!(r.signing_keys, 1, "the signing key sealed under k1: {r:?}");
    // Jira tokens are re-minted (stored) after the rotation too.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut vends = Vec::new();
    for h in load {
        vends.extend(tokio::time::timeout(WAIT, h).await.unwrap().unwrap());
    }
    for v in &vends {
        assert_eq!(v.status, 200, "a vend during rotation: {}", v.body);
        assert!(
            v.active,
            "a vended {} token does not introspect",
            v.connector
        );
        if v.connector == "github" {
            assert_eq!(v.token, github[v.user], "github token changed");
        }
    }
    let during = vends
        .iter()
        .filter(|v| v.at > started && v.at < finished)
        .count();
    let after = |c: &str| {
        vends
            .iter()
            .filter(|v| v.at > finished && v.connector == c)
            .count()
    };
    assert!(during > 0, "no vend overlapped the rotation");
    eprintln!(
        "keys rotate took {:?}; {during} of {} background vends overlapped it",
        finished - started,
        vends.len()
    );
    assert!(after("github") > 0 && after("jira") > 0);

    let (code, out, err) = rotate(&both).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(report(&out).resealed, 0, "idempotent: {out}");
    let sealed = sealed_tokens(&d.redis_url, &d.org).await;
    assert_eq!(sealed.len(), 2 * USERS);
    for (key, field, s) in &sealed {
        assert_eq!(key_id(s), "k2", "{key} {field} still sealed under k1");
    }
    p2.stop(&api).await;

    // Step 3: k1 removed. The signing key and every record open: the same tokens, not re-minted.
    let p3 = Broker::start(&only_k2, &d.dir, "k2").await;
    let api = Api::new(&d, &p3);
    for (u, t) in users.iter().zip(&github) {
        assert_eq!(&api.token(u, "github").await, t, "re-minted: not re-sealed");
        assert!(api.active(t).await);
        api.token(u, "jira").await;
    }
    p3.stop(&api).await;

    // A record under a key the ring lacks (k1, removed): reported, left alone, exit 1.
    let mut c = redis_conn(&d.redis_url).await;
    let (key, field, mut bytes) = sealed.into_iter().next().unwrap();
    assert_eq!(&bytes[1..4], b"\x02k2");
    bytes[3] = b'1';
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg(&field)
        .arg(&bytes)
        .query_async(&mut c)
        .await
        .unwrap();
    let (code, out, err) = rotate(&only_k2).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(report(&out).unreadable, 1, "{out}");
    assert!(err.contains("could not be opened"), "{err}");
    let kept: Vec<u8> = redis::cmd("HGET")
        .arg(&key)
        .arg(&field)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(kept, bytes, "the unreadable record is left untouched");
    d.remove().await;
}

/// `auth-broker keys rotate-signing --org <org> --config`.
async fn rotate_signing(config: &Path, org: &str) -> (Option<i32>, String, String) {
    keys_cli(&["rotate-signing", "--org", org], config).await
}

/// The kids of the org's JWKS at a process.
async fn published_kids(api: &Api) -> Vec<String> {
    let (s, jwks) = call(
        api.http
            .get(format!("{}/orgs/{}/jwks.json", api.base, api.org)),
    )
    .await;
    assert_eq!(s, 200, "{jwks}");
    jwks_kids(&jwks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_signing_gives_a_running_process_a_key_that_signs_after_the_lead() {
    let d = Deployment::new().await;
    let cfg = d.config("signing", &["k1"], "k1");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[broker]\n",
        "[broker]\nsigning_key_publish_lead_secs = 3\nsigning_key_poll_interval_ms = 200\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let p = Broker::start(&cfg, &d.dir, "signing").await;
    let api = Api::new(&d, &p);
    let ann = api.engineer("ann@signing.example").await;
    let before = api.token(&ann, "github").await;
    let old = published_kids(&api).await;
    assert_eq!(old, [kid_of(&before)]);

    let (code, out, err) = rotate_signing(&cfg, &d.org).await;
    assert_eq!(code, Some(0), "{out}{err}");
    let new = out
        .split_whitespace()
        .skip_while(|w| *w != "key")
        .nth(1)
        .unwrap_or_else(|| panic!("no new kid in {out:?}"))
        .to_string();
    assert!(
        out.contains("publishes it at its next reload, and it signs from"),
        "{out}"
    );
    // The running process publishes it within a reload, and goes on signing with the old key
    // until the lead has passed.
    let published = crate::upstream::eventually(Duration::from_secs(2), || async {
        published_kids(&api).await.contains(&new)
    })
    .await;
    assert!(published, "{:?}", published_kids(&api).await);
    assert_eq!(kid_of(&api.token(&ann, "jira").await), old[0], "too early");
    let (code, out, _) = rotate_signing(&cfg, &d.org).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("under way") && out.contains(&new), "{out}");

    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        kid_of(&api.token(&ann, "jira").await),
        new,
        "signs after the lead"
    );
    let kids = published_kids(&api).await;
    assert!(kids.contains(&old[0]) && kids.contains(&new), "{kids:?}");
    assert!(
        api.active(&before).await,
        "tokens of the old key still verify"
    );

    let (code, _, err) = rotate_signing(&cfg, "no-such-org").await;
    assert_eq!(code, Some(1));
    assert!(err.contains("no org no-such-org"), "{err}");
    p.stop(&api).await;
    d.remove().await;
}
