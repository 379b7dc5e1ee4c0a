//! The node's configuration: `DATA/config.toml`, optional. Every setting has a default.
//!
//! ```toml
//! [embedder]
//! kind = "openai"                      # or "model" (installed), "builtin"
//!                                      # default: the installed model if any, else builtin
//! url = "http://127.0.0.1:11434/v1"    # an OpenAI-compatible API base
//! model = "nomic-embed-text"
//! api_key_env = "OPENAI_API_KEY"       # read the key from this variable (or: api_key = "…")
//!
//! [search]
//! rerank = "model"                     # a second stage over the best hits: "model" (the
//!                                      # cross-encoder `mnemon model install` installed),
//!                                      # "llm" (the [chat] model orders the best 20),
//!                                      # "model+llm" (both, in that order); default "off"
//!
//! [chat]                               # for `mnemon ask`, the chat page and rerank = "llm"
//! url = "http://127.0.0.1:11434/v1"    # default: a local Ollama
//! model = "llama3.2"                   # default
//! api_key_env = "OPENAI_API_KEY"       # or api_key = "…"; none by default
//!
//! [backup]                             # scheduled backups, while `mnemon serve` runs
//! folder = "/mnt/usb/mnemon-backups"   # default DATA/backups (put them on another disk)
//! interval = "1d"                      # default 1d; s, m, h or d
//! keep = 7                             # how many are kept, default 7
//! passphrase_file = "/etc/mnemon/backup-passphrase"   # or passphrase_env = "VAR"
//! ```

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::ask::{ChatClient, DEFAULT_CHAT_MODEL, DEFAULT_CHAT_URL};
use crate::search::embed::{Embedder, HashEmbedder};
use crate::search::openai::OpenAiEmbedder;

/// `config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which embedder search uses.
    #[serde(default)]
    pub embedder: EmbedderConfig,
    /// How search ranks.
    #[serde(default)]
    pub search: SearchConfig,
    /// The chat model questions are answered with.
    #[serde(default)]
    pub chat: ChatConfig,
    /// Scheduled backups (none without this table).
    #[serde(default)]
    pub backup: Option<crate::backup::BackupConfig>,
}

/// The `[chat]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    /// API base of an OpenAI-compatible endpoint; default: a local Ollama.
    pub url: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// The API key itself (prefer `api_key_env`).
    pub api_key: Option<String>,
    /// The environment variable holding the API key.
    pub api_key_env: Option<String>,
}

/// The `[search]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchConfig {
    /// The second stages: `off` (default), `model`, `llm` or `model+llm`.
    pub rerank: Option<String>,
}

/// A second stage `[search] rerank` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerank {
    /// The installed cross-encoder.
    Model,
    /// The `[chat]` model.
    Llm,
}

impl SearchConfig {
    /// The second stages `rerank` names, in order.
    pub fn rerank(&self) -> Result<Vec<Rerank>> {
        let Some(text) = self.rerank.as_deref() else {
            return Ok(Vec::new());
        };
        let text = text.trim();
        if text == "off" {
            return Ok(Vec::new());
        }
        let mut stages = Vec::new();
        for part in text.split('+').map(str::trim) {
            let stage = match part {
                "model" => Rerank::Model,
                "llm" => Rerank::Llm,
                other => bail!(
                    "[search] rerank {other:?} is not one of \"off\", \"model\", \"llm\" or \"model+llm\""
                ),
            };
            if stages.contains(&stage) {
                bail!("[search] rerank names {part:?} twice");
            }
            stages.push(stage);
        }
        Ok(stages)
    }

    /// Whether the installed cross-encoder is one of the second stages.
    pub fn reranks_with_model(&self) -> Result<bool> {
        Ok(self.rerank()?.contains(&Rerank::Model))
    }
}

/// The `[embedder]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    /// `builtin`, `model` or `openai`; unset: the installed model if there is one.
    pub kind: Option<String>,
    /// API base of an OpenAI-compatible endpoint.
    pub url: Option<String>,
    /// Model name.
    pub model: Option<String>,
    /// The API key itself (prefer `api_key_env`).
    pub api_key: Option<String>,
    /// The environment variable holding the API key.
    pub api_key_env: Option<String>,
}

impl Config {
    /// Reads `config.toml` from the data folder; defaults when it does not exist.
    pub fn load(data_dir: &Path) -> Result<Config> {
        let path = data_dir.join("config.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // The parser's message alone, without the line it quotes: that line may hold a
        // secret written where it does not belong.
        toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            anyhow::anyhow!(
                "{} is not a valid configuration{}: {}",
                path.display(),
                line.map(|l| format!(" (line {l})")).unwrap_or_default(),
                e.message()
            )
        })
    }

    /// The backup schedule `[backup]` sets for the data folder `data`.
    pub fn backup_schedule(&self, data: &Path) -> Result<Option<crate::backup::Schedule>> {
        crate::backup::Schedule::from_config(self.backup.as_ref(), data)
    }

    /// The client of the chat endpoint the configuration names (nothing is sent yet).
    pub fn chat(&self) -> Result<ChatClient> {
        let c = &self.chat;
        let key = api_key("chat", &c.api_key, &c.api_key_env)?;
        ChatClient::new(
            c.url.as_deref().unwrap_or(DEFAULT_CHAT_URL),
            c.model.as_deref().unwrap_or(DEFAULT_CHAT_MODEL),
            key,
        )
        .context("[chat] in config.toml")
    }

    /// The second stages `[search] rerank` names, loaded (the cross-encoder from the data
    /// folder `data`, the chat model's client).
    pub fn rerankers(&self, data: &Path) -> Result<Vec<Arc<dyn crate::search::rerank::Reranker>>> {
        let mut out: Vec<Arc<dyn crate::search::rerank::Reranker>> = Vec::new();
        for stage in self.search.rerank()? {
            match stage {
                Rerank::Model => match crate::model::load_reranker(data)? {
                    Some(model) => out.push(Arc::new(model)),
                    None => bail!(
                        "[search] rerank = \"model\" but no cross-encoder is installed: run `mnemon model install PATH` with one"
                    ),
                },
                Rerank::Llm => out.push(Arc::new(crate::rerank::LlmReranker::new(self.chat()?))),
            }
        }
        Ok(out)
    }

    /// The embedder the configuration names, for the data folder `data`.
    pub fn embedder(&self, data: &Path) -> Result<Arc<dyn Embedder>> {
        let e = &self.embedder;
        match e.kind.as_deref() {
            None => match crate::model::load_active(data)? {
                Some(model) => Ok(Arc::new(model)),
                None => Ok(Arc::new(HashEmbedder::default())),
            },
            Some("model") => match crate::model::load_active(data)? {
                Some(model) => Ok(Arc::new(model)),
                None => bail!(
                    "[embedder] kind = \"model\" but no model is installed: run `mnemon model install PATH`"
                ),
            },
            Some("builtin") => Ok(Arc::new(HashEmbedder::default())),
            Some("openai") => {
                let url = e
                    .url
                    .as_deref()
                    .context("[embedder] kind = \"openai\" needs url")?;
                let model = e
                    .model
                    .as_deref()
                    .context("[embedder] kind = \"openai\" needs model")?;
                let key = api_key("embedder", &e.api_key, &e.api_key_env)?;
                Ok(Arc::new(OpenAiEmbedder::connect(url, model, key)?))
            }
            Some(other) => {
                bail!("unknown [embedder] kind {other:?}: use \"model\", \"builtin\" or \"openai\"")
            }
        }
    }
}

/// An API key: given, or read from the environment variable named.
fn api_key(table: &str, key: &Option<String>, var: &Option<String>) -> Result<Option<String>> {
    Ok(match (key, var) {
        (Some(key), _) => Some(key.clone()),
        (None, Some(var)) => Some(
            std::env::var(var)
                .with_context(|| format!("[{table}] api_key_env names {var}, which is not set"))?,
        ),
        (None, None) => None,
    })
}
