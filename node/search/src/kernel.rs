//! The inner loops of the vector index, per instruction set: the exact `f32` dot product,
//! the integer dot product of a quantised vector with a widened query, and a prefetch.
//!
//! A graph search spends its time waiting for vectors to arrive from memory: 58,000
//! MiniLM vectors are 89 MB of `f32`, well past the last-level cache. So the graph is
//! walked over 8-bit codes of the vectors (a quarter of the bytes), the neighbours of a
//! node are prefetched together before any is scored, and only the final candidates are
//! re-ranked with the exact vectors ([`super::hnsw`]).
//!
//! Everything here is safe Rust: `pulp` hands out the instruction-set tokens after run-time
//! detection, and its wrappers of the intrinsics (including `_mm_prefetch`) are safe to
//! call with a token. [`dispatch`] runs a whole search under one token so these inline.

/// Dot product. On x86-64 with AVX2 and FMA (detected at run time, through `pulp`) it runs 8 lanes wide with fused multiply-adds; elsewhere the
/// same code runs on the baseline instruction set.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let len = a.len().min(b.len());
    ARCH.dispatch(Dot(&a[..len], &b[..len]))
}

/// The instruction set detected at start.
pub(crate) static ARCH: std::sync::LazyLock<pulp::Arch> = std::sync::LazyLock::new(pulp::Arch::new);

struct Dot<'a>(&'a [f32], &'a [f32]);

impl pulp::WithSimd for Dot<'_> {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) -> f32 {
        dot_with(simd, self.0, self.1)
    }
}

/// [`dot`] inside code already dispatched to `simd` (inlined there, so it runs with that
/// instruction set). `a` and `b` have the same length.
#[inline(always)]
pub(crate) fn dot_with<S: pulp::Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    {
        let (a, a_tail) = S::as_simd_f32s(a);
        let (b, b_tail) = S::as_simd_f32s(b);
        // Four independent accumulators hide the multiply-add latency.
        let mut acc = [simd.splat_f32s(0.0); 4];
        let (a4, a_rest) = a.split_at(a.len() / 4 * 4);
        let (b4, b_rest) = b.split_at(a4.len());
        for (ca, cb) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
            for i in 0..4 {
                acc[i] = simd.mul_add_e_f32s(ca[i], cb[i], acc[i]);
            }
        }
        for (x, y) in a_rest.iter().zip(b_rest) {
            acc[0] = simd.mul_add_e_f32s(*x, *y, acc[0]);
        }
        let sum = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
        let mut tail = 0.0;
        for (x, y) in a_tail.iter().zip(b_tail) {
            tail += x * y;
        }
        simd.reduce_sum_f32s(sum) + tail
    }
}

/// What a search needs from the instruction set.
pub(crate) trait Kernel: Copy {
    /// `Σ query[i] · code[i]` (same length), exact in `i32` for the ranges [`Wide`] makes.
    fn dot_i8(self, query: &[i16], code: &[i8]) -> i32;
    /// Starts loading the cache lines of `bytes` (a hint; never faults).
    fn prefetch<T>(self, bytes: &[T]);
    /// The integer dot products of a widened query with the 64 rows of a [`Blocks`] block:
    /// for each `(at, pair)` of `pairs`, the rows' codes of two dimensions are
    /// `block[at..at + 128]` (two a row) and `pair` holds the query's two values for them
    /// (the first in the low half). Exact in `i32` for the ranges [`Wide`] makes.
    fn block_dots(self, block: &[i8], pairs: &[(u32, i32)]) -> [i32; BLOCK_ROWS];
}

/// An operation run under one [`Kernel`].
pub(crate) trait KernelOp {
    type Output;
    fn run<K: Kernel>(self, kernel: K) -> Self::Output;
}

/// Runs `op` with the best kernel this processor has (detected once, then an atomic load).
#[inline(always)]
pub(crate) fn dispatch<Op: KernelOp>(op: Op) -> Op::Output {
    #[cfg(target_arch = "x86_64")]
    {
        struct Under<K, Op>(K, Op);
        impl<K: Kernel, Op: KernelOp> pulp::NullaryFnOnce for Under<K, Op> {
            type Output = Op::Output;
            #[inline(always)]
            fn call(self) -> Op::Output {
                self.1.run(self.0)
            }
        }
        if let Some(v4) = pulp::x86::V4::try_new() {
            return v4.vectorize(Under(v4, op));
        }
        if let Some(v3) = pulp::x86::V3::try_new() {
            return v3.vectorize(Under(v3, op));
        }
    }
    op.run(Portable)
}

/// Plain Rust, for processors without AVX2 (the compiler still vectorises what it can).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Portable;

impl Kernel for Portable {
    #[inline(always)]
    fn dot_i8(self, query: &[i16], code: &[i8]) -> i32 {
        let mut sum = 0;
        for (&q, &c) in query.iter().zip(code) {
            sum += i32::from(q) * i32::from(c);
        }
        sum
    }

    #[inline(always)]
    fn prefetch<T>(self, _bytes: &[T]) {}

    #[inline(always)]
    fn block_dots(self, block: &[i8], pairs: &[(u32, i32)]) -> [i32; BLOCK_ROWS] {
        let mut sums = [0i32; BLOCK_ROWS];
        for &(at, pair) in pairs {
            let (first, second) = unpack(pair);
            let codes = &block[at as usize..at as usize + PAIR_BYTES];
            for (sum, c) in sums.iter_mut().zip(codes.chunks_exact(2)) {
                *sum += first * i32::from(c[0]) + second * i32::from(c[1]);
            }
        }
        sums
    }
}

/// Two `i16` values in one `i32`, the first in the low half (as `madd` pairs them).
#[inline(always)]
fn pack(first: i16, second: i16) -> i32 {
    (u32::from(first as u16) | (u32::from(second as u16) << 16)) as i32
}

/// The two values [`pack`] packed.
#[inline(always)]
fn unpack(pair: i32) -> (i32, i32) {
    (i32::from(pair as i16), i32::from((pair >> 16) as i16))
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::{__m128i, __m256i, __m512i, _MM_HINT_T0};

    use pulp::bytemuck::cast;
    use pulp::x86::{V3, V4};

    use super::{BLOCK_ROWS, Kernel, PAIR_BYTES};

    /// One prefetch per 64-byte line of `bytes`.
    #[inline(always)]
    fn prefetch_lines<T>(sse: pulp::core_arch::x86::Sse, bytes: &[T]) {
        let start = bytes.as_ptr().cast::<i8>();
        let len = std::mem::size_of_val(bytes);
        for offset in (0..len).step_by(64) {
            sse._mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset));
        }
    }

    impl Kernel for V4 {
        #[inline(always)]
        fn dot_i8(self, query: &[i16], code: &[i8]) -> i32 {
            let (q, q_tail) = pulp::as_arrays::<32, i16>(query);
            let (c, c_tail) = pulp::as_arrays::<32, i8>(code);
            let mut acc = [self.avx512f._mm512_setzero_si512(); 2];
            for (i, (q, c)) in q.iter().zip(c).enumerate() {
                let c: __m256i = cast(*c);
                let q: __m512i = cast(*q);
                let product = self
                    .avx512bw
                    ._mm512_madd_epi16(self.avx512bw._mm512_cvtepi8_epi16(c), q);
                acc[i & 1] = self.avx512f._mm512_add_epi32(acc[i & 1], product);
            }
            let sum = self.avx512f._mm512_add_epi32(acc[0], acc[1]);
            self.avx512f._mm512_reduce_add_epi32(sum) + super::Portable.dot_i8(q_tail, c_tail)
        }

        #[inline(always)]
        fn prefetch<T>(self, bytes: &[T]) {
            prefetch_lines(self.sse, bytes);
        }

        #[inline(always)]
        fn block_dots(self, block: &[i8], pairs: &[(u32, i32)]) -> [i32; BLOCK_ROWS] {
            // Sixteen rows a register: 32 codes, two a row, widened to 16 bits.
            let mut acc = [self.avx512f._mm512_setzero_si512(); 4];
            for &(at, pair) in pairs {
                let codes = &block[at as usize..at as usize + PAIR_BYTES];
                let (codes, _) = pulp::as_arrays::<32, i8>(codes);
                let pair = self.avx512f._mm512_set1_epi32(pair);
                for (acc, c) in acc.iter_mut().zip(codes) {
                    let c: __m256i = cast(*c);
                    let product = self
                        .avx512bw
                        ._mm512_madd_epi16(self.avx512bw._mm512_cvtepi8_epi16(c), pair);
                    *acc = self.avx512f._mm512_add_epi32(*acc, product);
                }
            }
            cast(acc)
        }
    }

    impl Kernel for V3 {
        #[inline(always)]
        fn dot_i8(self, query: &[i16], code: &[i8]) -> i32 {
            let (q, q_tail) = pulp::as_arrays::<16, i16>(query);
            let (c, c_tail) = pulp::as_arrays::<16, i8>(code);
            let mut acc = [self.avx._mm256_setzero_si256(); 2];
            for (i, (q, c)) in q.iter().zip(c).enumerate() {
                let c: __m128i = cast(*c);
                let q: __m256i = cast(*q);
                let product = self
                    .avx2
                    ._mm256_madd_epi16(self.avx2._mm256_cvtepi8_epi16(c), q);
                acc[i & 1] = self.avx2._mm256_add_epi32(acc[i & 1], product);
            }
            let lanes: [i32; 8] = cast(self.avx2._mm256_add_epi32(acc[0], acc[1]));
            lanes.iter().sum::<i32>() + super::Portable.dot_i8(q_tail, c_tail)
        }

        #[inline(always)]
        fn prefetch<T>(self, bytes: &[T]) {
            prefetch_lines(self.sse, bytes);
        }

        #[inline(always)]
        fn block_dots(self, block: &[i8], pairs: &[(u32, i32)]) -> [i32; BLOCK_ROWS] {
            // Eight rows a register: 16 codes, two a row, widened to 16 bits.
            let mut acc = [self.avx._mm256_setzero_si256(); 8];
            for &(at, pair) in pairs {
                let codes = &block[at as usize..at as usize + PAIR_BYTES];
                let (codes, _) = pulp::as_arrays::<16, i8>(codes);
                let pair = self.avx._mm256_set1_epi32(pair);
                for (acc, c) in acc.iter_mut().zip(codes) {
                    let c: __m128i = cast(*c);
                    let product = self
                        .avx2
                        ._mm256_madd_epi16(self.avx2._mm256_cvtepi8_epi16(c), pair);
                    *acc = self.avx2._mm256_add_epi32(*acc, product);
                }
            }
            cast(acc)
        }
    }
}

/// Largest code magnitude of a stored vector.
const CODE_MAX: f32 = 127.0;

/// 8-bit codes of vectors, one scale per vector: `v ≈ scale · code`, each vector scaled so
/// its largest component is ±127. For a 384-dimension sentence embedding the error of a
/// dot product through the codes is about 1% of the typical gap between neighbours.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Codes {
    dim: usize,
    codes: Vec<i8>,
    scales: Vec<f32>,
}

impl Codes {
    /// The codes of `data`, rows of `dim` values.
    pub(crate) fn of(data: &[f32], dim: usize) -> Codes {
        let rows = data.len().checked_div(dim).unwrap_or(0);
        let mut codes = Codes {
            dim,
            codes: Vec::with_capacity(rows * dim),
            scales: Vec::with_capacity(rows),
        };
        for row in data.chunks_exact(dim.max(1)).take(rows) {
            codes.push(row);
        }
        codes
    }

    /// Appends the code of `row` (`dim` values).
    pub(crate) fn push(&mut self, row: &[f32]) {
        debug_assert_eq!(row.len(), self.dim);
        let max = row.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 && max.is_finite() {
            max / CODE_MAX
        } else {
            0.0
        };
        let inverse = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        self.codes.extend(
            row.iter()
                .map(|x| (x * inverse).round().clamp(-CODE_MAX, CODE_MAX) as i8),
        );
        self.scales.push(scale);
    }

    /// Appends row `row` of `other` (codes of the same dimension).
    pub(crate) fn push_coded(&mut self, other: &Codes, row: usize) {
        debug_assert_eq!(other.dim, self.dim);
        self.codes
            .extend_from_slice(&other.codes[row * other.dim..(row + 1) * other.dim]);
        self.scales.push(other.scales[row]);
    }

    /// The rows from `row` on, taken out.
    pub(crate) fn split_off(&mut self, row: usize) -> Codes {
        let row = row.min(self.scales.len());
        Codes {
            dim: self.dim,
            codes: self.codes.split_off(row * self.dim),
            scales: self.scales.split_off(row),
        }
    }

    /// Cosine distance from `query` to row `id`, through its code.
    #[inline(always)]
    pub(crate) fn distance<K: Kernel>(&self, kernel: K, query: &Wide, id: u32) -> f32 {
        let dot = kernel.dot_i8(&query.values, self.code(id));
        1.0 - query.scale * self.scale(id) * dot as f32
    }

    /// Cosine distances from `query` to every row, through their codes.
    #[cfg(test)]
    pub(crate) fn scan(&self, query: &[f32]) -> Vec<f32> {
        let mut distances = Vec::new();
        self.scan_into(query, &mut distances);
        distances
            .into_iter()
            .map(|(distance, _)| distance)
            .collect()
    }

    /// Cosine distances from `query` to every row, through their codes, into `out` (as
    /// (distance, row), replacing what it held; its allocation is reused).
    pub(crate) fn scan_into(&self, query: &[f32], out: &mut Vec<(f32, u32)>) {
        struct Scan<'a>(&'a Codes, &'a [f32], &'a mut Vec<(f32, u32)>);
        impl KernelOp for Scan<'_> {
            type Output = ();
            #[inline(always)]
            fn run<K: Kernel>(self, kernel: K) {
                let mut wide = Wide::default();
                wide.set(self.1);
                // A plain loop: a closure here may not be inlined under the kernel's
                // instruction set.
                for id in 0..self.0.len() as u32 {
                    self.2.push((self.0.distance(kernel, &wide, id), id));
                }
            }
        }
        out.clear();
        out.reserve(self.len());
        if query.len() != self.dim {
            out.extend((0..self.len() as u32).map(|id| (f32::INFINITY, id)));
            return;
        }
        dispatch(Scan(self, query, out));
    }

    /// Row `id`'s codes.
    #[inline(always)]
    pub(crate) fn code(&self, id: u32) -> &[i8] {
        let start = id as usize * self.dim;
        &self.codes[start..start + self.dim]
    }

    /// Row `id` as the vector its code stands for.
    pub(crate) fn decode(&self, id: u32) -> Vec<f32> {
        let scale = self.scale(id);
        self.code(id).iter().map(|&c| c as f32 * scale).collect()
    }

    /// Whether it holds `rows` rows of `dim` codes, each with a finite scale (a check of
    /// codes read from a file).
    pub(crate) fn holds(&self, rows: usize, dim: usize) -> bool {
        self.dim == dim
            && self.scales.len() == rows
            && Some(self.codes.len()) == rows.checked_mul(dim)
            && self.scales.iter().all(|s| s.is_finite() && *s >= 0.0)
    }

    /// Zeroes row `id` (its vector was erased).
    pub(crate) fn erase(&mut self, id: u32) {
        let start = id as usize * self.dim;
        if let Some(row) = self.codes.get_mut(start..start + self.dim) {
            row.fill(0);
        }
        if let Some(scale) = self.scales.get_mut(id as usize) {
            *scale = 0.0;
        }
    }

    /// Row `id`'s scale.
    #[inline(always)]
    pub(crate) fn scale(&self, id: u32) -> f32 {
        self.scales[id as usize]
    }

    /// The dimension of its rows.
    pub(crate) fn dim(&self) -> usize {
        self.dim
    }

    /// How many rows.
    pub(crate) fn len(&self) -> usize {
        self.scales.len()
    }
}

/// What a row of a scan in [`Blocks`] costs besides the pairs it reads, in pairs.
const SCAN_ROW_COST: usize = 120;

/// The pairs of neighbouring dimensions `query` sets (a pair with either value not zero):
/// what a scan in [`Blocks`] reads of each row.
pub(crate) fn set_pairs(query: &[f32]) -> usize {
    query
        .chunks(2)
        .filter(|pair| pair.iter().any(|&v| v != 0.0))
        .count()
}

/// Rows in a block of [`Blocks`].
pub(crate) const BLOCK_ROWS: usize = 64;

/// Bytes of one pair of dimensions in a block: two codes a row.
const PAIR_BYTES: usize = 2 * BLOCK_ROWS;

/// The same 8-bit codes as [`Codes`] holds, laid out for a scan: blocks of 64 rows, and in
/// a block the rows' codes of two neighbouring dimensions side by side (128 bytes). A scan
/// multiplies a pair of the query's values with 64 rows at once and skips the pairs the
/// query leaves at zero: a query of the built-in embedder (a few dozen of its 512
/// dimensions set) reads a tenth of the bytes or less, and a dense query reads them all at
/// the speed of a scan row by row. The dot products are the same integers either way.
#[derive(Debug, Clone)]
pub(crate) struct Blocks {
    dim: usize,
    bytes: Vec<i8>,
    scales: Vec<f32>,
}

impl Blocks {
    /// None yet, of `dim` dimensions.
    pub(crate) fn new(dim: usize) -> Blocks {
        Blocks {
            dim,
            bytes: Vec::new(),
            scales: Vec::new(),
        }
    }

    /// The rows of `codes`.
    pub(crate) fn of(codes: &Codes) -> Blocks {
        let mut blocks = Blocks::new(codes.dim);
        for row in 0..codes.len() {
            blocks.push_coded(codes, row);
        }
        blocks
    }

    /// Pairs of dimensions (the last one alone, with a zero, when `dim` is odd).
    fn pairs(&self) -> usize {
        self.dim.div_ceil(2)
    }

    /// Bytes of one block.
    fn block_len(&self) -> usize {
        self.pairs() * PAIR_BYTES
    }

    /// Appends row `row` of `codes` (of the same dimension).
    pub(crate) fn push_coded(&mut self, codes: &Codes, row: usize) {
        debug_assert_eq!(codes.dim, self.dim);
        let id = self.scales.len();
        self.scales.push(codes.scales[row]);
        self.put(id, codes.code(row as u32));
    }

    /// Writes `code` as row `id`'s (a row of the last block, or the first of a new one).
    fn put(&mut self, id: usize, code: &[i8]) {
        let block = id / BLOCK_ROWS;
        let start = block * self.block_len();
        if self.bytes.len() < start + self.block_len() {
            self.bytes.resize(start + self.block_len(), 0);
        }
        let at = start + 2 * (id % BLOCK_ROWS);
        for (pair, codes) in code.chunks(2).enumerate() {
            let to = at + pair * PAIR_BYTES;
            self.bytes[to] = codes[0];
            self.bytes[to + 1] = codes.get(1).copied().unwrap_or(0);
        }
    }

    /// Row `id`'s codes.
    #[cfg(test)]
    fn code(&self, id: usize) -> Vec<i8> {
        let at = id / BLOCK_ROWS * self.block_len() + 2 * (id % BLOCK_ROWS);
        (0..self.dim)
            .map(|d| self.bytes[at + d / 2 * PAIR_BYTES + d % 2])
            .collect()
    }

    /// Keeps the rows `keep` accepts (by row number), in their order. Each run of kept
    /// rows moves down as whole pieces of its blocks' pairs (a seal takes the oldest rows:
    /// one long run), not a byte at a time.
    pub(crate) fn retain_rows(&mut self, mut keep: impl FnMut(usize) -> bool) {
        let len = self.scales.len();
        let mut kept = 0;
        let mut run = None;
        for row in 0..=len {
            match (row < len && keep(row), run) {
                (true, None) => run = Some(row),
                (false, Some(start)) => {
                    self.move_down(start, kept, row - start);
                    kept += row - start;
                    run = None;
                }
                _ => {}
            }
        }
        self.scales.truncate(kept);
        self.bytes
            .truncate(kept.div_ceil(BLOCK_ROWS) * self.block_len());
    }

    /// Moves `count` rows from row `from` to row `to` (not after it).
    fn move_down(&mut self, from: usize, to: usize, count: usize) {
        debug_assert!(to <= from);
        if to == from {
            return;
        }
        let block_len = self.block_len();
        let at = |row: usize| row / BLOCK_ROWS * block_len + 2 * (row % BLOCK_ROWS);
        let mut moved = 0;
        while moved < count {
            let (source, target) = (from + moved, to + moved);
            // As many rows as stay within both blocks: in each pair, 2 bytes a row in a row.
            let rows = (BLOCK_ROWS - source % BLOCK_ROWS)
                .min(BLOCK_ROWS - target % BLOCK_ROWS)
                .min(count - moved);
            let (source_at, target_at) = (at(source), at(target));
            for pair in (0..self.pairs()).map(|p| p * PAIR_BYTES) {
                self.bytes.copy_within(
                    source_at + pair..source_at + pair + 2 * rows,
                    target_at + pair,
                );
            }
            self.scales.copy_within(source..source + rows, target);
            moved += rows;
        }
    }

    /// How many rows.
    pub(crate) fn len(&self) -> usize {
        self.scales.len()
    }

    /// Zeroes row `id` (its vector was erased), as [`Codes::erase`] does.
    pub(crate) fn erase(&mut self, id: u32) {
        if let Some(scale) = self.scales.get_mut(id as usize) {
            *scale = 0.0;
            self.put(id as usize, &vec![0; self.dim]);
        }
    }

    /// What a scan of these rows costs a query that sets `pairs` pairs of dimensions
    /// ([`set_pairs`]), counted in pairs read: each row's pairs, and as much as 120 more
    /// for its distance and its comparison (fitted on this machine kind: 8,192 rows, 192
    /// pairs set, 84 µs; 16,384 rows, 14 pairs set, 70 µs; about 31 a nanosecond).
    pub(crate) fn scan_cost(&self, pairs: usize) -> usize {
        self.len() * (pairs + SCAN_ROW_COST)
    }

    /// Row `id` as the vector its code stands for.
    #[cfg(test)]
    pub(crate) fn decode(&self, id: u32) -> Vec<f32> {
        let scale = self.scales[id as usize];
        self.code(id as usize)
            .iter()
            .map(|&c| c as f32 * scale)
            .collect()
    }

    /// Cosine distances from `query` to every row, through their codes.
    #[cfg(test)]
    pub(crate) fn scan(&self, query: &[f32]) -> Vec<f32> {
        let mut distances = Vec::new();
        self.scan_into(query, &mut distances);
        distances
            .into_iter()
            .map(|(distance, _)| distance)
            .collect()
    }

    /// Cosine distances from `query` to every row, through their codes, into `out` (as
    /// (distance, row), replacing what it held; its allocation is reused): the same
    /// distances [`Codes::scan_into`] measures.
    #[cfg(test)]
    pub(crate) fn scan_into(&self, query: &[f32], out: &mut Vec<(f32, u32)>) {
        out.clear();
        self.scan_with(query, |first, distances| {
            out.extend(distances.iter().zip(first..).map(|(&d, row)| (d, row)));
        });
    }

    /// The `n` rows nearest to `query` through their codes (every row, if it holds no
    /// more), into `out` as (distance, row) in no particular order, replacing what it held;
    /// of rows as near, the first. The scan keeps a few more than `n` as it goes and cuts
    /// them back to the nearest `n` when there are twice as many, so it need not keep
    /// every distance, and a row is mostly one comparison with the `n`-th nearest so far.
    pub(crate) fn nearest_into(&self, query: &[f32], n: usize, out: &mut Vec<(f32, u32)>) {
        out.clear();
        if n == 0 {
            return;
        }
        let nearer = |a: &(f32, u32), b: &(f32, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        // Rows at this distance or farther are not among the nearest `n` (the rows kept
        // are all nearer or as near and first); none is known yet while it is infinite.
        let mut bound = f32::INFINITY;
        self.scan_with(query, |first, distances| {
            for (&distance, row) in distances.iter().zip(first..) {
                if distance < bound || bound == f32::INFINITY {
                    out.push((distance, row));
                    if out.len() == 2 * n {
                        out.select_nth_unstable_by(n - 1, nearer);
                        out.truncate(n);
                        bound = out[n - 1].0;
                    }
                }
            }
        });
        if out.len() > n {
            out.select_nth_unstable_by(n - 1, nearer);
            out.truncate(n);
        }
    }

    /// Calls `each` with the rows' cosine distances from `query` (through the codes, as
    /// `Codes::distance` measures them), a block at a time in row order: the first row's
    /// number and the distances of its block's rows. A query of another dimension is
    /// infinitely far from every row.
    fn scan_with(&self, query: &[f32], mut each: impl FnMut(u32, &[f32])) {
        struct Scan<'a, F> {
            blocks: &'a Blocks,
            wide: &'a Wide,
            pairs: &'a [(u32, i32)],
            each: F,
        }
        impl<F: FnMut(u32, &[f32])> KernelOp for Scan<'_, F> {
            type Output = ();
            #[inline(always)]
            fn run<K: Kernel>(self, kernel: K) {
                let Scan {
                    blocks,
                    wide,
                    pairs,
                    mut each,
                } = self;
                let block_len = blocks.block_len();
                let mut distances = [0f32; BLOCK_ROWS];
                for (block, scales) in blocks.scales.chunks(BLOCK_ROWS).enumerate() {
                    let start = block * block_len;
                    let sums = kernel.block_dots(&blocks.bytes[start..start + block_len], pairs);
                    for ((distance, &scale), &dot) in distances.iter_mut().zip(scales).zip(&sums) {
                        // As `Codes::distance` measures it.
                        *distance = 1.0 - wide.scale * scale * dot as f32;
                    }
                    each((block * BLOCK_ROWS) as u32, &distances[..scales.len()]);
                }
            }
        }
        if query.len() != self.dim {
            let far = [f32::INFINITY; BLOCK_ROWS];
            for first in (0..self.len()).step_by(BLOCK_ROWS) {
                let rows = (self.len() - first).min(BLOCK_ROWS);
                each(first as u32, &far[..rows]);
            }
            return;
        }
        let mut wide = Wide::default();
        wide.set(query);
        // The pairs of dimensions the query sets: where they are in a block, and its values.
        let pairs: Vec<(u32, i32)> = wide
            .values
            .chunks(2)
            .enumerate()
            .filter(|(_, values)| values.iter().any(|&v| v != 0))
            .map(|(pair, values)| {
                let second = values.get(1).copied().unwrap_or(0);
                ((pair * PAIR_BYTES) as u32, pack(values[0], second))
            })
            .collect();
        dispatch(Scan {
            blocks: self,
            wide: &wide,
            pairs: &pairs,
            each,
        });
    }
}

/// A query widened to `i16` for [`Kernel::dot_i8`]: `query ≈ scale · values`, with the
/// largest magnitude chosen so `dim · 127 · max` fits in an `i32` (32,767 up to 516
/// dimensions), which makes the integer dot product exact.
#[derive(Debug, Default)]
pub(crate) struct Wide {
    pub(crate) values: Vec<i16>,
    pub(crate) scale: f32,
}

impl Wide {
    /// Fills `self` with row `id` of `codes`, as it is (a code fits 16 bits; the dot
    /// product with another code is exact).
    pub(crate) fn set_code(&mut self, codes: &Codes, id: u32) {
        self.scale = codes.scale(id);
        self.values.clear();
        self.values
            .extend(codes.code(id).iter().map(|&c| i16::from(c)));
    }

    /// Fills `self` with `query`.
    pub(crate) fn set(&mut self, query: &[f32]) {
        let limit = (i32::MAX as f32 / (CODE_MAX * query.len().max(1) as f32)).floor();
        let top = limit.min(i16::MAX as f32).max(1.0);
        let max = query.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        self.scale = if max > 0.0 && max.is_finite() {
            max / top
        } else {
            0.0
        };
        let inverse = if self.scale > 0.0 {
            1.0 / self.scale
        } else {
            0.0
        };
        self.values.clear();
        self.values.extend(
            query
                .iter()
                .map(|x| (x * inverse).round().clamp(-top, top) as i16),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vector::tests::random_unit;

    /// The integer dot product of a widened vector and a code.
    struct DotI8<'a>(&'a [i16], &'a [i8]);

    impl KernelOp for DotI8<'_> {
        type Output = i32;
        fn run<K: Kernel>(self, kernel: K) -> i32 {
            kernel.prefetch(self.1);
            kernel.dot_i8(self.0, self.1)
        }
    }

    /// The dot products of a widened query with a block's rows.
    struct BlockDots<'a>(&'a [i8], &'a [(u32, i32)]);

    impl KernelOp for BlockDots<'_> {
        type Output = [i32; BLOCK_ROWS];
        fn run<K: Kernel>(self, kernel: K) -> [i32; BLOCK_ROWS] {
            kernel.block_dots(self.0, self.1)
        }
    }

    /// `op` under every kernel this processor can run, not only the one [`dispatch`] picks.
    fn under_each<Op: KernelOp>(op: impl Fn() -> Op) -> Vec<Op::Output> {
        #[allow(unused_mut)]
        let mut out = vec![op().run(Portable)];
        #[cfg(target_arch = "x86_64")]
        {
            struct Under<K, Op>(K, Op);
            impl<K: Kernel, Op: KernelOp> pulp::NullaryFnOnce for Under<K, Op> {
                type Output = Op::Output;
                #[inline(always)]
                fn call(self) -> Op::Output {
                    self.1.run(self.0)
                }
            }
            if let Some(v3) = pulp::x86::V3::try_new() {
                out.push(v3.vectorize(Under(v3, op())));
            }
            if let Some(v4) = pulp::x86::V4::try_new() {
                out.push(v4.vectorize(Under(v4, op())));
            }
        }
        out.push(dispatch(op()));
        out
    }

    #[test]
    fn every_kernel_agrees_with_plain_arithmetic_at_awkward_lengths() {
        let mut seed = 11;
        for dim in [1, 7, 15, 16, 17, 31, 32, 33, 100, 384, 1000] {
            let a = random_unit(&mut seed, dim);
            let b = random_unit(&mut seed, dim);
            let codes = Codes::of(&a, dim);
            let mut wide = Wide::default();
            wide.set(&b);
            let exact_i: i32 = wide
                .values
                .iter()
                .zip(codes.code(0))
                .map(|(&q, &c)| i32::from(q) * i32::from(c))
                .sum();
            let exact_f: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let f = dot(&a, &b);
            assert!((f - exact_f).abs() < 1e-4, "dim {dim}: {f} vs {exact_f}");
            for i in under_each(|| DotI8(&wide.values, codes.code(0))) {
                assert_eq!(i, exact_i, "dim {dim}");
                // The quantised product is close to the real one.
                let approx = i as f32 * wide.scale * codes.scale(0);
                assert!(
                    (approx - exact_f).abs() < 0.02,
                    "dim {dim}: {approx} vs {exact_f}"
                );
            }
        }
    }

    #[test]
    fn a_code_widened_measures_exactly_the_vectors_two_codes_stand_for() {
        // How a graph is built: the distance between two codes is the distance between
        // the vectors they decode to, under every kernel.
        let mut seed = 17;
        for dim in [1, 16, 33, 384, 512, 1000] {
            let mut data = random_unit(&mut seed, dim);
            data.extend(random_unit(&mut seed, dim));
            // The largest values a code holds, both signs.
            data.extend((0..dim).map(|i| if i % 2 == 0 { 1.0 } else { -1.0 }));
            let codes = Codes::of(&data, dim);
            let mut wide = Wide::default();
            for (a, b) in [(0, 1), (1, 0), (2, 2), (0, 2)] {
                wide.set_code(&codes, a);
                let (x, y) = (codes.decode(a), codes.decode(b));
                let exact: f64 = x.iter().zip(&y).map(|(p, q)| (p * q) as f64).sum();
                for i in under_each(|| DotI8(&wide.values, codes.code(b))) {
                    let measured = i as f64 * (wide.scale * codes.scale(b)) as f64;
                    assert!(
                        (measured - exact).abs() < 1e-4 * exact.abs().max(1.0),
                        "dim {dim}, rows {a} and {b}: {measured} vs {exact}"
                    );
                }
            }
        }
    }

    /// Rows of `dim` values: random unit vectors, and sparse ones as the built-in embedder
    /// makes (a few entries set, the rest zero).
    fn mixed_rows(seed: &mut u64, rows: usize, dim: usize) -> Vec<f32> {
        let mut data = Vec::with_capacity(rows * dim);
        for row in 0..rows {
            let mut values = random_unit(seed, dim);
            if row % 2 == 1 {
                for (d, v) in values.iter_mut().enumerate() {
                    if (d * 7 + row) % 11 != 0 {
                        *v = 0.0;
                    }
                }
            }
            data.extend(values);
        }
        data
    }

    #[test]
    fn a_scan_in_blocks_measures_exactly_what_a_scan_by_rows_measures() {
        let mut seed = 23;
        for dim in [1, 2, 7, 33, 384, 512] {
            for rows in [0, 1, 63, 64, 65, 200] {
                let data = mixed_rows(&mut seed, rows, dim);
                let codes = Codes::of(&data, dim);
                let blocks = Blocks::of(&codes);
                assert_eq!(blocks.len(), rows);
                for query in mixed_rows(&mut seed, 4, dim).chunks(dim) {
                    let by_rows = codes.scan(query);
                    let in_blocks = blocks.scan(query);
                    // The same integers, so the same distances to the bit.
                    let bits = |d: &[f32]| d.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&in_blocks), bits(&by_rows), "dim {dim}, {rows} rows");
                }
                // A query of another dimension is nowhere near anything.
                assert!(
                    blocks
                        .scan(&vec![0.5; dim + 1])
                        .iter()
                        .all(|d| d.is_infinite())
                );
            }
        }
    }

    #[test]
    fn the_nearest_rows_of_a_scan_are_the_nearest_of_every_distance() {
        let mut seed = 41;
        let dim = 24;
        let data = mixed_rows(&mut seed, 300, dim);
        let blocks = Blocks::of(&Codes::of(&data, dim));
        let mut out = vec![(0.5, 7)];
        for query in mixed_rows(&mut seed, 3, dim).chunks(dim) {
            let mut all: Vec<(f32, u32)> = Vec::new();
            blocks.scan_into(query, &mut all);
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for n in [0, 1, 10, 299, 300, 400] {
                blocks.nearest_into(query, n, &mut out);
                out.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                assert_eq!(out, all[..n.min(300)], "n {n}");
            }
        }
        // A query of another dimension: as far from each row, and still `n` of them.
        blocks.nearest_into(&[1.0; 3], 5, &mut out);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|(d, _)| d.is_infinite()));
    }

    #[test]
    fn every_kernel_sums_a_block_as_plain_arithmetic_does() {
        let mut seed = 31;
        for dim in [2, 9, 64, 512] {
            let data = mixed_rows(&mut seed, BLOCK_ROWS, dim);
            let codes = Codes::of(&data, dim);
            let blocks = Blocks::of(&codes);
            let mut wide = Wide::default();
            for query in mixed_rows(&mut seed, 2, dim).chunks(dim) {
                wide.set(query);
                let exact: Vec<i32> = (0..BLOCK_ROWS as u32)
                    .map(|row| {
                        wide.values
                            .iter()
                            .zip(codes.code(row))
                            .map(|(&q, &c)| i32::from(q) * i32::from(c))
                            .sum()
                    })
                    .collect();
                // Every pair, zero or not: skipping the zero ones changes nothing.
                let pairs: Vec<(u32, i32)> = wide
                    .values
                    .chunks(2)
                    .enumerate()
                    .map(|(p, v)| {
                        let packed = pack(v[0], v.get(1).copied().unwrap_or(0));
                        ((p * PAIR_BYTES) as u32, packed)
                    })
                    .collect();
                for sums in under_each(|| BlockDots(&blocks.bytes, &pairs)) {
                    assert_eq!(sums.to_vec(), exact, "dim {dim}");
                }
            }
        }
        // The largest values a code and a widened query hold, at the largest dimension
        // `Wide` keeps exact at 32,767: 64 rows of ±1 (codes ±127) against a query of ±1.
        let dim = 516;
        let data: Vec<f32> = (0..BLOCK_ROWS * dim)
            .map(|i| if (i / dim) % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let codes = Codes::of(&data, dim);
        let blocks = Blocks::of(&codes);
        let mut wide = Wide::default();
        wide.set(&vec![1.0; dim]);
        let pairs: Vec<(u32, i32)> = wide
            .values
            .chunks(2)
            .enumerate()
            .map(|(p, v)| ((p * PAIR_BYTES) as u32, pack(v[0], v[1])))
            .collect();
        let top = i32::from(wide.values[0]) * 127 * dim as i32;
        let expected: Vec<i32> = (0..BLOCK_ROWS)
            .map(|row| if row % 2 == 0 { top } else { -top })
            .collect();
        for sums in under_each(|| BlockDots(&blocks.bytes, &pairs)) {
            assert_eq!(sums.to_vec(), expected);
        }
        assert_eq!(unpack(pack(-32_767, 32_767)), (-32_767, 32_767));
        assert_eq!(unpack(pack(5, -1)), (5, -1));
    }

    #[test]
    fn blocks_keep_the_rows_they_are_told_to_keep_in_order() {
        let mut seed = 37;
        let dim = 17;
        let data = mixed_rows(&mut seed, 150, dim);
        let codes = Codes::of(&data, dim);
        let mut blocks = Blocks::of(&codes);
        blocks.retain_rows(|row| row % 3 != 0 && row < 140);
        let kept: Vec<f32> = data
            .chunks(dim)
            .enumerate()
            .filter(|(row, _)| row % 3 != 0 && *row < 140)
            .flat_map(|(_, values)| values.to_vec())
            .collect();
        let expected = Codes::of(&kept, dim);
        assert_eq!(blocks.len(), expected.len());
        for row in 0..expected.len() as u32 {
            assert_eq!(blocks.decode(row), expected.decode(row), "row {row}");
        }
        let query = random_unit(&mut seed, dim);
        assert_eq!(blocks.scan(&query), expected.scan(&query));
        // Rows pushed after a retain land after the kept ones.
        blocks.push_coded(&codes, 0);
        assert_eq!(blocks.decode(expected.len() as u32), codes.decode(0));
        blocks.retain_rows(|_| false);
        assert_eq!((blocks.len(), blocks.bytes.len()), (0, 0));
        // The oldest rows taken (as a seal takes them): one long run moves down.
        let mut blocks = Blocks::of(&codes);
        blocks.retain_rows(|row| row >= 70);
        assert_eq!(blocks.len(), 80);
        for row in 0..80 {
            assert_eq!(blocks.decode(row), codes.decode(row + 70), "row {row}");
        }
    }

    #[test]
    fn extreme_values_neither_overflow_nor_panic() {
        let dim = 516;
        let all_max = vec![1.0f32; dim];
        let codes = Codes::of(&all_max, dim);
        let mut wide = Wide::default();
        wide.set(&all_max);
        for i in under_each(|| DotI8(&wide.values, codes.code(0))) {
            assert!(i > 0, "no overflow: {i}");
            let approx = i as f32 * wide.scale * codes.scale(0);
            assert!((approx - dim as f32).abs() < 1.0, "{approx}");
        }
        // Zeros, NaN and infinities give zero codes, not a panic.
        let odd = [0.0, f32::NAN, f32::INFINITY, -1.0];
        let codes = Codes::of(&odd, 4);
        assert_eq!(codes.len(), 1);
        wide.set(&[0.0; 4]);
        assert_eq!(wide.scale, 0.0);
        assert_eq!(Codes::of(&[], 0).len(), 0);
    }
}
