//! Signed changes: every automerge change travels and rests with its author's signature.
//!
//! The author of a change is its automerge actor id, which is the author's 32-byte Ed25519
//! public key. The signature covers `"mnemon-change-1\0" || change hash`; the change hash is
//! automerge's SHA-256 over the change's bytes, so the signature covers every byte of the
//! change and, through its dependencies, its history.

use automerge::{Change, ChangeHash};
use mnemon_identity::{Did, Keypair, Signature};

use crate::memory::TextRef;

const CHANGE_DOMAIN: &[u8] = b"mnemon-change-1\0";

/// The bytes an author signs for the change with `hash`.
fn change_message(hash: &ChangeHash) -> [u8; 48] {
    let mut message = [0u8; 48];
    message[..16].copy_from_slice(CHANGE_DOMAIN);
    message[16..].copy_from_slice(&hash.0);
    message
}

/// Signs the change with `hash`.
pub(crate) fn sign_change(keypair: &Keypair, hash: &ChangeHash) -> Signature {
    keypair.sign(&change_message(hash))
}

/// An automerge change in its binary form with its author's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedChange {
    /// The change chunk, as automerge encodes it.
    pub bytes: Vec<u8>,
    /// The author's signature over the change hash.
    pub signature: Signature,
    /// The long text the change sets, kept beside the document ([`TextRef`]): sent with
    /// the change that set the memory's current text. A receiver takes it only as the text
    /// its merged document's signed reference names (by hash).
    pub text: Option<String>,
}

/// A change whose bytes parsed and whose signature matched its author.
#[derive(Debug)]
pub struct VerifiedChange {
    pub(crate) change: Change,
    pub(crate) author: Did,
    pub(crate) signature: Signature,
    /// The reference to the text that came with it (its hash and length).
    pub(crate) text: Option<TextRef>,
}

impl VerifiedChange {
    /// The author.
    pub fn author(&self) -> Did {
        self.author
    }

    /// The change hash.
    pub fn hash(&self) -> ChangeHash {
        self.change.hash()
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The bytes are not a valid automerge change (truncated, corrupted, bad checksum).
    #[error("malformed change: {0}")]
    Malformed(String),
    /// The change's actor is not an Ed25519 public key, so nobody can have signed it.
    #[error("change actor {0} is not an Ed25519 public key")]
    InvalidActor(String),
    /// The signature does not match the author and the change.
    #[error("change {hash} has a signature that does not match its author {author}")]
    BadSignature {
        /// The change hash.
        hash: String,
        /// The `did:key` of the claimed author.
        author: String,
    },
    /// The change is larger than accepted.
    #[error("change is {0} bytes; the limit is {MAX_CHANGE_BYTES}")]
    TooLarge(usize),
    /// The text that came with the change is longer than a memory's text may be.
    #[error("a change came with a text of {0} bytes; the limit is {max}", max = crate::MAX_CONTENT_BYTES)]
    TextTooLarge(usize),
}

/// Most changes of one memory accepted in one call of `Store::apply_changes`.
pub const MAX_APPLY_BATCH: usize = 10_000;
/// Largest change accepted from a peer.
pub const MAX_CHANGE_BYTES: usize = 16 * 1024 * 1024;

impl SignedChange {
    /// Signs `change` as `keypair` (whether or not it is the change's author: a mismatch
    /// is what [`SignedChange::verify`] catches).
    pub fn sign(keypair: &Keypair, change: &mut Change) -> SignedChange {
        SignedChange {
            bytes: change.bytes().into_owned(),
            signature: sign_change(keypair, &change.hash()),
            text: None,
        }
    }

    /// Parses the change and checks its signature against its author.
    pub fn verify(&self) -> Result<VerifiedChange, ChangeError> {
        if self.bytes.len() > MAX_CHANGE_BYTES {
            return Err(ChangeError::TooLarge(self.bytes.len()));
        }
        let change = Change::from_bytes(self.bytes.clone())
            .map_err(|e| ChangeError::Malformed(e.to_string()))?;
        // automerge's parser does not check the chunk's checksum field (bytes 4..8, the
        // first four bytes of the change hash); a flipped checksum is corruption too.
        let hash = change.hash();
        if self.bytes.get(4..8) != Some(&hash.0[..4]) {
            return Err(ChangeError::Malformed(
                "checksum does not match the change".into(),
            ));
        }
        let actor = change.actor_id();
        let author = Did::from_public_key_slice(actor.to_bytes())
            .map_err(|_| ChangeError::InvalidActor(actor.to_hex_string()))?;
        author
            .verify(&change_message(&hash), &self.signature)
            .map_err(|_| ChangeError::BadSignature {
                hash: hash.to_string(),
                author: author.to_string(),
            })?;
        // The text is not matched against the change's operations here (decoding a peer's
        // change before it is known to be allowed is automerge code a crafted change could
        // upset): it is named by its hash, and the store uses it only as the text the
        // merged document's signed reference names.
        let text = match &self.text {
            None => None,
            Some(text) if text.len() > crate::MAX_CONTENT_BYTES => {
                return Err(ChangeError::TextTooLarge(text.len()));
            }
            Some(text) => Some(TextRef::of(text)),
        };
        Ok(VerifiedChange {
            change,
            author,
            signature: self.signature,
            text,
        })
    }
}
