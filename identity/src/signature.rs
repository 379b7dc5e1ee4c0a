//! Ed25519 signatures as bytes, and why they fail: what a DID verifies and a keypair
//! makes, so neither depends on the other for it.

use std::fmt;

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature([u8; 64]);

impl Signature {
    /// The signature held in `bytes`.
    pub fn from_bytes(bytes: [u8; 64]) -> Signature {
        Signature(bytes)
    }

    /// The signature held in `bytes`, which must be exactly 64 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Signature, SignatureError> {
        bytes
            .try_into()
            .map(Signature)
            .map_err(|_| SignatureError::InvalidLength(bytes.len()))
    }

    /// The 64 bytes of the signature.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Why bytes are not a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Ed25519 signatures are 64 bytes.
    #[error("a signature is 64 bytes, found {0}")]
    InvalidLength(usize),
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The signature was not made by this key over this message.
    #[error("signature does not match the signer's public key and the message")]
    BadSignature,
}
