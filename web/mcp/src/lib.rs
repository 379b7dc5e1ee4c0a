//! Memory for AI agents: a Model Context Protocol server over the node's API.
//!
//! The tools (`remember`, `recall`, `get`, `update`, `forget`, `link`,
//! `list_collections`, and for to-dos `add_task`, `list_tasks`, `complete_task`) and the resources (every memory as `mnemon://memory/ID`, in
//! Markdown) call the same [`Api`] as the HTTP API and the CLI, so an agent sees
//! exactly what its owner sees and every rule (roles, validation) applies. `mnemon mcp`
//! serves it over stdio; `mnemon serve` at `/mcp` (streamable HTTP), behind the API's
//! token and `Host` checks.
//!
//! rmcp's API moves fast: it is used only in this crate.

use std::sync::Arc;

use mnemon_api::{
    Api, Error as ApiError, ErrorKind, SearchMode, TaskBoard, TaskStatus, budget, parse_time,
};
use mnemon_api::{CreateMemory, LinkView, ListQuery, PatchMemory, SearchQuery, TaskFields};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    CompleteRequestParams, CompleteResult, CompletionInfo, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams, Prompt,
    PromptArgument, PromptMessage, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Reference, Resource, ResourceContents, ResourceTemplate,
    ServerCapabilities, ServerConfig,
};
use rmcp::model::{
    ResourceUpdatedNotificationParam, SubscribeRequestParams, SubscriptionFilter,
    UnsubscribeRequestParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router,
};
use serde::{Deserialize, Serialize};

/// The URI prefix of memories as resources.
const MEMORY_URI: &str = "mnemon://memory/";
/// The URI prefix of collections as resources (a collection's memories, in brief).
const COLLECTION_URI: &str = "mnemon://collection/";
/// The URI prefix of tags as resources (the memories with a tag, in brief).
const TAG_URI: &str = "mnemon://tag/";
/// Memories a collection resource names (the newest first), and completions at most.
const COLLECTION_PAGE: usize = 100;

/// How many memories `resources/list` names (the newest first); the rest are reachable
/// through `recall` and `get`.
const RESOURCE_LIMIT: usize = 1000;

/// The MCP server: tools and resources over a [`Api`].
#[derive(Clone)]
pub struct Mcp {
    backend: Arc<dyn Api>,
    tool_router: ToolRouter<Mcp>,
    /// The change-log position of this session's last write: its searches wait for the
    /// index to reach it (read-your-writes).
    last_write: Arc<std::sync::atomic::AtomicU64>,
    /// The memories this session subscribed to (`resources/subscribe`), by URI.
    watched: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// Whether this session's forwarder of changes runs.
    forwarding: Arc<std::sync::atomic::AtomicBool>,
    /// Served at `/mcp`: each request is answered as the caller its credential makes
    /// (the owner or a capability token), which the HTTP authentication put on it.
    over_http: bool,
}

impl std::fmt::Debug for Mcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mcp").finish_non_exhaustive()
    }
}

/// Tokens a read answers with when no budget is given.
const DEFAULT_BUDGET: usize = 2000;

/// What `recall` answers: a page of the hits, best first, within the budget.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Hits {
    /// The hits, best first.
    pub hits: Vec<RecallHit>,
    /// Where the rest starts: pass it as `cursor` (with the same query and `k`) for the
    /// next page. Absent when this page ends the results.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// What was left out of this page for the budget, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cut: Option<String>,
}

/// One hit of `recall`: its id, title, date, score and the passage that matched; with
/// `full`, the memory's text too.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct RecallHit {
    /// The hit.
    #[serde(flatten)]
    pub hit: mnemon_api::HitView,
    /// With `full`: the memory's text (cut to the budget; `get` with a cursor reads on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// With `full`, when the text was cut: where `get` reads on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_next_cursor: Option<String>,
}

/// What `get` answers: the memory, its text cut to the budget.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Got {
    /// The memory; `content` starts at the cursor and fits the budget.
    #[serde(flatten)]
    pub memory: mnemon_api::MemoryView,
    /// How long the whole text is, in characters.
    pub total_chars: usize,
    /// Where the rest of the text starts: pass it as `cursor` to read on. Absent when
    /// `content` reaches the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A memory in brief, for scanning: what `list` answers.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Brief {
    /// Its id (`get` reads it in full).
    pub id: String,
    /// Its title.
    pub title: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// Its kind.
    pub kind: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its first lines.
    pub first_lines: String,
}

/// What `list` answers: a page of memories in brief, most recently changed first.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Briefs {
    /// The memories.
    pub memories: Vec<Brief>,
    /// Where the rest starts: pass it as `cursor` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `list`: memories, most recently changed first, in brief.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only this collection (id or name).
    #[serde(default)]
    pub collection: Option<String>,
    /// Only memories with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Only this kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// The most tokens to answer with (default 2000; about 4 characters each).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// From a previous answer's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `get`: one memory, its text read a budget at a time.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetArgs {
    /// The memory's id.
    pub id: String,
    /// The most tokens of text to answer with (default 2000; about 4 characters each).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// From a previous answer's `next_cursor`: where in the text to go on.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// What `list_collections` answers.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Collections {
    /// Every collection this node holds.
    pub collections: Vec<mnemon_api::CollectionView>,
}

/// What `forget` answers.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Forgotten {
    /// The id of the memory forgotten.
    pub forgot: String,
}

/// `remember`: store a new memory, or several.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberArgs {
    /// What to remember (Markdown). Leave it out to write a list (`memories`).
    #[serde(default)]
    pub content: Option<String>,
    /// A title; default: the first line of the content.
    #[serde(default)]
    pub title: Option<String>,
    /// Tags (with `memories`: added to each).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Collection id or name; default: the owner's private collection (with `memories`:
    /// for those that name none).
    #[serde(default)]
    pub collection: Option<String>,
    /// Kind: note, fact, conversation, task…; default note (with `memories`: for those
    /// that name none).
    #[serde(default)]
    pub kind: Option<String>,
    /// If a memory of the collection already says the same: `near` (the default: case,
    /// spacing and punctuation at the ends aside) or `exact` answers with it
    /// (`created: false`) and writes nothing; `off` writes a second copy.
    #[serde(default)]
    pub dedupe: Option<mnemon_api::Dedupe>,
    /// Several memories at once (1 to 100), instead of `content` and `title`; written
    /// in order, each answered in `memories`.
    #[serde(default)]
    pub memories: Vec<RememberItem>,
}

/// One memory of a `remember` list.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RememberItem {
    /// What to remember (Markdown).
    pub content: String,
    /// A title; default: the first line of the content.
    #[serde(default)]
    pub title: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Collection id or name.
    #[serde(default)]
    pub collection: Option<String>,
    /// Kind.
    #[serde(default)]
    pub kind: Option<String>,
}

/// The most memories one `remember` writes.
pub const MAX_REMEMBER: usize = 100;

/// What `remember` answers: the memory written (or found), and with a list, every one.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Remembered {
    /// The memory (the first, for a list).
    #[serde(flatten)]
    pub memory: mnemon_api::MemoryView,
    /// With `memories`: every memory, in the order given (`created: false` for one
    /// already there).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memories: Vec<mnemon_api::MemoryView>,
}

impl RememberArgs {
    /// The memories to write, in order.
    fn into_creates(self) -> Result<Vec<CreateMemory>, McpError> {
        let dedupe = Some(self.dedupe.unwrap_or(mnemon_api::Dedupe::Near));
        match (self.content, self.memories.is_empty()) {
            (Some(content), true) => Ok(vec![CreateMemory {
                title: self.title,
                content,
                tags: self.tags,
                collection: self.collection,
                kind: self.kind,
                dedupe,
                ..CreateMemory::default()
            }]),
            (None, false) if self.title.is_some() => Err(McpError::invalid_params(
                "title: give each of `memories` its own title",
                None,
            )),
            (None, false) if self.memories.len() > MAX_REMEMBER => Err(McpError::invalid_params(
                format!(
                    "memories: at most {MAX_REMEMBER} at once, not {}",
                    self.memories.len()
                ),
                None,
            )),
            (None, false) => Ok(self
                .memories
                .into_iter()
                .map(|item| CreateMemory {
                    title: item.title,
                    content: item.content,
                    tags: self.tags.iter().cloned().chain(item.tags).collect(),
                    collection: item.collection.or_else(|| self.collection.clone()),
                    kind: item.kind.or_else(|| self.kind.clone()),
                    dedupe,
                    ..CreateMemory::default()
                })
                .collect()),
            (Some(_), false) => Err(McpError::invalid_params(
                "give `content` for one memory or `memories` for several, not both",
                None,
            )),
            (None, true) => Err(McpError::invalid_params(
                "content: what to remember (or `memories`, a list)",
                None,
            )),
        }
    }
}

/// `recall`: search by meaning and by words.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecallArgs {
    /// What to look for.
    pub query: String,
    /// How many hits (default 10, 1 to 1000).
    #[serde(default)]
    pub k: Option<usize>,
    /// Only this collection (id or name).
    #[serde(default)]
    pub collection: Option<String>,
    /// Only memories with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Only this kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// `hybrid` (default), `semantic` (or `vector`) or `keyword`.
    #[serde(default)]
    pub mode: Option<SearchMode>,
    /// Only memories created at or after this time (`2026-11-21` or RFC 3339). Without
    /// `since` and `until`, a time named in the query ("last week", "in May 2023") puts
    /// the memories of that time first.
    #[serde(default)]
    pub since: Option<String>,
    /// Only memories created before this time (`2026-11-21` or RFC 3339).
    #[serde(default)]
    pub until: Option<String>,
    /// The most tokens to answer with (default 2000; about 4 characters each). Hits
    /// beyond it are left for the next page (`next_cursor`).
    #[serde(default)]
    pub max_tokens: Option<usize>,
    /// From a previous answer's `next_cursor` (with the same query and `k`).
    #[serde(default)]
    pub cursor: Option<String>,
    /// Each hit with its memory's whole text (cut to the budget), not only the passage.
    #[serde(default)]
    pub full: bool,
    /// `false` leaves out the node's second stage (a cross-encoder or the chat model
    /// ordering the best hits again), when its owner set one up.
    #[serde(default)]
    pub rerank: Option<bool>,
}

/// A memory's id.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdArgs {
    /// The memory's id.
    pub id: String,
}

/// `update`: change a memory; what is left out stays.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    /// The memory's id.
    pub id: String,
    /// A new title.
    #[serde(default)]
    pub title: Option<String>,
    /// A new content.
    #[serde(default)]
    pub content: Option<String>,
    /// Tags to add.
    #[serde(default)]
    pub add_tags: Vec<String>,
    /// Tags to remove.
    #[serde(default)]
    pub remove_tags: Vec<String>,
}

/// `link`: relate two memories.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkArgs {
    /// The memory the link starts from.
    pub from: String,
    /// The memory it points to.
    pub to: String,
    /// The relation, e.g. `see-also`, `part-of`, `contradicts` (default `related`).
    #[serde(default)]
    pub relation: Option<String>,
}

/// `add_task`: a to-do, stored as a memory of kind `task`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddTaskArgs {
    /// What is to be done.
    pub text: String,
    /// When it is due: a date (`2026-12-01`) or an RFC 3339 time.
    #[serde(default)]
    pub due: Option<String>,
    /// Higher is more urgent (default 0).
    #[serde(default)]
    pub priority: Option<i64>,
    /// 1 (trivial) to 5 (hard), default 1; finishing it earns 10 points per level.
    #[serde(default)]
    pub difficulty: Option<u8>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Collection id or name; default: the owner's private collection.
    #[serde(default)]
    pub collection: Option<String>,
}

/// `list_tasks`: the to-do list.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTasksArgs {
    /// Include finished tasks too (default: open ones only).
    #[serde(default)]
    pub all: bool,
    /// Only this collection (id or name).
    #[serde(default)]
    pub collection: Option<String>,
}

/// An API error as an MCP error: what the caller got wrong is `invalid_params`, a
/// missing memory `resource_not_found`, the rest `internal_error`; the message is the
/// API's own, which names what was wrong.
fn mcp_error(e: ApiError) -> McpError {
    match e.kind {
        ErrorKind::NotFound => McpError::resource_not_found(e.message, None),
        kind if kind.is_callers() => McpError::invalid_params(e.message, None),
        _ => McpError::internal_error(e.message, None),
    }
}

impl Mcp {
    /// The server over `backend`.
    pub fn new(backend: Arc<dyn Api>) -> Mcp {
        Mcp {
            backend,
            tool_router: Self::tool_router(),
            last_write: Arc::default(),
            watched: Arc::default(),
            forwarding: Arc::default(),
            over_http: false,
        }
    }

    /// The server as the caller of one request may use it. Over stdio, the process's own
    /// backend (already scoped if `mnemon mcp` was given a capability token); over HTTP,
    /// the node as the request's credential allows, and nothing without one.
    fn for_request(&self, context: &RequestContext<RoleServer>) -> Result<Mcp, McpError> {
        if !self.over_http {
            return Ok(self.clone());
        }
        let caller = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<mnemon_api::Caller>())
            .ok_or_else(|| McpError::invalid_request("the request carries no credential", None))?;
        Ok(Mcp {
            backend: caller.api(self.backend.clone()),
            ..self.clone()
        })
    }

    /// Remembers the position of a write this session made.
    fn wrote(&self, memory: &mnemon_api::MemoryView) {
        if let Some(seq) = memory.seq {
            self.last_write
                .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Runs `f` on the backend off the async threads (the store and indexes block).
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Api) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, McpError> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || f(backend.as_ref()))
            .await
            .map_err(|e| McpError::internal_error(format!("the call failed: {e}"), None))?
            .map_err(mcp_error)
    }
}

#[tool_router]
impl Mcp {
    #[tool(
        title = "Remember",
        description = "Store a new memory (a note, fact, conversation or task) and return it with its id; or several at once (`memories`, up to 100), each returned in `memories`. A memory of the same collection that already says the same is returned instead (created: false).",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn remember(
        &self,
        Parameters(args): Parameters<RememberArgs>,
    ) -> Result<Json<Remembered>, McpError> {
        let creates = args.into_creates()?;
        let single = creates.len() == 1;
        let mut memories: Vec<mnemon_api::MemoryView> = Vec::new();
        for (i, new) in creates.into_iter().enumerate() {
            match self.backend.clone().create_async(new).await {
                Ok(memory) => memories.push(memory),
                Err(e) if single => return Err(mcp_error(e)),
                Err(e) => {
                    let before: Vec<&str> = memories.iter().map(|m| m.id.as_str()).collect();
                    return Err(mcp_error(ApiError::new(
                        e.kind,
                        format!(
                            "memories[{i}]: {} (the {} before it were written: {})",
                            e.message,
                            before.len(),
                            if before.is_empty() {
                                "none".to_owned()
                            } else {
                                before.join(", ")
                            }
                        ),
                    )));
                }
            }
        }
        for memory in &memories {
            self.wrote(memory);
        }
        let mut memories = memories.into_iter();
        let memory = memories
            .next()
            .ok_or_else(|| McpError::internal_error("nothing was written", None))?;
        let rest: Vec<mnemon_api::MemoryView> = memories.collect();
        let memories = if single {
            Vec::new()
        } else {
            std::iter::once(memory.clone()).chain(rest).collect()
        };
        Ok(Json(Remembered { memory, memories }))
    }

    #[tool(
        title = "Recall",
        description = "Search the memories by meaning and by words; returns hits with ids, titles, dates, scores and the passages that matched, a budget's worth at a time (`next_cursor` gives the next page; `full` adds each memory's text).",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn recall(
        &self,
        Parameters(args): Parameters<RecallArgs>,
    ) -> Result<Json<Hits>, McpError> {
        if args.query.trim().is_empty() {
            return Err(McpError::invalid_params("query: must not be empty", None));
        }
        let time = |name: &str, value: Option<&String>| -> Result<Option<i64>, McpError> {
            value
                .map(|v| {
                    parse_time(name, v).map_err(|e| McpError::invalid_params(e.to_string(), None))
                })
                .transpose()
        };
        let since = time("since", args.since.as_ref())?;
        let until = time("until", args.until.as_ref())?;
        let after = match self.last_write.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            seq => Some(seq),
        };
        let from = budget::read_cursor(args.cursor.as_deref()).map_err(mcp_error)?;
        let chars = budget::chars_for(args.max_tokens.unwrap_or(DEFAULT_BUDGET));
        let full = args.full;
        let (hits, total) = self
            .call(move |b| {
                let all = b.search(&SearchQuery {
                    after,
                    q: args.query,
                    k: Some(args.k.unwrap_or(10)),
                    mode: args.mode,
                    collection: args.collection,
                    tag: args.tag,
                    kind: args.kind,
                    since,
                    until,
                    rerank: args.rerank,
                    ..SearchQuery::default()
                })?;
                let total = all.len();
                let mut page = Vec::new();
                // With `full`, each text gets at most half the budget, and only as many hits
                // are read as could fit.
                let mut used = 0;
                for hit in all.into_iter().skip(from) {
                    let (content, content_next_cursor) = if full && used < chars {
                        let (text, next) =
                            budget::json_window(&b.get(&hit.id)?.content, 0, chars / 2);
                        (Some(text), next.map(|n| n.to_string()))
                    } else {
                        (None, None)
                    };
                    let hit = RecallHit {
                        hit,
                        content,
                        content_next_cursor,
                    };
                    used += budget::json_chars(&hit);
                    page.push(hit);
                }
                Ok((page, total))
            })
            .await?;
        let (hits, cut) = budget::fit(hits, chars);
        let end = from + hits.len();
        Ok(Json(Hits {
            cut: cut.then(|| {
                format!(
                    "{} of {total} hits are on later pages (the budget is about {} tokens)",
                    total - end,
                    chars / budget::CHARS_PER_TOKEN
                )
            }),
            next_cursor: (end < total).then(|| end.to_string()),
            hits,
        }))
    }

    #[tool(
        title = "Read a memory",
        description = "Read one memory by its id: its fields, and its text a budget at a time (`next_cursor` reads on).",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn get(&self, Parameters(args): Parameters<GetArgs>) -> Result<Json<Got>, McpError> {
        let from = budget::read_cursor(args.cursor.as_deref()).map_err(mcp_error)?;
        let chars = budget::chars_for(args.max_tokens.unwrap_or(DEFAULT_BUDGET));
        let mut memory = self.call(move |b| b.get(&args.id)).await?;
        let total_chars = memory.content.chars().count();
        let text = std::mem::take(&mut memory.content);
        // The budget is for the whole answer: the text gets what the rest leaves.
        let rest = budget::json_chars(&memory) + 64;
        let (content, next) = budget::json_window(&text, from, chars.saturating_sub(rest).max(64));
        memory.content = content;
        Ok(Json(Got {
            memory,
            total_chars,
            next_cursor: next.map(|n| n.to_string()),
        }))
    }

    #[tool(
        title = "List memories",
        description = "Memories in brief (id, title, dates, kind, tags, first lines), most recently changed first, a budget's worth at a time; `get` reads one in full.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list(&self, Parameters(args): Parameters<ListArgs>) -> Result<Json<Briefs>, McpError> {
        let from = budget::read_cursor(args.cursor.as_deref()).map_err(mcp_error)?;
        let chars = budget::chars_for(args.max_tokens.unwrap_or(DEFAULT_BUDGET));
        let page = self
            .call(move |b| {
                b.list(&ListQuery {
                    collection: args.collection,
                    tag: args.tag,
                    kind: args.kind,
                    offset: Some(from),
                    limit: Some(100),
                    ..ListQuery::default()
                })
            })
            .await?;
        let more = page.next_offset.is_some();
        let briefs: Vec<Brief> = page
            .items
            .into_iter()
            .map(|m| Brief {
                first_lines: budget::first_lines(&m.content, 200),
                id: m.id,
                title: m.title,
                created_at: m.created_at,
                updated_at: m.updated_at,
                kind: m.kind,
                tags: m.tags,
            })
            .collect();
        let (memories, cut) = budget::fit(briefs, chars);
        let end = from + memories.len();
        Ok(Json(Briefs {
            next_cursor: (cut || more).then(|| end.to_string()),
            memories,
        }))
    }

    #[tool(
        title = "Update a memory",
        description = "Change a memory's title, content or tags; fields left out stay as they are.",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn update(
        &self,
        Parameters(args): Parameters<UpdateArgs>,
    ) -> Result<Json<mnemon_api::MemoryView>, McpError> {
        let memory = self
            .call(move |b| {
                b.update(
                    &args.id,
                    PatchMemory {
                        title: args.title,
                        content: args.content,
                        add_tags: args.add_tags,
                        remove_tags: args.remove_tags,
                        ..PatchMemory::default()
                    },
                )
            })
            .await?;
        self.wrote(&memory);
        Ok(Json(memory))
    }

    #[tool(
        title = "Forget a memory",
        description = "Forget a memory for good (it is purged from the disk).",
        annotations(
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn forget(
        &self,
        Parameters(args): Parameters<IdArgs>,
    ) -> Result<Json<Forgotten>, McpError> {
        let id = args.id.clone();
        self.call(move |b| b.delete(&args.id)).await?;
        Ok(Json(Forgotten { forgot: id }))
    }

    #[tool(
        title = "Link two memories",
        description = "Link one memory to another with a relation name.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn link(
        &self,
        Parameters(args): Parameters<LinkArgs>,
    ) -> Result<Json<mnemon_api::MemoryView>, McpError> {
        let memory = self
            .call(move |b| {
                b.get(&args.to)?;
                b.update(
                    &args.from,
                    PatchMemory {
                        add_links: vec![LinkView {
                            target: args.to,
                            relation: args.relation.unwrap_or_else(|| "related".to_owned()),
                        }],
                        ..PatchMemory::default()
                    },
                )
            })
            .await?;
        self.wrote(&memory);
        Ok(Json(memory))
    }

    #[tool(
        title = "Ask",
        description = "Answer a question from the memories with the owner's configured chat model ([chat] in config.toml): the answer cites its sources as [n], listed with their ids.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn ask(
        &self,
        Parameters(args): Parameters<mnemon_api::AskRequest>,
    ) -> Result<Json<mnemon_api::AnswerView>, McpError> {
        if args.question.trim().is_empty() {
            return Err(McpError::invalid_params(
                "question: must not be empty",
                None,
            ));
        }
        let answer = self.call(move |b| b.ask(&args, &mut |_| {})).await?;
        Ok(Json(answer))
    }

    #[tool(
        title = "List collections",
        description = "List the collections this node holds (its own and those shared with it).",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_collections(&self) -> Result<Json<Collections>, McpError> {
        let collections = self.call(|b| b.collections()).await?;
        Ok(Json(Collections { collections }))
    }

    #[tool(
        title = "Add a task",
        description = "Add a task (a to-do) with an optional due date, priority and difficulty; returns it with its id.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn add_task(
        &self,
        Parameters(args): Parameters<AddTaskArgs>,
    ) -> Result<Json<mnemon_api::MemoryView>, McpError> {
        let memory = self
            .backend
            .clone()
            .create_async(CreateMemory {
                content: args.text,
                tags: args.tags,
                collection: args.collection,
                task: Some(TaskFields {
                    status: Some(TaskStatus::Open),
                    priority: args.priority,
                    due: args.due,
                    difficulty: args.difficulty,
                    xp: None,
                }),
                ..CreateMemory::default()
            })
            .await
            .map_err(mcp_error)?;
        self.wrote(&memory);
        Ok(Json(memory))
    }

    #[tool(
        title = "List tasks",
        description = "The task list: open tasks by due date, then priority (finished ones too with all=true), with counts and the points earned.",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_tasks(
        &self,
        Parameters(args): Parameters<ListTasksArgs>,
    ) -> Result<Json<mnemon_api::TaskList>, McpError> {
        let tasks = self
            .call(move |b| {
                b.list_all(&ListQuery {
                    collection: args.collection,
                    kind: Some("task".to_owned()),
                    ..ListQuery::default()
                })
            })
            .await?;
        Ok(Json(TaskBoard::new(tasks).list(args.all)))
    }

    #[tool(
        title = "Complete a task",
        description = "Mark a task done by its id; returns it, with the points it earned.",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn complete_task(
        &self,
        Parameters(args): Parameters<IdArgs>,
    ) -> Result<Json<mnemon_api::MemoryView>, McpError> {
        let memory = self.call(move |b| b.complete_task(&args.id)).await?;
        self.wrote(&memory);
        Ok(Json(memory))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Mcp {
    /// Every tool runs as the request's caller ([`Mcp::for_request`]).
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, McpError> {
        let this = self.for_request(&context)?;
        let call = rmcp::handler::server::tool::ToolCallContext::new(&this, request, context);
        self.tool_router.call(call).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_subscribe()
                .enable_prompts()
                .enable_completions()
                .build(),
        )
        .with_server_info(Implementation::new("mnemon", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Mnemon is its owner's personal memory. `recall` before answering from memory; \
             `remember` what the owner asks to keep; cite memory ids.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let this = self.for_request(&context)?;
        let page = this
            .call(|b| {
                b.list(&ListQuery {
                    limit: Some(RESOURCE_LIMIT),
                    ..ListQuery::default()
                })
            })
            .await?;
        let resources = page
            .items
            .into_iter()
            .map(|m| {
                Resource::new(format!("{MEMORY_URI}{}", m.id), m.title.clone())
                    .with_title(m.title)
                    .with_mime_type("text/markdown")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    /// `resources/subscribe` (protocol versions up to 2025-11-25): the session is told
    /// (`notifications/resources/updated`) when the memory changes or goes, whoever
    /// changed it, through the node's own change feed.
    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let this = self.for_request(&context)?;
        let uri = request.uri;
        let Some(id) = uri.strip_prefix(MEMORY_URI).map(str::to_owned) else {
            return Err(McpError::invalid_params(
                format!("{uri}: only memories ({MEMORY_URI}ID) can be subscribed to"),
                None,
            ));
        };
        this.call(move |b| b.get(&id)).await?;
        this.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(uri);
        if !this
            .forwarding
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let (watched, peer) = (this.watched.clone(), context.peer.clone());
            let mut events = this.backend.events();
            tokio::spawn(async move {
                loop {
                    match events.recv().await {
                        Ok(event) => {
                            let uri = format!("{MEMORY_URI}{}", event.id);
                            let wanted = watched
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .contains(&uri);
                            if wanted
                                && peer
                                    .notify_resource_updated(ResourceUpdatedNotificationParam::new(
                                        uri,
                                    ))
                                    .await
                                    .is_err()
                            {
                                return; // the session is gone
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&request.uri);
        Ok(())
    }

    /// Subscriptions (`subscriptions/listen`): to memories, by their URIs.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let memories: Vec<String> = requested
            .resource_subscriptions
            .iter()
            .flatten()
            .filter(|uri| uri.starts_with(MEMORY_URI))
            .cloned()
            .collect();
        Some(
            SubscriptionFilter::builder()
                .resource_subscriptions(memories)
                .build(),
        )
    }

    /// Tells the subscriber when a memory it subscribed to changes or goes, whoever
    /// changed it (the CLI, the UI, another agent, a peer): the node's own change feed.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let this = self.for_request(context.request_context())?;
        let watched: std::collections::HashSet<String> = context
            .accepted()
            .resource_subscriptions
            .iter()
            .flatten()
            .cloned()
            .collect();
        let mut events = this.backend.events();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                event = events.recv() => match event {
                    Ok(event) => {
                        let uri = format!("{MEMORY_URI}{}", event.id);
                        if watched.contains(&uri)
                            && context.sink().notify_resource_updated(uri).await.is_err()
                        {
                            return Ok(());
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        // No feed here (a CLI process talking to a service has none).
                        context.cancelled().await;
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new(format!("{MEMORY_URI}{{id}}{{?max_tokens,cursor}}"), "memory")
                .with_title("A memory")
                .with_description("One memory in Markdown: its title, text and tags; its text cut to max_tokens (default 2000), the rest from cursor on (the text says where).")
                .with_mime_type("text/markdown"),
            ResourceTemplate::new(format!("{COLLECTION_URI}{{name}}{{?max_tokens,cursor}}"), "collection")
                .with_title("A collection")
                .with_description("A collection's memories in brief, most recently changed first, each linking to its memory; as many as fit max_tokens (default 2000), the rest from cursor on (the text says where).")
                .with_mime_type("text/markdown"),
            ResourceTemplate::new(format!("{TAG_URI}{{tag}}{{?max_tokens,cursor}}"), "tag")
                .with_title("A tag")
                .with_description("The memories with a tag, in brief, most recently changed first, each linking to its memory; as many as fit max_tokens (default 2000), the rest from cursor on.")
                .with_mime_type("text/markdown"),
        ]))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let collection = || {
            PromptArgument::new("collection")
                .with_description("Only this collection (id or name)")
                .with_required(false)
        };
        Ok(ListPromptsResult::with_all_items(vec![
            Prompt::new(
                "what_do_i_know",
                Some("What do I know about a topic: the memories that match it, to answer from."),
                Some(vec![
                    PromptArgument::new("topic")
                        .with_description("What to look for")
                        .with_required(true),
                    collection(),
                ]),
            )
            .with_title("What do I know about …"),
            Prompt::new(
                "summarise_week",
                Some("Summarise this week: the memories created in the last seven days."),
                Some(vec![collection()]),
            )
            .with_title("Summarise this week"),
            Prompt::new(
                "plan_tasks",
                Some("Plan my open tasks: the to-do list by due date and priority."),
                Some(vec![collection()]),
            )
            .with_title("Plan my open tasks"),
        ]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let this = self.for_request(&context)?;
        let args = request.arguments.unwrap_or_default();
        let arg = |name: &str| {
            args.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let collection = arg("collection");
        let (description, text) = match request.name.as_str() {
            "what_do_i_know" => {
                let topic = arg("topic")
                    .ok_or_else(|| McpError::invalid_params("topic: what to look for", None))?;
                let query = topic.clone();
                let hits = this
                    .call(move |b| {
                        b.search(&SearchQuery {
                            q: query,
                            k: Some(10),
                            collection,
                            ..SearchQuery::default()
                        })
                    })
                    .await?;
                let mut text = format!(
                    "What do I know about \"{topic}\"? Answer from these memories of mine only, citing their ids; say so if they do not answer it.\n\n"
                );
                for hit in &hits {
                    text.push_str(&format!(
                        "[{}] {} ({}): {}\n",
                        hit.id,
                        hit.title,
                        &hit.created_at[..10.min(hit.created_at.len())],
                        hit.snippet
                    ));
                }
                if hits.is_empty() {
                    text.push_str("(No memory matches it.)\n");
                }
                (format!("What do I know about {topic}"), text)
            }
            "summarise_week" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                let since = now - 7 * 86_400_000;
                let memories = this
                    .call(move |b| {
                        b.list_all(&ListQuery {
                            collection,
                            ..ListQuery::default()
                        })
                    })
                    .await?;
                let mut text = String::from(
                    "Summarise my week from the memories I wrote in the last seven days, by theme, citing their ids.\n\n",
                );
                let week: Vec<_> = memories
                    .iter()
                    .filter(|m| parse_time("created_at", &m.created_at).is_ok_and(|t| t >= since))
                    .collect();
                for m in &week {
                    text.push_str(&format!(
                        "[{}] {} ({}): {}\n",
                        m.id,
                        m.title,
                        &m.created_at[..10.min(m.created_at.len())],
                        budget::first_lines(&m.content, 300).replace('\n', " ")
                    ));
                }
                if week.is_empty() {
                    text.push_str("(Nothing was written this week.)\n");
                }
                ("Summarise this week".to_owned(), text)
            }
            "plan_tasks" => {
                let tasks = this
                    .call(move |b| {
                        b.list_all(&ListQuery {
                            collection,
                            kind: Some("task".to_owned()),
                            ..ListQuery::default()
                        })
                    })
                    .await?;
                let board = TaskBoard::new(tasks).list(false);
                let mut text = String::from(
                    "Plan my open tasks: what to do first and why, given their due dates, priorities and difficulty. Cite their ids.\n\n",
                );
                for t in &board.tasks {
                    let task = t.task.as_ref();
                    text.push_str(&format!(
                        "[{}] {} — due {}, priority {}, difficulty {}\n",
                        t.id,
                        t.title,
                        task.and_then(|t| t.due.clone())
                            .unwrap_or_else(|| "any time".to_owned()),
                        task.map_or(0, |t| t.priority),
                        task.map_or(1, |t| t.difficulty),
                    ));
                }
                if board.tasks.is_empty() {
                    text.push_str("(No open tasks.)\n");
                }
                ("Plan my open tasks".to_owned(), text)
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("no prompt {other:?}: what_do_i_know, summarise_week or plan_tasks"),
                    None,
                ));
            }
        };
        Ok(
            GetPromptResult::new(vec![PromptMessage::new_text(rmcp::model::Role::User, text)])
                .with_description(description)
                .into(),
        )
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let this = self.for_request(&context)?;
        let typed = request.argument.value.to_lowercase();
        let name = request.argument.name.clone();
        let target = match &request.r#ref {
            Reference::Resource(r) if r.uri.starts_with(COLLECTION_URI) => "collection",
            Reference::Resource(r) if r.uri.starts_with(MEMORY_URI) => "memory",
            Reference::Resource(r) if r.uri.starts_with(TAG_URI) => "tag",
            Reference::Prompt(_) if name == "collection" => "collection",
            _ => "",
        };
        let values: Vec<String> = match target {
            "collection" => this
                .call(|b| b.collections())
                .await?
                .into_iter()
                .map(|c| c.name)
                .filter(|n| n.to_lowercase().starts_with(&typed))
                .collect(),
            // A memory's id, found by the start of its title (or of its id).
            "memory" => this
                .call(|b| {
                    b.list(&ListQuery {
                        limit: Some(1000),
                        ..ListQuery::default()
                    })
                })
                .await?
                .items
                .into_iter()
                .filter(|m| {
                    m.title.to_lowercase().starts_with(&typed)
                        || m.id.to_lowercase().starts_with(&typed)
                })
                .map(|m| m.id)
                .collect(),
            // The tags of the most recently changed memories.
            "tag" => this
                .call(|b| {
                    b.list(&ListQuery {
                        limit: Some(1000),
                        ..ListQuery::default()
                    })
                })
                .await?
                .items
                .into_iter()
                .flat_map(|m| m.tags)
                .filter(|t| t.to_lowercase().starts_with(&typed))
                // One spelling per tag: tags match without regard to case.
                .map(|t| (t.to_lowercase(), t))
                .collect::<std::collections::BTreeMap<String, String>>()
                .into_values()
                .collect(),
            _ => Vec::new(),
        };
        let total = values.len();
        let shown: Vec<String> = values.into_iter().take(COLLECTION_PAGE).collect();
        let mut info =
            CompletionInfo::new(shown.clone()).map_err(|e| McpError::internal_error(e, None))?;
        info.total = u32::try_from(total).ok();
        info.has_more = Some(total > shown.len());
        Ok(CompleteResult::new(info))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let this = self.for_request(&context)?;
        let uri = request.uri;
        let (base, query) = uri.split_once('?').unwrap_or((uri.as_str(), ""));
        let (chars, from) = resource_budget(query)?;
        let listing = if let Some(name) = base.strip_prefix(COLLECTION_URI) {
            Some(ListQuery {
                collection: Some(percent_decode(name)),
                ..ListQuery::default()
            })
        } else {
            base.strip_prefix(TAG_URI).map(|tag| ListQuery {
                tag: Some(percent_decode(tag)),
                ..ListQuery::default()
            })
        };
        if let Some(query) = listing {
            let page = this
                .call(move |b| {
                    b.list(&ListQuery {
                        offset: Some(from),
                        limit: Some(COLLECTION_PAGE),
                        ..query
                    })
                })
                .await?;
            let lines: Vec<String> = page
                .items
                .iter()
                .map(|m| {
                    format!(
                        "- [{}]({MEMORY_URI}{}) ({}): {}\n",
                        m.title,
                        m.id,
                        &m.created_at[..10.min(m.created_at.len())],
                        budget::first_lines(&m.content, 160).replace('\n', " ")
                    )
                })
                .collect();
            let (lines, cut) = budget::fit(lines, chars);
            let mut text = lines.concat();
            if cut || page.next_offset.is_some() {
                let next = from + lines.len();
                text.push_str(&format!(
                    "\n(more: read {base}?cursor={next} for the next memories, most recently changed first)\n"
                ));
            }
            return Ok(ReadResourceResult::new(vec![ResourceContents::text(text, uri)]).into());
        }
        let Some(id) = base.strip_prefix(MEMORY_URI).map(str::to_owned) else {
            return Err(McpError::resource_not_found(
                format!(
                    "{uri}: not a memory ({MEMORY_URI}ID), a collection ({COLLECTION_URI}NAME) or a tag ({TAG_URI}TAG)"
                ),
                None,
            ));
        };
        let memory = this.call(move |b| b.get(&id)).await?;
        let head = format!("# {}\n\n", memory.title);
        let foot = format!("\n\ntags: {}\n", memory.tags.join(", "));
        // Room for the note that says where to read on, too.
        let note = 64 + base.len() + 2 * 20;
        let room = chars.saturating_sub(head.len() + foot.len() + note).max(64);
        let (content, next) = budget::window(&memory.content, from, room);
        let mut text = format!("{head}{content}{foot}");
        if let Some(next) = next {
            text.push_str(&format!(
                "\n(cut at character {next} of {}: read {base}?cursor={next} for the rest)\n",
                memory.content.chars().count()
            ));
        }
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, uri)]).into())
    }
}

/// A resource's budget from its URI's query (`max_tokens`, `cursor`): the characters it
/// may take and where to start.
fn resource_budget(query: &str) -> Result<(usize, usize), McpError> {
    let mut max_tokens = DEFAULT_BUDGET;
    let mut cursor = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "max_tokens" => {
                max_tokens = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    McpError::invalid_params(
                        format!("max_tokens: a positive number, not {value:?}"),
                        None,
                    )
                })?;
            }
            "cursor" => cursor = Some(percent_decode(value)),
            other => {
                return Err(McpError::invalid_params(
                    format!("{other:?}: a resource takes max_tokens and cursor"),
                    None,
                ));
            }
        }
    }
    let from = budget::read_cursor(cursor.as_deref()).map_err(mcp_error)?;
    Ok((budget::chars_for(max_tokens), from))
}

/// The MCP endpoint for `mnemon serve`: streamable HTTP at `/mcp`. Its SSE streams end
/// when `cancel` is cancelled (at shutdown).
pub fn http_router(
    backend: Arc<dyn Api>,
    cancel: tokio_util::sync::CancellationToken,
) -> axum::Router {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let service: StreamableHttpService<Mcp, LocalSessionManager> = StreamableHttpService::new(
        move || {
            Ok(Mcp {
                over_http: true,
                ..Mcp::new(backend.clone())
            })
        },
        Arc::default(),
        StreamableHttpServerConfig::default().with_cancellation_token(cancel),
    );
    axum::Router::new().nest_service("/mcp", service)
}

/// The longest line read from standard input: a request as large as the HTTP API takes.
pub const MAX_LINE: usize = 16 << 20;

/// Serves MCP on standard input and output until the client closes its end.
///
/// Each line is checked before the protocol sees it: one that is not JSON, or longer than
/// [`MAX_LINE`] (read no further than that), is answered with JSON-RPC's parse error
/// (`-32700`) so the client never waits for an answer that will not come.
pub fn serve_stdio(backend: Arc<dyn Api>) -> std::io::Result<()> {
    use rmcp::ServiceExt;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (mut requests, server_in) = tokio::io::duplex(1 << 16);
        let (server_out, answers) = tokio::io::duplex(1 << 16);
        let (lines, mut to_stdout) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
        // One writer for standard output: the server's answers and the parse errors,
        // whole lines each.
        let stdout = tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(line) = to_stdout.recv().await {
                stdout.write_all(&line).await?;
                stdout.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let answered = lines.clone();
        tokio::spawn(async move {
            let mut answers = tokio::io::BufReader::new(answers);
            loop {
                let mut line = Vec::new();
                match answers.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if answered.send(line).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
            while let Some(line) = read_line(&mut stdin, MAX_LINE).await {
                let refusal = match &line {
                    Line::TooLong => Some(format!("a line longer than {MAX_LINE} bytes")),
                    Line::Text(text) if text.iter().all(u8::is_ascii_whitespace) => continue,
                    Line::Text(text) => serde_json::from_slice::<serde_json::Value>(text)
                        .err()
                        .map(|e| format!("not JSON ({e})")),
                };
                let sent = match (refusal, line) {
                    (Some(why), _) => {
                        let error = serde_json::json!({
                            "jsonrpc": "2.0",
                            "id": null,
                            "error": {"code": -32700, "message": format!("parse error: {why}")},
                        });
                        let mut text = error.to_string().into_bytes();
                        text.push(b'\n');
                        lines.send(text).await.is_ok()
                    }
                    (None, Line::Text(mut text)) => {
                        text.push(b'\n');
                        requests.write_all(&text).await.is_ok()
                    }
                    (None, Line::TooLong) => unreachable!("refused above"),
                };
                if !sent {
                    break;
                }
            }
            // End of input: the server sees its input end, and stops.
            let _ = requests.shutdown().await;
        });
        let running = Mcp::new(backend)
            .serve((server_in, server_out))
            .await
            .map_err(|e| std::io::Error::other(format!("starting MCP on stdio: {e}")))?;
        running
            .waiting()
            .await
            .map_err(|e| std::io::Error::other(format!("MCP on stdio: {e}")))?;
        // The last answers (and parse errors) still queued go out before the end.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stdout).await;
        Ok(())
    })
}

/// A line of standard input.
enum Line {
    /// Its bytes, without the newline.
    Text(Vec<u8>),
    /// Longer than allowed: the rest of it was read and dropped.
    TooLong,
}

/// The next line of `input`, holding at most `max` bytes of it; `None` at the end.
async fn read_line(input: &mut (impl tokio::io::AsyncBufRead + Unpin), max: usize) -> Option<Line> {
    use tokio::io::AsyncBufReadExt as _;
    let mut text = Vec::new();
    let mut too_long = false;
    loop {
        let available = match input.fill_buf().await {
            Ok(bytes) => bytes,
            Err(_) => return None,
        };
        if available.is_empty() {
            return match (too_long, text.is_empty()) {
                (true, _) => Some(Line::TooLong),
                (false, true) => None,
                (false, false) => Some(Line::Text(text)),
            };
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(at) => (&available[..at], Some(at + 1)),
            None => (available, None),
        };
        if !too_long {
            if text.len() + chunk.len() > max {
                too_long = true;
                text = Vec::new();
            } else {
                text.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(available.len());
        input.consume(used);
        if done.is_some() {
            return Some(if too_long {
                Line::TooLong
            } else {
                Line::Text(text)
            });
        }
    }
}

/// `%XX` escapes in a resource URI's last part, decoded (a collection named with spaces).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
