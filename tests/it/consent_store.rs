//! Conformance of the `Consents` port (per-user upstream grants and the upstream revocation
//! outbox) on the SQL adapter, run against PostgreSQL and SQLite alike: compare-and-set grant
//! writes, the tenant wall, offboarding's one-transaction move from grants to the outbox,
//! claims that two replicas never share, and final rows that keep no secret.

use std::collections::HashSet;
use std::sync::Arc;

use auth_broker::domain::consent::{
    Consents, GrantStatus, GrantWrite, RevocationItem, RevocationStatus, TokenKind,
};
use auth_broker::domain::{OrgId, StoreError, UserId};
use auth_broker::store::SqlStore;

use crate::both_backends;
use crate::store_conformance::store;
use crate::support::Backend;

fn scopes(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn write<'a>(
    sealed: &'a [u8],
    scopes: &'a [String],
    expected: Option<i64>,
    now_ms: i64,
) -> GrantWrite<'a> {
    GrantWrite {
        sealed,
        scopes,
        expected,
        now_ms,
    }
}

async fn grants_compare_and_set(backend: Backend) {
    let s = store(backend).await;
    let (acme, ann) = (OrgId::new("acme"), UserId::new("ann"));
    let sc = scopes(&["repo", "read:org"]);
    assert_eq!(s.grant(&acme, &ann, "github").await.unwrap(), None);

    // Insert only where none exists; a second insert is refused without an error.
    let v1 = s
        .put_grant(&acme, &ann, "github", write(b"rt-1\0\xff", &sc, None, 100))
        .await
        .unwrap();
    assert_eq!(v1, Some(1));
    let lost = s
        .put_grant(&acme, &ann, "github", write(b"rt-other", &sc, None, 101))
        .await
        .unwrap();
    assert_eq!(lost, None);
    let g = s.grant(&acme, &ann, "github").await.unwrap().unwrap();
    assert_eq!(g.sealed, b"rt-1\0\xff".to_vec());
    assert_eq!(
        (g.version, g.status, g.updated_ms),
        (1, GrantStatus::Active, 100)
    );
    assert_eq!(g.scopes, sc);

    // An update on the version read moves it by one.
    let sc2 = scopes(&["repo"]);
    let v2 = s
        .put_grant(&acme, &ann, "github", write(b"rt-2", &sc2, Some(1), 200))
        .await
        .unwrap();
    assert_eq!(v2, Some(2));
    // A stale version writes nothing, and the row is exactly as it was.
    let before = s.grant(&acme, &ann, "github").await.unwrap().unwrap();
    let stale = s
        .put_grant(&acme, &ann, "github", write(b"rt-stale", &sc, Some(1), 300))
        .await
        .unwrap();
    assert_eq!(stale, None);
    let after = s.grant(&acme, &ann, "github").await.unwrap().unwrap();
    assert_eq!(after, before);
    assert_eq!(after.sealed, b"rt-2".to_vec());
    assert_eq!((after.version, after.updated_ms), (2, 200));
    assert_eq!(after.scopes, sc2);
    // An update where no row exists writes nothing either.
    assert_eq!(
        s.put_grant(&acme, &ann, "gitlab", write(b"x", &sc, Some(1), 300))
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.grant(&acme, &ann, "gitlab").await.unwrap(), None);

    // needs_reconsent is a compare-and-set too, and moves the version.
    assert!(
        !s.mark_needs_reconsent(&acme, &ann, "github", 1, 400)
            .await
            .unwrap()
    );
    assert_eq!(
        s.grant(&acme, &ann, "github").await.unwrap().unwrap(),
        after
    );
    assert!(
        s.mark_needs_reconsent(&acme, &ann, "github", 2, 400)
            .await
            .unwrap()
    );
    let g = s.grant(&acme, &ann, "github").await.unwrap().unwrap();
    assert_eq!(
        (g.version, g.status, g.updated_ms),
        (3, GrantStatus::NeedsReconsent, 400)
    );
    assert_eq!(g.sealed, b"rt-2".to_vec());
    // A fresh consent written on that version makes the grant active again.
    assert_eq!(
        s.put_grant(&acme, &ann, "github", write(b"rt-3", &sc, Some(3), 500))
            .await
            .unwrap(),
        Some(4)
    );
    let g = s.grant(&acme, &ann, "github").await.unwrap().unwrap();
    assert_eq!((g.version, g.status), (4, GrantStatus::Active));

    // grants_of lists every connector of that user, and only that user's.
    s.put_grant(&acme, &ann, "atlassian", write(b"rt-a", &[], None, 600))
        .await
        .unwrap()
        .unwrap();
    s.put_grant(
        &acme,
        &UserId::new("bob"),
        "github",
        write(b"rt-b", &sc, None, 600),
    )
    .await
    .unwrap()
    .unwrap();
    let all = s.grants_of(&acme, &ann).await.unwrap();
    let names: Vec<&str> = all.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(names, ["atlassian", "github"]);
    assert_eq!(all[0].1.sealed, b"rt-a".to_vec());
    assert!(all[0].1.scopes.is_empty());
    assert_eq!(all[1].1.version, 4);
}
both_backends!(grants_compare_and_set);

async fn tenant_wall(backend: Backend) {
    let s = store(backend).await;
    let (acme, globex, ann) = (OrgId::new("acme"), OrgId::new("globex"), UserId::new("ann"));
    let sc = scopes(&["repo"]);
    s.put_grant(&acme, &ann, "github", write(b"acme-rt", &sc, None, 100))
        .await
        .unwrap()
        .unwrap();

    // The same user id and connector in another org see nothing and write their own row.
    assert_eq!(s.grant(&globex, &ann, "github").await.unwrap(), None);
    assert!(s.grants_of(&globex, &ann).await.unwrap().is_empty());
    assert_eq!(
        s.put_grant(&globex, &ann, "github", write(b"x", &sc, Some(1), 200))
            .await
            .unwrap(),
        None
    );
    assert!(
        !s.mark_needs_reconsent(&globex, &ann, "github", 1, 200)
            .await
            .unwrap()
    );

    // Offboarding the namesake in globex touches nothing of acme.
    let rows = s
        .revoke_upstream(&globex, &ann, None, &[], 7, 300)
        .await
        .unwrap();
    assert!(rows.is_empty());
    let g = s.grant(&acme, &ann, "github").await.unwrap().unwrap();
    assert_eq!((g.sealed, g.version), (b"acme-rt".to_vec(), 1));
    assert!(s.revocations_of(&acme, &ann).await.unwrap().is_empty());
    assert!(s.revocations_of(&globex, &ann).await.unwrap().is_empty());

    // And acme's outbox rows are not globex's receipt.
    let rows = s
        .revoke_upstream(&acme, &ann, None, &[], 1, 400)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(s.revocations_of(&globex, &ann).await.unwrap().is_empty());
    assert_eq!(s.revocations_of(&acme, &ann).await.unwrap(), rows);
}
both_backends!(tenant_wall);

async fn revoke_moves_grants_to_the_outbox(backend: Backend) {
    let s = store(backend).await;
    let (acme, ann, bob) = (OrgId::new("acme"), UserId::new("ann"), UserId::new("bob"));
    let sc = scopes(&["repo"]);
    for (c, rt) in [("github", "rt-gh"), ("gitlab", "rt-gl"), ("slack", "rt-sl")] {
        s.put_grant(&acme, &ann, c, write(rt.as_bytes(), &sc, None, 100))
            .await
            .unwrap()
            .unwrap();
    }
    s.put_grant(&acme, &bob, "github", write(b"rt-bob", &sc, None, 100))
        .await
        .unwrap()
        .unwrap();
    // A grant the upstream refused is still revoked: the token may live on upstream.
    assert!(
        s.mark_needs_reconsent(&acme, &ann, "slack", 1, 150)
            .await
            .unwrap()
    );

    // An empty list of connectors removes no grant, but extras are still enqueued.
    let extra = RevocationItem {
        connector: "github".into(),
        kind: TokenKind::AccessToken,
        sealed: b"at-gh".to_vec(),
    };
    let rows = s
        .revoke_upstream(&acme, &ann, Some(&[]), std::slice::from_ref(&extra), 2, 200)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].kind, rows[0].sealed.clone()),
        (TokenKind::AccessToken, b"at-gh".to_vec())
    );
    assert_eq!(s.grants_of(&acme, &ann).await.unwrap().len(), 3);

    // Filtered by connector: only those grants go (an unknown connector is no error).
    let only = scopes(&["github", "slack", "nope"]);
    let rows = s
        .revoke_upstream(&acme, &ann, Some(&only), &[], 3, 300)
        .await
        .unwrap();
    let got: HashSet<(String, Vec<u8>)> = rows
        .iter()
        .map(|r| (r.connector.clone(), r.sealed.clone()))
        .collect();
    let want: HashSet<(String, Vec<u8>)> = [
        ("github".to_string(), b"rt-gh".to_vec()),
        ("slack".to_string(), b"rt-sl".to_vec()),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!((&r.org, &r.user), (&acme, &ann));
        assert_eq!(r.kind, TokenKind::RefreshToken);
        assert_eq!(
            (r.status, r.attempts, r.epoch),
            (RevocationStatus::Pending, 0, 3)
        );
        assert_eq!((r.next_at_ms, r.created_ms, r.updated_ms), (300, 300, 300));
        assert_eq!(r.last_error, None);
        uuid::Uuid::parse_str(&r.id).unwrap();
    }
    let left = s.grants_of(&acme, &ann).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, "gitlab");

    // All: the rest goes, plus the extras; bob keeps his.
    let extras = [
        RevocationItem {
            connector: "gitlab".into(),
            kind: TokenKind::AccessToken,
            sealed: b"at-gl".to_vec(),
        },
        RevocationItem {
            connector: "github".into(),
            kind: TokenKind::AccessToken,
            sealed: b"at-gh-2".to_vec(),
        },
    ];
    let rows = s
        .revoke_upstream(&acme, &ann, None, &extras, 4, 400)
        .await
        .unwrap();
    let got: Vec<(&str, TokenKind, &[u8])> = rows
        .iter()
        .map(|r| (r.connector.as_str(), r.kind, r.sealed.as_slice()))
        .collect();
    assert_eq!(
        got,
        [
            ("gitlab", TokenKind::RefreshToken, &b"rt-gl"[..]),
            ("gitlab", TokenKind::AccessToken, &b"at-gl"[..]),
            ("github", TokenKind::AccessToken, &b"at-gh-2"[..]),
        ]
    );
    assert!(s.grants_of(&acme, &ann).await.unwrap().is_empty());
    assert_eq!(s.grants_of(&acme, &bob).await.unwrap().len(), 1);
    assert!(s.revocations_of(&acme, &bob).await.unwrap().is_empty());
    // Nothing left to remove: a repeat enqueues nothing.
    assert!(
        s.revoke_upstream(&acme, &ann, None, &[], 5, 500)
            .await
            .unwrap()
            .is_empty()
    );

    // The receipt: oldest first (then by id), each row as enqueued.
    let receipt = s.revocations_of(&acme, &ann).await.unwrap();
    assert_eq!(receipt.len(), 6);
    let keys: Vec<(i64, String)> = receipt
        .iter()
        .map(|r| (r.created_ms, r.id.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(
        receipt.iter().map(|r| r.created_ms).collect::<Vec<_>>(),
        [200, 300, 300, 400, 400, 400]
    );
    let mut enq = rows.clone();
    enq.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(&receipt[3..], &enq[..]);
}
both_backends!(revoke_moves_grants_to_the_outbox);

/// Enqueues `n` extra-only revocations for user `user` of acme at `now`.
async fn enqueue(s: &SqlStore, user: &str, n: usize, now: i64) -> Vec<String> {
    let items: Vec<RevocationItem> = (0..n)
        .map(|i| RevocationItem {
            connector: format!("c{i}"),
            kind: TokenKind::RefreshToken,
            sealed: format!("rt-{user}-{i}").into_bytes(),
        })
        .collect();
    s.revoke_upstream(
        &OrgId::new("acme"),
        &UserId::new(user),
        None,
        &items,
        1,
        now,
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| r.id)
    .collect()
}

async fn claims_lease_and_record(backend: Backend) {
    let s = store(backend).await;
    let (acme, ann) = (OrgId::new("acme"), UserId::new("ann"));
    let early = enqueue(&s, "ann", 2, 1_000).await;
    let late = enqueue(&s, "ann", 1, 5_000).await;

    // Only due rows, oldest due first, up to the limit.
    assert!(
        s.claim_revocations(999, 60_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let one = s.claim_revocations(1_000, 60_000, 1).await.unwrap();
    assert_eq!(one.len(), 1);
    assert!(early.contains(&one[0].id));
    assert_eq!(one[0].next_at_ms, 61_000);
    assert_eq!(
        one[0].sealed,
        format!(
            "rt-ann-{}",
            early.iter().position(|i| *i == one[0].id).unwrap()
        )
        .into_bytes()
    );
    let rest = s.claim_revocations(2_000, 60_000, 10).await.unwrap();
    let ids: Vec<&str> = rest.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        1,
        "the late row is not due yet, the claimed one is leased"
    );
    assert!(early.contains(&ids[0].to_string()) && ids[0] != one[0].id);

    // A claimed row is not claimed again before its lease lapses, and is after.
    let only_late = s.claim_revocations(60_999, 60_000, 10).await.unwrap();
    assert_eq!(
        only_late.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&late[0]]
    );
    let again = s.claim_revocations(200_000, 1_000, 10).await.unwrap();
    let mut got: Vec<String> = again.iter().map(|r| r.id.clone()).collect();
    got.sort();
    let mut all: Vec<String> = early.iter().chain(&late).cloned().collect();
    all.sort();
    assert_eq!(got, all);

    // A retry keeps the secret; a final outcome empties it and ends the claims.
    let id = &early[0];
    s.record_revocation(
        id,
        RevocationStatus::Pending,
        1,
        Some("503 from upstream"),
        300_000,
        201_000,
    )
    .await
    .unwrap();
    let row = find(&s, &acme, &ann, id).await;
    assert_eq!((row.status, row.attempts), (RevocationStatus::Pending, 1));
    assert_eq!(row.last_error.as_deref(), Some("503 from upstream"));
    assert_eq!((row.next_at_ms, row.updated_ms), (300_000, 201_000));
    assert!(!row.sealed.is_empty());
    assert!(
        s.claim_revocations(299_999, 1_000, 10)
            .await
            .unwrap()
            .iter()
            .all(|r| r.id != *id)
    );

    for (id, status) in [
        (&early[0], RevocationStatus::Revoked),
        (&early[1], RevocationStatus::Unsupported),
        (&late[0], RevocationStatus::Failed),
    ] {
        s.record_revocation(id, status, 2, None, 0, 400_000)
            .await
            .unwrap();
        let row = find(&s, &acme, &ann, id).await;
        assert_eq!(
            (row.status, row.attempts, row.updated_ms),
            (status, 2, 400_000)
        );
        assert!(row.sealed.is_empty(), "{status:?} keeps no secret");
        assert_eq!(row.last_error, None);
    }
    assert!(
        s.claim_revocations(i64::MAX / 2, 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A late worker whose lease lapsed cannot reopen a final row.
    s.record_revocation(
        &early[0],
        RevocationStatus::Pending,
        3,
        Some("late"),
        0,
        500_000,
    )
    .await
    .unwrap();
    let row = find(&s, &acme, &ann, &early[0]).await;
    assert_eq!((row.status, row.attempts), (RevocationStatus::Revoked, 2));
    assert_eq!(
        s.record_revocation("no-such-row", RevocationStatus::Revoked, 1, None, 0, 1)
            .await,
        Err(StoreError::NotFound)
    );
}
both_backends!(claims_lease_and_record);

async fn find(
    s: &SqlStore,
    org: &OrgId,
    user: &UserId,
    id: &str,
) -> auth_broker::domain::consent::RevocationRow {
    s.revocations_of(org, user)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.id == id)
        .unwrap()
}

async fn concurrent_claimers_are_disjoint(backend: Backend) {
    let s = Arc::new(store(backend).await);
    let mut all = enqueue(&s, "ann", 20, 1_000).await;
    all.sort();
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (s, barrier) = (s.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                s.claim_revocations(2_000, 60_000, 20).await.unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.extend(t.await.unwrap().into_iter().map(|r| r.id));
    }
    let distinct: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "a row was claimed twice: {seen:?}"
    );
    seen.sort();
    assert_eq!(seen, all);
    assert!(
        s.claim_revocations(2_000, 60_000, 20)
            .await
            .unwrap()
            .is_empty()
    );
}
both_backends!(concurrent_claimers_are_disjoint);

async fn corrupt_values_are_internal_errors(backend: Backend) {
    let s = store(backend).await;
    let (acme, ann) = (OrgId::new("acme"), UserId::new("ann"));
    enqueue(&s, "ann", 1, 1).await;
    s.put_grant(&acme, &ann, "github", write(b"rt", &[], None, 1))
        .await
        .unwrap()
        .unwrap();
    let cases: [(&'static str, &'static str); 4] = [
        ("UPDATE upstream_grants SET scopes = 'not json'", "scopes"),
        (
            "UPDATE upstream_grants SET sealed = '!!not base64'",
            "sealed",
        ),
        (
            "UPDATE upstream_revocations SET token_kind = 'id_token'",
            "token_kind",
        ),
        ("UPDATE upstream_revocations SET attempts = -1", "attempts"),
    ];
    for (sql, col) in cases {
        s.raw_execute(sql).await.unwrap();
        let err = if sql.contains("upstream_grants") {
            s.grant(&acme, &ann, "github").await.unwrap_err()
        } else {
            s.revocations_of(&acme, &ann).await.unwrap_err()
        };
        match err {
            StoreError::Internal(m) => assert!(m.contains(col), "{m} names {col}"),
            e => panic!("{col}: {e:?}"),
        }
        s.raw_execute("UPDATE upstream_grants SET scopes = '[]', sealed = 'cnQ='")
            .await
            .unwrap();
        s.raw_execute("UPDATE upstream_revocations SET token_kind = 'refresh_token', attempts = 0")
            .await
            .unwrap();
    }
}
both_backends!(corrupt_values_are_internal_errors);
