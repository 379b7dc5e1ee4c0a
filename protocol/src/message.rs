//! The messages of a sync session, encoded with postcard inside frames.
//!
//! Every message is one frame; the payload starts with the protocol version (a varint), so
//! a node can tell an old peer from garbage. Collections and memories are named by their
//! 128-bit ids; change hashes are 32 bytes.

use mnemon_crdt::{SignedAclOp, SignedChange, SignedDescriptor, SignedTombstone};
use serde::{Deserialize, Serialize};

use crate::frame::MAX_FRAME_LEN;

/// The version of the messages below. A peer with another version gets an error frame.
///
/// 2: a memory's content above 64 KiB may be one automerge string rather than a text
/// (`mnemon_crdt::MAX_MERGED_TEXT_BYTES`), which a version-1 node would read as empty.
/// 3: [`Message::InviteRefused`]. 4: [`Message::Members`]. 5: ACL operations may rename
/// a collection (`AclAction::Rename`), which a version-4 node cannot decode. 6: a content
/// above 64 KiB is kept beside its document (`mnemon_crdt::TextRef`) and travels with the
/// change that set it ([`WireChange::text`]).
pub const PROTOCOL_VERSION: u16 = 6;

/// Most members one [`Message::Members`] introduces.
pub const MAX_INTRODUCED: usize = 64;
/// Most addresses per introduced member, and the longest address.
pub const MAX_MEMBER_ADDRS: usize = 8;
/// The longest address an introduction carries, in bytes.
pub const MAX_ADDR_LEN: usize = 256;

/// Where another member of a collection was last seen listening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddrs {
    /// The member's public key (its DID).
    pub member: [u8; 32],
    /// Its listen addresses, as multiaddr text.
    pub addrs: Vec<String>,
}

/// Most entries of any list in one message; larger lists are split over messages.
pub const MAX_BATCH: usize = 4096;

/// A collection one side offers to sync: sent only for collections the receiver may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// The owner's signed description of the collection.
    pub descriptor: SignedDescriptor,
    /// How many ACL operations the sender holds.
    pub acl_seq: u64,
}

/// One change with its author's signature, as it crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireChange {
    /// The automerge change chunk.
    pub bytes: Vec<u8>,
    /// The author's signature over the change hash.
    pub signature: Vec<u8>,
    /// The long text the change sets, if it set the memory's current one (see
    /// `mnemon_crdt::SignedChange::text`).
    pub text: Option<String>,
}

impl WireChange {
    /// From the store's form.
    pub fn from_signed(change: SignedChange) -> WireChange {
        WireChange {
            bytes: change.bytes,
            signature: change.signature.as_bytes().to_vec(),
            text: change.text,
        }
    }

    /// Into the store's form (the change and its text moved, not copied); `None` if the
    /// signature is not 64 bytes.
    pub fn into_signed(self) -> Option<SignedChange> {
        Some(SignedChange {
            signature: mnemon_identity::Signature::from_slice(&self.signature).ok()?,
            bytes: self.bytes,
            text: self.text,
        })
    }
}

/// A memory's heads (or, with `exact`, every change hash it holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocHeads {
    /// The memory.
    pub memory: u128,
    /// Change hashes.
    pub hashes: Vec<[u8; 32]>,
}

/// The changes of one memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocChanges {
    /// The memory.
    pub memory: u128,
    /// Its changes, in causal order.
    pub changes: Vec<WireChange>,
}

/// The longest reason an [`Message::InviteRefused`] carries.
pub const MAX_REASON: usize = 512;

/// The digest of a collection's summary that [`Message::Fingerprint`] carries: SHA-256 of
/// the live memories' (id, heads digest) and the deleted memories' ids, each sorted, cut
/// to 16 bytes.
pub fn summary_digest(entries: &[(u128, [u8; 16])], tombstones: &[u128]) -> [u8; 16] {
    use sha2::Digest as _;
    let mut entries = entries.to_vec();
    entries.sort_unstable();
    let mut tombstones = tombstones.to_vec();
    tombstones.sort_unstable();
    let mut hash = sha2::Sha256::new();
    hash.update(b"mnemon-summary-1");
    hash.update((entries.len() as u64).to_be_bytes());
    for (memory, heads) in &entries {
        hash.update(memory.to_be_bytes());
        hash.update(heads);
    }
    hash.update((tombstones.len() as u64).to_be_bytes());
    for memory in &tombstones {
        hash.update(memory.to_be_bytes());
    }
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&hash.finalize()[..16]);
    digest
}

/// A message of the sync session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// The first message of each side: the collections it offers the other.
    Hello {
        /// The collections offered.
        offers: Vec<Offer>,
        /// Invite capabilities the sender redeems (joiner to owner).
        redeem: Vec<Vec<u8>>,
    },
    /// More collections offered (after a share, a join, to accept an offer, or again
    /// because the peer never answered). `answer` marks a reply to an offer for a
    /// collection the sender already syncs (it tells a peer that lost the sender's first
    /// offer); an answer is never answered.
    Offer {
        /// The collections offered.
        offers: Vec<Offer>,
        /// Whether this replies to the receiver's offer.
        answer: bool,
    },
    /// ACL operations of a collection the receiver holds fewer of.
    Acl {
        /// The collection.
        collection: u128,
        /// The operations, in order.
        ops: Vec<SignedAclOp>,
    },
    /// What the sender holds of a collection: a digest of each live memory's heads, and
    /// the memories it knows were deleted. `last` is false when more parts follow.
    Summary {
        /// The collection.
        collection: u128,
        /// (memory, digest of its heads).
        entries: Vec<(u128, [u8; 16])>,
        /// Deleted memories.
        tombstones: Vec<u128>,
        /// How many ACL operations the sender holds.
        acl_seq: u64,
        /// Whether this is the last part of the summary.
        last: bool,
    },
    /// The sender's heads of memories that differ (empty: the sender lacks the memory).
    Heads {
        /// The collection.
        collection: u128,
        /// Per memory.
        docs: Vec<DocHeads>,
    },
    /// Every change hash the sender holds of memories whose heads it did not know, so the
    /// receiver can send exactly what is missing.
    Have {
        /// The collection.
        collection: u128,
        /// Per memory.
        docs: Vec<DocHeads>,
    },
    /// Changes.
    Changes {
        /// The collection.
        collection: u128,
        /// Per memory.
        docs: Vec<DocChanges>,
    },
    /// Deletions.
    Tombstones {
        /// The collection.
        collection: u128,
        /// The signed tombstones.
        tombstones: Vec<SignedTombstone>,
    },
    /// The sender closes the session; the reason is for the receiver's log.
    Close {
        /// Why.
        reason: String,
    },
    /// What the sender holds of a collection, in 16 bytes: a digest of its summary (every
    /// live memory's heads and every deletion). Sent instead of the summary once the two
    /// sides have compared: equal digests mean nothing to do, so an idle pair costs bytes
    /// per minute, not a summary per memory; a different one is answered with the summary.
    Fingerprint {
        /// The collection.
        collection: u128,
        /// The digest ([`summary_digest`]).
        digest: [u8; 16],
        /// How many ACL operations the sender holds.
        acl_seq: u64,
    },
    /// Where the other members of a collection both sides sync can be reached, as the
    /// sender sees them connected: members meet, and relay to each other, without the
    /// owner. Only members of the collection (by the receiver's own ACL log) are taken.
    Members {
        /// The collection.
        collection: u128,
        /// The members and their addresses.
        peers: Vec<MemberAddrs>,
    },
    /// The owner refused an invite the receiver redeemed (used already, expired, not
    /// known): the joiner stops waiting for it and shows why.
    InviteRefused {
        /// The invite's nonce.
        nonce: [u8; 16],
        /// Why, for people (at most [`MAX_REASON`] bytes).
        reason: String,
    },
}

impl Message {
    /// A short name for logs and per-kind counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Offer { .. } => "offer",
            Message::Acl { .. } => "acl",
            Message::Summary { .. } => "summary",
            Message::Heads { .. } => "heads",
            Message::Have { .. } => "have",
            Message::Changes { .. } => "changes",
            Message::Tombstones { .. } => "tombstones",
            Message::Close { .. } => "close",
            Message::Fingerprint { .. } => "fingerprint",
            Message::InviteRefused { .. } => "invite_refused",
            Message::Members { .. } => "members",
        }
    }

    /// The collection the message is about, if one.
    pub fn collection(&self) -> Option<u128> {
        match self {
            Message::Acl { collection, .. }
            | Message::Summary { collection, .. }
            | Message::Heads { collection, .. }
            | Message::Have { collection, .. }
            | Message::Changes { collection, .. }
            | Message::Tombstones { collection, .. }
            | Message::Fingerprint { collection, .. }
            | Message::Members { collection, .. } => Some(*collection),
            _ => None,
        }
    }

    /// The message as a frame payload: the version, then the message.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain data into a Vec cannot fail.
        postcard::to_allocvec(&(PROTOCOL_VERSION, self)).unwrap_or_default()
    }

    /// Parses a frame payload.
    pub fn decode(payload: &[u8]) -> Result<Message, DecodeError> {
        if payload.len() > MAX_FRAME_LEN {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        let (version, rest): (u16, &[u8]) = postcard::take_from_bytes(payload)
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::Version(version));
        }
        let (message, rest): (Message, &[u8]) =
            postcard::take_from_bytes(rest).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} bytes after the message",
                rest.len()
            )));
        }
        message.check_limits()?;
        Ok(message)
    }

    fn check_limits(&self) -> Result<(), DecodeError> {
        let len = match self {
            Message::Hello { offers, redeem } => offers.len().max(redeem.len()),
            Message::Offer { offers, .. } => offers.len(),
            Message::Acl { ops, .. } => ops.len(),
            Message::Summary {
                entries,
                tombstones,
                ..
            } => entries.len().max(tombstones.len()),
            Message::Heads { docs, .. } | Message::Have { docs, .. } => docs.len(),
            Message::Changes { docs, .. } => docs.len(),
            Message::Tombstones { tombstones, .. } => tombstones.len(),
            Message::Close { .. } | Message::Fingerprint { .. } => 0,
            Message::InviteRefused { reason, .. } if reason.len() > MAX_REASON => {
                return Err(DecodeError::Limit {
                    kind: self.kind(),
                    len: reason.len(),
                });
            }
            Message::InviteRefused { .. } => 0,
            Message::Members { peers, .. } => {
                let too_long = peers.iter().find_map(|p| {
                    (p.addrs.len() > MAX_MEMBER_ADDRS)
                        .then_some(p.addrs.len())
                        .or_else(|| p.addrs.iter().map(String::len).find(|l| *l > MAX_ADDR_LEN))
                });
                match too_long {
                    Some(len) => {
                        return Err(DecodeError::Limit {
                            kind: self.kind(),
                            len,
                        });
                    }
                    None if peers.len() > MAX_INTRODUCED => {
                        return Err(DecodeError::Limit {
                            kind: self.kind(),
                            len: peers.len(),
                        });
                    }
                    None => 0,
                }
            }
        };
        if len > MAX_BATCH {
            return Err(DecodeError::Limit {
                kind: self.kind(),
                len,
            });
        }
        Ok(())
    }
}

/// Why a frame is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is not a message of this version.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The peer speaks another version.
    #[error("the peer speaks protocol version {0}; this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
    /// A list is longer than allowed.
    #[error("a {kind} message with {len} entries; the limit is {MAX_BATCH}")]
    Limit {
        /// The message kind.
        kind: &'static str,
        /// The length found.
        len: usize,
    },
    /// The payload is larger than a frame may be.
    #[error("a message of {0} bytes is larger than a frame may be")]
    TooLarge(usize),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn messages_round_trip_and_other_versions_are_named() {
        let message = Message::Heads {
            collection: 5,
            docs: vec![DocHeads {
                memory: 9,
                hashes: vec![[3; 32]],
            }],
        };
        assert_eq!(Message::decode(&message.encode()), Ok(message.clone()));
        for version in [PROTOCOL_VERSION - 1, PROTOCOL_VERSION + 1] {
            let other = postcard::to_allocvec(&(version, &message)).expect("encode");
            assert_eq!(Message::decode(&other), Err(DecodeError::Version(version)));
        }
        let mut trailing = message.encode();
        trailing.push(0);
        assert!(matches!(
            Message::decode(&trailing),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn oversized_lists_are_refused() {
        let message = Message::Summary {
            collection: 1,
            entries: vec![(1, [0; 16]); MAX_BATCH + 1],
            tombstones: vec![],
            acl_seq: 0,
            last: true,
        };
        assert!(matches!(
            Message::decode(&message.encode()),
            Err(DecodeError::Limit {
                kind: "summary",
                ..
            })
        ));
    }

    #[test]
    fn introductions_are_bounded() {
        let member = |addrs: Vec<String>| MemberAddrs {
            member: [1; 32],
            addrs,
        };
        let ok = Message::Members {
            collection: 1,
            peers: vec![member(vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()])],
        };
        assert_eq!(Message::decode(&ok.encode()), Ok(ok));
        for peers in [
            vec![member(vec!["/ip4/127.0.0.1/udp/1/quic-v1".into()]); MAX_INTRODUCED + 1],
            vec![member(vec!["/ip4/127.0.0.1".into(); MAX_MEMBER_ADDRS + 1])],
            vec![member(vec!["x".repeat(MAX_ADDR_LEN + 1)])],
        ] {
            let message = Message::Members {
                collection: 1,
                peers,
            };
            assert!(matches!(
                Message::decode(&message.encode()),
                Err(DecodeError::Limit {
                    kind: "members",
                    ..
                })
            ));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn mutated_messages_never_panic(flip in 0usize..200, value in any::<u8>()) {
            let message = Message::Close { reason: "bye".into() };
            let mut bytes = message.encode();
            let at = flip % bytes.len();
            bytes[at] = value;
            let _ = Message::decode(&bytes);
        }
    }
}
