//! The vector index: sealed HNSW segments (instant-distance) plus an exact segment of
//! recent writes.
//!
//! instant-distance builds an HNSW graph in one batch and has no insert or delete. New
//! vectors go to the `recent` segment, searched exactly; once it holds [`SEAL_AT`] vectors
//! it is built into a sealed HNSW segment. Edits and deletes never touch a sealed segment:
//! every memory has a live version, each vector is keyed by (memory, version, chunk), and a
//! vector whose version is not the live one is a tombstone, skipped by search and dropped
//! when segments are merged. More than [`MAX_SEGMENTS`] sealed segments are merged into one.

use std::collections::HashMap;

use instant_distance::{Builder, HnswMap, Point, Search};
use serde::{Deserialize, Serialize};

/// Recent vectors searched exactly before they are sealed into an HNSW segment.
pub const SEAL_AT: usize = 4096;
/// Sealed segments kept before they are merged into one.
pub const MAX_SEGMENTS: usize = 4;
/// Format version of the persisted index.
pub const FORMAT: u32 = 1;

/// A unit-length vector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vector(Vec<f32>);

impl Vector {
    /// Wraps a unit-length vector.
    pub fn new(values: Vec<f32>) -> Vector {
        Vector(values)
    }
}

impl Point for Vector {
    /// Cosine distance of unit vectors: `1 - a·b`.
    fn distance(&self, other: &Vector) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}

/// Dot product with eight independent accumulators, which the compiler turns into SIMD
/// multiply-adds.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    let (a, b) = (&a[..len], &b[..len]);
    let mut acc = [0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum::<f32>() + tail
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
    sealed: Vec<HnswMap<Vector, VectorKey>>,
    recent: Vec<(VectorKey, Vector)>,
    live: HashMap<u128, u32>,
    ef_search: usize,
    /// While false (during a bulk load), `upsert` does not seal; the caller seals once.
    #[serde(skip, default = "yes")]
    auto_seal: bool,
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
            ef_search: 128,
            auto_seal: true,
        }
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

    /// Whether this index was written in the current format for `model` and `dimension`.
    pub fn is_compatible(&self, model: &str, dimension: usize) -> bool {
        self.format == FORMAT && self.model == model && self.dimension == dimension
    }

    /// How many memories have vectors.
    pub fn memories(&self) -> usize {
        self.live.len()
    }

    /// Vectors stored, live or stale, and sealed segments.
    pub fn sizes(&self) -> (usize, usize) {
        let stored = self.recent.len() + self.sealed.iter().map(|s| s.values.len()).sum::<usize>();
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
        if self.auto_seal && self.recent.len() >= SEAL_AT {
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
                for (pid, point) in segment.iter() {
                    let key = segment.values[pid.into_inner() as usize];
                    if self.is_live(&key) {
                        entries.push((key, point.clone()));
                    }
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        let segment = self.build(entries);
        self.sealed.push(segment);
    }

    /// Rebuilds every sealed segment that holds stale vectors (of deleted or edited
    /// memories), so those vectors leave the index. Costs a rebuild of the affected segments.
    pub fn purge(&mut self) {
        self.seal();
        for segment in std::mem::take(&mut self.sealed) {
            if segment.values.iter().all(|k| self.is_live(k)) {
                self.sealed.push(segment);
                continue;
            }
            let entries: Vec<(VectorKey, Vector)> = segment
                .iter()
                .map(|(pid, point)| (segment.values[pid.into_inner() as usize], point.clone()))
                .filter(|(k, _)| self.is_live(k))
                .collect();
            if !entries.is_empty() {
                let segment = self.build(entries);
                self.sealed.push(segment);
            }
        }
    }

    fn build(&self, entries: Vec<(VectorKey, Vector)>) -> HnswMap<Vector, VectorKey> {
        let (keys, points): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
        Builder::default()
            .ef_construction(128)
            .ef_search(self.ef_search)
            .seed(0x6d6e_656d_6f6e)
            .build(points, keys)
    }

    /// The `k` memories nearest to `query`, best chunk per memory, for memories `allow`
    /// accepts. With `exact`, every stored vector is compared (for selective filters and
    /// small indexes); otherwise sealed segments are searched through their HNSW graphs.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        exact: bool,
        allow: &dyn Fn(u128) -> bool,
    ) -> Vec<VectorHit> {
        let query = Vector(query.to_vec());
        let mut best: HashMap<u128, VectorHit> = HashMap::new();
        let mut offer = |key: &VectorKey, distance: f32| {
            if !self.is_live(key) || !allow(key.memory) {
                return;
            }
            let similarity = 1.0 - distance;
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
            offer(key, query.distance(point));
        }
        for segment in &self.sealed {
            if exact {
                for (pid, point) in segment.iter() {
                    offer(
                        &segment.values[pid.into_inner() as usize],
                        query.distance(point),
                    );
                }
            } else {
                let mut search = Search::default();
                for item in segment.search(&query, &mut search) {
                    offer(item.value, item.distance);
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
mod tests {
    use super::*;
    use crate::search::embed::normalize;

    fn random_unit(seed: &mut u64, dim: usize) -> Vec<f32> {
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
            let hits = index.search(&a, 10, exact, &|_| true);
            assert!(hits.iter().all(|h| h.similarity < 0.999), "{hits:?}");
            assert_eq!(hits.len(), 2);
        }
        index.remove(2);
        for exact in [true, false] {
            let hits = index.search(&b, 10, exact, &|_| true);
            assert_eq!(hits.iter().map(|h| h.memory).collect::<Vec<_>>(), [1]);
        }
        let hits = index.search(&b, 10, true, &|m| m != 1);
        assert!(hits.is_empty());
    }
}
