//! The vector index: sealed HNSW segments (our patched instant-distance, [`super::hnsw`])
//! plus an exact segment of recent writes.
//!
//! A sealed graph is built in one batch and never changed. New vectors go to the `recent`
//! segment, searched exactly; once it holds [`SEAL_AT`] vectors it is built into a sealed
//! HNSW segment. Edits and deletes never touch a sealed segment:
//! every memory has a live version, each vector is keyed by (memory, version, chunk), and a
//! vector whose version is not the live one is a tombstone, skipped by search and dropped
//! when segments are merged. More than [`MAX_SEGMENTS`] sealed segments are merged into one.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::hnsw::{Hnsw, Params, Scratch};
pub use super::kernel::dot;

/// Recent vectors searched exactly before they are sealed into an HNSW segment.
pub const SEAL_AT: usize = 4096;
/// Sealed segments kept before they are merged into one.
pub const MAX_SEGMENTS: usize = 4;
/// Format version of the persisted index (2: our own HNSW graphs).
pub const FORMAT: u32 = 2;

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
#[derive(Serialize, Deserialize)]
struct Segment {
    graph: Hnsw,
    keys: Vec<VectorKey>,
}

thread_local! {
    /// Search scratch space (the visited stamps), reused by the searches of one thread.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
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

/// The vector index of one embedding model.
#[derive(Serialize, Deserialize)]
pub struct VectorIndex {
    format: u32,
    model: String,
    dimension: usize,
    sealed: Vec<Segment>,
    recent: Vec<(VectorKey, Vector)>,
    live: HashMap<u128, u32>,
    ef_search: usize,
    /// While false (during a bulk load), `upsert` does not seal; the caller seals once.
    #[serde(skip, default = "yes")]
    auto_seal: bool,
    /// Whether sealing is left to a background thread ([`VectorIndex::seal_job`]); `upsert`
    /// then seals by itself only if the recent segment grows to [`SEAL_BACKSTOP`].
    #[serde(skip)]
    defer_seal: bool,
    /// Bumped whenever the sealed segments change, so a background seal built from an older
    /// state is not installed over a newer one.
    #[serde(skip)]
    generation: u64,
}

/// With background sealing, the size at which `upsert` seals anyway (the background has
/// fallen far behind).
pub const SEAL_BACKSTOP: usize = 4 * SEAL_AT;

/// A seal to build off the index's lock: the vectors to build into a graph.
pub struct SealJob {
    entries: Vec<(VectorKey, Vector)>,
    /// The recent keys the new segment replaces (live or stale).
    taken: std::collections::HashSet<VectorKey>,
    merge: bool,
    generation: u64,
    dimension: usize,
}

impl std::fmt::Debug for SealJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealJob")
            .field("vectors", &self.entries.len())
            .field("merge", &self.merge)
            .finish()
    }
}

/// A built [`SealJob`], ready for [`VectorIndex::install`].
pub struct BuiltSeal {
    segment: Option<Segment>,
    taken: std::collections::HashSet<VectorKey>,
    merge: bool,
    generation: u64,
}

impl std::fmt::Debug for BuiltSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltSeal")
            .field("merge", &self.merge)
            .finish()
    }
}

impl SealJob {
    /// Builds the graph (the slow part: run it without holding the index).
    pub fn build(self) -> BuiltSeal {
        let segment =
            (!self.entries.is_empty()).then(|| build_segment(self.dimension, self.entries));
        BuiltSeal {
            segment,
            taken: self.taken,
            merge: self.merge,
            generation: self.generation,
        }
    }
}

fn build_segment(dimension: usize, entries: Vec<(VectorKey, Vector)>) -> Segment {
    let (keys, points): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
    let graph = Hnsw::build(
        dimension,
        points.into_iter().map(|p| p.0),
        Params::default(),
    );
    Segment { graph, keys }
}

fn yes() -> bool {
    true
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
            format: FORMAT,
            model: model.to_owned(),
            dimension,
            sealed: Vec::new(),
            recent: Vec::new(),
            live: HashMap::new(),
            ef_search: 256,
            auto_seal: true,
            defer_seal: false,
            generation: 0,
        }
    }

    /// Leaves sealing to a background thread that calls [`VectorIndex::seal_job`] and
    /// [`VectorIndex::install`], so writers never wait for a graph to be built.
    pub fn set_deferred_seal(&mut self, on: bool) {
        self.defer_seal = on;
    }

    /// The seal due now, if the recent segment is full: its vectors (and, when there are
    /// too many segments, every sealed segment's live vectors, to merge them).
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
        Some(self.job(self.sealed.len() >= MAX_SEGMENTS))
    }

    fn job(&self, merge: bool) -> SealJob {
        let taken = self.recent.iter().map(|(k, _)| *k).collect();
        let mut entries: Vec<(VectorKey, Vector)> = self
            .recent
            .iter()
            .filter(|(k, _)| self.is_live(k))
            .cloned()
            .collect();
        if merge {
            for segment in &self.sealed {
                for (i, key) in segment.keys.iter().enumerate() {
                    if self.is_live(key) {
                        entries.push((*key, Vector(segment.graph.vector(i as u32).to_vec())));
                    }
                }
            }
        }
        SealJob {
            entries,
            taken,
            merge,
            generation: self.generation,
            dimension: self.dimension,
        }
    }

    /// Puts a built seal in place; false (and nothing changes) if the sealed segments
    /// changed since its job was taken. Vectors edited or deleted meanwhile are tombstones
    /// in the new segment, as in any other.
    pub fn install(&mut self, built: BuiltSeal) -> bool {
        if built.generation != self.generation {
            return false;
        }
        self.recent.retain(|(k, _)| !built.taken.contains(k));
        if built.merge {
            self.sealed.clear();
        }
        if let Some(segment) = built.segment {
            self.sealed.push(segment);
        }
        self.generation += 1;
        true
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

    /// Whether this index was written in the current format for `model` and `dimension`,
    /// and every graph in it is whole (a damaged file is rebuilt, never searched).
    pub fn is_compatible(&self, model: &str, dimension: usize) -> bool {
        self.format == FORMAT
            && self.model == model
            && self.dimension == dimension
            && self.recent.iter().all(|(_, v)| v.0.len() == dimension)
            && self.sealed.iter().all(|s| {
                s.keys.len() == s.graph.len()
                    && (s.graph.is_empty() || s.graph.validate().is_ok())
                    && (s.graph.is_empty() || s.graph.vector(0).len() == dimension)
            })
    }

    /// How many memories have vectors.
    pub fn memories(&self) -> usize {
        self.live.len()
    }

    /// Vectors stored, live or stale, and sealed segments.
    pub fn sizes(&self) -> (usize, usize) {
        let stored = self.recent.len() + self.sealed.iter().map(|s| s.keys.len()).sum::<usize>();
        (stored, self.sealed.len())
    }

    /// Replaces the vectors of `memory` (one per chunk).
    pub fn upsert(&mut self, memory: u128, chunks: Vec<Vec<f32>>) {
        let version = self.live.get(&memory).map_or(0, |v| v.wrapping_add(1));
        self.live.insert(memory, version);
        for (chunk, values) in chunks.into_iter().enumerate() {
            debug_assert_eq!(values.len(), self.dimension);
            let key = VectorKey {
                memory,
                version,
                chunk: chunk as u32,
            };
            self.recent.push((key, Vector(values)));
        }
        let limit = if self.defer_seal {
            SEAL_BACKSTOP
        } else {
            SEAL_AT
        };
        if self.auto_seal && self.recent.len() >= limit {
            self.seal();
        }
    }

    /// Removes `memory`'s vectors.
    pub fn remove(&mut self, memory: u128) {
        self.live.remove(&memory);
        self.recent.retain(|(key, _)| key.memory != memory);
    }

    fn is_live(&self, key: &VectorKey) -> bool {
        self.live.get(&key.memory) == Some(&key.version)
    }

    /// Builds the recent vectors into a sealed HNSW segment; merges segments when there
    /// are too many.
    pub fn seal(&mut self) {
        let recent = std::mem::take(&mut self.recent);
        let mut entries: Vec<(VectorKey, Vector)> = recent
            .into_iter()
            .filter(|(k, _)| self.is_live(k))
            .collect();
        if self.sealed.len() >= MAX_SEGMENTS {
            for segment in std::mem::take(&mut self.sealed) {
                for (i, key) in segment.keys.iter().enumerate() {
                    if self.is_live(key) {
                        entries.push((*key, Vector(segment.graph.vector(i as u32).to_vec())));
                    }
                }
            }
        }
        self.generation += 1;
        if entries.is_empty() {
            return;
        }
        let segment = build_segment(self.dimension, entries);
        self.sealed.push(segment);
    }

    /// Rebuilds every sealed segment that holds stale vectors (of deleted or edited
    /// memories), so those vectors leave the index. Costs a rebuild of the affected segments.
    pub fn purge(&mut self) {
        self.seal();
        for segment in std::mem::take(&mut self.sealed) {
            if segment.keys.iter().all(|k| self.is_live(k)) {
                self.sealed.push(segment);
                continue;
            }
            let entries: Vec<(VectorKey, Vector)> = segment
                .keys
                .iter()
                .enumerate()
                .filter(|(_, k)| self.is_live(k))
                .map(|(i, k)| (*k, Vector(segment.graph.vector(i as u32).to_vec())))
                .collect();
            self.generation += 1;
            if !entries.is_empty() {
                let segment = build_segment(self.dimension, entries);
                self.sealed.push(segment);
            }
        }
    }

    /// The `k` memories nearest to `query`, best chunk per memory, for memories `allow`
    /// accepts. With `exact`, every stored vector is compared (for selective filters and
    /// small indexes); otherwise sealed segments are searched through their HNSW graphs.
    /// A vector's similarity is multiplied by `weight(memory, chunk)` before the best chunk
    /// is chosen.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        exact: bool,
        allow: &dyn Fn(u128) -> bool,
        weight: &dyn Fn(u128, u32) -> f32,
    ) -> Vec<VectorHit> {
        let mut best: HashMap<u128, VectorHit> = HashMap::new();
        let mut offer = |key: &VectorKey, distance: f32| {
            if !self.is_live(key) || !allow(key.memory) {
                return;
            }
            let similarity = (1.0 - distance) * weight(key.memory, key.chunk);
            let entry = best.entry(key.memory).or_insert(VectorHit {
                memory: key.memory,
                chunk: key.chunk,
                similarity: f32::NEG_INFINITY,
            });
            if similarity > entry.similarity {
                entry.similarity = similarity;
                entry.chunk = key.chunk;
            }
        };
        for (key, point) in &self.recent {
            offer(key, point.distance(query));
        }
        for segment in &self.sealed {
            if exact {
                for (i, key) in segment.keys.iter().enumerate() {
                    offer(key, 1.0 - dot(query, segment.graph.vector(i as u32)));
                }
            } else {
                // `ef` results rather than `k`, so chunks of one memory, stale versions and
                // filtered-out memories leave enough behind.
                let ef = self.ef_search.max(k);
                let found = SCRATCH.with(|scratch| {
                    segment
                        .graph
                        .search(query, ef, ef, &mut scratch.borrow_mut())
                });
                for (distance, node) in found {
                    offer(&segment.keys[node as usize], distance);
                }
            }
        }
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

#[cfg(test)]
pub(crate) mod tests {
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
        assert!(index.install(job.build()));
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
        // A job taken before a purge is stale and is refused.
        for m in 0..SEAL_AT as u128 {
            index.upsert(10_000 + m, vec![random_unit(&mut seed, 8)]);
        }
        let job = index.seal_job().expect("due again");
        index.purge();
        assert!(!index.install(job.build()));
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
