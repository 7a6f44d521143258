//! An org's keys over time, from stored rows: what is published, what may sign, and when a
//! rotation is due.

use super::*;
use crate::crypto::seal::VaultKey;

const POLICY: SigningPolicy = SigningPolicy {
    max_age_ms: 10_000,
    publish_for_ms: 5_000,
    publish_lead_ms: 1_000,
};

fn ring(id: &str) -> KeyRing {
    KeyRing::new(id, vec![VaultKey::generate(id)]).unwrap()
}

/// A stored key of `org`, sealed under `ring`.
fn row(
    ring: &KeyRing,
    org: &str,
    kid: &str,
    activates_ms: Millis,
    retired_ms: Option<Millis>,
) -> StoredSigningKey {
    let key = SigningKey::generate(kid);
    StoredSigningKey {
        kid: kid.into(),
        org: Some(OrgId::new(org)),
        sealed_der: ring.seal(&key.to_pkcs8_der(), &signing_key_aad(Some(org), kid)),
        public_jwk: key.public_jwk(),
        retired_ms,
        created_ms: (activates_ms - POLICY.publish_lead_ms).max(0),
        activates_ms,
    }
}

fn kids(keys: &OrgKeys) -> (Vec<&str>, Vec<&str>) {
    (
        keys.signing.iter().map(|k| k.key.kid()).collect(),
        keys.published.iter().map(|k| k.kid()).collect(),
    )
}

#[test]
fn a_pending_key_is_published_and_a_retired_one_until_its_publication_ends() {
    let r = ring("k1");
    let acme = OrgId::new("acme");
    let rows = vec![
        row(&r, "acme", "gone", 0, Some(1_000)),
        row(&r, "acme", "retired", 1_000, Some(8_000)),
        row(&r, "acme", "signing", 8_000, Some(12_500)),
        row(&r, "acme", "pending", 12_500, None),
        row(&r, "globex", "other", 0, None),
    ];
    let (keys, problems) = org_keys(&acme, &rows, &r, POLICY, 12_000, None);
    assert!(problems.is_empty());
    let (signing, published) = kids(&keys);
    assert_eq!(published, ["pending", "signing", "retired"]);
    assert_eq!(signing, ["pending", "signing", "retired"], "newest first");
    assert_eq!(keys.signing[1].until_ms, Some(12_500));
    assert_eq!(keys.signing[0].from_ms, 12_500);
    // 5 s after it stopped signing, `retired` is withdrawn.
    let (keys, _) = org_keys(&acme, &rows, &r, POLICY, 13_000, None);
    assert_eq!(kids(&keys).1, ["pending", "signing"]);
}

#[test]
fn a_key_that_does_not_open_is_a_problem_only_while_it_signs_and_known_keys_are_reused() {
    let (k1, k2) = (ring("k1"), ring("k2"));
    let acme = OrgId::new("acme");
    let rows = vec![
        row(&k2, "acme", "old", 0, Some(4_000)),
        row(&k2, "acme", "new", 4_000, None),
    ];
    // A replica whose ring lacks k2 still publishes both; neither signs; only the key that
    // signs now or later is a problem.
    let (keys, problems) = org_keys(&acme, &rows, &k1, POLICY, 5_000, None);
    assert_eq!(kids(&keys), (vec![], vec!["new", "old"]));
    let flagged: Vec<(&str, bool)> = problems.iter().map(|p| (p.kid.as_str(), p.signs)).collect();
    assert_eq!(flagged, [("new", true)]);
    // Keys this replica holds already are not opened again (a re-seal under a key it lacks
    // changes nothing).
    let (held, _) = org_keys(&acme, &rows, &k2, POLICY, 5_000, None);
    let (again, problems) = org_keys(&acme, &rows, &k1, POLICY, 5_000, Some(&held));
    assert!(problems.is_empty());
    assert_eq!(kids(&again).0, ["new", "old"]);
    assert!(Arc::ptr_eq(&again.signing[0].key, &held.signing[0].key));
}

#[test]
fn a_rotation_is_due_by_age_unless_one_is_under_way() {
    let r = ring("k1");
    let acme = OrgId::new("acme");
    assert_eq!(due(&acme, &[], POLICY, 0), Some(true), "first key");
    let rows = vec![row(&r, "acme", "a", 1_000, None)];
    assert_eq!(due(&acme, &rows, POLICY, 10_999), None);
    assert_eq!(
        due(&acme, &rows, POLICY, 11_000),
        Some(false),
        "10 s of signing"
    );
    let rows = vec![
        row(&r, "acme", "a", 1_000, Some(12_000)),
        row(&r, "acme", "b", 12_000, None),
    ];
    assert_eq!(
        due(&acme, &rows, POLICY, 11_500),
        None,
        "b waits to activate"
    );
    assert_eq!(due(&acme, &rows, POLICY, 21_999), None);
    assert_eq!(due(&acme, &rows, POLICY, 22_000), Some(false));
    let retired = vec![row(&r, "acme", "a", 0, Some(1))];
    assert_eq!(due(&acme, &retired, POLICY, 5), Some(true), "none left");
}
