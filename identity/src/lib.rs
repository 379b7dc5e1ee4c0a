//! Who a Mnemon node is: Ed25519 keys, `did:key` identifiers, signatures and the key file.
//!
//! The principal types are [`Keypair`] (a node's secret signing key), [`Did`] (its public
//! identity, written `did:key:z6Mk…`) and [`Signature`]. [`KeyFile`] stores a keypair on
//! disk with mode `0600`, optionally sealed with a passphrase (Argon2id +
//! XChaCha20-Poly1305).
//!
//! This crate never reads the clock and does no I/O beyond the key file.

mod did;
#[cfg(test)]
mod did_vectors;
mod keyfile;
mod keypair;
pub mod private;
mod signature;
mod ticket;

pub use did::{Did, ParseDidError};
pub use keyfile::{KeyFile, KeyFileError, SealParams};
pub use keypair::Keypair;
pub use signature::{Signature, SignatureError, VerifyError};
pub use ticket::{Invite, MAX_ADDRESS_LEN, MAX_ADDRESSES, MAX_TICKET_LEN, Ticket, TicketError};
