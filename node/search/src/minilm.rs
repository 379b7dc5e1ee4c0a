//! A sentence-transformers BERT model (all-MiniLM-L6-v2 and its kin) run in pure Rust:
//! WordPiece tokens, the BERT encoder ([`super::bert`]), mean pooling over the text's
//! tokens, L2 normalisation.
//!
//! A model folder holds `config.json` (a BERT config), `tokenizer.json` (a Hugging Face
//! tokenizer, read by the `tokenizers` crate without its C regex engine) and
//! `model.safetensors`; `1_Pooling/config.json`, when present, must ask for mean pooling.
//! Every file is checked before anything runs: sizes are capped, the config's dimensions
//! are bounded and the tensors must match them.

use std::fs;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::{Tokenizer, TruncationParams};

use super::bert::{Bert, Config, Input, Pool};
use super::embed::{EmbedError, Embedder, normalize};

/// The files a model folder must have.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];
/// Optional files copied with a model.
pub const OPTIONAL_FILES: [&str; 1] = ["1_Pooling/config.json"];
/// The largest weights file accepted.
pub const MAX_WEIGHTS_BYTES: u64 = 2 << 30;
/// The largest config or tokenizer file accepted.
pub const MAX_SMALL_FILE_BYTES: u64 = 32 << 20;
/// Tokens per text; longer texts are truncated (the model was trained on 256).
const MAX_TOKENS: usize = 256;
/// Tokens run through the network at once, at most (a batch holds at least one text):
/// enough rows for the matrix kernel to reuse each weight panel many times, few enough
/// that a batch's activations stay in the caches.
pub(crate) const BATCH_TOKENS: usize = 1024;

/// Why a model folder could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A required file is missing.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// A file is larger than any real model file.
    #[error("{file} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A file exists but is not what it should be.
    #[error("{file}: {reason}")]
    Invalid {
        /// The file.
        file: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Reading failed.
    #[error("reading {file}: {source}")]
    Io {
        /// The file.
        file: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn invalid(file: &'static str, reason: impl std::fmt::Display) -> ModelError {
    ModelError::Invalid {
        file,
        reason: reason.to_string(),
    }
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

/// A sentence-embedding BERT model, loaded and ready.
pub struct BertEmbedder {
    model: Bert,
    tokenizer: Tokenizer,
    dimension: usize,
    model_id: String,
    name: String,
}

impl std::fmt::Debug for BertEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BertEmbedder")
            .field("model_id", &self.model_id)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

fn read_capped(dir: &Path, file: &'static str, limit: u64) -> Result<Vec<u8>, ModelError> {
    let path = dir.join(file);
    let meta = match fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ModelError::Missing(file));
        }
        Err(source) => return Err(ModelError::Io { file, source }),
    };
    if !meta.is_file() {
        return Err(invalid(file, "is not a regular file"));
    }
    if meta.len() > limit {
        return Err(ModelError::TooLarge {
            file: file.to_owned(),
            size: meta.len(),
            limit,
        });
    }
    fs::read(&path).map_err(|source| ModelError::Io { file, source })
}

/// The model id every node derives from the same weights: the first 12 hex digits of
/// their SHA-256.
pub fn model_id_of(weights: &[u8]) -> String {
    format!("sbert-mean-{}", hex_id(weights))
}

/// Reads and checks `config.json`, the tokenizer (truncating as the model allows) and the
/// weights of the BERT model in `dir`; `head` loads a cross-encoder's classifier too.
pub(crate) fn load_bert(
    dir: &Path,
    head: bool,
) -> Result<(Bert, Tokenizer, String, String), ModelError> {
    let config_bytes = read_capped(dir, "config.json", MAX_SMALL_FILE_BYTES)?;
    let config: Config = serde_json::from_slice(&config_bytes)
        .map_err(|e| invalid("config.json", format!("not a BERT config: {e}")))?;
    config.check().map_err(|e| invalid("config.json", e))?;
    let tokenizer_bytes = read_capped(dir, "tokenizer.json", MAX_SMALL_FILE_BYTES)?;
    let mut tokenizer = Tokenizer::from_bytes(&tokenizer_bytes)
        .map_err(|e| invalid("tokenizer.json", format!("not a tokenizer: {e}")))?;
    let max_tokens = MAX_TOKENS.min(config.max_position_embeddings);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            ..TruncationParams::default()
        }))
        .map_err(|e| invalid("tokenizer.json", e))?;
    // A batch stacks its texts' tokens; nothing is padded.
    tokenizer.with_padding(None);
    let weights = read_capped(dir, "model.safetensors", MAX_WEIGHTS_BYTES)?;
    let model_id = hex_id(&weights);
    let vocab = config.vocab_size;
    let model = Bert::load(config, &weights, head).map_err(|e| {
        invalid(
            "model.safetensors",
            format!("does not hold the model config.json describes: {e}"),
        )
    })?;
    let highest = tokenizer.get_vocab(true).into_values().max().unwrap_or(0);
    if highest as usize >= vocab {
        return Err(invalid(
            "tokenizer.json",
            format!("has token id {highest}, past the model's vocabulary of {vocab}"),
        ));
    }
    let name = serde_json::from_slice::<serde_json::Value>(&config_bytes)
        .ok()
        .and_then(|v| v.get("_name_or_path")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "bert".to_owned());
    Ok((model, tokenizer, model_id, name))
}

/// Texts tokenised, in batches of similar length (at most [`BATCH_TOKENS`] tokens each):
/// `(index of the text, ids, segments)` per text.
pub(crate) type Encoded = (usize, Vec<u32>, Vec<u32>);

/// Sorts `encoded` by length and cuts it into batches.
pub(crate) fn batches(mut encoded: Vec<Encoded>) -> Vec<Vec<Encoded>> {
    encoded.sort_by_key(|(_, ids, _)| ids.len());
    let mut out: Vec<Vec<Encoded>> = Vec::new();
    let mut tokens = 0;
    for text in encoded {
        let len = text.1.len();
        match out.last_mut() {
            Some(batch) if tokens + len <= BATCH_TOKENS => batch.push(text),
            _ => {
                tokens = 0;
                out.push(vec![text]);
            }
        }
        tokens += len;
    }
    out
}

/// Runs `batches` through `model` on every core; one result per text, in text order.
pub(crate) fn run(
    model: &Bert,
    batches: &[Vec<Encoded>],
    pool: Pool,
    count: usize,
) -> Vec<Vec<f32>> {
    let inputs: Vec<Vec<Input<'_>>> = batches
        .iter()
        .map(|batch| {
            batch
                .iter()
                .map(|(_, ids, types)| Input { ids, types })
                .collect()
        })
        .collect();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let results = model.run_batches(&inputs, pool, threads);
    let mut out = vec![Vec::new(); count];
    for (batch, vectors) in batches.iter().zip(results) {
        for ((i, _, _), vector) in batch.iter().zip(vectors) {
            out[*i] = vector;
        }
    }
    out
}

fn hex_id(weights: &[u8]) -> String {
    let digest = Sha256::digest(weights);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

impl BertEmbedder {
    /// Loads and checks the model in `dir`.
    pub fn load(dir: &Path) -> Result<BertEmbedder, ModelError> {
        match read_capped(dir, "1_Pooling/config.json", MAX_SMALL_FILE_BYTES) {
            Ok(bytes) => {
                let pooling: PoolingConfig = serde_json::from_slice(&bytes)
                    .map_err(|e| invalid("1_Pooling/config.json", e))?;
                if !pooling.pooling_mode_mean_tokens {
                    return Err(invalid(
                        "1_Pooling/config.json",
                        "only mean pooling is supported",
                    ));
                }
            }
            Err(ModelError::Missing(_)) => {}
            Err(e) => return Err(e),
        }
        let (model, tokenizer, hex, name) = load_bert(dir, false)?;
        Ok(BertEmbedder {
            dimension: model.hidden_size(),
            model,
            tokenizer,
            model_id: format!("sbert-mean-{hex}"),
            name,
        })
    }

    /// The model's own name, from its config (informative only).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The token ids of `text`, with `[CLS]` and `[SEP]`, truncated as embedding does.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Failed(format!("tokenizing: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}

impl Embedder for BertEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Failed(format!("{}: tokenizing: {e}", self.model_id)))?;
        let encoded = encodings
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i, e.get_ids().to_vec(), Vec::new()))
            .collect();
        let mut out = run(&self.model, &batches(encoded), Pool::Mean, texts.len());
        for vector in &mut out {
            normalize(vector);
        }
        Ok(out)
    }
}
