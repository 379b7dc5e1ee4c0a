//! Search by meaning and by words: an embedder, a vector index, a keyword index and
//! hybrid ranking by reciprocal rank fusion.
//!
//! Both indexes are derived data kept in `DATA/index/`: they remember the store's change-log
//! position they reflect and catch up from the store's change log (`Store::changes_since`)
//! before every search; when missing, unreadable or made for another model they are rebuilt
//! from the store.

pub mod embed;
mod keyword;
pub mod openai;
pub mod vector;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mnemon_crdt::{ChangeKind, CollectionId, Memory, MemoryId, Store, StoreError};
use serde::{Deserialize, Serialize};

use self::embed::{EmbedError, Embedder};
use self::keyword::{KeywordDoc, KeywordIndex};
use self::vector::VectorIndex;

/// Largest `k` a search accepts.
pub const MAX_K: usize = 1000;
/// Longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Characters per chunk of a memory's text.
pub const CHUNK_CHARS: usize = 1000;
/// Constant of reciprocal rank fusion.
const RRF_K: f32 = 60.0;
/// Below this many vectors, or with a filter, vector search compares every vector.
const EXACT_BELOW: usize = 2048;
/// Change-log entries applied per batch while catching up.
const CATCH_UP_BATCH: usize = 2048;
const STATE_FORMAT: u32 = 1;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
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
    /// Only this collection.
    pub collection: Option<u128>,
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
        self.collection.is_none()
            && self.tag.is_none()
            && self.kind.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.min_importance.is_none()
    }

    fn accepts(&self, meta: &DocMeta) -> bool {
        self.collection.is_none_or(|c| c == meta.collection)
            && self.tag.as_ref().is_none_or(|t| meta.tags.contains(t))
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
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The memory.
    pub id: MemoryId,
    /// Its title.
    pub title: String,
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
    /// Memories with vectors.
    pub indexed: usize,
    /// Memories in the keyword index.
    pub keyword_indexed: u64,
    /// Store changes not yet applied to the indexes.
    pub pending: u64,
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
}

#[derive(Serialize, Deserialize)]
struct VectorState {
    format: u32,
    seq: u64,
    meta: HashMap<u128, DocMeta>,
    vectors: VectorIndex,
}

/// The search indexes of one node.
#[derive(Debug)]
pub struct SearchIndex {
    dir: PathBuf,
    embedder: Arc<dyn Embedder>,
    keyword: KeywordIndex,
    vectors: VectorIndex,
    meta: HashMap<u128, DocMeta>,
    seq: u64,
}

impl std::fmt::Debug for VectorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorState")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

fn index_err(e: impl std::fmt::Display) -> SearchError {
    SearchError::Index(e.to_string())
}

impl SearchIndex {
    /// Opens the indexes in `dir` for `embedder` and brings them up to date with `store`.
    pub fn open(
        dir: &Path,
        embedder: Arc<dyn Embedder>,
        store: &Store,
    ) -> Result<SearchIndex, SearchError> {
        std::fs::create_dir_all(dir).map_err(index_err)?;
        let (keyword, fresh_keyword) = KeywordIndex::open(&dir.join("keyword"))?;
        let loaded = load_vectors(&vector_path(dir, embedder.model_id()))
            .filter(|s| s.format == STATE_FORMAT)
            .filter(|s| {
                s.vectors
                    .is_compatible(embedder.model_id(), embedder.dimension())
            });
        let last = store.last_seq()?;
        let mut index = SearchIndex {
            dir: dir.to_owned(),
            keyword,
            vectors: VectorIndex::new(embedder.model_id(), embedder.dimension()),
            embedder,
            meta: HashMap::new(),
            seq: 0,
        };
        let keyword_seq = index.keyword.committed_seq();
        match loaded {
            // Both indexes exist and neither is ahead of the store: catch up from the older.
            Some(state) if !fresh_keyword && state.seq <= last && keyword_seq <= last => {
                index.seq = state.seq.min(keyword_seq);
                index.meta = state.meta;
                index.vectors = state.vectors;
                index.catch_up(store)?;
            }
            _ => {
                index.rebuild(store)?;
            }
        }
        Ok(index)
    }

    /// Drops both indexes and indexes every memory in the store again.
    pub fn rebuild(&mut self, store: &Store) -> Result<usize, SearchError> {
        let seq = store.last_seq()?;
        self.keyword.clear()?;
        self.vectors = VectorIndex::new(self.embedder.model_id(), self.embedder.dimension());
        self.meta.clear();
        let memories = store.list(&mnemon_crdt::ListFilter::default())?;
        self.vectors.set_auto_seal(false);
        for batch in memories.chunks(256) {
            self.index_memories(batch)?;
        }
        self.vectors.set_auto_seal(true);
        self.vectors.seal();
        self.seq = seq;
        self.persist(true)?;
        // Changes made while rebuilding are applied now (re-applying is harmless).
        self.catch_up(store)?;
        Ok(memories.len())
    }

    /// Applies the store's changes since the indexes' position. Returns how many.
    pub fn catch_up(&mut self, store: &Store) -> Result<usize, SearchError> {
        let mut applied = 0;
        loop {
            let events = store.changes_since(self.seq, CATCH_UP_BATCH)?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            let mut upsert: Vec<MemoryId> = Vec::new();
            let mut deleted = false;
            let mut seen = HashSet::new();
            // Latest event per memory wins; walk backwards.
            for event in events.iter().rev() {
                if !seen.insert(event.memory) {
                    continue;
                }
                match event.kind {
                    ChangeKind::Deleted => {
                        self.forget(event.memory);
                        deleted = true;
                    }
                    ChangeKind::Created | ChangeKind::Updated => upsert.push(event.memory),
                }
            }
            let mut memories = Vec::with_capacity(upsert.len());
            for id in upsert {
                match store.get(id) {
                    Ok(memory) => memories.push(memory),
                    Err(StoreError::NotFound(_) | StoreError::Deleted(_)) => {
                        self.forget(id);
                        deleted = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            self.index_memories(&memories)?;
            applied += events.len();
            self.seq = last;
            self.persist(deleted)?;
        }
        Ok(applied)
    }

    fn forget(&mut self, id: MemoryId) {
        self.keyword.remove(id.to_u128());
        self.vectors.remove(id.to_u128());
        self.meta.remove(&id.to_u128());
    }

    fn index_memories(&mut self, memories: &[Memory]) -> Result<(), SearchError> {
        let mut texts: Vec<String> = Vec::new();
        let mut owners: Vec<(usize, usize)> = Vec::new();
        for memory in memories {
            let start = texts.len();
            for (_, chunk) in chunks(&memory.content) {
                texts.push(format!("{}\n\n{}", memory.title, chunk));
            }
            owners.push((start, texts.len() - start));
            let tags: Vec<&str> = memory.tags.iter().map(String::as_str).collect();
            self.keyword.upsert(&KeywordDoc {
                id: memory.id.to_u128(),
                title: &memory.title,
                content: &memory.content,
                tags,
                kind: &memory.kind,
                collection: memory.collection.to_u128(),
                created: memory.created_at.as_millis(),
                importance: memory.importance,
            })?;
            self.meta.insert(
                memory.id.to_u128(),
                DocMeta {
                    collection: memory.collection.to_u128(),
                    tags: memory.tags.iter().cloned().collect(),
                    kind: memory.kind.clone(),
                    created: memory.created_at.as_millis(),
                    importance: memory.importance,
                },
            );
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut vectors = self.embedder.embed(&refs)?.into_iter();
        for (memory, (_, count)) in memories.iter().zip(owners) {
            let chunk_vectors: Vec<Vec<f32>> = vectors.by_ref().take(count).collect();
            self.vectors.upsert(memory.id.to_u128(), chunk_vectors);
        }
        Ok(())
    }

    fn persist(&mut self, purge: bool) -> Result<(), SearchError> {
        self.keyword.commit(self.seq, purge)?;
        if purge {
            // Drop the deleted memories' vectors from sealed segments too.
            self.vectors.purge();
        }
        let state = VectorState {
            format: STATE_FORMAT,
            seq: self.seq,
            meta: std::mem::take(&mut self.meta),
            vectors: std::mem::replace(
                &mut self.vectors,
                VectorIndex::new(self.embedder.model_id(), self.embedder.dimension()),
            ),
        };
        let result = postcard::to_allocvec(&state)
            .map_err(index_err)
            .and_then(|bytes| {
                write_atomically(&vector_path(&self.dir, self.embedder.model_id()), &bytes)
            });
        self.meta = state.meta;
        self.vectors = state.vectors;
        result
    }

    /// Searches. The caller has validated nothing; this checks the query.
    pub fn search(&self, store: &Store, query: &Query) -> Result<Vec<Hit>, SearchError> {
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
        if let (Some(since), Some(until)) = (query.filter.since, query.filter.until) {
            if since >= until {
                return Err(SearchError::BadTimeRange);
            }
        }
        if let Some(min) = query.filter.min_importance {
            if !(0.0..=1.0).contains(&min) {
                return Err(SearchError::BadImportance(min));
            }
        }
        let depth = (query.k * 4).max(50);
        let keyword = if query.mode != Mode::Semantic {
            self.keyword.search(text, depth, &query.filter)?
        } else {
            Vec::new()
        };
        let vector = if query.mode != Mode::Keyword {
            let embedded = self.embedder.embed(&[text])?;
            let q = embedded.first().cloned().unwrap_or_default();
            let exact = !query.filter.is_empty() || self.vectors.memories() < EXACT_BELOW;
            let allow = |m: u128| {
                self.meta
                    .get(&m)
                    .is_some_and(|meta| query.filter.accepts(meta))
            };
            let mut hits = self.vectors.search(&q, depth, exact, &allow);
            // Orthogonal or opposite vectors share nothing with the query.
            hits.retain(|h| h.similarity > 0.0);
            hits
        } else {
            Vec::new()
        };
        let mut fused: HashMap<u128, (f32, Option<u32>)> = HashMap::new();
        match query.mode {
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
                for (rank, (id, _)) in keyword.iter().enumerate() {
                    fused.entry(*id).or_insert((0.0, None)).0 += 1.0 / (RRF_K + rank as f32 + 1.0);
                }
                for (rank, hit) in vector.iter().enumerate() {
                    let entry = fused.entry(hit.memory).or_insert((0.0, None));
                    entry.0 += 1.0 / (RRF_K + rank as f32 + 1.0);
                    entry.1 = Some(hit.chunk);
                }
            }
        }
        let mut ranked: Vec<(u128, f32, Option<u32>)> =
            fused.into_iter().map(|(id, (s, c))| (id, s, c)).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(query.k);
        let terms = query_terms(text);
        let mut hits = Vec::with_capacity(ranked.len());
        for (id, score, chunk) in ranked {
            let id = MemoryId::from_u128(id);
            let memory = match store.get(id) {
                Ok(memory) => memory,
                // Deleted since the index caught up: never show it.
                Err(StoreError::NotFound(_) | StoreError::Deleted(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let pieces = chunks(&memory.content);
            let chunk = chunk.unwrap_or_else(|| best_chunk(&pieces, &terms));
            let text = pieces
                .get(chunk as usize)
                .map_or(memory.content.as_str(), |(_, t)| *t);
            hits.push(Hit {
                id,
                title: memory.title,
                score,
                snippet: snippet(text, &terms),
                chunk,
            });
        }
        Ok(hits)
    }

    /// How far the indexes are.
    pub fn status(&self, store: &Store) -> Result<IndexStatus, SearchError> {
        let last = store.last_seq()?;
        let (vectors_stored, segments) = self.vectors.sizes();
        Ok(IndexStatus {
            model: self.embedder.model_id().to_owned(),
            indexed: self.vectors.memories(),
            keyword_indexed: self.keyword.len(),
            pending: last.saturating_sub(self.seq),
            memories: store.count()?,
            vectors_stored,
            segments,
        })
    }

    /// The collection filter for `id_or_name`, checked against the store.
    pub fn collection_filter(store: &Store, id_or_name: &str) -> Result<u128, SearchError> {
        let id: CollectionId = store.resolve_collection(id_or_name)?;
        Ok(id.to_u128())
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

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SearchError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(index_err)?;
    file.write_all(bytes).map_err(index_err)?;
    file.sync_all().map_err(index_err)?;
    std::fs::rename(&tmp, path).map_err(index_err)
}

/// Splits text into chunks of about [`CHUNK_CHARS`] characters at paragraph, sentence or
/// word boundaries. Returns (start char offset, chunk). Empty text is one empty chunk.
pub fn chunks(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while rest.chars().count() > CHUNK_CHARS {
        let limit = rest
            .char_indices()
            .nth(CHUNK_CHARS)
            .map_or(rest.len(), |(i, _)| i);
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

fn query_terms(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 1)
        .map(str::to_owned)
        .collect()
}

fn best_chunk(pieces: &[(usize, &str)], terms: &[String]) -> u32 {
    let mut best = (0, 0);
    for (i, (_, text)) in pieces.iter().enumerate() {
        let lower = text.to_lowercase();
        let count = terms.iter().filter(|t| lower.contains(t.as_str())).count();
        if count > best.1 {
            best = (i, count);
        }
    }
    best.0 as u32
}

/// About 200 characters of `text` around the first query term, terms wrapped in `**`.
pub fn snippet(text: &str, terms: &[String]) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let matches = |w: &str| {
        let lower = w.to_lowercase();
        terms.iter().any(|t| lower.contains(t.as_str()))
    };
    let first = words.iter().position(|w| matches(w)).unwrap_or(0);
    let start = first.saturating_sub(8);
    let mut out = String::new();
    if start > 0 {
        out.push('…');
    }
    let mut end = start;
    for word in &words[start..] {
        if out.chars().count() > 200 {
            break;
        }
        if !out.is_empty() && !out.ends_with('…') {
            out.push(' ');
        }
        if matches(word) {
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
    fn snippets_highlight_terms() {
        let s = snippet("the quick brown fox jumps", &["fox".into()]);
        assert_eq!(s, "the quick brown **fox** jumps");
    }
}
