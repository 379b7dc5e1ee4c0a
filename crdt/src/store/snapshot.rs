//! Copies of the store: a consistent snapshot into a new file (what a backup holds) and the
//! vacuum's rewrite, both by copying every live entry of every table from one read
//! transaction.
//!
//! A logical copy, not a copy of the file's bytes: redb does not zero freed pages, so
//! bytes of a deleted memory can survive in the live file until their pages are reused.
//! A copy of the entries holds only what is live, so forgetting holds in copies too.

use std::fs::File;
use std::path::Path;

use mnemon_identity::Did;
use redb::backends::FileBackend;
use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle,
    WriteTransaction,
};

use super::view::{FINGERPRINTS, MENTIONS, TITLES, VIEW_TEXTS, VIEWS};
use super::{
    ACL, BACKLINKS, CHANGELOG, COLLECTIONS, DESCRIPTORS, DOCS, HEADS, INVITES, JOIN_REFUSALS,
    JOINS, LINKS, MEMBERS, MEMORY_META, META, NAMES, SIGNATURES, StoreReader, TOMBSTONES, builder,
    copy_table, open_error,
};
use crate::error::{OpenStoreError, StoreError};

/// What a store file (or a snapshot of one) holds, read without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSummary {
    /// The node the store belongs to.
    pub did: Did,
    /// Live memories.
    pub memories: u64,
    /// Collections, this node's own and those it joined.
    pub collections: u64,
    /// The last change-log position.
    pub last_seq: u64,
}

impl StoreReader {
    /// Writes a consistent copy of the store, as one read transaction sees it, into
    /// `file` (empty; typically one already removed from its folder, so nothing is left
    /// behind if the process dies). Writers keep going meanwhile. Returns what the copy
    /// holds, counted in the same transaction.
    pub fn snapshot_into(&self, file: &File) -> Result<StoreSummary, StoreError> {
        let storage =
            |e: &dyn std::fmt::Display| StoreError::Storage(format!("writing a snapshot: {e}"));
        let backend = FileBackend::new(file.try_clone().map_err(|e| storage(&e))?)
            .map_err(|e| storage(&e))?;
        let copy = builder()
            .create_with_backend(backend)
            .map_err(|e| storage(&e))?;
        let read = self.db()?.begin_read()?;
        let write = copy.begin_write()?;
        copy_all(&read, &write)?;
        write.commit()?;
        summary(&read)
    }
}

/// Opens the store held in `file` (a snapshot, not open elsewhere), checks its integrity
/// and says what it holds, without the node's key.
pub fn inspect_snapshot(file: &File) -> Result<StoreSummary, StoreError> {
    let storage =
        |e: &dyn std::fmt::Display| StoreError::Storage(format!("opening a snapshot: {e}"));
    if file.metadata().map_err(|e| storage(&e))?.len() == 0 {
        return Err(storage(&"it is empty"));
    }
    let backend =
        FileBackend::new(file.try_clone().map_err(|e| storage(&e))?).map_err(|e| storage(&e))?;
    let db = builder()
        .create_with_backend(backend)
        .map_err(|e| storage(&e))?;
    let read = db.begin_read()?;
    summary(&read)
}

/// Opens the store file at `path` (not open elsewhere), checks its integrity and says what
/// it holds, without the node's key.
/// Opening errors are the store's own ([`OpenStoreError::Locked`] while another process
/// holds it).
pub fn inspect_file(path: &Path) -> Result<StoreSummary, OpenStoreError> {
    let journals = super::journal::paths(path);
    let fresh = journals.clone().map(|p| !p.exists());
    let result = (|| {
        // A missing or empty file is no store: redb's own open refuses it, as it says why.
        let db = if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            super::open_file(path, &Default::default()).map(|(db, _journal)| db)
        } else {
            builder().open(path)
        }
        .map_err(|e| open_error(path, e))?;
        let read = || -> Result<StoreSummary, StoreError> { summary(&db.begin_read()?) };
        read().map_err(|e| OpenStoreError::Storage {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    })();
    // Journals made only for this look (a backup being restored, say) go with it.
    for (journal, fresh) in journals.iter().zip(fresh) {
        if fresh {
            let _ = std::fs::remove_file(journal);
        }
    }
    result
}

fn summary(read: &ReadTransaction) -> Result<StoreSummary, StoreError> {
    let meta = read.open_table(META)?;
    let did = meta
        .get("did")?
        .and_then(|v| Did::from_public_key_slice(v.value()).ok())
        .ok_or_else(|| StoreError::Storage("the store records no identity".into()))?;
    let last_seq = read
        .open_table(CHANGELOG)?
        .last()?
        .map_or(0, |(seq, _)| seq.value());
    Ok(StoreSummary {
        did,
        memories: read.open_table(MEMORY_META)?.len()?,
        collections: read.open_table(COLLECTIONS)?.len()?,
        last_seq,
    })
}

/// Copies every table of the store from `read` into `write`.
pub(super) fn copy_all(read: &ReadTransaction, write: &WriteTransaction) -> Result<(), StoreError> {
    copy_table(read, write, META)?;
    copy_table(read, write, COLLECTIONS)?;
    copy_table(read, write, MEMBERS)?;
    copy_table(read, write, DOCS)?;
    copy_table(read, write, MEMORY_META)?;
    copy_table(read, write, SIGNATURES)?;
    copy_table(read, write, TOMBSTONES)?;
    copy_table(read, write, CHANGELOG)?;
    copy_table(read, write, ACL)?;
    copy_table(read, write, DESCRIPTORS)?;
    copy_table(read, write, HEADS)?;
    copy_table(read, write, INVITES)?;
    copy_table(read, write, JOINS)?;
    copy_table(read, write, JOIN_REFUSALS)?;
    copy_table(read, write, LINKS)?;
    copy_table(read, write, BACKLINKS)?;
    copy_table(read, write, VIEWS)?;
    copy_table(read, write, VIEW_TEXTS)?;
    copy_table(read, write, TITLES)?;
    copy_table(read, write, MENTIONS)?;
    copy_table(read, write, FINGERPRINTS)?;
    copy_table(read, write, super::conflict::CONFLICTS)?;
    copy_table(read, write, NAMES)?;
    // A table this list forgot would be lost by every vacuum and backup: refuse instead.
    let copied: std::collections::HashSet<String> =
        write.list_tables()?.map(|t| t.name().to_owned()).collect();
    if let Some(missing) = read
        .list_tables()?
        .map(|t| t.name().to_owned())
        .find(|name| !copied.contains(name))
    {
        return Err(StoreError::Storage(format!(
            "copying the store would lose its table {missing:?}"
        )));
    }
    Ok(())
}
