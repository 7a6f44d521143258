//! Serving over time: vault and signing keys rotated while vends go on, the binary's several
//! I/O threads sharing one port, one vault and the audit log, and a gateway that stops
//! reading for a while.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::redis_fixture::redis_url;
use crate::support::{
    ACME_GATEWAY, Backend, TestServer, engineer_in_group as engineer, fresh_database, sample,
    test_config, with_github, with_redis,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_key_rotation_reseals_online_and_signing_keys_rotate_with_overlap() {
    use auth_broker::config::SecretRef;
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let mut base = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    // Replicas share one issuer (each test server listens on its own port).
    base.broker.issuer = Some("https://broker.acme.test".into());
    let a = TestServer::start_with(Backend::Postgres, base.clone()).await;
    let (ann, _) = engineer(&a, "rotate@acme.example").await;
    let token = a.vend(&ann).await.body["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    a.halt().await;

    // Step 1: every replica learns k2 and seals with it; k1 still opens old records.
    let k2 = dir.join("k2");
    let key: [u8; 32] = rand::random();
    use base64::Engine;
    std::fs::write(&k2, base64::engine::general_purpose::STANDARD.encode(key)).unwrap();
    let mut both = base.clone();
    both.vault.keys.insert(
        "k2".into(),
        SecretRef {
            env: None,
            file: Some(k2.clone()),
        },
    );
    both.vault.active_key = Some("k2".into());
    // And the signing key is due for rotation at this start.
    both.broker.signing_key_max_age_days = 0;
    let b = TestServer::start_with(Backend::Postgres, both.clone()).await;
    assert_eq!(
        b.vend(&ann).await.body["access_token"],
        token.as_str(),
        "k1 records still open"
    );
    let jwks: serde_json::Value = b.get_json("/orgs/acme/jwks.json").await;
    assert_eq!(
        jwks["keys"].as_array().unwrap().len(),
        2,
        "old signing key stays published: {jwks}"
    );
    assert_eq!(
        b.introspect(&token).await["active"],
        true,
        "tokens of the retired key still verify"
    );

    // Step 2: re-seal online, while B serves.
    let report = auth_broker::rotate_keys(&both).await.unwrap();
    assert!(report.resealed >= 1, "{report:?}");
    assert_eq!(report.unreadable, 0);
    assert_eq!(
        report.signing_keys, 2,
        "each org's retired signing key, sealed under k1, is re-sealed"
    );
    let again = auth_broker::rotate_keys(&both).await.unwrap();
    assert_eq!(again.resealed, 0, "idempotent: {again:?}");
    b.halt().await;

    // Step 3: k1 is gone; everything still opens.
    let mut only_k2 = both.clone();
    only_k2.vault.keys.remove("k1");
    only_k2.broker.signing_key_max_age_days = 30;
    let c = TestServer::start_with(Backend::Postgres, only_k2).await;
    assert_eq!(
        c.vend(&ann).await.body["access_token"],
        token.as_str(),
        "re-sealed under k2"
    );
    c.stop().await;
}

/// The binary's way of serving: several single-threaded runtimes, each given its share of the
/// connections and its own vault connection. Fresh connections land on every thread; all
/// serve the one stored token, all see the deactivation, and the vends folded in the audit
/// writer at shutdown are written before the store closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_threads_share_one_port_one_vault_and_the_audit_log() {
    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    let s = TestServer::start_threaded(Backend::Postgres, cfg.clone(), 3).await;
    let (ann, _) = engineer(&s, "ann@acme.example").await;
    let body = json!({"org": "acme", "user": {"id": ann}, "connector": "github"});
    // A new connection per vend: they are handed to the three threads in turn.
    let vend_fresh = || async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let r = http
            .post(format!("{}/internal/v1/token", s.base()))
            .bearer_auth(ACME_GATEWAY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    let mut tokens = std::collections::HashSet::new();
    for _ in 0..24 {
        let (status, body) = vend_fresh().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        tokens.insert(body["access_token"].as_str().unwrap().to_string());
    }
    assert_eq!(tokens.len(), 1, "every thread serves the one stored token");

    let r = s.okta_deactivate(&ann).await;
    assert_eq!(r.status, StatusCode::OK);
    for _ in 0..24 {
        let (status, body) = vend_fresh().await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["code"], "user_inactive");
    }

    // Stopped at once: the folded vend records are written on the way out.
    s.halt().await;
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    let r = s.audit_of(&ann).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let counted = |outcome: &str| -> u64 {
        r.body["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|rec| rec["action"] == "token.vend" && rec["summary"]["outcome"] == outcome)
            .map(|rec| rec["summary"]["count"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(counted("ok"), 24, "{:?}", r.body);
    assert_eq!(counted("user_inactive"), 24, "{:?}", r.body);
    s.stop().await;
}

/// A gateway that stops reading (a full socket, a paused process) for longer than the vend
/// fence's re-read budget loses no response: once the server's buffers are full it stops
/// taking requests, so no token response is left waiting to be written past its deadline
/// (which would be withheld), and every request is answered when the gateway reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stops_reading_loses_no_response() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (url, dir) = fresh_database(Backend::Postgres).await;
    let cfg = with_redis(with_github(test_config(&url, &dir)), &redis_url());
    let s = TestServer::start_with(Backend::Postgres, cfg).await;
    let (ann, _) = engineer(&s, "slow-reader@acme.example").await;
    assert_eq!(s.vend(&ann).await.status, StatusCode::OK);
    let addr: std::net::SocketAddr = s.base().trim_start_matches("http://").parse().unwrap();
    let body = json!({"org": "acme", "user": {"id": ann}, "connector": "github"}).to_string();
    let request = format!(
        "POST /internal/v1/token HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ACME_GATEWAY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // More pipelined requests than the kernel's socket buffers (bounded by `tcp_wmem`) and
    // the server's write buffer hold in responses (about 1 KiB each), on a connection whose
    // receive buffer is kept small.
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20);
    let sent = (2 * wmem_max / 1024).max(8_000);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let (mut rd, mut wr) = tcp.into_split();
    let all = request.repeat(sent);
    let writer = tokio::spawn(async move {
        wr.write_all(all.as_bytes()).await.unwrap();
        wr
    });
    let served = || async {
        sample(
            &s.metrics_text().await,
            "auth_broker_vend_total{code=\"ok\"}",
        )
        .unwrap_or(0.0)
    };
    // Wait until the server is held up (its vend count stands still), then longer than the
    // re-read budget.
    let mut last = served().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = served().await;
        if now == last {
            break;
        }
        assert!(Instant::now() < deadline, "the server never stopped");
        last = now;
    }
    assert!(
        last < sent as f64,
        "the server stopped before answering everything ({last} of {sent})"
    );
    tokio::time::sleep(auth_broker::service::access::RECHECK_BUDGET * 2).await;

    // Read every response again: the connection stays up and every one is a token.
    let mut buf = vec![0u8; 1 << 16];
    let needle = b"\"access_token\"";
    // What was read and not yet counted: less than one needle is kept between reads, so no
    // token field is counted twice or missed across a read boundary.
    let mut carry: Vec<u8> = Vec::new();
    let mut tokens = 0;
    while tokens < sent {
        let n = tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf))
            .await
            .expect("responses keep coming")
            .unwrap();
        assert!(n > 0, "connection closed after {tokens} of {sent} tokens");
        carry.extend_from_slice(&buf[..n]);
        tokens += carry.windows(needle.len()).filter(|w| *w == needle).count();
        let keep = carry.len().min(needle.len() - 1);
        carry.drain(..carry.len() - keep);
    }
    assert_eq!(tokens, sent);
    writer.await.unwrap();
    let metrics = s.metrics_text().await;
    assert_eq!(
        sample(&metrics, "auth_broker_vend_withheld_total"),
        Some(0.0),
        "no response was withheld"
    );
    s.stop().await;
}
