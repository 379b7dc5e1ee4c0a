//! Ed25519 keypairs and signatures.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey};
use zeroize::Zeroizing;

use crate::did::Did;
use crate::signature::Signature;

/// A node's secret signing key. Its public half is the node's [`Did`].
///
/// The secret is zeroed when the value is dropped and never printed by `Debug`.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// A fresh keypair from the operating system's random number generator.
    pub fn generate() -> Keypair {
        Keypair(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The keypair derived from a 32-byte secret seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Keypair {
        Keypair(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed. Handle with care; it is zeroed when dropped.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public identity of this keypair.
    pub fn did(&self) -> Did {
        Did::from_verifying_key(self.0.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature::from_bytes(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("did", &self.did())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{SignatureError, VerifyError};

    #[test]
    fn sign_and_verify() {
        let keypair = Keypair::generate();
        let signature = keypair.sign(b"remember the milk");
        assert_eq!(
            keypair.did().verify(b"remember the milk", &signature),
            Ok(())
        );
        assert_eq!(
            keypair.did().verify(b"remember the eggs", &signature),
            Err(VerifyError::BadSignature)
        );
        let other = Keypair::generate();
        assert_eq!(
            other.did().verify(b"remember the milk", &signature),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        let keypair = Keypair::from_seed(&[7u8; 32]);
        let printed = format!("{keypair:?}");
        assert!(printed.contains("did:key:z6Mk"));
        assert!(!printed.contains("0707"));
        assert!(!printed.contains("[7, 7"));
    }

    #[test]
    fn signature_length_is_checked() {
        assert_eq!(
            Signature::from_slice(&[0; 63]),
            Err(SignatureError::InvalidLength(63))
        );
        assert!(Signature::from_slice(&[0; 64]).is_ok());
    }
}
