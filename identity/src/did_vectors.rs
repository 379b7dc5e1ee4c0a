//! Known-answer tests: the Ed25519 vectors of the W3C did:key specification
//! (`test-vectors/ed25519-x25519.json` of the did-method-key report), and a cross-check
//! against the `did-key` crate, which is a dev-dependency only.

use did_key::{Ed25519KeyPair, Fingerprint, KeyMaterial};
use proptest::prelude::*;

use crate::{Did, Keypair};

/// (seed as hex, did, publicKeyBase58) from the specification.
const VECTORS: &[(&str, &str, &str)] = &[
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
        "6ASf5EcmmEHTgDJ4X4ZT5vT6iHVJBXPg5AN5YoTCpGWt",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000002",
        "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
        "8pM1DN3RiT8vbom5u1sNryaNT1nyL8CTTW3b5PwWXRBH",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000003",
        "did:key:z6MkvqoYXQfDDJRv8L4wKzxYeuKyVZBfi9Qo6Ro8MiLH3kDQ",
        "HPYVwAQmskwT1qEEeRzhoomyfyupJGASQQtCXSNG8XS2",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000004",
        "did:key:z6MkwW6aqMnjgrhJXFUko3NnZPGzVpkNzhYK7yEhnsibmLwL",
        "J3qYF7YJMKCqQke47UQwiHizgFUXapHxRxKmxbkar89x",
    ),
];

fn seed_from_hex(hex: &str) -> [u8; 32] {
    let mut seed = [0u8; 32];
    for (i, byte) in seed.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    seed
}

#[test]
fn w3c_ed25519_vectors_encode() {
    for (seed, did, public_base58) in VECTORS {
        let keypair = Keypair::from_seed(&seed_from_hex(seed));
        assert_eq!(keypair.did().to_string(), *did);
        assert_eq!(
            bs58::encode(keypair.did().public_key()).into_string(),
            *public_base58
        );
    }
}

#[test]
fn w3c_ed25519_vectors_parse() {
    for (_, did, public_base58) in VECTORS {
        let parsed: Did = did.parse().expect("vector parses");
        assert_eq!(
            bs58::encode(parsed.public_key()).into_string(),
            *public_base58
        );
        assert_eq!(parsed.to_string(), *did);
    }
}

#[test]
fn invalid_curve_point_is_refused() {
    // Find 32 bytes that are not a valid compressed Edwards point and encode them by hand.
    let bad = (0u8..=255)
        .map(|b| [b; 32])
        .find(|bytes| Did::from_public_key(bytes).is_err())
        .expect("some constant byte string is not a curve point");
    let mut payload = vec![0xed, 0x01];
    payload.extend_from_slice(&bad);
    let did = format!("did:key:z{}", bs58::encode(payload).into_string());
    assert_eq!(did.parse::<Did>(), Err(crate::ParseDidError::InvalidKey));
}

proptest! {
    #[test]
    fn agrees_with_the_did_key_crate(seed in any::<[u8; 32]>()) {
        let ours = Keypair::from_seed(&seed).did();
        let theirs = did_key::generate::<Ed25519KeyPair>(Some(&seed));
        prop_assert_eq!(ours.fingerprint(), theirs.fingerprint());
        prop_assert_eq!(ours.public_key().to_vec(), theirs.public_key_bytes());
        let reparsed: Did = format!("did:key:{}", theirs.fingerprint()).parse().expect("parses");
        prop_assert_eq!(reparsed, ours);
    }

    #[test]
    fn parse_never_panics(input in "did:key:z[1-9A-HJ-NP-Za-km-z]{0,80}") {
        let _ = input.parse::<Did>();
    }
}
