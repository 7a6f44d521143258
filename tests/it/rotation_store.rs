//! Conformance of what key rotation writes in the system of record, on PostgreSQL and SQLite
//! alike: re-seals that are compare-and-sets on what was read and change nothing else (a
//! grant keeps its version, so a refresh that read it before still lands; an outbox row only
//! while pending; a client secret with its audit record), walks over every grant and pending
//! row, and signing keys added one per org however many race to add one.

use std::sync::Arc;

use auth_broker::domain::audit::AuditEntry;
use auth_broker::domain::connector::{ActionSet, Connector, Strategy};
use auth_broker::domain::consent::{
    Consents, GrantKey, GrantStatus, GrantWrite, RevocationItem, RevocationStatus, TokenKind,
};
use auth_broker::domain::ports::{AuditLog, NewSigningKey, PolicyStore, SigningKeyStore, Source};
use auth_broker::domain::upstream::UpstreamInput;
use auth_broker::domain::{OrgId, StoreError, UserId};
use auth_broker::store::SqlStore;
use serde_json::json;

use crate::both_backends;
use crate::store_conformance::store;
use crate::support::Backend;

fn key(org: &str, user: &str, connector: &str) -> GrantKey {
    GrantKey {
        org: OrgId::new(org),
        user: UserId::new(user),
        connector: connector.into(),
    }
}

async fn put(s: &SqlStore, k: &GrantKey, sealed: &[u8], expected: Option<i64>) -> Option<i64> {
    let scopes = vec!["read".to_string()];
    let w = GrantWrite {
        sealed,
        scopes: &scopes,
        expected,
        now_ms: 100,
    };
    s.put_grant(&k.org, &k.user, &k.connector, w).await.unwrap()
}

async fn a_grant_reseal_keeps_the_version_and_a_refresh_that_read_before_lands(backend: Backend) {
    let s = store(backend).await;
    let k = key("acme", "ann", "linear");
    assert_eq!(put(&s, &k, b"rt1@k1", None).await, Some(1));
    s.set_grant_due(&k.org, &k.user, &k.connector, Some(500))
        .await
        .unwrap();
    let read = s.grant(&k.org, &k.user, "linear").await.unwrap().unwrap();

    // Only over exactly what was read.
    assert!(!s.reseal_grant(&k, 1, b"other", b"rt1@k2").await.unwrap());
    assert!(!s.reseal_grant(&k, 2, b"rt1@k1", b"rt1@k2").await.unwrap());
    assert!(s.reseal_grant(&k, 1, b"rt1@k1", b"rt1@k2").await.unwrap());
    let g = s.grant(&k.org, &k.user, "linear").await.unwrap().unwrap();
    assert_eq!(g.sealed, b"rt1@k2");
    assert_eq!(
        (g.version, g.status, &g.scopes, g.updated_ms),
        (read.version, read.status, &read.scopes, read.updated_ms),
        "nothing else moves"
    );
    let due = s.due_grants(1_000, 10).await.unwrap();
    assert_eq!(due, [(k.org.clone(), k.user.clone(), k.connector.clone())]);

    // A refresh that read version 1 before the re-seal stores its rotated token.
    assert_eq!(put(&s, &k, b"rt2@k1", Some(1)).await, Some(2));
    assert!(!s.reseal_grant(&k, 1, b"rt1@k2", b"x").await.unwrap());
    // A grant that needs re-consent stays so.
    assert!(
        s.mark_needs_reconsent(&k.org, &k.user, "linear", 2, 200)
            .await
            .unwrap()
    );
    assert!(s.reseal_grant(&k, 3, b"rt2@k1", b"rt2@k2").await.unwrap());
    let g = s.grant(&k.org, &k.user, "linear").await.unwrap().unwrap();
    assert_eq!((g.version, g.status), (3, GrantStatus::NeedsReconsent));
    assert!(
        !s.reseal_grant(&key("globex", "ann", "linear"), 3, b"rt2@k2", b"x")
            .await
            .unwrap()
    );
}
both_backends!(a_grant_reseal_keeps_the_version_and_a_refresh_that_read_before_lands);

async fn every_grant_is_walked_in_key_order(backend: Backend) {
    let s = store(backend).await;
    let keys = [
        key("acme", "ann", "github"),
        key("acme", "ann", "linear"),
        key("acme", "bob", "github"),
        key("globex", "ann", "github"),
        key("globex", "zed", "a"),
    ];
    for k in keys.iter().rev() {
        put(&s, k, b"rt", None).await;
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.grants_after(after.as_ref(), 2).await.unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        seen.extend(page.into_iter().map(|(k, _)| k));
    }
    assert_eq!(seen, keys);
}
both_backends!(every_grant_is_walked_in_key_order);

async fn an_outbox_row_is_resealed_only_while_pending(backend: Backend) {
    let s = store(backend).await;
    let (acme, ann) = (OrgId::new("acme"), UserId::new("ann"));
    put(&s, &key("acme", "ann", "linear"), b"rt@k1", None).await;
    let extra = [RevocationItem {
        connector: "linear".into(),
        kind: TokenKind::AccessToken,
        sealed: b"at@k1".to_vec(),
    }];
    let rows = s
        .revoke_upstream(&acme, &ann, None, &extra, 7, 1_000)
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .pending_revocations_after(after.as_deref(), 1)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        walked.extend(page);
    }
    let mut ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    assert_eq!(
        walked.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ids
    );

    let (first, second) = (&walked[0], &walked[1]);
    assert!(
        !s.reseal_revocation(&first.id, b"other", b"x")
            .await
            .unwrap()
    );
    assert!(
        s.reseal_revocation(&first.id, &first.sealed, b"tok@k2")
            .await
            .unwrap()
    );
    let now = s.revocations_of(&acme, &ann).await.unwrap();
    let row = now.iter().find(|r| r.id == first.id).unwrap();
    assert_eq!(row.sealed, b"tok@k2");
    assert_eq!(
        (row.status, row.attempts, row.next_at_ms, row.updated_ms),
        (
            first.status,
            first.attempts,
            first.next_at_ms,
            first.updated_ms
        )
    );
    // A final row keeps no secret, and a late re-seal does not put one back.
    s.record_revocation(&second.id, RevocationStatus::Revoked, 1, None, 0, 2_000)
        .await
        .unwrap();
    assert!(
        !s.reseal_revocation(&second.id, &second.sealed, b"tok@k2")
            .await
            .unwrap()
    );
    let pending = s.pending_revocations_after(None, 10).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, first.id);
}
both_backends!(an_outbox_row_is_resealed_only_while_pending);

async fn a_client_secret_reseal_changes_only_the_secret_and_is_audited(backend: Backend) {
    let s = store(backend).await;
    let acme = OrgId::new("acme");
    let input: UpstreamInput = serde_json::from_value(json!({
        "issuer": "https://as.example", "client_id": "broker"}))
    .unwrap();
    let c = Connector {
        org: acme.clone(),
        id: "linear".into(),
        display_name: "Linear".into(),
        strategy: Strategy::TokenExchange,
        audience: "https://linear.example".into(),
        scopes: vec!["read".into()],
        tools: Default::default(),
        default_actions: ActionSet::ALLOW_ALL,
        enabled: true,
        token_ttl_secs: 0,
        upstream: Some(input.into_upstream(Some(b"secret@k1".to_vec()))),
    };
    let audit = |action: &str| AuditEntry {
        org: acme.clone(),
        at_ms: 1_000,
        actor: "test".into(),
        action: action.into(),
        resource_type: "Connector".into(),
        resource_id: "linear".into(),
        summary: json!({}),
    };
    s.upsert_connector(&c, Source::Api, &audit("admin.connector.create"))
        .await
        .unwrap();
    let rotate = audit("keys.rotate.client_secret");
    assert!(
        !s.reseal_client_secret(&acme, "linear", b"other", b"x", &rotate)
            .await
            .unwrap()
    );
    assert!(
        s.reseal_client_secret(&acme, "linear", b"secret@k1", b"secret@k2", &rotate)
            .await
            .unwrap()
    );
    let stored = s.connectors(&acme).await.unwrap();
    let mut want = c.clone();
    if let Some(u) = want.upstream.as_mut() {
        u.client_secret = Some(b"secret@k2".to_vec());
    }
    assert_eq!(stored, [want]);
    assert!(
        !s.reseal_client_secret(&OrgId::new("globex"), "linear", b"secret@k2", b"x", &rotate)
            .await
            .unwrap()
    );
    let actions: Vec<String> = s
        .audit_query(&acme, None, None, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    assert_eq!(
        actions,
        ["admin.connector.create", "keys.rotate.client_secret"]
    );
}
both_backends!(a_client_secret_reseal_changes_only_the_secret_and_is_audited);

fn new_key<'a>(
    org: &'a OrgId,
    kid: &'a str,
    jwk: &'a serde_json::Value,
    now: i64,
    activates_ms: i64,
    first: bool,
) -> NewSigningKey<'a> {
    NewSigningKey {
        org,
        kid,
        sealed_der: b"sealed",
        public_jwk: jwk,
        created_ms: now,
        activates_ms,
        first,
    }
}

/// `(kid, activates_ms, retired_ms)` of the org's keys.
async fn life(s: &SqlStore, org: &str) -> Vec<(String, i64, Option<i64>)> {
    let mut out: Vec<_> = s
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .filter(|k| k.org.as_ref().is_some_and(|o| o.as_str() == org))
        .map(|k| (k.kid, k.activates_ms, k.retired_ms))
        .collect();
    out.sort();
    out
}

async fn signing_keys_are_added_one_per_org_and_retire_the_others_at_activation(backend: Backend) {
    let s = store(backend).await;
    let (acme, jwk) = (OrgId::new("acme"), json!({"kty": "EC"}));
    assert!(
        s.add_signing_key(&new_key(&acme, "a", &jwk, 0, 0, true))
            .await
            .unwrap()
    );
    assert!(
        !s.add_signing_key(&new_key(&acme, "a2", &jwk, 0, 0, true))
            .await
            .unwrap(),
        "the org has its first key"
    );
    assert!(
        s.add_signing_key(&new_key(&acme, "b", &jwk, 1_000, 2_000, false))
            .await
            .unwrap()
    );
    assert!(
        !s.add_signing_key(&new_key(&acme, "c", &jwk, 1_500, 2_500, false))
            .await
            .unwrap(),
        "b is still waiting to activate"
    );
    assert_eq!(
        life(&s, "acme").await,
        [("a".into(), 0, Some(2_000)), ("b".into(), 2_000, None)]
    );
    assert!(
        s.add_signing_key(&new_key(&acme, "c", &jwk, 2_500, 3_500, false))
            .await
            .unwrap()
    );
    assert_eq!(
        life(&s, "acme").await,
        [
            ("a".into(), 0, Some(2_000)),
            ("b".into(), 2_000, Some(3_500)),
            ("c".into(), 3_500, None)
        ]
    );
    assert!(life(&s, "globex").await.is_empty(), "per org");
    let unknown = s
        .add_signing_key(&new_key(&OrgId::new("initech"), "x", &jwk, 0, 0, true))
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound)), "{unknown:?}");

    // Replicas that all find globex's key too old at once store one new key.
    assert!(
        s.add_signing_key(&new_key(&OrgId::new("globex"), "g", &jwk, 0, 0, true))
            .await
            .unwrap()
    );
    let s = Arc::new(s);
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let (org, jwk, kid) = (OrgId::new("globex"), json!({}), format!("g{i}"));
                s.add_signing_key(&new_key(&org, &kid, &jwk, 10_000, 20_000, false))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        won += usize::from(r.await.unwrap());
    }
    assert_eq!(won, 1);
    assert_eq!(life(&s, "globex").await.len(), 2);
}
both_backends!(signing_keys_are_added_one_per_org_and_retire_the_others_at_activation);
