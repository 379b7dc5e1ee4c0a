//! Re-ranking: a second stage that reads the query beside each of the first ranking's
//! best passages and orders them again.
//!
//! A [`CrossEncoder`] is a BERT that reads the query and a passage as one input (the
//! sentence-transformers `CrossEncoder` layout: `BertForSequenceClassification` with one
//! label) and scores the pair; it sees how the words of the two relate, which two vectors
//! compared by their angle cannot. Other re-rankers (a chat model, in the node) implement
//! [`Reranker`] too. The search applies them in order, each over its [`Reranker::depth`].

use std::path::Path;

use tokenizers::{EncodeInput, Tokenizer};

use super::bert::{Bert, Pool};
use super::embed::EmbedError;
use super::minilm::{self, ModelError};

/// How many of the first ranking's best a cross-encoder reads: each is one pass of the
/// model over the query and a passage, so this is the cost of a search.
pub const CROSS_ENCODER_DEPTH: usize = 30;

/// A second stage over the first ranking's best.
pub trait Reranker: Send + Sync + std::fmt::Debug {
    /// What it is, for `status` and logs.
    fn name(&self) -> &str;
    /// How many of the first ranking's best it orders again.
    fn depth(&self) -> usize;
    /// One score per passage, higher for a passage more relevant to `query`. An error
    /// leaves the first ranking's order (the search still answers).
    fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, EmbedError>;
}

/// A cross-encoder BERT, loaded and ready.
pub struct CrossEncoder {
    model: Bert,
    tokenizer: Tokenizer,
    model_id: String,
    /// The model's own name, from its config.
    given_name: String,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("model_id", &self.model_id)
            .finish_non_exhaustive()
    }
}

/// Whether the model folder `dir` holds a cross-encoder (its `config.json` names a
/// sequence-classification architecture) rather than a sentence-embedding model.
pub fn is_cross_encoder(dir: &Path) -> bool {
    std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|config| {
            config["architectures"].as_array().map(|names| {
                names.iter().any(|n| {
                    n.as_str()
                        .is_some_and(|n| n.ends_with("ForSequenceClassification"))
                })
            })
        })
        .unwrap_or(false)
}

impl CrossEncoder {
    /// Loads and checks the cross-encoder in `dir` (its classifier must have one output).
    pub fn load(dir: &Path) -> Result<CrossEncoder, ModelError> {
        let (model, tokenizer, hex, name) = minilm::load_bert(dir, true)?;
        // A pair's second text has segment 1: the model must have a row for every segment
        // its tokenizer gives, or it could not run on any pair.
        let probe =
            tokenizer
                .encode(("query", "passage"), true)
                .map_err(|e| ModelError::Invalid {
                    file: "tokenizer.json",
                    reason: format!("cannot encode a pair: {e}"),
                })?;
        let segments = model.type_vocab_size();
        if let Some(highest) = probe.get_type_ids().iter().max()
            && *highest as usize >= segments
        {
            return Err(ModelError::Invalid {
                file: "config.json",
                reason: format!(
                    "type_vocab_size {segments} has no segment {highest}, which the tokenizer gives a pair's passage"
                ),
            });
        }
        Ok(CrossEncoder {
            model,
            tokenizer,
            model_id: format!("cross-{hex}"),
            given_name: name,
        })
    }

    /// The id every node derives from the same weights.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// The model's own name, from its config (informative only).
    pub fn model_name(&self) -> &str {
        &self.given_name
    }
}

impl Reranker for CrossEncoder {
    fn name(&self) -> &str {
        &self.model_id
    }

    fn depth(&self) -> usize {
        CROSS_ENCODER_DEPTH
    }

    /// The probability the model gives each pair (the sigmoid of its score), as the
    /// sentence-transformers `CrossEncoder` reports a one-label model's.
    fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>, EmbedError> {
        if passages.is_empty() {
            return Ok(Vec::new());
        }
        let pairs: Vec<EncodeInput<'_>> = passages.iter().map(|p| (query, *p).into()).collect();
        // The pair is cut to the model's length, the longer of the two first.
        let encodings = self
            .tokenizer
            .encode_batch(pairs, true)
            .map_err(|e| EmbedError::Failed(format!("{}: tokenizing: {e}", self.model_id)))?;
        let encoded = encodings
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i, e.get_ids().to_vec(), e.get_type_ids().to_vec()))
            .collect();
        let scores = minilm::run(
            &self.model,
            &minilm::batches(encoded),
            Pool::Score,
            passages.len(),
        );
        Ok(scores
            .into_iter()
            .map(|s| s.first().map_or(0.0, |s| 1.0 / (1.0 + (-s).exp())))
            .collect())
    }
}
