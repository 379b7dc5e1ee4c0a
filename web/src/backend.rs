//! The trait the node implements, and the errors it answers with.
//!
//! Its methods block (they touch the disk and run models); the router calls them on
//! tokio's blocking pool.

use tokio::sync::broadcast;

use crate::api::{
    AnswerView, AskEvent, AskRequest, CollectionView, CreateMemory, EventView, GraphQuery,
    GraphView, HitView, InviteRequest, InviteView, JoinRequest, JoinView, ListQuery, MAX_LIST_PAGE,
    MemberView, MemoryView, Page, PatchMemory, PeerView, SearchQuery, ShareRequest,
};

/// What went wrong, as the API reports it: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// A stable, machine-readable code, e.g. `not_found`.
    pub code: &'static str,
    /// What was wrong, for people.
    pub message: String,
}

impl ApiError {
    /// 400: the request is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }
    /// 404: no such thing.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", message)
    }
    /// 409: conflicts with what is stored.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(409, "conflict", message)
    }
    /// 422: well-formed, but a field is invalid.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(422, "invalid_field", message)
    }
    /// 503: not ready.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "unavailable", message)
    }
    /// 500: the node failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, "internal", message)
    }
    /// Any status and code.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for ApiError {}

/// A gauge the node reports on `/metrics`.
#[derive(Debug, Clone)]
pub struct Gauge {
    /// Its name, e.g. `mnemon_memories`.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Labels and values.
    pub values: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// Everything the API can ask of a node.
pub trait Backend: Send + Sync + 'static {
    /// Stores a new memory.
    fn create(&self, new: CreateMemory) -> Result<MemoryView, ApiError>;
    /// One memory. The router calls it on an async worker, not the blocking pool: a
    /// backend it serves must answer from a snapshot, never waiting for a writer.
    fn get(&self, id: &str) -> Result<MemoryView, ApiError>;
    /// Memories linking to `id`.
    fn backlinks(&self, id: &str) -> Result<Vec<MemoryView>, ApiError>;
    /// The graph of links around a memory (or of every linked memory).
    fn graph(&self, query: &GraphQuery) -> Result<GraphView, ApiError>;
    /// Answers a question from the memories with a chat model, telling `on_event` the
    /// sources and each piece of text as it comes.
    fn ask(
        &self,
        request: &AskRequest,
        on_event: &mut dyn FnMut(AskEvent),
    ) -> Result<AnswerView, ApiError>;
    /// A page of memories, most recently changed first.
    fn list(&self, query: &ListQuery) -> Result<Page<MemoryView>, ApiError>;
    /// Every memory `query` matches (its offset and limit ignored), page by page.
    fn list_all(&self, query: &ListQuery) -> Result<Vec<MemoryView>, ApiError> {
        let mut all = Vec::new();
        let mut query = ListQuery {
            offset: Some(0),
            limit: Some(MAX_LIST_PAGE),
            ..query.clone()
        };
        loop {
            let page = self.list(&query)?;
            all.extend(page.items);
            match page.next_offset {
                Some(next) => query.offset = Some(next),
                None => return Ok(all),
            }
        }
    }
    /// Changes a memory.
    fn update(&self, id: &str, patch: PatchMemory) -> Result<MemoryView, ApiError>;
    /// Marks a task done (earning its points). A memory that is not a task is refused by
    /// name: finishing is for tasks, and a note becomes a task only when asked to (a
    /// patch with task fields). The CLI, the UI and MCP all finish tasks through this.
    fn complete_task(&self, id: &str) -> Result<MemoryView, ApiError> {
        let current = self.get(id)?;
        if current.task.is_none() {
            return Err(ApiError::invalid(format!(
                "{id} is a {}, not a task",
                current.kind
            )));
        }
        self.update(id, PatchMemory::task_done())
    }
    /// Deletes a memory for good.
    fn delete(&self, id: &str) -> Result<(), ApiError>;
    /// Searches.
    fn search(&self, query: &SearchQuery) -> Result<Vec<HitView>, ApiError>;
    /// Every collection.
    fn collections(&self) -> Result<Vec<CollectionView>, ApiError>;
    /// Makes a collection.
    fn create_collection(&self, name: &str) -> Result<CollectionView, ApiError>;
    /// The members of a collection (its owner not counted).
    fn members(&self, collection: &str) -> Result<Vec<MemberView>, ApiError>;
    /// Shares a collection this node owns with a DID.
    fn share(&self, collection: &str, request: ShareRequest) -> Result<MemberView, ApiError>;
    /// Takes a DID's access to a collection this node owns away.
    fn unshare(&self, collection: &str, did: &str) -> Result<(), ApiError>;
    /// Makes a single-use invite ticket to a collection this node owns.
    fn invite(&self, collection: &str, request: InviteRequest) -> Result<InviteView, ApiError>;
    /// Keeps a ticket and dials its owner to redeem it.
    fn join(&self, request: JoinRequest) -> Result<JoinView, ApiError>;
    /// The peers federation knows (empty when it is off).
    fn peers(&self) -> Result<Vec<PeerView>, ApiError>;
    /// The node's status (identity, counts, indexes), as JSON.
    fn status(&self) -> Result<serde_json::Value, ApiError>;
    /// Memory changes as they happen.
    fn events(&self) -> broadcast::Receiver<EventView>;
    /// Whether the store is open and the indexes loaded.
    fn ready(&self) -> bool;
    /// Gauges for `/metrics`.
    fn gauges(&self) -> Vec<Gauge>;
}
