//! Read views: everything a read needs of a memory, kept beside its document in the same
//! transaction as every write (local, from a peer, a delete), so reads never decode
//! automerge. And the titles table, which resolves `[[wikilinks]]` without an index.

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::id::{CollectionId, MemoryId, Timestamp};
use crate::markdown::{title_key, wikilink_keys};
use crate::memory::{Memory, Source, Task};

/// Key: memory id. Value: the memory as it reads (postcard [`ViewRecord`]).
pub(super) const VIEWS: TableDefinition<u128, &[u8]> = TableDefinition::new("views-1");
/// Key: (title folded to lower case, memory id). Value: nothing.
pub(super) const TITLES: TableDefinition<(&str, u128), ()> = TableDefinition::new("titles-1");
/// Key: (wikilink key, memory whose text has `[[that name]]`), resolved or not: how a new
/// title finds the memories waiting for it.
pub(super) const MENTIONS: TableDefinition<(&str, u128), ()> = TableDefinition::new("mentions-1");

/// Key: (the first 16 bytes of the SHA-256 of a memory's text as
/// [`crate::markdown::same_text_key`] reads it, memory id). Value: nothing. How a write finds
/// a memory that already says the same (`StoreReader::same_text`).
pub(super) const FINGERPRINTS: TableDefinition<(u128, u128), ()> =
    TableDefinition::new("fingerprints-1");

/// The fingerprint of a text (see [`FINGERPRINTS`]).
pub(super) fn fingerprint(text: &str) -> u128 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(crate::markdown::same_text_key(text).as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// The stored form of a [`Memory`] (without its id, which is the key).
#[derive(Debug, Serialize, Deserialize)]
struct ViewRecord {
    collection: u128,
    title: String,
    content: String,
    tags: Vec<String>,
    kind: String,
    importance: f64,
    source: Option<(String, Option<String>)>,
    created_at: i64,
    updated_at: i64,
    author: String,
    links: Vec<(u128, String)>,
    task: Option<TaskRecord>,
}

/// [`ViewRecord`] borrowing the memory it is written from: the same fields in the same
/// order, so the same bytes (a memory may be megabytes; no copy of its text is made).
/// Read back in place where only some of a stored view's fields are wanted.
#[derive(Serialize, Deserialize)]
struct ViewRecordRef<'a> {
    collection: u128,
    title: &'a str,
    content: &'a str,
    tags: Vec<&'a str>,
    kind: &'a str,
    importance: f64,
    source: Option<(&'a str, Option<&'a str>)>,
    created_at: i64,
    updated_at: i64,
    author: &'a str,
    links: Vec<(u128, &'a str)>,
    task: Option<TaskRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct TaskRecord {
    status: String,
    priority: i64,
    due: Option<i64>,
    difficulty: u8,
    xp: u32,
}

pub(super) fn encode(memory: &Memory) -> Result<Vec<u8>, StoreError> {
    let record = ViewRecordRef {
        collection: memory.collection.to_u128(),
        title: &memory.title,
        content: &memory.content,
        tags: memory.tags.iter().map(String::as_str).collect(),
        kind: &memory.kind,
        importance: memory.importance,
        source: memory
            .source
            .as_ref()
            .map(|s| (s.kind.as_str(), s.uri.as_deref())),
        created_at: memory.created_at.as_millis(),
        updated_at: memory.updated_at.as_millis(),
        author: &memory.author,
        links: memory
            .links
            .iter()
            .map(|(id, relation)| (id.to_u128(), relation.as_str()))
            .collect(),
        task: memory.task.as_ref().map(|t| TaskRecord {
            status: t.status.clone(),
            priority: t.priority,
            due: t.due.map(Timestamp::as_millis),
            difficulty: t.difficulty,
            xp: t.xp,
        }),
    };
    // Sized once: growing by doubling would hold twice a large text.
    let size = postcard::experimental::serialized_size(&record)?;
    Ok(postcard::to_extend(&record, Vec::with_capacity(size))?)
}

pub(super) fn decode(id: u128, bytes: &[u8]) -> Result<Memory, StoreError> {
    let r: ViewRecord = postcard::from_bytes(bytes)?;
    Ok(Memory {
        id: MemoryId::from_u128(id),
        collection: CollectionId::from_u128(r.collection),
        title: r.title,
        content: r.content,
        tags: r.tags.into_iter().collect::<BTreeSet<_>>(),
        kind: r.kind,
        importance: r.importance,
        source: r.source.map(|(kind, uri)| Source { kind, uri }),
        created_at: Timestamp::from_millis(r.created_at),
        updated_at: Timestamp::from_millis(r.updated_at),
        author: r.author,
        links: r
            .links
            .into_iter()
            .map(|(id, relation)| (MemoryId::from_u128(id), relation))
            .collect::<BTreeMap<_, _>>(),
        task: r.task.map(|t| Task {
            status: t.status,
            priority: t.priority,
            due: t.due.map(Timestamp::from_millis),
            difficulty: t.difficulty,
            xp: t.xp,
        }),
    })
}

/// Writes `memory`'s view and its title row (replacing the old title's).
pub(super) fn put(txn: &WriteTransaction, memory: &Memory) -> Result<(), StoreError> {
    let id = memory.id.to_u128();
    let mut views = txn.open_table(VIEWS)?;
    let mut titles = txn.open_table(TITLES)?;
    let new_key = title_key(&memory.title);
    // What the tables beside the view are keyed by in the old view, read in place (a memory
    // may be megabytes; no copy of its old text is made): its title's key, and, if the
    // text changes, the old text's fingerprint and wikilink names.
    let old = match views.get(id)? {
        Some(stored) => {
            let old: ViewRecordRef = postcard::from_bytes(stored.value())?;
            let text = (old.content != memory.content)
                .then(|| (fingerprint(old.content), wikilink_keys(old.content)));
            Some((title_key(old.title), text))
        }
        None => None,
    };
    if let Some((old_key, _)) = &old
        && *old_key != new_key
    {
        titles.remove((old_key.as_str(), id))?;
    }
    views.insert(id, encode(memory)?.as_slice())?;
    titles.insert((new_key.as_str(), id), ())?;
    if old.as_ref().is_none_or(|(_, text)| text.is_some()) {
        let old_text = old.as_ref().and_then(|(_, text)| text.as_ref());
        let mut fingerprints = txn.open_table(FINGERPRINTS)?;
        if let Some((old_print, _)) = old_text {
            fingerprints.remove((*old_print, id))?;
        }
        fingerprints.insert((fingerprint(&memory.content), id), ())?;
        let old_names = old_text
            .map(|(_, names)| names.as_slice())
            .unwrap_or_default();
        put_mentions(txn, id, old_names, &wikilink_keys(&memory.content))?;
    }
    Ok(())
}

/// Replaces memory `id`'s rows in the mentions table: `old` names out, `new` names in.
pub(super) fn put_mentions(
    txn: &WriteTransaction,
    id: u128,
    old: &[String],
    new: &[String],
) -> Result<(), StoreError> {
    let mut mentions = txn.open_table(MENTIONS)?;
    for name in old.iter().filter(|n| !new.contains(n)) {
        mentions.remove((name.as_str(), id))?;
    }
    for name in new {
        mentions.insert((name.as_str(), id), ())?;
    }
    Ok(())
}

pub(super) fn remove(txn: &WriteTransaction, id: MemoryId) -> Result<(), StoreError> {
    let id = id.to_u128();
    let mut views = txn.open_table(VIEWS)?;
    let Some(old) = views.remove(id)? else {
        return Ok(());
    };
    let old = decode(id, old.value())?;
    txn.open_table(TITLES)?
        .remove((title_key(&old.title).as_str(), id))?;
    txn.open_table(FINGERPRINTS)?
        .remove((fingerprint(&old.content), id))?;
    put_mentions(txn, id, &wikilink_keys(&old.content), &[])?;
    Ok(())
}
