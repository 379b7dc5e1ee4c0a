//! Sharing: who may read and write a collection, as an append-only log signed by its owner.
//!
//! A collection's owner grants a DID the role `read` or `write`, or revokes it, by appending
//! an [`AclOp`] with the next sequence number and signing it. Every node that holds the
//! collection keeps the same log and folds it into the current members; a node accepts an
//! operation only if its signature is the owner's and its number is the next one, so two
//! nodes that hold the same number of operations hold the same log.
//!
//! The collection itself travels as a [`SignedDescriptor`] (id, name, owner, creation time,
//! signed by the owner), so a node that joins learns the owner from the owner's own
//! signature, never from the peer that relayed it. Deletions travel as
//! [`SignedTombstone`]s, signed by the node that deleted.
//!
//! Signatures are over a domain string and the record's postcard encoding; these types are
//! what crosses the wire, so their encoding is part of the protocol.

use std::collections::BTreeMap;
use std::fmt;

use mnemon_identity::{Did, Keypair, Signature};
use serde::{Deserialize, Serialize};

use crate::id::{CollectionId, MemoryId, Timestamp};

const ACL_DOMAIN: &[u8] = b"mnemon-acl-1\0";
const DESCRIPTOR_DOMAIN: &[u8] = b"mnemon-collection-1\0";
pub(crate) const TOMBSTONE_DOMAIN: &[u8] = b"mnemon-tombstone-1\0";

/// What a member may do in a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Receive the collection's memories.
    Read,
    /// Receive them and change them (add, edit, delete).
    Write,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
        })
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            other => Err(format!("unknown role {other:?}: use read or write")),
        }
    }
}

/// What a DID may do in a collection, the owner included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// The collection's owner: everything, including changing the ACL.
    Owner,
    /// A member with a role.
    Member(Role),
}

impl Access {
    /// Whether changes by this DID are accepted.
    pub fn can_write(self) -> bool {
        matches!(self, Access::Owner | Access::Member(Role::Write))
    }
}

/// One change of a collection's membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AclAction {
    /// `member` gets `role` (replacing any earlier role).
    Grant {
        /// The member's public key.
        member: [u8; 32],
        /// The role.
        role: Role,
    },
    /// `member` loses access.
    Revoke {
        /// The member's public key.
        member: [u8; 32],
    },
    /// The collection is called `name` from now on (the owner renamed it; members show
    /// the new name once this operation reaches them).
    Rename {
        /// The new name.
        name: String,
    },
}

impl AclAction {
    /// The member the action is about (`None` for a rename).
    pub fn member(&self) -> Option<[u8; 32]> {
        match self {
            AclAction::Grant { member, .. } | AclAction::Revoke { member } => Some(*member),
            AclAction::Rename { .. } => None,
        }
    }
}

/// Whether `name` may name a collection or a node: 1 to 64 characters after trimming, no
/// control characters and no invisible ones that reorder or hide text (a name from a peer
/// must not pass for another). (A local collection name also may not read as a collection
/// id; see the store.)
pub(crate) fn acceptable_name(name: &str) -> bool {
    let name = name.trim();
    !name.is_empty()
        && name.chars().count() <= 64
        && !name.chars().any(|c| c.is_control() || invisible(c))
}

/// Format characters that show nothing or reorder what follows: soft hyphen, zero-width
/// marks and joiners, bidirectional embeddings, overrides and isolates, word joiners, the
/// byte-order mark.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
    )
}

/// An operation of a collection's ACL log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclOp {
    /// The collection, as its 128-bit id.
    pub collection: u128,
    /// Position in the log, from 1.
    pub seq: u64,
    /// What changes.
    pub action: AclAction,
    /// When the owner made it (milliseconds since the Unix epoch).
    pub at: i64,
}

/// An [`AclOp`] with the owner's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAclOp {
    /// The operation.
    pub op: AclOp,
    /// The owner's signature over `"mnemon-acl-1\0" || postcard(op)`.
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

/// Why a signed record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The signature is not the claimed signer's.
    #[error("{0} has a signature that does not match")]
    BadSignature(&'static str),
    /// The claimed signer is not a valid Ed25519 key.
    #[error("{0} names a signer that is not an Ed25519 key")]
    BadSigner(&'static str),
    /// The record does not fit the rest of what is known.
    #[error("{0}")]
    Invalid(String),
}

fn signed_message(domain: &[u8], body: &impl Serialize) -> Vec<u8> {
    let mut message = domain.to_vec();
    // postcard encoding of these plain structs cannot fail.
    message.extend(postcard::to_allocvec(body).unwrap_or_default());
    message
}

fn check(
    what: &'static str,
    signer: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<Did, RecordError> {
    let did = Did::from_public_key(signer).map_err(|_| RecordError::BadSigner(what))?;
    did.verify(message, &Signature::from_bytes(*signature))
        .map_err(|_| RecordError::BadSignature(what))?;
    Ok(did)
}

impl SignedAclOp {
    /// Signs `op` as the owner `keypair`.
    pub fn sign(keypair: &Keypair, op: AclOp) -> SignedAclOp {
        let signature = *keypair.sign(&signed_message(ACL_DOMAIN, &op)).as_bytes();
        SignedAclOp { op, signature }
    }

    /// Checks the signature against the collection's `owner`.
    pub fn verify(&self, owner: &Did) -> Result<(), RecordError> {
        check(
            "ACL operation",
            owner.public_key(),
            &signed_message(ACL_DOMAIN, &self.op),
            &self.signature,
        )
        .map(|_| ())
    }
}

/// Folds a collection's log (in sequence order) into its current members.
pub fn fold_members<'a>(ops: impl IntoIterator<Item = &'a AclOp>) -> BTreeMap<[u8; 32], Role> {
    let mut members = BTreeMap::new();
    for op in ops {
        match op.action {
            AclAction::Grant { member, role } => {
                members.insert(member, role);
            }
            AclAction::Revoke { member } => {
                members.remove(&member);
            }
            AclAction::Rename { .. } => {}
        }
    }
    members
}

/// What a collection is: sent to a node that joins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// The collection id.
    pub id: u128,
    /// Its name.
    pub name: String,
    /// The owner's public key.
    pub owner: [u8; 32],
    /// When it was created (milliseconds since the Unix epoch).
    pub created_at: i64,
}

/// A [`Descriptor`] with the owner's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDescriptor {
    /// The descriptor.
    pub descriptor: Descriptor,
    /// The owner's signature over `"mnemon-collection-1\0" || postcard(descriptor)`.
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

impl SignedDescriptor {
    pub(crate) fn sign(keypair: &Keypair, descriptor: Descriptor) -> SignedDescriptor {
        let signature = *keypair
            .sign(&signed_message(DESCRIPTOR_DOMAIN, &descriptor))
            .as_bytes();
        SignedDescriptor {
            descriptor,
            signature,
        }
    }

    /// Checks the owner's signature; returns the owner.
    pub fn verify(&self) -> Result<Did, RecordError> {
        let name = &self.descriptor.name;
        if !acceptable_name(name) {
            return Err(RecordError::Invalid(format!(
                "collection name {:?} is not acceptable",
                name.chars().take(80).collect::<String>()
            )));
        }
        check(
            "collection descriptor",
            &self.descriptor.owner,
            &signed_message(DESCRIPTOR_DOMAIN, &self.descriptor),
            &self.signature,
        )
    }

    /// The collection id.
    pub fn id(&self) -> CollectionId {
        CollectionId::from_u128(self.descriptor.id)
    }
}

/// A deleted memory, signed by the node that deleted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTombstone {
    /// The memory.
    pub memory: u128,
    /// Its collection.
    pub collection: u128,
    /// When it was deleted (milliseconds since the Unix epoch).
    pub deleted_at: i64,
    /// Who deleted it.
    pub author: [u8; 32],
    /// The author's signature over `"mnemon-tombstone-1\0" || collection || memory ||
    /// deleted_at` (ids as 16 big-endian bytes, the time as 8).
    #[serde(with = "sig_bytes")]
    pub signature: [u8; 64],
}

pub(crate) fn tombstone_message(collection: CollectionId, id: MemoryId, at: Timestamp) -> Vec<u8> {
    let mut message = Vec::with_capacity(TOMBSTONE_DOMAIN.len() + 40);
    message.extend_from_slice(TOMBSTONE_DOMAIN);
    message.extend_from_slice(&collection.to_bytes());
    message.extend_from_slice(&id.to_bytes());
    message.extend_from_slice(&at.as_millis().to_be_bytes());
    message
}

impl SignedTombstone {
    /// Checks the author's signature; returns the author.
    pub fn verify(&self) -> Result<Did, RecordError> {
        check(
            "tombstone",
            &self.author,
            &tombstone_message(
                CollectionId::from_u128(self.collection),
                MemoryId::from_u128(self.memory),
                Timestamp::from_millis(self.deleted_at),
            ),
            &self.signature,
        )
    }
}

/// Serde for 64-byte signatures (serde's derive stops at 32-element arrays).
mod sig_bytes {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    struct SigVisitor;

    impl<'de> Visitor<'de> for SigVisitor {
        type Value = [u8; 64];

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a 64-byte signature")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<[u8; 64], E> {
            v.try_into()
                .map_err(|_| E::custom(format!("a signature must be 64 bytes, not {}", v.len())))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 64], A::Error> {
            let mut out = [0u8; 64];
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            if seq.next_element::<u8>()?.is_some() {
                return Err(A::Error::custom("a signature must be 64 bytes"));
            }
            Ok(out)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        d.deserialize_bytes(SigVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_ops_verify_only_against_their_owner() {
        let owner = Keypair::generate();
        let other = Keypair::generate();
        let op = AclOp {
            collection: 7,
            seq: 1,
            action: AclAction::Grant {
                member: *other.did().public_key(),
                role: Role::Write,
            },
            at: 1,
        };
        let signed = SignedAclOp::sign(&owner, op.clone());
        signed.verify(&owner.did()).expect("owner's signature");
        assert!(signed.verify(&other.did()).is_err());
        let mut tampered = signed.clone();
        tampered.op.action = AclAction::Grant {
            member: *other.did().public_key(),
            role: Role::Read,
        };
        assert_eq!(
            tampered.verify(&owner.did()),
            Err(RecordError::BadSignature("ACL operation"))
        );
        // It survives the wire.
        let bytes = postcard::to_allocvec(&signed).expect("encode");
        let back: SignedAclOp = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, signed);
    }

    #[test]
    fn the_log_folds_into_members() {
        let a = [1u8; 32];
        let b = [2u8; 32];
        let op = |seq, action| AclOp {
            collection: 1,
            seq,
            action,
            at: 0,
        };
        let log = [
            op(
                1,
                AclAction::Grant {
                    member: a,
                    role: Role::Read,
                },
            ),
            op(
                2,
                AclAction::Grant {
                    member: b,
                    role: Role::Write,
                },
            ),
            op(
                3,
                AclAction::Grant {
                    member: a,
                    role: Role::Write,
                },
            ),
            op(4, AclAction::Revoke { member: b }),
        ];
        let members = fold_members(&log);
        assert_eq!(members.get(&a), Some(&Role::Write));
        assert_eq!(members.get(&b), None);
    }

    #[test]
    fn descriptors_refuse_forged_owners_and_bad_names() {
        let owner = Keypair::generate();
        let descriptor = Descriptor {
            id: 9,
            name: "family".into(),
            owner: *owner.did().public_key(),
            created_at: 0,
        };
        let signed = SignedDescriptor::sign(&owner, descriptor.clone());
        assert_eq!(signed.verify(), Ok(owner.did()));
        let mut forged = signed.clone();
        forged.descriptor.owner = *Keypair::generate().did().public_key();
        assert!(forged.verify().is_err());
        let bad = SignedDescriptor::sign(
            &owner,
            Descriptor {
                name: "a\u{0}b".into(),
                ..descriptor
            },
        );
        assert!(matches!(bad.verify(), Err(RecordError::Invalid(_))));
    }
}
