//! What crosses the HTTP API: request and response bodies, and errors.
//!
//! Every request body is `deny_unknown_fields`, so a misspelt field is an error rather than
//! silently ignored.

use std::collections::HashMap;

use mnemon_crdt::{Collection, CollectionId, Memory, Task, Timestamp};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// A memory as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct MemoryView {
    /// Its id (a ULID).
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its body (Markdown).
    pub content: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its kind: note, task, fact, conversation, …
    pub kind: String,
    /// Its importance, 0 to 1.
    pub importance: f64,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// The DID of its author.
    pub author: String,
    /// The id of its collection.
    pub collection: String,
    /// The collection's name.
    pub collection_name: Option<String>,
    /// Where it came from.
    pub source: Option<SourceView>,
    /// Its links to other memories.
    pub links: Vec<LinkView>,
    /// Task fields, for tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskView>,
    /// After a write: the store's change-log position of this write. Pass it as `after`
    /// to a search to see the write in its results (read-your-writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// The task fields of a memory of kind `task`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TaskView {
    /// `open` or `done`.
    pub status: String,
    /// Higher is more urgent.
    pub priority: i64,
    /// When it is due (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    /// 1 (trivial) to 5 (hard).
    pub difficulty: u8,
    /// The experience points finishing it is worth.
    pub xp: u32,
}

impl From<&Task> for TaskView {
    fn from(task: &Task) -> TaskView {
        TaskView {
            status: task.status.clone(),
            priority: task.priority,
            due: task.due.map(|d| d.to_string()),
            difficulty: task.difficulty,
            xp: task.xp,
        }
    }
}

/// Splits tasks into open and done: open ones by due date (none last), then priority
/// (high first), then age; done ones most recently finished first. Memories that are not
/// tasks are dropped.
pub fn sort_tasks(tasks: Vec<MemoryView>) -> (Vec<MemoryView>, Vec<MemoryView>) {
    let (mut done, mut open): (Vec<_>, Vec<_>) = tasks
        .into_iter()
        .filter(|m| m.task.is_some())
        .partition(|m| m.task.as_ref().is_some_and(|t| t.status == "done"));
    let due = |m: &MemoryView| m.task.as_ref().and_then(|t| t.due.clone());
    let priority = |m: &MemoryView| m.task.as_ref().map_or(0, |t| t.priority);
    open.sort_by(|a, b| {
        let by_due = match (due(a), due(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_due
            .then(priority(b).cmp(&priority(a)))
            .then(a.created_at.cmp(&b.created_at))
    });
    done.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    (open, done)
}

/// The experience points of the done tasks among `tasks`.
pub fn xp_earned(tasks: &[MemoryView]) -> u64 {
    tasks
        .iter()
        .filter_map(|m| m.task.as_ref())
        .filter(|t| t.status == "done")
        .map(|t| u64::from(t.xp))
        .sum()
}

/// Task fields to set; those left out keep their value (or the default for a new task:
/// `open`, priority 0, difficulty 1, 10 points per difficulty level).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskFields {
    /// `open` or `done`.
    #[serde(default)]
    pub status: Option<String>,
    /// Higher is more urgent.
    #[serde(default)]
    pub priority: Option<i64>,
    /// When it is due: a date (`2026-12-01`) or an RFC 3339 time; `""` clears it.
    #[serde(default)]
    pub due: Option<String>,
    /// 1 (trivial) to 5 (hard).
    #[serde(default)]
    pub difficulty: Option<u8>,
    /// The experience points finishing it is worth.
    #[serde(default)]
    pub xp: Option<u32>,
}

impl TaskFields {
    /// `base` with these fields applied; a time that cannot be read is named.
    pub fn apply(&self, base: &Task) -> Result<Task, String> {
        let mut task = base.clone();
        if let Some(status) = &self.status {
            task.status = status.trim().to_owned();
        }
        if let Some(priority) = self.priority {
            task.priority = priority;
        }
        if let Some(due) = &self.due {
            task.due = if due.trim().is_empty() {
                None
            } else {
                Some(due.parse::<Timestamp>().map_err(|e| format!("due: {e}"))?)
            };
        }
        if let Some(difficulty) = self.difficulty {
            task.difficulty = difficulty;
            // Points follow the difficulty unless they were set apart from it.
            if self.xp.is_none() && base.xp == Task::default_xp(base.difficulty) {
                task.xp = Task::default_xp(difficulty);
            }
        }
        if let Some(xp) = self.xp {
            task.xp = xp;
        }
        Ok(task)
    }
}

/// Where a memory came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct SourceView {
    /// What kind of source.
    pub kind: String,
    /// Its address, if any.
    pub uri: Option<String>,
}

/// A link from one memory to another.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkView {
    /// The memory linked to.
    pub target: String,
    /// The relation's name, e.g. `related`.
    #[serde(default = "related")]
    pub relation: String,
}

fn related() -> String {
    "related".to_owned()
}

impl MemoryView {
    /// The view of `memory`, with collection names from `names`.
    pub fn new(memory: &Memory, names: &HashMap<CollectionId, String>) -> MemoryView {
        MemoryView {
            id: memory.id.to_string(),
            title: memory.title.clone(),
            content: memory.content.clone(),
            tags: memory.tags.iter().cloned().collect(),
            kind: memory.kind.clone(),
            importance: memory.importance,
            created_at: memory.created_at.to_string(),
            updated_at: memory.updated_at.to_string(),
            author: memory.author.clone(),
            collection: memory.collection.to_string(),
            collection_name: names.get(&memory.collection).cloned(),
            source: memory.source.as_ref().map(|s| SourceView {
                kind: s.kind.clone(),
                uri: s.uri.clone(),
            }),
            links: memory
                .links
                .iter()
                .map(|(target, relation)| LinkView {
                    target: target.to_string(),
                    relation: relation.clone(),
                })
                .collect(),
            task: memory.task.as_ref().map(TaskView::from),
            seq: None,
        }
    }
}

/// `POST /api/v1/memories`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMemory {
    /// The title; default: the first line of the content.
    #[serde(default)]
    pub title: Option<String>,
    /// The body; must not be empty.
    pub content: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Collection id or unique name; default: the node's private collection.
    #[serde(default)]
    pub collection: Option<String>,
    /// Kind; default `note`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Importance from 0 to 1; default 0.5.
    #[serde(default)]
    pub importance: Option<f64>,
    /// Links to other memories.
    #[serde(default)]
    pub links: Vec<LinkView>,
    /// Task fields (the kind becomes `task` unless another is given).
    #[serde(default)]
    pub task: Option<TaskFields>,
    /// Where it came from; default: how it was made (`api`, `cli`, `mcp`, …).
    #[serde(default)]
    pub source: Option<SourceView>,
    /// When it was created, if not now (RFC 3339; for imports).
    #[serde(default)]
    pub created_at: Option<String>,
    /// When it last changed, if not now (RFC 3339; for imports).
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// `PATCH /api/v1/memories/{id}`: fields left out are not touched.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMemory {
    /// A new title.
    #[serde(default)]
    pub title: Option<String>,
    /// A new body.
    #[serde(default)]
    pub content: Option<String>,
    /// Tags to add.
    #[serde(default)]
    pub add_tags: Vec<String>,
    /// Tags to remove.
    #[serde(default)]
    pub remove_tags: Vec<String>,
    /// A new kind.
    #[serde(default)]
    pub kind: Option<String>,
    /// A new importance.
    #[serde(default)]
    pub importance: Option<f64>,
    /// Links to add (or re-label).
    #[serde(default)]
    pub add_links: Vec<LinkView>,
    /// Ids of memories to unlink.
    #[serde(default)]
    pub remove_links: Vec<String>,
    /// Task fields to set (on a memory that is not a task yet, it becomes one).
    #[serde(default)]
    pub task: Option<TaskFields>,
}

/// The largest page `GET /api/v1/memories` gives.
pub const MAX_LIST_PAGE: usize = 1000;

impl PatchMemory {
    /// The patch that marks a task done (and so earns its points).
    pub fn task_done() -> PatchMemory {
        PatchMemory {
            task: Some(TaskFields {
                status: Some("done".to_owned()),
                ..TaskFields::default()
            }),
            ..PatchMemory::default()
        }
    }
}

/// `GET /api/v1/memories` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this collection (id or name).
    pub collection: Option<String>,
    /// Only this tag.
    pub tag: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only memories with this title (trimmed, in any case): how a name becomes an id.
    pub title: Option<String>,
    /// Skip this many.
    pub offset: Option<usize>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// `GET /api/v1/graph` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    /// The memory in the middle; without it, every memory that takes part in a link.
    pub center: Option<String>,
    /// How many links away from the center to go, following links both ways (default 2,
    /// 0 to 5).
    pub depth: Option<usize>,
    /// Only this collection (id or name).
    pub collection: Option<String>,
    /// At most this many memories (default 300, at most 2000); the nearest are kept.
    pub limit: Option<usize>,
}

/// Memories and the links between them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct GraphView {
    /// The memories, the center first, then by distance from it.
    pub nodes: Vec<GraphNode>,
    /// The links between them.
    pub edges: Vec<GraphEdge>,
    /// Whether memories were left out to stay within the limit.
    pub truncated: bool,
}

/// A memory in a graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct GraphNode {
    /// Its id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its kind.
    pub kind: String,
    /// Its collection's id.
    pub collection: String,
    /// Links away from the center (0 for the center; absent without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance: Option<usize>,
}

/// A link in a graph.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct GraphEdge {
    /// The memory that links.
    pub source: String,
    /// The memory linked to.
    pub target: String,
    /// The relation's name.
    pub relation: String,
}

/// A page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// How many items match in all.
    pub total: usize,
    /// The offset of the next page, if there is one.
    pub next_offset: Option<usize>,
}

/// `GET /api/v1/search` query.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
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
}

/// How a search ranks memories. One set of names for the API, the UI, the CLI and MCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// By meaning and by words, fused (the default).
    #[default]
    Hybrid,
    /// By meaning alone (the vector index); `vector` is accepted as another name.
    #[serde(alias = "vector")]
    Semantic,
    /// By words alone (the keyword index).
    Keyword,
}

impl SearchMode {
    /// Its name in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Semantic => "semantic",
            SearchMode::Keyword => "keyword",
        }
    }
}

impl std::fmt::Display for SearchMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SearchMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SearchMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hybrid" => Ok(SearchMode::Hybrid),
            "semantic" | "vector" => Ok(SearchMode::Semantic),
            "keyword" => Ok(SearchMode::Keyword),
            _ => Err(format!(
                "mode must be hybrid, semantic or keyword, not {:?}",
                s.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// One search hit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct HitView {
    /// The memory's id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// The score; higher is better.
    pub score: f32,
    /// A passage with the matching words wrapped in `**`.
    pub snippet: String,
    /// The chunk of the text that matched.
    pub chunk: u32,
}

/// `POST /api/v1/ask`: a question answered from the memories by a chat model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
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
}

/// A memory given to the model, numbered as the answer cites it (`[1]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CitationView {
    /// The number the answer cites it by.
    pub n: usize,
    /// The memory's id.
    pub id: String,
    /// Its title.
    pub title: String,
}

/// A finished answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
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

/// A collection.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CollectionView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The DID of its owner.
    pub owner: String,
    /// When it was made.
    pub created_at: String,
    /// Whether it is the node's private default collection.
    pub default: bool,
    /// How many memories it holds.
    pub memories: u64,
}

impl From<&Collection> for CollectionView {
    fn from(c: &Collection) -> CollectionView {
        CollectionView {
            id: c.id.to_string(),
            name: c.name.clone(),
            owner: c.owner.to_string(),
            created_at: c.created_at.to_string(),
            default: c.is_default,
            memories: c.memories,
        }
    }
}

/// `POST /api/v1/collections`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    /// Its name.
    pub name: String,
}

/// A member of a collection.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct MemberView {
    /// The member's DID.
    pub did: String,
    /// `read` or `write`.
    pub role: String,
    /// How this collection stands with the member's node, if this node has met it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncView>,
}

/// How a shared collection stands with one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SyncView {
    /// The collection's id.
    pub collection: String,
    /// `in_sync`, `behind` (differences are being exchanged, or not yet compared),
    /// `error` (something from the peer was refused) or `offline` (no session now).
    pub state: String,
    /// Why: the refusal, how many memories differ, or why the session ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The last thing from the peer refused about this collection in this session (it
    /// stays after the state is back to `in_sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refused: Option<String>,
}

/// `POST /api/v1/collections/{id}/members`: share the collection with a DID.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// The DID to share with (`did:key:z6Mk…`).
    pub did: String,
    /// `read` or `write`.
    pub role: String,
}

/// `POST /api/v1/collections/{id}/invites`: make a single-use invite ticket.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// `read` (default) or `write`.
    #[serde(default)]
    pub role: Option<String>,
    /// Seconds until the ticket expires (default 7 days, at most 365 days).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A new invite.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InviteView {
    /// The ticket to give the invitee (`mnemon1…`): whoever holds it can join once.
    pub ticket: String,
    /// The collection's id.
    pub collection: String,
    /// The role it grants.
    pub role: String,
    /// When it expires (Unix ms).
    pub expires_at: i64,
    /// How many addresses it carries (0: the node is not serving; the invitee must then
    /// be given an address, or meet this node on the LAN).
    pub addresses: usize,
}

/// `POST /api/v1/join`: redeem a ticket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The ticket (`mnemon1…`).
    pub ticket: String,
}

/// A join in progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JoinView {
    /// The collection's id.
    pub collection: String,
    /// The owner's DID.
    pub owner: String,
    /// The role the ticket grants.
    pub role: String,
    /// How many of the ticket's addresses are being dialed now (0 when not serving: the
    /// next `mnemon serve` dials them).
    pub dialing: usize,
}

/// A peer node, as federation knows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PeerView {
    /// Its DID.
    pub did: String,
    /// Its libp2p peer id.
    pub peer_id: String,
    /// Addresses it was seen at.
    pub addresses: Vec<String>,
    /// Whether a connection is open now.
    pub connected: bool,
    /// Collections synced with it in the current session.
    pub collections: Vec<String>,
    /// How each collection shared with it stands.
    #[serde(default)]
    pub sync: Vec<SyncView>,
    /// When something last arrived from it (Unix ms).
    pub last_sync: Option<u64>,
    /// The last refusal or the reason the last session ended.
    pub last_error: Option<String>,
}

/// The answer to a create: the new id, and the write's change-log position.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Created {
    /// The new id.
    pub id: String,
    /// The write's position in the store's change log: pass it as a search's `after` to
    /// see the new memory in the results (read-your-writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// A change to a memory, as `/api/v1/events` streams it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct EventView {
    /// The change-log position.
    pub seq: u64,
    /// The memory.
    pub id: String,
    /// Its collection.
    pub collection: String,
    /// `created`, `updated` or `deleted`.
    pub kind: String,
}

/// Every error the API answers with.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `not_found` or `invalid_field`.
    pub code: String,
    /// What was wrong, for people; names the field or parameter.
    pub message: String,
}
