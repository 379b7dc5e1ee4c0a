//! Mnemon's search engine: [`SearchIndex`] ties an embedder ([`embed::Embedder`]), a vector
//! index ([`vector::VectorIndex`], HNSW segments over SIMD kernels) and a keyword index
//! (tantivy BM25) together, with hybrid ranking by weighted score fusion.
//!
//! Both indexes are derived data kept in `DATA/index/`: they remember the store's change-log
//! position they reflect and follow the store's change log (`StoreReader::changes_since`);
//! when missing, unreadable or made for another model they are rebuilt from the store.
//! This crate knows no HTTP, no CLI and no network.

pub mod background;
pub mod bert;
pub mod context;
pub mod embed;
pub mod hnsw;
mod kernel;
mod keyword;
pub mod minilm;
pub mod openai;
pub mod query;
pub mod rerank;
pub mod vector;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mnemon_crdt::{
    ChangeEvent, ChangeKind, CollectionId, Memory, MemoryId, StoreError, StoreReader, Timestamp,
};
use serde::{Deserialize, Serialize};
use tantivy::tokenizer::TextAnalyzer;

use self::context::Timeline;
use self::embed::{EmbedError, Embedder};
use self::keyword::{KeywordDoc, KeywordIndex, Merging};
use self::vector::VectorIndex;

/// A map keyed by memory id, with a fast hasher (seeded at random per process): searches
/// look up every candidate in several of them.
pub type IdMap<V> = HashMap<u128, V, foldhash::fast::RandomState>;

/// Largest `k` a search accepts.
pub const MAX_K: usize = 1000;
/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Characters per chunk of a memory's text.
pub const CHUNK_CHARS: usize = 1000;
/// Most chunks of one memory embedded (its first ~256,000 characters).
pub const MAX_EMBEDDED_CHUNKS: usize = 256;
/// One memory in a ranking.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    id: u128,
    score: f32,
    /// The chunk whose vector matched, if one did.
    chunk: Option<u32>,
    /// Whether it holds the query's words or is close in meaning (above the floor).
    evidence: bool,
}

/// Candidates each ranking gives hybrid fusion, at least (`4 × k` if more).
const CANDIDATES: usize = 50;
/// Below this many vectors, or with a filter, vector search compares every vector.
const EXACT_BELOW: usize = 2048;
/// Change-log entries applied per batch while catching up.
const CATCH_UP_BATCH: usize = 2048;
/// Change-log entries embedded per batch while the vector index catches up, and applied
/// per batch by a step under a deadline (the index is held for a batch).
const EMBED_BATCH: usize = 128;
/// How often a long vector catch-up saves its progress.
const SAVE_EVERY: Duration = Duration::from_secs(10);
/// Version 2: a short memory has a second vector, of it with its context. Version 3: each
/// sealed segment in its own file. (The first start after an upgrade re-embeds every memory
/// in the background; words find them throughout.)
const STATE_FORMAT: u32 = 3;

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SearchError {
    /// The query is empty.
    #[error("the search query is empty")]
    EmptyQuery,
    /// The query is too long.
    #[error("the search query is {0} bytes; the limit is {MAX_QUERY_BYTES}")]
    QueryTooLong(usize),
    /// `k` is out of range.
    #[error("k must be from 1 to {MAX_K}, not {0}")]
    BadK(usize),
    /// The time range is empty.
    #[error("--since must be before --until")]
    BadTimeRange,
    /// The minimum importance is out of range.
    #[error("minimum importance must be a number from 0 to 1, not {0}")]
    BadImportance(f64),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The embedder failed.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// An index could not be read or written.
    #[error("search index: {0}")]
    Index(String),
}

/// How to rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Keyword and vector rankings fused.
    #[default]
    Hybrid,
    /// Vectors only.
    Semantic,
    /// BM25 only.
    Keyword,
}

/// Which memories a search may return.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these collections (none: every collection).
    pub collections: Option<Vec<u128>>,
    /// Only memories with this tag.
    pub tag: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Created at or after (ms since the epoch).
    pub since: Option<i64>,
    /// Created before (ms since the epoch).
    pub until: Option<i64>,
    /// Importance at least this.
    pub min_importance: Option<f64>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.collections.is_none()
            && self.tag.is_none()
            && self.kind.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.min_importance.is_none()
    }

    fn accepts(&self, meta: &DocMeta) -> bool {
        self.collections
            .as_ref()
            .is_none_or(|ids| ids.contains(&meta.collection))
            && self.tag.as_ref().is_none_or(|t| {
                let t = t.to_lowercase();
                meta.tags.iter().any(|m| m.to_lowercase() == t)
            })
            && self.kind.as_ref().is_none_or(|k| *k == meta.kind)
            && self.since.is_none_or(|s| meta.created >= s)
            && self.until.is_none_or(|u| meta.created < u)
            && self.min_importance.is_none_or(|m| meta.importance >= m)
    }
}

/// A search request.
#[derive(Debug, Clone)]
pub struct Query {
    /// The words.
    pub text: String,
    /// How many hits.
    pub k: usize,
    /// How to rank.
    pub mode: Mode,
    /// Which memories.
    pub filter: Filter,
    /// Second stages, applied in order over the best of the ranking (none: the ranking
    /// as it is).
    pub rerank: Vec<std::sync::Arc<dyn rerank::Reranker>>,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The memory.
    pub id: MemoryId,
    /// Its title.
    pub title: String,
    /// When it was created.
    pub created: Timestamp,
    /// The fused (or single-mode) score; higher is better.
    pub score: f32,
    /// A passage of the text around the matching words, which are wrapped in `**`.
    pub snippet: String,
    /// Which chunk of the text matched.
    pub chunk: u32,
}

/// How far the indexes are.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStatus {
    /// The embedding model.
    pub model: String,
    /// Whether it is a model of meaning (not the built-in lexical embedder).
    pub meaning: bool,
    /// Memories with vectors.
    pub indexed: usize,
    /// Memories in the keyword index.
    pub keyword_indexed: u64,
    /// Memories changed since the vector index caught up (not yet embedded).
    pub pending: u64,
    /// Memories changed since the keyword index caught up.
    pub keyword_pending: u64,
    /// Change-log entries the vector index has yet to apply.
    pub pending_changes: u64,
    /// Memories in the store.
    pub memories: u64,
    /// Vectors stored (live and stale) and sealed HNSW segments.
    pub vectors_stored: usize,
    /// Sealed segments.
    pub segments: usize,
}

/// What a memory's metadata needs for filtering vector hits.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DocMeta {
    collection: u128,
    tags: Vec<String>,
    kind: String,
    created: i64,
    importance: f64,
    /// Whether its vectors after the first are its context's (see [`context`]).
    with_context: bool,
}

/// What a vector save writes to `vectors-MODEL.bin`, borrowed from the index; the sealed
/// segments go to files of their own in `vectors-MODEL.d/`.
#[derive(Serialize)]
struct VectorStateRef<'a> {
    format: u32,
    seq: u64,
    meta: &'a IdMap<DocMeta>,
    vectors: vector::ManifestRef<'a>,
}

/// A saved [`VectorStateRef`], read back.
#[derive(Deserialize)]
struct VectorState {
    format: u32,
    seq: u64,
    meta: IdMap<DocMeta>,
    vectors: vector::Manifest,
}

/// The search indexes of one node.
///
/// The keyword index and the vector index each remember the change-log position they
/// reflect. The keyword index is always brought fully up to date; the vector index may
/// lag behind (a new model re-embeds every memory), and [`SearchIndex::status`] reports by
/// how much.
#[derive(Debug)]
pub struct SearchIndex {
    dir: PathBuf,
    embedder: Arc<dyn Embedder>,
    keyword: KeywordIndex,
    vectors: VectorIndex,
    meta: IdMap<DocMeta>,
    /// Every memory's place in time, for the context of short memories.
    timeline: Timeline,
    /// Memories whose context changed (a memory before them changed or went), to index
    /// again: by the keyword index and by the vector index.
    refresh: [HashSet<u128>; 2],
    /// Memories [`SearchIndex::forget_now`] removed, whose files were (or are to be, by
    /// the caller) rewritten without them, with the log's position then: their delete,
    /// when the change log brings it, needs no second rewrite. Let go once the index has
    /// passed that position. For the keyword index and for the vector index.
    purged: [HashMap<u128, u64>; 2],
    /// Those given to the keyword index again since its last commit (owed again if the
    /// commit fails).
    keyword_refreshed: HashSet<u128>,
    /// The change-log position the keyword index's last commit reflects.
    keyword_seq: u64,
    /// The position of the changes given to the keyword index, committed or not.
    keyword_staged: u64,
    /// Whether a memory was removed since the last keyword commit (the next one purges).
    keyword_purge: bool,
    /// Whether keyword commits and vector saves are left to the caller
    /// ([`SearchIndex::keyword_commit_job`], [`SearchIndex::vector_save_job`]).
    defer_commits: bool,
    vector_seq: u64,
    last_vector_save: Instant,
    /// Changes to the vectors (and their memories' metadata), and how many of them the
    /// last save held.
    vector_changes: u64,
    saved_changes: u64,
    /// Whether a memory was removed from the vectors since the last save (the next save
    /// is due at once: forgetting must reach the disk).
    vectors_forgot: AtomicBool,
    /// The number of the last vector save taken, and (shared with every save) of the last
    /// one written: a save never overwrites a newer one.
    saves_taken: AtomicU64,
    saves_written: Arc<std::sync::Mutex<u64>>,
    /// Whether a background thread seals the vector index (see [`SearchIndex::seal_job`]).
    background_seal: bool,
    /// Counts the changes to what a [`Batch`] is made ready from (the timeline, the
    /// positions, the refresh owed): a batch is put in only at the generation it was
    /// made at.
    generation: u64,
}

/// How the owner of a [`SearchIndex`] lets the indexer hold it: for reading while a batch of
/// changes is made ready (searches go on meanwhile), and for writing only to put it in.
pub trait Hold {
    /// What holding the index can fail with.
    type Error;
    /// The error for a failure of the index's own.
    fn fail(e: SearchError) -> Self::Error;
    /// Runs `f` with the index held for reading.
    fn read<T>(
        &self,
        f: impl FnOnce(&SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, Self::Error>;
    /// Runs `f` with the index held for writing.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, Self::Error>;
}

/// An index borrowed whole (its one user holds it throughout).
impl Hold for std::sync::Mutex<&mut SearchIndex> {
    type Error = SearchError;
    fn fail(e: SearchError) -> SearchError {
        e
    }
    fn read<T>(
        &self,
        f: impl FnOnce(&SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, SearchError> {
        f(&self
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
    fn write<T>(
        &self,
        f: impl FnOnce(&mut SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, SearchError> {
        f(&mut self
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// A batch of the change log made ready for the indexes without holding them for writing:
/// its memories read, their contexts taken as they will be once it is in, and (after
/// [`Batch::embed`]) their vectors made. [`SearchIndex::install`] puts it in only where the
/// index still is (same position, same generation).
#[derive(Debug)]
struct Batch {
    part: Part,
    start: u64,
    generation: u64,
    /// Its last change; none for a batch of memories owed a new context only.
    last: Option<u64>,
    changes: usize,
    /// In the order the index takes them.
    steps: Vec<Step>,
    seen: HashSet<MemoryId>,
    /// The batch's memories, then those owed a new context in the vector index.
    memories: Vec<Memory>,
    /// How many of `memories` are the batch's.
    own: usize,
    /// The memories owed a new context in the vector index this batch takes (read or
    /// gone).
    refreshed: Vec<u128>,
    /// Where in `memories` those owed a new context in the keyword index begin (after the
    /// vectors' ones), and which they are (read or gone).
    words_from: usize,
    words_refreshed: Vec<u128>,
    /// The keyword writer's generation (see `KeywordIndex::generation`) when the batch's
    /// words were given to it, if they were ([`SearchIndex::stage_words`]).
    staged: Option<u64>,
    contexts: Vec<context::Context>,
    /// The texts to embed, and how many of them are each memory's.
    texts: Vec<String>,
    counts: Vec<usize>,
    /// The vectors made, with their codes.
    vectors: Option<vector::Coded>,
    embedder: Arc<dyn Embedder>,
}

/// One memory's change in a [`Batch`].
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Deleted in the log.
    Deleted(MemoryId),
    /// Read: the batch's memory at this place.
    Read(usize),
    /// Changed in the log but gone from the store since (its delete is further on).
    Gone(MemoryId),
}

/// What putting a batch in did.
#[derive(Debug, Clone, Copy)]
struct Done {
    changes: usize,
    last: Option<u64>,
}

impl Batch {
    /// Makes its vectors (the slow part of indexing), without the index held.
    fn embed(mut self) -> Result<Batch, SearchError> {
        if self.part.vectors() && self.vectors.is_none() {
            let texts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
            self.vectors = Some(vector::Coded::new(if texts.is_empty() {
                Vec::new()
            } else {
                embed::embed_checked(&*self.embedder, &texts)?
            }));
        }
        Ok(self)
    }
}

/// One bounded step of the indexer: applies the store's changes to both indexes until
/// `deadline` (at least one batch each if any is pending), each batch made ready with the
/// index held for reading and embedded without it held, then put in with it held for
/// writing (briefly: searches wait only for that). Returns how many changes it applied.
/// The keyword index moves on even when the vectors cannot (the embedder is unreachable,
/// say): the vectors' error is returned after it did.
pub fn step<H: Hold>(held: &H, store: &StoreReader, deadline: Instant) -> Result<usize, H::Error> {
    let (words, vectors, both) = held.read(|index| {
        // The vectors wait while the recent segment waits for the sealer.
        let vectors = !index.vectors.is_full();
        // The words wait while a commit runs apart from the index (a delete's purge): they
        // would wait for it with the index held, and searches with them.
        let words = !index.keyword_committing();
        // Both in one pass shares the reads; but a model of meaning embeds apart, after
        // the words, so the words never wait for its slow batches.
        let both = words
            && vectors
            && index.keyword_staged == index.vector_seq
            && !index.searches_meaning();
        Ok((words, vectors, both))
    })?;
    let mut applied = 0;
    let mut vectors_failed = None;
    if both {
        match run(held, store, Part::Both, Some(deadline), &mut |_| {}) {
            Ok(n) => applied += n,
            Err(e) => vectors_failed = Some(e),
        }
    }
    if words {
        applied += run(held, store, Part::Keyword, Some(deadline), &mut |_| {})?;
    }
    if vectors && vectors_failed.is_none() {
        match run(held, store, Part::Vectors, Some(deadline), &mut |_| {}) {
            Ok(n) => applied += n,
            Err(e) => vectors_failed = Some(e),
        }
    }
    match vectors_failed {
        Some(e) => Err(e),
        None => Ok(applied),
    }
}

/// Moves the vector index on until `deadline` (at least one batch), held as [`step`] holds
/// it; nothing while the vectors wait for the sealer. Returns how many changes it applied.
pub fn step_vectors<H: Hold>(
    held: &H,
    store: &StoreReader,
    deadline: Instant,
) -> Result<usize, H::Error> {
    if held.read(|index| Ok(index.vectors.is_full()))? {
        return Ok(0);
    }
    run(held, store, Part::Vectors, Some(deadline), &mut |_| {})
}

/// Applies the store's changes to `part` in batches, until `deadline` if one is given (at
/// least one batch, however late, so a deadline never starves the index), reporting
/// progress after every batch. Returns how many changes it applied.
fn run<H: Hold>(
    held: &H,
    store: &StoreReader,
    part: Part,
    deadline: Option<Instant>,
    progress: &mut dyn FnMut(Progress),
) -> Result<usize, H::Error> {
    let start = held.read(|index| Ok(index.position(part)))?;
    let last_seq = store.last_seq().map_err(|e| H::fail(e.into()))?;
    // Re-embedding is slow: small batches keep progress and deadlines fine-grained. So do
    // words under a deadline.
    let size = if part == Part::Keyword && deadline.is_none() {
        CATCH_UP_BATCH
    } else {
        EMBED_BATCH
    };
    let mut applied = 0;
    loop {
        if applied > 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Some(ready) = held.read(|index| index.prepare(store, part, size))? else {
            break;
        };
        let mut ready = ready.embed().map_err(H::fail)?;
        held.read(|index| index.stage_words(&mut ready))?;
        let done = match held.write(|index| index.install(ready))? {
            Some(done) => done,
            // The index moved meanwhile (a delete forgotten at once): again, held throughout.
            None => {
                let again = held.write(|index| match index.prepare(store, part, size)? {
                    Some(ready) => index.install(ready),
                    None => Ok(None),
                })?;
                match again {
                    Some(done) => done,
                    None => break,
                }
            }
        };
        applied += done.changes;
        if let Some(last) = done.last {
            progress(Progress {
                start,
                done: last,
                last: last_seq.max(last),
            });
        }
    }
    if part.vectors() && applied > 0 {
        held.write(|index| {
            // What the last batches left unsaved.
            if !index.defer_commits && index.last_vector_save.elapsed() >= SAVE_EVERY {
                index.save_vectors()?;
            }
            Ok(())
        })?;
    }
    Ok(applied)
}

/// A keyword commit to run apart from the index (see [`SearchIndex::keyword_commit_job`]).
#[derive(Debug)]
pub struct KeywordCommit {
    committer: keyword::Committer,
    seq: u64,
    purge: bool,
    /// The writer it commits (see `KeywordIndex::generation`).
    generation: u64,
    /// Whether it merges the small segments (see [`SearchIndex::keyword_compact_job`]).
    compact: bool,
}

impl KeywordCommit {
    /// Commits (and, if a memory was removed, purges its text from the files).
    pub fn run(&self) -> Result<(), SearchError> {
        let merging = if self.purge {
            Merging::All
        } else if self.compact {
            Merging::Small
        } else {
            Merging::ByLevel
        };
        self.committer.commit(self.seq, merging, self.generation)
    }

    /// The change-log position the commit makes the keyword index reflect.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether it purges (a memory was removed since the last commit).
    pub fn purges(&self) -> bool {
        self.purge
    }
}

/// How far a catch-up of the vector index got: change-log positions.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Where this catch-up started.
    pub start: u64,
    /// Where the vector index is now.
    pub done: u64,
    /// The store's last position.
    pub last: u64,
}

/// A save of the vector index to run apart from the index (see
/// [`SearchIndex::vector_save_job`]): the new sealed segments, then the rest, then the
/// files of segments no longer listed go.
pub struct VectorSave {
    number: u64,
    written: Arc<std::sync::Mutex<u64>>,
    state_path: PathBuf,
    segment_dir: PathBuf,
    state: Vec<u8>,
    segments: Vec<(u64, Arc<vector::Segment>)>,
    keep: HashSet<u64>,
    changes: u64,
    forgot: bool,
}

impl std::fmt::Debug for VectorSave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorSave")
            .field("number", &self.number)
            .field("state_bytes", &self.state.len())
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

impl VectorSave {
    /// Writes it (unless a newer save was written first: then it does nothing).
    pub fn run(&self) -> Result<(), SearchError> {
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *written > self.number {
            return Ok(());
        }
        mnemon_identity::private::create_private_dir(&self.segment_dir).map_err(index_err)?;
        for (id, segment) in &self.segments {
            write_segment(&segment_path(&self.segment_dir, *id), segment)?;
        }
        write_atomically(&self.state_path, &self.state)?;
        *written = self.number;
        // The segments merged or replaced since (a failure here only leaves a file behind,
        // removed by the next save).
        if let Ok(entries) = std::fs::read_dir(&self.segment_dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let listed = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".seg"))
                    .and_then(|n| n.parse::<u64>().ok())
                    .is_some_and(|id| self.keep.contains(&id));
                if !listed {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

fn index_err(e: impl std::fmt::Display) -> SearchError {
    SearchError::Index(e.to_string())
}

/// Which index a batch of changes goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Keyword,
    Vectors,
    Both,
}

impl Part {
    fn keyword(self) -> bool {
        self != Part::Vectors
    }
    fn vectors(self) -> bool {
        self != Part::Keyword
    }
}

impl SearchIndex {
    /// Opens the indexes in `dir` for `embedder` and brings both fully up to date with
    /// `store`.
    pub fn open(
        dir: &Path,
        embedder: Arc<dyn Embedder>,
        store: &StoreReader,
    ) -> Result<SearchIndex, SearchError> {
        let mut index = SearchIndex::open_lagging(dir, embedder, store)?;
        index.catch_up(store)?;
        index.save()?;
        Ok(index)
    }

    /// Opens the indexes and brings the keyword index up to date, but leaves the vector
    /// index where it was saved: call [`SearchIndex::catch_up_vectors`] to move it on.
    /// For a new embedding model the vector index starts empty and catching up re-embeds
    /// every memory.
    pub fn open_lagging(
        dir: &Path,
        embedder: Arc<dyn Embedder>,
        store: &StoreReader,
    ) -> Result<SearchIndex, SearchError> {
        std::fs::create_dir_all(dir).map_err(index_err)?;
        let (keyword, fresh_keyword) = KeywordIndex::open(&dir.join("keyword"))?;
        let last = store.last_seq()?;
        let path = vector_path(dir, embedder.model_id());
        let loaded = load_vectors(&path)
            .filter(|s| s.format == STATE_FORMAT && s.seq <= last)
            .and_then(|s| {
                let segments = segment_dir(&path);
                let vectors = VectorIndex::from_saved(
                    s.vectors,
                    embedder.model_id(),
                    embedder.dimension(),
                    |id| std::fs::read(segment_path(&segments, id)).ok(),
                )?;
                Some((s.seq, s.meta, vectors))
            });
        let mut index = SearchIndex {
            dir: dir.to_owned(),
            keyword,
            vectors: VectorIndex::new(embedder.model_id(), embedder.dimension()),
            embedder,
            meta: IdMap::default(),
            timeline: Timeline::load(store)?,
            refresh: [HashSet::new(), HashSet::new()],
            purged: [HashMap::new(), HashMap::new()],
            keyword_refreshed: HashSet::new(),
            keyword_seq: 0,
            keyword_staged: 0,
            keyword_purge: false,
            defer_commits: false,
            vector_seq: 0,
            last_vector_save: Instant::now(),
            vector_changes: 0,
            saved_changes: 0,
            vectors_forgot: AtomicBool::new(false),
            saves_taken: AtomicU64::new(0),
            saves_written: Arc::new(std::sync::Mutex::new(0)),
            background_seal: false,
            generation: 0,
        };
        let keyword_seq = index.keyword.committed_seq();
        let keyword_ok = !fresh_keyword && keyword_seq <= last;
        match loaded {
            Some((seq, meta, vectors)) => {
                index.vector_seq = seq;
                index.meta = meta;
                index.vectors = vectors;
            }
            // Nothing saved for this model: one pass fills both, if both are empty.
            None if !keyword_ok => {
                index.rebuild(store)?;
                return Ok(index);
            }
            None => {}
        }
        if keyword_ok {
            index.keyword_seq = keyword_seq;
            index.keyword_staged = keyword_seq;
        } else {
            index.keyword.clear()?;
        }
        index.apply(store, Part::Keyword, None, &mut |_| {})?;
        Ok(index)
    }

    /// Drops both indexes and indexes every memory in the store again.
    pub fn rebuild(&mut self, store: &StoreReader) -> Result<usize, SearchError> {
        let seq = store.last_seq()?;
        self.generation += 1;
        self.keyword.clear()?;
        self.vectors = VectorIndex::new(self.embedder.model_id(), self.embedder.dimension());
        self.meta.clear();
        let memories = store.list(&mnemon_crdt::ListFilter::default())?;
        self.timeline = Timeline::default();
        for memory in &memories {
            self.timeline_set(memory);
        }
        self.refresh = [HashSet::new(), HashSet::new()];
        self.vectors.set_auto_seal(false);
        for batch in memories.chunks(256) {
            self.index_memories(store, batch, Part::Both)?;
        }
        self.vectors.set_auto_seal(true);
        self.vectors.seal();
        self.keyword_seq = seq;
        self.keyword_staged = seq;
        self.keyword_purge = false;
        self.vector_seq = seq;
        self.keyword.commit(seq, Merging::All)?;
        self.vector_changes += 1;
        self.save_vectors()?;
        // Changes made while rebuilding are applied now (re-applying is harmless).
        self.catch_up(store)?;
        Ok(memories.len())
    }

    /// Applies the store's changes since the indexes' positions to both. Returns how many.
    pub fn catch_up(&mut self, store: &StoreReader) -> Result<usize, SearchError> {
        self.catch_up_within(store, None)
    }

    /// Brings the keyword index fully up to date, and the vector index until
    /// `vector_deadline` (if given). Returns how many changes were applied.
    pub fn catch_up_within(
        &mut self,
        store: &StoreReader,
        vector_deadline: Option<Instant>,
    ) -> Result<usize, SearchError> {
        let mut applied = 0;
        if self.keyword_staged == self.vector_seq {
            applied += self.apply(store, Part::Both, vector_deadline, &mut |_| {})?;
        }
        applied += self.apply(store, Part::Keyword, None, &mut |_| {})?;
        applied += self.apply(store, Part::Vectors, vector_deadline, &mut |_| {})?;
        Ok(applied)
    }

    /// One bounded step of the indexer, with the index held throughout (see [`step`]).
    pub fn step(&mut self, store: &StoreReader, deadline: Instant) -> Result<usize, SearchError> {
        step(&std::sync::Mutex::new(self), store, deadline)
    }

    /// Whether a keyword commit runs apart from the index now: [`SearchIndex::step`]
    /// leaves the words until it ends.
    pub fn keyword_committing(&self) -> bool {
        self.keyword.committing()
    }

    /// Whether the vectors wait for the sealer (see [`vector::RECENT_CAP`]).
    pub fn vectors_full(&self) -> bool {
        self.vectors.is_full()
    }

    /// The change-log positions the keyword and the vector index reflect.
    pub fn positions(&self) -> (u64, u64) {
        (self.keyword_seq, self.vector_seq)
    }

    /// The change-log position given to the keyword index, committed or not (with
    /// deferred commits, ahead of [`SearchIndex::positions`] until the next commit).
    pub fn keyword_staged(&self) -> u64 {
        self.keyword_staged.max(self.keyword_seq)
    }

    /// Whether the next keyword commit removes memories (a delete, or a purge owed by a
    /// failed commit): such a commit should not wait.
    pub fn keyword_purge_owed(&self) -> bool {
        self.keyword_purge
    }

    /// Moves the vector index towards the store's last change, until `deadline` if one is
    /// given, reporting progress after every batch. Returns how many changes it applied.
    pub fn catch_up_vectors(
        &mut self,
        store: &StoreReader,
        deadline: Option<Instant>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<usize, SearchError> {
        if self.vectors.is_full() {
            return Ok(0);
        }
        self.apply(store, Part::Vectors, deadline, progress)
    }

    fn apply(
        &mut self,
        store: &StoreReader,
        part: Part,
        deadline: Option<Instant>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<usize, SearchError> {
        run(
            &std::sync::Mutex::new(self),
            store,
            part,
            deadline,
            progress,
        )
    }

    /// The change-log position `part` has been given.
    fn position(&self, part: Part) -> u64 {
        match part {
            Part::Keyword => self.keyword_staged,
            Part::Vectors | Part::Both => self.vector_seq,
        }
    }

    /// Makes the next batch of at most `size` changes for `part` ready, without changing
    /// the index: reads its memories and takes their contexts as they will be once it is
    /// in. `None` when there is nothing to do.
    fn prepare(
        &self,
        store: &StoreReader,
        part: Part,
        size: usize,
    ) -> Result<Option<Batch>, SearchError> {
        let start = self.position(part);
        let events = store.changes_since(start, size)?;
        let mut batch = Batch {
            part,
            start,
            generation: self.generation,
            last: events.last().map(|e| e.seq),
            changes: events.len(),
            steps: Vec::new(),
            seen: events.iter().map(|e| e.memory).collect(),
            memories: Vec::new(),
            own: 0,
            refreshed: Vec::new(),
            words_from: 0,
            words_refreshed: Vec::new(),
            staged: None,
            contexts: Vec::new(),
            texts: Vec::new(),
            counts: Vec::new(),
            vectors: None,
            embedder: self.embedder.clone(),
        };
        // Caught up with the log: what is still owed a new context follows.
        if events.is_empty()
            && (!part.vectors() || self.refresh[1].is_empty())
            && (!part.keyword() || self.refresh[0].is_empty())
        {
            return Ok(None);
        }
        let mut upserts = Vec::new();
        for (memory, kind) in latest_per_memory(&events) {
            match kind {
                ChangeKind::Deleted => batch.steps.push(Step::Deleted(memory)),
                ChangeKind::Created | ChangeKind::Updated => upserts.push(memory),
            }
        }
        for id in upserts {
            match store.get(id) {
                Ok(memory) => {
                    batch.steps.push(Step::Read(batch.memories.len()));
                    batch.memories.push(memory);
                }
                Err(StoreError::NotFound(_) | StoreError::Deleted(_)) => {
                    batch.steps.push(Step::Gone(id));
                }
                Err(e) => return Err(e.into()),
            }
        }
        batch.own = batch.memories.len();
        // The memories owed a new context in the vector index (a memory before them changed
        // or went) come along: embedding them is as slow as the batch. (What this batch
        // makes owed follows with the next one, for the words as for the vectors.)
        if part.vectors() {
            batch.refreshed = owed(store, &self.refresh[1], &mut batch, EMBED_BATCH)?;
        }
        // And those owed a new context in the keyword index (their words are put in
        // before the index is held for writing: see [`SearchIndex::stage_words`]).
        batch.words_from = batch.memories.len();
        if part.keyword() {
            batch.words_refreshed = owed(store, &self.refresh[0], &mut batch, size)?;
        }
        let placed = batch.memories[..batch.own].iter().map(|m| {
            (
                m.id.to_u128(),
                m.collection.to_u128(),
                m.created_at.as_millis(),
            )
        });
        let removed = batch.steps.iter().filter_map(|step| match step {
            Step::Deleted(id) | Step::Gone(id) => Some(id.to_u128()),
            Step::Read(_) => None,
        });
        let timeline = context::Patched::new(&self.timeline, placed, removed);
        batch.contexts = contexts(store, &batch.memories, |id| timeline.before(id))?;
        if part.vectors() {
            (batch.texts, batch.counts) = texts_of(
                &batch.memories[..batch.words_from],
                &batch.contexts[..batch.words_from],
            );
        }
        Ok(Some(batch))
    }

    /// Gives a batch's words (its memories', and those owed a new context) to the
    /// keyword writer, with the index held only for reading: what the writer holds is not
    /// searched until it commits, and the writer is behind its own lock. Only where the
    /// index still is (as [`SearchIndex::install`] checks); install stages what this did not.
    fn stage_words(&self, batch: &mut Batch) -> Result<(), SearchError> {
        if !batch.part.keyword()
            || batch.staged.is_some()
            || batch.generation != self.generation
            || batch.start != self.position(batch.part)
        {
            return Ok(());
        }
        let own = batch.own;
        let words_from = batch.words_from;
        for (memory, context) in batch.memories[..own]
            .iter()
            .zip(&batch.contexts[..own])
            .chain(
                batch.memories[words_from..]
                    .iter()
                    .zip(&batch.contexts[words_from..]),
            )
        {
            self.keyword.upsert(&keyword_doc(memory, context))?;
        }
        batch.staged = Some(self.keyword.generation());
        Ok(())
    }

    /// Puts a batch made ready by [`SearchIndex::prepare`] in, embedding it first if that
    /// was not done. `None`, and nothing changed, when the index has moved since it was
    /// made ready (another batch, a delete forgotten at once): make it ready again.
    fn install(&mut self, batch: Batch) -> Result<Option<Done>, SearchError> {
        let mut batch = batch.embed()?;
        let part = batch.part;
        if batch.generation != self.generation || batch.start != self.position(part) {
            return Ok(None);
        }
        // Words given to a writer rolled back since are given again.
        if batch.staged != Some(self.keyword.generation()) {
            batch.staged = None;
            self.stage_words(&mut batch)?;
        }
        self.generation += 1;
        let own = batch.own;
        let words_from = batch.words_from;
        let split = batch.counts.iter().take(own).sum::<usize>();
        let mut vectors = batch
            .vectors
            .take()
            .unwrap_or_else(|| vector::Coded::new(Vec::new()));
        let refreshed_vectors = vectors.split_off(split);
        let refresh = |index: &mut SearchIndex| {
            for id in &batch.refreshed {
                index.refresh[1].remove(id);
            }
            for id in &batch.words_refreshed {
                index.refresh[0].remove(id);
            }
            index
                .keyword_refreshed
                .extend(batch.words_refreshed.iter().copied());
            index.put(
                &batch.memories[own..words_from],
                &batch.contexts[own..words_from],
                batch.counts.get(own..).unwrap_or_default(),
                refreshed_vectors,
                Part::Vectors,
            )
        };
        let Some(last) = batch.last else {
            refresh(self)?;
            if part.vectors() {
                self.vector_changes += 1;
            }
            if part.keyword() && !self.defer_commits {
                self.commit_keyword()?;
            }
            return Ok(Some(Done {
                changes: 1,
                last: None,
            }));
        };
        let mut deleted = false;
        for step in &batch.steps {
            match *step {
                Step::Deleted(id) => {
                    self.forget(id, part);
                    deleted |= !self.purged_already(id, part, true);
                }
                Step::Read(at) => self.timeline_set(&batch.memories[at]),
                Step::Gone(id) => {
                    self.forget(id, part);
                    // (Its delete is further on in the log: that is where it is let go.)
                    deleted |= !self.purged_already(id, part, false);
                }
            }
        }
        // The batch's memories are put in with their contexts as they will be (what its
        // changes make owed follows with the next batch; its words were staged).
        for (set, touched) in self
            .refresh
            .iter_mut()
            .zip([part.keyword(), part.vectors()])
        {
            if touched {
                for id in &batch.seen {
                    set.remove(&id.to_u128());
                }
            }
        }
        refresh(self)?;
        if part.vectors() {
            self.put(
                &batch.memories[..own],
                &batch.contexts[..own],
                batch.counts.get(..own).unwrap_or_default(),
                vectors,
                Part::Vectors,
            )?;
        }
        if part.keyword() {
            self.keyword_staged = last;
            self.keyword_purge |= deleted;
            self.purged[0].retain(|_, at| *at > last);
            if !self.defer_commits {
                self.commit_keyword()?;
            }
        }
        if part.vectors() {
            self.vector_seq = last;
            self.vector_changes += 1;
            *self.vectors_forgot.get_mut() |= deleted;
            self.purged[1].retain(|_, at| *at > last);
            // Saving after every small batch would cost more than the batch: save deletes
            // at once (forgetting must reach the disk), the rest every few seconds. (With
            // deferred commits the caller saves.)
            if !self.defer_commits && (deleted || self.last_vector_save.elapsed() >= SAVE_EVERY) {
                self.save_vectors()?;
            }
        }
        Ok(Some(Done {
            changes: batch.changes,
            last: Some(last),
        }))
    }

    /// Removes `ids` from both indexes and rewrites their files without any deleted
    /// memory's data, whatever position the indexes are at.
    /// The memories whose context held `ids` are indexed again first.
    ///
    /// With deferred commits the files are left to the caller, to write without holding
    /// the index (rewriting the keyword files merges every segment: most of a second at
    /// 25,000 memories): [`SearchIndex::keyword_commit_job`] then holds the purge, and
    /// [`SearchIndex::vector_save_job`] the vectors.
    pub fn forget_now(&mut self, store: &StoreReader, ids: &[MemoryId]) -> Result<(), SearchError> {
        // The rewrites are owed before anything here can fail (the followers are embedded).
        self.generation += 1;
        self.vector_changes += 1;
        *self.vectors_forgot.get_mut() = true;
        self.keyword_purge = true;
        let at = store.last_seq()?;
        for id in ids {
            self.forget(*id, Part::Both);
            for purged in &mut self.purged {
                purged.insert(id.to_u128(), at);
            }
        }
        let gone: HashSet<MemoryId> = ids.iter().copied().collect();
        let followers = self.take_refresh(store, Part::Both, &gone)?;
        self.index_memories(store, &followers, Part::Both)?;
        if self.defer_commits {
            return Ok(());
        }
        // Both files are rewritten even if one fails.
        let vectors = self.save_vectors();
        self.commit_keyword()?;
        vectors
    }

    /// Records a memory's place (after a write to it): the memories whose context held it,
    /// at its old place and its new one, are to be indexed again.
    fn timeline_set(&mut self, memory: &Memory) {
        let id = memory.id.to_u128();
        self.context_changed(id);
        self.timeline.set(
            id,
            memory.collection.to_u128(),
            memory.created_at.as_millis(),
        );
        self.context_changed(id);
    }

    fn context_changed(&mut self, id: u128) {
        for later in self.timeline.after(id) {
            for set in &mut self.refresh {
                set.insert(later);
            }
        }
    }

    /// The memories `part` is to index again because their context changed, less those in
    /// `skip` (indexed or forgotten in this batch already).
    fn take_refresh(
        &mut self,
        store: &StoreReader,
        part: Part,
        skip: &HashSet<MemoryId>,
    ) -> Result<Vec<Memory>, SearchError> {
        let mut ids = HashSet::new();
        if part.keyword() {
            let owed: Vec<u128> = self.refresh[0].drain().collect();
            self.keyword_refreshed.extend(owed.iter().copied());
            ids.extend(owed);
        }
        if part.vectors() {
            // Embedding is slow: a few at a time, so a batch keeps to its deadline (the
            // rest wait for the next batches).
            let owed: Vec<u128> = self.refresh[1].iter().take(EMBED_BATCH).copied().collect();
            for id in &owed {
                self.refresh[1].remove(id);
            }
            ids.extend(owed);
        }
        let mut memories = Vec::new();
        for id in ids.into_iter().map(MemoryId::from_u128) {
            if skip.contains(&id) {
                continue;
            }
            match store.get(id) {
                Ok(memory) => memories.push(memory),
                // Gone: its delete is in the log, and forgets it.
                Err(StoreError::NotFound(_) | StoreError::Deleted(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(memories)
    }

    /// Whether [`SearchIndex::forget_now`] has had `part`'s files rewritten without `id`
    /// already; with `done`, the change log has reached its delete, and it is let go.
    fn purged_already(&mut self, id: MemoryId, part: Part, done: bool) -> bool {
        let id = id.to_u128();
        let mut purged = true;
        for (set, touched) in self.purged.iter_mut().zip([part.keyword(), part.vectors()]) {
            if touched {
                purged &= if done {
                    set.remove(&id).is_some()
                } else {
                    set.contains_key(&id)
                };
            }
        }
        purged
    }

    fn forget(&mut self, id: MemoryId, part: Part) {
        self.context_changed(id.to_u128());
        // The timeline may not know it (loaded after it went): the keyword index remembers
        // whose context held it.
        if let Ok(holders) = self.keyword.context_holders(id.to_u128()) {
            for holder in holders {
                for set in &mut self.refresh {
                    set.insert(holder);
                }
            }
        }
        self.timeline.remove(id.to_u128());
        if part.keyword() {
            self.keyword.remove(id.to_u128());
        }
        if part.vectors() {
            self.vectors.remove(id.to_u128());
            self.meta.remove(&id.to_u128());
        }
    }

    /// Leaves sealing the vector index's recent segment to a background thread, which
    /// calls [`SearchIndex::seal_job`], builds the job without holding the index, and
    /// hands it to [`SearchIndex::install_seal`]. Writers then never wait for a graph (the
    /// recent segment, searched exactly, grows meanwhile).
    pub fn seal_in_background(&mut self, on: bool) {
        self.background_seal = on;
        self.vectors.set_deferred_seal(on);
    }

    /// The vector index's due seal, if any (see [`SearchIndex::seal_in_background`]).
    pub fn seal_job(&self) -> Option<vector::SealJob> {
        self.vectors.seal_job()
    }

    /// The seal due once writes have stopped: the recent segment sealed at a small size
    /// too, so searches at rest walk graphs only; else a compaction of the sealed
    /// segments into one (or two), if one is due ([`vector::VectorIndex::compact_job`]).
    pub fn seal_job_when_quiet(&self) -> Option<vector::SealJob> {
        self.vectors
            .seal_job_at(vector::QUIET_SEAL_AT)
            .or_else(|| self.vectors.compact_job())
    }

    /// The seal due while writes stream in: only once the recent segment is at
    /// [`vector::WRITING_SEAL_AT`], twice its usual size, so graph builds stay few.
    pub fn seal_job_while_writing(&self) -> Option<vector::SealJob> {
        self.vectors.seal_job_at(vector::WRITING_SEAL_AT)
    }

    /// Installs a seal built off the lock and hands back the graphs it replaced (drop them
    /// once the index is no longer held); `None` if the index changed under it (the next
    /// job starts again from the current state).
    pub fn install_seal(&mut self, built: vector::BuiltSeal) -> Option<vector::Retired> {
        let retired = self.vectors.install(built);
        if retired.is_some() {
            self.vector_changes += 1;
        }
        retired
    }

    /// Indexes `memories` in `part` with the index held: their contexts, their vectors.
    fn index_memories(
        &mut self,
        store: &StoreReader,
        memories: &[Memory],
        part: Part,
    ) -> Result<(), SearchError> {
        let contexts = contexts(store, memories, |id| self.timeline.before(id))?;
        let (texts, counts) = if part.vectors() {
            texts_of(memories, &contexts)
        } else {
            (Vec::new(), Vec::new())
        };
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = if texts.is_empty() {
            Vec::new()
        } else {
            embed::embed_checked(&*self.embedder, &texts)?
        };
        self.put(
            memories,
            &contexts,
            &counts,
            vector::Coded::new(vectors),
            part,
        )
    }

    /// Puts `memories` in `part`, with their `contexts` and (for the vectors) `vectors`,
    /// `counts[i]` of them the `i`th memory's.
    fn put(
        &mut self,
        memories: &[Memory],
        contexts: &[context::Context],
        counts: &[usize],
        mut vectors: vector::Coded,
        part: Part,
    ) -> Result<(), SearchError> {
        // (A rebuild or a model change makes a new vector index: keep its sealing mode.)
        self.vectors.set_deferred_seal(self.background_seal);
        if part.keyword() {
            for (memory, context) in memories.iter().zip(contexts) {
                self.keyword.upsert(&keyword_doc(memory, context))?;
            }
        }
        if !part.vectors() {
            return Ok(());
        }
        if vectors.len() != counts.iter().sum::<usize>() {
            return Err(SearchError::Embed(embed::EmbedError::Failed(
                "the embedder returned fewer vectors than texts".into(),
            )));
        }
        for ((memory, context), count) in memories.iter().zip(contexts).zip(counts) {
            self.meta.insert(
                memory.id.to_u128(),
                DocMeta {
                    collection: memory.collection.to_u128(),
                    tags: memory.tags.iter().cloned().collect(),
                    kind: memory.kind.clone(),
                    created: memory.created_at.as_millis(),
                    importance: memory.importance,
                    with_context: !context.text.is_empty(),
                },
            );
            self.vectors
                .upsert_coded(memory.id.to_u128(), *count, &mut vectors);
        }
        Ok(())
    }

    /// Saves the vector index here and now.
    fn save_vectors(&mut self) -> Result<(), SearchError> {
        let job = self.vector_save_job(true)?;
        let result = job.as_ref().map_or(Ok(()), VectorSave::run);
        if let Some(job) = &job {
            self.vector_saved(job, &result);
        }
        result
    }

    /// The vector index's save, if it changed since the last one: when `now`, or every
    /// few seconds. Needs the index held for reading only (searches go on while the state
    /// is encoded; the sealed segments are shared, not copied); [`VectorSave::run`] writes
    /// it without the index held, then [`SearchIndex::vector_saved`].
    pub fn vector_save_job(&self, now: bool) -> Result<Option<VectorSave>, SearchError> {
        let segments = self.vectors.unsaved();
        if self.vector_changes == self.saved_changes && segments.is_empty() {
            return Ok(None);
        }
        if !now
            && !self.vectors_forgot.load(Ordering::SeqCst)
            && self.last_vector_save.elapsed() < SAVE_EVERY
        {
            return Ok(None);
        }
        let manifest = self.vectors.manifest();
        let keep = manifest.segments().iter().copied().collect();
        let state = postcard::to_allocvec(&VectorStateRef {
            format: STATE_FORMAT,
            seq: self.vector_seq,
            meta: &self.meta,
            vectors: manifest,
        })
        .map_err(index_err)?;
        // Taken while the index cannot change (it is held, for reading at least): a save
        // numbered later holds what one numbered earlier does, or more.
        let number = self.saves_taken.fetch_add(1, Ordering::SeqCst) + 1;
        let forgot = self.vectors_forgot.swap(false, Ordering::SeqCst);
        let state_path = vector_path(&self.dir, self.embedder.model_id());
        Ok(Some(VectorSave {
            number,
            written: self.saves_written.clone(),
            segment_dir: segment_dir(&state_path),
            state_path,
            state,
            segments,
            keep,
            changes: self.vector_changes,
            forgot,
        }))
    }

    /// Records how a [`VectorSave`] went.
    pub fn vector_saved(&mut self, job: &VectorSave, result: &Result<(), SearchError>) {
        self.last_vector_save = Instant::now();
        if result.is_ok() {
            for (id, segment) in &job.segments {
                self.vectors.mark_saved(*id, segment);
            }
            self.saved_changes = self.saved_changes.max(job.changes);
        } else {
            *self.vectors_forgot.get_mut() |= job.forgot;
        }
    }

    /// Writes the vector index to disk if it changed since it was last written. Vectors
    /// are saved every few seconds while they change and whenever a memory is deleted;
    /// call this before the index is dropped, or the next open re-embeds what changed.
    pub fn save(&mut self) -> Result<(), SearchError> {
        if self.keyword_staged > self.keyword_seq || self.keyword_purge {
            self.commit_keyword()?;
        }
        self.save_vectors()
    }

    /// Commits what was given to the keyword index.
    fn commit_keyword(&mut self) -> Result<(), SearchError> {
        let merging = if self.keyword_purge {
            Merging::All
        } else {
            Merging::IfMany
        };
        let purge = self.keyword_purge;
        match self.keyword.commit(self.keyword_staged, merging) {
            Ok(()) => {
                self.keyword_seq = self.keyword_staged;
                self.keyword_refreshed.clear();
                self.keyword_purge = false;
                Ok(())
            }
            Err(e) => {
                self.keyword_commit_failed(purge);
                Err(e)
            }
        }
    }

    /// After a failed keyword commit: what was staged is dropped and given again from the
    /// change log (a failed tantivy commit may have lost it), and a purge stays owed.
    fn keyword_commit_failed(&mut self, purge: bool) {
        self.keyword.rollback();
        // What `forget_now` staged may be gone: the log's deletes purge again.
        self.purged[0].clear();
        self.keyword_staged = self.keyword_seq;
        self.keyword_purge |= purge;
        // The change log gives the writes again, not the memories whose context they
        // changed: those are owed again too.
        let owed = std::mem::take(&mut self.keyword_refreshed);
        self.refresh[0].extend(owed);
    }

    /// Leaves keyword commits to the caller: changes are given to the keyword index, and
    /// [`SearchIndex::keyword_commit_job`] hands out the commit, to run without holding
    /// the index (a tantivy commit takes tens of milliseconds; searches go on meanwhile).
    pub fn defer_commits(&mut self, on: bool) {
        self.defer_commits = on;
    }

    /// The keyword commit that is due, if any: run it with [`KeywordCommit::run`], then
    /// report it with [`SearchIndex::keyword_committed`].
    pub fn keyword_commit_job(&mut self) -> Option<KeywordCommit> {
        if self.keyword_staged == self.keyword_seq
            && !self.keyword_purge
            && self.keyword_refreshed.is_empty()
        {
            return None;
        }
        Some(KeywordCommit {
            committer: self.keyword.committer(),
            seq: self.keyword_staged,
            purge: std::mem::take(&mut self.keyword_purge),
            generation: self.keyword.generation(),
            compact: false,
        })
    }

    /// Whether memories owed a new context (one before them changed or went) wait for the
    /// keyword index, to be given to it or committed: the indexer steps on while they do,
    /// even with the change log caught up.
    pub fn keyword_owed(&self) -> bool {
        !self.refresh[0].is_empty() || !self.keyword_refreshed.is_empty()
    }

    /// Whether [`SearchIndex::keyword_compact_job`] has work: three or more segments.
    pub fn keyword_compaction_due(&self) -> bool {
        self.keyword.committer().segments() >= 3
    }

    /// For a store that has stopped changing: a commit that merges the keyword index's
    /// small segments into one, if it has three or more (so a search reads at most two).
    /// Run and report it as [`SearchIndex::keyword_commit_job`]'s.
    pub fn keyword_compact_job(&mut self) -> Option<KeywordCommit> {
        if !self.keyword_compaction_due() {
            return None;
        }
        Some(KeywordCommit {
            committer: self.keyword.committer(),
            seq: self.keyword_staged.max(self.keyword_seq),
            purge: std::mem::take(&mut self.keyword_purge),
            generation: self.keyword.generation(),
            compact: true,
        })
    }

    /// Records how a [`KeywordCommit`] went: on success the keyword index reflects its
    /// position; on failure what it held is given again from the change log, and its purge
    /// is owed to the next commit.
    pub fn keyword_committed(&mut self, job: &KeywordCommit, result: &Result<(), SearchError>) {
        // The writer was rolled back since the job was made (another commit failed): what
        // it held was dropped, and is given again from the change log already; its purge
        // is owed.
        if job.generation != self.keyword.generation() {
            self.keyword_purge |= job.purge;
            return;
        }
        match result {
            Ok(()) => {
                self.keyword_seq = self.keyword_seq.max(job.seq);
                self.keyword_refreshed.clear();
            }
            Err(_) => self.keyword_commit_failed(job.purge),
        }
    }

    /// Searches. The caller has validated nothing; this checks the query.
    pub fn search(&self, store: &StoreReader, query: &Query) -> Result<Vec<Hit>, SearchError> {
        self.first_stage(query)?.finish(store)
    }

    /// The ranking from the indexes: what needs the index. [`Candidates::finish`] (the
    /// second stages and the hits) needs only the store, so a caller that holds the index
    /// behind a lock lets go of it before a re-ranker takes its time.
    pub fn first_stage(&self, query: &Query) -> Result<Candidates, SearchError> {
        let text = query.text.trim();
        if text.is_empty() {
            return Err(SearchError::EmptyQuery);
        }
        if text.len() > MAX_QUERY_BYTES {
            return Err(SearchError::QueryTooLong(text.len()));
        }
        if query.k == 0 || query.k > MAX_K {
            return Err(SearchError::BadK(query.k));
        }
        if let (Some(since), Some(until)) = (query.filter.since, query.filter.until)
            && since >= until
        {
            return Err(SearchError::BadTimeRange);
        }
        if let Some(min) = query.filter.min_importance
            && !(0.0..=1.0).contains(&min)
        {
            return Err(SearchError::BadImportance(min));
        }
        let explicit_time = query.filter.since.is_some() || query.filter.until.is_some();
        // An explicit since/until wins over a time named in the words.
        let mut analysed = query::analyse(text, (!explicit_time).then(Timestamp::now));
        let depth = (query.k * 4).max(CANDIDATES);
        let mut vector = self.query_vector(&analysed, query.mode)?;
        // The leading memories that stay ahead of the rest whatever a re-ranker says
        // (those of the time the query names).
        let mut ahead = 0;
        let ranked = match analysed.when {
            None => self.rank(
                &analysed,
                vector.as_deref(),
                query.mode,
                &query.filter,
                depth,
            )?,
            // Memories of the time named come first (those that match the words or are
            // close in meaning), then the rest. (Only without an explicit since/until: the
            // filter has none.)
            Some((since, until)) => 'dated: {
                let within = Filter {
                    since: (since != i64::MIN).then_some(since),
                    until: (until != i64::MAX).then_some(until),
                    ..query.filter.clone()
                };
                let mut first =
                    self.rank(&analysed, vector.as_deref(), query.mode, &within, depth)?;
                first.retain(|r| r.evidence);
                if first.is_empty() {
                    // Nothing of that time: the words that named it are words again.
                    analysed = query::analyse(text, None);
                    vector = self.query_vector(&analysed, query.mode)?;
                }
                let rest = self.rank(
                    &analysed,
                    vector.as_deref(),
                    query.mode,
                    &query.filter,
                    depth,
                )?;
                if first.is_empty() {
                    break 'dated rest;
                }
                let lift = rest.first().map_or(0.0, |r| r.score);
                for r in &mut first {
                    r.score += lift;
                }
                let seen: HashSet<u128> = first.iter().map(|r| r.id).collect();
                ahead = first.len();
                first.extend(rest.into_iter().filter(|r| !seen.contains(&r.id)));
                first
            }
        };
        Ok(Candidates {
            text: text.to_owned(),
            k: query.k,
            rerank: query.rerank.clone(),
            ranked,
            ahead,
            stems: analysed.stems,
        })
    }
}

/// The first stage's ranking of a search, before its second stages and hits.
#[derive(Debug)]
pub struct Candidates {
    text: String,
    k: usize,
    rerank: Vec<std::sync::Arc<dyn rerank::Reranker>>,
    ranked: Vec<Ranked>,
    /// The leading memories that stay ahead whatever a re-ranker says.
    ahead: usize,
    stems: Vec<String>,
}

impl Candidates {
    /// Applies the second stages and reads the best `k` from the store.
    pub fn finish(self, store: &StoreReader) -> Result<Vec<Hit>, SearchError> {
        Ok(self.read(store)?.hits())
    }

    /// Applies the second stages and reads the best `k` from the store (one snapshot), with
    /// everything but their snippets: [`Read::hits`] makes those.
    pub fn read(self, store: &StoreReader) -> Result<Read, SearchError> {
        let Candidates {
            text,
            k,
            rerank,
            mut ranked,
            ahead,
            stems,
        } = self;
        let mut analyser = query::analyser();
        for reranker in &rerank {
            let depth = reranker.depth().min(ranked.len());
            let passages = passages(store, &ranked[..depth], &mut analyser, &stems)?;
            let texts: Vec<&str> = passages.iter().map(String::as_str).collect();
            // A re-ranker that fails (a chat endpoint gone) leaves the ranking as it was.
            if let Ok(scores) = reranker.score(&text, &texts)
                && scores.len() == depth
            {
                reorder(&mut ranked, &scores, ahead);
            }
        }
        ranked.truncate(k);
        let ids: Vec<MemoryId> = ranked.iter().map(|r| MemoryId::from_u128(r.id)).collect();
        // From one snapshot: the hits are consistent with each other.
        let memories = store.get_each(&ids)?;
        let mut read = Vec::with_capacity(ranked.len());
        for (Ranked { score, chunk, .. }, memory) in ranked.into_iter().zip(memories) {
            match memory {
                Ok(memory) => read.push((memory, score, chunk)),
                // Deleted since the index caught up: never show it.
                Err(StoreError::NotFound(_) | StoreError::Deleted(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Read {
            memories: read,
            stems,
        })
    }
}

/// A search's hits read from the store, their snippets still to make.
#[derive(Debug)]
pub struct Read {
    /// Each hit's memory, score and matching chunk (if its vector named one).
    memories: Vec<(Memory, f32, Option<u32>)>,
    stems: Vec<String>,
}

impl Read {
    /// Bytes of the hits' texts: what making their snippets costs is about in proportion
    /// ([`Read::hits`] cuts each text into chunks, and looks for the query's words in every
    /// chunk of a hit whose matching chunk is not known).
    pub fn text_bytes(&self) -> usize {
        self.memories
            .iter()
            .map(|(memory, _, _)| memory.content.len())
            .sum()
    }

    /// The hits, best first, each with its snippet.
    pub fn hits(self) -> Vec<Hit> {
        let Read { memories, stems } = self;
        let mut analyser = query::analyser();
        let mut hits = Vec::with_capacity(memories.len());
        for (memory, score, chunk) in memories {
            let pieces = chunks(&memory.content);
            // (A short memory's second vector, its context's, names no chunk of its own.)
            let chunk = chunk
                .filter(|c| (*c as usize) < pieces.len())
                .unwrap_or_else(|| best_chunk(&mut analyser, &pieces, &stems));
            let text = pieces
                .get(chunk as usize)
                .map_or(memory.content.as_str(), |(_, t)| *t);
            hits.push(Hit {
                id: memory.id,
                title: memory.title,
                created: memory.created_at,
                score,
                snippet: snippet_with(&mut analyser, text, &stems),
                chunk,
            });
        }
        hits
    }
}

impl SearchIndex {
    /// One ranking of the memories `filter` lets through, best first: (memory, score, the
    /// chunk whose vector matched).
    ///
    /// Hybrid fuses the two rankings by score, not by rank alone: each ranking's scores are
    /// scaled to 0..1 over its candidates (min-max) and weighed by the embedder's
    /// [`Profile`] (a lexical embedder is a weak second opinion to BM25, a model of meaning
    /// a strong one). When no memory holds the query's words and its best vector is below
    /// the profile's floor, the vectors say nothing about it either, in every mode: a
    /// query of made-up words finds nothing.
    fn rank(
        &self,
        analysed: &query::Analysed,
        q: Option<&[f32]>,
        mode: Mode,
        filter: &Filter,
        depth: usize,
    ) -> Result<Vec<Ranked>, SearchError> {
        let keyword = if mode != Mode::Semantic {
            self.keyword.search(&analysed.words, depth, filter)?
        } else {
            Vec::new()
        };
        let profile = self.embedder.profile();
        let vector = if let Some(q) = q {
            let exact = !filter.is_empty() || self.vectors.memories() < EXACT_BELOW;
            let allow = |m: u128| self.meta.get(&m).is_some_and(|meta| filter.accepts(meta));
            // A memory found through its context ranks below one found through itself.
            let weight = |m: u128, chunk: u32| {
                if chunk > 0 && self.meta.get(&m).is_some_and(|meta| meta.with_context) {
                    context::CONTEXT_WEIGHT
                } else {
                    1.0
                }
            };
            let mut hits = self.vectors.search(q, depth, exact, &allow, &weight);
            // Orthogonal or opposite vectors share nothing with the query.
            hits.retain(|h| h.similarity > 0.0);
            // Nothing relevant means nothing found: vectors below the floor count only if
            // the query's words are in some memory.
            if hits.first().is_some_and(|h| h.similarity < profile.floor)
                && keyword.is_empty()
                && (mode == Mode::Hybrid
                    || self.keyword.search(&analysed.words, 1, filter)?.is_empty())
            {
                hits.clear();
            }
            hits
        } else {
            Vec::new()
        };
        let mut fused: IdMap<(f32, Option<u32>)> = IdMap::default();
        match mode {
            Mode::Keyword => {
                for (id, score) in &keyword {
                    fused.insert(*id, (*score, None));
                }
            }
            Mode::Semantic => {
                for hit in &vector {
                    fused.insert(hit.memory, (hit.similarity, Some(hit.chunk)));
                }
            }
            Mode::Hybrid => {
                let share = profile.keyword_share;
                let scores: Vec<f32> = keyword.iter().map(|(_, s)| *s).collect();
                for ((id, _), scaled) in keyword.iter().zip(min_max(&scores)) {
                    fused.entry(*id).or_insert((0.0, None)).0 += share * scaled;
                }
                let scores: Vec<f32> = vector.iter().map(|h| h.similarity).collect();
                for (hit, scaled) in vector.iter().zip(min_max(&scores)) {
                    let entry = fused.entry(hit.memory).or_insert((0.0, None));
                    entry.0 += (1.0 - share) * scaled;
                    entry.1 = Some(hit.chunk);
                }
            }
        }
        let close: HashSet<u128> = vector
            .iter()
            .filter(|h| h.similarity >= profile.floor)
            .map(|h| h.memory)
            .collect();
        let worded: HashSet<u128> = keyword.iter().map(|(id, _)| *id).collect();
        let mut ranked: Vec<Ranked> = fused
            .into_iter()
            .map(|(id, (score, chunk))| Ranked {
                id,
                score,
                chunk,
                evidence: worded.contains(&id) || close.contains(&id),
            })
            .collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        Ok(ranked)
    }

    /// The query's vector, unless the mode needs none.
    fn query_vector(
        &self,
        analysed: &query::Analysed,
        mode: Mode,
    ) -> Result<Option<Vec<f32>>, SearchError> {
        if mode == Mode::Keyword {
            return Ok(None);
        }
        let embedded = embed::embed_checked(&*self.embedder, &[analysed.meaning.as_str()])?;
        Ok(Some(embedded.into_iter().next().unwrap_or_default()))
    }

    /// Whether the embedder is a model of meaning (not the lexical built-in).
    pub fn searches_meaning(&self) -> bool {
        self.embedder.profile() != embed::Profile::LEXICAL
    }

    /// How far the indexes are.
    pub fn status(&self, store: &StoreReader) -> Result<IndexStatus, SearchError> {
        let last = store.last_seq()?;
        let (vectors_stored, segments) = self.vectors.sizes();
        Ok(IndexStatus {
            model: self.embedder.model_id().to_owned(),
            meaning: self.searches_meaning(),
            indexed: self.vectors.memories(),
            keyword_indexed: self.keyword.len(),
            pending: pending_memories(store, self.vector_seq)?,
            keyword_pending: pending_memories(store, self.keyword_seq)?,
            pending_changes: last.saturating_sub(self.vector_seq),
            memories: store.count()?,
            vectors_stored,
            segments,
        })
    }

    /// The collection filter for `id_or_name`, checked against the store.
    pub fn collection_filter(store: &StoreReader, id_or_name: &str) -> Result<u128, SearchError> {
        let id: CollectionId = store.resolve_collection(id_or_name)?;
        Ok(id.to_u128())
    }
}

/// How many distinct memories changed after change-log position `seq`.
fn pending_memories(store: &StoreReader, mut seq: u64) -> Result<u64, SearchError> {
    let mut seen = HashSet::new();
    loop {
        let events = store.changes_since(seq, CATCH_UP_BATCH)?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(seen.len() as u64);
        };
        seen.extend(events.iter().map(|e| e.memory));
        seq = last;
    }
}

fn vector_path(dir: &Path, model: &str) -> PathBuf {
    let safe: String = model
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("vectors-{safe}.bin"))
}

fn load_vectors(path: &Path) -> Option<VectorState> {
    let bytes = std::fs::read(path).ok()?;
    postcard::from_bytes(&bytes).ok()
}

/// Where the sealed segments of the vector index saved at `state` go.
fn segment_dir(state: &Path) -> PathBuf {
    state.with_extension("d")
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id}.seg"))
}

/// Writes a sealed segment as it is serialised (no copy of it in memory), whole or not at
/// all, readable by its owner only.
fn write_segment(path: &Path, segment: &vector::Segment) -> Result<(), SearchError> {
    use std::io::Write as _;
    mnemon_identity::private::write_private_with(path, |file| {
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        postcard::to_io(segment, &mut out).map_err(std::io::Error::other)?;
        out.flush()
    })
    .map_err(index_err)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SearchError> {
    mnemon_identity::private::write_private(path, bytes).map_err(index_err)
}

/// Each memory of `events` once, with its latest event (newest first).
fn latest_per_memory(events: &[ChangeEvent]) -> Vec<(MemoryId, ChangeKind)> {
    let mut seen = HashSet::new();
    events
        .iter()
        .rev()
        .filter(|event| seen.insert(event.memory))
        .map(|event| (event.memory, event.kind))
        .collect()
}

/// The texts a memory's vectors are made of: its first chunks, each with its title (a long
/// memory is found by meaning through those, and by words through all of it, so the
/// vectors of one memory stay bounded), and for a short memory with a context, it after
/// what came just before it (a second vector; its own stays: notes jotted in a row need
/// not be about one thing).
/// The context of each of `memories` (those among them count as written already), of the
/// memories `before` each gives (see [`context::Timeline::before`]).
fn contexts(
    store: &StoreReader,
    memories: &[Memory],
    before: impl Fn(u128) -> Vec<u128>,
) -> Result<Vec<context::Context>, SearchError> {
    let known: HashMap<u128, &str> = memories
        .iter()
        .map(|m| (m.id.to_u128(), m.content.as_str()))
        .collect();
    memories
        .iter()
        .map(|m| context::context_of(before(m.id.to_u128()), store, &m.content, &known))
        .collect()
}

/// Up to `take` of the memories in `set` (owed a new context) that `batch` did not see,
/// with those still in the store appended to its memories. (One gone is forgotten by its
/// delete, which is in the log.)
fn owed(
    store: &StoreReader,
    set: &HashSet<u128>,
    batch: &mut Batch,
    take: usize,
) -> Result<Vec<u128>, SearchError> {
    let ids: Vec<u128> = set
        .iter()
        .copied()
        .filter(|id| !batch.seen.contains(&MemoryId::from_u128(*id)))
        .take(take)
        .collect();
    for &id in &ids {
        match store.get(MemoryId::from_u128(id)) {
            Ok(memory) => batch.memories.push(memory),
            Err(StoreError::NotFound(_) | StoreError::Deleted(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(ids)
}

/// What the keyword index keeps of `memory`.
fn keyword_doc<'a>(memory: &'a Memory, context: &'a context::Context) -> KeywordDoc<'a> {
    KeywordDoc {
        id: memory.id.to_u128(),
        title: &memory.title,
        content: &memory.content,
        context: &context.text,
        context_ids: &context.ids,
        tags: memory.tags.iter().map(String::as_str).collect(),
        kind: &memory.kind,
        collection: memory.collection.to_u128(),
        created: memory.created_at.as_millis(),
        importance: memory.importance,
    }
}

/// The texts the vector index embeds for `memories` with their `contexts`, and how many
/// of them are each memory's.
fn texts_of(memories: &[Memory], contexts: &[context::Context]) -> (Vec<String>, Vec<usize>) {
    let mut texts = Vec::new();
    let mut counts = Vec::with_capacity(memories.len());
    for (memory, context) in memories.iter().zip(contexts) {
        let start = texts.len();
        texts.extend(vector_texts(memory, context));
        counts.push(texts.len() - start);
    }
    (texts, counts)
}

fn vector_texts(memory: &Memory, context: &context::Context) -> Vec<String> {
    let mut texts: Vec<String> = chunks(&memory.content)
        .into_iter()
        .take(MAX_EMBEDDED_CHUNKS)
        .map(|(_, chunk)| format!("{}\n\n{}", memory.title, chunk))
        .collect();
    if !context.text.is_empty() {
        texts.push(format!(
            "{}\n\n{}\n{}",
            memory.title, context.text, memory.content
        ));
    }
    texts
}

/// Splits text into chunks of about [`CHUNK_CHARS`] characters at paragraph, sentence or
/// word boundaries. Returns (start char offset, chunk). Empty text is one empty chunk.
pub fn chunks(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    // One pass per chunk: the text is longer than a chunk while its CHUNK_CHARS-th
    // character exists.
    while let Some((limit, _)) = rest.char_indices().nth(CHUNK_CHARS) {
        let window = &rest[..limit];
        let cut = window
            .rfind("\n\n")
            .or_else(|| window.rfind(". "))
            .or_else(|| window.rfind(char::is_whitespace))
            .filter(|&i| i > limit / 2)
            .map_or(limit, |i| i + 1);
        let (head, tail) = rest.split_at(cut);
        out.push((offset, head));
        offset += head.chars().count();
        rest = tail;
    }
    out.push((offset, rest));
    out
}

/// Scores scaled to 0..1: the best is 1, the worst 0 (one score, or all equal: all 1).
fn min_max(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::MIN, f32::max);
    let min = scores.iter().copied().fold(f32::MAX, f32::min);
    let span = max - min;
    scores
        .iter()
        .map(|s| if span > 0.0 { (s - min) / span } else { 1.0 })
        .collect()
}

/// The chunk holding most of the query's word stems (the first if none).
/// What a re-ranker reads of each of `ranked`: the memory's title and the chunk that
/// matched (the one with the most of the query's words, when no vector named one). A
/// memory deleted since the index caught up reads as nothing (it is left out later).
fn passages(
    store: &StoreReader,
    ranked: &[Ranked],
    analyser: &mut TextAnalyzer,
    stems: &[String],
) -> Result<Vec<String>, SearchError> {
    let mut out = Vec::with_capacity(ranked.len());
    for r in ranked {
        let memory = match store.get(MemoryId::from_u128(r.id)) {
            Ok(memory) => memory,
            Err(StoreError::NotFound(_) | StoreError::Deleted(_)) => {
                out.push(String::new());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let pieces = chunks(&memory.content);
        let chunk = r
            .chunk
            .filter(|c| (*c as usize) < pieces.len())
            .unwrap_or_else(|| best_chunk(analyser, &pieces, stems));
        let text = pieces
            .get(chunk as usize)
            .map_or(memory.content.as_str(), |(_, t)| *t);
        out.push(format!("{}\n{text}", memory.title));
    }
    Ok(out)
}

/// Orders the first `scores.len()` of `ranked` by `scores` (0 to 1, higher first; ties
/// keep their order), the first `ahead` staying ahead of the others. Scores become the
/// re-ranker's (plus 1 for those ahead), and those past the re-ranked ones are scaled
/// below them, so scores still fall down the list.
fn reorder(ranked: &mut [Ranked], scores: &[f32], ahead: usize) {
    let depth = scores.len();
    let lift = |i: usize| if i < ahead { 1.0 } else { 0.0 };
    for (i, (r, s)) in ranked.iter_mut().zip(scores).enumerate() {
        r.score = if s.is_finite() {
            s.clamp(0.0, 1.0)
        } else {
            0.0
        } + lift(i);
    }
    let (window, tail) = ranked.split_at_mut(depth);
    let split = ahead.min(depth);
    let by_score = |a: &Ranked, b: &Ranked| b.score.total_cmp(&a.score);
    window[..split].sort_by(by_score);
    window[split..].sort_by(by_score);
    let lowest = window.iter().map(|r| r.score).fold(f32::INFINITY, f32::min);
    if let Some(top) = tail.first().map(|r| r.score)
        && lowest.is_finite()
    {
        let top = top.max(f32::MIN_POSITIVE);
        for r in tail {
            r.score = lowest * 0.999 * (r.score / top).clamp(0.0, 1.0);
        }
    }
}

fn best_chunk(analyser: &mut TextAnalyzer, pieces: &[(usize, &str)], stems: &[String]) -> u32 {
    let mut best = (0, 0);
    for (i, (_, text)) in pieces.iter().enumerate() {
        let found: HashSet<String> = query::stems(analyser, text).into_iter().collect();
        let count = stems.iter().filter(|s| found.contains(*s)).count();
        if count > best.1 {
            best = (i, count);
        }
    }
    best.0 as u32
}

/// About 200 characters of `text` around the first word of the query, its words wrapped in
/// `**`. A word matches when it is one of the query's words or another form of one
/// ("bakes" for "baking"), never when it merely contains one ("doc" is not in "Sourdough").
///
/// The text's own asterisks (Markdown emphasis) are left out, so `**` in a snippet only
/// ever marks a match.
pub fn snippet(text: &str, query: &str) -> String {
    let analysed = query::analyse(query, None);
    snippet_with(&mut query::analyser(), text, &analysed.stems)
}

fn snippet_with(analyser: &mut TextAnalyzer, text: &str, stems: &[String]) -> String {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.replace('*', ""))
        .filter(|w| !w.is_empty())
        .collect();
    let mut matches = |w: &str| query::stems(analyser, w).iter().any(|s| stems.contains(s));
    let marked: Vec<bool> = words.iter().map(|w| matches(w)).collect();
    let first = marked.iter().position(|m| *m).unwrap_or(0);
    let start = first.saturating_sub(8);
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut end = start;
    for (word, marked) in words[start..].iter().zip(&marked[start..]) {
        if out.chars().count() > 200 {
            break;
        }
        if !out.is_empty() && !out.ends_with('…') {
            out.push(' ');
        }
        if *marked {
            out.push_str("**");
            out.push_str(word);
            out.push_str("**");
        } else {
            out.push_str(word);
        }
        end += 1;
    }
    if end < words.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in embedder's vectors under another name, as a model of meaning, that
    /// once armed stops inside its next embedding until let go.
    #[derive(Debug, Default)]
    struct Gated {
        inner: embed::HashEmbedder,
        armed: std::sync::atomic::AtomicBool,
        /// Met once the embedding has started, and once to let it go on.
        gate: Option<Arc<std::sync::Barrier>>,
    }

    impl Embedder for Gated {
        fn model_id(&self) -> &str {
            "gated-meaning"
        }
        fn dimension(&self) -> usize {
            self.inner.dimension()
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, embed::EmbedError> {
            if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst)
                && let Some(gate) = &self.gate
            {
                gate.wait();
                gate.wait();
            }
            self.inner.embed(texts)
        }
    }

    /// While a step embeds its batch, the index is not held at all: a writer (and so any
    /// search) gets it at once. The batch is then put in as a step with the index held
    /// throughout puts it: the same vectors, the same positions.
    #[test]
    fn a_step_embeds_without_the_index_held_and_puts_in_what_a_held_step_would() {
        let mut store = mnemon_crdt::Store::open_in_memory(mnemon_identity::Keypair::generate())
            .expect("store");
        let now = Timestamp::now().as_millis();
        let add = |store: &mut mnemon_crdt::Store, i: usize| {
            // The later ones in an order of their own within the last minute, before the
            // first ones: each is context of memories indexed already, owed a new one.
            let created = (i >= 20)
                .then(|| Timestamp::from_millis(now - 60_000 + ((i as i64 * 7919) % 40) * 1000));
            store
                .add(mnemon_crdt::NewMemory {
                    content: format!("note {i} on the garden, the kettle {} and tea", i % 7),
                    created_at: created,
                    ..Default::default()
                })
                .expect("add")
                .id
        };
        for i in 0..20 {
            add(&mut store, i);
        }
        let reader = store.reader();
        let gate = Arc::new(std::sync::Barrier::new(2));
        let gated = Arc::new(Gated {
            gate: Some(gate.clone()),
            ..Gated::default()
        });
        let (dir, plain_dir) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let mut index = SearchIndex::open(dir.path(), gated.clone(), &reader).expect("open");
        let mut plain =
            SearchIndex::open(plain_dir.path(), Arc::new(Gated::default()), &reader).expect("open");
        // New memories, one edited: a batch with contexts that follow one another.
        let ids: Vec<MemoryId> = (20..40).map(|i| add(&mut store, i)).collect();
        store
            .edit(
                ids[3],
                &mnemon_crdt::MemoryEdit {
                    content: Some("a kettle of a different colour".into()),
                    ..Default::default()
                },
            )
            .expect("edit");
        gated.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let held = std::sync::Mutex::new(&mut index);
        let applied = std::thread::scope(|scope| {
            let stepping = scope.spawn(|| {
                step(&held, &reader, Instant::now() + Duration::from_secs(30)).expect("a step")
            });
            gate.wait();
            // Embedding: nobody holds the index.
            let free = held.try_lock().is_ok();
            gate.wait();
            assert!(free, "the index was held while the batch was embedded");
            stepping.join().expect("the step")
        });
        assert!(applied > 0);
        plain
            .step(&reader, Instant::now() + Duration::from_secs(30))
            .expect("a held step");
        let index = held.into_inner().expect("lock");
        assert_eq!(index.positions(), plain.positions());
        assert_eq!(index.positions().1, reader.last_seq().expect("seq"));
        let query = embed::HashEmbedder::default()
            .embed(&["kettle 3 tea colour"])
            .expect("query")
            .remove(0);
        let near = |index: &SearchIndex| {
            index
                .vectors
                .search(&query, 60, true, &|_| true, &|_, _| 1.0)
        };
        assert_eq!(near(index), near(&plain));
        assert!(near(index).iter().any(|h| h.memory == ids[3].to_u128()));
        // Every memory with the context it has now, as a rebuild from the store gives it
        // (those owed a new one were made ready with the next batch).
        let rebuilt_dir = tempfile::tempdir().expect("dir");
        let rebuilt = SearchIndex::open(rebuilt_dir.path(), Arc::new(Gated::default()), &reader)
            .expect("rebuilt");
        // (Sealed, as the rebuilt one is: the recent segment keeps its vectors in another
        // precision.)
        index.vectors.seal();
        let all = |index: &SearchIndex| {
            let mut hits: Vec<(u128, u32, i64)> = near(index)
                .iter()
                .map(|h| (h.memory, h.chunk, (h.similarity * 1e5).round() as i64))
                .collect();
            hits.sort_unstable();
            hits
        };
        assert_eq!(all(index).len(), 40);
        assert_eq!(all(index), all(&rebuilt));
    }

    /// A batch made ready before the index moved (a delete forgotten at once) is not put
    /// in, and the next step makes it ready again: the deleted memory stays out.
    #[test]
    fn a_batch_made_ready_before_a_delete_is_not_put_in() {
        let (mut store, ids, _dir, mut index) = indexed(&["a kettle", "a teapot"]);
        let reader = store.reader();
        let canary = store
            .add(mnemon_crdt::NewMemory {
                content: "the canary xq7c4f1d2e9b7".into(),
                ..Default::default()
            })
            .expect("add")
            .id;
        let at = index.positions();
        let ready = index
            .prepare(&reader, Part::Both, EMBED_BATCH)
            .expect("prepare")
            .expect("a batch");
        assert!(ready.memories.iter().any(|m| m.id == canary));
        store.remove(&[canary]).expect("remove");
        index.forget_now(&reader, &[canary]).expect("forget");
        assert!(index.install(ready).expect("install").is_none());
        assert_eq!(index.positions(), at, "nothing put in");
        index
            .step(&reader, Instant::now() + Duration::from_secs(5))
            .expect("step");
        assert_eq!(index.positions().1, reader.last_seq().expect("seq"));
        assert!(!index.meta.contains_key(&canary.to_u128()));
        assert!(index.meta.contains_key(&ids[0].to_u128()));
    }

    /// A model that answers with a vector of the wrong length fails its batch, naming
    /// the model, and the index takes nothing from it: searches go on.
    #[test]
    fn a_vector_of_the_wrong_length_fails_its_batch_and_the_index_takes_nothing() {
        let mut store = mnemon_crdt::Store::open_in_memory(mnemon_identity::Keypair::generate())
            .expect("store");
        for content in ["a kettle of tea", "a short note on the kettle"] {
            store
                .add(mnemon_crdt::NewMemory {
                    content: content.into(),
                    ..Default::default()
                })
                .expect("add");
        }
        let reader = store.reader();
        let dir = tempfile::tempdir().expect("dir");
        // A fresh index embeds everything as it opens: a wrong model fails it there.
        let e = SearchIndex::open(
            dir.path(),
            Arc::new(embed::tests::Wrong::default()),
            &reader,
        )
        .expect_err("refused");
        assert!(e.to_string().contains("511 dimensions"), "{e}");
        // Words indexed already (with the built-in embedder), the vectors lag.
        SearchIndex::open(
            dir.path(),
            Arc::new(embed::HashEmbedder::default()),
            &reader,
        )
        .expect("open with the built-in embedder");
        let mut index = SearchIndex::open_lagging(
            dir.path(),
            Arc::new(embed::tests::Wrong::default()),
            &reader,
        )
        .expect("open");
        let vectors_at = index.positions().1;
        let e = index
            .catch_up_vectors(&reader, None, &mut |_| {})
            .expect_err("the batch fails");
        assert!(
            e.to_string()
                .contains("wrong-model returned a vector of 511 dimensions"),
            "{e}"
        );
        assert_eq!(index.positions().1, vectors_at);
        assert_eq!(index.vectors.memories(), 0);
        let search = |text: &str| {
            index.first_stage(&Query {
                text: text.into(),
                k: 5,
                mode: Mode::Hybrid,
                filter: Filter::default(),
                rerank: Vec::new(),
            })
        };
        assert!(search("kettle").is_ok());
        let e = search("short kettle").expect_err("the query's vector is refused");
        assert!(e.to_string().contains("511 dimensions"), "{e}");
    }

    /// A store holding one memory of each of `contents`, and an index of it with the
    /// built-in embedder that leaves its commits to the caller, as under the indexer.
    fn indexed(
        contents: &[&str],
    ) -> (
        mnemon_crdt::Store,
        Vec<MemoryId>,
        tempfile::TempDir,
        SearchIndex,
    ) {
        let mut store = mnemon_crdt::Store::open_in_memory(mnemon_identity::Keypair::generate())
            .expect("store");
        let ids = contents
            .iter()
            .map(|content| {
                store
                    .add(mnemon_crdt::NewMemory {
                        content: (*content).into(),
                        ..Default::default()
                    })
                    .expect("add")
                    .id
            })
            .collect();
        let dir = tempfile::tempdir().expect("dir");
        let mut index = SearchIndex::open(
            dir.path(),
            Arc::new(embed::HashEmbedder::default()),
            &store.reader(),
        )
        .expect("open");
        index.defer_commits(true);
        (store, ids, dir, index)
    }

    /// A delete forgotten at once has its files rewritten once: when the change log
    /// brings the same delete to the indexer, it owes no second purge (each merges every
    /// keyword segment). A delete that comes only through the log still purges.
    #[test]
    fn a_delete_forgotten_at_once_is_purged_once() {
        let (mut store, ids, _dir, mut index) = indexed(&[
            "the canary xq7c4f1d2e9b7",
            "the canary yv3d2e9b7c4f1",
            "a kettle",
        ]);
        let reader = store.reader();
        // Deleted and forgotten at once: the caller runs the purge.
        store.remove(&ids[..1]).expect("remove");
        index.forget_now(&reader, &ids[..1]).expect("forget");
        let purge = index.keyword_commit_job().expect("a purge is due");
        let result = purge.run();
        index.keyword_committed(&purge, &result);
        result.expect("purged");
        assert!(!index.keyword_purge_owed());
        // The log brings the same delete: nothing more to purge.
        index
            .step(&reader, Instant::now() + Duration::from_secs(5))
            .expect("step");
        assert!(!index.keyword_purge_owed(), "purged twice");
        // A delete that only the log brings is purged.
        store.remove(&ids[1..2]).expect("remove");
        index
            .step(&reader, Instant::now() + Duration::from_secs(5))
            .expect("step");
        assert!(index.keyword_purge_owed());
    }

    /// A rollback (after another commit failed) drops what a commit waiting to finish
    /// holds, and tantivy still reports that commit done: a commit made before a rollback
    /// moves nothing, and its purge stays owed, as does the change log's delete.
    #[test]
    fn a_commit_made_before_a_rollback_counts_for_nothing_and_its_purge_stays_owed() {
        let (mut store, ids, _dir, mut index) = indexed(&["the canary xq7c4f1d2e9b7", "a kettle"]);
        let reader = store.reader();
        let at = index.positions().0;
        // A delete's purge, made but not yet run...
        store.remove(&ids[..1]).expect("remove");
        index.forget_now(&reader, &ids[..1]).expect("forget");
        let purge = index.keyword_commit_job().expect("a purge is due");
        // ...while another commit fails, and the writer is rolled back.
        store
            .edit(
                ids[1],
                &mnemon_crdt::MemoryEdit {
                    content: Some("a kettle of tea".into()),
                    ..Default::default()
                },
            )
            .expect("edit");
        index
            .step(&reader, Instant::now() + Duration::from_secs(5))
            .expect("step");
        let other = index.keyword_commit_job().expect("a commit is due");
        index.keyword_committed(&other, &Err(SearchError::Index("disk full".into())));
        let result = purge.run();
        index.keyword_committed(&purge, &result);
        assert_eq!(
            index.positions().0,
            at,
            "a commit from before the rollback moved"
        );
        assert!(index.keyword_purge_owed(), "the purge is owed again");
        // The log gives both changes again; the retry purges and moves on.
        index
            .step(&reader, Instant::now() + Duration::from_secs(5))
            .expect("step");
        let retry = index.keyword_commit_job().expect("due");
        assert!(retry.purges());
        let result = retry.run();
        index.keyword_committed(&retry, &result);
        result.expect("commit");
        assert_eq!(index.positions().0, reader.last_seq().expect("seq"));
    }

    fn ranked(scores: &[f32]) -> Vec<Ranked> {
        scores
            .iter()
            .enumerate()
            .map(|(i, s)| Ranked {
                id: i as u128,
                score: *s,
                chunk: None,
                evidence: true,
            })
            .collect()
    }

    #[test]
    fn a_second_stage_reorders_its_window_keeps_the_dated_ahead_and_scores_fall() {
        // Six ranked, the first two of the time the query named; the re-ranker reads four.
        let mut list = ranked(&[9.0, 8.0, 7.0, 6.0, 5.0, 4.0]);
        reorder(&mut list, &[0.1, 0.7, 0.9, 0.2], 2);
        let order: Vec<u128> = list.iter().map(|r| r.id).collect();
        // 1 before 0 (ahead, by score), then 2 before 3 (by score), then the untouched.
        assert_eq!(order, vec![1, 0, 2, 3, 4, 5]);
        let scores: Vec<f32> = list.iter().map(|r| r.score).collect();
        assert_eq!(&scores[..4], &[1.7, 1.1, 0.9, 0.2]);
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        assert!(scores[4] < 0.2 && scores[5] < scores[4] && scores[5] > 0.0);
        // Ties keep their order; scores that are not numbers count as 0.
        let mut list = ranked(&[3.0, 2.0, 1.0]);
        reorder(&mut list, &[0.5, f32::NAN, 0.5], 0);
        let order: Vec<u128> = list.iter().map(|r| r.id).collect();
        assert_eq!(order, vec![0, 2, 1]);
    }

    #[test]
    fn chunks_cover_the_text_at_boundaries() {
        let text = "word ".repeat(700);
        let pieces = chunks(&text);
        assert!(pieces.len() >= 3);
        let joined: String = pieces.iter().map(|(_, t)| *t).collect();
        assert_eq!(joined, text);
        assert!(pieces.iter().all(|(_, t)| t.chars().count() <= CHUNK_CHARS));
        assert_eq!(chunks("short"), vec![(0, "short")]);
    }

    #[test]
    fn snippets_highlight_whole_words() {
        let s = snippet("the quick brown fox jumps", "fox");
        assert_eq!(s, "the quick brown **fox** jumps");
        let s = snippet("paid **42 euros** to the * plumber*", "plumber");
        assert_eq!(s, "paid 42 euros to the **plumber**");
        // Words, not substrings; other forms of a word count; question words do not.
        let s = snippet(
            "Sourdough, boredom and a doc. She bakes pizza.",
            "how do I bake pizza",
        );
        assert_eq!(s, "Sourdough, boredom and a doc. She **bakes** **pizza.**");
    }

    #[test]
    fn min_max_scales_to_unit() {
        assert_eq!(min_max(&[4.0, 3.0, 2.0]), vec![1.0, 0.5, 0.0]);
        assert_eq!(min_max(&[0.7]), vec![1.0]);
        assert!(min_max(&[]).is_empty());
    }
}
