//! A sentence-transformers BERT model (all-MiniLM-L6-v2 and its kin) run in pure Rust
//! with candle: WordPiece tokens, the BERT encoder, mean pooling over real tokens, L2
//! normalisation.
//!
//! A model folder holds `config.json` (a BERT config), `tokenizer.json` (a Hugging Face
//! tokenizer, read by the `tokenizers` crate without its C regex engine) and
//! `model.safetensors`; `1_Pooling/config.json`, when present, must ask for mean pooling.
//! Every file is checked before anything runs: sizes are capped, the config's dimensions
//! are bounded and the tensors must match them.

use std::fs;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, HiddenAct};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

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
/// Texts run through the network at once.
const BATCH: usize = 32;

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
    model: BertModel,
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

/// Checks the numbers in `config.json` before any tensor is allocated from them.
fn check_config(config: &Config) -> Result<(), ModelError> {
    let bad = |what: &str, value: usize, max: usize| {
        invalid(
            "config.json",
            format!("{what} is {value}, expected 1 to {max}"),
        )
    };
    for (what, value, max) in [
        ("hidden_size", config.hidden_size, 4096),
        ("num_hidden_layers", config.num_hidden_layers, 48),
        ("num_attention_heads", config.num_attention_heads, 64),
        ("intermediate_size", config.intermediate_size, 16384),
        ("vocab_size", config.vocab_size, 1 << 20),
        (
            "max_position_embeddings",
            config.max_position_embeddings,
            8192,
        ),
        ("type_vocab_size", config.type_vocab_size, 16),
    ] {
        if value == 0 || value > max {
            return Err(bad(what, value, max));
        }
    }
    if !config
        .hidden_size
        .is_multiple_of(config.num_attention_heads)
    {
        return Err(invalid(
            "config.json",
            "hidden_size is not a multiple of num_attention_heads",
        ));
    }
    if config.hidden_act != HiddenAct::Gelu && config.hidden_act != HiddenAct::GeluApproximate {
        return Err(invalid("config.json", "hidden_act must be gelu"));
    }
    Ok(())
}

/// The model id every node derives from the same weights: the first 12 hex digits of
/// their SHA-256.
pub fn model_id_of(weights: &[u8]) -> String {
    let digest = Sha256::digest(weights);
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("sbert-mean-{hex}")
}

impl BertEmbedder {
    /// Loads and checks the model in `dir`.
    pub fn load(dir: &Path) -> Result<BertEmbedder, ModelError> {
        let config_bytes = read_capped(dir, "config.json", MAX_SMALL_FILE_BYTES)?;
        let config: Config = serde_json::from_slice(&config_bytes)
            .map_err(|e| invalid("config.json", format!("not a BERT config: {e}")))?;
        check_config(&config)?;
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
        tokenizer.with_padding(Some(PaddingParams::default()));
        let weights = read_capped(dir, "model.safetensors", MAX_WEIGHTS_BYTES)?;
        let model_id = model_id_of(&weights);
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| invalid("model.safetensors", e))?;
        let model = BertModel::load(vb, &config).map_err(|e| {
            invalid(
                "model.safetensors",
                format!("does not hold the model config.json describes: {e}"),
            )
        })?;
        let name = serde_json::from_slice::<serde_json::Value>(&config_bytes)
            .ok()
            .and_then(|v| v.get("_name_or_path")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "bert".to_owned());
        Ok(BertEmbedder {
            model,
            tokenizer,
            dimension: config.hidden_size,
            model_id,
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

    fn embed_batch(&self, texts: &[&str]) -> candle_core::Result<Vec<Vec<f32>>> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| candle_core::Error::Msg(format!("tokenizing: {e}")))?;
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(texts.len() * len);
        let mut mask = Vec::with_capacity(texts.len() * len);
        for encoding in &encodings {
            ids.extend_from_slice(encoding.get_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        let device = &self.model.device;
        let ids = Tensor::from_vec(ids, (texts.len(), len), device)?;
        let mask = Tensor::from_vec(mask, (texts.len(), len), device)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean over the real tokens only.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1.0, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let mut rows: Vec<Vec<f32>> = mean.to_vec2()?;
        for row in &mut rows {
            normalize(row);
        }
        Ok(rows)
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
        // Similar lengths together, so a batch pads little; answers go back in order.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH) {
            let batch_texts: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
            let vectors = self
                .embed_batch(&batch_texts)
                .map_err(|e| EmbedError::Failed(format!("{}: {e}", self.model_id)))?;
            for (&i, vector) in batch.iter().zip(vectors) {
                out[i] = vector;
            }
        }
        Ok(out)
    }
}
