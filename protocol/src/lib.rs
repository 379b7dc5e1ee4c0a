//! Mnemon's sync wire format, without I/O.
//!
//! For now this crate holds the versioned protocol id and the frame codec: every message
//! travels as a frame of a 4-byte big-endian length and that many payload bytes, with a
//! hard upper bound so a peer cannot make a node allocate unbounded memory. The messages
//! and the sync session state machine arrive with federation.
//!
//! This crate never does I/O, never reads the clock and does not depend on tokio, libp2p,
//! quinn or redb.

mod frame;

pub use frame::{FrameDecoder, FrameError, MAX_FRAME_LEN, encode_frame};

/// The libp2p stream protocol of the sync session.
pub const SYNC_PROTOCOL: &str = "/mnemon/sync/1";
