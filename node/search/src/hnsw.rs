//! The HNSW graph of a sealed vector segment: a patched copy of instant-distance 0.6.1
//! (MIT OR Apache-2.0, by Instant Domain Search), reworked where the benchmark showed the
//! time going (`cargo bench -p mnemon-node --bench ann`):
//!
//! - `M` is a parameter (16, as hnswlib's default; instant-distance fixes 32, which doubles
//!   the distances computed per hop);
//! - `ef` is chosen per query rather than fixed at build time;
//! - a neighbour's list is re-pruned with the heuristic only when it is full (instant-
//!   distance re-ran the heuristic over all 64 neighbours for every back-link, about
//!   130,000 distance computations per insert), and pruned candidates are not kept;
//! - a built graph keeps its vectors only as 8-bit codes ([`Codes`], a quarter of the
//!   floats' memory) and neighbours in flat `u32` arrays with a count per node, so a hop
//!   reads contiguous memory;
//! - the visited set is a `u32` generation stamp per node (no clearing between queries);
//! - a query walks the graph over the codes, prefetching the unvisited neighbours of a
//!   node together before scoring them; its distances are the query's (widened to 16
//!   bits, so all but exact) to each vector's code.
//!
//! Inserts are sequential (one thread), which keeps the build deterministic for a seed.
//! The build measures in the codes too: each vector is coded as it comes in and its floats
//! are dropped, and every distance the build computes is between two codes (the one
//! widened to 16 bits, so the integer dot product is exact): the distance between the
//! vectors the codes stand for, which is what a search through the codes measures. A
//! build so holds a quarter of the floats' memory (a merge of 100,000 vectors of 512
//! dimensions held 205 MB of floats besides the codes). Distances are cosine distances of
//! unit vectors, `1 - a·b`.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

use super::kernel::{Codes, Kernel, KernelOp, Wide, dispatch};

/// The largest `M`.
const MAX_M: usize = 64;

/// Build parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Neighbours per node on the upper layers; layer 0 keeps twice as many.
    pub m: usize,
    /// Candidates considered while inserting.
    pub ef_construction: usize,
    /// Seed of the level draw.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            m: 16,
            ef_construction: 200,
            seed: 0x6d6e_656d_6f6e,
        }
    }
}

/// A distance with a total order, for the heaps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Near {
    distance: f32,
    id: u32,
}

impl Eq for Near {}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Near) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    fn cmp(&self, other: &Near) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.id.cmp(&other.id))
    }
}

/// An HNSW graph over unit vectors of one dimension.
#[derive(Clone, Serialize, Deserialize)]
pub struct Hnsw {
    dim: usize,
    m: usize,
    /// 8-bit codes of the vectors: all a graph keeps of them, while built too.
    codes: Codes,
    /// Layer 0: per node, a count then `2m` slots.
    zero: Vec<u32>,
    /// Each node's top layer.
    levels: Vec<u8>,
    /// Upper layers of the nodes that have them: `upper_at[i]` is where node `i`'s layers
    /// 1..=level start in `upper` (each a count then `m` slots).
    upper_at: Vec<u32>,
    upper: Vec<u32>,
    entry: u32,
    top: u8,
}

/// A graph as format 3 of the vector index stored it: its vectors as floats, no codes.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
pub(crate) struct HnswV3 {
    dim: usize,
    m: usize,
    data: Vec<f32>,
    zero: Vec<u32>,
    levels: Vec<u8>,
    upper_at: Vec<u32>,
    upper: Vec<u32>,
    entry: u32,
    top: u8,
}

impl From<HnswV3> for Hnsw {
    fn from(old: HnswV3) -> Hnsw {
        Hnsw {
            codes: Codes::of(&old.data, old.dim),
            dim: old.dim,
            m: old.m,
            zero: old.zero,
            levels: old.levels,
            upper_at: old.upper_at,
            upper: old.upper,
            entry: old.entry,
            top: old.top,
        }
    }
}

impl std::fmt::Debug for Hnsw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hnsw")
            .field("nodes", &self.len())
            .field("dim", &self.dim)
            .field("m", &self.m)
            .field("top", &self.top)
            .finish()
    }
}

/// Per-search scratch space, reused across searches of one graph.
#[derive(Debug, Default)]
pub struct Scratch {
    visited: Vec<u32>,
    stamp: u32,
    candidates: BinaryHeap<Reverse<Near>>,
    results: BinaryHeap<Near>,
    /// The query widened for the codes.
    wide: Wide,
    /// A second vector widened (while a graph is built: the candidate whose distances to
    /// the neighbours kept so far are measured).
    other: Wide,
}

impl Scratch {
    fn start(&mut self, nodes: usize) {
        if self.visited.len() < nodes {
            self.visited.resize(nodes, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.visited.iter_mut().for_each(|v| *v = 0);
            self.stamp = 1;
        }
        self.candidates.clear();
        self.results.clear();
    }

    /// Marks `id` visited; false if it already was.
    fn visit(&mut self, id: u32) -> bool {
        let slot = &mut self.visited[id as usize];
        if *slot == self.stamp {
            false
        } else {
            *slot = self.stamp;
            true
        }
    }
}

impl Hnsw {
    /// Builds the graph of `vectors` (all of length `dim`), node `i` being `vectors[i]`.
    pub fn build(dim: usize, vectors: impl IntoIterator<Item = Vec<f32>>, params: Params) -> Hnsw {
        let mut codes = Codes::of(&[], dim);
        let mut row = vec![0.0; dim];
        for v in vectors {
            debug_assert_eq!(v.len(), dim);
            if dim == 0 {
                continue;
            }
            // (A vector of another length is cut or padded with zeros.)
            let have = dim.min(v.len());
            row[..have].copy_from_slice(&v[..have]);
            row[have..].fill(0.0);
            codes.push(&row);
        }
        Hnsw::build_coded(codes, params)
    }

    /// Builds the graph of the vectors `codes` stand for, node `i` being row `i` (a merge
    /// passes the codes of the graphs it merges as they are).
    pub(crate) fn build_coded(codes: Codes, params: Params) -> Hnsw {
        let m = params.m.clamp(2, MAX_M);
        let dim = codes.dim();
        let n = codes.len();
        let mut graph = Hnsw {
            dim,
            m,
            codes,
            zero: vec![0; n * (2 * m + 1)],
            levels: Vec::with_capacity(n),
            upper_at: Vec::with_capacity(n),
            upper: Vec::new(),
            entry: 0,
            top: 0,
        };
        // Levels: -ln(U) / ln(M), from a xorshift generator seeded by the caller.
        let ml = 1.0 / (m as f64).ln();
        let mut state = params.seed | 1;
        for _ in 0..n {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let u = ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let level = ((-u.ln() * ml) as usize).min(16) as u8;
            graph.upper_at.push(graph.upper.len() as u32);
            graph
                .upper
                .resize(graph.upper.len() + level as usize * (m + 1), 0);
            graph.levels.push(level);
        }
        let ef = params.ef_construction.max(m);
        dispatch(BuildOp {
            graph: &mut graph,
            ef,
        });
        graph
    }

    /// Erases node `id`'s vector (zeroes its code): the node still links the graph, but
    /// is as far from every query as a vector can be, and its data is gone.
    pub fn erase(&mut self, id: u32) {
        self.codes.erase(id);
    }

    /// The dimension of its vectors.
    pub fn dimension(&self) -> usize {
        self.dim
    }

    /// The codes of its vectors, row `i` node `i`'s.
    pub(crate) fn codes(&self) -> &Codes {
        &self.codes
    }

    /// Node `id`'s vector as its code holds it (coding it again gives the same code).
    pub fn decode(&self, id: u32) -> Vec<f32> {
        self.codes.decode(id)
    }

    /// The distance from `query` to every node, as (distance, node), in node order, into
    /// `out` (an exact scan, by the codes; see [`Codes::scan_into`]).
    pub fn scan_into(&self, query: &[f32], out: &mut Vec<(f32, u32)>) {
        self.codes.scan_into(query, out);
    }

    /// How many vectors the graph holds.
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    #[inline(always)]
    fn capacity(&self, layer: u8) -> usize {
        if layer == 0 { 2 * self.m } else { self.m }
    }

    #[inline(always)]
    fn slot_start(&self, id: u32, layer: u8) -> usize {
        if layer == 0 {
            id as usize * (2 * self.m + 1)
        } else {
            self.upper_at[id as usize] as usize + (layer as usize - 1) * (self.m + 1)
        }
    }

    #[inline(always)]
    fn neighbours(&self, id: u32, layer: u8) -> &[u32] {
        let start = self.slot_start(id, layer);
        let list = if layer == 0 { &self.zero } else { &self.upper };
        let count = list[start] as usize;
        &list[start + 1..start + 1 + count]
    }

    fn set_neighbours(&mut self, id: u32, layer: u8, ids: impl IntoIterator<Item = u32>) {
        let start = self.slot_start(id, layer);
        let capacity = self.capacity(layer);
        let list = if layer == 0 {
            &mut self.zero
        } else {
            &mut self.upper
        };
        let mut count = 0;
        for neighbour in ids.into_iter().take(capacity) {
            list[start + 1 + count] = neighbour;
            count += 1;
        }
        list[start] = count as u32;
    }

    /// Greedy walks from the entry point down the layers from the top to `lowest`: the
    /// node to start from below it.
    #[inline(always)]
    fn descend(&self, measure: &impl Measure, lowest: u8) -> Near {
        let mut current = Near {
            distance: measure.distance(self.entry),
            id: self.entry,
        };
        for layer in (lowest..=self.top).rev() {
            current = self.greedy(measure, current, layer);
        }
        current
    }

    /// Greedy walk on `layer` from `from` towards the query of `measure`.
    #[inline(always)]
    fn greedy(&self, measure: &impl Measure, mut from: Near, layer: u8) -> Near {
        loop {
            let mut moved = false;
            for &n in self.neighbours(from.id, layer) {
                let d = measure.distance(n);
                if d < from.distance {
                    from = Near { distance: d, id: n };
                    moved = true;
                }
            }
            if !moved {
                return from;
            }
        }
    }

    /// The `ef` nodes nearest on `layer` to the query of `measure`, from `entry`; nearest
    /// first.
    #[inline(always)]
    fn search_layer(
        &self,
        measure: &impl Measure,
        entry: &[Near],
        ef: usize,
        layer: u8,
        scratch: &mut Scratch,
    ) -> Vec<Near> {
        scratch.start(self.len());
        for &e in entry {
            scratch.visit(e.id);
            scratch.candidates.push(Reverse(e));
            scratch.results.push(e);
        }
        while scratch.results.len() > ef {
            scratch.results.pop();
        }
        while let Some(Reverse(current)) = scratch.candidates.pop() {
            let worst = scratch.results.peek().map_or(f32::INFINITY, |w| w.distance);
            if current.distance > worst && scratch.results.len() >= ef {
                break;
            }
            // The unvisited neighbours, all loading at once before the first is scored.
            let mut fresh = [0u32; 2 * MAX_M];
            let mut count = 0;
            for &n in self.neighbours(current.id, layer) {
                if scratch.visit(n) {
                    measure.prefetch(n);
                    fresh[count] = n;
                    count += 1;
                }
            }
            for &n in &fresh[..count] {
                let d = measure.distance(n);
                let worst = scratch.results.peek().map_or(f32::INFINITY, |w| w.distance);
                if scratch.results.len() < ef || d < worst {
                    let near = Near { distance: d, id: n };
                    scratch.candidates.push(Reverse(near));
                    scratch.results.push(near);
                    if scratch.results.len() > ef {
                        scratch.results.pop();
                    }
                }
            }
        }
        let mut found: Vec<Near> = scratch.results.drain().collect();
        found.sort_unstable();
        found
    }

    /// The heuristic of the HNSW paper (algorithm 4, as hnswlib runs it): from `candidates`
    /// (nearest first), keep those nearer to the base than to any kept one, up to `keep`.
    /// `wide` is room for a candidate's widened code.
    #[inline(always)]
    fn select<K: Kernel>(
        &self,
        kernel: K,
        candidates: &[Near],
        keep: usize,
        wide: &mut Wide,
    ) -> Vec<u32> {
        if candidates.len() <= keep {
            return candidates.iter().map(|c| c.id).collect();
        }
        // Plain loops, not closures: a closure may be compiled outside the instruction set
        // the kernel was dispatched to, and then every SIMD step becomes a call.
        let mut kept: Vec<u32> = Vec::with_capacity(keep);
        'candidates: for &c in candidates {
            if kept.len() >= keep {
                break;
            }
            wide.set_code(&self.codes, c.id);
            for &k in &kept {
                if self.codes.distance(kernel, wide, k) < c.distance {
                    continue 'candidates;
                }
            }
            kept.push(c.id);
        }
        kept
    }

    #[inline(always)]
    fn insert<K: Kernel>(&mut self, kernel: K, id: u32, ef: usize, scratch: &mut Scratch) {
        let level = self.levels[id as usize];
        if id == 0 {
            self.entry = 0;
            self.top = level;
            return;
        }
        let mut wide = std::mem::take(&mut scratch.wide);
        let mut other = std::mem::take(&mut scratch.other);
        wide.set_code(&self.codes, id);
        let approximate = Approximate {
            codes: &self.codes,
            kernel,
            query: &wide,
        };
        let mut entry = vec![self.descend(&approximate, level + 1)];
        for layer in (0..=level.min(self.top)).rev() {
            let approximate = Approximate {
                codes: &self.codes,
                kernel,
                query: &wide,
            };
            // Nearest first, by the codes: the distances the graph is for.
            let found = self.search_layer(&approximate, &entry, ef, layer, scratch);
            let chosen = self.select(kernel, &found, self.m, &mut other);
            self.set_neighbours(id, layer, chosen.iter().copied());
            for &n in &chosen {
                self.link_back(kernel, n, id, layer, &mut other);
            }
            entry = found;
        }
        scratch.wide = wide;
        scratch.other = other;
        if level > self.top {
            self.top = level;
            self.entry = id;
        }
    }

    /// Adds `new` to `node`'s neighbours on `layer`, re-pruning only when the list is full
    /// (`wide` is room for widened codes).
    #[inline(always)]
    fn link_back<K: Kernel>(&mut self, kernel: K, node: u32, new: u32, layer: u8, wide: &mut Wide) {
        let capacity = self.capacity(layer);
        let current = self.neighbours(node, layer);
        if current.len() < capacity {
            let mut ids = current.to_vec();
            ids.push(new);
            self.set_neighbours(node, layer, ids);
            return;
        }
        wide.set_code(&self.codes, node);
        let mut candidates: Vec<Near> = Vec::with_capacity(current.len() + 1);
        for &n in current.iter().chain([&new]) {
            candidates.push(Near {
                distance: self.codes.distance(kernel, wide, n),
                id: n,
            });
        }
        candidates.sort_unstable();
        let chosen = self.select(kernel, &candidates, capacity, wide);
        self.set_neighbours(node, layer, chosen);
    }

    /// The `k` nodes nearest to `query` as `(distance, node)`, nearest first, looking at
    /// `ef` candidates on the bottom layer (at least `k`).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        scratch: &mut Scratch,
    ) -> Vec<(f32, u32)> {
        if self.is_empty() || k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        dispatch(SearchOp {
            graph: self,
            query,
            k,
            ef,
            scratch,
        })
    }

    /// [`Hnsw::search`], inside code dispatched to one instruction set.
    #[inline(always)]
    fn search_with<K: Kernel>(
        &self,
        kernel: K,
        query: &[f32],
        k: usize,
        ef: usize,
        scratch: &mut Scratch,
    ) -> Vec<(f32, u32)> {
        let mut wide = std::mem::take(&mut scratch.wide);
        wide.set(query);
        let approximate = Approximate {
            codes: &self.codes,
            kernel,
            query: &wide,
        };
        let current = self.descend(&approximate, 1);
        let mut found = self.search_layer(&approximate, &[current], ef.max(k), 0, scratch);
        scratch.wide = wide;
        found.truncate(k);
        found.into_iter().map(|n| (n.distance, n.id)).collect()
    }

    /// Checks a graph read from disk: every array the right length and every neighbour a
    /// node of the graph, so a damaged file cannot make a search index out of bounds.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.levels.len();
        let m = self.m;
        if self.dim == 0 || !(2..=MAX_M).contains(&m) {
            return Err(format!("bad parameters: dim {}, m {m}", self.dim));
        }
        if !self.codes.holds(n, self.dim) || self.zero.len() != n * (2 * m + 1) {
            return Err("array lengths do not match the node count".into());
        }
        if self.upper_at.len() != n || (n > 0 && self.entry as usize >= n) {
            return Err("bad entry point or layer table".into());
        }
        let upper_needed: usize = self.levels.iter().map(|&l| l as usize * (m + 1)).sum();
        if self.upper.len() != upper_needed {
            return Err("upper layers do not match the levels".into());
        }
        let mut at = 0usize;
        for (i, &level) in self.levels.iter().enumerate() {
            if self.upper_at[i] as usize != at || level > self.top {
                return Err(format!("node {i}: bad layer offset or level"));
            }
            at += level as usize * (m + 1);
            for layer in 0..=level {
                let start = self.slot_start(i as u32, layer);
                let list = if layer == 0 { &self.zero } else { &self.upper };
                let count = list[start] as usize;
                if count > self.capacity(layer) {
                    return Err(format!("node {i}: {count} neighbours on layer {layer}"));
                }
                if list[start + 1..start + 1 + count]
                    .iter()
                    .any(|&nb| nb as usize >= n || self.levels[nb as usize] < layer)
                {
                    return Err(format!("node {i}: a neighbour outside the graph"));
                }
            }
        }
        if n > 0 && self.levels[self.entry as usize] != self.top {
            return Err("the entry point is not on the top layer".into());
        }
        Ok(())
    }
}

/// How a walk measures the distance from its query to a node.
trait Measure {
    fn distance(&self, id: u32) -> f32;
    /// Starts loading what [`Measure::distance`] of `id` will read.
    fn prefetch(&self, id: u32);
}

/// By the 8-bit codes.
struct Approximate<'a, K> {
    codes: &'a Codes,
    kernel: K,
    query: &'a Wide,
}

impl<K: Kernel> Measure for Approximate<'_, K> {
    #[inline(always)]
    fn distance(&self, id: u32) -> f32 {
        self.codes.distance(self.kernel, self.query, id)
    }

    #[inline(always)]
    fn prefetch(&self, id: u32) {
        self.kernel.prefetch(self.codes.code(id));
    }
}

/// The whole build under one instruction-set dispatch, so every distance is inlined.
struct BuildOp<'a> {
    graph: &'a mut Hnsw,
    ef: usize,
}

impl KernelOp for BuildOp<'_> {
    type Output = ();

    #[inline(always)]
    fn run<K: Kernel>(self, kernel: K) {
        let mut scratch = Scratch::default();
        for id in 0..self.graph.len() as u32 {
            self.graph.insert(kernel, id, self.ef, &mut scratch);
        }
    }
}

/// One search under one instruction-set dispatch.
struct SearchOp<'a> {
    graph: &'a Hnsw,
    query: &'a [f32],
    k: usize,
    ef: usize,
    scratch: &'a mut Scratch,
}

impl KernelOp for SearchOp<'_> {
    type Output = Vec<(f32, u32)>;

    #[inline(always)]
    fn run<K: Kernel>(self, kernel: K) -> Self::Output {
        self.graph
            .search_with(kernel, self.query, self.k, self.ef, self.scratch)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::embed::normalize;
    use crate::kernel::dot;
    use crate::vector::tests::random_unit;

    /// `graph` as format 3 stored it, with `data` as its vectors.
    pub(crate) fn as_format_3(graph: &Hnsw, data: Vec<f32>) -> HnswV3 {
        HnswV3 {
            dim: graph.dim,
            m: graph.m,
            data,
            zero: graph.zero.clone(),
            levels: graph.levels.clone(),
            upper_at: graph.upper_at.clone(),
            upper: graph.upper.clone(),
            entry: graph.entry,
            top: graph.top,
        }
    }

    #[test]
    fn finds_the_exact_neighbours_of_clustered_vectors() {
        let mut seed = 3;
        let dim = 32;
        let centres: Vec<Vec<f32>> = (0..20).map(|_| random_unit(&mut seed, dim)).collect();
        let vectors: Vec<Vec<f32>> = (0..3000)
            .map(|i| {
                let noise = random_unit(&mut seed, dim);
                let mut v: Vec<f32> = centres[i % 20]
                    .iter()
                    .zip(&noise)
                    .map(|(c, n)| c + 0.6 * n)
                    .collect();
                normalize(&mut v);
                v
            })
            .collect();
        let graph = Hnsw::build(dim, vectors.clone(), Params::default());
        graph.validate().expect("valid");
        assert_eq!(graph.len(), 3000);
        let mut scratch = Scratch::default();
        let mut hits = 0;
        for q in 0..200 {
            let query = random_unit(&mut seed, dim);
            let mut exact: Vec<(f32, u32)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (1.0 - dot(&query, v), i as u32))
                .collect();
            exact.sort_by(|a, b| a.0.total_cmp(&b.0));
            let truth: Vec<u32> = exact[..10].iter().map(|e| e.1).collect();
            let found = graph.search(&query, 10, 64 + q % 2, &mut scratch);
            assert_eq!(found.len(), 10);
            assert!(found.windows(2).all(|w| w[0].0 <= w[1].0), "nearest first");
            hits += found.iter().filter(|f| truth.contains(&f.1)).count();
        }
        let recall = hits as f64 / 2000.0;
        assert!(recall >= 0.95, "recall@10 {recall}");
        // Each vector finds itself.
        for i in [0u32, 1, 999, 2999] {
            let found = graph.search(&vectors[i as usize], 1, 32, &mut scratch);
            assert_eq!(found[0].1, i);
        }
    }

    #[test]
    fn a_graph_built_again_from_its_codes_is_the_same_graph() {
        // What a merge does: it builds a graph again from the vectors the codes of the
        // merged graphs stand for. A build measures every distance between codes, so the
        // new graph is the old one, whichever the vectors came in as.
        let mut seed = 11;
        let dim = 64;
        let vectors: Vec<Vec<f32>> = (0..1500).map(|_| random_unit(&mut seed, dim)).collect();
        let built = Hnsw::build(dim, vectors, Params::default());
        let decoded = (0..built.len() as u32).map(|i| built.decode(i));
        let again = Hnsw::build(dim, decoded, Params::default());
        again.validate().expect("valid");
        assert_eq!(
            postcard::to_allocvec(&built).expect("encode"),
            postcard::to_allocvec(&again).expect("encode"),
            "the same codes, levels and neighbours"
        );
    }

    #[test]
    fn a_graph_read_back_searches_exactly_as_the_one_built() {
        let mut seed = 5;
        let dim = 48;
        let vectors: Vec<Vec<f32>> = (0..2000).map(|_| random_unit(&mut seed, dim)).collect();
        let graph = Hnsw::build(dim, vectors.clone(), Params::default());
        let bytes = postcard::to_allocvec(&graph).expect("encode");
        let read: Hnsw = postcard::from_bytes(&bytes).expect("decode");
        read.validate().expect("valid");
        let (mut a, mut b) = (Scratch::default(), Scratch::default());
        for _ in 0..50 {
            let query = random_unit(&mut seed, dim);
            let built = graph.search(&query, 10, 40, &mut a);
            let loaded = read.search(&query, 10, 40, &mut b);
            assert_eq!(built, loaded);
            // Returned distances are those of the codes, within a hair of the exact ones,
            // and the scan gives the same.
            let mut scan = Vec::new();
            read.scan_into(&query, &mut scan);
            for (distance, id) in built {
                let exact = 1.0 - dot(&query, &vectors[id as usize]);
                assert!((distance - exact).abs() < 0.02, "{distance} vs {exact}");
                assert_eq!((distance, id), scan[id as usize]);
            }
            // A decoded vector codes to the same code again.
            let id = (seed % 2000) as u32;
            assert_eq!(
                Codes::of(&read.decode(id), dim).code(0),
                read.codes.code(id)
            );
        }
    }

    #[test]
    fn tiny_and_damaged_graphs() {
        let empty = Hnsw::build(4, Vec::<Vec<f32>>::new(), Params::default());
        assert!(
            empty
                .search(&[1.0, 0.0, 0.0, 0.0], 5, 10, &mut Scratch::default())
                .is_empty()
        );
        let one = Hnsw::build(2, vec![vec![1.0, 0.0]], Params::default());
        let found = one.search(&[0.0, 1.0], 5, 10, &mut Scratch::default());
        assert_eq!(found.len(), 1);
        one.validate().expect("valid");
        let mut seed = 9;
        let mut graph = Hnsw::build(
            8,
            (0..100).map(|_| random_unit(&mut seed, 8)),
            Params::default(),
        );
        graph.validate().expect("valid");
        let mut short = graph.clone();
        short.codes = Codes::of(&[0.5; 8 * 99], 8);
        assert!(short.validate().is_err(), "a code missing");
        graph.zero[1] = 5000;
        assert!(graph.validate().is_err());
    }
}
