//! What the event bus and the Sentinel keeper share about a Redis Pub/Sub subscription:
//! reading it while pinging it (so a peer that vanished without closing the socket is
//! noticed), and the jittered back-off between attempts to subscribe again.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;

/// How often a quiet subscription is pinged to prove the peer is alive.
const PING_EVERY: Duration = Duration::from_secs(5);

/// Hands each message's payload to `on_message` until the connection ends or stops answering
/// pings (each bounded by `limit`); says which.
pub(super) async fn pump(
    pubsub: redis::aio::PubSub,
    limit: Duration,
    mut on_message: impl FnMut(&[u8]),
) -> &'static str {
    let (mut sink, mut stream) = pubsub.split();
    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return "connection closed" };
                on_message(msg.get_payload_bytes());
            }
            _ = ticker.tick() => {
                match tokio::time::timeout(limit, sink.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return "ping failed",
                    Err(_) => return "ping timed out",
                }
            }
        }
    }
}

/// Between half and all of `d`, so that many replicas do not retry in step.
pub(super) fn jittered(d: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = d / 2;
    half + half.mul_f64((random % 1000) as f64 / 1000.0)
}
