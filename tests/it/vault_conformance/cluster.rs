//! Redis Cluster with a replica behind each master: a revocation answers only once the
//! replica of the master holding the user's slot has it, so that master's crash right after
//! cannot bring the purged tokens back on the promoted replica. With that replica stalled the
//! revocation is refused (in force on the master, unconfirmed); the retry after it resumes
//! confirms it.

use std::time::Instant;

use auth_broker::domain::UserId;
use auth_broker::store::vault_redis::RedisVault;

use super::replica_wait::{revocation_survives_the_crash, revocations_wait_for, user_key};
use super::sentinel::{OP, put_confirmed};
use super::{fresh_org, projection};
use crate::redis_fixture::{private_cluster_with_replicas, redis_cli, require_reachable};

/// Whether the server on `port` is a replica of the master on `master` (`ROLE`).
fn replica_of(port: u16, master: u16) -> bool {
    redis_cli(port, &["role"]).is_some_and(|r| {
        let lines: Vec<&str> = r.lines().map(str::trim).collect();
        lines.first() == Some(&"slave") && lines.get(2) == Some(&master.to_string().as_str())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_redis_cluster_revocations_wait_for_the_replica() {
    let (c, mut nodes) = private_cluster_with_replicas().await;
    let v = RedisVault::connect_with(&c.url(), OP, Some(1))
        .await
        .unwrap();
    require_reachable(&v).await;
    let (org, user) = (fresh_org(), UserId::generate());
    let key = user_key(&org, &user);
    let p = projection(true, 1, &[("github", &["repo"]), ("slack", &[])]);
    assert_eq!(put_confirmed(&v, &org, &user, &p).await, 1);
    let master = c
        .ports
        .into_iter()
        .find(|port| redis_cli(*port, &["exists", &key]).is_some_and(|o| o.trim() == "1"))
        .expect("one master holds the user's slot");
    let replica = nodes
        .iter()
        .find(|n| replica_of(n.port, master))
        .expect("the master has a replica");
    let took = revocations_wait_for(&v, &org, &user, replica).await;
    let replica = replica.port;

    // The master crashes; the cluster promotes its replica, which has the revocation.
    let crashed = Instant::now();
    nodes.iter_mut().find(|n| n.port == master).unwrap().kill();
    revocation_survives_the_crash(&v, &org, &user).await;
    assert!(
        redis_cli(replica, &["role"]).is_some_and(|r| r.starts_with("master")),
        "the replica was promoted"
    );
    eprintln!(
        "cluster replica wait: refusal after {took:?}; promoted replica served {:?} after the \
         crash; fixture up in {:?}",
        crashed.elapsed(),
        c.started_in
    );
}
