//! Concurrent edits of the same words. automerge merges concurrent edits of a text
//! character by character, which is right when they touched different parts and a mess
//! when they touched the same words ("WedTuesesday at 91:315"). So when a peer's changes
//! merge with local edits made meanwhile, the two versions are compared with what both
//! started from; if both changed the same part, the memory is marked conflicted here
//! (both versions kept beside it) until the owner picks one or writes the text anew.
//! The document's history has both sides either way; the mark is this node's own.

use automerge::{AutoCommit, ChangeHash, ObjType, ReadDoc, Value};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::id::{MemoryId, Timestamp};
use crate::memory::TextRef;

/// Key: memory id. Value: postcard [`Record`]: the two versions of a conflicted memory.
pub(super) const CONFLICTS: TableDefinition<u128, &[u8]> = TableDefinition::new("conflicts-1");

#[derive(Serialize, Deserialize)]
struct Record {
    ours: String,
    theirs: String,
    at: i64,
}

/// Two concurrent edits of a memory's text that changed the same words: the memory now
/// reads as automerge merged them, which is likely neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// This node's text before the merge.
    pub ours: String,
    /// The peer's text.
    pub theirs: String,
    /// When the merge found it.
    pub at: Timestamp,
}

/// What a merge did to a memory's conflict mark.
#[derive(Debug, Clone)]
pub(super) enum Mark {
    /// The merge found concurrent edits of the same words.
    Set(Conflict),
    /// A change made on top of both sides rewrote the text: the conflict is settled.
    Clear,
}

/// Where the peer's changes newly applied to `doc` (whose heads were `before`) branched
/// off: the heads of what both had (`base`), of this node's side (`ours`, = `before`) and
/// of the peer's (`theirs`), each sorted; `None` if nothing was new.
fn sides(doc: &mut AutoCommit, before: &[ChangeHash]) -> Option<Sides> {
    let new = doc.get_changes_meta(before);
    if new.is_empty() {
        return None;
    }
    let new_hashes: std::collections::HashSet<ChangeHash> = new.iter().map(|c| c.hash).collect();
    let depended: std::collections::HashSet<ChangeHash> =
        new.iter().flat_map(|c| c.deps.iter().copied()).collect();
    let mut theirs: Vec<ChangeHash> = new_hashes
        .iter()
        .filter(|h| !depended.contains(h))
        .copied()
        .collect();
    theirs.sort();
    let mut base: Vec<ChangeHash> = depended
        .iter()
        .filter(|h| !new_hashes.contains(h))
        .copied()
        .collect();
    base.sort();
    let mut ours = before.to_vec();
    ours.sort();
    Some(Sides { base, ours, theirs })
}

struct Sides {
    base: Vec<ChangeHash>,
    ours: Vec<ChangeHash>,
    theirs: Vec<ChangeHash>,
}

impl Sides {
    /// Whether the peer built on everything this node had: nothing concurrent.
    fn on_top(&self) -> bool {
        self.base == self.ours
    }
}

/// After the peer's changes were applied to `doc` (whose heads were `before`): whether
/// they and the local edits since both sides parted changed the same part of the text
/// (`Set`), or, for a memory `marked` conflicted, whether a change on top of both sides
/// rewrote its text (`Clear`). `kept` reads a text kept beside the document (this node's
/// as it was before the merge, or the one the peer brought).
pub(super) fn detect(
    doc: &mut AutoCommit,
    before: &[ChangeHash],
    marked: bool,
    kept: impl Fn(&TextRef) -> Option<String>,
) -> Option<Mark> {
    let sides = sides(doc, before)?;
    match doc.get(automerge::ROOT, "content").ok().flatten() {
        // One text object on both sides and where they parted: merged character by
        // character. (A side that made a new one replaced the text whole.)
        Some((Value::Object(ObjType::Text), text))
            if [&sides.ours, &sides.theirs, &sides.base]
                .iter()
                .all(|heads| text_at(doc, heads).as_ref() == Some(&text)) =>
        {
            detect_in_text(doc, &text, &sides, marked)
        }
        _ => detect_whole(doc, &sides, marked, kept),
    }
}

/// The content at `heads`, if it was a text object.
fn text_at(doc: &AutoCommit, heads: &[ChangeHash]) -> Option<automerge::ObjId> {
    match doc.get_at(automerge::ROOT, "content", heads).ok().flatten() {
        Some((Value::Object(ObjType::Text), text)) => Some(text),
        _ => None,
    }
}

/// What the content was at some heads, to tell versions apart without reading a text
/// kept beside the document.
#[derive(PartialEq)]
enum Version {
    Kept(TextRef),
    Inline(String),
}

fn version_at(doc: &AutoCommit, heads: &[ChangeHash]) -> Option<Version> {
    match doc
        .get_at(automerge::ROOT, "content", heads)
        .ok()
        .flatten()?
    {
        (Value::Object(ObjType::Text), text) => doc.text_at(&text, heads).ok().map(Version::Inline),
        (Value::Scalar(value), _) => Some(version_of(&value)),
        _ => None,
    }
}

fn version_of(value: &automerge::ScalarValue) -> Version {
    match TextRef::in_value(value) {
        Some(named) => Version::Kept(named),
        None => Version::Inline(value.as_str().unwrap_or_default().to_owned()),
    }
}

/// [`detect`] where a side's text is (or becomes) one kept beside the document, or a new
/// text object: the merge keeps one version whole, so two sides that both changed the text
/// conflict, and the losing version is kept in the mark rather than lost. A standing mark
/// is left as it is, neither replaced nor cleared by a peer: for a text kept beside, the
/// mark may hold the only copy of a version, which only the owner's pick or edit lets go.
fn detect_whole(
    doc: &AutoCommit,
    sides: &Sides,
    marked: bool,
    kept: impl Fn(&TextRef) -> Option<String>,
) -> Option<Mark> {
    if marked || sides.on_top() {
        return None;
    }
    let ours = version_at(doc, &sides.ours)?;
    let theirs = version_at(doc, &sides.theirs)?;
    let base = version_at(doc, &sides.base);
    let any_kept = [&ours, &theirs]
        .iter()
        .any(|v| matches!(v, Version::Kept(_)));
    if !any_kept || ours == theirs || base.as_ref() == Some(&ours) || base.as_ref() == Some(&theirs)
    {
        return None;
    }
    let read = |version: Version| match version {
        Version::Kept(named) => kept(&named),
        Version::Inline(text) => Some(text),
    };
    Some(Mark::Set(Conflict {
        ours: read(ours)?,
        theirs: read(theirs)?,
        at: Timestamp::now(),
    }))
}

/// [`detect`] for a text object on both sides: a conflict when both changed the same
/// part of it.
fn detect_in_text(
    doc: &AutoCommit,
    text: &automerge::ObjId,
    sides: &Sides,
    marked: bool,
) -> Option<Mark> {
    let Sides {
        base: base_heads,
        ours: ours_heads,
        theirs: theirs_heads,
    } = sides;
    if sides.on_top() {
        // The peer built on everything this node had: nothing concurrent. If the text
        // was marked conflicted and this rewrote it, a change on top of both sides
        // settled it.
        if !marked {
            return None;
        }
        let merged = doc.text(text).ok()?;
        let ours = doc.text_at(text, ours_heads).ok()?;
        return (merged != ours).then_some(Mark::Clear);
    }
    let merged = doc.text(text).ok()?;
    let base = doc.text_at(text, base_heads).ok()?;
    let ours = doc.text_at(text, ours_heads).ok()?;
    let theirs = doc.text_at(text, theirs_heads).ok()?;
    if ours == base || theirs == base || ours == theirs || merged == ours || merged == theirs {
        return None;
    }
    overlapping(&base, &ours, &theirs).then(|| {
        Mark::Set(Conflict {
            ours,
            theirs,
            at: Timestamp::now(),
        })
    })
}

/// Texts longer than this (in bytes) are compared by the one region each side changed
/// (from the first to the last difference) instead of a character diff: a diff costs
/// O(length × differences), and this runs inside a write.
const DIFF_LIMIT: usize = 16 * 1024;

/// How long a character diff may take before it settles for a coarser answer.
const DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_millis(20);

/// Whether the edits from `base` to `a` and from `base` to `b` touch the same
/// characters of `base` (an insertion counts as touching the character it goes before).
fn overlapping(base: &str, a: &str, b: &str) -> bool {
    let ranges = |other: &str| -> Vec<(usize, usize)> {
        if base.len().max(other.len()) > DIFF_LIMIT {
            return vec![changed_region(base, other)];
        }
        let mut ranges: Vec<(usize, usize)> = similar::TextDiff::configure()
            .deadline(std::time::Instant::now() + DIFF_DEADLINE)
            .diff_chars(base, other)
            .ops()
            .iter()
            .filter(|op| op.tag() != similar::DiffTag::Equal)
            .map(|op| {
                let old = op.old_range();
                (old.start, old.end.max(old.start + 1))
            })
            .collect();
        ranges.sort_unstable();
        ranges
    };
    let (a, b) = (ranges(a), ranges(b));
    // Both sorted by start: one sweep.
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let ((s1, e1), (s2, e2)) = (a[i], b[j]);
        if s1 < e2 && s2 < e1 {
            return true;
        }
        if e1 <= e2 {
            i += 1;
        } else {
            j += 1;
        }
    }
    false
}

/// The characters of `base` between its first and last difference from `other` (an
/// insertion touches the character it goes before).
fn changed_region(base: &str, other: &str) -> (usize, usize) {
    let prefix = base
        .chars()
        .zip(other.chars())
        .take_while(|(x, y)| x == y)
        .count();
    let base_len = base.chars().count();
    let other_len = other.chars().count();
    let suffix = base
        .chars()
        .rev()
        .zip(other.chars().rev())
        .take_while(|(x, y)| x == y)
        .count()
        .min(base_len - prefix)
        .min(other_len - prefix);
    let end = base_len - suffix;
    (prefix, end.max(prefix + 1))
}

pub(super) fn put(
    txn: &WriteTransaction,
    id: MemoryId,
    conflict: &Conflict,
) -> Result<(), StoreError> {
    let record = Record {
        ours: conflict.ours.clone(),
        theirs: conflict.theirs.clone(),
        at: conflict.at.as_millis(),
    };
    txn.open_table(CONFLICTS)?
        .insert(id.to_u128(), postcard::to_allocvec(&record)?.as_slice())?;
    Ok(())
}

pub(super) fn clear(txn: &WriteTransaction, id: MemoryId) -> Result<(), StoreError> {
    txn.open_table(CONFLICTS)?.remove(id.to_u128())?;
    Ok(())
}

pub(super) fn get(
    table: &impl ReadableTable<u128, &'static [u8]>,
    id: MemoryId,
) -> Result<Option<Conflict>, StoreError> {
    let Some(bytes) = table.get(id.to_u128())? else {
        return Ok(None);
    };
    let record: Record = postcard::from_bytes(bytes.value())?;
    Ok(Some(Conflict {
        ours: record.ours,
        theirs: record.theirs,
        at: Timestamp::from_millis(record.at),
    }))
}

#[cfg(test)]
mod tests {
    use super::overlapping;

    #[test]
    fn edits_of_the_same_words_overlap_and_edits_far_apart_do_not() {
        let base = "Meeting on Wednesday at 10:30 in room 4";
        assert!(overlapping(
            base,
            "Meeting on Tuesday at 10:30 in room 4",
            "Meeting on Thursday at 10:30 in room 4"
        ));
        assert!(overlapping(
            base,
            "Meeting on Wednesday at 9:15 in room 4",
            "Meeting on Wednesday at 11:45 in room 4"
        ));
        assert!(!overlapping(
            base,
            "Meeting on Tuesday at 10:30 in room 4",
            "Meeting on Wednesday at 10:30 in room 7"
        ));
        assert!(!overlapping(
            base,
            "Urgent: Meeting on Wednesday at 10:30 in room 4",
            "Meeting on Wednesday at 10:30 in room 4, bring slides"
        ));
    }

    #[test]
    fn long_texts_are_compared_by_the_region_each_side_changed() {
        let base = "word ".repeat(10_000);
        let start = format!("first {}", &base[5..]);
        let end = format!("{}last ", &base[..base.len() - 5]);
        let also_start = format!("other {}", &base[5..]);
        assert!(!overlapping(&base, &start, &end));
        assert!(overlapping(&base, &start, &also_start));
        // Whole rewrites of long texts answer at once.
        let rewrite_a = "a".repeat(60_000);
        let rewrite_b = "b".repeat(60_000);
        assert!(overlapping(&base, &rewrite_a, &rewrite_b));
    }
}
