//! `did:key` identifiers for Ed25519 public keys.
//!
//! A `did:key` is `did:key:` + multibase(base58btc) of the multicodec-prefixed public key.
//! For Ed25519 the multicodec is `0xed` as an unsigned varint (`0xed 0x01`), so every
//! identifier starts with `did:key:z6Mk`.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::VerifyingKey;

use crate::signature::{Signature, VerifyError};

/// The URI scheme and method prefix of every `did:key`.
const DID_KEY_PREFIX: &str = "did:key:";
/// The multibase code of base58btc.
const BASE58BTC: char = 'z';
/// The multicodec of an Ed25519 public key, as an unsigned varint.
const ED25519_PUB_MULTICODEC: [u8; 2] = [0xed, 0x01];
/// Length of the decoded multibase payload: two varint bytes and the 32-byte key.
const DECODED_LEN: usize = ED25519_PUB_MULTICODEC.len() + 32;

/// The public identity of a node or person: an Ed25519 public key written as `did:key`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Did(VerifyingKey);

impl Did {
    /// The identity whose public key is `bytes`.
    pub fn from_public_key(bytes: &[u8; 32]) -> Result<Did, ParseDidError> {
        VerifyingKey::from_bytes(bytes)
            .map(Did)
            .map_err(|_| ParseDidError::InvalidKey)
    }

    /// The identity whose public key is `bytes`, which must be exactly 32 bytes long.
    pub fn from_public_key_slice(bytes: &[u8]) -> Result<Did, ParseDidError> {
        let bytes: &[u8; 32] = bytes.try_into().map_err(|_| ParseDidError::InvalidLength {
            expected: 32,
            found: bytes.len(),
        })?;
        Did::from_public_key(bytes)
    }

    /// The 32 bytes of the Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Checks that `signature` was made over `message` by this identity's secret key.
    ///
    /// Uses strict verification: small-order keys and non-canonical signatures are refused.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), VerifyError> {
        let signature = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| VerifyError::BadSignature)
    }

    /// The multibase part (`z6Mk…`), without `did:key:`.
    pub fn fingerprint(&self) -> String {
        let mut payload = [0u8; DECODED_LEN];
        payload[..2].copy_from_slice(&ED25519_PUB_MULTICODEC);
        payload[2..].copy_from_slice(self.0.as_bytes());
        let mut out = String::with_capacity(49);
        out.push(BASE58BTC);
        out.push_str(&bs58::encode(payload).into_string());
        out
    }

    /// A short form for logs and tables: the last eight characters of the fingerprint.
    pub fn short(&self) -> String {
        let fingerprint = self.fingerprint();
        let start = fingerprint.len().saturating_sub(8);
        fingerprint[start..].to_owned()
    }

    pub(crate) fn from_verifying_key(key: VerifyingKey) -> Did {
        Did(key)
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DID_KEY_PREFIX}{}", self.fingerprint())
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({self})")
    }
}

impl FromStr for Did {
    type Err = ParseDidError;

    fn from_str(s: &str) -> Result<Did, ParseDidError> {
        let multibase = s
            .strip_prefix(DID_KEY_PREFIX)
            .ok_or(ParseDidError::NotDidKey)?;
        let mut chars = multibase.chars();
        match chars.next() {
            Some(BASE58BTC) => {}
            Some(other) => return Err(ParseDidError::UnsupportedMultibase(other)),
            None => return Err(ParseDidError::Empty),
        }
        let encoded = chars.as_str();
        // A valid identifier is 48 base58 characters; refuse long input before decoding it.
        if encoded.len() > 64 {
            return Err(ParseDidError::InvalidLength {
                expected: DECODED_LEN,
                found: encoded.len() * 3 / 4,
            });
        }
        let decoded = bs58::decode(encoded)
            .into_vec()
            .map_err(|e| ParseDidError::InvalidBase58(e.to_string()))?;
        let (codec, key) = read_varint(&decoded).ok_or(ParseDidError::InvalidLength {
            expected: DECODED_LEN,
            found: decoded.len(),
        })?;
        if codec != 0xed {
            return Err(ParseDidError::UnsupportedMulticodec(codec));
        }
        if decoded.len() != DECODED_LEN {
            return Err(ParseDidError::InvalidLength {
                expected: DECODED_LEN,
                found: decoded.len(),
            });
        }
        Did::from_public_key_slice(key)
    }
}

/// Reads an unsigned LEB128 varint of at most 9 bytes; returns the value and the rest.
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, byte) in bytes.iter().enumerate().take(9) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Why a string is not a valid Ed25519 `did:key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseDidError {
    /// The string does not start with `did:key:`.
    #[error("not a did:key identifier: it must start with \"did:key:\"")]
    NotDidKey,
    /// Nothing follows `did:key:`.
    #[error("did:key identifier is empty after \"did:key:\"")]
    Empty,
    /// The multibase prefix is not `z` (base58btc).
    #[error("unsupported multibase prefix {0:?} in did:key: only 'z' (base58btc) is supported")]
    UnsupportedMultibase(char),
    /// The key part is not valid base58btc.
    #[error("did:key is not valid base58btc: {0}")]
    InvalidBase58(String),
    /// The multicodec is not Ed25519's public key (`0xed`).
    #[error("unsupported key type in did:key: multicodec {0:#x}, only Ed25519 (0xed) is supported")]
    UnsupportedMulticodec(u64),
    /// The decoded key has the wrong number of bytes.
    #[error("did:key has the wrong length: expected {expected} bytes, found {found}")]
    InvalidLength {
        /// Bytes an Ed25519 key needs.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// The 32 bytes are not a point on the Ed25519 curve.
    #[error("did:key does not hold a valid Ed25519 public key")]
    InvalidKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_distinct() {
        let good = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp";
        assert!(good.parse::<Did>().is_ok());
        assert_eq!(
            "did:web:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp".parse::<Did>(),
            Err(ParseDidError::NotDidKey)
        );
        assert_eq!("did:key:".parse::<Did>(), Err(ParseDidError::Empty));
        assert_eq!(
            "did:key:f6MkiTBz".parse::<Did>(),
            Err(ParseDidError::UnsupportedMultibase('f'))
        );
        assert!(matches!(
            "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDoo0p".parse::<Did>(),
            Err(ParseDidError::InvalidBase58(_))
        ));
        // A secp256k1 did:key (multicodec 0xe7).
        assert_eq!(
            "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme".parse::<Did>(),
            Err(ParseDidError::UnsupportedMulticodec(0xe7))
        );
        let mut short = vec![0xed, 0x01];
        short.extend_from_slice(&[9u8; 31]);
        assert_eq!(
            format!("did:key:z{}", bs58::encode(&short).into_string()).parse::<Did>(),
            Err(ParseDidError::InvalidLength {
                expected: 34,
                found: 33
            })
        );
    }

    #[test]
    fn short_is_the_tail_of_the_fingerprint() {
        let did: Did = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
            .parse()
            .expect("valid");
        assert_eq!(did.short(), "X3mDooWp");
    }
}
