//! Mnemon's sync protocol, without I/O.
//!
//! - [`frame`](encode_frame): every message travels as a frame of a 4-byte big-endian
//!   length and that many payload bytes, with a hard upper bound ([`MAX_FRAME_LEN`]) so a
//!   peer cannot make a node allocate unbounded memory.
//! - [`Message`]: the versioned messages (postcard), with per-message list limits.
//! - [`Session`]: the sync session with one peer as a state machine: the driver feeds it
//!   messages and time, and sends what it outputs.
//! - [`sim`]: a deterministic simulator of several nodes with real in-memory stores over a
//!   faulty virtual network.
//!
//! This crate never does network I/O, never reads the clock and does not depend on tokio,
//! libp2p, quinn or redb (it reaches the store only through `mnemon-crdt`).

mod frame;
#[doc(hidden)]
pub mod fuzz_checks;
mod message;
mod session;
pub mod sim;
#[cfg(test)]
mod sim_tests;

pub use frame::{FrameDecoder, FrameError, MAX_FRAME_LEN, encode_frame};
pub use message::{
    DecodeError, DocChanges, DocHeads, MAX_ADDR_LEN, MAX_BATCH, MAX_INTRODUCED, MAX_MEMBER_ADDRS,
    MAX_REASON, MemberAddrs, Message, Offer, PROTOCOL_VERSION, WireChange, summary_digest,
};
pub use session::{Event, Output, Session, SessionConfig, SyncState, Traffic};

/// The libp2p stream protocol of the sync session.
pub const SYNC_PROTOCOL: &str = "/mnemon/sync/1";
