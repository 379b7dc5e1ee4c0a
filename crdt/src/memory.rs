//! The memory model: one automerge document per memory.
//!
//! Document layout (the root map):
//!
//! | key          | automerge type          | meaning                                        |
//! |--------------|-------------------------|------------------------------------------------|
//! | `title`      | str                     | short title                                    |
//! | `content`    | text                    | the body (Markdown); concurrent edits merge    |
//! |              | bytes (40)              | above 64 KiB: a [`TextRef`] to the text, kept beside |
//! | `tags`       | map: tag → `true`       | a set: adding wins over a concurrent removal    |
//! | `kind`       | str                     | `note`, `task`, `fact`, `conversation`, …      |
//! | `importance` | f64 in 0..=1            |                                                |
//! | `source`     | map {`kind`, `uri`}     | optional: where the memory came from           |
//! | `created_at` | timestamp               | set once by the author                         |
//! | `updated_at` | timestamp               | set by every edit                              |
//! | `author`     | str (`did:key`)         | who created the memory                         |
//! | `links`      | map: memory id → relation | links to other memories                      |
//! | `task`       | map {`status`, `priority`, `due`, `difficulty`, `xp`} | optional, for kind `task` |
//!
//! Every change's actor id is the 32-byte public key of the node that made it.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, AutoCommit, ChangeHash, ObjId, ObjType, ReadDoc, ScalarValue, Value};
use mnemon_identity::Did;

use crate::id::{CollectionId, MemoryId, Timestamp};

/// Largest content accepted, in bytes.
pub const MAX_CONTENT_BYTES: usize = 8 * 1024 * 1024;
/// Largest content kept as an automerge text, merged character by character with
/// concurrent edits. Larger content is kept beside the document ([`TextRef`]), and of two
/// concurrent edits of it one wins whole: automerge holds a few hundred bytes per character while it builds
/// or merges a text, so a text of megabytes would cost gigabytes.
pub const MAX_MERGED_TEXT_BYTES: usize = 64 * 1024;
/// A text above [`MAX_MERGED_TEXT_BYTES`], kept beside its memory's document: the document
/// holds this reference (the text's SHA-256 and length, 40 bytes of automerge bytes at
/// `content`), the store holds the text, and a change that sets it travels with it
/// ([`crate::SignedChange::text`]). An edit of a long text thus adds 40 bytes to the
/// document's history rather than the text, and loading the document to edit or merge it
/// never copies a text of megabytes, however often it was edited. (A document written
/// before held such a text as one string value, which still reads.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRef {
    pub(crate) hash: [u8; 32],
    pub(crate) len: u64,
}

impl TextRef {
    /// The reference to `text`.
    pub fn of(text: &str) -> TextRef {
        use sha2::Digest as _;
        TextRef {
            hash: sha2::Sha256::digest(text.as_bytes()).into(),
            len: text.len() as u64,
        }
    }

    /// Whether `text` is the text this names.
    pub fn names(&self, text: &str) -> bool {
        self.len == text.len() as u64 && TextRef::of(text) == *self
    }

    /// Its form in the document.
    pub(crate) fn to_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(40);
        bytes.extend_from_slice(&self.hash);
        bytes.extend_from_slice(&self.len.to_be_bytes());
        bytes
    }

    /// From its form in the document; `None` for anything else.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<TextRef> {
        let (hash, len) = bytes.split_first_chunk::<32>()?;
        let len = u64::from_be_bytes(len.try_into().ok()?);
        (len > MAX_MERGED_TEXT_BYTES as u64 && len <= MAX_CONTENT_BYTES as u64)
            .then_some(TextRef { hash: *hash, len })
    }

    /// The reference a document's `content` value holds, if it is one.
    pub(crate) fn in_value(value: &ScalarValue) -> Option<TextRef> {
        match value {
            ScalarValue::Bytes(bytes) => TextRef::from_bytes(bytes),
            _ => None,
        }
    }
}

/// Largest title accepted, in bytes.
pub const MAX_TITLE_BYTES: usize = 1024;
/// Most tags on one memory.
pub const MAX_TAGS: usize = 64;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Most links from one memory.
pub const MAX_LINKS: usize = 1024;
/// The kind of a memory when none is given.
pub const DEFAULT_KIND: &str = "note";
/// The importance of a memory when none is given.
pub const DEFAULT_IMPORTANCE: f64 = 0.5;

/// Where a memory came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// What kind of source: `cli`, `import`, `web`, `mcp`, …
    pub kind: String,
    /// A URI or path naming the source, if any.
    pub uri: Option<String>,
}

/// Task fields of a memory of kind `task`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// `open` or `done` (other values are kept as they are).
    pub status: String,
    /// Higher is more urgent.
    pub priority: i64,
    /// When it is due.
    pub due: Option<Timestamp>,
    /// How hard it is, 1 (trivial) to 5 (hard).
    pub difficulty: u8,
    /// The experience points finishing it is worth.
    pub xp: u32,
}

/// Most experience points one task may be worth.
pub const MAX_TASK_XP: u32 = 10_000;

impl Task {
    /// The points a task of `difficulty` is worth unless told otherwise: 10 per level.
    pub fn default_xp(difficulty: u8) -> u32 {
        u32::from(difficulty) * 10
    }

    /// Whether it is finished.
    pub fn is_done(&self) -> bool {
        self.status == "done"
    }
}

impl Default for Task {
    fn default() -> Task {
        Task {
            status: "open".to_owned(),
            priority: 0,
            due: None,
            difficulty: 1,
            xp: Task::default_xp(1),
        }
    }
}

/// A memory as read from its document.
#[derive(Debug, Clone, PartialEq)]
pub struct Memory {
    /// Its id.
    pub id: MemoryId,
    /// The collection that holds it.
    pub collection: CollectionId,
    /// Its title.
    pub title: String,
    /// Its body.
    pub content: String,
    /// Its tags.
    pub tags: BTreeSet<String>,
    /// Its kind.
    pub kind: String,
    /// Its importance, 0..=1.
    pub importance: f64,
    /// Where it came from.
    pub source: Option<Source>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it was last changed.
    pub updated_at: Timestamp,
    /// The `did:key` of its author, as written in the document.
    pub author: String,
    /// Links to other memories, with the relation's name.
    pub links: BTreeMap<MemoryId, String>,
    /// Task fields, for tasks.
    pub task: Option<Task>,
}

/// A memory to be created.
#[derive(Debug, Clone, Default)]
pub struct NewMemory {
    /// The title; derived from the first line of the content when `None`.
    pub title: Option<String>,
    /// The body; must not be empty.
    pub content: String,
    /// Tags (a leading `#` is dropped).
    pub tags: Vec<String>,
    /// The kind; `note` when `None`.
    pub kind: Option<String>,
    /// The importance; 0.5 when `None`.
    pub importance: Option<f64>,
    /// Where it came from.
    pub source: Option<Source>,
    /// The collection; the node's default collection when `None`.
    pub collection: Option<CollectionId>,
    /// Links to other memories, with relation names.
    pub links: Vec<(MemoryId, String)>,
    /// Task fields.
    pub task: Option<Task>,
    /// When it was created, if not now (imports keep the original time).
    pub created_at: Option<Timestamp>,
    /// When it last changed, if not now (imports); not before `created_at`.
    pub updated_at: Option<Timestamp>,
}

impl From<&Memory> for NewMemory {
    /// `memory` as it reads, to be written again as a new memory: the same collection,
    /// title, text, tags, kind, importance, source, links, task and times.
    fn from(memory: &Memory) -> NewMemory {
        NewMemory {
            title: Some(memory.title.clone()),
            content: memory.content.clone(),
            tags: memory.tags.iter().cloned().collect(),
            kind: Some(memory.kind.clone()),
            importance: Some(memory.importance),
            source: memory.source.clone(),
            collection: Some(memory.collection),
            links: memory
                .links
                .iter()
                .filter(|(target, _)| **target != memory.id)
                .map(|(target, relation)| (*target, relation.clone()))
                .collect(),
            task: memory.task.clone(),
            created_at: Some(memory.created_at),
            updated_at: Some(memory.updated_at),
        }
    }
}

/// Changes to a memory. Fields left `None` or empty are not touched.
#[derive(Debug, Clone, Default)]
pub struct MemoryEdit {
    /// A new title.
    pub title: Option<String>,
    /// A new body; stored as a text diff so concurrent edits of other parts merge.
    pub content: Option<String>,
    /// Tags to add.
    pub add_tags: Vec<String>,
    /// Tags to remove.
    pub remove_tags: Vec<String>,
    /// A new kind.
    pub kind: Option<String>,
    /// A new importance.
    pub importance: Option<f64>,
    /// Links to add or re-label.
    pub add_links: Vec<(MemoryId, String)>,
    /// Links to remove.
    pub remove_links: Vec<MemoryId>,
    /// New task fields.
    pub task: Option<Task>,
}

impl MemoryEdit {
    /// Whether the edit changes nothing.
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.content.is_none()
            && self.add_tags.is_empty()
            && self.remove_tags.is_empty()
            && self.kind.is_none()
            && self.importance.is_none()
            && self.add_links.is_empty()
            && self.remove_links.is_empty()
            && self.task.is_none()
    }
}

/// Why input for a memory was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The content is empty or only whitespace.
    #[error("the memory's text is empty")]
    EmptyContent,
    /// The content is too large.
    #[error("the memory's text is {len} bytes; the limit is {max}")]
    ContentTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The title is too long.
    #[error("the title is {len} bytes; the limit is {max}")]
    TitleTooLong {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A tag is malformed.
    #[error("invalid tag {tag:?}: {reason}")]
    InvalidTag {
        /// The tag as given.
        tag: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Too many tags.
    #[error("too many tags: {0}; the limit is {MAX_TAGS}")]
    TooManyTags(usize),
    /// Too many links.
    #[error("too many links: {0}; the limit is {MAX_LINKS}")]
    TooManyLinks(usize),
    /// The kind is malformed.
    #[error(
        "invalid kind {0:?}: use 1 to 32 lowercase letters, digits, '-' or '_', starting with a letter"
    )]
    InvalidKind(String),
    /// The importance is out of range.
    #[error("invalid importance {0}: it must be a number from 0 to 1")]
    InvalidImportance(f64),
    /// A link's relation name is malformed.
    #[error("invalid link relation {0:?}: use 1 to 64 characters without control characters")]
    InvalidRelation(String),
    /// A task field is out of range.
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// The times given are not in order.
    #[error("the update time is before the creation time")]
    TimesOutOfOrder,
}

/// Normalises and checks a tag: trims it, drops one leading `#`.
pub fn normalize_tag(tag: &str) -> Result<String, ValidationError> {
    let trimmed = tag.trim();
    let trimmed = trimmed.strip_prefix('#').unwrap_or(trimmed);
    let invalid = |reason| ValidationError::InvalidTag {
        tag: tag.chars().take(80).collect(),
        reason,
    };
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    if trimmed.chars().count() > MAX_TAG_CHARS {
        return Err(invalid("it is longer than 64 characters"));
    }
    if trimmed
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(invalid(
            "it contains whitespace, a comma or a control character",
        ));
    }
    Ok(trimmed.to_owned())
}

fn check_kind(kind: &str) -> Result<(), ValidationError> {
    let mut chars = kind.chars();
    let ok = kind.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::InvalidKind(
            kind.chars().take(40).collect(),
        ))
    }
}

fn check_importance(importance: f64) -> Result<(), ValidationError> {
    if importance.is_finite() && (0.0..=1.0).contains(&importance) {
        Ok(())
    } else {
        Err(ValidationError::InvalidImportance(importance))
    }
}

fn check_content(content: &str) -> Result<(), ValidationError> {
    if content.trim().is_empty() {
        return Err(ValidationError::EmptyContent);
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(ValidationError::ContentTooLarge {
            len: content.len(),
            max: MAX_CONTENT_BYTES,
        });
    }
    Ok(())
}

fn check_title(title: &str) -> Result<(), ValidationError> {
    if title.len() > MAX_TITLE_BYTES {
        return Err(ValidationError::TitleTooLong {
            len: title.len(),
            max: MAX_TITLE_BYTES,
        });
    }
    Ok(())
}

fn check_relation(relation: &str) -> Result<(), ValidationError> {
    let count = relation.chars().count();
    if count == 0 || count > 64 || relation.chars().any(char::is_control) {
        return Err(ValidationError::InvalidRelation(
            relation.chars().take(80).collect(),
        ));
    }
    Ok(())
}

fn check_task(task: &Task) -> Result<(), ValidationError> {
    let invalid = |m: String| Err(ValidationError::InvalidTask(m));
    if !(1..=5).contains(&task.difficulty) {
        return invalid(format!("difficulty {} is not from 1 to 5", task.difficulty));
    }
    if task.xp > MAX_TASK_XP {
        return invalid(format!("{} points is over {MAX_TASK_XP}", task.xp));
    }
    let mut chars = task.status.chars();
    let status_ok = task.status.len() <= 32
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c == '-' || c == '_');
    if !status_ok {
        return invalid(format!(
            "status {:?}: use lowercase letters, e.g. open or done",
            task.status.chars().take(40).collect::<String>()
        ));
    }
    Ok(())
}

/// Tags are told apart without regard to case: of `#Daily` and `#daily`, the first
/// spelling given is kept.
fn normalize_tags(tags: &[String]) -> Result<BTreeSet<String>, ValidationError> {
    let mut seen = std::collections::HashSet::new();
    let mut kept = BTreeSet::new();
    for tag in tags {
        let tag = normalize_tag(tag)?;
        if seen.insert(tag.to_lowercase()) {
            kept.insert(tag);
        }
    }
    let tags = kept;
    if tags.len() > MAX_TAGS {
        return Err(ValidationError::TooManyTags(tags.len()));
    }
    Ok(tags)
}

/// A title derived from content: its first non-empty line without Markdown heading marks,
/// cut at 80 characters.
pub fn derive_title(content: &str) -> String {
    let line = content
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let line = line.trim_start_matches('#').trim();
    let mut title: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        title.push('…');
    }
    title
}

/// A checked [`NewMemory`], ready to become a document.
#[derive(Debug, Clone)]
pub(crate) struct ValidNew {
    title: String,
    content: String,
    tags: BTreeSet<String>,
    kind: String,
    importance: f64,
    source: Option<Source>,
    /// The reference to a content above [`MAX_MERGED_TEXT_BYTES`], kept beside.
    pub(crate) content_ref: Option<TextRef>,
    /// One relation per target: a target given twice keeps the last.
    links: BTreeMap<MemoryId, String>,
    task: Option<Task>,
    created_at: Option<Timestamp>,
    updated_at: Option<Timestamp>,
}

impl ValidNew {
    /// When the new memory was made and last changed: as given, else `now`.
    fn times(&self, now: Timestamp) -> (Timestamp, Timestamp) {
        let created = self.created_at.unwrap_or(now);
        (created, self.updated_at.unwrap_or(created.max(now)))
    }

    /// The first (and only) change of the new memory's document, encoded straight from
    /// the input: byte for byte the change [`MemoryDoc::create_valid`] commits through an
    /// automerge document (a property test holds them equal), without building that
    /// document's op set, which was most of the CPU an add costs. A document loads from
    /// the change's bytes as it does from a saved document.
    pub(crate) fn first_change(&self, author: &Did, now: Timestamp) -> automerge::Change {
        use automerge::legacy::ObjectId;
        // One operation a character for a merged text, one for a long content.
        let content_ops = if self.content_ref.is_some() {
            1
        } else {
            self.content.len()
        };
        let mut ops = OpWriter::new(actor_id(author), 16 + content_ops);
        let root = ObjectId::Root;
        ops.put(&root, "title", self.title.as_str().into());
        if let Some(text) = self.content_ref {
            ops.put(&root, "content", ScalarValue::Bytes(text.to_bytes()));
        } else {
            let text = ops.make(&root, "content", ObjType::Text);
            ops.insert_chars(&text, &self.content);
        }
        let tags = ops.make(&root, "tags", ObjType::Map);
        for tag in &self.tags {
            ops.put(&tags, tag, ScalarValue::Boolean(true));
        }
        ops.put(&root, "kind", self.kind.as_str().into());
        ops.put(&root, "importance", ScalarValue::F64(self.importance));
        if let Some(source) = &self.source {
            let obj = ops.make(&root, "source", ObjType::Map);
            ops.put(&obj, "kind", source.kind.as_str().into());
            if let Some(uri) = &source.uri {
                ops.put(&obj, "uri", uri.as_str().into());
            }
        }
        let (created, updated) = self.times(now);
        ops.put(
            &root,
            "created_at",
            ScalarValue::Timestamp(created.as_millis()),
        );
        ops.put(
            &root,
            "updated_at",
            ScalarValue::Timestamp(updated.as_millis()),
        );
        ops.put(&root, "author", author.to_string().into());
        let links = ops.make(&root, "links", ObjType::Map);
        for (target, relation) in &self.links {
            ops.put(&links, &target.to_string(), relation.as_str().into());
        }
        if let Some(task) = &self.task {
            let obj = ops.make(&root, "task", ObjType::Map);
            ops.put(&obj, "status", task.status.as_str().into());
            ops.put(&obj, "priority", ScalarValue::Int(task.priority));
            ops.put(&obj, "difficulty", ScalarValue::Int(task.difficulty.into()));
            ops.put(&obj, "xp", ScalarValue::Int(task.xp.into()));
            if let Some(due) = task.due {
                ops.put(&obj, "due", ScalarValue::Timestamp(due.as_millis()));
            }
        }
        automerge::Change::from(automerge::ExpandedChange {
            operations: ops.ops,
            actor_id: ops.actor,
            hash: None,
            seq: 1,
            start_op: std::num::NonZeroU64::MIN,
            time: now.as_millis(),
            message: None,
            deps: Vec::new(),
            extra_bytes: Vec::new(),
            author: None,
        })
    }

    /// What the store keeps for the new memory's document, and the hash of its one change.
    /// Up to [`FIRST_CHANGE_MAX_CONTENT`] of content, or a content above
    /// [`MAX_MERGED_TEXT_BYTES`] (its [`TextRef`], one operation), the change itself
    /// ([`ValidNew::first_change`]): a document loads from it, and its history is that one
    /// change without loading. A text merged by character in between is saved as a
    /// document, built op by op: a load replays a change's operations one by one, which
    /// for a character per operation costs more time and memory than building the
    /// document once.
    pub(crate) fn stored(&self, author: &Did, now: Timestamp) -> (Vec<u8>, ChangeHash) {
        let len = self.content.len();
        if len <= FIRST_CHANGE_MAX_CONTENT || len > MAX_MERGED_TEXT_BYTES {
            let mut change = self.first_change(author, now);
            let bytes = if change.raw_bytes().len() <= FIRST_CHANGE_KEPT_AS_IS_UP_TO {
                change.raw_bytes().to_vec()
            } else {
                change.bytes().into_owned()
            };
            (bytes, change.hash())
        } else {
            let (mut doc, hash) = MemoryDoc::create_valid(author, self, now);
            (doc.save(), hash)
        }
    }

    /// The new memory as its document reads (see [`ValidNew::stored`]).
    pub(crate) fn memory(
        &self,
        id: MemoryId,
        collection: CollectionId,
        author: &Did,
        now: Timestamp,
    ) -> Memory {
        let (created_at, updated_at) = self.times(now);
        Memory {
            id,
            collection,
            title: self.title.clone(),
            content: self.content.clone(),
            tags: self.tags.clone(),
            kind: self.kind.clone(),
            importance: self.importance,
            source: self.source.clone(),
            created_at,
            updated_at,
            author: author.to_string(),
            links: self.links.clone(),
            task: self.task.clone(),
        }
    }
}

/// The saved size from which a document keeps its local changes appended to it rather than
/// saved anew with them (see [`MemoryDoc::save_after`]).
pub(crate) const APPEND_CHANGES_FROM: usize = 1024 * 1024;

/// The saved size from which the document of a long text keeps its local changes appended
/// (see [`MemoryDoc::save_after`]).
pub(crate) const APPEND_LONG_FROM: usize = 16 * 1024;

/// The longest content a new memory is stored as its first change (see [`ValidNew::stored`]).
const FIRST_CHANGE_MAX_CONTENT: usize = 8 * 1024;
/// A first change longer than this is stored deflated (as automerge keeps a change), a
/// shorter one as it is: setting up deflate costs about as much CPU as the rest of a short
/// memory's change (20–30 µs) to save a few dozen bytes, and both load alike.
const FIRST_CHANGE_KEPT_AS_IS_UP_TO: usize = 1024;

/// The operations of a new document's first change, numbered from 1 in order.
struct OpWriter {
    actor: ActorId,
    ops: Vec<automerge::legacy::Op>,
}

impl OpWriter {
    fn new(actor: ActorId, capacity: usize) -> OpWriter {
        OpWriter {
            actor,
            ops: Vec::with_capacity(capacity),
        }
    }

    fn next_id(&self) -> automerge::legacy::OpId {
        automerge::legacy::OpId(self.ops.len() as u64 + 1, self.actor.clone())
    }

    fn push(
        &mut self,
        obj: &automerge::legacy::ObjectId,
        key: automerge::legacy::Key,
        action: automerge::legacy::OpType,
        insert: bool,
    ) {
        self.ops.push(automerge::legacy::Op {
            action,
            obj: obj.clone(),
            key,
            pred: automerge::legacy::SortedVec::new(),
            insert,
        });
    }

    fn put(&mut self, obj: &automerge::legacy::ObjectId, key: &str, value: ScalarValue) {
        let key = automerge::legacy::Key::Map(key.into());
        self.push(obj, key, automerge::legacy::OpType::Put(value), false);
    }

    /// Makes an object at `key` of `obj` and returns it.
    fn make(
        &mut self,
        obj: &automerge::legacy::ObjectId,
        key: &str,
        kind: ObjType,
    ) -> automerge::legacy::ObjectId {
        let id = self.next_id();
        let key = automerge::legacy::Key::Map(key.into());
        self.push(obj, key, automerge::legacy::OpType::Make(kind), false);
        automerge::legacy::ObjectId::Id(id)
    }

    /// Inserts `text` into the empty text `obj`, one code point per operation, each after
    /// the one before (what a splice at 0 does).
    fn insert_chars(&mut self, obj: &automerge::legacy::ObjectId, text: &str) {
        use automerge::legacy::{ElementId, Key, OpType};
        let mut after = ElementId::Head;
        for c in text.chars() {
            let id = self.next_id();
            self.push(obj, Key::Seq(after), OpType::Put(c.into()), true);
            after = ElementId::Id(id);
        }
    }
}

impl NewMemory {
    pub(crate) fn validate(&self) -> Result<ValidNew, ValidationError> {
        check_content(&self.content)?;
        let title = match &self.title {
            Some(title) => title.trim().to_owned(),
            None => derive_title(&self.content),
        };
        check_title(&title)?;
        let kind = self.kind.clone().unwrap_or_else(|| DEFAULT_KIND.to_owned());
        check_kind(&kind)?;
        let importance = self.importance.unwrap_or(DEFAULT_IMPORTANCE);
        check_importance(importance)?;
        if self.links.len() > MAX_LINKS {
            return Err(ValidationError::TooManyLinks(self.links.len()));
        }
        for (_, relation) in &self.links {
            check_relation(relation)?;
        }
        if let Some(task) = &self.task {
            check_task(task)?;
        }
        if let (Some(created), Some(updated)) = (self.created_at, self.updated_at)
            && updated < created
        {
            return Err(ValidationError::TimesOutOfOrder);
        }
        Ok(ValidNew {
            title,
            content_ref: (self.content.len() > MAX_MERGED_TEXT_BYTES)
                .then(|| TextRef::of(&self.content)),
            content: self.content.clone(),
            tags: normalize_tags(&self.tags)?,
            kind,
            importance,
            source: self.source.clone(),
            links: self.links.iter().cloned().collect(),
            task: self.task.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

impl MemoryEdit {
    pub(crate) fn validate(&self) -> Result<(), ValidationError> {
        if let Some(content) = &self.content {
            check_content(content)?;
        }
        if let Some(title) = &self.title {
            check_title(title)?;
        }
        if let Some(kind) = &self.kind {
            check_kind(kind)?;
        }
        if let Some(importance) = self.importance {
            check_importance(importance)?;
        }
        normalize_tags(&self.add_tags)?;
        for tag in &self.remove_tags {
            normalize_tag(tag)?;
        }
        for (_, relation) in &self.add_links {
            check_relation(relation)?;
        }
        if let Some(task) = &self.task {
            check_task(task)?;
        }
        Ok(())
    }
}

/// The automerge actor id of a node: its 32-byte public key.
pub fn actor_id(did: &Did) -> ActorId {
    ActorId::from(did.public_key().as_slice())
}

/// One memory's automerge document.
#[derive(Debug)]
pub struct MemoryDoc {
    doc: AutoCommit,
}

impl MemoryDoc {
    /// Checks `new` and creates the document of a new memory authored by `author` at
    /// `now`. Returns the document and the hash of its one change (to be signed).
    pub fn create(
        author: &Did,
        new: &NewMemory,
        now: Timestamp,
    ) -> Result<(MemoryDoc, ChangeHash), ValidationError> {
        Ok(MemoryDoc::create_valid(author, &new.validate()?, now))
    }

    /// Creates the document of a new memory from validated input.
    pub(crate) fn create_valid(
        author: &Did,
        new: &ValidNew,
        now: Timestamp,
    ) -> (MemoryDoc, ChangeHash) {
        let mut doc = AutoCommit::new().with_actor(actor_id(author));
        // Building a fresh document from validated input cannot fail; the `expect`s name
        // automerge invariants, not input.
        let result: Result<(), automerge::AutomergeError> = (|| {
            let root = automerge::ROOT;
            doc.put(&root, "title", new.title.as_str())?;
            put_content(&mut doc, &new.content)?;
            let tags = doc.put_object(&root, "tags", ObjType::Map)?;
            for tag in &new.tags {
                doc.put(&tags, tag.as_str(), true)?;
            }
            doc.put(&root, "kind", new.kind.as_str())?;
            doc.put(&root, "importance", new.importance)?;
            if let Some(source) = &new.source {
                put_source(&mut doc, source)?;
            }
            let (created, updated) = new.times(now);
            doc.put(
                &root,
                "created_at",
                ScalarValue::Timestamp(created.as_millis()),
            )?;
            doc.put(
                &root,
                "updated_at",
                ScalarValue::Timestamp(updated.as_millis()),
            )?;
            doc.put(&root, "author", author.to_string())?;
            let links = doc.put_object(&root, "links", ObjType::Map)?;
            for (target, relation) in &new.links {
                doc.put(&links, target.to_string(), relation.as_str())?;
            }
            if let Some(task) = &new.task {
                put_task(&mut doc, task)?;
            }
            Ok(())
        })();
        result.expect("writing to a fresh automerge document");
        let hash = doc
            .commit_with(CommitOptions::default().with_time(now.as_millis()))
            .expect("a new memory document has one change");
        (MemoryDoc { doc }, hash)
    }

    /// Loads a saved document and sets `actor` for later local edits.
    pub fn load(bytes: &[u8], actor: &Did) -> Result<MemoryDoc, automerge::AutomergeError> {
        let doc = AutoCommit::load(bytes)?.with_actor(actor_id(actor));
        Ok(MemoryDoc { doc })
    }

    /// An empty document, to receive a memory's changes from elsewhere.
    pub fn empty(actor: &Did) -> MemoryDoc {
        MemoryDoc {
            doc: AutoCommit::new().with_actor(actor_id(actor)),
        }
    }

    /// Applies a validated edit at `now`. Returns the new change's hash, or `None` if the
    /// edit changed nothing.
    pub(crate) fn edit(
        &mut self,
        edit: &MemoryEdit,
        now: Timestamp,
    ) -> Result<Option<ChangeHash>, automerge::AutomergeError> {
        let doc = &mut self.doc;
        let root = automerge::ROOT;
        if let Some(title) = &edit.title {
            doc.put(&root, "title", title.trim())?;
        }
        if let Some(content) = &edit.content
            && !content_is(doc, content)
        {
            put_content(doc, content)?;
        }
        if !edit.add_tags.is_empty() || !edit.remove_tags.is_empty() {
            // Without regard to case: removing `daily` removes `#Daily`, and adding `daily`
            // to a memory tagged `#Daily` keeps the spelling it has.
            let tags = ensure_object(doc, &root, "tags", ObjType::Map)?;
            let held = |doc: &AutoCommit, tag: &str| -> Vec<String> {
                let folded = tag.to_lowercase();
                doc.keys(&tags)
                    .filter(|k| k.to_lowercase() == folded)
                    .collect()
            };
            for tag in &edit.remove_tags {
                if let Ok(tag) = normalize_tag(tag) {
                    for key in held(doc, &tag) {
                        doc.delete(&tags, key.as_str())?;
                    }
                }
            }
            for tag in &edit.add_tags {
                if let Ok(tag) = normalize_tag(tag)
                    && held(doc, &tag).is_empty()
                {
                    doc.put(&tags, tag.as_str(), true)?;
                }
            }
        }
        if let Some(kind) = &edit.kind {
            doc.put(&root, "kind", kind.as_str())?;
        }
        if let Some(importance) = edit.importance {
            doc.put(&root, "importance", importance)?;
        }
        if !edit.add_links.is_empty() || !edit.remove_links.is_empty() {
            let links = ensure_object(doc, &root, "links", ObjType::Map)?;
            for target in &edit.remove_links {
                let key = target.to_string();
                if doc.get(&links, key.as_str())?.is_some() {
                    doc.delete(&links, key.as_str())?;
                }
            }
            for (target, relation) in &edit.add_links {
                doc.put(&links, target.to_string(), relation.as_str())?;
            }
        }
        if let Some(task) = &edit.task {
            put_task(doc, task)?;
        }
        if doc.pending_ops() == 0 {
            doc.rollback();
            return Ok(None);
        }
        doc.put(&root, "updated_at", ScalarValue::Timestamp(now.as_millis()))?;
        Ok(doc.commit_with(CommitOptions::default().with_time(now.as_millis())))
    }

    /// Reads the memory's fields. Tolerates missing or mistyped fields (a peer may have
    /// written them), using defaults, so reading never fails. A text kept beside the
    /// document ([`MemoryDoc::content_ref`]) is not in it, and reads here as empty: the
    /// store reads it from where it keeps it.
    pub fn read(&self, id: MemoryId, collection: CollectionId) -> Memory {
        self.read_with_content(id, collection, read_content(&self.doc))
    }

    /// As [`MemoryDoc::read`], with `content` for the text: for a caller that has the text
    /// already (an edit that set it), so that a long one is not copied out again.
    pub(crate) fn read_with_content(
        &self,
        id: MemoryId,
        collection: CollectionId,
        content: String,
    ) -> Memory {
        let doc = &self.doc;
        let root = automerge::ROOT;
        let tags = object(doc, &root, "tags")
            .map(|tags| doc.keys(&tags).collect())
            .unwrap_or_default();
        let links = object(doc, &root, "links")
            .map(|links| {
                doc.map_range(&links, ..)
                    .filter_map(|item| {
                        let target = item.key.parse::<MemoryId>().ok()?;
                        let relation = item.value.into_value().into_string().ok()?;
                        Some((target, relation))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let source = object(doc, &root, "source").map(|source| Source {
            kind: string(doc, &source, "kind").unwrap_or_default(),
            uri: string(doc, &source, "uri"),
        });
        let task = object(doc, &root, "task").map(|task| Task {
            status: string(doc, &task, "status").unwrap_or_default(),
            priority: scalar(doc, &task, "priority")
                .and_then(|v| v.as_i64())
                .unwrap_or(0),
            due: timestamp(doc, &task, "due"),
            difficulty: scalar(doc, &task, "difficulty")
                .and_then(|v| v.as_i64())
                .and_then(|d| u8::try_from(d).ok())
                .filter(|d| (1..=5).contains(d))
                .unwrap_or(1),
            xp: scalar(doc, &task, "xp")
                .and_then(|v| v.as_i64())
                .and_then(|x| u32::try_from(x).ok())
                .map_or(Task::default_xp(1), |x| x.min(MAX_TASK_XP)),
        });
        Memory {
            id,
            collection,
            title: string(doc, &root, "title").unwrap_or_default(),
            content,
            tags,
            kind: string(doc, &root, "kind").unwrap_or_else(|| DEFAULT_KIND.to_owned()),
            importance: scalar(doc, &root, "importance")
                .and_then(|v| v.as_f64())
                .filter(|v| v.is_finite())
                .map_or(DEFAULT_IMPORTANCE, |v| v.clamp(0.0, 1.0)),
            source,
            created_at: timestamp(doc, &root, "created_at").unwrap_or_default(),
            updated_at: timestamp(doc, &root, "updated_at").unwrap_or_default(),
            author: string(doc, &root, "author").unwrap_or_default(),
            links,
            task,
        }
    }

    /// The reference at `content`, when the text is kept beside the document ([`TextRef`]).
    pub fn content_ref(&self) -> Option<TextRef> {
        self.content_setter().map(|(named, ..)| named)
    }

    /// The text kept beside the document, with the operation that set it (its counter and
    /// actor): which change set it, without decoding any.
    pub(crate) fn content_setter(&self) -> Option<(TextRef, u64, ActorId)> {
        match self.doc.get(automerge::ROOT, "content").ok().flatten() {
            Some((Value::Scalar(value), automerge::ObjId::Id(counter, actor, _))) => {
                TextRef::in_value(&value).map(|named| (named, counter, actor))
            }
            _ => None,
        }
    }

    /// The title as [`MemoryDoc::read`] reads it, without reading the rest (a text may be
    /// megabytes).
    pub(crate) fn title(&self) -> String {
        string(&self.doc, &automerge::ROOT, "title").unwrap_or_default()
    }

    /// Serialises the whole document, history included.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// What to keep for this document after a local change with `hash`, when it was loaded
    /// from `stored` and its text is now `content_len` bytes long. A document saved as at
    /// least [`APPEND_CHANGES_FROM`] bytes, or one of a long text saved as at least
    /// [`APPEND_LONG_FROM`] (one written before long texts were kept beside may hold every
    /// version of its text as a string value, deflated to little), keeps `stored` followed
    /// by the change alone, deflated (automerge loads a document chunk followed by change
    /// chunks as one document): saving it anew would encode its whole history several
    /// times over in memory, for each edit. (`stored` may begin with a change chunk: a new
    /// memory is kept as its first change.) Any other is saved whole, which also folds
    /// changes appended before back in: a document of a long text kept beside is a few
    /// hundred bytes an edit, and is saved whole until it reaches [`APPEND_LONG_FROM`].
    pub(crate) fn save_after(
        &mut self,
        stored: &[u8],
        hash: &ChangeHash,
        content_len: usize,
    ) -> Vec<u8> {
        let long = content_len > MAX_MERGED_TEXT_BYTES && stored.len() >= APPEND_LONG_FROM;
        if stored.len() < APPEND_CHANGES_FROM && !long {
            return self.save();
        }
        let Some(mut change) = self.doc.get_change_by_hash(hash) else {
            return self.save();
        };
        let change = change.bytes();
        let mut kept = Vec::with_capacity(stored.len() + change.len());
        kept.extend_from_slice(stored);
        kept.extend_from_slice(&change);
        kept
    }

    /// The current heads, sorted.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        let mut heads = self.doc.get_heads();
        heads.sort();
        heads
    }

    /// The underlying automerge document, for sync.
    pub fn automerge(&mut self) -> &mut AutoCommit {
        &mut self.doc
    }
}

fn put_source(doc: &mut AutoCommit, source: &Source) -> Result<(), automerge::AutomergeError> {
    let obj = doc.put_object(automerge::ROOT, "source", ObjType::Map)?;
    doc.put(&obj, "kind", source.kind.as_str())?;
    if let Some(uri) = &source.uri {
        doc.put(&obj, "uri", uri.as_str())?;
    }
    Ok(())
}

fn put_task(doc: &mut AutoCommit, task: &Task) -> Result<(), automerge::AutomergeError> {
    let obj = ensure_object(doc, &automerge::ROOT, "task", ObjType::Map)?;
    doc.put(&obj, "status", task.status.as_str())?;
    doc.put(&obj, "priority", task.priority)?;
    doc.put(&obj, "difficulty", i64::from(task.difficulty))?;
    doc.put(&obj, "xp", i64::from(task.xp))?;
    match task.due {
        Some(due) => doc.put(&obj, "due", ScalarValue::Timestamp(due.as_millis()))?,
        None => {
            if doc.get(&obj, "due")?.is_some() {
                doc.delete(&obj, "due")?;
            }
        }
    }
    Ok(())
}

/// Sets the content: a text up to [`MAX_MERGED_TEXT_BYTES`], a [`TextRef`] above. An
/// existing text is diffed against (so concurrent edits of other parts merge); a new one
/// is one splice, not a diff against nothing.
fn put_content(doc: &mut AutoCommit, content: &str) -> Result<(), automerge::AutomergeError> {
    let root = automerge::ROOT;
    if content.len() > MAX_MERGED_TEXT_BYTES {
        let text = TextRef::of(content);
        return doc.put(&root, "content", ScalarValue::Bytes(text.to_bytes()));
    }
    match doc.get(&root, "content")? {
        Some((Value::Object(ObjType::Text), text)) => doc.update_text(&text, content),
        _ => {
            let text = doc.put_object(&root, "content", ObjType::Text)?;
            doc.splice_text(&text, 0, 0, content)
        }
    }
}

/// The content, whichever form it has (a text kept beside reads as empty).
fn read_content(doc: &AutoCommit) -> String {
    match doc.get(automerge::ROOT, "content").ok().flatten() {
        Some((Value::Object(ObjType::Text), text)) => doc.text(&text).unwrap_or_default(),
        Some((Value::Scalar(value), _)) => value.as_str().map(str::to_owned).unwrap_or_default(),
        _ => String::new(),
    }
}

/// Whether the content reads as `content`, without copying a long one out to compare.
fn content_is(doc: &AutoCommit, content: &str) -> bool {
    match doc.get(automerge::ROOT, "content").ok().flatten() {
        Some((Value::Scalar(value), _)) => match TextRef::in_value(&value) {
            Some(text) => text.names(content),
            None => value.as_str().unwrap_or_default() == content,
        },
        Some((Value::Object(ObjType::Text), _)) => read_content(doc) == content,
        _ => content.is_empty(),
    }
}

/// The object at `key`, created with type `ty` if missing or of another type.
fn ensure_object(
    doc: &mut AutoCommit,
    parent: &ObjId,
    key: &str,
    ty: ObjType,
) -> Result<ObjId, automerge::AutomergeError> {
    match doc.get(parent, key)? {
        Some((Value::Object(found), id)) if found == ty => Ok(id),
        _ => doc.put_object(parent, key, ty),
    }
}

fn object(doc: &AutoCommit, parent: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(parent, key).ok().flatten() {
        Some((Value::Object(_), id)) => Some(id),
        _ => None,
    }
}

fn scalar(doc: &AutoCommit, parent: &ObjId, key: &str) -> Option<ScalarValue> {
    match doc.get(parent, key).ok().flatten() {
        Some((Value::Scalar(value), _)) => Some(value.into_owned()),
        _ => None,
    }
}

fn string(doc: &AutoCommit, parent: &ObjId, key: &str) -> Option<String> {
    scalar(doc, parent, key).and_then(|v| v.into_string().ok())
}

fn timestamp(doc: &AutoCommit, parent: &ObjId, key: &str) -> Option<Timestamp> {
    match scalar(doc, parent, key)? {
        ScalarValue::Timestamp(ms) | ScalarValue::Int(ms) => Some(Timestamp::from_millis(ms)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use mnemon_identity::Keypair;

    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// The first change encoded from the input is the change an automerge document
        /// commits for it, byte for byte, and the document it loads into reads as the
        /// memory the store writes beside it.
        #[test]
        fn a_new_memorys_first_change_is_the_documents(
            title in proptest::option::of("[ a-zA-Zé😀]{0,12}"),
            content in "(?s).{0,40}",
            tags in proptest::collection::vec("[a-zA-Z][a-z0-9/_-]{0,6}", 0..4),
            kind in proptest::option::of("[a-z]{1,8}"),
            importance in proptest::option::of(0.0f64..=1.0),
            source in proptest::option::of(("[a-z]{1,6}", proptest::option::of("[a-z:/.]{0,12}"))),
            links in proptest::collection::vec((0u64..4, "[a-z]{1,8}"), 0..4),
            task in proptest::option::of((-3i64..9, proptest::option::of(0i64..1 << 42), 1u8..=5, 0u32..500)),
            times in proptest::option::of((0i64..1 << 41, proptest::option::of(0i64..1 << 20))),
            now in 1i64..1 << 42,
        ) {
            let keypair = Keypair::generate();
            let did = keypair.did();
            let now = Timestamp::from_millis(now);
            let new = NewMemory {
                title,
                content,
                tags: tags.into_iter().collect(),
                kind,
                importance,
                source: source.map(|(kind, uri)| Source { kind, uri }),
                links: links
                    .into_iter()
                    .map(|(n, relation)| (MemoryId::new(Timestamp::from_millis(n as i64 + 1)), relation))
                    .collect(),
                task: task.map(|(priority, due, difficulty, xp)| Task {
                    status: "open".into(),
                    priority,
                    due: due.map(Timestamp::from_millis),
                    difficulty,
                    xp,
                }),
                created_at: times.map(|(c, _)| Timestamp::from_millis(c)),
                updated_at: times.and_then(|(c, u)| u.map(|u| Timestamp::from_millis(c + u))),
                ..NewMemory::default()
            };
            let Ok(valid) = new.validate() else {
                return Ok(());
            };
            let (mut doc, hash) = MemoryDoc::create_valid(&did, &valid, now);
            let mut change = valid.first_change(&did, now);
            proptest::prop_assert_eq!(change.hash(), hash);
            let committed = doc.automerge().get_changes(&[]);
            proptest::prop_assert_eq!(committed.len(), 1);
            proptest::prop_assert_eq!(change.raw_bytes(), committed[0].raw_bytes());
            let id = MemoryId::new(now);
            let collection = CollectionId::new(now);
            let mut loaded = MemoryDoc::load(&change.bytes(), &did).expect("loads");
            let memory = valid.memory(id, collection, &did, now);
            proptest::prop_assert_eq!(&loaded.read(id, collection), &memory);
            proptest::prop_assert_eq!(&doc.read(id, collection), &memory);
            proptest::prop_assert_eq!(loaded.heads(), vec![hash]);
        }
    }

    #[test]
    fn a_long_memorys_first_change_is_the_documents_too() {
        let keypair = Keypair::generate();
        let did = keypair.did();
        let now = Timestamp::from_millis(1_700_000_000_000);
        // Just above the merged-text limit the content is one string; below it, text.
        for content in [
            "ä".repeat(MAX_MERGED_TEXT_BYTES / 2 + 1),
            "line with ü and 😀\n".repeat(100),
        ] {
            let valid = new(&content).validate().expect("valid");
            let (mut doc, hash) = MemoryDoc::create_valid(&did, &valid, now);
            let change = valid.first_change(&did, now);
            assert_eq!(change.hash(), hash);
            assert_eq!(
                change.raw_bytes(),
                doc.automerge().get_changes(&[])[0].raw_bytes()
            );
        }
    }

    /// A short memory's change is stored as it is, a longer one deflated; both load into
    /// the same document.
    #[test]
    fn a_short_first_change_is_stored_as_it_is_and_a_longer_one_deflated() {
        let keypair = Keypair::generate();
        let did = keypair.did();
        let now = Timestamp::from_millis(1_700_000_000_000);
        let (id, collection) = (MemoryId::new(now), CollectionId::new(now));
        for (content, deflated) in [
            ("a short note about the kettle".to_owned(), false),
            ("the kettle and the garden budget ".repeat(100), true),
        ] {
            let valid = new(&content).validate().expect("valid");
            let change = valid.first_change(&did, now);
            let (stored, hash) = valid.stored(&did, now);
            assert_eq!(hash, change.hash());
            if deflated {
                assert!(stored.len() < change.raw_bytes().len() / 2, "not deflated");
            } else {
                assert_eq!(stored, change.raw_bytes());
            }
            let loaded = MemoryDoc::load(&stored, &did).expect("loads");
            assert_eq!(loaded.read(id, collection).content, content);
        }
    }

    fn new(content: &str) -> NewMemory {
        NewMemory {
            content: content.into(),
            ..NewMemory::default()
        }
    }

    #[test]
    fn create_and_read_back() {
        let me = Keypair::generate().did();
        let input = NewMemory {
            title: Some("Milk".into()),
            content: "Buy *oat* milk".into(),
            tags: vec!["#shopping".into(), "home".into()],
            kind: Some("task".into()),
            importance: Some(0.9),
            ..NewMemory::default()
        };
        let valid = input.validate().expect("valid");
        let now = Timestamp::from_millis(1_700_000_000_000);
        let (mut doc, _) = MemoryDoc::create_valid(&me, &valid, now);
        let id = MemoryId::new(now);
        let collection = CollectionId::new(now);
        let memory = doc.read(id, collection);
        assert_eq!(memory.title, "Milk");
        assert_eq!(memory.content, "Buy *oat* milk");
        assert_eq!(
            memory.tags.iter().map(String::as_str).collect::<Vec<_>>(),
            ["home", "shopping"]
        );
        assert_eq!(memory.kind, "task");
        assert_eq!(memory.importance, 0.9);
        assert_eq!(memory.created_at, now);
        assert_eq!(memory.author, me.to_string());
        // Saved and loaded, it reads the same.
        let loaded = MemoryDoc::load(&doc.save(), &me).expect("load");
        assert_eq!(loaded.read(id, collection), memory);
    }

    #[test]
    fn large_content_is_one_value_small_content_merges_by_character() {
        let (a, b) = (Keypair::generate().did(), Keypair::generate().did());
        let t = Timestamp::from_millis(1);
        let (id, c) = (MemoryId::new(t), CollectionId::new(t));
        let big = "word ".repeat(MAX_MERGED_TEXT_BYTES / 5 + 1);
        let (mut doc, _) = MemoryDoc::create_valid(&a, &new(&big).validate().expect("ok"), t);
        // Kept beside: the document holds its reference, not the text.
        assert_eq!(doc.content_ref(), Some(TextRef::of(&big)));
        assert_eq!(doc.read(id, c).content, "");
        let saved = doc.save();
        assert!(saved.len() < 1024, "the text is in the document");
        let mut other = MemoryDoc::load(&saved, &b).expect("load");
        // Concurrent edits of a large content: one wins whole, both replicas agree.
        let edit = |doc: &mut MemoryDoc, text: String| {
            let e = MemoryEdit {
                content: Some(text),
                ..MemoryEdit::default()
            };
            doc.edit(&e, t).expect("edit");
        };
        edit(&mut doc, format!("{big}from a"));
        edit(&mut other, format!("from b {big}"));
        let merged = |x: &mut MemoryDoc, y: &mut MemoryDoc| {
            x.automerge().merge(y.automerge()).expect("merge");
            y.automerge().merge(x.automerge()).expect("merge");
        };
        merged(&mut doc, &mut other);
        let (x, y) = (doc.content_ref(), other.content_ref());
        assert_eq!(x, y);
        assert!(
            x == Some(TextRef::of(&format!("{big}from a")))
                || x == Some(TextRef::of(&format!("from b {big}")))
        );
        // Shrunk below the limit it is a text again, and concurrent edits of different
        // parts merge.
        edit(&mut doc, "one two three".into());
        merged(&mut doc, &mut other);
        edit(&mut doc, "ONE two three".into());
        edit(&mut other, "one two THREE".into());
        merged(&mut doc, &mut other);
        assert_eq!(doc.read(id, c).content, "ONE two THREE");
        assert_eq!(other.read(id, c).content, "ONE two THREE");
    }

    #[test]
    fn edits_change_only_what_they_name() {
        let me = Keypair::generate().did();
        let valid = new("first line\nsecond").validate().expect("valid");
        let (mut doc, _) = MemoryDoc::create_valid(&me, &valid, Timestamp::from_millis(1));
        let id = MemoryId::new(Timestamp::from_millis(1));
        let c = CollectionId::new(Timestamp::from_millis(1));
        assert_eq!(doc.read(id, c).title, "first line");
        let edit = MemoryEdit {
            content: Some("first line\nsecond, edited".into()),
            add_tags: vec!["x".into()],
            ..MemoryEdit::default()
        };
        assert!(
            doc.edit(&edit, Timestamp::from_millis(5))
                .expect("edit")
                .is_some()
        );
        let memory = doc.read(id, c);
        assert_eq!(memory.content, "first line\nsecond, edited");
        assert_eq!(memory.title, "first line");
        assert_eq!(memory.updated_at, Timestamp::from_millis(5));
        assert!(memory.tags.contains("x"));
        // Setting what is already there makes no change.
        let same = MemoryEdit {
            content: Some("first line\nsecond, edited".into()),
            ..MemoryEdit::default()
        };
        assert_eq!(
            doc.edit(&same, Timestamp::from_millis(9)).expect("edit"),
            None
        );
        assert_eq!(doc.read(id, c).updated_at, Timestamp::from_millis(5));
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(
            new("  \n").validate().unwrap_err(),
            ValidationError::EmptyContent
        );
        let bad_kind = NewMemory {
            kind: Some("Note!".into()),
            ..new("x")
        };
        assert!(matches!(
            bad_kind.validate(),
            Err(ValidationError::InvalidKind(_))
        ));
        let bad_importance = NewMemory {
            importance: Some(f64::NAN),
            ..new("x")
        };
        assert!(matches!(
            bad_importance.validate(),
            Err(ValidationError::InvalidImportance(_))
        ));
        let bad_tag = NewMemory {
            tags: vec!["two words".into()],
            ..new("x")
        };
        assert!(matches!(
            bad_tag.validate(),
            Err(ValidationError::InvalidTag { .. })
        ));
        assert!(normalize_tag("#").is_err());
        assert_eq!(normalize_tag(" #rust ").as_deref(), Ok("rust"));
    }

    #[test]
    fn derived_titles() {
        assert_eq!(derive_title("\n\n# Heading\nbody"), "Heading");
        let long = "a".repeat(100);
        assert_eq!(derive_title(&long).chars().count(), 81);
    }
}
