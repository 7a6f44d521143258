use super::*;
use crate::crypto::seal::VaultKey;
use crate::service::tokens::seal;

fn ring() -> KeyRing {
    KeyRing::new("k1", vec![VaultKey::generate("k1")]).unwrap()
}

fn record(token: &str) -> TokenRecord {
    TokenRecord {
        access_token: token.into(),
        expires_at: 2_000_000_000,
        scopes: vec!["repo:read".into()],
        jti: "j1".into(),
        minted_at: 1_900_000_000,
    }
}

fn aad<'a>(user: &'a str, epoch: u64) -> Aad<'a> {
    Aad {
        org: "acme",
        user,
        connector: "github",
        record_version: epoch,
    }
}

#[test]
fn the_same_ciphertext_opens_once() {
    let (ring, cache) = (ring(), OpenCache::default());
    let sealed = seal(&ring, &record("tok-1"), &aad("ann", 7));
    let a = cache.open(&ring, &sealed, &aad("ann", 7)).unwrap();
    let b = cache.open(&ring, &sealed, &aad("ann", 7)).unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "the second open is served from the cache"
    );
    assert_eq!(a.record.access_token, "tok-1");
    assert_eq!(cache.len(), 1);
}

#[test]
fn a_cached_record_never_opens_for_another_binding() {
    let (ring, cache) = (ring(), OpenCache::default());
    let sealed = seal(&ring, &record("tok-1"), &aad("ann", 7));
    cache.open(&ring, &sealed, &aad("ann", 7)).unwrap();
    // The same bytes presented for another user or a later epoch: the AAD no longer matches,
    // so the cache is bypassed and opening fails.
    assert!(cache.open(&ring, &sealed, &aad("bob", 7)).is_err());
    assert!(cache.open(&ring, &sealed, &aad("ann", 8)).is_err());
    // A ciphertext changed in the middle keeps its tag bytes, yet is not served.
    let mut tampered = sealed.clone();
    tampered[sealed.len() / 2] ^= 1;
    assert!(cache.open(&ring, &tampered, &aad("ann", 7)).is_err());
}

#[test]
fn the_cache_stays_bounded() {
    let (ring, cache) = (ring(), OpenCache::default());
    for i in 0..(CAPACITY + 10) {
        let user = format!("u{i}");
        let sealed = seal(&ring, &record("t"), &aad(&user, 1));
        cache.open(&ring, &sealed, &aad(&user, 1)).unwrap();
    }
    assert!(cache.len() <= CAPACITY);
}
