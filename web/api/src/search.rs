//! Search by meaning and by words, and questions answered from the memories.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `GET /api/v1/search` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams, JsonSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The query text.
    pub q: String,
    /// How many hits (default 10, 1 to 1000).
    pub k: Option<usize>,
    /// `hybrid` (default), `semantic` (also called `vector`) or `keyword`.
    pub mode: Option<SearchMode>,
    /// Only this collection (id or name).
    pub collection: Option<String>,
    /// Only this tag.
    pub tag: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only memories created at or after this time (milliseconds since the epoch).
    pub since: Option<i64>,
    /// Only memories created before this time (milliseconds since the epoch).
    pub until: Option<i64>,
    /// Minimum importance.
    pub min_importance: Option<f64>,
    /// Wait (up to a few seconds) until the index reflects this change-log position, the
    /// `seq` a write answered with; 503 if it does not get there in time.
    pub after: Option<u64>,
    /// Whether the node's second stage (`[search] rerank`: a cross-encoder or the chat
    /// model) orders the best hits again; default: when one is set up. `true` without one
    /// is refused.
    pub rerank: Option<bool>,
    /// Only these collections (ids), when the caller is held to some: set by the
    /// application layer from a token's scope, never read from a request.
    #[serde(skip)]
    #[schemars(skip)]
    #[param(ignore)]
    pub within: Option<Vec<String>>,
}

names! {
    /// How a search ranks memories. One set of names for the API, the UI, the CLI and MCP.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    pub enum SearchMode as "mode" {
        /// By meaning and by words, fused (the default).
        #[default]
        Hybrid = "hybrid",
        /// By meaning alone (the vector index); `vector` is accepted as another name.
        Semantic = "semantic" | "vector",
        /// By words alone (the keyword index).
        Keyword = "keyword",
    }
}

/// One search hit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct HitView {
    /// The memory's id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The score; higher is better.
    pub score: f32,
    /// A passage with the matching words wrapped in `**`.
    pub snippet: String,
    /// The chunk of the text that matched.
    pub chunk: u32,
}

/// Reads a time a person or an agent gave (`2026-11-21`, `2026-11-21T09:30`, RFC 3339;
/// UTC unless an offset is given) as milliseconds since the epoch, for `since` and `until`.
pub fn parse_time(field: &str, text: &str) -> Result<i64, crate::Error> {
    text.parse::<mnemon_crdt::Timestamp>()
        .map(mnemon_crdt::Timestamp::as_millis)
        .map_err(|e| crate::Error::invalid(format!("{field}: {e}")))
}

/// `POST /api/v1/ask`: a question answered from the memories by a chat model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    pub question: String,
    /// How many memories to give the model (default 6, 1 to 20).
    #[serde(default)]
    pub k: Option<usize>,
    /// Only memories of this collection (id or name).
    #[serde(default)]
    pub collection: Option<String>,
    /// Only these collections (ids), when the caller is held to some: set by the
    /// application layer from a token's scope, never read from a request.
    #[serde(skip)]
    #[schemars(skip)]
    #[schema(ignore)]
    pub within: Option<Vec<String>>,
}

/// A memory given to the model, numbered as the answer cites it (`[1]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct CitationView {
    /// The number the answer cites it by.
    pub n: usize,
    /// The memory's id.
    pub id: String,
    /// Its title.
    pub title: String,
}

/// A finished answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema, JsonSchema)]
pub struct AnswerView {
    /// The answer's text, with citations such as `[1]`.
    pub answer: String,
    /// The memories the model was given.
    pub sources: Vec<CitationView>,
    /// The numbers of the sources the answer cites.
    pub cited: Vec<usize>,
    /// The chat model that answered.
    pub model: String,
}

/// What an answer streams, in order: the sources once, then pieces of text.
#[derive(Debug, Clone, PartialEq)]
pub enum AskEvent {
    /// The memories given to the model (sent when the model starts answering).
    Sources(Vec<CitationView>),
    /// The next piece of the answer.
    Delta(String),
}

/// Parses a duration such as `90s`, `30m`, `12h` or `7d` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30m, 12h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too long"))
}
