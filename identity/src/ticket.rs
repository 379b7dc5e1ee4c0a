//! Invite tickets: a signed, expiring, single-use capability to join a collection, with
//! the addresses where its owner's node listens.
//!
//! A ticket is written `mnemon1` followed by lowercase base32 (RFC 4648, no padding) of:
//!
//! | bytes | field                                                        |
//! |-------|--------------------------------------------------------------|
//! | 1     | format version, 1                                            |
//! | 16    | collection id                                                |
//! | 32    | owner's Ed25519 public key                                   |
//! | 1     | role: 0 read, 1 write                                        |
//! | 8     | expiry, milliseconds since the Unix epoch, big-endian        |
//! | 16    | nonce (what makes it single-use)                             |
//! | 64    | owner's signature over `"mnemon-invite-1\0"` and bytes 1..74 |
//! | 1     | number of addresses (at most [`MAX_ADDRESSES`])              |
//! | 2 + n | each address: u16 big-endian length, then UTF-8              |
//!
//! The owner's node checks the signature, the expiry and that the nonce was issued and not
//! yet redeemed; a joining node checks the signature and expiry before it dials. Time is a
//! parameter: this crate never reads the clock.

use std::fmt;
use std::str::FromStr;

use crate::{Did, Keypair, Signature};

const PREFIX: &str = "mnemon1";
const VERSION: u8 = 1;
const DOMAIN: &[u8] = b"mnemon-invite-1\0";
/// Most addresses in a ticket.
pub const MAX_ADDRESSES: usize = 16;
/// Longest address in a ticket, in bytes.
pub const MAX_ADDRESS_LEN: usize = 512;
/// Longest ticket accepted, in characters.
pub const MAX_TICKET_LEN: usize = 16 * 1024;

/// The capability an invite grants, signed by the collection's owner.
#[derive(Clone, PartialEq, Eq)]
pub struct Invite {
    /// The collection's 128-bit id, big-endian.
    pub collection: [u8; 16],
    /// The owner, who signed it.
    pub owner: Did,
    /// Whether the joiner may write (else read only).
    pub write: bool,
    /// Expiry, milliseconds since the Unix epoch.
    pub expires_at: i64,
    /// Random; the owner's node accepts each nonce once.
    pub nonce: [u8; 16],
    /// The owner's signature.
    pub signature: Signature,
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invite")
            .field("owner", &self.owner.short())
            .field("write", &self.write)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An [`Invite`] with the addresses to dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The capability.
    pub invite: Invite,
    /// Where the owner's node listens (multiaddrs, as text).
    pub addresses: Vec<String>,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TicketError {
    /// It does not start with `mnemon1`.
    #[error("not a Mnemon ticket: it must start with {PREFIX}")]
    Prefix,
    /// It is longer than accepted.
    #[error("the ticket is {0} characters; the limit is {MAX_TICKET_LEN}")]
    TooLong(usize),
    /// The base32 is broken.
    #[error("the ticket is damaged: {0}")]
    Encoding(String),
    /// A newer format.
    #[error("ticket format {0} is newer than this mnemon understands")]
    Version(u8),
    /// The bytes end early or have a field out of range.
    #[error("the ticket is damaged: {0}")]
    Malformed(&'static str),
    /// The signature does not match.
    #[error("the ticket's signature does not match its owner")]
    BadSignature,
    /// Its time is over.
    #[error("the ticket expired")]
    Expired,
}

impl Invite {
    /// Makes and signs an invite as `owner`.
    pub fn sign(
        owner: &Keypair,
        collection: [u8; 16],
        write: bool,
        expires_at: i64,
        nonce: [u8; 16],
    ) -> Invite {
        let did = owner.did();
        let mut invite = Invite {
            collection,
            owner: did,
            write,
            expires_at,
            nonce,
            signature: Signature::from_bytes([0; 64]),
        };
        invite.signature = owner.sign(&invite.message());
        invite
    }

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(73);
        out.extend_from_slice(&self.collection);
        out.extend_from_slice(self.owner.public_key());
        out.push(u8::from(self.write));
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out
    }

    fn message(&self) -> Vec<u8> {
        let mut message = DOMAIN.to_vec();
        message.extend(self.body());
        message
    }

    /// Checks the owner's signature and that `now_ms` is before the expiry.
    pub fn verify(&self, now_ms: i64) -> Result<(), TicketError> {
        self.owner
            .verify(&self.message(), &self.signature)
            .map_err(|_| TicketError::BadSignature)?;
        if now_ms >= self.expires_at {
            return Err(TicketError::Expired);
        }
        Ok(())
    }

    /// The invite's bytes (version, body, signature), as a peer sends it to redeem it.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(self.body());
        out.extend_from_slice(self.signature.as_bytes());
        out
    }

    /// Parses an invite's bytes; returns it and the bytes after it.
    pub fn from_bytes(bytes: &[u8]) -> Result<(Invite, &[u8]), TicketError> {
        let mut r = Reader(bytes);
        let version = r.take::<1>()?[0];
        if version != VERSION {
            return Err(TicketError::Version(version));
        }
        let collection = r.take::<16>()?;
        let owner = Did::from_public_key(&r.take::<32>()?)
            .map_err(|_| TicketError::Malformed("the owner is not an Ed25519 key"))?;
        let write = match r.take::<1>()?[0] {
            0 => false,
            1 => true,
            _ => return Err(TicketError::Malformed("unknown role")),
        };
        let expires_at = i64::from_be_bytes(r.take::<8>()?);
        let nonce = r.take::<16>()?;
        let signature = Signature::from_bytes(r.take::<64>()?);
        Ok((
            Invite {
                collection,
                owner,
                write,
                expires_at,
                nonce,
                signature,
            },
            r.0,
        ))
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], TicketError> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return Err(TicketError::Malformed("it ends early"));
        };
        self.0 = rest;
        Ok(*head)
    }
}

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = self.invite.to_bytes();
        let addresses: Vec<&String> = self
            .addresses
            .iter()
            .filter(|a| a.len() <= MAX_ADDRESS_LEN)
            .take(MAX_ADDRESSES)
            .collect();
        bytes.push(addresses.len() as u8);
        for a in addresses {
            bytes.extend_from_slice(&(a.len() as u16).to_be_bytes());
            bytes.extend_from_slice(a.as_bytes());
        }
        write!(
            f,
            "{PREFIX}{}",
            data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase()
        )
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    /// Parses a ticket; checks its form, not its signature or expiry ([`Invite::verify`]).
    fn from_str(text: &str) -> Result<Ticket, TicketError> {
        let text = text.trim();
        if text.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong(text.len()));
        }
        let body = text.strip_prefix(PREFIX).ok_or(TicketError::Prefix)?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|e| TicketError::Encoding(e.to_string()))?;
        let (invite, rest) = Invite::from_bytes(&bytes)?;
        let mut r = Reader(rest);
        let count = usize::from(r.take::<1>()?[0]);
        if count > MAX_ADDRESSES {
            return Err(TicketError::Malformed("too many addresses"));
        }
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(u16::from_be_bytes(r.take::<2>()?));
            if len > MAX_ADDRESS_LEN || len > r.0.len() {
                return Err(TicketError::Malformed("an address is too long"));
            }
            let (addr, rest) = r.0.split_at(len);
            r.0 = rest;
            addresses.push(
                std::str::from_utf8(addr)
                    .map_err(|_| TicketError::Malformed("an address is not UTF-8"))?
                    .to_owned(),
            );
        }
        if !r.0.is_empty() {
            return Err(TicketError::Malformed("bytes after the addresses"));
        }
        Ok(Ticket { invite, addresses })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ticket() -> (Keypair, Ticket) {
        let owner = Keypair::from_seed(&[7; 32]);
        let invite = Invite::sign(&owner, [1; 16], true, 10_000, [9; 16]);
        (
            owner,
            Ticket {
                invite,
                addresses: vec!["/ip4/127.0.0.1/udp/4001/quic-v1".into()],
            },
        )
    }

    #[test]
    fn tickets_round_trip_and_verify() {
        let (_, ticket) = ticket();
        let text = ticket.to_string();
        assert!(text.starts_with("mnemon1"));
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric()));
        let back: Ticket = text.parse().expect("parse");
        assert_eq!(back, ticket);
        back.invite.verify(9_999).expect("valid");
        assert_eq!(back.invite.verify(10_000), Err(TicketError::Expired));
    }

    #[test]
    fn tampered_and_foreign_tickets_are_refused() {
        let (_, mut ticket) = ticket();
        ticket.invite.write = false;
        assert_eq!(ticket.invite.verify(0), Err(TicketError::BadSignature));
        assert_eq!("mnemon2abc".parse::<Ticket>(), Err(TicketError::Prefix));
        assert!(matches!(
            "mnemon1!!!".parse::<Ticket>(),
            Err(TicketError::Encoding(_))
        ));
        assert!(matches!(
            "mnemon1aaaa".parse::<Ticket>(),
            Err(TicketError::Malformed(_) | TicketError::Version(_))
        ));
        let long = format!("mnemon1{}", "a".repeat(MAX_TICKET_LEN));
        assert!(matches!(
            long.parse::<Ticket>(),
            Err(TicketError::TooLong(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "mnemon1[a-z2-7]{0,400}") {
            let _ = text.parse::<Ticket>();
        }

        #[test]
        fn flipped_characters_never_verify(at in 7usize..200, c in "[a-z2-7]") {
            let (_, ticket) = ticket();
            let mut text = ticket.to_string();
            let at = at.min(text.len() - 1);
            text.replace_range(at..=at, &c);
            if let Ok(parsed) = text.parse::<Ticket>()
                && parsed != ticket
                && parsed.invite != ticket.invite
            {
                prop_assert!(parsed.invite.verify(0).is_err());
            }
        }
    }
}
