//! Errors of the store, one enum per kind of operation.

use std::path::PathBuf;

use crate::id::MemoryId;
use crate::memory::ValidationError;
use crate::signed::ChangeError;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStoreError {
    /// Another process has the database open.
    #[error("database {0} is in use by another process (is `mnemon serve` running?)")]
    Locked(PathBuf),
    /// The database file is damaged or not a redb database.
    #[error("database {path} is corrupt: {reason}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What redb found.
        reason: String,
    },
    /// The database belongs to another identity than the key that opened it.
    #[error("database belongs to {store}, but the key file is {key}")]
    IdentityMismatch {
        /// The DID recorded in the database.
        store: String,
        /// The DID of the key.
        key: String,
    },
    /// The database was written by a newer version.
    #[error("database schema version {0} is newer than this mnemon understands")]
    UnsupportedSchema(u32),
    /// Reading or writing failed.
    #[error("database {path}: {reason}")]
    Storage {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No memory has this id.
    #[error("no memory with id {0}")]
    NotFound(MemoryId),
    /// The memory was deleted.
    #[error("memory {0} was deleted")]
    Deleted(MemoryId),
    /// No collection has this id or name.
    #[error("no collection named or with id {0:?}")]
    UnknownCollection(String),
    /// Several collections have this name.
    #[error("several collections are named {name:?}; use one of their ids: {ids}")]
    AmbiguousCollection {
        /// The name.
        name: String,
        /// Their ids, comma-separated.
        ids: String,
    },
    /// A collection with this name exists already.
    #[error("a collection named {0:?} exists already")]
    DuplicateCollectionName(String),
    /// The collection name is not acceptable.
    #[error(
        "invalid collection name {0:?}: use 1 to 64 characters, no control characters, and not a collection id"
    )]
    InvalidCollectionName(String),
    /// This node may not change the collection (it holds it with the role `read`, or its
    /// access was revoked).
    #[error("collection {0} is read-only here: its owner has not given this node write access")]
    ReadOnly(crate::id::CollectionId),
    /// A sharing operation was refused.
    #[error("{0}")]
    Sharing(String),
    /// The input for a memory was refused.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// This store cannot do that (for example vacuum a store that is not a file).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The memory has no conflict to resolve.
    #[error("{0} has no conflict to resolve")]
    NoConflict(MemoryId),
    /// The memory holds two conflicting versions: rewriting it (moving it, forgetting its
    /// history) would keep one and lose the other.
    #[error(
        "{0} holds two conflicting versions of its text: keep one first (`mnemon resolve {0} --keep ours|theirs`), so neither is lost unseen"
    )]
    Conflicted(MemoryId),
    /// The disk refused a write (full or failing): nothing of the write was stored, and
    /// writes succeed again once it takes them.
    #[error("the disk refused the write (is it full?): {0}; it was not acknowledged")]
    Disk(String),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(String),
}

/// Why changes from elsewhere were refused. The store is unchanged in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// One of the changes failed verification.
    #[error("change #{index} refused: {source}")]
    Change {
        /// Its position in the batch.
        index: usize,
        /// Why.
        source: ChangeError,
    },
    /// The memory was deleted here; deletions are final.
    #[error("memory {0} was deleted")]
    Deleted(MemoryId),
    /// The memory belongs to another collection here.
    #[error("memory {0} belongs to another collection")]
    WrongCollection(MemoryId),
    /// The collection is not known here.
    #[error("unknown collection {0}")]
    UnknownCollection(String),
    /// The author of a change or deletion may not write in the collection.
    #[error("{author} may not write in collection {collection}")]
    NotAllowed {
        /// The author's DID.
        author: String,
        /// The collection.
        collection: String,
    },
    /// A record failed its checks.
    #[error("refused: {0}")]
    Refused(String),
    /// Some changes depend on changes that were not sent.
    #[error("{0} changes depend on changes that are missing")]
    MissingDependencies(usize),
    /// Too many changes in one batch.
    #[error("{0} changes in one batch; the limit is {max}", max = crate::signed::MAX_APPLY_BATCH)]
    TooMany(usize),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(String),
}

macro_rules! storage_from {
    ($target:ty: $($source:ty),*) => {
        $(impl From<$source> for $target {
            fn from(e: $source) -> $target {
                <$target>::Storage(e.to_string())
            }
        })*
    };
}

storage_from!(StoreError: postcard::Error, automerge::AutomergeError);

/// A redb failure: [`StoreError::Disk`] when the file refused an operation (the database
/// is reopened and the disk probed, see `store/disk.rs`), else [`StoreError::Storage`].
fn from_redb(storage: Option<&redb::StorageError>, e: &dyn std::fmt::Display) -> StoreError {
    match storage {
        Some(redb::StorageError::Io(io)) => StoreError::Disk(io.to_string()),
        Some(redb::StorageError::PreviousIo | redb::StorageError::DatabaseClosed) => {
            StoreError::Disk("an earlier write failed; the database is being opened again".into())
        }
        _ => StoreError::Storage(e.to_string()),
    }
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> StoreError {
        from_redb(Some(&e), &e)
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> StoreError {
        match &e {
            redb::TransactionError::Storage(s) => from_redb(Some(s), &e),
            _ => from_redb(None, &e),
        }
    }
}

impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> StoreError {
        match &e {
            redb::TableError::Storage(s) => from_redb(Some(s), &e),
            _ => from_redb(None, &e),
        }
    }
}

impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> StoreError {
        match &e {
            redb::CommitError::Storage(s) => from_redb(Some(s), &e),
            _ => from_redb(None, &e),
        }
    }
}
storage_from!(ApplyError: redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError, postcard::Error, automerge::AutomergeError);

impl From<StoreError> for ApplyError {
    fn from(e: StoreError) -> ApplyError {
        ApplyError::Storage(e.to_string())
    }
}
