//! The vector index: sealed HNSW segments (our patched instant-distance, [`super::hnsw`])
//! plus an exact segment of recent writes.
//!
//! A sealed graph is built in one batch and never rebuilt in place. New vectors go to the
//! `recent` segment, searched exactly; once it holds [`SEAL_AT`] vectors it is built into
//! a sealed HNSW segment, merged with the newest sealed segments that are no larger than
//! what the seal gathered so far (a binary counter: a vector is rebuilt about log₂(n /
//! `SEAL_AT`) times in all, and there are about as many segments). Edits never touch a
//! sealed segment: every memory has a live version, each vector is keyed by (memory,
//! version, chunk), and a vector whose version is not the live one is a tombstone, skipped
//! by search and dropped when segments are merged. A removed memory's vectors are also
//! erased where they lie (zeroed), so its data leaves the files at the next save.
//!
//! A sealed segment keeps its vectors as 8-bit codes only (a quarter of the floats; a merge
//! builds its graph from those codes as they are). Each sealed
//! segment is saved once, in its own file; the periodic save writes only the small part
//! (the recent vectors, which versions are live, the list of segments).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::IdMap;
use super::hnsw::{Hnsw, HnswV3, Params, Scratch};
pub use super::kernel::dot;
use super::kernel::{Blocks, Codes, set_pairs};

/// Recent vectors searched exactly before they are sealed into an HNSW segment.
pub const SEAL_AT: usize = 4096;
/// A compaction rebuilds at most this many vectors per vector sealed since the last one,
/// so a trickle of writes never rebuilds a large segment again and again.
const COMPACT_COST: usize = 8;
/// The recent segment's size from which it is sealed once writes have stopped (an exact
/// scan of fewer costs a search little).
pub const QUIET_SEAL_AT: usize = 256;
/// The recent segment's size from which it is sealed while writes stream in: larger than
/// usual, so graph builds (and merges) competing with the writes stay few.
pub const WRITING_SEAL_AT: usize = 2 * SEAL_AT;
/// With background sealing, the recent segment's size at which the index takes no more
/// vectors until the sealer has caught up (the vectors lag instead; words do not). Every
/// search scans its codes whole (8 MB at 16,384 vectors of 512 dimensions, read from
/// memory: a large part of a search's cost at this size, and most of it at twice this) and
/// it is saved whole every few seconds, so it stays small: twice the size at which a seal
/// is due while writing, so vectors keep coming while that seal's graph is built.
pub const RECENT_CAP: usize = 2 * WRITING_SEAL_AT;
// A seal must become due before the cap stops the vectors, in every state of the sealer
// (at rest, caught up, while writing); otherwise the vectors would wait for ever.
const _: () = assert!(RECENT_CAP > WRITING_SEAL_AT && WRITING_SEAL_AT >= SEAL_AT);
/// A sealed segment of at most this many vectors also keeps its codes in [`Blocks`] (as
/// the recent segment does), and a search scans them instead of walking its graph when
/// that costs less (see [`WALK_COST_PER_EF`]): a graph walk with `ef` 256 costs about as
/// much as a scan of 10,000 rows of a dense query, or of 23,000 of a two-word query of the
/// built-in embedder (14 of its 256 pairs of dimensions set), and the scan is exact.
const SCAN_ROWS: usize = RECENT_CAP;
/// What a graph walk costs for each of its `ef`, in the units of [`Blocks::scan_cost`]: a
/// walk with `ef` 256 took 80–140 µs on graphs of 2,048–8,192 vectors, dense or of the
/// built-in embedder (more on larger graphs), and a scan 31 units a nanosecond.
const WALK_COST_PER_EF: usize = 12_000;
/// Format version of the persisted index (3: each sealed segment in its own file; 4: a
/// sealed segment keeps codes, not floats). An index of format 3 is read and converted.
pub const FORMAT: u32 = 4;

/// A unit-length vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vector(Vec<f32>);

impl Vector {
    /// Wraps a unit-length vector.
    pub fn new(values: Vec<f32>) -> Vector {
        Vector(values)
    }
}

impl Vector {
    /// Cosine distance of unit vectors: `1 - a·b`.
    pub fn distance(&self, other: &[f32]) -> f32 {
        1.0 - dot(&self.0, other)
    }

    /// The values.
    pub fn values(&self) -> &[f32] {
        &self.0
    }
}

/// A sealed segment: an HNSW graph and the key of each of its nodes.
#[derive(Clone, Serialize, Deserialize)]
pub struct Segment {
    graph: Hnsw,
    keys: Vec<VectorKey>,
    /// The graph's codes laid out for a scan, in a segment of at most [`SCAN_ROWS`]
    /// vectors (made again from the codes when the segment is read).
    #[serde(skip)]
    blocks: Option<Blocks>,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("vectors", &self.keys.len())
            .finish()
    }
}

/// A sealed segment as format 3 stored it.
#[derive(Deserialize)]
struct SegmentV3 {
    graph: HnswV3,
    keys: Vec<VectorKey>,
}

impl Segment {
    fn new(graph: Hnsw, keys: Vec<VectorKey>) -> Segment {
        let blocks = (graph.len() <= SCAN_ROWS).then(|| Blocks::of(graph.codes()));
        Segment {
            graph,
            keys,
            blocks,
        }
    }

    /// Erases node `node`'s vector, in the graph and in the blocks.
    fn erase(&mut self, node: u32) {
        self.graph.erase(node);
        if let Some(blocks) = &mut self.blocks {
            blocks.erase(node);
        }
    }

    /// The `ef` nodes nearest to `query` into `out` as (distance, node), replacing what it
    /// held: scanned when the segment keeps its blocks and a scan costs less than a walk
    /// for this query (which sets `pairs` pairs of dimensions), otherwise found by a walk
    /// of the graph. None for a query of another dimension.
    fn nearest_into(
        &self,
        query: &[f32],
        pairs: usize,
        ef: usize,
        scratch: &mut Scratch,
        out: &mut Vec<(f32, u32)>,
    ) {
        match &self.blocks {
            _ if query.len() != self.graph.dimension() => out.clear(),
            Some(blocks) if blocks.scan_cost(pairs) <= ef * WALK_COST_PER_EF => {
                blocks.nearest_into(query, ef, out);
            }
            _ => {
                out.clear();
                out.extend(self.graph.search(query, ef, ef, scratch));
            }
        }
    }

    /// Whether the graph is whole and its vectors are of `dimension`.
    fn is_valid(&self, dimension: usize) -> bool {
        self.keys.len() == self.graph.len()
            && self.graph.dimension() == dimension
            && self.graph.validate().is_ok()
    }

    /// A segment from its file's bytes, as the index of `format` wrote it (a format-3
    /// segment is coded as it is read; a save writes it again as format 4).
    fn decode(bytes: &[u8], format: u32) -> Option<Segment> {
        let read: Option<Segment> = postcard::from_bytes(bytes).ok();
        let (graph, keys) = match read {
            Some(segment) => (segment.graph, segment.keys),
            None => {
                let old: SegmentV3 = (format == 3).then(|| postcard::from_bytes(bytes).ok())??;
                (old.graph.into(), old.keys)
            }
        };
        Some(Segment::new(graph, keys))
    }
}

/// A sealed segment in the index: its number (its file's name) and whether that file
/// holds it as it is.
struct Sealed {
    id: u64,
    segment: Arc<Segment>,
    saved: bool,
}

/// A search's working memory, reused from search to search: the visited stamps of its
/// graph walks (a `u32` per node of the largest graph) and its distances to every vector
/// of a scan.
#[derive(Default)]
struct Workspace {
    scratch: Scratch,
    scan: Vec<(f32, u32)>,
}

/// The workspaces between searches. Kept here rather than one per thread: a server runs
/// searches on whichever of its dozens of pool threads is free, and each thread's own
/// workspace (about a megabyte at 100,000 memories) stayed with it. So there are as many
/// as searches ran at once, and at most [`SPARE_MAX`] are kept.
static SPARE: Mutex<Vec<Workspace>> = Mutex::new(Vec::new());

/// The most workspaces kept between searches.
const SPARE_MAX: usize = 8;

/// Runs `work` with a workspace from the spares (or a new one), then keeps it for the next.
fn with_workspace<T>(work: impl FnOnce(&mut Workspace) -> T) -> T {
    let spare = || SPARE.lock().unwrap_or_else(PoisonError::into_inner);
    let mut workspace = spare().pop().unwrap_or_default();
    let out = work(&mut workspace);
    let mut kept = spare();
    if kept.len() < SPARE_MAX {
        kept.push(workspace);
    }
    out
}

/// Which vector a hit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VectorKey {
    /// The memory id.
    pub memory: u128,
    /// The memory's version when the vector was added.
    pub version: u32,
    /// The chunk of the memory's text.
    pub chunk: u32,
}

/// A hit: the best chunk of a memory and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VectorHit {
    /// The memory id.
    pub memory: u128,
    /// The best-matching chunk.
    pub chunk: u32,
    /// Cosine similarity, higher is closer.
    pub similarity: f32,
}

/// Vectors with their 8-bit codes, coded before the index is held (coding them is most of
/// what putting vectors in costs). [`VectorIndex::upsert_coded`] takes them in order.
#[derive(Debug)]
pub struct Coded {
    /// The vectors not taken yet: the last of `codes`' rows are theirs.
    vectors: std::vec::IntoIter<Vec<f32>>,
    codes: Codes,
}

impl Coded {
    /// Codes `vectors` (all of one dimension).
    pub fn new(vectors: Vec<Vec<f32>>) -> Coded {
        let dim = vectors.first().map_or(0, Vec::len);
        let mut codes = Codes::of(&[], dim);
        for values in &vectors {
            codes.push(values);
        }
        Coded {
            vectors: vectors.into_iter(),
            codes,
        }
    }

    /// How many vectors are left.
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    /// Whether none is left.
    pub fn is_empty(&self) -> bool {
        self.vectors.len() == 0
    }

    /// The vectors from the `at`-th left on, taken out.
    pub fn split_off(&mut self, at: usize) -> Coded {
        let next = self.next_row();
        let mut left: Vec<Vec<f32>> = std::mem::take(&mut self.vectors).collect();
        let at = at.min(left.len());
        let rest = left.split_off(at);
        let codes = self.codes.split_off(next + at);
        self.vectors = left.into_iter();
        Coded {
            vectors: rest.into_iter(),
            codes,
        }
    }

    /// The row of `codes` that is the next vector's.
    fn next_row(&self) -> usize {
        self.codes.len() - self.vectors.len()
    }
}

/// The vector index of one embedding model.
pub struct VectorIndex {
    model: String,
    dimension: usize,
    /// Oldest (largest) first.
    sealed: Vec<Sealed>,
    recent: Vec<(VectorKey, Vector)>,
    /// The recent vectors' 8-bit codes, row for row, in blocks for a scan: a search scans
    /// these (a quarter of the floats' bytes, less for a sparse query) and measures only
    /// the nearest exactly.
    recent_codes: Blocks,
    live: IdMap<u32>,
    ef_search: usize,
    /// The number the next sealed segment gets.
    next_segment: u64,
    /// While false (during a bulk load), `upsert` does not seal; the caller seals once.
    auto_seal: bool,
    /// Whether sealing is left to a background thread ([`VectorIndex::seal_job`]); `upsert`
    /// then never seals by itself.
    defer_seal: bool,
    /// Vectors sealed since the last compaction ([`VectorIndex::compact_job`]); as many as
    /// there are vectors when the index is read back, so it may compact once.
    sealed_since_compaction: usize,
    /// Changes whenever rows leave the recent segment (a remove, a seal), and differs
    /// between indexes: a seal whose job saw the same installs without looking up what it
    /// took or what is gone (see [`VectorIndex::install`]).
    generation: u64,
}

/// A generation no index of this process has had yet (see `VectorIndex::generation`).
fn fresh_generation() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// What a save writes besides the segments: borrowed from the index.
#[derive(Serialize)]
pub struct ManifestRef<'a> {
    format: u32,
    model: &'a str,
    dimension: usize,
    recent: &'a [(VectorKey, Vector)],
    live: &'a IdMap<u32>,
    ef_search: usize,
    segments: Vec<u64>,
    next_segment: u64,
}

impl std::fmt::Debug for ManifestRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestRef")
            .field("segments", &self.segments)
            .field("recent", &self.recent.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Manifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manifest")
            .field("segments", &self.segments)
            .field("recent", &self.recent.len())
            .finish_non_exhaustive()
    }
}

impl ManifestRef<'_> {
    /// The sealed segments it lists, by number.
    pub fn segments(&self) -> &[u64] {
        &self.segments
    }
}

/// A saved [`ManifestRef`], read back.
#[derive(Deserialize)]
pub struct Manifest {
    format: u32,
    model: String,
    dimension: usize,
    recent: Vec<(VectorKey, Vector)>,
    live: IdMap<u32>,
    ef_search: usize,
    segments: Vec<u64>,
    next_segment: u64,
}

impl Manifest {
    /// The sealed segments it lists, by number.
    pub fn segments(&self) -> &[u64] {
        &self.segments
    }
}

/// A seal to build off the index's lock: the vectors to build into a graph.
pub struct SealJob {
    /// The recent segment's live vectors.
    entries: Vec<(VectorKey, Vector)>,
    /// The recent keys the new segment replaces (live or stale): the oldest rows.
    taken: HashSet<VectorKey>,
    /// How many recent rows it took (the oldest), and the index's generation then.
    took: (usize, u64),
    /// The sealed segments it merges (by number), shared (their vectors are read while
    /// building), with their nodes that were live.
    merging: Vec<(Arc<Segment>, Vec<u32>)>,
    merged: Vec<u64>,
    dimension: usize,
    /// Whether it is a compaction.
    compaction: bool,
}

impl std::fmt::Debug for SealJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealJob")
            .field("vectors", &self.len())
            .field("merged", &self.merged.len())
            .finish()
    }
}

/// What an install replaced: the graphs it merged and the recent vectors it took.
/// Freeing them takes milliseconds (a graph's megabytes, a vector's allocation each):
/// drop this once the index is no longer held, so searches need not wait for it.
#[must_use = "dropping it frees what the install replaced: do it without holding the index"]
pub struct Retired {
    graphs: Vec<Arc<Segment>>,
    /// The recent vectors it took, when it took them as a block.
    rows: Vec<(VectorKey, Vector)>,
}

impl std::fmt::Debug for Retired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retired")
            .field("graphs", &self.graphs.len())
            .field("rows", &self.rows.len())
            .finish()
    }
}

impl Retired {
    /// How many graphs it holds.
    pub fn len(&self) -> usize {
        self.graphs.len()
    }

    /// Whether it holds none (a seal that merged nothing).
    pub fn is_empty(&self) -> bool {
        self.graphs.is_empty()
    }
}

/// A built [`SealJob`], ready for [`VectorIndex::install`].
pub struct BuiltSeal {
    segment: Option<Segment>,
    taken: HashSet<VectorKey>,
    took: (usize, u64),
    merged: Vec<u64>,
    compaction: bool,
}

impl std::fmt::Debug for BuiltSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltSeal")
            .field("merged", &self.merged.len())
            .finish()
    }
}

impl SealJob {
    /// How many vectors it builds into a graph.
    pub fn len(&self) -> usize {
        self.entries.len() + self.merging.iter().map(|(_, n)| n.len()).sum::<usize>()
    }

    /// Whether it builds no graph (everything it took is stale).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds the graph (the slow part: run it without holding the index).
    pub fn build(self) -> BuiltSeal {
        let segment = (!self.is_empty()).then(|| {
            let mut keys: Vec<VectorKey> = self.entries.iter().map(|(k, _)| *k).collect();
            for (segment, nodes) in &self.merging {
                keys.extend(nodes.iter().map(|&i| segment.keys[i as usize]));
            }
            // The recent vectors coded, then the merged graphs' codes as they are.
            let mut codes = Codes::of(&[], self.dimension);
            for (_, vector) in &self.entries {
                codes.push(&vector.0);
            }
            for (segment, nodes) in &self.merging {
                for &i in nodes {
                    codes.push_coded(segment.graph.codes(), i as usize);
                }
            }
            Segment::new(Hnsw::build_coded(codes, Params::default()), keys)
        });
        BuiltSeal {
            segment,
            taken: self.taken,
            took: self.took,
            merged: self.merged,
            compaction: self.compaction,
        }
    }
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("model", &self.model)
            .field("segments", &self.sealed.len())
            .field("recent", &self.recent.len())
            .field("memories", &self.live.len())
            .finish()
    }
}

impl VectorIndex {
    /// An empty index for vectors of `dimension` from `model`.
    pub fn new(model: &str, dimension: usize) -> VectorIndex {
        VectorIndex {
            model: model.to_owned(),
            dimension,
            sealed: Vec::new(),
            recent: Vec::new(),
            recent_codes: Blocks::new(dimension),
            live: IdMap::default(),
            ef_search: 256,
            next_segment: 1,
            auto_seal: true,
            defer_seal: false,
            sealed_since_compaction: 0,
            generation: fresh_generation(),
        }
    }

    /// The index a save wrote, for `model` and `dimension`: `load` reads a sealed
    /// segment's file by number. `None` if it is of another format, model or dimension,
    /// or any segment is missing or damaged (the index is then rebuilt, never searched).
    pub fn from_saved(
        manifest: Manifest,
        model: &str,
        dimension: usize,
        mut load: impl FnMut(u64) -> Option<Vec<u8>>,
    ) -> Option<VectorIndex> {
        if !(3..=FORMAT).contains(&manifest.format)
            || manifest.model != model
            || manifest.dimension != dimension
            || manifest.recent.iter().any(|(_, v)| v.0.len() != dimension)
        {
            return None;
        }
        let mut sealed = Vec::with_capacity(manifest.segments.len());
        for id in manifest.segments {
            let segment =
                Segment::decode(&load(id)?, manifest.format).filter(|s| s.is_valid(dimension))?;
            sealed.push(Sealed {
                id,
                segment: Arc::new(segment),
                saved: manifest.format == FORMAT,
            });
        }
        // Not saved: the vectors outside the oldest graph count as sealed since the last
        // compaction. A restart after a burst of writes may compact once; one after a
        // trickle does not rebuild the oldest graph for it.
        let outside_oldest: usize = sealed.iter().skip(1).map(|s| s.segment.keys.len()).sum();
        let next_segment = sealed
            .iter()
            .map(|s| s.id + 1)
            .max()
            .unwrap_or(1)
            .max(manifest.next_segment);
        Some(VectorIndex {
            model: manifest.model,
            dimension,
            sealed,
            recent_codes: codes_of(&manifest.recent, dimension),
            recent: manifest.recent,
            live: manifest.live,
            ef_search: manifest.ef_search,
            next_segment,
            auto_seal: true,
            defer_seal: false,
            sealed_since_compaction: outside_oldest,
            generation: fresh_generation(),
        })
    }

    /// What a save writes besides the segments.
    pub fn manifest(&self) -> ManifestRef<'_> {
        ManifestRef {
            format: FORMAT,
            model: &self.model,
            dimension: self.dimension,
            recent: &self.recent,
            live: &self.live,
            ef_search: self.ef_search,
            segments: self.sealed.iter().map(|s| s.id).collect(),
            next_segment: self.next_segment,
        }
    }

    /// The sealed segments whose files do not hold them as they are, by number.
    pub fn unsaved(&self) -> Vec<(u64, Arc<Segment>)> {
        self.sealed
            .iter()
            .filter(|s| !s.saved)
            .map(|s| (s.id, s.segment.clone()))
            .collect()
    }

    /// Records that segment `id` was saved as it was when `saved` was taken (a segment
    /// erased from since stays unsaved).
    pub fn mark_saved(&mut self, id: u64, saved: &Arc<Segment>) {
        if let Some(s) = self.sealed.iter_mut().find(|s| s.id == id)
            && Arc::ptr_eq(&s.segment, saved)
        {
            s.saved = true;
        }
    }

    /// Leaves sealing to a background thread that calls [`VectorIndex::seal_job`] and
    /// [`VectorIndex::install`], so writers never wait for a graph to be built.
    pub fn set_deferred_seal(&mut self, on: bool) {
        self.defer_seal = on;
    }

    /// The seal due now, if the recent segment is full: its vectors and those of the
    /// sealed segments it merges with.
    pub fn seal_job(&self) -> Option<SealJob> {
        self.seal_job_at(SEAL_AT)
    }

    /// The seal due once the recent segment holds `at` vectors. While writes stream in, a
    /// larger `at` means fewer graph builds (and merges) competing with them; the recent
    /// segment is searched exactly meanwhile.
    pub fn seal_job_at(&self, at: usize) -> Option<SealJob> {
        if self.recent.len() < at {
            return None;
        }
        Some(self.job())
    }

    /// How many of the newest sealed segments a seal of `gathered` vectors merges: each
    /// no larger than all it gathered before it.
    fn mergeable(&self, mut gathered: usize) -> usize {
        let mut n = 0;
        for s in self.sealed.iter().rev() {
            if s.segment.keys.len() > gathered {
                break;
            }
            gathered += s.segment.keys.len();
            n += 1;
        }
        n
    }

    /// For an index that has stopped changing, with two or more sealed segments: a job that
    /// merges them all, with the recent vectors, into one graph (a search walks each graph
    /// with the same `ef`, so two graphs cost it about twice one). Where that would rebuild
    /// more than [`COMPACT_COST`] vectors per vector sealed since the last compaction, with
    /// three or more segments whose oldest (the largest) is most of the vectors: every one
    /// but that, so a search walks two graphs. `None` if neither is within that cost.
    pub fn compact_job(&self) -> Option<SealJob> {
        if self.sealed.len() < 2 {
            return None;
        }
        let sizes: Vec<usize> = self.sealed.iter().map(|s| s.segment.keys.len()).collect();
        let total: usize = sizes.iter().sum();
        let budget = COMPACT_COST.saturating_mul(self.sealed_since_compaction);
        let merge = if total <= budget {
            sizes.len()
        } else if sizes.len() >= 3 && 2 * sizes[0] >= total && total - sizes[0] <= budget {
            sizes.len() - 1
        } else {
            return None;
        };
        let mut job = self.job_merging(merge);
        job.compaction = true;
        Some(job)
    }

    fn job(&self) -> SealJob {
        self.job_merging(self.mergeable(self.recent.len()))
    }

    /// A seal of the recent vectors that merges the newest `merge` sealed segments.
    fn job_merging(&self, merge: usize) -> SealJob {
        let taken = self.recent.iter().map(|(k, _)| *k).collect();
        let entries: Vec<(VectorKey, Vector)> = self
            .recent
            .iter()
            .filter(|(k, _)| self.is_live(k))
            .cloned()
            .collect();
        let merged = &self.sealed[self.sealed.len() - merge..];
        let merging = merged
            .iter()
            .map(|s| {
                let live = (0..s.segment.keys.len() as u32)
                    .filter(|&i| self.is_live(&s.segment.keys[i as usize]))
                    .collect();
                (s.segment.clone(), live)
            })
            .collect();
        SealJob {
            entries,
            taken,
            took: (self.recent.len(), self.generation),
            merging,
            merged: merged.iter().map(|s| s.id).collect(),
            dimension: self.dimension,
            compaction: false,
        }
    }

    /// Puts a built seal in place and hands back what it replaced (see [`Retired`]);
    /// `None` (and nothing changes) if a segment it merges is gone since its job was
    /// taken. Vectors edited meanwhile are tombstones in the new segment, as in any other;
    /// those of memories removed meanwhile are erased.
    pub fn install(&mut self, built: BuiltSeal) -> Option<Retired> {
        if !built
            .merged
            .iter()
            .all(|id| self.sealed.iter().any(|s| s.id == *id))
        {
            return None;
        }
        // The same generation as the job's (the usual case): rows were only added since,
        // so what it took is the oldest recent rows, and no memory was removed, so every
        // one of the new segment is live. Otherwise, each is looked up.
        let (taken, generation) = built.took;
        let unchanged = generation == self.generation && taken <= self.recent.len();
        let rows = if unchanged {
            self.recent_codes.retain_rows(|row| row >= taken);
            self.generation = fresh_generation();
            self.recent.drain(..taken).collect()
        } else {
            self.retain_recent(|k| !built.taken.contains(k));
            Vec::new()
        };
        let (merged, kept) = std::mem::take(&mut self.sealed)
            .into_iter()
            .partition(|s| built.merged.contains(&s.id));
        self.sealed = kept;
        let retired = Retired {
            graphs: merged.into_iter().map(|s: Sealed| s.segment).collect(),
            rows,
        };
        if built.compaction {
            self.sealed_since_compaction = 0;
        } else {
            self.sealed_since_compaction += built.taken.len();
        }
        if let Some(mut segment) = built.segment {
            if !unchanged {
                let live = &self.live;
                let gone: Vec<u32> = (0..segment.keys.len() as u32)
                    .filter(|&i| !live.contains_key(&segment.keys[i as usize].memory))
                    .collect();
                for i in gone {
                    segment.erase(i);
                }
            }
            self.push_sealed(segment);
        }
        Some(retired)
    }

    fn push_sealed(&mut self, segment: Segment) {
        let id = self.next_segment;
        self.next_segment += 1;
        self.sealed.push(Sealed {
            id,
            segment: Arc::new(segment),
            saved: false,
        });
    }

    /// Starts (`false`) or ends (`true`) a bulk load: without automatic sealing, a rebuild
    /// builds one HNSW segment once instead of sealing and merging as it goes.
    pub fn set_auto_seal(&mut self, on: bool) {
        self.auto_seal = on;
        if on && self.recent.len() >= SEAL_AT {
            self.seal();
        }
    }

    /// The model whose vectors this index holds.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Whether the recent segment is at [`RECENT_CAP`] with background sealing: vectors
    /// wait until the sealer has caught up.
    pub fn is_full(&self) -> bool {
        self.defer_seal && self.recent.len() >= RECENT_CAP
    }

    /// How many memories have vectors.
    pub fn memories(&self) -> usize {
        self.live.len()
    }

    /// Vectors stored, live or stale, and sealed segments.
    pub fn sizes(&self) -> (usize, usize) {
        let stored = self.recent.len()
            + self
                .sealed
                .iter()
                .map(|s| s.segment.keys.len())
                .sum::<usize>();
        (stored, self.sealed.len())
    }

    /// Replaces the vectors of `memory` (one per chunk).
    pub fn upsert(&mut self, memory: u128, chunks: Vec<Vec<f32>>) {
        let count = chunks.len();
        self.upsert_coded(memory, count, &mut Coded::new(chunks));
    }

    /// Replaces the vectors of `memory` with the next `chunks` of `coded` (fewer if it
    /// holds fewer).
    pub fn upsert_coded(&mut self, memory: u128, chunks: usize, coded: &mut Coded) {
        let version = self.live.get(&memory).map_or(0, |v| v.wrapping_add(1));
        self.live.insert(memory, version);
        for chunk in 0..chunks {
            let row = coded.next_row();
            let Some(values) = coded.vectors.next() else {
                break;
            };
            debug_assert_eq!(values.len(), self.dimension);
            let key = VectorKey {
                memory,
                version,
                chunk: chunk as u32,
            };
            self.recent_codes.push_coded(&coded.codes, row);
            self.recent.push((key, Vector(values)));
        }
        if self.auto_seal && !self.defer_seal && self.recent.len() >= SEAL_AT {
            self.seal();
        }
    }

    /// Removes `memory`'s vectors, and erases them from the sealed segments (the segments
    /// that held them are saved again).
    pub fn remove(&mut self, memory: u128) {
        if self.live.remove(&memory).is_none() {
            return;
        }
        self.retain_recent(|key| key.memory != memory);
        for s in &mut self.sealed {
            let nodes: Vec<u32> = (0..s.segment.keys.len() as u32)
                .filter(|&i| s.segment.keys[i as usize].memory == memory)
                .collect();
            if nodes.is_empty() {
                continue;
            }
            let segment = Arc::make_mut(&mut s.segment);
            for i in nodes {
                segment.erase(i);
            }
            s.saved = false;
        }
    }

    /// Keeps the recent vectors (and their codes) whose keys `keep` accepts.
    fn retain_recent(&mut self, keep: impl Fn(&VectorKey) -> bool) {
        self.generation = fresh_generation();
        let recent = &self.recent;
        self.recent_codes.retain_rows(|row| keep(&recent[row].0));
        self.recent.retain(|(key, _)| keep(key));
    }

    fn is_live(&self, key: &VectorKey) -> bool {
        self.live.get(&key.memory) == Some(&key.version)
    }

    /// Builds the recent vectors into a sealed HNSW segment, merged as [`VectorIndex::job`]
    /// says, here and now.
    pub fn seal(&mut self) {
        let built = self.job().build();
        drop(self.install(built));
    }

    /// The `k` memories nearest to `query`, best chunk per memory, for memories `allow`
    /// accepts. With `exact`, every stored vector is compared (for selective filters and
    /// small indexes); otherwise sealed segments are searched through their HNSW graphs.
    /// A vector's similarity is multiplied by `weight(memory, chunk)` (between 0 and 1)
    /// before the best chunk is chosen.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        exact: bool,
        allow: &dyn Fn(u128) -> bool,
        weight: &dyn Fn(u128, u32) -> f32,
    ) -> Vec<VectorHit> {
        self.search_offering(query, k, exact, allow, weight, false)
    }

    /// [`VectorIndex::search`]; with `every`, every vector found is offered (to check that
    /// stopping early changes nothing).
    fn search_offering(
        &self,
        query: &[f32],
        k: usize,
        exact: bool,
        allow: &dyn Fn(u128) -> bool,
        weight: &dyn Fn(u128, u32) -> f32,
        every: bool,
    ) -> Vec<VectorHit> {
        if k == 0 {
            return Vec::new();
        }
        let mut best: IdMap<VectorHit> = IdMap::default();
        // Offers a vector; returns its similarity if it is the first of its memory taken.
        let mut offer = |key: &VectorKey, distance: f32| {
            if !self.is_live(key) || !allow(key.memory) {
                return None;
            }
            let weight = weight(key.memory, key.chunk);
            debug_assert!((0.0..=1.0).contains(&weight), "weight {weight}");
            let similarity = (1.0 - distance) * weight;
            let mut first = false;
            let entry = best.entry(key.memory).or_insert_with(|| {
                first = true;
                VectorHit {
                    memory: key.memory,
                    chunk: key.chunk,
                    similarity: f32::NEG_INFINITY,
                }
            });
            if similarity > entry.similarity {
                entry.similarity = similarity;
                entry.chunk = key.chunk;
            }
            first.then_some(similarity)
        };
        let ef = self.ef_search.max(k);
        with_workspace(|Workspace { scratch, scan }| {
            if exact {
                for (key, point) in &self.recent {
                    offer(key, point.distance(query));
                }
                for segment in self.sealed.iter().map(|s| &s.segment) {
                    segment.graph.scan_into(query, scan);
                    for &(distance, node) in scan.iter() {
                        offer(&segment.keys[node as usize], distance);
                    }
                }
                return;
            }
            // The recent vectors: when they are few, each by its exact distance; otherwise
            // through their codes, as a sealed segment's graph measures, only the nearest
            // `ef` (as a graph would find them). Each sealed segment: `ef` results rather
            // than `k`, so chunks of one memory, stale versions and filtered-out memories
            // leave enough behind.
            let mut found: Vec<(f32, &VectorKey)> =
                Vec::with_capacity(ef * (1 + self.sealed.len()));
            if self.recent.len() <= ef {
                found.extend(
                    self.recent
                        .iter()
                        .map(|(key, point)| (point.distance(query), key)),
                );
            } else {
                self.recent_codes.nearest_into(query, ef, scan);
                found.extend(
                    scan.iter()
                        .map(|&(distance, i)| (distance, &self.recent[i as usize].0)),
                );
            }
            let pairs = set_pairs(query);
            for segment in self.sealed.iter().map(|s| &s.segment) {
                segment.nearest_into(query, pairs, ef, scratch, scan);
                found.extend(
                    scan.iter()
                        .map(|&(distance, node)| (distance, &segment.keys[node as usize])),
                );
            }
            // Offered nearest first, until none left can change the best `k`: a vector
            // at distance `d` reaches a similarity of at most `max(1 - d, 0)` (a weight is
            // at most 1), and there are `k` memories above that already. So most are never
            // looked up.
            // (Ties in the order of the keys: which of two chunks as near is reported does
            // not depend on the order the parts were searched in.)
            found.sort_unstable_by(|(d, a), (e, b)| {
                d.total_cmp(e)
                    .then((a.memory, a.version, a.chunk).cmp(&(b.memory, b.version, b.chunk)))
            });
            // The similarities the best `k` memories had when first taken (a memory's only
            // grows after), least on top.
            let mut taken: BinaryHeap<Reverse<Similarity>> = BinaryHeap::with_capacity(k + 1);
            for (distance, key) in found {
                let reach = (1.0 - distance).max(0.0);
                if !every && taken.len() == k && taken.peek().is_some_and(|least| reach < least.0.0)
                {
                    break;
                }
                if let Some(similarity) = offer(key, distance) {
                    taken.push(Reverse(Similarity(similarity)));
                    if taken.len() > k {
                        taken.pop();
                    }
                }
            }
        });
        let mut hits: Vec<VectorHit> = best.into_values().collect();
        hits.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then(a.memory.cmp(&b.memory))
        });
        hits.truncate(k);
        hits
    }
}

/// A similarity, ordered as `f32::total_cmp` orders it.
#[derive(Debug, Clone, Copy)]
struct Similarity(f32);

impl PartialEq for Similarity {
    fn eq(&self, other: &Similarity) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}

impl Eq for Similarity {}

impl PartialOrd for Similarity {
    fn partial_cmp(&self, other: &Similarity) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Similarity {
    fn cmp(&self, other: &Similarity) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The codes of `recent`'s vectors, row for row.
fn codes_of(recent: &[(VectorKey, Vector)], dimension: usize) -> Blocks {
    let mut codes = Codes::of(&[], dimension);
    for (_, vector) in recent {
        codes.push(&vector.0);
    }
    Blocks::of(&codes)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::embed::normalize;

    /// A pseudo-random unit vector (xorshift), for the index tests.
    pub(crate) fn random_unit(seed: &mut u64, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                (*seed % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        normalize(&mut v);
        v
    }

    #[test]
    fn searches_on_many_threads_at_once_keep_only_a_few_workspaces() {
        // Sixteen searches at once each get a workspace of their own; afterwards at most
        // `SPARE_MAX` are kept, not one per thread that searched.
        let together = std::sync::Barrier::new(16);
        std::thread::scope(|scope| {
            for _ in 0..16 {
                scope.spawn(|| {
                    with_workspace(|workspace| {
                        workspace.scan.resize(1000, (0.0, 0));
                        together.wait();
                    })
                });
            }
        });
        let kept = SPARE.lock().unwrap_or_else(PoisonError::into_inner).len();
        assert!(kept <= SPARE_MAX, "{kept} kept");
    }

    #[test]
    fn offering_the_nearest_first_and_stopping_early_finds_what_offering_all_finds() {
        // Few dimensions, so many vectors point away from a query (negative similarities),
        // memories of several chunks weighted down after the first, removed memories and a
        // filter: the best `k` are the same whether every vector found is offered or not.
        let mut seed = 43;
        let dim = 6;
        let mut index = VectorIndex::new("test", dim);
        index.set_deferred_seal(true);
        let mut memory = 0u128;
        for round in 0..3 {
            for _ in 0..300 {
                let chunks = 1 + (memory % 3) as usize;
                let vectors = (0..chunks).map(|_| random_unit(&mut seed, dim)).collect();
                index.upsert(memory, vectors);
                memory += 1;
            }
            if round < 2 {
                let job = index.seal_job_at(1).expect("a seal is due");
                assert!(index.install(job.build()).is_some());
            }
        }
        for m in (0..memory).step_by(7) {
            index.remove(m);
        }
        assert!(index.sizes().1 >= 1 && index.recent.len() > index.ef_search);
        let allow = |m: u128| m % 5 != 1;
        let weight = |m: u128, chunk: u32| {
            if chunk > 0 {
                0.3 + (m % 4) as f32 * 0.2
            } else {
                1.0
            }
        };
        for k in [1, 10, 50, 400, 2000] {
            for _ in 0..10 {
                let query = random_unit(&mut seed, dim);
                let early = index.search_offering(&query, k, false, &allow, &weight, false);
                let every = index.search_offering(&query, k, false, &allow, &weight, true);
                assert_eq!(early, every, "k {k}");
            }
        }
    }

    #[test]
    fn dot_matches_naive() {
        let mut seed = 7;
        for dim in [1, 7, 8, 9, 384, 385] {
            let a = random_unit(&mut seed, dim);
            let b = random_unit(&mut seed, dim);
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-5);
        }
    }

    #[test]
    fn background_seals_install_only_over_the_state_they_were_taken_from() {
        let mut seed = 5;
        let mut index = VectorIndex::new("test", 8);
        index.set_deferred_seal(true);
        for m in 0..SEAL_AT as u128 {
            index.upsert(m, vec![random_unit(&mut seed, 8)]);
        }
        assert_eq!(
            index.sizes(),
            (SEAL_AT, 0),
            "deferred: nothing sealed inline"
        );
        let job = index.seal_job().expect("a seal is due");
        // Meanwhile: memory 0 is deleted, memory 1 edited, memory N added.
        index.remove(0);
        let edited = random_unit(&mut seed, 8);
        index.upsert(1, vec![edited.clone()]);
        let added = random_unit(&mut seed, 8);
        index.upsert(SEAL_AT as u128, vec![added.clone()]);
        assert!(index.install(job.build()).is_some());
        let (stored, segments) = index.sizes();
        assert_eq!(segments, 1);
        // Sealed: all that was live when the job was taken (0 and 1 are now tombstones);
        // recent: the edit and the add.
        assert_eq!(stored, SEAL_AT + 2);
        for exact in [true, false] {
            let hits = index.search(&edited, 3, exact, &|_| true, &|_, _| 1.0);
            assert_eq!(hits[0].memory, 1);
            assert!(hits[0].similarity > 0.999);
            assert!(
                index.search(&added, 1, exact, &|_| true, &|_, _| 1.0)[0].memory == SEAL_AT as u128
            );
            assert!(
                index
                    .search(&added, 50, exact, &|_| true, &|_, _| 1.0)
                    .iter()
                    .all(|h| h.memory != 0)
            );
        }
        // A job whose segment was merged meanwhile is stale and is refused.
        for m in 0..SEAL_AT as u128 {
            index.upsert(10_000 + m, vec![random_unit(&mut seed, 8)]);
        }
        let job = index.seal_job().expect("due again");
        assert_eq!(
            job.merged.len(),
            1,
            "the sealed segment is no larger: merged"
        );
        index.seal();
        assert!(index.install(job.build()).is_none());
        assert_eq!(index.sizes().1, 1);
    }

    #[test]
    fn seals_merge_like_a_binary_counter() {
        let mut seed = 9;
        let mut index = VectorIndex::new("test", 4);
        let mut sizes = Vec::new();
        for seal in 1..=7u128 {
            for m in 0..SEAL_AT as u128 {
                index.upsert(seal * 100_000 + m, vec![random_unit(&mut seed, 4)]);
            }
            sizes.push(
                index
                    .sealed
                    .iter()
                    .map(|s| s.segment.keys.len() / SEAL_AT)
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(
            sizes,
            [
                vec![1],
                vec![2],
                vec![2, 1],
                vec![4],
                vec![4, 1],
                vec![4, 2],
                vec![4, 2, 1]
            ]
        );
        assert_eq!(index.memories(), 7 * SEAL_AT);
    }

    #[test]
    fn a_saved_index_reads_back_from_its_manifest_and_segment_files() {
        let mut seed = 11;
        let mut index = VectorIndex::new("test", 8);
        let mut probes = Vec::new();
        for m in 0..(SEAL_AT + 10) as u128 {
            let v = random_unit(&mut seed, 8);
            if m % 1000 == 0 {
                probes.push((m, v.clone()));
            }
            index.upsert(m, vec![v]);
        }
        index.remove(2000);
        assert_eq!(index.sizes(), (SEAL_AT + 10, 1));
        let manifest = postcard::to_allocvec(&index.manifest()).expect("manifest");
        let files: HashMap<u64, Vec<u8>> = index
            .unsaved()
            .into_iter()
            .map(|(id, s)| (id, postcard::to_allocvec(&*s).expect("segment")))
            .collect();
        let read = |files: &HashMap<u64, Vec<u8>>| {
            VectorIndex::from_saved(
                postcard::from_bytes(&manifest).expect("manifest back"),
                "test",
                8,
                |id| files.get(&id).cloned(),
            )
        };
        let back = read(&files).expect("reads back");
        assert_eq!(back.sizes(), index.sizes());
        // A small segment's blocks are not in its file: they are made again from its codes.
        for (sealed, read) in index.sealed.iter().zip(&back.sealed) {
            let blocks = |s: &Sealed| s.segment.blocks.as_ref().map(|b| b.scan(&probes[1].1));
            assert_eq!(
                blocks(read).expect("blocks read back"),
                blocks(sealed).expect("blocks")
            );
        }
        assert_eq!(back.memories(), index.memories());
        assert!(back.unsaved().is_empty(), "what was read is saved");
        for (m, v) in &probes {
            let hits = back.search(v, 1, false, &|_| true, &|_, _| 1.0);
            if *m == 2000 {
                assert_ne!(hits[0].memory, 2000);
            } else {
                assert_eq!(hits[0].memory, *m);
            }
        }
        // Another model, or a missing or damaged segment: nothing is read.
        assert!(
            VectorIndex::from_saved(
                postcard::from_bytes(&manifest).expect("manifest back"),
                "other",
                8,
                |_| None
            )
            .is_none()
        );
        assert!(read(&HashMap::new()).is_none());
        let damaged: HashMap<u64, Vec<u8>> = files
            .iter()
            .map(|(id, bytes)| (*id, bytes[..bytes.len() / 2].to_vec()))
            .collect();
        assert!(read(&damaged).is_none());
    }

    #[test]
    fn a_compaction_makes_one_graph_but_not_for_a_trickle_of_writes() {
        let mut seed = 29;
        let mut index = VectorIndex::new("test", 8);
        index.set_deferred_seal(true);
        let mut probes = Vec::new();
        let mut m = 0u128;
        let mut add = |index: &mut VectorIndex, probes: &mut Vec<(u128, Vec<f32>)>, n: usize| {
            for _ in 0..n {
                let v = random_unit(&mut seed, 8);
                if m.is_multiple_of(97) {
                    probes.push((m, v.clone()));
                }
                index.upsert(m, vec![v]);
                m += 1;
            }
            let job = index.seal_job_at(1).expect("a seal");
            assert!(index.install(job.build()).is_some());
        };
        // Sizes the binary counter leaves apart: 3,000, then 1,000 and 500.
        add(&mut index, &mut probes, 3000);
        add(&mut index, &mut probes, 1000);
        add(&mut index, &mut probes, 500);
        assert_eq!(index.sizes(), (4500, 3));
        let job = index.compact_job().expect("a compaction");
        let retired = index.install(job.build()).expect("installed");
        assert_eq!(
            retired.len(),
            3,
            "the install hands back the graphs it merged"
        );
        assert_eq!(
            index.sizes(),
            (4500, 1),
            "everything sealed since: one graph"
        );
        let found = |index: &VectorIndex, probes: &[(u128, Vec<f32>)]| {
            for (m, v) in probes {
                let hits = index.search(v, 1, false, &|_| true, &|_, _| 1.0);
                assert_eq!(hits[0].memory, *m);
            }
        };
        found(&index, &probes);
        // A few more vectors: rebuilding the 4,500 for them is not worth it.
        add(&mut index, &mut probes, 100);
        assert_eq!(index.sizes(), (4600, 2));
        assert!(index.compact_job().is_none(), "a trickle");
        // Nor for more: three segments whose oldest is most of the vectors merge the two
        // newer ones only.
        add(&mut index, &mut probes, 400);
        add(&mut index, &mut probes, 50);
        assert_eq!(index.sizes(), (5050, 3));
        let job = index
            .compact_job()
            .expect("a compaction of the newer segments");
        assert_eq!(index.install(job.build()).expect("installed").len(), 2);
        assert_eq!(index.sizes(), (5050, 2));
        found(&index, &probes);
        assert!(index.compact_job().is_none(), "nothing new since");
        // Once enough is new, one graph again.
        add(&mut index, &mut probes, 800);
        let job = index.compact_job().expect("a compaction into one");
        assert!(index.install(job.build()).is_some());
        assert_eq!(index.sizes(), (5850, 1));
        found(&index, &probes);
        // Read back, only what lies outside the oldest graph counts as new: a trickle
        // does not rebuild it at every restart, a burst does once.
        let reread = |index: &VectorIndex| {
            let manifest = postcard::to_allocvec(&index.manifest()).expect("manifest");
            let files: HashMap<u64, Vec<u8>> = index
                .sealed
                .iter()
                .map(|s| (s.id, postcard::to_allocvec(&*s.segment).expect("segment")))
                .collect();
            VectorIndex::from_saved(
                postcard::from_bytes(&manifest).expect("manifest back"),
                "test",
                8,
                |id| files.get(&id).cloned(),
            )
            .expect("reads back")
        };
        add(&mut index, &mut probes, 100);
        let mut back = reread(&index);
        assert_eq!(back.sizes(), (5950, 2));
        assert!(back.compact_job().is_none(), "a trickle, read back");
        add(&mut back, &mut probes, 1000);
        let back = reread(&back);
        assert_eq!(back.sizes(), (6950, 2));
        let job = back.compact_job().expect("a burst, read back");
        assert_eq!(job.build().segment.map(|s| s.keys.len()), Some(6950));
    }

    #[test]
    fn recent_vectors_offer_only_their_nearest_and_find_what_an_exact_scan_finds() {
        let mut seed = 23;
        let mut index = VectorIndex::new("test", 16);
        index.set_deferred_seal(true);
        let n = 3 * index.ef_search;
        for m in 0..n as u128 {
            index.upsert(m, vec![random_unit(&mut seed, 16)]);
        }
        // Edits: their old vectors are stale and must never be found.
        for m in 0..50 {
            index.upsert(m, vec![random_unit(&mut seed, 16)]);
        }
        assert_eq!(index.sizes(), (n + 50, 0), "all recent");
        for _ in 0..20 {
            let query = random_unit(&mut seed, 16);
            let near = index.search(&query, 10, false, &|_| true, &|_, _| 1.0);
            let exact = index.search(&query, 20, true, &|_| true, &|_, _| 1.0);
            assert_eq!(near.len(), 10);
            // Measured through the codes: the same memories, rank for rank as near as the
            // codes' error (ties within it may trade places).
            for (rank, hit) in near.iter().enumerate() {
                let same = exact.iter().find(|e| e.memory == hit.memory);
                let same = same.unwrap_or_else(|| panic!("{hit:?} is not among {exact:?}"));
                assert!(
                    (same.similarity - hit.similarity).abs() < 0.01,
                    "{hit:?} {same:?}"
                );
                assert!((exact[rank].similarity - hit.similarity).abs() < 0.01);
            }
        }
    }

    #[test]
    fn vectors_coded_ahead_and_split_go_in_as_vectors_coded_in_place() {
        let mut seed = 31;
        let dim = 16;
        let counts = [2usize, 1, 3, 1];
        let rows: Vec<Vec<f32>> = (0..counts.iter().sum::<usize>())
            .map(|_| random_unit(&mut seed, dim))
            .collect();
        let mut in_place = VectorIndex::new("test", dim);
        let mut ahead = VectorIndex::new("test", dim);
        let mut at = 0;
        for (m, &count) in counts.iter().enumerate() {
            in_place.upsert(m as u128, rows[at..at + count].to_vec());
            at += count;
        }
        // Coded as a batch is (its own vectors, then the rest split off), taken in order.
        let mut first = Coded::new(rows.clone());
        let mut second = first.split_off(counts[0] + counts[1]);
        assert_eq!((first.len(), second.len()), (3, 4));
        ahead.upsert_coded(0, counts[0], &mut first);
        ahead.upsert_coded(1, counts[1], &mut first);
        assert!(first.is_empty());
        ahead.upsert_coded(2, counts[2], &mut second);
        ahead.upsert_coded(3, counts[3], &mut second);
        assert!(second.is_empty());
        assert_eq!(ahead.recent.len(), in_place.recent.len());
        for ((a, va), (b, vb)) in ahead.recent.iter().zip(&in_place.recent) {
            assert_eq!((a, va.values()), (b, vb.values()));
        }
        let query = random_unit(&mut seed, dim);
        assert_eq!(
            ahead.recent_codes.scan(&query),
            in_place.recent_codes.scan(&query)
        );
    }

    /// The keys of the recent rows from row `from` on, in order.
    fn recent_keys(index: &VectorIndex, from: usize) -> Vec<VectorKey> {
        index.recent[from..].iter().map(|(k, _)| *k).collect()
    }

    /// Every recent row's code is its own vector's, within the codes' rounding.
    fn assert_codes_follow_rows(index: &VectorIndex) {
        assert_eq!(index.recent_codes.len(), index.recent.len());
        for (row, (_, vector)) in index.recent.iter().enumerate() {
            let error: f32 = index
                .recent_codes
                .decode(row as u32)
                .iter()
                .zip(&vector.0)
                .map(|(a, b)| (a - b).abs())
                .sum();
            assert!(
                error < 0.05 * index.dimension as f32,
                "row {row} holds another vector's code"
            );
        }
    }

    /// With nothing removed since its job, an install takes the oldest recent rows as a
    /// block, without looking anything up, and keeps the rows written meanwhile in order,
    /// their codes with them. A job taken from another index (one rebuilt meanwhile)
    /// takes none of this one's rows.
    #[test]
    fn a_seal_with_nothing_removed_since_takes_the_oldest_rows_as_a_block() {
        let mut seed = 41;
        let dim = 16;
        let fill = |index: &mut VectorIndex, seed: &mut u64, memories: std::ops::Range<u128>| {
            for m in memories {
                index.upsert(m, vec![random_unit(seed, dim), random_unit(seed, dim)]);
            }
        };
        let mut index = VectorIndex::new("test", dim);
        index.set_deferred_seal(true);
        fill(&mut index, &mut seed, 0..300);
        let job = index.seal_job_at(1).expect("a seal is due");
        // Meanwhile: more memories, and an edit of one the job took.
        fill(&mut index, &mut seed, 300..400);
        let edited = random_unit(&mut seed, dim);
        index.upsert(5, vec![edited.clone()]);
        let written_meanwhile = recent_keys(&index, 600);
        let retired = index.install(job.build()).expect("installed");
        assert_eq!(
            retired.rows.len(),
            600,
            "300 memories of two chunks, as a block"
        );
        let kept = recent_keys(&index, 0);
        assert_eq!(kept, written_meanwhile);
        assert_codes_follow_rows(&index);
        for exact in [true, false] {
            let hits = index.search(&edited, 1, exact, &|_| true, &|_, _| 1.0);
            assert_eq!(hits[0].memory, 5);
            assert!(
                hits[0].similarity > 0.999,
                "the edit, not the sealed old version"
            );
        }
        // Two jobs of the same state, the second installed first: the first then finds
        // rows gone (another generation) and looks each up, taking none written since.
        fill(&mut index, &mut seed, 2_000..2_050);
        let first = index.seal_job_at(1).expect("a seal is due");
        let second = index.seal_job_at(1).expect("a seal is due");
        fill(&mut index, &mut seed, 3_000..3_010);
        let written_since = recent_keys(&index, index.recent.len() - 20);
        assert!(index.install(second.build()).is_some());
        assert!(index.install(first.build()).is_some());
        let kept = recent_keys(&index, 0);
        assert_eq!(kept, written_since);
        assert_codes_follow_rows(&index);
        // A job of this index installed into another one with more recent rows (nothing
        // removed from either): none of the other's rows are its own.
        let mut other = VectorIndex::new("test", dim);
        other.set_deferred_seal(true);
        fill(&mut other, &mut seed, 1_000..1_500);
        let job = index.seal_job_at(1).expect("a seal is due");
        assert!(job.merged.is_empty() && job.taken.len() < other.recent.len());
        let before = recent_keys(&other, 0);
        let retired = other.install(job.build()).expect("installed");
        assert!(retired.rows.is_empty());
        let after = recent_keys(&other, 0);
        assert_eq!(after, before);
        assert_codes_follow_rows(&other);
    }

    #[test]
    fn recent_codes_follow_removes_and_seals_so_searches_find_what_an_exact_scan_finds() {
        let mut seed = 29;
        let dim = 32;
        let mut index = VectorIndex::new("test", dim);
        index.set_deferred_seal(true);
        let n = 4 * index.ef_search as u128;
        for m in 0..n {
            index.upsert(m, vec![random_unit(&mut seed, dim)]);
        }
        // A seal taken now and installed after more writes and removes: the vectors it
        // took leave the recent segment, those written meanwhile stay.
        let job = index.seal_job_at(1).expect("a seal is due");
        for m in n..2 * n {
            index.upsert(m, vec![random_unit(&mut seed, dim)]);
        }
        for m in (0..2 * n).step_by(3) {
            index.remove(m);
        }
        assert!(index.install(job.build()).is_some());
        for m in 2 * n..3 * n {
            index.upsert(
                m,
                vec![random_unit(&mut seed, dim), random_unit(&mut seed, dim)],
            );
        }
        for m in (n..3 * n).step_by(5) {
            index.remove(m);
        }
        assert!(index.recent.len() > index.ef_search);
        assert_codes_follow_rows(&index);
        for _ in 0..20 {
            let query = random_unit(&mut seed, dim);
            let near = index.search(&query, 10, false, &|_| true, &|_, _| 1.0);
            let exact = index.search(&query, 10, true, &|_| true, &|_, _| 1.0);
            let ids = |hits: &[VectorHit]| hits.iter().map(|h| h.memory).collect::<Vec<_>>();
            // The sealed segment is searched through its graph: the recent part must not
            // lose what the exact scan has (but for a tie with the last, within the
            // codes' error: they measure the recent vectors too).
            let recent_ids: HashSet<u128> = index.recent.iter().map(|(k, _)| k.memory).collect();
            let last = near.last().map_or(f32::NEG_INFINITY, |h| h.similarity);
            for hit in exact.iter().filter(|h| recent_ids.contains(&h.memory)) {
                assert!(
                    ids(&near).contains(&hit.memory) || hit.similarity < last + 0.01,
                    "{:?} not in {:?}",
                    hit,
                    near
                );
            }
        }
    }

    #[test]
    fn an_index_of_format_3_is_read_with_its_floats_coded_and_then_saved_again() {
        let mut seed = 17;
        let mut index = VectorIndex::new("test", 8);
        let vectors: Vec<Vec<f32>> = (0..SEAL_AT + 5)
            .map(|_| random_unit(&mut seed, 8))
            .collect();
        for (m, v) in vectors.iter().enumerate() {
            index.upsert(m as u128, vec![v.clone()]);
        }
        let mut manifest: Manifest =
            postcard::from_bytes(&postcard::to_allocvec(&index.manifest()).expect("manifest"))
                .expect("manifest back");
        manifest.format = 3;
        // The files as format 3 wrote them: each graph with its vectors as floats.
        let files: HashMap<u64, Vec<u8>> = index
            .unsaved()
            .into_iter()
            .map(|(id, s)| {
                let floats: Vec<f32> = s
                    .keys
                    .iter()
                    .flat_map(|k| vectors[k.memory as usize].clone())
                    .collect();
                let old = crate::hnsw::tests::as_format_3(&s.graph, floats);
                let bytes = postcard::to_allocvec(&(old, &s.keys)).expect("segment");
                (id, bytes)
            })
            .collect();
        let back = VectorIndex::from_saved(manifest, "test", 8, |id| files.get(&id).cloned())
            .expect("format 3 reads");
        assert_eq!(back.sizes(), index.sizes());
        assert_eq!(
            back.unsaved().len(),
            files.len(),
            "its segments are saved again"
        );
        for (m, v) in vectors.iter().enumerate().step_by(500) {
            let hits = back.search(v, 1, false, &|_| true, &|_, _| 1.0);
            assert_eq!(hits[0].memory, m as u128);
        }
    }

    /// A unit vector of `dim` dimensions with `set` of them not zero, as the built-in
    /// embedder makes them (a few dozen of 512).
    fn sparse_unit(seed: &mut u64, dim: usize, set: usize) -> Vec<f32> {
        let mut v = vec![0.0; dim];
        for value in random_unit(seed, set) {
            // Where it goes: the next of the same xorshift.
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            v[(*seed % dim as u64) as usize] = value;
        }
        normalize(&mut v);
        v
    }

    #[test]
    fn a_small_sealed_segment_is_scanned_and_finds_what_an_exact_search_finds() {
        let mut seed = 41;
        let dim = 512;
        let mut index = VectorIndex::new("test", dim);
        // A narrow walk, so that one would miss some of the nearest: a scan costs less.
        index.ef_search = 16;
        let rows = 1024;
        let stored: Vec<Vec<f32>> = (0..rows).map(|_| sparse_unit(&mut seed, dim, 6)).collect();
        for (m, v) in stored.iter().enumerate() {
            index.upsert(m as u128, vec![v.clone()]);
        }
        index.seal();
        assert_eq!(index.sizes(), (rows, 1), "all sealed");
        let segment = &index.sealed[0].segment;
        let pairs = set_pairs(&stored[0]);
        let blocks = segment
            .blocks
            .as_ref()
            .expect("a small segment keeps blocks");
        assert!(blocks.scan_cost(pairs) <= index.ef_search * WALK_COST_PER_EF);
        for i in 0..50 {
            // Near some stored vectors, far from most.
            let mut query = stored[i * 7].clone();
            for (q, x) in query.iter_mut().zip(sparse_unit(&mut seed, dim, 6)) {
                *q += x;
            }
            normalize(&mut query);
            let near = index.search(&query, 10, false, &|_| true, &|_, _| 1.0);
            let exact = index.search(&query, 10, true, &|_| true, &|_, _| 1.0);
            let found = |hits: &[VectorHit]| {
                hits.iter()
                    .map(|h| (h.memory, h.similarity))
                    .collect::<Vec<_>>()
            };
            // The same codes, the same integers: the same memories, as near.
            assert_eq!(found(&near), found(&exact), "query {i}");
        }
    }

    #[test]
    fn a_removed_memory_is_erased_from_sealed_segments_and_saved_again() {
        let mut seed = 3;
        let mut index = VectorIndex::new("test", 8);
        let kept = random_unit(&mut seed, 8);
        let gone = random_unit(&mut seed, 8);
        index.upsert(1, vec![kept.clone()]);
        index.upsert(2, vec![gone.clone(), kept.clone()]);
        index.seal();
        let saved: Vec<_> = index.unsaved();
        assert_eq!(saved.len(), 1);
        index.mark_saved(saved[0].0, &saved[0].1);
        assert!(index.unsaved().is_empty());
        index.remove(2);
        // Both of its vectors are zero now, the other memory's is as it was.
        let segment = &index.sealed[0].segment;
        let blocks = segment
            .blocks
            .as_ref()
            .expect("a small segment keeps blocks");
        for (i, key) in segment.keys.iter().enumerate() {
            let values = segment.graph.decode(i as u32);
            assert_eq!(
                blocks.decode(i as u32),
                values,
                "the blocks hold what the graph does"
            );
            if key.memory == 2 {
                assert!(values.iter().all(|x| *x == 0.0), "{values:?}");
            } else {
                assert!(dot(&values, &kept) > 0.999, "{values:?} against {kept:?}");
            }
        }
        // The file that held it is to be written again; the old copy is not marked saved.
        let unsaved = index.unsaved();
        assert_eq!(unsaved.len(), 1);
        index.mark_saved(saved[0].0, &saved[0].1);
        assert_eq!(index.unsaved().len(), 1);
        let hits = index.search(&gone, 10, false, &|_| true, &|_, _| 1.0);
        assert_eq!(hits.iter().map(|h| h.memory).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn stale_versions_and_deletes_never_come_back() {
        let mut seed = 1;
        let mut index = VectorIndex::new("test", 16);
        let a = random_unit(&mut seed, 16);
        let b = random_unit(&mut seed, 16);
        index.upsert(1, vec![a.clone()]);
        index.upsert(2, vec![b.clone()]);
        index.seal();
        // Memory 1 is edited to look like b; its old vector (like a) is stale.
        index.upsert(1, vec![b.clone()]);
        for exact in [true, false] {
            let hits = index.search(&a, 10, exact, &|_| true, &|_, _| 1.0);
            assert!(hits.iter().all(|h| h.similarity < 0.999), "{hits:?}");
            assert_eq!(hits.len(), 2);
        }
        index.remove(2);
        for exact in [true, false] {
            let hits = index.search(&b, 10, exact, &|_| true, &|_, _| 1.0);
            assert_eq!(hits.iter().map(|h| h.memory).collect::<Vec<_>>(), [1]);
        }
        let hits = index.search(&b, 10, true, &|m| m != 1, &|_, _| 1.0);
        assert!(hits.is_empty());
    }
}
