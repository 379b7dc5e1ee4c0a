//! The node as a [`Backend`]: the store and the search indexes behind the API that
//! `mnemon serve` exposes and the CLI uses in-process.
//!
//! Locks: the store is behind a reader-writer lock (redb lets readers run beside a
//! writer, but `Store`'s write methods take `&mut`), the search index behind another.
//! The store lock is always taken before the index lock. A write returns once it is
//! durable and applied to both indexes, so it is searchable as soon as it is
//! acknowledged; only a vector backfill after a model change runs behind, in the
//! background, and `status` reports what is pending.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use mnemon_crdt::{
    ChangeKind, CollectionId, ListFilter, MemoryEdit, MemoryId, NewMemory, Source, Store,
    StoreError, Task, Timestamp,
};
use mnemon_web::api::{
    AnswerView, AskEvent, AskRequest, CollectionView, CreateMemory, EventView, GraphQuery,
    GraphView, HitView, InviteRequest, InviteView, JoinRequest, JoinView, ListQuery, MemberView,
    MemoryView, Page, PatchMemory, PeerView, SearchQuery, ShareRequest,
};
use mnemon_web::{ApiError, Backend, Gauge};
use tokio::sync::broadcast;

use crate::search::embed::Embedder;
use crate::search::{Filter, Mode, Query, SearchError, SearchIndex};

/// Longest page of a list.
pub const MAX_PAGE: usize = mnemon_web::api::MAX_LIST_PAGE;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: usize = 50;
/// The relation of links made from `[[wikilinks]]` in a memory's text.
pub const WIKILINK: &str = crate::import::WIKILINK_RELATION;
/// Most wikilinks of one text resolved.
const MAX_WIKILINKS: usize = 64;
/// Deepest graph query.
pub const MAX_GRAPH_DEPTH: usize = 5;
/// Most memories in one graph answer.
pub const MAX_GRAPH_NODES: usize = 2000;
/// How long a write may spend embedding what it wrote (a lagging vector index is left
/// to the background work).
const WRITE_VECTOR_BUDGET: Duration = Duration::from_secs(2);

/// Makes the embedder when the search index is first needed.
pub type EmbedderFactory = Box<dyn Fn() -> anyhow::Result<Arc<dyn Embedder>> + Send + Sync>;

/// A node's store and indexes, shared by request handlers.
///
/// The search index (and its embedder) is opened when first needed, so reading and
/// writing memories work even when the embedder cannot be reached; the index then
/// catches up from the change log.
pub struct Service {
    store: RwLock<Store>,
    index: RwLock<Option<SearchIndex>>,
    index_dir: PathBuf,
    embedder: EmbedderFactory,
    events: broadcast::Sender<EventView>,
    ready: AtomicBool,
    source: &'static str,
    /// Whether the vector index is sealed by [`Service::background_step`].
    background_seal: AtomicBool,
    /// Federation, when `mnemon serve` runs it.
    network: std::sync::OnceLock<crate::net::Network>,
    /// The chat model questions are answered with.
    chat: std::sync::OnceLock<crate::ask::ChatClient>,
    /// Writes leave the indexes to one catch-up at the end (an import in this process).
    bulk: AtomicBool,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("index_dir", &self.index_dir)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The memories of `ids` that still exist (one may be deleted between two reads).
fn load_live(store: &Store, ids: &[MemoryId]) -> Result<Vec<mnemon_crdt::Memory>, ApiError> {
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        match store.get(id) {
            Ok(memory) => out.push(memory),
            Err(StoreError::NotFound(_) | StoreError::Deleted(_)) => {}
            Err(e) => return Err(store_error(e)),
        }
    }
    Ok(out)
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) | StoreError::Deleted(_) => ApiError::not_found(e.to_string()),
        StoreError::UnknownCollection(_) => ApiError::new(404, "unknown_collection", e.to_string()),
        StoreError::AmbiguousCollection { .. } | StoreError::DuplicateCollectionName(_) => {
            ApiError::conflict(e.to_string())
        }
        StoreError::InvalidCollectionName(_) | StoreError::Invalid(_) | StoreError::Sharing(_) => {
            ApiError::invalid(e.to_string())
        }
        StoreError::ReadOnly(_) => ApiError::new(403, "read_only", e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

fn search_error(e: SearchError) -> ApiError {
    match e {
        SearchError::Store(e) => store_error(e),
        SearchError::EmptyQuery
        | SearchError::QueryTooLong(_)
        | SearchError::BadK(_)
        | SearchError::BadTimeRange
        | SearchError::BadImportance(_) => ApiError::invalid(e.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

fn parse_id(id: &str) -> Result<MemoryId, ApiError> {
    id.trim()
        .parse::<MemoryId>()
        .map_err(|e| ApiError::bad_request(format!("{id:?} is not a memory id: {e}")))
}

fn kind_name(kind: ChangeKind) -> &'static str {
    match kind {
        ChangeKind::Created => "created",
        ChangeKind::Updated => "updated",
        ChangeKind::Deleted => "deleted",
    }
}

impl Service {
    /// A service over `store`, with search indexes in `index_dir` for the embedder that
    /// `embedder` makes (when the index is first needed; see [`Service::load_index`]).
    /// `source` tags memories created through it (`api`, `cli`).
    pub fn open(
        store: Store,
        index_dir: &Path,
        embedder: EmbedderFactory,
        source: &'static str,
    ) -> Service {
        let (events, _) = broadcast::channel(1024);
        Service {
            store: RwLock::new(store),
            index: RwLock::new(None),
            background_seal: AtomicBool::new(false),
            network: std::sync::OnceLock::new(),
            chat: std::sync::OnceLock::new(),
            bulk: AtomicBool::new(false),
            index_dir: index_dir.to_owned(),
            embedder,
            events,
            ready: AtomicBool::new(false),
            source,
        }
    }

    /// Attaches the running network (for `peers`, and so sharing takes effect at once).
    pub fn set_network(&self, network: crate::net::Network) {
        let _ = self.network.set(network);
    }

    /// Bulk writing (an import in this process, with nobody searching meanwhile): while
    /// on, a write returns once it is durable and the indexes are left behind; turning it
    /// off brings them up to date. Nothing is lost either way: the indexes follow the
    /// store's change log.
    pub fn set_bulk(&self, on: bool) {
        self.bulk.store(on, Ordering::Relaxed);
        if !on {
            self.index_now();
        }
    }

    /// Sets the chat model questions are answered with (once).
    pub fn set_chat(&self, chat: crate::ask::ChatClient) {
        let _ = self.chat.set(chat);
    }

    /// The running network, if any.
    pub fn network(&self) -> Option<&crate::net::Network> {
        self.network.get()
    }

    /// Runs `f` with the store for reading (the sync driver).
    pub fn read_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store())
    }

    /// Runs `f` with the store for writing (the sync driver applying a peer's changes).
    pub fn write_store<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        f(&mut self.store_mut())
    }

    /// The store's change feed.
    pub fn subscribe_store(&self) -> broadcast::Receiver<mnemon_crdt::ChangeEvent> {
        self.store().subscribe()
    }

    /// Makes changes that arrived from peers searchable.
    pub fn index_remote(&self) {
        self.index_now();
    }

    /// Opens the search index now (the keyword index caught up; vectors as far as saved).
    pub fn load_index(&self) -> Result<(), ApiError> {
        let store = self.store();
        self.with_index(&store, |_| Ok(()))
    }

    fn store(&self) -> RwLockReadGuard<'_, Store> {
        self.store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn store_mut(&self) -> RwLockWriteGuard<'_, Store> {
        self.store
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the search index, opening it first if need be.
    fn with_index<T>(
        &self,
        store: &Store,
        f: impl FnOnce(&mut SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, ApiError> {
        let mut slot = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            let embedder = (self.embedder)()
                .map_err(|e| ApiError::unavailable(format!("search is unavailable: {e:#}")))?;
            let index = SearchIndex::open_lagging(&self.index_dir, embedder, store)
                .map_err(search_error)?;
            *slot = Some(index);
            self.ready.store(true, Ordering::Relaxed);
        }
        if let Some(index) = slot.as_mut() {
            index.seal_in_background(self.background_seal.load(Ordering::Relaxed));
        }
        match slot.as_mut() {
            Some(index) => f(index).map_err(search_error),
            None => Err(ApiError::internal("the search index is not open")),
        }
    }

    /// Runs `f` on the search index for reading; searches run side by side.
    fn with_index_read<T>(
        &self,
        store: &Store,
        f: impl FnOnce(&SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, ApiError> {
        {
            let slot = self
                .index
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(index) = slot.as_ref() {
                return f(index).map_err(search_error);
            }
        }
        self.with_index(store, |_| Ok(()))?;
        self.with_index_read(store, f)
    }

    /// The store's change feed, forwarded to API subscribers. Call once, inside a tokio
    /// runtime.
    pub fn forward_events(self: &Arc<Self>) {
        let mut feed = self.store().subscribe();
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                match feed.recv().await {
                    Ok(event) => {
                        let _ = events.send(EventView {
                            seq: event.seq,
                            id: event.memory.to_string(),
                            collection: event.collection.to_string(),
                            kind: kind_name(event.kind).to_owned(),
                        });
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// Applies the store's latest changes to the keyword index, and to the vector index
    /// unless it is busy re-embedding (then the background work gets there), so what was
    /// just written is searchable.
    /// If the index cannot be opened (the embedder is unreachable, say), the write stands
    /// and the index catches up later.
    fn index_now(&self) {
        if self.bulk.load(Ordering::Relaxed) {
            return;
        }
        let store = self.store();
        let result = self.with_index(&store, |index| {
            index.catch_up_within(&store, Some(Instant::now() + WRITE_VECTOR_BUDGET))
        });
        if let Err(e) = result {
            tracing::warn!("stored, but the search index will catch up later: {e}");
        }
    }

    /// Leaves sealing the vector index to [`Service::background_step`] (for a long-running
    /// service with a background thread): writes then never wait for a graph build.
    pub fn seal_in_background(&self) {
        self.background_seal.store(true, Ordering::Relaxed);
        let mut slot = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(index) = slot.as_mut() {
            index.seal_in_background(true);
        }
    }

    /// One step of background work: moves the vector index on for at most `slice`, and
    /// seals its recent segment when that is due (building the graph without holding the
    /// index, so searches and writes go on meanwhile). Returns whether work remains.
    pub fn background_step(&self, slice: Duration) -> Result<bool, ApiError> {
        let (pending, job) = {
            let store = self.store();
            self.with_index(&store, |index| {
                index.catch_up_vectors(&store, Some(Instant::now() + slice), &mut |_| {})?;
                Ok((index.status(&store)?.pending_changes > 0, index.seal_job()))
            })?
        };
        if let Some(job) = job {
            let started = Instant::now();
            let built = job.build();
            let store = self.store();
            let installed = self.with_index(&store, |index| Ok(index.install_seal(built)))?;
            tracing::info!(
                installed,
                seconds = started.elapsed().as_secs_f64(),
                "sealed the vector index's recent segment"
            );
            return Ok(true);
        }
        Ok(pending)
    }

    /// Saves what the indexes hold (before the process ends).
    pub fn flush(&self) -> Result<(), SearchError> {
        let mut slot = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.as_mut() {
            Some(index) => index.save(),
            None => Ok(()),
        }
    }

    fn names(&self, store: &Store) -> Result<HashMap<CollectionId, String>, ApiError> {
        Ok(store
            .collection_names()
            .map_err(store_error)?
            .into_iter()
            .collect())
    }

    fn view(&self, store: &Store, id: MemoryId) -> Result<MemoryView, ApiError> {
        let memory = store.get(id).map_err(store_error)?;
        Ok(MemoryView::new(&memory, &self.names(store)?))
    }

    /// The names the `[[wikilinks]]` in `content` use: each one's last path segment,
    /// lowercased (at most [`MAX_WIKILINKS`]).
    fn wikilink_names(content: &str) -> Vec<String> {
        if !content.contains("[[") {
            return Vec::new();
        }
        crate::import::wikilinks(content)
            .iter()
            .take(MAX_WIKILINKS)
            .map(|t| t.rsplit('/').next().unwrap_or(t).trim().to_lowercase())
            .collect()
    }

    /// The memories wikilink `names` resolve to: for each, the one memory with that title
    /// (any case), found through the keyword index; names that match none or several are
    /// left alone, and so is `this`.
    fn resolve_titles(&self, names: &[String], this: Option<MemoryId>) -> Vec<MemoryId> {
        let mut out = Vec::new();
        for name in names {
            let Ok(hits) = self.search(&SearchQuery {
                q: name.clone(),
                k: Some(20),
                mode: Some("keyword".into()),
                ..SearchQuery::default()
            }) else {
                continue;
            };
            let mut ids: Vec<&str> = hits
                .iter()
                .filter(|h| h.title.to_lowercase() == *name)
                .map(|h| h.id.as_str())
                .collect();
            ids.dedup();
            if let [only] = ids[..]
                && let Ok(id) = only.parse::<MemoryId>()
                && Some(id) != this
                && !out.contains(&id)
            {
                out.push(id);
            }
        }
        out
    }

    fn links(links: &[mnemon_web::api::LinkView]) -> Result<Vec<(MemoryId, String)>, ApiError> {
        links
            .iter()
            .map(|l| Ok((parse_id(&l.target)?, l.relation.clone())))
            .collect()
    }
}

impl Backend for Service {
    fn create(&self, new: CreateMemory) -> Result<MemoryView, ApiError> {
        let mut links = Self::links(&new.links)?;
        // Imports resolve wikilinks themselves, with the vault's own names.
        if new.source.as_ref().is_none_or(|s| s.kind != "import") {
            for target in self.resolve_titles(&Self::wikilink_names(&new.content), None) {
                if !links.iter().any(|(t, _)| *t == target) {
                    links.push((target, WIKILINK.to_owned()));
                }
            }
        }
        let task = new
            .task
            .as_ref()
            .map(|t| t.apply(&Task::default()))
            .transpose()
            .map_err(|e| ApiError::invalid(format!("task: {e}")))?;
        let time = |field: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(str::parse::<Timestamp>)
                .transpose()
                .map_err(|e| ApiError::invalid(format!("{field}: {e}")))
        };
        let created_at = time("created_at", &new.created_at)?;
        let updated_at = time("updated_at", &new.updated_at)?;
        let source = match new.source {
            Some(s) => Source {
                kind: s.kind,
                uri: s.uri,
            },
            None => Source {
                kind: self.source.into(),
                uri: None,
            },
        };
        let kind = match (new.kind, &task) {
            (None, Some(_)) => Some("task".to_owned()),
            (kind, _) => kind,
        };
        let view = {
            let mut store = self.store_mut();
            let collection = new
                .collection
                .as_deref()
                .map(|c| store.resolve_collection(c))
                .transpose()
                .map_err(store_error)?;
            let memory = store
                .add(NewMemory {
                    title: new.title,
                    content: new.content,
                    tags: new.tags,
                    kind,
                    importance: new.importance,
                    source: Some(source),
                    collection,
                    links,
                    task,
                    created_at,
                    updated_at,
                })
                .map_err(store_error)?;
            MemoryView::new(&memory, &self.names(&store)?)
        };
        self.index_now();
        Ok(view)
    }

    fn get(&self, id: &str) -> Result<MemoryView, ApiError> {
        let id = parse_id(id)?;
        self.view(&self.store(), id)
    }

    fn backlinks(&self, id: &str) -> Result<Vec<MemoryView>, ApiError> {
        let id = parse_id(id)?;
        let store = self.store();
        store.get(id).map_err(store_error)?;
        let names = self.names(&store)?;
        Ok(store
            .backlinks(id)
            .map_err(store_error)?
            .iter()
            .map(|m| MemoryView::new(m, &names))
            .collect())
    }

    fn graph(&self, query: &GraphQuery) -> Result<GraphView, ApiError> {
        let depth = query.depth.unwrap_or(2);
        if depth > MAX_GRAPH_DEPTH {
            return Err(ApiError::invalid(format!(
                "depth must be from 0 to {MAX_GRAPH_DEPTH}, not {depth}"
            )));
        }
        let limit = query.limit.unwrap_or(300);
        if limit == 0 || limit > MAX_GRAPH_NODES {
            return Err(ApiError::invalid(format!(
                "limit must be from 1 to {MAX_GRAPH_NODES}, not {limit}"
            )));
        }
        let store = self.store();
        let center = query.center.as_deref().map(parse_id).transpose()?;
        let center_memory = center
            .map(|c| store.get(c))
            .transpose()
            .map_err(store_error)?;
        let collection = query
            .collection
            .as_deref()
            .map(|c| store.resolve_collection(c))
            .transpose()
            .map_err(store_error)?;
        if let Some(center) = center_memory
            && collection.is_none_or(|c| c == center.collection)
        {
            // Walk the link tables level by level, and load only the memories kept (plus
            // one, so `truncated` is told right).
            let mut seen = HashSet::from([center.id]);
            let mut kept = vec![center.id];
            let mut level = vec![center.id];
            for _ in 0..depth {
                if level.is_empty() || kept.len() > limit {
                    break;
                }
                let mut next = Vec::new();
                for neighbours in store
                    .link_neighbours(&level, collection)
                    .map_err(store_error)?
                {
                    for id in neighbours {
                        if seen.insert(id) {
                            next.push(id);
                        }
                    }
                }
                kept.extend_from_slice(&next);
                level = next;
            }
            kept.truncate(limit + 1);
            let mut memories = vec![center];
            memories.extend(load_live(&store, &kept[1..])?);
            let center = memories[0].id;
            return Ok(crate::graph::around(&memories, center, depth, limit));
        }
        // No center (or one outside the collection asked for): every linked memory, most
        // recently changed first, loading only those kept.
        let linked = store.linked(collection).map_err(store_error)?;
        let memories = load_live(&store, &linked[..linked.len().min(limit)])?;
        Ok(crate::graph::of_linked(&memories, linked.len() > limit))
    }

    fn ask(
        &self,
        request: &AskRequest,
        on_event: &mut dyn FnMut(AskEvent),
    ) -> Result<AnswerView, ApiError> {
        let chat = self.chat.get().ok_or_else(|| {
            ApiError::unavailable("no chat model is configured: add [chat] to config.toml")
        })?;
        crate::ask::answer(self, chat, request, on_event)
    }

    fn list(&self, query: &ListQuery) -> Result<Page<MemoryView>, ApiError> {
        let limit = query.limit.unwrap_or(DEFAULT_PAGE);
        if limit == 0 || limit > MAX_PAGE {
            return Err(ApiError::invalid(format!(
                "limit must be from 1 to {MAX_PAGE}, not {limit}"
            )));
        }
        let offset = query.offset.unwrap_or(0);
        let store = self.store();
        let filter = ListFilter {
            collection: query
                .collection
                .as_deref()
                .map(|c| store.resolve_collection(c))
                .transpose()
                .map_err(store_error)?,
            tag: query.tag.clone(),
            kind: query.kind.clone(),
            offset: 0,
            limit: None,
        };
        let all = store.list(&filter).map_err(store_error)?;
        let names = self.names(&store)?;
        let total = all.len();
        let items: Vec<MemoryView> = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(|m| MemoryView::new(m, &names))
            .collect();
        let next = offset + items.len();
        Ok(Page {
            items,
            total,
            next_offset: (next < total).then_some(next),
        })
    }

    fn update(&self, id: &str, patch: PatchMemory) -> Result<MemoryView, ApiError> {
        let id = parse_id(id)?;
        let mut add_links = Self::links(&patch.add_links)?;
        let mut remove_links: Vec<MemoryId> = patch
            .remove_links
            .iter()
            .map(|l| parse_id(l))
            .collect::<Result<_, _>>()?;
        let current = (patch.content.is_some() || patch.task.is_some())
            .then(|| self.store().get(id).map_err(store_error))
            .transpose()?;
        // New text: its wikilinks become links, and links made from wikilinks that are
        // gone from it go.
        if let (Some(content), Some(current)) = (&patch.content, &current) {
            let names = Self::wikilink_names(content);
            let targets = self.resolve_titles(&names, Some(id));
            for target in &targets {
                if !current.links.contains_key(target)
                    && !add_links.iter().any(|(t, _)| t == target)
                {
                    add_links.push((*target, WIKILINK.to_owned()));
                }
            }
            let store = self.store();
            for (target, relation) in &current.links {
                if relation != WIKILINK || targets.contains(target) || remove_links.contains(target)
                {
                    continue;
                }
                // Still named, though no longer resolvable to it alone: kept.
                let named = store
                    .get(*target)
                    .is_ok_and(|m| names.contains(&m.title.to_lowercase()));
                if !named {
                    remove_links.push(*target);
                }
            }
        }
        let (task, kind) = match (&patch.task, &current) {
            (Some(fields), Some(current)) => {
                let base = current.task.clone().unwrap_or_default();
                let task = fields
                    .apply(&base)
                    .map_err(|e| ApiError::invalid(format!("task: {e}")))?;
                let kind = match patch.kind {
                    None if current.kind != "task" => Some("task".to_owned()),
                    kind => kind,
                };
                (Some(task), kind)
            }
            _ => (None, patch.kind),
        };
        let edit = MemoryEdit {
            title: patch.title,
            content: patch.content,
            add_tags: patch.add_tags,
            remove_tags: patch.remove_tags,
            kind,
            importance: patch.importance,
            add_links,
            remove_links,
            task,
        };
        if edit.is_empty() {
            return Err(ApiError::bad_request("the patch changes nothing"));
        }
        let view = {
            let mut store = self.store_mut();
            let memory = store.edit(id, &edit).map_err(store_error)?;
            MemoryView::new(&memory, &self.names(&store)?)
        };
        self.index_now();
        Ok(view)
    }

    fn delete(&self, id: &str) -> Result<(), ApiError> {
        let id = parse_id(id)?;
        let mut store = self.store_mut();
        store.remove(&[id]).map_err(store_error)?;
        // Forget it in the index files now, whatever position they are at; if the index
        // cannot be opened, its next catch-up forgets it.
        let result = self.with_index(&store, |index| {
            index.forget_now(&[id])?;
            index.catch_up_within(&store, Some(Instant::now() + WRITE_VECTOR_BUDGET))
        });
        if let Err(e) = result {
            tracing::warn!("deleted, but the search index will forget later: {e}");
        }
        Ok(())
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<HitView>, ApiError> {
        let mode = match query.mode.as_deref().unwrap_or("hybrid") {
            "hybrid" => Mode::Hybrid,
            "semantic" => Mode::Semantic,
            "keyword" => Mode::Keyword,
            other => {
                return Err(ApiError::invalid(format!(
                    "mode must be hybrid, semantic or keyword, not {other:?}"
                )));
            }
        };
        let store = self.store();
        let filter = Filter {
            collection: query
                .collection
                .as_deref()
                .map(|c| SearchIndex::collection_filter(&store, c))
                .transpose()
                .map_err(search_error)?,
            tag: query
                .tag
                .as_deref()
                .map(mnemon_crdt::normalize_tag)
                .transpose()
                .map_err(|e| ApiError::invalid(e.to_string()))?,
            kind: query.kind.clone(),
            since: query.since,
            until: query.until,
            min_importance: query.min_importance,
        };
        let query = Query {
            text: query.q.clone(),
            k: query.k.unwrap_or(10),
            mode,
            filter,
        };
        let hits = self.with_index_read(&store, |index| index.search(&store, &query))?;
        Ok(hits
            .into_iter()
            .map(|h| HitView {
                id: h.id.to_string(),
                title: h.title,
                score: h.score,
                snippet: h.snippet,
                chunk: h.chunk,
            })
            .collect())
    }

    fn collections(&self) -> Result<Vec<CollectionView>, ApiError> {
        let store = self.store();
        Ok(store
            .collections()
            .map_err(store_error)?
            .iter()
            .map(CollectionView::from)
            .collect())
    }

    fn create_collection(&self, name: &str) -> Result<CollectionView, ApiError> {
        let mut store = self.store_mut();
        let collection = store.create_collection(name).map_err(store_error)?;
        Ok(CollectionView::from(&collection))
    }

    fn members(&self, collection: &str) -> Result<Vec<MemberView>, ApiError> {
        let store = self.store();
        let id = store.resolve_collection(collection).map_err(store_error)?;
        let peers = self.network.get().map(|n| n.peers()).unwrap_or_default();
        let sync_of = |did: &str| {
            let wanted = id.to_string();
            peers
                .iter()
                .filter(|p| p.did == did)
                .flat_map(|p| p.sync.iter())
                .find(|s| s.collection == wanted)
                .cloned()
        };
        Ok(store
            .members(id)
            .map_err(store_error)?
            .into_iter()
            .map(|m| {
                let did = m.did.to_string();
                MemberView {
                    sync: sync_of(&did),
                    did,
                    role: m.role.to_string(),
                }
            })
            .collect())
    }

    fn share(&self, collection: &str, request: ShareRequest) -> Result<MemberView, ApiError> {
        let did: mnemon_identity::Did =
            request.did.trim().parse().map_err(|e| {
                ApiError::invalid(format!("{:?} is not a did:key: {e}", request.did))
            })?;
        let role: mnemon_crdt::Role = request.role.trim().parse().map_err(ApiError::invalid)?;
        {
            let mut store = self.store_mut();
            let id = store.resolve_collection(collection).map_err(store_error)?;
            store.share(id, &did, role).map_err(store_error)?;
        }
        if let Some(network) = self.network.get() {
            network.refresh();
        }
        Ok(MemberView {
            did: did.to_string(),
            role: role.to_string(),
            sync: None,
        })
    }

    fn unshare(&self, collection: &str, did: &str) -> Result<(), ApiError> {
        let did: mnemon_identity::Did = did
            .trim()
            .parse()
            .map_err(|e| ApiError::invalid(format!("{did:?} is not a did:key: {e}")))?;
        {
            let mut store = self.store_mut();
            let id = store.resolve_collection(collection).map_err(store_error)?;
            store.unshare(id, &did).map_err(store_error)?;
        }
        if let Some(network) = self.network.get() {
            network.refresh();
        }
        Ok(())
    }

    fn invite(&self, collection: &str, request: InviteRequest) -> Result<InviteView, ApiError> {
        const DAY: u64 = 24 * 3600;
        let role: mnemon_crdt::Role = request
            .role
            .as_deref()
            .unwrap_or("read")
            .trim()
            .parse()
            .map_err(ApiError::invalid)?;
        let secs = request.expires_in_secs.unwrap_or(7 * DAY);
        if secs == 0 || secs > 365 * DAY {
            return Err(ApiError::invalid(format!(
                "expires_in_secs must be between 1 and {} (365 days), not {secs}",
                365 * DAY
            )));
        }
        let expires_at = mnemon_crdt::Timestamp::from_millis(
            mnemon_crdt::Timestamp::now().as_millis() + (secs as i64) * 1000,
        );
        let (invite, id) = {
            let mut store = self.store_mut();
            let id = store.resolve_collection(collection).map_err(store_error)?;
            (
                store
                    .create_invite(id, role, expires_at)
                    .map_err(store_error)?,
                id,
            )
        };
        let addresses = self
            .network
            .get()
            .map(crate::net::Network::addresses)
            .unwrap_or_default();
        let ticket = mnemon_identity::Ticket {
            invite,
            addresses: addresses.clone(),
        };
        Ok(InviteView {
            ticket: ticket.to_string(),
            collection: id.to_string(),
            role: role.to_string(),
            expires_at: expires_at.as_millis(),
            addresses: addresses.len(),
        })
    }

    fn join(&self, request: JoinRequest) -> Result<JoinView, ApiError> {
        let ticket: mnemon_identity::Ticket = request
            .ticket
            .parse()
            .map_err(|e: mnemon_identity::TicketError| ApiError::invalid(e.to_string()))?;
        ticket
            .invite
            .verify(mnemon_crdt::Timestamp::now().as_millis())
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let collection = CollectionId::from_u128(u128::from_be_bytes(ticket.invite.collection));
        {
            let mut store = self.store_mut();
            if ticket.invite.owner == store.did() {
                return Err(ApiError::invalid(
                    "this ticket was made by this node: give it to the node that should join",
                ));
            }
            store.add_join(&ticket).map_err(store_error)?;
        }
        let mut dialing = 0;
        if let Some(network) = self.network.get() {
            network.refresh();
            for addr in &ticket.addresses {
                match addr.parse() {
                    Ok(addr) => {
                        network.dial_now(addr);
                        dialing += 1;
                    }
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "a ticket address is not a multiaddr")
                    }
                }
            }
        }
        Ok(JoinView {
            collection: collection.to_string(),
            owner: ticket.invite.owner.to_string(),
            role: if ticket.invite.write { "write" } else { "read" }.to_owned(),
            dialing,
        })
    }

    fn peers(&self) -> Result<Vec<PeerView>, ApiError> {
        Ok(self
            .network
            .get()
            .map(|n| {
                n.peers()
                    .into_iter()
                    .map(|p| PeerView {
                        did: p.did,
                        peer_id: p.peer_id,
                        addresses: p.addresses,
                        connected: p.connected,
                        collections: p.collections,
                        sync: p.sync,
                        last_sync: p.last_sync,
                        last_error: p.last_error,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn status(&self) -> Result<serde_json::Value, ApiError> {
        let store = self.store();
        let status = self.with_index_read(&store, |index| index.status(&store))?;
        Ok(serde_json::json!({
            "did": store.did().to_string(),
            "memories": status.memories,
            "collections": store.collections().map_err(store_error)?.len(),
            "index": {
                "models": [ {
                    "model": status.model,
                    "indexed": status.indexed,
                    "pending": status.pending,
                    "pending_changes": status.pending_changes,
                    "vectors_stored": status.vectors_stored,
                    "segments": status.segments,
                } ],
                "keyword_indexed": status.keyword_indexed,
                "keyword_pending": status.keyword_pending,
            },
            "network": self.network.get().map(|n| serde_json::json!({
                "peer_id": n.peer_id.to_string(),
                "addresses": n.addresses(),
                "reachability": n.reachability(),
                "peers_connected": n.peers().iter().filter(|p| p.connected).count(),
            })),
        }))
    }

    fn events(&self) -> broadcast::Receiver<EventView> {
        self.events.subscribe()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn gauges(&self) -> Vec<Gauge> {
        let store = self.store();
        let mut gauges = Vec::new();
        if let Ok(count) = store.count() {
            gauges.push(Gauge {
                name: "mnemon_memories",
                help: "Memories in the store.",
                values: vec![(vec![], count as f64)],
            });
        }
        if let Ok(status) = self.with_index_read(&store, |index| index.status(&store)) {
            gauges.push(Gauge {
                name: "mnemon_index_memories",
                help: "Memories in each search index.",
                values: vec![
                    (
                        vec![
                            ("index", "vector".to_owned()),
                            ("model", status.model.clone()),
                        ],
                        status.indexed as f64,
                    ),
                    (
                        vec![("index", "keyword".to_owned()), ("model", String::new())],
                        status.keyword_indexed as f64,
                    ),
                ],
            });
            gauges.push(Gauge {
                name: "mnemon_index_pending",
                help: "Memories changed but not yet in the vector index.",
                values: vec![(vec![("model", status.model)], status.pending as f64)],
            });
            gauges.push(Gauge {
                name: "mnemon_vectors_stored",
                help: "Vectors stored, live and stale.",
                values: vec![(vec![], status.vectors_stored as f64)],
            });
        }
        if let Ok(sizes) = store.table_sizes() {
            gauges.push(Gauge {
                name: "mnemon_store_table_bytes",
                help: "Bytes stored per database table.",
                values: sizes
                    .into_iter()
                    .map(|(table, bytes)| (vec![("table", table.to_owned())], bytes as f64))
                    .collect(),
            });
        }
        gauges
    }
}
