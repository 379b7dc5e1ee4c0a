//! The change feed: what other components (indexes, sync, the web UI) subscribe to.

use crate::id::{CollectionId, MemoryId};

/// One memory was created, updated or deleted. Sent after the change is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeEvent {
    /// Position in the store's change log (`changelog-1`), increasing by one per change.
    pub seq: u64,
    /// The memory.
    pub memory: MemoryId,
    /// Its collection.
    pub collection: CollectionId,
    /// What happened.
    pub kind: ChangeKind,
    /// Whether this node or a peer made the change.
    pub origin: Origin,
}

/// What happened to a memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// It was created (here or, for remote changes, first seen here).
    Created,
    /// It changed.
    Updated,
    /// It was deleted.
    Deleted,
}

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This node.
    Local,
    /// A peer, through sync.
    Remote,
}
