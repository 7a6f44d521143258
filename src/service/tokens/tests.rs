//! The signer: one issuer per org, and which key signs over a rotation.

use super::*;
use crate::domain::OrgId;
use crate::domain::connector::{ActionSet, Strategy};

use std::sync::atomic::{AtomicI64, Ordering};

/// A clock the test moves.
#[derive(Default)]
struct Manual(AtomicI64);

impl Clock for Manual {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::Relaxed)
    }
}

/// A key signing from `from_ms` until `until_ms`.
fn scheduled(kid: &str, from_ms: Millis, until_ms: Option<Millis>) -> ScheduledKey {
    ScheduledKey {
        from_ms,
        until_ms,
        key: Arc::new(SigningKey::generate(kid)),
    }
}

/// An org's keys: `signing` (newest activation first), each published.
fn org_keys(org: &str, signing: Vec<ScheduledKey>) -> OrgKeys {
    OrgKeys {
        org: OrgId::new(org),
        published: signing.iter().map(|k| k.key.verifying_key()).collect(),
        signing,
    }
}

fn signer() -> Signer {
    let keys = ["acme", "globex"]
        .into_iter()
        .map(|org| org_keys(org, vec![scheduled(&format!("k-{org}"), 0, None)]))
        .collect();
    Signer::new("https://broker.example/", keys)
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn kids(s: &Signer, org: &str) -> Vec<String> {
    s.published(org)
        .unwrap()
        .iter()
        .map(|k| k.kid().to_string())
        .collect()
}

fn mint(s: &Signer, org: &str) -> TokenRecord {
    let connector = Connector {
        org: OrgId::new(org),
        id: "github".into(),
        display_name: "GitHub".into(),
        strategy: Strategy::BrokerJwt,
        audience: "https://mcp.github.example".into(),
        scopes: vec!["repo:read".into()],
        tools: Default::default(),
        default_actions: ActionSet::ALLOW_ALL,
        enabled: true,
        token_ttl_secs: 0,
        upstream: None,
    };
    s.mint(
        &MintInput {
            org,
            user_id: "u1",
            connector: &connector,
            client_id: "gateway:test",
            scopes: &["repo:read".to_string()],
            epoch: 1,
            ttl_secs: 600,
        },
        1_000,
    )
}

#[test]
fn each_org_signs_as_its_own_issuer() {
    let s = signer();
    assert_eq!(
        s.issuer("acme"),
        Some("https://broker.example/orgs/acme"),
        "the base's trailing slash is not doubled"
    );
    let t = mint(&s, "acme");
    let claims = s.verify("acme", &t.access_token, None, 1_000, 0).unwrap();
    assert_eq!(claims.iss, "https://broker.example/orgs/acme");
    assert_eq!(claims.ab_org, "acme");
    assert_eq!(claims.jti, t.jti);
    assert!(
        s.verify("globex", &t.access_token, None, 1_000, 0)
            .is_none(),
        "another org's issuer never verifies it"
    );
    assert!(
        s.verify("initech", &t.access_token, None, 1_000, 0)
            .is_none()
    );
    assert_eq!(kids(&s, "acme"), ["k-acme"]);
}

#[test]
fn a_resource_server_sees_only_its_audience_and_dates_come_from_the_caller() {
    let s = signer();
    let t = mint(&s, "acme");
    let verify = |aud, now| s.verify("acme", &t.access_token, aud, now, 30);
    assert!(verify(Some("https://mcp.github.example"), 1_000).is_some());
    assert!(verify(Some("https://mcp.other.example"), 1_000).is_none());
    // Minted at 1 000 for 600 s: valid until 1 600 plus the 30 s leeway.
    assert!(verify(None, 1_629).is_some());
    assert!(verify(None, 1_630).is_none());
    assert!(verify(None, 969).is_none(), "issued in the caller's future");
}

#[test]
fn an_org_without_keys_gets_a_token_nobody_accepts() {
    let s = signer();
    let t = mint(&s, "initech");
    for org in ["acme", "globex", "initech"] {
        assert!(
            s.verify(org, &t.access_token, None, 1_000, 0).is_none(),
            "{org}"
        );
    }
}

#[test]
fn a_rotation_signs_with_the_new_key_only_from_its_activation() {
    let clock = Arc::new(Manual::default());
    // Rotation stored at 1 000 with a 1 000 ms lead: new key from 2 000, old key until then.
    let keys = org_keys(
        "acme",
        vec![
            scheduled("k-new", 2_000, None),
            scheduled("k-old", 0, Some(2_000)),
        ],
    );
    let s = Signer::new("https://broker.example", vec![keys]).with_clock(clock.clone());
    assert_eq!(
        kids(&s, "acme"),
        ["k-new", "k-old"],
        "both published at once"
    );
    clock.0.store(1_999, Ordering::Relaxed);
    let before = mint(&s, "acme");
    assert_eq!(kid_of(&before.access_token), "k-old");
    let assertion = s
        .sign_as("acme", "JWT", &serde_json::json!({"a": 1}))
        .unwrap();
    assert_eq!(kid_of(&assertion), "k-old", "assertions too");
    clock.0.store(2_000, Ordering::Relaxed);
    let after = mint(&s, "acme");
    assert_eq!(kid_of(&after.access_token), "k-new");
    for t in [&before, &after] {
        assert!(s.verify("acme", &t.access_token, None, 1_000, 0).is_some());
    }
}

#[test]
fn a_key_that_should_sign_but_is_not_loaded_leaves_a_published_key_signing() {
    let clock = Arc::new(Manual::default());
    clock.0.store(5_000, Ordering::Relaxed);
    // The new key (from 2 000) did not open on this replica: only its public half is here.
    let new = SigningKey::generate("k-new");
    let mut keys = org_keys("acme", vec![scheduled("k-old", 0, Some(2_000))]);
    keys.published.insert(0, new.verifying_key());
    let s = Signer::new("https://broker.example", vec![keys]).with_clock(clock.clone());
    let t = mint(&s, "acme");
    assert_eq!(
        kid_of(&t.access_token),
        "k-old",
        "still published everywhere"
    );
    // Before any activation (clock behind the replica that stored the first key): the first
    // key to activate signs.
    let early = org_keys("acme", vec![scheduled("k-first", 9_000, None)]);
    let s = Signer::new("https://broker.example", vec![early]).with_clock(clock);
    assert_eq!(kid_of(&mint(&s, "acme").access_token), "k-first");
}

#[test]
fn a_reload_replaces_the_keys_and_only_a_change_counts() {
    let s = signer();
    let same = s.keys("acme").unwrap();
    assert!(!s.replace(same), "the same keys change nothing");
    let mut rotated = s.keys("acme").unwrap();
    rotated.signing[0].until_ms = Some(1);
    rotated.signing.insert(0, scheduled("k-acme-2", 1, None));
    rotated
        .published
        .insert(0, rotated.signing[0].key.verifying_key());
    assert!(s.replace(rotated));
    assert_eq!(kids(&s, "acme"), ["k-acme-2", "k-acme"]);
    let published: Vec<String> = s
        .published("acme")
        .unwrap()
        .iter()
        .map(|k| k.kid().to_string())
        .collect();
    assert_eq!(published, ["k-acme-2", "k-acme"]);
    assert_eq!(s.jwks("acme").unwrap()["keys"].as_array().unwrap().len(), 2);
    assert_eq!(kids(&s, "globex"), ["k-globex"], "other orgs untouched");
    assert!(!s.replace(org_keys("initech", Vec::new())), "unknown org");
}
