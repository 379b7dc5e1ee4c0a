//! The trait the node implements: everything an interface can ask of it.
//!
//! Its methods block (they touch the disk and run models); an async caller runs them on
//! a blocking pool, except [`Api::get`], which answers from a snapshot, and the async
//! twins [`Api::create_async`] and [`Api::search_async`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::{
    AnswerView, AskEvent, AskRequest, BackupFile, BackupRequest, CollectionDeleted, CollectionView,
    CreateMemory, DialRequest, Error, EventView, GraphQuery, GraphView, HitView, InviteRequest,
    InviteView, JoinRequest, JoinView, ListQuery, MAX_LIST_PAGE, MemberView, MemoryView, Page,
    PatchMemory, PeerView, SearchQuery, ShareRequest,
};

/// A gauge the node reports on `/metrics`.
#[derive(Debug, Clone)]
pub struct Gauge {
    /// Its name, e.g. `mnemon_memories`.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// A counter (only ever grows; Prometheus takes its rate) rather than a gauge.
    pub counter: bool,
    /// Labels and values.
    pub values: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// The answer of an async method of [`Api`], to be awaited.
pub type Pending<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

/// Runs `work` on tokio's blocking pool (the default of the async twins of [`Api`], and
/// what a node's own twins do with work that may take long).
pub fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Pending<T> {
    Box::pin(async move {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::internal(format!("the request's task failed: {e}")))?
    })
}

/// Everything an interface (HTTP, UI, CLI, MCP) can ask of a node.
pub trait Api: Send + Sync + 'static {
    /// Stores a new memory.
    fn create(&self, new: CreateMemory) -> Result<MemoryView, Error>;
    /// [`Api::create`] for an async caller. A node that writes through a queue checks and
    /// builds the memory on the caller's task and awaits only its commit, so that no
    /// thread sits blocked on the writer. By default, `create` on tokio's blocking pool.
    fn create_async(self: Arc<Self>, new: CreateMemory) -> Pending<MemoryView> {
        on_blocking_pool(move || self.create(new))
    }
    /// One memory. The router calls it on an async worker, not the blocking pool: a
    /// node it serves must answer from a snapshot, never waiting for a writer.
    fn get(&self, id: &str) -> Result<MemoryView, Error>;
    /// Memories linking to `id`.
    fn backlinks(&self, id: &str) -> Result<Vec<MemoryView>, Error>;
    /// The graph of links around a memory (or of every linked memory).
    fn graph(&self, query: &GraphQuery) -> Result<GraphView, Error>;
    /// Answers a question from the memories with a chat model, telling `on_event` the
    /// sources and each piece of text as it comes.
    fn ask(
        &self,
        request: &AskRequest,
        on_event: &mut dyn FnMut(AskEvent),
    ) -> Result<AnswerView, Error>;
    /// A page of memories, most recently changed first.
    fn list(&self, query: &ListQuery) -> Result<Page<MemoryView>, Error>;
    /// Every memory `query` matches (its offset and limit ignored), page by page.
    fn list_all(&self, query: &ListQuery) -> Result<Vec<MemoryView>, Error> {
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
    fn update(&self, id: &str, patch: PatchMemory) -> Result<MemoryView, Error>;
    /// Marks a task done (earning its points). A memory that is not a task is refused by
    /// name: finishing is for tasks, and a note becomes a task only when asked to (a
    /// patch with task fields). The CLI, the UI and MCP all finish tasks through this.
    fn complete_task(&self, id: &str) -> Result<MemoryView, Error> {
        let current = self.get(id)?;
        if current.task.is_none() {
            return Err(Error::invalid(format!(
                "{id} is a {}, not a task",
                current.kind
            )));
        }
        self.update(id, PatchMemory::task_done())
    }
    /// Opens a done task again (its points are no longer earned). As with
    /// [`Api::complete_task`], a memory that is not a task is refused by name.
    fn reopen_task(&self, id: &str) -> Result<MemoryView, Error> {
        let current = self.get(id)?;
        if current.task.is_none() {
            return Err(Error::invalid(format!(
                "{id} is a {}, not a task",
                current.kind
            )));
        }
        self.update(id, PatchMemory::task_reopened())
    }
    /// Settles a memory's conflict by keeping one of its two versions (`theirs`: the
    /// peer's, else this node's) as its text; a memory without a conflict is refused by
    /// name. The node does it on its writer, so a merge landing meanwhile is not
    /// overwritten. The CLI, the UI and MCP settle conflicts through this.
    fn resolve_conflict(&self, id: &str, theirs: bool) -> Result<MemoryView, Error>;
    /// Deletes a memory for good.
    fn delete(&self, id: &str) -> Result<(), Error>;
    /// Rewrites a memory without its earlier versions: a new memory (a new id) says what
    /// it says now, the memories that linked to it link to the new one, and the old one
    /// is deleted for good, on every peer too. Returns the new memory.
    fn forget_history(&self, id: &str) -> Result<MemoryView, Error>;
    /// Moves a memory to another collection (id or unique name). It is written there anew
    /// (a new id, as for [`Api::forget_history`]; the memories that linked to it link to
    /// the new one), so its earlier versions do not travel into a collection shared with
    /// others. Returns the memory as it is now.
    fn move_memory(&self, id: &str, collection: &str) -> Result<MemoryView, Error>;
    /// Searches.
    fn search(&self, query: &SearchQuery) -> Result<Vec<HitView>, Error>;
    /// [`Api::search`] for an async caller. A node runs on the caller's task a search that
    /// waits for nothing (no model to run, no index to catch up: a millisecond or so of
    /// work), so it needs no hand-off to another thread and back; by default, and for any
    /// other search, `search` on tokio's blocking pool.
    fn search_async(self: Arc<Self>, query: SearchQuery) -> Pending<Vec<HitView>> {
        on_blocking_pool(move || self.search(&query))
    }
    /// Names another node (its DID): shown instead of the DID wherever this node lists
    /// it; an empty name forgets it. The name stays on this node.
    fn name_node(&self, did: &str, name: &str) -> Result<(), Error>;
    /// Every collection.
    fn collections(&self) -> Result<Vec<CollectionView>, Error>;
    /// Makes a collection.
    fn create_collection(&self, name: &str) -> Result<CollectionView, Error>;
    /// Renames a collection: its owner's signed log carries the name to every member.
    fn rename_collection(&self, collection: &str, name: &str) -> Result<CollectionView, Error>;
    /// Deletes a collection this node owns and shares with nobody, with every memory in
    /// it (deleted for good, as by [`Api::delete`]).
    fn delete_collection(&self, collection: &str) -> Result<CollectionDeleted, Error>;
    /// The members of a collection (its owner not counted).
    fn members(&self, collection: &str) -> Result<Vec<MemberView>, Error>;
    /// Shares a collection this node owns with a DID.
    fn share(&self, collection: &str, request: ShareRequest) -> Result<MemberView, Error>;
    /// Takes a DID's access to a collection this node owns away.
    fn unshare(&self, collection: &str, did: &str) -> Result<(), Error>;
    /// Makes a single-use invite ticket to a collection this node owns.
    fn invite(&self, collection: &str, request: InviteRequest) -> Result<InviteView, Error>;
    /// Keeps a ticket and dials its owner to redeem it.
    fn join(&self, request: JoinRequest) -> Result<JoinView, Error>;
    /// The peers federation knows (empty when it is off).
    fn peers(&self) -> Result<Vec<PeerView>, Error>;
    /// Dials the peer at `request.address` now (and again, with backoff, while it cannot
    /// be reached and this node syncs with it).
    fn dial(&self, request: DialRequest) -> Result<(), Error>;
    /// Takes a backup now (a consistent snapshot while writes go on), sealed with the
    /// request's passphrase or the configured one.
    fn backup(&self, request: BackupRequest) -> Result<BackupFile, Error>;
    /// The node's status (identity, counts, indexes), as JSON.
    fn status(&self) -> Result<serde_json::Value, Error>;
    /// Whether search understands meaning (a model of meaning is the embedder), or only
    /// words and spellings (the built-in embedder). Cheap, unlike [`Api::status`].
    fn searches_meaning(&self) -> Result<bool, Error>;
    /// Memory changes as they happen.
    fn events(&self) -> Events;
    /// Whether the store is open and the indexes loaded.
    fn ready(&self) -> bool;
    /// Gauges for `/metrics`.
    fn gauges(&self) -> Result<Vec<Gauge>, Error>;
}

/// For each event: `None` ends the feed, `Some(false)` skips the event.
type Keep = Box<dyn Fn(&EventView) -> Option<bool> + Send + Sync>;

/// A feed of memory changes ([`Api::events`]), possibly held to what a caller may see.
pub struct Events {
    rx: broadcast::Receiver<EventView>,
    keep: Option<Keep>,
}

impl Events {
    /// Every event `rx` receives.
    pub fn new(rx: broadcast::Receiver<EventView>) -> Events {
        Events { rx, keep: None }
    }

    /// A feed that never says anything (and is closed).
    pub fn closed() -> Events {
        Events::new(broadcast::channel(1).1)
    }

    /// This feed, held to the events `keep` keeps (`Some(true)`); it ends when `keep`
    /// answers `None`. Applied after any earlier filter.
    pub fn filtered(
        self,
        keep: impl Fn(&EventView) -> Option<bool> + Send + Sync + 'static,
    ) -> Events {
        let keep: Keep = match self.keep {
            None => Box::new(keep),
            Some(first) => Box::new(move |event| match first(event)? {
                false => Some(false),
                true => keep(event),
            }),
        };
        Events {
            rx: self.rx,
            keep: Some(keep),
        }
    }

    /// The next event this feed keeps. `Lagged` when events were missed (the caller sees
    /// the gap in `seq`); `Closed` when the feed ended.
    pub async fn recv(&mut self) -> Result<EventView, broadcast::error::RecvError> {
        loop {
            let event = self.rx.recv().await?;
            match self.keep.as_ref().map_or(Some(true), |keep| keep(&event)) {
                Some(true) => return Ok(event),
                Some(false) => {}
                None => return Err(broadcast::error::RecvError::Closed),
            }
        }
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("filtered", &self.keep.is_some())
            .finish_non_exhaustive()
    }
}
