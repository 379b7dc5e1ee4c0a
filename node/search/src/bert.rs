//! A BERT encoder in plain Rust: the network behind sentence embeddings
//! ([`super::minilm`]) and cross-encoder scores ([`super::rerank`]).
//!
//! Written for throughput on a CPU, the way ONNX Runtime runs the same graph:
//! - weights are packed once, at load, into the column panels the matrix kernel reads;
//! - bias, GELU and the residual are applied as a kernel's results leave its registers;
//! - a batch holds no padding: the token rows of its texts are stacked, and attention runs
//!   per text over that text's tokens only;
//! - a whole forward pass runs under one instruction-set token (AVX-512, AVX2+FMA or the
//!   baseline, detected at run time through `pulp`), so every helper inlines into it;
//! - one batch runs on one thread from start to end, in buffers reused across layers;
//!   callers spread batches over threads ([`Bert::run_batches`]).
//!
//! Everything here is safe Rust.

use pulp::Simd;
use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use super::kernel::{ARCH, dot_with};

/// A BERT config (`config.json`), the fields the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Width of every token's vector.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Word-piece vocabulary.
    pub vocab_size: usize,
    /// Longest input, in tokens.
    pub max_position_embeddings: usize,
    /// Segment types (2 for sentence pairs).
    #[serde(default = "one")]
    pub type_vocab_size: usize,
    /// The activation; only GELU (exact or its tanh form) is supported.
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// Layer-norm epsilon.
    #[serde(default = "epsilon")]
    pub layer_norm_eps: f64,
    /// Only absolute position embeddings are supported.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn one() -> usize {
    1
}
fn gelu() -> String {
    "gelu".to_owned()
}
fn epsilon() -> f64 {
    1e-12
}

impl Config {
    /// Checks the numbers before any buffer is allocated from them; the error says which.
    pub fn check(&self) -> Result<(), String> {
        for (what, value, max) in [
            ("hidden_size", self.hidden_size, 4096),
            ("num_hidden_layers", self.num_hidden_layers, 48),
            ("num_attention_heads", self.num_attention_heads, 64),
            ("intermediate_size", self.intermediate_size, 16384),
            ("vocab_size", self.vocab_size, 1 << 20),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                8192,
            ),
            ("type_vocab_size", self.type_vocab_size, 16),
        ] {
            if value == 0 || value > max {
                return Err(format!("{what} is {value}, expected 1 to {max}"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err("hidden_size is not a multiple of num_attention_heads".to_owned());
        }
        if !matches!(
            self.hidden_act.as_str(),
            "gelu" | "gelu_new" | "gelu_pytorch_tanh"
        ) {
            return Err(format!(
                "hidden_act must be gelu, not {:?}",
                self.hidden_act
            ));
        }
        if let Some(kind) = &self.position_embedding_type
            && kind != "absolute"
        {
            return Err(format!(
                "position_embedding_type must be absolute, not {kind:?}"
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(format!(
                "layer_norm_eps {} is out of range",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    fn tanh_gelu(&self) -> bool {
        self.hidden_act != "gelu"
    }
}

/// A dense layer `y = x·Wᵀ + b`, its weights packed in column panels: panel `p` holds
/// output columns `p·NR..p·NR+NR`, input by input (`NR` values per input).
struct Linear {
    packed: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

/// Output columns per panel: two vectors of the detected instruction set.
fn panel_width() -> usize {
    struct Lanes;
    impl pulp::WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> usize {
            S::F32_LANES
        }
    }
    2 * ARCH.dispatch(Lanes)
}

impl Linear {
    /// From PyTorch's layout: `weight` is `outputs × inputs`, row-major.
    fn new(weight: &[f32], bias: Vec<f32>, inputs: usize) -> Linear {
        let outputs = bias.len();
        debug_assert_eq!(weight.len(), outputs * inputs);
        let nr = panel_width();
        let panels = outputs.div_ceil(nr);
        let mut packed = vec![0.0; panels * inputs * nr];
        for (j, row) in weight.chunks_exact(inputs).enumerate() {
            let panel = &mut packed[(j / nr) * inputs * nr..][..inputs * nr];
            for (k, &w) in row.iter().enumerate() {
                panel[k * nr + j % nr] = w;
            }
        }
        Linear {
            packed,
            bias,
            inputs,
            outputs,
        }
    }
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    eps: f32,
}

struct Layer {
    /// Query, key and value in one matrix (`3·hidden` outputs).
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    up: Linear,
    down: Linear,
    output_norm: LayerNorm,
}

/// The classification head of a cross-encoder: the pooler (`tanh(W·h[CLS] + b)`) and a
/// linear layer to one score.
struct Head {
    pooler_weight: Vec<f32>,
    pooler_bias: Vec<f32>,
    classifier_weight: Vec<f32>,
    classifier_bias: f32,
}

/// A loaded BERT encoder.
pub struct Bert {
    config: Config,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embedding_norm: LayerNorm,
    layers: Vec<Layer>,
    head: Option<Head>,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bert")
            .field("hidden_size", &self.config.hidden_size)
            .field("layers", &self.layers.len())
            .field("head", &self.head.is_some())
            .finish_non_exhaustive()
    }
}

/// Reads named tensors, checking each one's type and shape.
struct Tensors<'a> {
    file: SafeTensors<'a>,
    prefix: &'static str,
}

impl Tensors<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, String> {
        let full = format!("{}{name}", self.prefix);
        let view = self
            .file
            .tensor(&full)
            .map_err(|_| format!("has no tensor {full}"))?;
        if view.shape() != shape {
            return Err(format!(
                "{full} has shape {:?}, the config says {shape:?}",
                view.shape()
            ));
        }
        if view.dtype() != Dtype::F32 {
            return Err(format!(
                "{full} is {:?}; only F32 weights are supported",
                view.dtype()
            ));
        }
        Ok(view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    fn norm(&self, name: &str, width: usize, eps: f32) -> Result<LayerNorm, String> {
        Ok(LayerNorm {
            gamma: self.get(&format!("{name}.weight"), &[width])?,
            beta: self.get(&format!("{name}.bias"), &[width])?,
            eps,
        })
    }

    fn linear(&self, names: &[&str], inputs: usize, outputs: usize) -> Result<Linear, String> {
        let mut weight = Vec::with_capacity(names.len() * inputs * outputs);
        let mut bias = Vec::with_capacity(names.len() * outputs);
        for name in names {
            weight.extend(self.get(&format!("{name}.weight"), &[outputs, inputs])?);
            bias.extend(self.get(&format!("{name}.bias"), &[outputs])?);
        }
        Ok(Linear::new(&weight, bias, inputs))
    }
}

impl Bert {
    /// The encoder in `weights` (a safetensors file, with or without the `bert.` prefix
    /// of a task model), checked against `config`. With `head`, the pooler and a
    /// one-output classifier are loaded too (a cross-encoder).
    pub fn load(config: Config, weights: &[u8], head: bool) -> Result<Bert, String> {
        config.check()?;
        let file = SafeTensors::deserialize(weights).map_err(|e| e.to_string())?;
        let prefix = if file
            .tensor("bert.embeddings.word_embeddings.weight")
            .is_ok()
        {
            "bert."
        } else {
            ""
        };
        let t = Tensors { file, prefix };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps as f32;
        let word = t.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = t.get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = t.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let embedding_norm = t.norm("embeddings.LayerNorm", h, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(Layer {
                qkv: t.linear(
                    &[
                        &format!("{p}.attention.self.query"),
                        &format!("{p}.attention.self.key"),
                        &format!("{p}.attention.self.value"),
                    ],
                    h,
                    h,
                )?,
                attention_out: t.linear(&[&format!("{p}.attention.output.dense")], h, h)?,
                attention_norm: t.norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                up: t.linear(
                    &[&format!("{p}.intermediate.dense")],
                    h,
                    config.intermediate_size,
                )?,
                down: t.linear(&[&format!("{p}.output.dense")], config.intermediate_size, h)?,
                output_norm: t.norm(&format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        let head = if head {
            let top = Tensors {
                file: t.file,
                prefix: "",
            };
            let pooler_weight = top.get(&format!("{prefix}pooler.dense.weight"), &[h, h])?;
            let pooler_bias = top.get(&format!("{prefix}pooler.dense.bias"), &[h])?;
            let classifier_weight = top
                .get("classifier.weight", &[1, h])
                .map_err(|e| format!("{e} (a cross-encoder has one output: a relevance score)"))?;
            let classifier_bias = top.get("classifier.bias", &[1])?[0];
            Some(Head {
                pooler_weight,
                pooler_bias,
                classifier_weight,
                classifier_bias,
            })
        } else {
            None
        };
        Ok(Bert {
            config,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            head,
        })
    }

    /// Width of a token's vector.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// How many segments (token types) an input may have.
    pub fn type_vocab_size(&self) -> usize {
        self.config.type_vocab_size
    }

    /// The longest input in tokens.
    pub fn max_tokens(&self) -> usize {
        self.config.max_position_embeddings
    }

    /// Runs the encoder over one batch of texts (token ids and, for sentence pairs, the
    /// segment of each token; empty means all 0) and returns each text's pooled vector:
    /// the mean over its tokens for [`Pool::Mean`], the classifier's score (a vector of
    /// one) for [`Pool::Score`].
    ///
    /// # Panics
    /// On an id outside the vocabulary, a segment outside the type vocabulary or a text
    /// longer than [`Bert::max_tokens`]; tokenizers built from the model's own files
    /// never make them, and callers truncate.
    pub fn run(&self, texts: &[Input<'_>], pool: Pool) -> Vec<Vec<f32>> {
        self.run_in(texts, pool, &mut Workspace::default())
    }

    fn run_in(&self, texts: &[Input<'_>], pool: Pool, work: &mut Workspace) -> Vec<Vec<f32>> {
        ARCH.dispatch(Forward {
            bert: self,
            texts,
            pool,
            work,
        })
    }

    /// [`Bert::run`] over many batches on up to `threads` threads; results in order.
    pub fn run_batches(
        &self,
        batches: &[Vec<Input<'_>>],
        pool: Pool,
        threads: usize,
    ) -> Vec<Vec<Vec<f32>>> {
        let threads = threads.clamp(1, batches.len().max(1));
        if threads == 1 {
            let mut work = Workspace::default();
            return batches
                .iter()
                .map(|b| self.run_in(b, pool, &mut work))
                .collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut out: Vec<Vec<Vec<f32>>> = vec![Vec::new(); batches.len()];
        let done = std::sync::Mutex::new(Vec::with_capacity(batches.len()));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let mut work = Workspace::default();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(batch) = batches.get(i) else { break };
                        let result = self.run_in(batch, pool, &mut work);
                        done.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((i, result));
                    }
                });
            }
        });
        for (i, result) in done.into_inner().unwrap_or_else(|e| e.into_inner()) {
            out[i] = result;
        }
        out
    }
}

/// One text's tokens.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Word-piece ids, `[CLS]` and `[SEP]` included.
    pub ids: &'a [u32],
    /// The segment of each token (empty: all 0).
    pub types: &'a [u32],
}

/// What [`Bert::run`] returns per text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// The mean of the last layer over the text's tokens.
    Mean,
    /// The cross-encoder's score.
    Score,
}

/// The buffers of a forward pass, kept by a thread from batch to batch (every value is
/// written before it is read, so growing them is all the work they need).
#[derive(Default)]
struct Workspace {
    x: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    mid: Vec<f32>,
    wide: Vec<f32>,
    scratch: Scratch,
}

struct Forward<'a> {
    bert: &'a Bert,
    texts: &'a [Input<'a>],
    pool: Pool,
    work: &'a mut Workspace,
}

impl pulp::WithSimd for Forward<'_> {
    type Output = Vec<Vec<f32>>;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Vec<Vec<f32>> {
        forward(simd, self.bert, self.texts, self.pool, self.work)
    }
}

/// Rows of the activation per call of the matrix kernel: two vectors of accumulators per
/// row, leaving registers for the weights and a broadcast (32 registers under AVX-512, 16
/// below it).
const WIDE_ROWS: usize = 14;
const NARROW_ROWS: usize = 6;

/// Whether `S` has the 32 vector registers of AVX-512.
const fn wide<S: Simd>() -> bool {
    S::F32_LANES >= 16
}

#[inline(always)]
fn forward<S: Simd>(
    simd: S,
    bert: &Bert,
    texts: &[Input<'_>],
    pool: Pool,
    work: &mut Workspace,
) -> Vec<Vec<f32>> {
    let c = &bert.config;
    let h = c.hidden_size;
    let tokens: usize = texts.iter().map(|t| t.ids.len()).sum();
    if tokens == 0 {
        return texts.iter().map(|_| vec![0.0; h]).collect();
    }
    let Workspace {
        x,
        qkv,
        context,
        mid,
        wide,
        scratch,
    } = work;
    let x = room(x, tokens * h);
    let qkv = room(qkv, tokens * 3 * h);
    let context = room(context, tokens * h);
    let mid = room(mid, tokens * h);
    let wide = room(wide, tokens * c.intermediate_size);
    // Embeddings.
    let mut row = 0;
    for text in texts {
        assert!(
            text.ids.len() <= c.max_position_embeddings,
            "text longer than the model's positions"
        );
        for (p, &id) in text.ids.iter().enumerate() {
            let segment = text.types.get(p).copied().unwrap_or(0) as usize;
            let out = &mut x[row * h..][..h];
            let w = &bert.word[id as usize * h..][..h];
            let pos = &bert.position[p * h..][..h];
            let ty = &bert.token_type[segment * h..][..h];
            for i in 0..h {
                out[i] = w[i] + pos[i] + ty[i];
            }
            layer_norm(out, &bert.embedding_norm);
            row += 1;
        }
    }
    let tanh = c.tanh_gelu();
    for layer in &bert.layers {
        gemm(simd, &layer.qkv, x, tokens, qkv, Epilogue::Bias, scratch);
        let mut start = 0;
        for text in texts {
            let len = text.ids.len();
            attention(simd, c, qkv, start, len, context, scratch);
            start += len;
        }
        gemm(
            simd,
            &layer.attention_out,
            context,
            tokens,
            mid,
            Epilogue::Residual(x),
            scratch,
        );
        for r in mid.chunks_exact_mut(h) {
            layer_norm(r, &layer.attention_norm);
        }
        gemm(
            simd,
            &layer.up,
            mid,
            tokens,
            wide,
            Epilogue::Gelu { tanh },
            scratch,
        );
        gemm(
            simd,
            &layer.down,
            wide,
            tokens,
            x,
            Epilogue::Residual(mid),
            scratch,
        );
        for r in x.chunks_exact_mut(h) {
            layer_norm(r, &layer.output_norm);
        }
    }
    let mut out = Vec::with_capacity(texts.len());
    let mut start = 0;
    for text in texts {
        let len = text.ids.len();
        let rows = &x[start * h..(start + len) * h];
        match pool {
            Pool::Mean => {
                let mut mean = vec![0.0f32; h];
                for r in rows.chunks_exact(h) {
                    for (m, v) in mean.iter_mut().zip(r) {
                        *m += v;
                    }
                }
                let n = len.max(1) as f32;
                mean.iter_mut().for_each(|m| *m /= n);
                out.push(mean);
            }
            Pool::Score => {
                let head = bert.head.as_ref().expect("a cross-encoder has its head");
                let cls = &rows[..h.min(rows.len())];
                let mut score = head.classifier_bias;
                if !cls.is_empty() {
                    for (j, w) in head.pooler_weight.chunks_exact(h).enumerate() {
                        let pooled = (dot_with(simd, w, cls) + head.pooler_bias[j]).tanh();
                        score += pooled * head.classifier_weight[j];
                    }
                }
                out.push(vec![score]);
            }
        }
        start += len;
    }
    out
}

/// The first `len` values of `buffer`, grown (never shrunk, so never zeroed again) to
/// hold them; the caller writes every value before reading it.
#[inline(always)]
fn room(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// The sum, in 16 lanes so that it vectorises.
#[inline(always)]
fn sum(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (chunks, tail) = values.as_chunks::<16>();
    for c in chunks {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// The largest value, in 16 lanes so that it vectorises.
#[inline(always)]
fn max(values: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let (chunks, tail) = values.as_chunks::<16>();
    for c in chunks {
        for i in 0..16 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

#[inline(always)]
fn layer_norm(row: &mut [f32], norm: &LayerNorm) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let (chunks, tail) = row.as_chunks::<16>();
    let mut acc = [0.0f32; 16];
    for c in chunks {
        for i in 0..16 {
            let d = c[i] - mean;
            acc[i] += d * d;
        }
    }
    let var =
        (acc.iter().sum::<f32>() + tail.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>()) / n;
    let inv = 1.0 / (var + norm.eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// `e^x` to about 2 ulp for the range softmax and GELU meet, branch-free so that loops of
/// it vectorise (Cephes' polynomial after a reduction by powers of two).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits(((t.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23) as u32);
    e * scale
}

/// `erf(x)` within 1.5e-7 (Abramowitz and Stegun 7.1.26), branch-free.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
        + 0.254_829_6)
        * t;
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

#[inline(always)]
fn gelu_in_place(values: &mut [f32], tanh: bool) {
    if tanh {
        for v in values {
            let x = *v;
            let inner = 0.797_884_6 * (x + 0.044_715 * x * x * x);
            // tanh(u) = 1 - 2 / (e^{2u} + 1)
            let th = 1.0 - 2.0 / (exp(2.0 * inner) + 1.0);
            *v = 0.5 * x * (1.0 + th);
        }
    } else {
        for v in values {
            let x = *v;
            *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// Buffers reused across the kernels of one forward pass.
#[derive(Default)]
struct Scratch {
    rows: Vec<f32>,
    columns: Vec<f32>,
    scores: Vec<f32>,
    probabilities: Vec<f32>,
    sums: Vec<f32>,
}

/// What a kernel applies to its results on their way out.
#[derive(Clone, Copy)]
enum Epilogue<'a> {
    /// `+ bias`
    Bias,
    /// `gelu(… + bias)`
    Gelu { tanh: bool },
    /// `… + bias + residual` (the residual has the output's shape).
    Residual(&'a [f32]),
}

/// Row panels packed per block: the block's packed rows stay in the core's L2 cache while
/// every weight panel passes over them.
const PANELS_PER_BLOCK: usize = 8;

/// Packs `rows × k` values (`at(row, i)`) into panels of `MR` rows, input by input, rows
/// past the end zero: the left operand of [`multiply`].
#[inline(always)]
fn pack_rows<const MR: usize>(
    rows: usize,
    k: usize,
    at: impl Fn(usize, usize) -> f32,
    dst: &mut Vec<f32>,
) {
    let panels = rows.div_ceil(MR);
    // Every value is written below, padding rows with zeros.
    let dst = room(dst, panels * k * MR);
    for p in 0..panels {
        let panel = &mut dst[p * k * MR..][..k * MR];
        let (steps, _) = panel.as_chunks_mut::<MR>();
        let first = p * MR;
        let real = MR.min(rows - first);
        for (i, step) in steps.iter_mut().enumerate() {
            for (r, v) in step.iter_mut().enumerate() {
                *v = if r < real { at(first + r, i) } else { 0.0 };
            }
        }
    }
}

/// Packs `k × columns` values (`at(i, column)`) into panels of `nr` columns, input by
/// input, columns past the end zero: the right operand of [`multiply`].
#[inline(always)]
fn pack_columns(
    k: usize,
    columns: usize,
    nr: usize,
    at: impl Fn(usize, usize) -> f32,
    dst: &mut Vec<f32>,
) {
    let panels = columns.div_ceil(nr);
    let dst = room(dst, panels * k * nr);
    for p in 0..panels {
        let panel = &mut dst[p * k * nr..][..k * nr];
        let first = p * nr;
        let real = nr.min(columns - first);
        for (i, step) in panel.chunks_exact_mut(nr).enumerate() {
            for (c, v) in step.iter_mut().enumerate() {
                *v = if c < real { at(i, first + c) } else { 0.0 };
            }
        }
    }
}

/// Where the results of [`multiply`] go: `row`, the first of the panel's columns, and two
/// vectors of sums. (A trait, not a closure: a closure would not inline into code
/// compiled for the detected instruction set.)
trait Emit<S: Simd> {
    fn emit(&mut self, simd: S, row: usize, col: usize, acc: &[S::f32s; 2]);
}

/// The left operand of [`multiply`], `MR` rows at a time.
trait Left<S: Simd, const MR: usize> {
    /// Its rows.
    fn rows(&self) -> usize;
    /// Row panel `panel` times the column panel `weights`, over `k` inputs.
    fn product(&self, simd: S, panel: usize, weights: &[S::f32s], k: usize) -> [[S::f32s; 2]; MR];
}

/// Rows packed by [`pack_rows`].
struct Packed<'a> {
    data: &'a [f32],
    rows: usize,
}

impl<S: Simd, const MR: usize> Left<S, MR> for Packed<'_> {
    #[inline(always)]
    fn rows(&self) -> usize {
        self.rows
    }

    #[inline(always)]
    fn product(&self, simd: S, panel: usize, weights: &[S::f32s], k: usize) -> [[S::f32s; 2]; MR] {
        kernel::<S, MR>(simd, &self.data[panel * k * MR..][..k * MR], weights, k)
    }
}

/// The product of a left operand and `columns` columns (packed by [`pack_columns`] with
/// two vectors per panel) over `k` inputs, each result handed to `out`; columns past the
/// end are zero.
#[inline(always)]
fn multiply<S: Simd, const MR: usize>(
    simd: S,
    left: &impl Left<S, MR>,
    columns_packed: &[f32],
    columns: usize,
    k: usize,
    out: &mut impl Emit<S>,
) {
    let nr = 2 * S::F32_LANES;
    let rows = left.rows();
    for cp in 0..columns.div_ceil(nr) {
        let (weights, _) = S::as_simd_f32s(&columns_packed[cp * k * nr..][..k * nr]);
        for rp in 0..rows.div_ceil(MR) {
            let acc = left.product(simd, rp, weights, k);
            for (i, acc) in acc.iter().enumerate().take(rows - rp * MR) {
                out.emit(simd, rp * MR + i, cp * nr, acc);
            }
        }
    }
}

/// `out[m × n] = epilogue(a[m × k] · W)` for `W` packed in `lin`.
#[inline(always)]
fn gemm<S: Simd>(
    simd: S,
    lin: &Linear,
    a: &[f32],
    m: usize,
    out: &mut [f32],
    epilogue: Epilogue<'_>,
    scratch: &mut Scratch,
) {
    if wide::<S>() {
        gemm_with::<S, WIDE_ROWS>(simd, lin, a, m, out, epilogue, scratch);
    } else {
        gemm_with::<S, NARROW_ROWS>(simd, lin, a, m, out, epilogue, scratch);
    }
}

#[inline(always)]
fn gemm_with<S: Simd, const MR: usize>(
    simd: S,
    lin: &Linear,
    a: &[f32],
    m: usize,
    out: &mut [f32],
    epilogue: Epilogue<'_>,
    scratch: &mut Scratch,
) {
    let (k, n) = (lin.inputs, lin.outputs);
    debug_assert_eq!(a.len(), m * k);
    debug_assert_eq!(out.len(), m * n);
    let block_rows = MR * PANELS_PER_BLOCK;
    for block_start in (0..m).step_by(block_rows) {
        let rows = block_rows.min(m - block_start);
        pack_rows::<MR>(
            rows,
            k,
            |r, i| a[(block_start + r) * k + i],
            &mut scratch.rows,
        );
        let left = Packed {
            data: &scratch.rows,
            rows,
        };
        let mut emit = LinearOut {
            lin,
            out: &mut *out,
            block_start,
            epilogue,
        };
        multiply::<S, MR>(simd, &left, &lin.packed, n, k, &mut emit);
    }
}

/// A dense layer's results: bias and epilogue applied, written to the output rows.
struct LinearOut<'a> {
    lin: &'a Linear,
    out: &'a mut [f32],
    block_start: usize,
    epilogue: Epilogue<'a>,
}

impl<S: Simd> Emit<S> for LinearOut<'_> {
    #[inline(always)]
    fn emit(&mut self, simd: S, row: usize, col: usize, acc: &[S::f32s; 2]) {
        let nr = 2 * S::F32_LANES;
        let n = self.lin.outputs;
        let r = self.block_start + row;
        let width = nr.min(n - col);
        let dst = &mut self.out[r * n + col..][..width];
        if width == nr
            && let Epilogue::Gelu { tanh } = self.epilogue
        {
            // Through registers and the stack, so the output is written once.
            let mut tmp = [0.0f32; 64];
            let (bias, _) = S::as_simd_f32s(&self.lin.bias[col..col + nr]);
            let (v, _) = S::as_mut_simd_f32s(&mut tmp[..nr]);
            v[0] = simd.add_f32s(acc[0], bias[0]);
            v[1] = simd.add_f32s(acc[1], bias[1]);
            gelu_in_place(&mut tmp[..nr], tanh);
            dst.copy_from_slice(&tmp[..nr]);
            return;
        }
        if width == nr {
            let (bias, _) = S::as_simd_f32s(&self.lin.bias[col..col + nr]);
            let (v, _) = S::as_mut_simd_f32s(dst);
            v[0] = simd.add_f32s(acc[0], bias[0]);
            v[1] = simd.add_f32s(acc[1], bias[1]);
        } else {
            let mut tmp = [0.0f32; 64];
            let (v, _) = S::as_mut_simd_f32s(&mut tmp[..nr]);
            v[0] = acc[0];
            v[1] = acc[1];
            for (j, d) in dst.iter_mut().enumerate() {
                *d = tmp[j] + self.lin.bias[col + j];
            }
        }
        match self.epilogue {
            Epilogue::Bias => {}
            Epilogue::Gelu { tanh } => gelu_in_place(dst, tanh),
            Epilogue::Residual(residual) => {
                for (d, r) in dst.iter_mut().zip(&residual[r * n + col..][..width]) {
                    *d += r;
                }
            }
        }
    }
}

/// Attention scores, one row of `stride` per query.
struct ScoresOut<'a> {
    scores: &'a mut [f32],
    stride: usize,
}

impl<S: Simd> Emit<S> for ScoresOut<'_> {
    #[inline(always)]
    fn emit(&mut self, _: S, row: usize, col: usize, acc: &[S::f32s; 2]) {
        let nr = 2 * S::F32_LANES;
        let (v, _) = S::as_mut_simd_f32s(&mut self.scores[row * self.stride + col..][..nr]);
        v[0] = acc[0];
        v[1] = acc[1];
    }
}

/// A head's context vectors, each divided by its softmax sum, into their columns of the
/// context rows.
struct ContextOut<'a> {
    context: &'a mut [f32],
    sums: &'a [f32],
    /// First row of the text, width of a row, first column of the head, its width.
    start: usize,
    hidden: usize,
    at: usize,
    width: usize,
}

impl<S: Simd> Emit<S> for ContextOut<'_> {
    #[inline(always)]
    fn emit(&mut self, simd: S, row: usize, col: usize, acc: &[S::f32s; 2]) {
        let nr = 2 * S::F32_LANES;
        let inv = simd.splat_f32s(1.0 / self.sums[row]);
        let dst = &mut self.context[(self.start + row) * self.hidden + self.at + col..];
        if col + nr <= self.width {
            let (v, _) = S::as_mut_simd_f32s(&mut dst[..nr]);
            v[0] = simd.mul_f32s(acc[0], inv);
            v[1] = simd.mul_f32s(acc[1], inv);
        } else {
            let mut tmp = [0.0f32; 64];
            let (v, _) = S::as_mut_simd_f32s(&mut tmp[..nr]);
            v[0] = simd.mul_f32s(acc[0], inv);
            v[1] = simd.mul_f32s(acc[1], inv);
            let width = self.width - col;
            dst[..width].copy_from_slice(&tmp[..width]);
        }
    }
}

/// The register-blocked inner loop: `MR` rows of the packed activation times one panel
/// of two weight vectors, over all `k` inputs.
#[inline(always)]
fn kernel<S: Simd, const MR: usize>(
    simd: S,
    panel: &[f32],
    weights: &[S::f32s],
    k: usize,
) -> [[S::f32s; 2]; MR] {
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; 2]; MR];
    let (rows, _) = panel.as_chunks::<MR>();
    let (pairs, _) = weights.as_chunks::<2>();
    for (a, b) in rows[..k].iter().zip(&pairs[..k]) {
        for i in 0..MR {
            let av = simd.splat_f32s(a[i]);
            acc[i][0] = simd.mul_add_e_f32s(av, b[0], acc[i][0]);
            acc[i][1] = simd.mul_add_e_f32s(av, b[1], acc[i][1]);
        }
    }
    acc
}

/// Self-attention of one text (`len` tokens from row `start`) for every head, written to
/// `context`. Scores are `q·k / √d`; softmax runs over the text's own tokens only. Both
/// products run through the matrix kernel.
#[inline(always)]
fn attention<S: Simd>(
    simd: S,
    c: &Config,
    qkv: &[f32],
    start: usize,
    len: usize,
    context: &mut [f32],
    scratch: &mut Scratch,
) {
    if wide::<S>() {
        attention_with::<S, WIDE_ROWS>(simd, c, qkv, start, len, context, scratch);
    } else {
        attention_with::<S, NARROW_ROWS>(simd, c, qkv, start, len, context, scratch);
    }
}

#[inline(always)]
fn attention_with<S: Simd, const MR: usize>(
    simd: S,
    c: &Config,
    qkv: &[f32],
    start: usize,
    len: usize,
    context: &mut [f32],
    scratch: &mut Scratch,
) {
    let h = c.hidden_size;
    let d = h / c.num_attention_heads;
    let nr = 2 * S::F32_LANES;
    let stride = len.div_ceil(nr) * nr;
    let scale = 1.0 / (d as f32).sqrt();
    let row = |j: usize| &qkv[(start + j) * 3 * h..][..3 * h];
    for head in 0..c.num_attention_heads {
        let at = head * d;
        // scores = Q·Kᵀ
        pack_rows::<MR>(len, d, |i, x| row(i)[at + x], &mut scratch.rows);
        pack_columns(d, len, nr, |x, j| row(j)[h + at + x], &mut scratch.columns);
        // Every score (padding columns too) is written by the product.
        let scores = room(&mut scratch.scores, len * stride);
        let mut out = ScoresOut {
            scores: &mut *scores,
            stride,
        };
        let left = Packed {
            data: &scratch.rows,
            rows: len,
        };
        multiply::<S, MR>(simd, &left, &scratch.columns, len, d, &mut out);
        // softmax over each row's `len` real scores; the sums divide at the end.
        scratch.sums.clear();
        for r in scores.chunks_exact_mut(stride) {
            let r = &mut r[..len];
            let max = max(r);
            for s in r.iter_mut() {
                *s = exp((*s - max) * scale);
            }
            scratch.sums.push(sum(r));
        }
        // context = P·V
        let scores = &scores[..len * stride];
        pack_rows::<MR>(
            len,
            len,
            |i, j| scores[i * stride + j],
            &mut scratch.probabilities,
        );
        pack_columns(
            len,
            d,
            nr,
            |j, x| row(j)[2 * h + at + x],
            &mut scratch.columns,
        );
        let mut out = ContextOut {
            context: &mut *context,
            sums: &scratch.sums,
            start,
            hidden: h,
            at,
            width: d,
        };
        let left = Packed {
            data: &scratch.probabilities,
            rows: len,
        };
        multiply::<S, MR>(simd, &left, &scratch.columns, d, len, &mut out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_close_to_the_library() {
        let mut worst_exp = 0.0f32;
        let mut worst_erf = 0.0f64;
        for i in -8000..8000 {
            let x = i as f32 / 100.0;
            let rel = ((exp(x) - x.exp()) / x.exp()).abs();
            worst_exp = worst_exp.max(rel);
            let x = i as f32 / 1000.0;
            // erf from its series for small x, checked against 1 - erfc's tail beyond.
            let reference = erf_reference(f64::from(x));
            worst_erf = worst_erf.max((f64::from(erf(x)) - reference).abs());
        }
        assert!(worst_exp < 1e-6, "exp relative error {worst_exp}");
        assert!(worst_erf < 5e-7, "erf absolute error {worst_erf}");
    }

    /// erf by its Taylor series (|x| ≤ 3) and its asymptotic form beyond, in f64.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() > 3.0 {
            let a = x.abs();
            let tail = (-a * a).exp() / (a * std::f64::consts::PI.sqrt())
                * (1.0 - 1.0 / (2.0 * a * a) + 3.0 / (4.0 * a.powi(4)));
            return (1.0 - tail).copysign(x);
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    /// A random dense layer through the packed kernel equals the plain product, for
    /// shapes that end mid-panel and mid-block.
    #[test]
    fn the_packed_kernel_equals_the_plain_product() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        for (m, k, n) in [(1, 3, 5), (13, 40, 37), (200, 64, 96), (7, 384, 33)] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
            let bias: Vec<f32> = (0..n).map(|_| next()).collect();
            let residual: Vec<f32> = (0..m * n).map(|_| next()).collect();
            let lin = Linear::new(&w, bias.clone(), k);
            struct Run<'a>(&'a Linear, &'a [f32], usize, &'a [f32]);
            impl pulp::WithSimd for Run<'_> {
                type Output = (Vec<f32>, Vec<f32>);
                fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
                    let mut scratch = Scratch::default();
                    let mut plain = vec![0.0; self.2 * self.0.outputs];
                    gemm(
                        simd,
                        self.0,
                        self.1,
                        self.2,
                        &mut plain,
                        Epilogue::Bias,
                        &mut scratch,
                    );
                    let mut with = vec![0.0; self.2 * self.0.outputs];
                    gemm(
                        simd,
                        self.0,
                        self.1,
                        self.2,
                        &mut with,
                        Epilogue::Residual(self.3),
                        &mut scratch,
                    );
                    (plain, with)
                }
            }
            let (got, with_residual) = ARCH.dispatch(Run(&lin, &a, m, &residual));
            for i in 0..m {
                for j in 0..n {
                    let want: f32 =
                        (0..k).map(|kk| a[i * k + kk] * w[j * k + kk]).sum::<f32>() + bias[j];
                    let at = got[i * n + j];
                    assert!(
                        (at - want).abs() < 1e-4,
                        "({m},{k},{n}) at {i},{j}: {at} vs {want}"
                    );
                    let r = with_residual[i * n + j] - residual[i * n + j];
                    assert!((r - want).abs() < 1e-4, "residual at {i},{j}");
                }
            }
        }
    }
}
