//! The node as a [`Api`]: the store and the search indexes behind the API that
//! `mnemon serve` exposes and the CLI uses in-process.
//!
//! Reads take a snapshot of the store ([`StoreReader`]) and never wait; writes go through
//! the store's writer thread ([`StoreHandle`]), which group-commits them, and answer once
//! durable with their change-log position (`seq`). The search indexes follow the change
//! log: under `mnemon serve` the indexer thread ([`Service::spawn_indexer`]) applies it in
//! bounded batches; in a short-lived CLI process a search catches up inline first. A
//! search with `after = seq` waits (bounded) until the index has reached that write.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use mnemon_api::{
    AnswerView, AskEvent, AskRequest, CollectionView, CreateMemory, EventView, GraphQuery,
    GraphView, HitView, InviteRequest, InviteView, JoinRequest, JoinView, ListQuery, MemberView,
    MemoryView, Page, PatchMemory, PeerView, SearchQuery, ShareRequest,
};
use mnemon_api::{Api, Error as ApiError, EventKind, Gauge, Role, SyncState};
use mnemon_crdt::{
    ChangeKind, CollectionId, ListFilter, MemoryEdit, MemoryId, NewMemory, Source, Store,
    StoreClosed, StoreError, StoreHandle, StoreReader, Task, Timestamp,
};
use tokio::sync::broadcast;

use crate::search::embed::Embedder;
use crate::search::{Filter, Mode, Query, SearchError, SearchIndex};

/// Longest page of a list.
pub const MAX_PAGE: usize = mnemon_api::MAX_LIST_PAGE;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: usize = 50;
/// The relation of links made from `[[wikilinks]]` in a memory's text.
pub const WIKILINK: &str = mnemon_crdt::markdown::WIKILINK_RELATION;
/// Most wikilinks of one text resolved.
const MAX_WIKILINKS: usize = 64;
/// Deepest graph query.
pub const MAX_GRAPH_DEPTH: usize = 5;
/// Most memories in one graph answer.
pub const MAX_GRAPH_NODES: usize = 2000;
/// How long a delete may spend bringing the indexes up to date.
const WRITE_VECTOR_BUDGET: Duration = Duration::from_secs(2);
/// How long one indexer step may hold the index for writing (at least one batch).
const INDEX_SLICE: Duration = Duration::from_millis(50);
/// How long a search with `after` waits for the index to reach that position.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);

/// Makes the embedder when the search index is first needed.
pub type EmbedderFactory = Box<dyn Fn() -> anyhow::Result<Arc<dyn Embedder>> + Send + Sync>;

/// A node's store and indexes, shared by request handlers.
///
/// The search index (and its embedder) is opened when first needed, so reading and
/// writing memories work even when the embedder cannot be reached; the index then
/// catches up from the change log.
pub struct Service {
    store: StoreReader,
    writer: StoreHandle,
    index: RwLock<Option<SearchIndex>>,
    /// Where the indexes are, for read-your-writes waits and `status`.
    progress: IndexProgress,
    /// Whether the indexer thread runs (else searches catch up inline).
    indexer: AtomicBool,
    index_dir: PathBuf,
    embedder: EmbedderFactory,
    events: broadcast::Sender<EventView>,
    ready: AtomicBool,
    source: &'static str,
    /// Whether the vector index is sealed by [`Service::background_step`].
    background_seal: AtomicBool,
    /// Federation, when `mnemon serve` runs it.
    network: std::sync::OnceLock<mnemon_net::Network>,
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

/// The change-log position the keyword index has reached, with a condition variable that
/// wakes searches waiting for their writes.
#[derive(Debug, Default)]
struct IndexProgress {
    seq: Mutex<u64>,
    moved: Condvar,
    /// When the indexer first saw itself behind, as milliseconds since the epoch (0: not
    /// behind).
    behind_since: AtomicU64,
}

impl IndexProgress {
    fn set(&self, seq: u64) {
        let mut at = self
            .seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seq > *at {
            *at = seq;
            self.moved.notify_all();
        }
    }

    fn get(&self) -> u64 {
        *self
            .seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the position is at least `seq`, for at most `wait`; returns where it is.
    fn wait_for(&self, seq: u64, wait: Duration) -> u64 {
        let deadline = Instant::now() + wait;
        let mut at = self
            .seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *at < seq {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            at = self
                .moved
                .wait_timeout(at, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        *at
    }
}

fn closed(e: StoreClosed) -> ApiError {
    ApiError::unavailable(e.to_string())
}

/// The memories of `ids` that still exist (one may be deleted between two reads).
fn load_live(store: &StoreReader, ids: &[MemoryId]) -> Result<Vec<mnemon_crdt::Memory>, ApiError> {
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
        StoreError::UnknownCollection(_) => ApiError::not_found(e.to_string()),
        StoreError::AmbiguousCollection { .. } | StoreError::DuplicateCollectionName(_) => {
            ApiError::conflict(e.to_string())
        }
        StoreError::InvalidCollectionName(_) | StoreError::Invalid(_) | StoreError::Sharing(_) => {
            ApiError::invalid(e.to_string())
        }
        StoreError::ReadOnly(_) => ApiError::forbidden(e.to_string()),
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

fn event_kind(kind: ChangeKind) -> EventKind {
    match kind {
        ChangeKind::Created => EventKind::Created,
        ChangeKind::Updated => EventKind::Updated,
        ChangeKind::Deleted => EventKind::Deleted,
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
    ) -> std::io::Result<Service> {
        let (events, _) = broadcast::channel(1024);
        let reader = store.reader();
        let writer = StoreHandle::spawn(store)?;
        Ok(Service {
            store: reader,
            writer,
            index: RwLock::new(None),
            progress: IndexProgress::default(),
            indexer: AtomicBool::new(false),
            background_seal: AtomicBool::new(false),
            network: std::sync::OnceLock::new(),
            chat: std::sync::OnceLock::new(),
            bulk: AtomicBool::new(false),
            index_dir: index_dir.to_owned(),
            embedder,
            events,
            ready: AtomicBool::new(false),
            source,
        })
    }

    /// Attaches the running network (for `peers`, and so sharing takes effect at once).
    pub fn set_network(&self, network: mnemon_net::Network) {
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
    pub fn network(&self) -> Option<&mnemon_net::Network> {
        self.network.get()
    }

    /// A snapshot reader of the store (for the sync driver, tests and tools).
    pub fn reader(&self) -> &StoreReader {
        &self.store
    }

    /// The store's one writer (the sync driver applies peers' changes through it).
    pub fn writer(&self) -> &StoreHandle {
        &self.writer
    }

    /// Runs `f` with the store for reading.
    pub fn read_store<T>(&self, f: impl FnOnce(&StoreReader) -> T) -> T {
        f(&self.store)
    }

    /// Runs `f` alone on the store's writer thread (tools and tests).
    pub fn write_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> T + Send + 'static,
    ) -> Result<T, StoreClosed> {
        self.writer.call_blocking(f)
    }

    /// Opens the search index now (the keyword index caught up; vectors as far as saved).
    pub fn load_index(&self) -> Result<(), ApiError> {
        self.with_index(|_| Ok(()))
    }

    fn store(&self) -> &StoreReader {
        &self.store
    }

    /// Runs `f` alone on the writer thread and flattens the two errors.
    fn solo<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.writer
            .call_blocking(f)
            .map_err(closed)?
            .map_err(store_error)
    }

    /// Runs `f` on the search index, opening it first if need be.
    fn with_index<T>(
        &self,
        f: impl FnOnce(&mut SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, ApiError> {
        let store = &self.store;
        let mut slot = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            let embedder = (self.embedder)()
                .map_err(|e| ApiError::unavailable(format!("search is unavailable: {e:#}")))?;
            let index = SearchIndex::open_lagging(&self.index_dir, embedder, store)
                .map_err(search_error)?;
            self.progress.set(index.positions().0);
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
        self.with_index(|_| Ok(()))?;
        self.with_index_read(f)
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
                            kind: event_kind(event.kind),
                        });
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }

    /// Without an indexer thread (a CLI process), brings the keyword index up to date and
    /// the vector index within a budget, before a search. With one, does nothing: the
    /// indexer follows the log. If the index cannot be opened (the embedder is
    /// unreachable, say), the index catches up later.
    fn index_now(&self) {
        if self.bulk.load(Ordering::Relaxed) || self.indexer.load(Ordering::Relaxed) {
            return;
        }
        let store = &self.store;
        let result = self.with_index(|index| {
            let applied =
                index.catch_up_within(store, Some(Instant::now() + WRITE_VECTOR_BUDGET))?;
            Ok((applied, index.positions().0))
        });
        match result {
            Ok((_, seq)) => self.progress.set(seq),
            Err(e) => tracing::warn!("the search index will catch up later: {e}"),
        }
    }

    /// Waits until the index reflects change `seq` (a write's `seq`), for a few seconds at
    /// most: then 503, naming the lag.
    fn wait_indexed(&self, seq: u64) -> Result<(), ApiError> {
        let last = self.store.last_seq().map_err(store_error)?;
        if seq > last {
            return Err(ApiError::invalid(format!(
                "after={seq} is beyond the store's last change ({last})"
            )));
        }
        if !self.indexer.load(Ordering::Relaxed) {
            self.index_now();
        }
        let at = self.progress.wait_for(seq, READ_YOUR_WRITES_WAIT);
        if at < seq {
            return Err(ApiError::unavailable(format!(
                "the search index is {} changes behind change {seq} (it is at {at}); try again",
                seq - at
            )));
        }
        Ok(())
    }

    /// How far the keyword index is behind the store: changes, and milliseconds since the
    /// indexer first saw itself behind (0 when caught up).
    pub fn index_lag(&self) -> (u64, u64) {
        let last = self.store.last_seq().unwrap_or(0);
        let changes = last.saturating_sub(self.progress.get());
        let since = self.progress.behind_since.load(Ordering::Relaxed);
        let ms = if changes == 0 || since == 0 {
            0
        } else {
            (Timestamp::now().as_millis() as u64).saturating_sub(since)
        };
        (changes, ms)
    }

    /// Starts the indexer: one thread that follows the store's change log, applies it to
    /// the keyword and vector indexes in bounded batches, seals the vector index's recent
    /// segment in the background and re-embeds after a model change. Ends when `stop` is
    /// set.
    pub fn spawn_indexer(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.indexer.store(true, Ordering::Relaxed);
        self.seal_in_background();
        let service = self.clone();
        std::thread::Builder::new()
            .name("mnemon-indexer".into())
            .spawn(move || {
                let mut failures = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let busy = match service.index_step() {
                        Ok(busy) => {
                            failures = 0;
                            busy
                        }
                        Err(e) => {
                            failures = failures.saturating_add(1);
                            if failures == 1 || failures.is_power_of_two() {
                                tracing::warn!("indexing failed ({failures} times in a row): {e}");
                            }
                            std::thread::sleep(
                                Duration::from_millis(250).saturating_mul(failures.min(20)),
                            );
                            continue;
                        }
                    };
                    if !busy {
                        // Sleep until the next commit (or a moment, to notice `stop`).
                        let at = service.progress.get();
                        service
                            .store
                            .wait_for_change(at, Duration::from_millis(200));
                    }
                }
            })
    }

    /// One step of the indexer: the store's changes into both indexes for a bounded slice,
    /// then background work on the vector index. Returns whether work remains.
    fn index_step(&self) -> Result<bool, ApiError> {
        let store = &self.store;
        let last = store.last_seq().map_err(store_error)?;
        if last > self.progress.get() {
            let _ = self.progress.behind_since.compare_exchange(
                0,
                Timestamp::now().as_millis() as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            let seq = self.with_index(|index| {
                index.step(store, Instant::now() + INDEX_SLICE)?;
                Ok(index.positions().0)
            })?;
            self.progress.set(seq);
            if seq >= last {
                self.progress.behind_since.store(0, Ordering::Relaxed);
            }
            if seq < store.last_seq().map_err(store_error)? {
                return Ok(true);
            }
        }
        self.background_step(Duration::from_millis(250))
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
        let store = &self.store;
        let (pending, job) = self.with_index(|index| {
            index.catch_up_vectors(store, Some(Instant::now() + slice), &mut |_| {})?;
            Ok((index.status(store)?.pending_changes > 0, index.seal_job()))
        })?;
        if let Some(job) = job {
            let started = Instant::now();
            let built = job.build();
            let installed = self.with_index(|index| Ok(index.install_seal(built)))?;
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

    fn names(&self, store: &StoreReader) -> Result<HashMap<CollectionId, String>, ApiError> {
        Ok(store
            .collection_names()
            .map_err(store_error)?
            .into_iter()
            .collect())
    }

    fn view(&self, store: &StoreReader, id: MemoryId) -> Result<MemoryView, ApiError> {
        let (memory, name) = store.get_named(id).map_err(store_error)?;
        let names = name.map(|n| (memory.collection, n)).into_iter().collect();
        Ok(MemoryView::new(&memory, &names))
    }

    /// The names the `[[wikilinks]]` in `content` use (see
    /// [`mnemon_crdt::markdown::wikilink_key`]), at most [`MAX_WIKILINKS`].
    fn wikilink_names(content: &str) -> Vec<String> {
        let mut names = mnemon_crdt::markdown::wikilink_keys(content);
        names.truncate(MAX_WIKILINKS);
        names
    }

    /// The memories wikilink `names` resolve to: for each, the one memory with that title
    /// (trimmed, any case, from the store's titles table, so right however far the index
    /// lags); names that match none or several are left alone, and so is `this`.
    fn resolve_titles(&self, names: &[String], this: Option<MemoryId>) -> Vec<MemoryId> {
        let mut out = Vec::new();
        for name in names {
            if let Ok(ids) = self.store.titled(name)
                && let [only] = ids[..]
                && Some(only) != this
                && !out.contains(&only)
            {
                out.push(only);
            }
        }
        out
    }

    fn links(links: &[mnemon_api::LinkView]) -> Result<Vec<(MemoryId, String)>, ApiError> {
        links
            .iter()
            .map(|l| Ok((parse_id(&l.target)?, l.relation.clone())))
            .collect()
    }
}

impl Api for Service {
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
        let store = self.store();
        let collection = new
            .collection
            .as_deref()
            .map(|c| store.resolve_collection(c))
            .transpose()
            .map_err(store_error)?;
        let memory = NewMemory {
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
        };
        // Validated, built and signed here, on this request's thread: the writer thread
        // only writes it.
        let prepared = self
            .writer
            .builder()
            .prepare(&memory)
            .map_err(store_error)?;
        let (memory, seq) = self
            .writer
            .write_blocking(move |s: &mut Store| {
                let memory = s.add_prepared(prepared.clone())?;
                Ok((memory, s.last_write_seq()))
            })
            .map_err(store_error)?;
        let mut view = MemoryView::new(&memory, &self.names(store)?);
        view.seq = Some(seq);
        Ok(view)
    }

    fn get(&self, id: &str) -> Result<MemoryView, ApiError> {
        let id = parse_id(id)?;
        self.view(self.store(), id)
    }

    fn backlinks(&self, id: &str) -> Result<Vec<MemoryView>, ApiError> {
        let id = parse_id(id)?;
        let store = self.store();
        store.get(id).map_err(store_error)?;
        let names = self.names(store)?;
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
            memories.extend(load_live(store, &kept[1..])?);
            let center = memories[0].id;
            return Ok(crate::graph::around(&memories, center, depth, limit));
        }
        // No center (or one outside the collection asked for): every linked memory, most
        // recently changed first, loading only those kept.
        let linked = store.linked(collection).map_err(store_error)?;
        let memories = load_live(store, &linked[..linked.len().min(limit)])?;
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
        let all = match query.title.as_deref() {
            // By title: the titles table names the few candidates; the filter applies to
            // them.
            Some(title) => {
                let tag = filter
                    .tag
                    .as_deref()
                    .map(mnemon_crdt::normalize_tag)
                    .transpose()
                    .map_err(|e| ApiError::invalid(e.to_string()))?;
                let mut found: Vec<mnemon_crdt::Memory> = store
                    .titled(title)
                    .map_err(store_error)?
                    .into_iter()
                    .filter_map(|id| store.get(id).ok())
                    .filter(|m| {
                        filter.collection.is_none_or(|c| m.collection == c)
                            && tag.as_ref().is_none_or(|t| m.tags.contains(t))
                            && filter.kind.as_ref().is_none_or(|k| m.kind == *k)
                    })
                    .collect();
                // The list's order: most recently changed first.
                found.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(b.id.cmp(&a.id)));
                found
            }
            None => store.list(&filter).map_err(store_error)?,
        };
        let names = self.names(store)?;
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
                    .is_ok_and(|m| names.contains(&mnemon_crdt::title_key(&m.title)));
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
        let (memory, seq) = self
            .writer
            .write_blocking(move |s: &mut Store| {
                let memory = s.edit(id, &edit)?;
                Ok((memory, s.last_write_seq()))
            })
            .map_err(store_error)?;
        let mut view = MemoryView::new(&memory, &self.names(self.store())?);
        view.seq = Some(seq);
        Ok(view)
    }

    fn delete(&self, id: &str) -> Result<(), ApiError> {
        let id = parse_id(id)?;
        self.writer
            .write_blocking(move |s: &mut Store| s.remove(&[id]))
            .map_err(store_error)?;
        // Forget it in the index files now, whatever position they are at; if the index
        // cannot be opened, its next catch-up forgets it.
        // The indexer, if one runs, applies the rest of the log; a CLI process catches up.
        let store = self.store();
        let inline = !self.indexer.load(Ordering::Relaxed);
        let result = self.with_index(|index| {
            index.forget_now(&[id])?;
            if inline {
                index.catch_up_within(store, Some(Instant::now() + WRITE_VECTOR_BUDGET))?;
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::warn!("deleted, but the search index will forget later: {e}");
        }
        Ok(())
    }

    fn search(&self, query: &SearchQuery) -> Result<Vec<HitView>, ApiError> {
        let mode = match query.mode.unwrap_or_default() {
            mnemon_api::SearchMode::Hybrid => Mode::Hybrid,
            mnemon_api::SearchMode::Semantic => Mode::Semantic,
            mnemon_api::SearchMode::Keyword => Mode::Keyword,
        };
        if let Some(seq) = query.after {
            self.wait_indexed(seq)?;
        } else {
            self.index_now();
        }
        let store = self.store();
        let filter = Filter {
            collection: query
                .collection
                .as_deref()
                .map(|c| SearchIndex::collection_filter(store, c))
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
        let hits = self.with_index_read(|index| index.search(store, &query))?;
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
        let name = name.to_owned();
        let collection = self.solo(move |s| s.create_collection(&name))?;
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
                .map(sync_view)
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
                    role: m.role.into(),
                }
            })
            .collect())
    }

    fn share(&self, collection: &str, request: ShareRequest) -> Result<MemberView, ApiError> {
        let did: mnemon_identity::Did =
            request.did.trim().parse().map_err(|e| {
                ApiError::invalid(format!("{:?} is not a did:key: {e}", request.did))
            })?;
        let role = mnemon_crdt::Role::from(request.role);
        let id = self
            .store()
            .resolve_collection(collection)
            .map_err(store_error)?;
        self.solo(move |s| s.share(id, &did, role))?;
        if let Some(network) = self.network.get() {
            network.refresh();
        }
        Ok(MemberView {
            did: did.to_string(),
            role: request.role,
            sync: None,
        })
    }

    fn unshare(&self, collection: &str, did: &str) -> Result<(), ApiError> {
        let did: mnemon_identity::Did = did
            .trim()
            .parse()
            .map_err(|e| ApiError::invalid(format!("{did:?} is not a did:key: {e}")))?;
        let id = self
            .store()
            .resolve_collection(collection)
            .map_err(store_error)?;
        self.solo(move |s| s.unshare(id, &did))?;
        if let Some(network) = self.network.get() {
            network.refresh();
        }
        Ok(())
    }

    fn invite(&self, collection: &str, request: InviteRequest) -> Result<InviteView, ApiError> {
        const DAY: u64 = 24 * 3600;
        let role = request.role.unwrap_or_default();
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
        let id = self
            .store()
            .resolve_collection(collection)
            .map_err(store_error)?;
        let invite = self.solo(move |s| s.create_invite(id, role.into(), expires_at))?;
        let addresses = self
            .network
            .get()
            .map(mnemon_net::Network::addresses)
            .unwrap_or_default();
        let ticket = mnemon_identity::Ticket {
            invite,
            addresses: addresses.clone(),
        };
        Ok(InviteView {
            ticket: ticket.to_string(),
            collection: id.to_string(),
            role,
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
        if ticket.invite.owner == self.store().did() {
            return Err(ApiError::invalid(
                "this ticket was made by this node: give it to the node that should join",
            ));
        }
        let kept = ticket.clone();
        self.solo(move |s| s.add_join(&kept))?;
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
            role: if ticket.invite.write {
                Role::Write
            } else {
                Role::Read
            },
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
                        sync: p.sync.iter().map(sync_view).collect(),
                        last_sync: p.last_sync,
                        last_error: p.last_error,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    fn status(&self) -> Result<serde_json::Value, ApiError> {
        let store = self.store();
        let status = self.with_index_read(|index| index.status(store))?;
        let (lag_changes, lag_ms) = self.index_lag();
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
                "lag_changes": lag_changes,
                "lag_ms": lag_ms,
                "seq": store.last_seq().map_err(store_error)?,
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
        if let Ok(status) = self.with_index_read(|index| index.status(store)) {
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

/// The API's view of how a collection syncs with a peer.
fn sync_view(s: &mnemon_net::CollectionSync) -> mnemon_api::SyncView {
    mnemon_api::SyncView {
        collection: s.collection.clone(),
        state: match s.state {
            mnemon_net::SyncPhase::InSync => SyncState::InSync,
            mnemon_net::SyncPhase::Behind => SyncState::Behind,
            mnemon_net::SyncPhase::Error => SyncState::Error,
            mnemon_net::SyncPhase::Offline => SyncState::Offline,
        },
        detail: s.detail.clone(),
        last_refused: s.last_refused.clone(),
    }
}
