//! Races on the vault port: token writes racing a revocation, projection writers racing each
//! other. Each states its guarantee as what the data says afterwards.

use std::sync::Arc;

use auth_broker::domain::UserId;
use auth_broker::domain::vault::{CasOutcome, ProjectionWrite, Vault, Written};
use tokio::sync::Barrier;

use super::{fresh_org, projection, put_projection, revoke};

/// Twenty writers that read the same version race: exactly one lands, the rest are told the
/// projection moved, and what is stored is the winner's state.
pub(super) async fn one_of_many_racing_writers_lands(v: Arc<dyn Vault>, round: usize) {
    let (org, user) = (fresh_org(), UserId::generate());
    put_projection(&*v, &org, &user, &projection(true, 1, &[]))
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(20));
    let mut writers = Vec::new();
    for i in 0..20usize {
        let (v, org, user, barrier) = (v.clone(), org.clone(), user.clone(), barrier.clone());
        writers.push(tokio::spawn(async move {
            let name = format!("c{i:02}");
            let p = projection(i % 2 == 0, 1, &[(name.as_str(), &[])]);
            barrier.wait().await;
            for _ in 0..(i + round) % 3 {
                tokio::task::yield_now().await;
            }
            let w = ProjectionWrite {
                expected: Some(1),
                projection: &p,
                revoke: i % 3 == 0,
            };
            (p.clone(), v.write_projection(&org, &user, w).await.unwrap())
        }));
    }
    let mut winners = Vec::new();
    for w in writers {
        let (p, outcome) = w.await.unwrap();
        if outcome != Written::Moved {
            winners.push(p);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer lands");
    let r = v.read(&org, &user, "_").await.unwrap().projection.unwrap();
    assert!(r.same_access(&winners[0]));
    assert_eq!(r.version, 2);
}

/// 50 writers holding the pre-revocation epoch race one revocation. Every write that was
/// acknowledged must have landed before the revocation (so the revocation deleted it), and
/// nothing may be left afterwards.
pub(super) async fn no_resurrection_race(v: Arc<dyn Vault>, round: usize) {
    let (org, user) = (fresh_org(), UserId::generate());
    let p = projection(true, 1, &[]);
    put_projection(&*v, &org, &user, &p).await.unwrap();
    let barrier = Arc::new(Barrier::new(51));
    let mut writers = Vec::new();
    for i in 0..50 {
        let (v, org, user, barrier) = (v.clone(), org.clone(), user.clone(), barrier.clone());
        writers.push(tokio::spawn(async move {
            let connector = format!("c{i:02}");
            barrier.wait().await;
            // Spread the writers around the revocation.
            if i % 2 == 0 {
                tokio::task::yield_now().await;
            }
            let outcome = v
                .store_token(&org, &user, &connector, 1, b"old")
                .await
                .unwrap();
            (connector, outcome)
        }));
    }
    let revoker = {
        let (v, org, user, barrier) = (v.clone(), org.clone(), user.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            for _ in 0..round {
                tokio::task::yield_now().await;
            }
            revoke(&*v, &org, &user, &projection(false, 1, &[]))
                .await
                .unwrap()
        })
    };
    let mut stored = Vec::new();
    for w in writers {
        let (connector, outcome) = w.await.unwrap();
        if outcome == CasOutcome::Stored {
            stored.push(connector);
        }
    }
    let (epoch, deleted) = revoker.await.unwrap();
    assert_eq!(epoch, 2);
    stored.sort();
    let mut deleted = deleted;
    deleted.sort();
    assert_eq!(
        stored, deleted,
        "acknowledged writes and purged tokens differ"
    );
    assert!(v.token_connectors(&org, &user).await.unwrap().is_empty());
    for i in 0..50 {
        let r = v.read(&org, &user, &format!("c{i:02}")).await.unwrap();
        assert_eq!(r.sealed, None);
        assert_eq!(r.projection.map(|p| p.epoch), Some(2));
    }
}
