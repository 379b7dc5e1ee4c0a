//! Read views: everything a read needs of a memory, kept beside its document in the same
//! transaction as every write (local, from a peer, a delete), so reads never decode
//! automerge. And the titles table, which resolves `[[wikilinks]]` without an index.
//!
//! A view is derived from its document, except for a text above 64 KiB: the document holds
//! only its reference ([`TextRef`]), and the view's pieces are the one copy of the text
//! (a view of it cannot be derived again; backups and vacuums copy every table).

use std::collections::{BTreeMap, BTreeSet};

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::id::{CollectionId, MemoryId, Timestamp};
use crate::markdown::{title_key, wikilink_keys};
use crate::memory::{Memory, Source, Task, TextRef};

/// Key: memory id. Value: the memory as it reads (postcard [`ViewRecord`]).
pub(super) const VIEWS: TableDefinition<u128, &[u8]> = TableDefinition::new("views-1");
/// Key: (memory id, piece number from 0). Value: the next [`TEXT_PIECE`] bytes (the last
/// piece: the rest) of a text longer than [`TEXT_INLINE`], whose view keeps an empty text.
/// redb keeps a value bigger than a page in a leaf of its own sized to the next power of
/// two, and reads and caches that leaf whole: in its view, an 8 MiB text took a 16 MiB
/// leaf, written with a copy of the whole view beside it and resident whole after a read.
/// Pieces fill their leaves, and are written straight from the memory's text.
pub(super) const VIEW_TEXTS: TableDefinition<(u128, u32), &[u8]> =
    TableDefinition::new("view-texts-1");
/// The longest text a view keeps itself: the longest one a document merges by character;
/// a longer one is kept in pieces here, and its document holds a reference to it
/// ([`TextRef`]): these pieces are where the store keeps it.
const TEXT_INLINE: usize = crate::MAX_MERGED_TEXT_BYTES;
/// The length of a piece of a long text: a 256 KiB leaf less room for its key and header.
const TEXT_PIECE: usize = 256 * 1024 - 1024;

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

/// `memory`'s view, with its text unless that is kept in pieces ([`VIEW_TEXTS`]).
fn encode(memory: &Memory) -> Result<Vec<u8>, StoreError> {
    let text = if in_pieces(&memory.content) {
        ""
    } else {
        &memory.content
    };
    encode_with(memory, text)
}

/// `memory`'s view with its whole text in it, as views were written before pieces.
#[cfg(test)]
pub(super) fn encode_whole(memory: &Memory) -> Result<Vec<u8>, StoreError> {
    encode_with(memory, &memory.content)
}

fn encode_with(memory: &Memory, text: &str) -> Result<Vec<u8>, StoreError> {
    let record = ViewRecordRef {
        collection: memory.collection.to_u128(),
        title: &memory.title,
        content: text,
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

/// Whether a text is kept in pieces rather than in its view.
fn in_pieces(text: &str) -> bool {
    text.len() > TEXT_INLINE
}

/// The memory a stored view reads as, its text read from its pieces if it has them.
pub(super) fn decode(
    id: u128,
    bytes: &[u8],
    texts: &impl ReadableTable<(u128, u32), &'static [u8]>,
) -> Result<Memory, StoreError> {
    let r: ViewRecord = postcard::from_bytes(bytes)?;
    let content = if r.content.is_empty() {
        read_pieces(texts, id)?.unwrap_or_default()
    } else {
        r.content
    };
    Ok(Memory {
        id: MemoryId::from_u128(id),
        collection: CollectionId::from_u128(r.collection),
        title: r.title,
        content,
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

/// Memory `id`'s text from its pieces, or `None` if it has none.
fn read_pieces(
    texts: &impl ReadableTable<(u128, u32), &'static [u8]>,
    id: u128,
) -> Result<Option<String>, StoreError> {
    let pieces = (id, 0)..=(id, u32::MAX);
    // Sized once from the last piece: every piece before it is whole.
    let Some(last) = texts.range(pieces.clone())?.next_back() else {
        return Ok(None);
    };
    let (key, value) = last?;
    let len = key.value().1 as usize * TEXT_PIECE + value.value().len();
    let mut bytes = Vec::with_capacity(len);
    for piece in texts.range(pieces)? {
        bytes.extend_from_slice(piece?.1.value());
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| StoreError::Storage(format!("the text of memory {id:x} is not UTF-8")))
}

/// The text `named` (kept beside memory `id`'s document, see [`TextRef`]), read from the
/// memory's view (its pieces, or its row if it was written before pieces): every write
/// keeps the view's text the one its document names, in the same transaction. `check`
/// hashes it too (its length is always checked); `None` if the view does not hold it.
pub(super) fn kept_text(
    views: &impl ReadableTable<u128, &'static [u8]>,
    texts: &impl ReadableTable<(u128, u32), &'static [u8]>,
    id: MemoryId,
    named: &TextRef,
    check: bool,
) -> Result<Option<String>, StoreError> {
    let text = match read_pieces(texts, id.to_u128())? {
        Some(text) => Some(text),
        None => match views.get(id.to_u128())? {
            Some(row) => {
                let record: ViewRecordRef = postcard::from_bytes(row.value())?;
                Some(record.content.to_owned())
            }
            None => None,
        },
    };
    Ok(text.filter(|text| {
        if check {
            named.names(text)
        } else {
            text.len() as u64 == named.len
        }
    }))
}

/// Whether memory `id` has pieces that read as `text`, compared in place.
fn pieces_are(
    texts: &impl ReadableTable<(u128, u32), &'static [u8]>,
    id: u128,
    text: &str,
) -> Result<bool, StoreError> {
    let text = text.as_bytes();
    let mut at = 0;
    for piece in texts.range((id, 0)..=(id, u32::MAX))? {
        let piece = piece?.1;
        let piece = piece.value();
        if text.get(at..at + piece.len()) != Some(piece) {
            return Ok(false);
        }
        at += piece.len();
    }
    Ok(at == text.len())
}

/// Writes `text` as memory `id`'s pieces (over none).
fn write_pieces(
    texts: &mut Table<(u128, u32), &'static [u8]>,
    id: u128,
    text: &str,
) -> Result<(), StoreError> {
    for (n, piece) in text.as_bytes().chunks(TEXT_PIECE).enumerate() {
        let n = u32::try_from(n).map_err(|_| StoreError::Storage("a text of 1 PiB".into()))?;
        texts.insert((id, n), piece)?;
    }
    Ok(())
}

fn remove_pieces(
    texts: &mut Table<(u128, u32), &'static [u8]>,
    id: u128,
) -> Result<(), StoreError> {
    texts.retain_in((id, 0)..=(id, u32::MAX), |_, _| false)?;
    Ok(())
}

/// Writes `memory`'s view and its title row (replacing the old title's).
pub(super) fn put(txn: &WriteTransaction, memory: &Memory) -> Result<(), StoreError> {
    let id = memory.id.to_u128();
    let mut views = txn.open_table(VIEWS)?;
    let mut titles = txn.open_table(TITLES)?;
    let mut texts = txn.open_table(VIEW_TEXTS)?;
    let new_key = title_key(&memory.title);
    // What the tables beside the view are keyed by in the old view, read in place (a memory
    // may be megabytes; no copy of its old text is made unless it changes): its title's
    // key, whether its text was in pieces, and, if the text changes, the old text's
    // fingerprint and wikilink names.
    let old = match views.get(id)? {
        Some(stored) => {
            let old: ViewRecordRef = postcard::from_bytes(stored.value())?;
            let pieces = old.content.is_empty() && texts.get((id, 0))?.is_some();
            let same = if pieces {
                pieces_are(&texts, id, &memory.content)?
            } else {
                old.content == memory.content
            };
            let text = match (same, pieces) {
                (true, _) => None,
                (false, false) => Some((fingerprint(old.content), wikilink_keys(old.content))),
                (false, true) => {
                    let text = read_pieces(&texts, id)?.unwrap_or_default();
                    Some((fingerprint(&text), wikilink_keys(&text)))
                }
            };
            Some((title_key(old.title), text, pieces))
        }
        None => None,
    };
    let kept = match &old {
        Some((_, text, true)) if text.is_some() => {
            remove_pieces(&mut texts, id)?;
            false
        }
        Some((_, None, pieces)) => *pieces,
        _ => false,
    };
    if in_pieces(&memory.content) && !kept {
        // None are left but those of a view the tables lost (derived again at open).
        remove_pieces(&mut texts, id)?;
        write_pieces(&mut texts, id, &memory.content)?;
    }
    if let Some((old_key, ..)) = &old
        && *old_key != new_key
    {
        titles.remove((old_key.as_str(), id))?;
    }
    views.insert(id, encode(memory)?.as_slice())?;
    titles.insert((new_key.as_str(), id), ())?;
    if old.as_ref().is_none_or(|(_, text, _)| text.is_some()) {
        let old_text = old.as_ref().and_then(|(_, text, _)| text.as_ref());
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
    let mut texts = txn.open_table(VIEW_TEXTS)?;
    let old = decode(id, old.value(), &texts)?;
    remove_pieces(&mut texts, id)?;
    txn.open_table(TITLES)?
        .remove((title_key(&old.title).as_str(), id))?;
    txn.open_table(FINGERPRINTS)?
        .remove((fingerprint(&old.content), id))?;
    put_mentions(txn, id, &wikilink_keys(&old.content), &[])?;
    Ok(())
}
