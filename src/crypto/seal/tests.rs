//! Tests for record sealing: round trips, AAD binding, rotation and hostile input.

use super::*;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

const KEY1: [u8; 32] = [0x11; 32];

fn key(id: &str, byte: u8) -> VaultKey {
    VaultKey::new(id, [byte; 32]).unwrap()
}

fn ring() -> KeyRing {
    KeyRing::new("k1", vec![key("k1", 0x11)]).unwrap()
}

fn aad() -> Aad<'static> {
    Aad {
        org: "acme",
        user: "u-123",
        connector: "github",
        record_version: 7,
    }
}

#[test]
fn round_trip() {
    let ring = ring();
    let sealed = ring.seal(b"gho_secret_token", &aad());
    assert_eq!(
        &ring.open(&sealed, &aad()).unwrap()[..],
        b"gho_secret_token"
    );
    assert_eq!(KeyRing::key_id_of(&sealed), Some("k1"));
    assert!(!ring.needs_reseal(&sealed));
}

#[test]
fn empty_and_large_plaintexts_round_trip() {
    let ring = ring();
    let empty = ring.seal(b"", &aad());
    assert_eq!(empty.len(), 2 + 2 + NONCE_LEN + TAG_LEN);
    assert!(ring.open(&empty, &aad()).unwrap().is_empty());

    let big = vec![0xA5u8; 64 * 1024];
    let sealed = ring.seal(&big, &aad());
    assert_eq!(&ring.open(&sealed, &aad()).unwrap()[..], &big[..]);
}

#[test]
fn layout_matches_the_documented_format() {
    let sealed = ring().seal(b"abc", &aad());
    assert_eq!(sealed[0], 0x01);
    assert_eq!(sealed[1], 2);
    assert_eq!(&sealed[2..4], b"k1");
    assert_eq!(sealed.len(), 4 + NONCE_LEN + 3 + TAG_LEN);
    // The plaintext does not appear in the clear.
    assert!(!sealed.windows(3).any(|w| w == b"abc"));
}

#[test]
fn sealing_the_same_plaintext_twice_differs() {
    let ring = ring();
    let a = ring.seal(b"same", &aad());
    let b = ring.seal(b"same", &aad());
    assert_ne!(a, b);
    // Specifically the nonces differ.
    assert_ne!(&a[4..4 + NONCE_LEN], &b[4..4 + NONCE_LEN]);

    let nonces: std::collections::HashSet<Vec<u8>> = (0..1000)
        .map(|_| ring.seal(b"same", &aad())[4..4 + NONCE_LEN].to_vec())
        .collect();
    assert_eq!(nonces.len(), 1000);
}

#[test]
fn each_aad_field_is_bound() {
    let ring = ring();
    let sealed = ring.seal(b"token", &aad());
    let variants = [
        Aad {
            org: "other",
            ..aad()
        },
        Aad {
            user: "u-124",
            ..aad()
        },
        Aad {
            connector: "gitlab",
            ..aad()
        },
        Aad {
            record_version: 8,
            ..aad()
        },
        Aad {
            record_version: 6,
            ..aad()
        },
    ];
    for wrong in variants {
        assert_eq!(
            ring.open(&sealed, &wrong),
            Err(SealError::Decrypt),
            "{wrong:?}"
        );
    }
}

#[test]
fn aad_encoding_is_unambiguous() {
    let ring = ring();
    let ab_c = Aad {
        org: "ab",
        user: "c",
        connector: "x",
        record_version: 1,
    };
    let a_bc = Aad {
        org: "a",
        user: "bc",
        ..ab_c
    };
    let sealed = ring.seal(b"t", &ab_c);
    assert_eq!(ring.open(&sealed, &a_bc), Err(SealError::Decrypt));

    let enc = |a: &Aad<'_>| {
        let mut v = Vec::new();
        a.encode_into(&mut v);
        v
    };
    assert_ne!(enc(&ab_c), enc(&a_bc));
    assert_eq!(
        enc(&ab_c),
        [
            &[0, 0, 0, 2][..],
            b"ab",
            &[0, 0, 0, 1],
            b"c",
            &[0, 0, 0, 1],
            b"x",
            &1u64.to_be_bytes()
        ]
        .concat()
    );
    // Moving bytes between user and connector is just as distinct.
    let u_cx = Aad {
        user: "",
        connector: "cx",
        ..ab_c
    };
    assert_ne!(enc(&ab_c), enc(&u_cx));
}

#[test]
fn oversized_lengths_use_a_prefix_free_escape() {
    let mut v = Vec::new();
    put_len(&mut v, 5);
    assert_eq!(v, [0, 0, 0, 5]);
    v.clear();
    put_len(&mut v, u32::MAX as usize);
    assert_eq!(
        v,
        [&[0xFF; 4][..], &(u32::MAX as u64).to_be_bytes()].concat()
    );
}

#[test]
fn rotation_opens_old_records_and_reseals_under_the_active_key() {
    let old = KeyRing::new("k1", vec![key("k1", 0x11)]).unwrap();
    let sealed = old.seal(b"refresh-token", &aad());

    let rotated = KeyRing::new("k2", vec![key("k1", 0x11), key("k2", 0x22)]).unwrap();
    assert_eq!(rotated.active_id(), "k2");
    assert!(rotated.needs_reseal(&sealed));
    assert_eq!(KeyRing::key_id_of(&sealed), Some("k1"));

    let plain = rotated.open(&sealed, &aad()).unwrap();
    let resealed = rotated.seal(&plain, &aad());
    assert_eq!(KeyRing::key_id_of(&resealed), Some("k2"));
    assert!(!rotated.needs_reseal(&resealed));
    assert_eq!(
        &rotated.open(&resealed, &aad()).unwrap()[..],
        b"refresh-token"
    );

    // Once k1 is retired, what it sealed reports the key that is missing.
    let retired = KeyRing::new("k2", vec![key("k2", 0x22)]).unwrap();
    assert_eq!(
        retired.open(&sealed, &aad()),
        Err(SealError::UnknownKey("k1".into()))
    );
    assert_eq!(
        &retired.open(&resealed, &aad()).unwrap()[..],
        b"refresh-token"
    );
}

#[test]
fn same_id_with_different_key_bytes_fails_to_decrypt() {
    let sealed = ring().seal(b"t", &aad());
    let impostor = KeyRing::new("k1", vec![key("k1", 0x99)]).unwrap();
    assert_eq!(impostor.open(&sealed, &aad()), Err(SealError::Decrypt));
}

#[test]
fn relabelling_the_key_id_fails_to_decrypt() {
    // Both keys share the same bytes, so only the authenticated header can catch the relabel.
    let ring = KeyRing::new("k1", vec![key("k1", 0x11), key("k2", 0x11)]).unwrap();
    let mut sealed = ring.seal(b"t", &aad());
    sealed[3] = b'2';
    assert_eq!(KeyRing::key_id_of(&sealed), Some("k2"));
    assert_eq!(ring.open(&sealed, &aad()), Err(SealError::Decrypt));
}

#[test]
fn malformed_inputs_are_rejected() {
    let ring = ring();
    let good = ring.seal(b"token", &aad());
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x01],
        vec![0x02, 2, b'k', b'1'],
        [&[0x02][..], &good[1..]].concat(),
        [&[0x00][..], &good[1..]].concat(),
        [&[0x01, 0][..], &[0u8; 40]].concat(),
        [&[0x01, 65][..], &[b'a'; 65][..], &[0u8; 40]].concat(),
        [&[0x01, 2][..], b"k/", &[0u8; 40]].concat(),
        [&[0x01, 2][..], &[0xC3, 0xA9][..], &[0u8; 40]].concat(),
        // Header and nonce present but the tag is one byte short.
        good[..2 + 2 + NONCE_LEN + TAG_LEN - 1].to_vec(),
    ];
    for case in cases {
        assert_eq!(
            ring.open(&case, &aad()),
            Err(SealError::Malformed),
            "{case:?}"
        );
        assert_eq!(KeyRing::key_id_of(&case), None, "{case:?}");
        assert!(ring.needs_reseal(&case));
    }
}

#[test]
fn every_truncation_fails_cleanly() {
    let ring = ring();
    let sealed = ring.seal(b"a token of moderate length", &aad());
    for len in 0..sealed.len() {
        let err = ring.open(&sealed[..len], &aad()).unwrap_err();
        assert!(
            matches!(err, SealError::Malformed | SealError::Decrypt),
            "len {len}: {err:?}"
        );
    }
    // Trailing garbage is also caught (it shifts the tag).
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(ring.open(&longer, &aad()), Err(SealError::Decrypt));
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let ring = ring();
    let sealed = ring.seal(b"token", &aad());
    for i in 0..sealed.len() {
        for bit in 0..8 {
            let mut t = sealed.clone();
            t[i] ^= 1 << bit;
            assert!(ring.open(&t, &aad()).is_err(), "byte {i} bit {bit}");
        }
    }
}

#[test]
fn random_bytes_never_panic_or_open() {
    let ring = ring();
    for i in 0..5000usize {
        let len = i % 120;
        let mut bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        // Half of the inputs get a valid header so the parser reaches the AEAD.
        if i % 2 == 0 && len >= 4 {
            bytes[..4].copy_from_slice(&[0x01, 2, b'k', b'1']);
        }
        let _ = KeyRing::key_id_of(&bytes);
        let _ = ring.needs_reseal(&bytes);
        assert!(ring.open(&bytes, &aad()).is_err());
    }
}

#[test]
fn from_base64_accepts_common_encodings() {
    let std = STANDARD.encode(KEY1);
    let variants = [
        std.clone(),
        format!("{std}\n"),
        format!("  {std}  "),
        STANDARD_NO_PAD.encode(KEY1),
        URL_SAFE_NO_PAD.encode([0xFB; 32]),
    ];
    for v in &variants {
        assert!(VaultKey::from_base64("k1", v).is_ok(), "{v}");
    }
    // Loading through base64 gives the same key as the raw bytes.
    let ring = KeyRing::new("k1", vec![VaultKey::from_base64("k1", &std).unwrap()]).unwrap();
    let sealed = self::ring().seal(b"t", &aad());
    assert_eq!(&ring.open(&sealed, &aad()).unwrap()[..], b"t");
}

#[test]
fn from_base64_rejects_wrong_lengths_and_garbage() {
    for len in [0usize, 1, 16, 31, 33, 48, 64, 100] {
        let text = STANDARD.encode(vec![7u8; len]);
        let err = VaultKey::from_base64("k1", &text).unwrap_err();
        assert!(matches!(err, SealError::InvalidKey(_)), "{len}: {err:?}");
    }
    for text in ["not base64!", "****", "=", &"A".repeat(43)[..]] {
        assert!(VaultKey::from_base64("k1", text).is_err(), "{text}");
    }
    // Errors never echo the key text.
    let text = STANDARD.encode([0x42u8; 31]);
    let msg = VaultKey::from_base64("k1", &text).unwrap_err().to_string();
    assert!(!msg.contains(&text), "{msg}");
}

#[test]
fn export_round_trips() {
    use secrecy::ExposeSecret;
    let k = VaultKey::generate("gen-1");
    let text = k.export_base64();
    let back = VaultKey::from_base64("gen-1", text.expose_secret()).unwrap();
    assert_eq!(*back.key, *k.key);
    assert_ne!(*VaultKey::generate("gen-2").key, *k.key);
}

#[test]
fn key_ids_are_validated() {
    for bad in ["", "has space", "slash/", "ünï", &"a".repeat(65)[..]] {
        assert!(
            matches!(VaultKey::new(bad, KEY1), Err(SealError::InvalidKey(_))),
            "{bad:?}"
        );
    }
    for good in ["k", "2026-01.primary_A", &"a".repeat(64)[..]] {
        assert!(VaultKey::new(good, KEY1).is_ok(), "{good:?}");
    }
    assert!(matches!(
        VaultKey::new("k1", [0; 32]),
        Err(SealError::InvalidKey(_))
    ));
}

#[test]
fn key_ring_construction_is_checked() {
    assert!(matches!(
        KeyRing::new("k2", vec![key("k1", 1)]),
        Err(SealError::InvalidKey(_))
    ));
    assert!(matches!(
        KeyRing::new("k1", vec![]),
        Err(SealError::InvalidKey(_))
    ));
    assert!(matches!(
        KeyRing::new("k1", vec![key("k1", 1), key("k1", 2)]),
        Err(SealError::InvalidKey(_))
    ));
    // `generate` does not validate; the ring does.
    assert!(matches!(
        KeyRing::new("bad id", vec![VaultKey::generate("bad id")]),
        Err(SealError::InvalidKey(_))
    ));
    let long = "x".repeat(64);
    let ring = KeyRing::new(&long, vec![key(&long, 3)]).unwrap();
    let sealed = ring.seal(b"t", &aad());
    assert_eq!(KeyRing::key_id_of(&sealed), Some(long.as_str()));
    assert_eq!(&ring.open(&sealed, &aad()).unwrap()[..], b"t");
}

#[test]
fn debug_shows_ids_but_never_key_material() {
    let bytes: [u8; 32] = std::array::from_fn(|i| 0xA0 ^ i as u8);
    let k = VaultKey::new("primary", bytes).unwrap();
    let ring = KeyRing::new(
        "primary",
        vec![
            VaultKey::new("primary", bytes).unwrap(),
            VaultKey::new("old", [0x5A; 32]).unwrap(),
        ],
    )
    .unwrap();
    let outputs = [
        format!("{k:?}"),
        format!("{k:#?}"),
        format!("{ring:?}"),
        format!("{ring:#?}"),
    ];
    let forbidden = [
        hex::encode(bytes),
        hex::encode_upper(bytes),
        STANDARD.encode(bytes),
        STANDARD_NO_PAD.encode(bytes),
        URL_SAFE_NO_PAD.encode(bytes),
        hex::encode([0x5A; 32]),
        format!("{:?}", bytes),
        format!("{}", bytes[0]),
    ];
    for out in &outputs {
        assert!(out.contains("primary"), "{out}");
        for f in &forbidden {
            assert!(!out.contains(f.as_str()), "{out} contains {f}");
        }
    }
    assert!(format!("{ring:?}").contains("old"));
}
