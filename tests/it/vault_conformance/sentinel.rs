//! The Redis vault and bus through Sentinel failovers, each on a private deployment (master,
//! replica, sentinel): a forced `SENTINEL FAILOVER` (the old master lives on, still a master
//! for about ten seconds) and a crashed master. Within a bounded time the vault must serve
//! reads and compare-and-set writes on the new master with the data written before, and no
//! call may outlast the operation timeout on the way. After a forced failover, writes must
//! reach the new master well within the once-a-second check (the sentinel's `+switch-master`
//! announcement).

use std::time::{Duration, Instant};

use auth_broker::domain::UserId;
use auth_broker::domain::vault::{CasOutcome, EventBus, Vault, VaultError};
use auth_broker::store::vault_redis::{RedisBus, RedisVault};

use super::bus::{event, two_replicas};
use super::outage::assert_unavailable_fast;
use super::replica_wait::{revocation_survives_the_crash, revocations_wait_for};
use super::{fresh_org, projection, put_projection, revoke};
use crate::redis_fixture::{free_port, private_sentinel, require_reachable};

/// Short, as in production: the bound every call must respect during the failover.
pub(super) const OP: Duration = Duration::from_millis(300);
/// What a call may take beyond `OP` (scheduling on a loaded two-core machine).
pub(super) const SLACK: Duration = Duration::from_millis(200);
/// The vault must serve the new master this soon after the failover starts.
pub(super) const RECOVERY_BOUND: Duration = Duration::from_secs(15);

#[derive(Clone, Copy, Debug)]
enum Failure {
    /// `SENTINEL FAILOVER`: the old master stays up.
    Forced,
    /// The master is killed (SIGKILL); Sentinel notices after `down-after-milliseconds`.
    Crash,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redis_sentinel_failover() {
    survives(Failure::Forced).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redis_sentinel_master_crash() {
    survives(Failure::Crash).await;
}

async fn survives(failure: Failure) {
    let (s, mut servers) = private_sentinel().await;
    // A dead sentinel first in the list: it is skipped.
    let url = s.url_behind_dead_sentinel();
    let v = RedisVault::connect(&url, OP).await.unwrap();
    require_reachable(&v).await;
    let bus_a = RedisBus::connect(&url, OP).await.unwrap();
    let bus_b = RedisBus::attach(&v).await;
    two_replicas(&bus_a, &bus_b).await;

    let (org, user) = (fresh_org(), UserId::generate());
    let p = projection(true, 1, &[("github", &["repo"]), ("slack", &[])]);
    assert_eq!(put_confirmed(&v, &org, &user, &p).await, 1);
    assert_eq!(
        v.store_token(&org, &user, "github", 1, b"before")
            .await
            .unwrap(),
        CasOutcome::Stored
    );
    let fixture = s.clone();
    tokio::task::spawn_blocking(move || fixture.wait_replicated(Duration::from_secs(1)))
        .await
        .unwrap()
        .unwrap();

    // The replica becomes the master; `direct` reads it without Sentinel.
    let direct = RedisVault::connect(&format!("redis://127.0.0.1:{}", s.replica_port), OP)
        .await
        .unwrap();
    let began = Instant::now();
    match failure {
        Failure::Forced => {
            let fixture = s.clone();
            let now =
                tokio::task::spawn_blocking(move || fixture.failover(Duration::from_secs(10)))
                    .await
                    .unwrap()
                    .unwrap();
            assert_eq!(now, s.replica_port);
        }
        Failure::Crash => servers[0].kill(),
    }

    let (mut worst, mut refused, mut n) = (Duration::ZERO, 0, 0);
    // Whether the projection was written again after a server answered without it.
    let mut rebuilt = false;
    let recovered = loop {
        n += 1;
        let tag = format!("after-{n}");
        let started = Instant::now();
        let read = v.read(&org, &user, "github").await;
        worst = worst.max(started.elapsed());
        let started = Instant::now();
        let write = v.store_token(&org, &user, "slack", 1, tag.as_bytes()).await;
        worst = worst.max(started.elapsed());
        assert!(
            worst < OP + SLACK,
            "a call took {worst:?} (op timeout {OP:?})"
        );
        for e in [read.as_ref().err(), write.as_ref().err()]
            .into_iter()
            .flatten()
        {
            assert!(matches!(e, VaultError::Unavailable(_)), "{e:?}");
            refused += 1;
        }
        if let Ok(r) = &read {
            // Whatever server answers has the data written before, or, if it is the old
            // master demoted and emptied for its resynchronisation, nothing (which the broker
            // treats as a flushed vault: rebuilt with a newer epoch). Never other data.
            if r.projection.is_some() {
                assert!(r.projection.as_ref().is_some_and(|r| r.same_access(&p)));
                // After a rebuild the emptied server has the projection but not the token.
                if !(rebuilt && r.sealed.is_none()) {
                    assert_eq!(r.sealed.as_deref(), Some(&b"before"[..]));
                }
            } else {
                assert_eq!(r.sealed, None, "a token without its projection");
            }
        }
        if matches!(write, Ok(CasOutcome::Stored)) {
            // Served by the new master, not by an old one about to be demoted and wiped.
            let there = direct.read(&org, &user, "slack").await.ok();
            if there.and_then(|r| r.sealed).as_deref() == Some(tag.as_bytes()) && read.is_ok() {
                break began.elapsed();
            }
        } else if let Ok(CasOutcome::EpochMoved) = &write {
            // The server that answered holds no epoch for the user: the old master emptied
            // for its resynchronisation, or a replica that lost its copy with the crashed
            // master mid-sync (Redis replicates asynchronously and these servers keep nothing
            // on disk). The write is refused, which is the fail-closed answer; the broker then
            // rebuilds the projection from the system of record, as done here. The loop still
            // ends only once the new master itself stores the token.
            refused += 1;
            if read.as_ref().is_ok_and(|r| r.projection.is_none()) {
                rebuilt |= put_projection(&v, &org, &user, &p).await.is_ok();
            }
        }
        assert!(
            began.elapsed() < RECOVERY_BOUND,
            "{failure:?}: the vault did not serve the new master within {RECOVERY_BOUND:?} \
             ({refused} calls refused, worst {worst:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Directory writes wait for a replica (none after a crash; the demoted old master once it
    // has resynchronised after a forced failover): retried as the IdP would.
    put_confirmed(&v, &org, &user, &p).await;
    // Compare-and-set still holds on the new master.
    assert_eq!(
        v.store_token(&org, &user, "slack", 2, b"x").await.unwrap(),
        CasOutcome::EpochMoved
    );
    let (epoch, mut deleted) = revoke(&v, &org, &user, &projection(false, 1, &[]))
        .await
        .unwrap();
    deleted.sort();
    // An emptied server that was rebuilt lost the token stored before the failure.
    let expected: Vec<String> = if rebuilt {
        vec!["slack".into()]
    } else {
        vec!["github".into(), "slack".into()]
    };
    assert_eq!((epoch, deleted), (2, expected));
    assert_eq!(
        v.store_token(&org, &user, "github", 1, b"late")
            .await
            .unwrap(),
        CasOutcome::EpochMoved
    );
    assert_eq!(
        direct.read(&org, &user, "github").await.unwrap().sealed,
        None
    );
    v.ping().await.unwrap();

    // The bus follows: both subscriptions move to the new master and events flow again.
    let bus_back = converge(&bus_a, &bus_b, RECOVERY_BOUND).await;
    two_replicas(&bus_a, &bus_b).await;
    two_replicas(&bus_b, &bus_a).await;
    eprintln!(
        "sentinel {failure:?}: vault served the new master {recovered:?} after the failover began \
         ({refused} calls refused, worst call {worst:?}); bus delivering again {bus_back:?} later; \
         fixture up in {:?}",
        s.started_in
    );
}

/// Publishes from each bus until the other receives it; returns how long that took.
async fn converge(a: &RedisBus, b: &RedisBus, within: Duration) -> Duration {
    let began = Instant::now();
    let org = fresh_org();
    let (mut rx_a, mut rx_b) = (a.subscribe(), b.subscribe());
    let (mut a_to_b, mut b_to_a) = (false, false);
    let mut n = 0;
    while !(a_to_b && b_to_a) {
        assert!(
            began.elapsed() < within,
            "bus not delivering within {within:?}"
        );
        n += 1;
        let probe = event(&org, n);
        if !a_to_b && a.publish(&probe).await.is_ok() {
            a_to_b = received(&mut rx_b, &probe).await;
        }
        if !b_to_a && b.publish(&probe).await.is_ok() {
            b_to_a = received(&mut rx_a, &probe).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    began.elapsed()
}

/// Whether `want` arrives within a moment (other events are skipped).
async fn received(
    rx: &mut tokio::sync::broadcast::Receiver<auth_broker::domain::vault::BusEvent>,
    want: &auth_broker::domain::vault::BusEvent,
) -> bool {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(e) if &e == want => return true,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return false,
            }
        }
    };
    tokio::time::timeout(Duration::from_millis(300), wait)
        .await
        .unwrap_or(false)
}

/// Writes may reach the new master this long after the sentinel names it: the keeper's
/// once-a-second check alone would take up to a second plus a resolution.
const SWITCH_BOUND: Duration = Duration::from_millis(500);

/// After `SENTINEL FAILOVER`, the vault follows the sentinel's `+switch-master` announcement:
/// writes land on the new master soon after the sentinel names it, not up to a second later.
/// Twice (there and back), with one subscription: the check alone, whose phase is random,
/// would pass both rounds about one time in four.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redis_sentinel_switches_on_announcement() {
    let (s, _servers) = private_sentinel().await;
    // A dead sentinel first in the list: the subscription goes to the live one.
    let url = s.url_behind_dead_sentinel();
    // What is timed is the switch of the connection vends use; the entitlement writes that
    // measure it would otherwise also wait for the demoted master's resynchronisation
    // (waiting for replicas has its own test below).
    let v = RedisVault::connect_with(&url, OP, Some(0)).await.unwrap();
    require_reachable(&v).await;
    let mut sentinel = connect(s.sentinel_port).await;
    // Sentinel has no PUBSUB command: a subscribed client shows `sub=1` in CLIENT LIST.
    let deadline = Instant::now() + Duration::from_secs(5);
    while subscribers(&mut sentinel).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the vault never subscribed to the sentinel"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut times = Vec::new();
    for expected in [s.replica_port, s.master_port] {
        // The second round waits for the old master to be demoted and synced (about 10 s).
        let fixture = s.clone();
        let new = tokio::task::spawn_blocking(move || fixture.failover(Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap();
        let named = Instant::now();
        assert_eq!(new, expected);
        let (switched, writes, refused) = writes_reach(&v, new, named).await;
        eprintln!(
            "sentinel announcement: writes reach the new master {switched:?} after the \
             sentinel names it ({writes} writes, {refused} refused)"
        );
        times.push(switched);
        assert!(
            switched < SWITCH_BOUND,
            "writes reached the new master only {switched:?} after the sentinel named it \
             (bound {SWITCH_BOUND:?}; {writes} writes, {refused} refused)"
        );
    }
    assert_eq!(
        subscribers(&mut sentinel).await,
        1,
        "one subscription, kept across failovers"
    );
    eprintln!("sentinel announcement: switch times {times:?}");
}

/// A plain connection to the server on `port`.
async fn connect(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| panic!("connecting to {port} timed out"))
    .unwrap_or_else(|e| panic!("connecting to {port}: {e}"))
}

/// How many clients of the server hold a subscription.
async fn subscribers(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(conn)
        .await
        .unwrap();
    clients.lines().filter(|c| c.contains(" sub=1 ")).count()
}

/// Writes a fresh user through the vault until one is on the master at `port`; says how long
/// after `since` that was, and how many writes were made and refused.
async fn writes_reach(v: &RedisVault, port: u16, since: Instant) -> (Duration, u32, u32) {
    let mut direct = connect(port).await;
    let (org, p) = (fresh_org(), projection(true, 1, &[("github", &[])]));
    let (mut writes, mut refused) = (0, 0);
    loop {
        let user = UserId::generate();
        writes += 1;
        match put_projection(v, &org, &user, &p).await {
            Ok(epoch) => assert_eq!(epoch, 1),
            Err(VaultError::Unavailable(_)) => refused += 1,
            Err(e) => panic!("put_projection: {e:?}"),
        }
        let key = format!("ab:{{{}/{}}}", org.as_str(), user.as_str());
        let there: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut direct)
            .await
            .unwrap();
        if there {
            return (since.elapsed(), writes, refused);
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "no write reached the new master within 5 s ({writes} writes, {refused} refused)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// No sentinel answers: the vault is built anyway and every call fails fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redis_sentinel_unreachable_fails_fast() {
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/vault",
        free_port(),
        free_port()
    );
    let v = RedisVault::connect(&url, Duration::from_millis(100))
        .await
        .unwrap();
    for _ in 0..3 {
        assert_unavailable_fast(&v, &fresh_org(), Duration::from_millis(500)).await;
    }
    let started = Instant::now();
    assert!(matches!(v.ping().await, Err(VaultError::Unavailable(_))));
    assert!(started.elapsed() < Duration::from_millis(500));
}

/// A revocation answers only once the replica holds it, so a crash of the master right after
/// cannot bring the purged tokens back on the promoted replica. With the replica stalled, the
/// revocation is refused (in force on the master, unconfirmed) instead of acknowledged; the
/// retry after the replica resumes confirms it, and the promoted replica has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redis_sentinel_revocations_wait_for_the_replica() {
    let (s, mut servers) = private_sentinel().await;
    let v = RedisVault::connect(&s.url(), OP).await.unwrap();
    require_reachable(&v).await;
    let (org, user) = (fresh_org(), UserId::generate());
    let p = projection(true, 1, &[("github", &["repo"]), ("slack", &[])]);
    assert_eq!(put_confirmed(&v, &org, &user, &p).await, 1);
    assert_eq!(servers[1].port, s.replica_port);
    revocations_wait_for(&v, &org, &user, &servers[1]).await;

    // The master crashes; the promoted replica has the revocation.
    servers[0].kill();
    let promoted = async {
        loop {
            if s.current_master() == Some(s.replica_port) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(RECOVERY_BOUND, promoted)
        .await
        .expect("the replica is promoted");
    revocation_survives_the_crash(&v, &org, &user).await;
}

/// Writes a projection as a SCIM write does through its retries: `Unavailable` (here, a
/// replica that has not acknowledged yet, or one resynchronising after a failover) is tried
/// again, within the recovery bound.
pub(super) async fn put_confirmed(
    v: &RedisVault,
    org: &auth_broker::domain::OrgId,
    user: &UserId,
    p: &auth_broker::domain::vault::Projection,
) -> u64 {
    let deadline = Instant::now() + RECOVERY_BOUND;
    loop {
        match put_projection(v, org, user, p).await {
            Ok(epoch) => return epoch,
            Err(VaultError::Unavailable(m)) if Instant::now() < deadline => {
                eprintln!("put_projection refused ({m}); retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("put_projection: {e:?}"),
        }
    }
}
