//! The Mnemon memory store.
//!
//! Each memory is one automerge document ([`MemoryDoc`]); memories live in collections;
//! every change carries its author's Ed25519 signature ([`SignedChange`]); everything is
//! persisted in one redb file by [`Store`], which async code reaches through
//! [`StoreHandle`]. Components learn about changes from the change feed
//! ([`ChangeEvent`]).
//!
//! This crate knows nothing of networks or HTTP.

mod acl;
#[cfg(test)]
mod convergence_tests;
mod error;
mod feed;
mod handle;
mod id;
pub mod markdown;
mod memory;
mod signed;
mod store;

pub use acl::{
    Access, AclAction, AclOp, Descriptor, RecordError, Role, SignedAclOp, SignedDescriptor,
    SignedTombstone, fold_members,
};
pub use error::{ApplyError, OpenStoreError, StoreError};
pub use feed::{ChangeEvent, ChangeKind, Origin};
pub use handle::{MAX_GROUP, QUEUE_DEPTH, StoreClosed, StoreHandle};
pub use id::{CollectionId, MemoryId, ParseIdError, ParseTimeError, Timestamp};
pub use memory::{
    DEFAULT_IMPORTANCE, DEFAULT_KIND, MAX_CONTENT_BYTES, MAX_LINKS, MAX_MERGED_TEXT_BYTES,
    MAX_TAG_CHARS, MAX_TAGS, MAX_TASK_XP, MAX_TITLE_BYTES, Memory, MemoryDoc, MemoryEdit,
    NewMemory, Source, Task, TextRef, ValidationError, actor_id, derive_title, normalize_tag,
};
pub use signed::{ChangeError, MAX_CHANGE_BYTES, SignedChange, VerifiedChange};
pub use store::{
    ApplyOutcome, Collection, Conflict, FEED_CAPACITY, HeadsDigest, JoinRefusal, ListFilter,
    MAX_ACL_BATCH, MAX_APPLY_BATCH, Member, MemoryBuilder, PreparedMemory, SCHEMA_VERSION,
    SharedCollection, Store, StoreReader, StoreSummary, TABLE_NAMES, VacuumReport, heads_digest,
    inspect_file, inspect_snapshot, title_key,
};

/// Re-exported so users of [`MemoryDoc::automerge`] and the sync layer name the same crate.
pub use automerge;
