//! The node as an [`Api`](mnemon_api::Api): the store and the search indexes behind the API that
//! `mnemon serve` exposes and the CLI uses in-process.
//!
//! Reads take a snapshot of the store ([`StoreReader`]) and never wait; writes go through
//! the store's writer thread ([`StoreHandle`]), which group-commits them, and answer once
//! durable with their change-log position (`seq`). The search indexes follow the change
//! log: under `mnemon serve` the indexer thread ([`Service::spawn_indexer`]) applies it in
//! bounded batches; in a short-lived CLI process a search catches up inline first. A
//! search with `after = seq` waits (bounded) until the index has reached that write.
//!
//! `mod.rs` holds the service and its helpers, `indexer.rs` the indexer that follows the
//! change log, `api.rs` the [`Api`](mnemon_api::Api) implementation for memories, and `sharing.rs` the
//! collections, members, invites and peers.

mod api;
mod indexer;
mod sharing;
pub use indexer::on_memory_freed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use mnemon_api::Error as ApiError;
use mnemon_api::{EventView, MemoryView};
use mnemon_crdt::{
    CollectionId, MemoryId, Store, StoreClosed, StoreError, StoreHandle, StoreReader,
};
use tokio::sync::broadcast;

use crate::search::embed::Embedder;
use crate::search::{SearchError, SearchIndex};

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
/// How long one indexer step may hold the index for writing (at least one batch): searches
/// wait meanwhile.
const INDEX_SLICE: Duration = Duration::from_millis(10);
/// How long a search with `after` waits for the index to reach that position.
const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(5);
/// While changes stream in, the indexer commits the keyword index at most once per this
/// window (each commit is a new segment, fsynced, which delays the store's own commits on
/// a shared disk), unless a search waits for its writes or a delete is to be applied.
const KEYWORD_COMMIT_WINDOW: Duration = Duration::from_secs(1);

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
    /// The peer table federation keeps, read when federation does not run here.
    peers_file: std::sync::OnceLock<PathBuf>,
    /// The chat model questions are answered with.
    chat: std::sync::OnceLock<crate::ask::ChatClient>,
    /// What loads the second stages `[search] rerank` names (on the first search).
    rerank_loader: std::sync::OnceLock<RerankLoader>,
    /// The second stages, once loaded.
    rerankers: std::sync::OnceLock<Rerankers>,
    /// Writes leave the indexes to one catch-up at the end (an import in this process).
    bulk: AtomicBool,
    /// The data folder and `[backup]`, for backups and their state in `status`.
    backups: std::sync::OnceLock<Backups>,
    /// Admits searches to the index in turn.
    search_turns: Turns,
    /// A vector save is owed at once (the sealer sealed): the indexer's next save takes it.
    save_owed: AtomicBool,
    /// The sealer is building a vector graph (a seal or a compaction): `status` shows it.
    building_graph: AtomicBool,
}

/// Admission for CPU-bound work, first come first served, a few at a time (twice the
/// cores: the rest of a request runs outside its turn). Fifty searches let in at once on
/// two cores share them, so each finishes about as late as the last and an unlucky one
/// waits far longer; in turn, each waits for those ahead of it and then runs at full
/// speed (at 50 connections this halves hybrid search's p99 for a little throughput:
/// README, Benchmarks). Searches on the blocking pool take them; a search on an async
/// worker takes none (it must not wait, and the workers are no more than the cores).
struct Turns(tokio::sync::Semaphore);

impl Turns {
    fn new(at_once: usize) -> Turns {
        Turns(tokio::sync::Semaphore::new(at_once.max(1)))
    }

    fn per_core() -> Turns {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Turns::new(2 * cores)
    }

    /// Waits for this caller's turn, which lasts as long as what it returns. Blocks: call
    /// it off the async runtime's workers (as every blocking call of the service).
    fn wait(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // Never closed, so never `None`: a closed semaphore would let the caller through.
        futures::executor::block_on(self.0.acquire()).ok()
    }
}

/// Second stages of search, in order.
pub type Rerankers = Vec<Arc<dyn crate::search::rerank::Reranker>>;
/// Loads the second stages (`[search] rerank`) when first needed.
pub type RerankLoader = Box<dyn Fn() -> anyhow::Result<Rerankers> + Send + Sync>;

/// What backups need besides the store: the data folder (key file, configuration) and the
/// schedule, if `[backup]` sets one.
#[derive(Debug, Clone)]
pub struct Backups {
    /// The data folder.
    pub data: crate::DataDir,
    /// `[backup]`.
    pub schedule: Option<crate::backup::Schedule>,
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
    /// The furthest position a search waits for (changed under `seq`'s lock).
    wanted: AtomicU64,
    /// The changes the index has not reached, as (the last position the indexer saw, when
    /// it first saw it, in milliseconds since the epoch), oldest first: how long the oldest
    /// change not yet searchable has waited.
    seen: Mutex<std::collections::VecDeque<(u64, u64)>>,
}

/// At most this many moments are kept for the lag; beyond them, later changes count from
/// the last one kept (the lag reads a little older, never younger).
const LAG_MOMENTS: usize = 4096;

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
        drop(at);
        let mut seen = self.seen();
        while seen.front().is_some_and(|&(last, _)| last <= seq) {
            seen.pop_front();
        }
    }

    /// The indexer has seen the store's log reach `last` at `now_ms`.
    fn saw(&self, last: u64, now_ms: u64) {
        if last <= self.get() {
            return;
        }
        let mut seen = self.seen();
        let full = seen.len() >= LAG_MOMENTS;
        match seen.back_mut() {
            Some((at, _)) if *at >= last => {}
            // Full: the newest moment kept takes these changes too, at its older time.
            Some((at, _)) if full => *at = last,
            _ => seen.push_back((last, now_ms)),
        }
    }

    /// How long, at `now_ms`, the oldest change the index has not reached has waited (0 when
    /// it has reached them all).
    fn lag_ms(&self, now_ms: u64) -> u64 {
        let at = self.get();
        self.seen()
            .iter()
            .find(|&&(last, _)| last > at)
            .map_or(0, |&(_, since)| now_ms.saturating_sub(since))
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, u64)>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self) -> u64 {
        *self
            .seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the position is at least `seq`, for at most `wait`; returns where it is.
    fn wait_for(&self, seq: u64, wait: Duration) -> u64 {
        let mut first = true;
        self.wait_until(Instant::now() + wait, |at| {
            if at < seq && std::mem::take(&mut first) {
                // Tell the indexer, which may be holding a commit back (once: under the
                // lock it waits on, so it cannot miss it).
                self.wanted.fetch_max(seq, Ordering::Relaxed);
                self.moved.notify_all();
            }
            at >= seq
        })
    }

    /// The furthest position a search has waited for.
    fn wanted(&self) -> u64 {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Waits until `deadline`, or until a search waits for a position beyond this one.
    fn wait_wanted(&self, deadline: Instant) {
        self.wait_until(deadline, |at| self.wanted.load(Ordering::Relaxed) > at);
    }

    /// Waits until `done` holds for the position (checked under its lock) or `deadline`
    /// passes; returns the position.
    fn wait_until(&self, deadline: Instant, mut done: impl FnMut(u64) -> bool) -> u64 {
        let mut at = self
            .seq
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while !done(*at) {
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
        StoreError::Disk(_) => ApiError::unavailable(e.to_string()),
        StoreError::NoConflict(_) => ApiError::invalid(e.to_string()),
        StoreError::Conflicted(_) => ApiError::conflict(e.to_string()),
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
            peers_file: std::sync::OnceLock::new(),
            chat: std::sync::OnceLock::new(),
            rerank_loader: std::sync::OnceLock::new(),
            rerankers: std::sync::OnceLock::new(),
            bulk: AtomicBool::new(false),
            backups: std::sync::OnceLock::new(),
            index_dir: index_dir.to_owned(),
            embedder,
            events,
            ready: AtomicBool::new(false),
            source,
            search_turns: Turns::per_core(),
            save_owed: AtomicBool::new(false),
            building_graph: AtomicBool::new(false),
        })
    }

    /// Attaches the running network (for `peers`, and so sharing takes effect at once).
    pub fn set_network(&self, network: mnemon_net::Network) {
        let _ = self.network.set(network);
    }

    /// Where federation keeps its peer table (`DATA/peers.json`): the peers this node has
    /// met, when federation does not run in this process.
    pub fn set_peers_file(&self, path: PathBuf) {
        let _ = self.peers_file.set(path);
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

    /// What loads the second stages searches use unless a query turns them off (set once,
    /// by the composition root; called on the first search).
    pub fn set_rerankers(&self, load: RerankLoader) {
        let _ = self.rerank_loader.set(load);
    }

    /// The second stages, loaded on first use.
    fn rerankers(&self) -> Result<Rerankers, ApiError> {
        if let Some(loaded) = self.rerankers.get() {
            return Ok(loaded.clone());
        }
        let Some(load) = self.rerank_loader.get() else {
            return Ok(Vec::new());
        };
        let loaded = load().map_err(|e| ApiError::unavailable(format!("{e:#}")))?;
        Ok(self.rerankers.get_or_init(|| loaded).clone())
    }

    /// Where backups come from and go (set once, by the composition root).
    pub fn set_backups(&self, backups: Backups) {
        let _ = self.backups.set(backups);
    }

    /// The backup setup, if set.
    pub fn backups(&self) -> Option<&Backups> {
        self.backups.get()
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

    fn names(&self, store: &StoreReader) -> Result<HashMap<CollectionId, String>, ApiError> {
        Ok(store
            .collection_names()
            .map_err(store_error)?
            .into_iter()
            .collect())
    }

    fn view(&self, store: &StoreReader, id: MemoryId) -> Result<MemoryView, ApiError> {
        let (memory, name, conflict) = store.get_named(id).map_err(store_error)?;
        let names = name.map(|n| (memory.collection, n)).into_iter().collect();
        let mut view = MemoryView::new(memory, &names);
        view.conflict = conflict.as_ref().map(mnemon_api::ConflictView::from);
        Ok(view)
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
    /// The memories `names` (wikilink names) resolve to: the one memory with each title,
    /// among those in `within` if given (a caller held to some collections never links
    /// into the others, nor learns which titles they hold).
    fn resolve_titles(
        &self,
        names: &[String],
        this: Option<MemoryId>,
        within: Option<&[mnemon_crdt::CollectionId]>,
    ) -> Vec<MemoryId> {
        let mut out = Vec::new();
        for name in names {
            let Ok(mut ids) = self.store.titled(name) else {
                continue;
            };
            if let Some(allowed) = within {
                ids.retain(|id| {
                    self.store
                        .get(*id)
                        .is_ok_and(|m| allowed.contains(&m.collection))
                });
            }
            if let [only] = ids[..]
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A search that waits for its write wakes an indexer holding its keyword commit back
    /// for the commit window: it is not made to wait out the window.
    #[test]
    fn a_waiting_search_cuts_the_indexers_commit_window_short() {
        let progress = Arc::new(IndexProgress::default());
        progress.set(4);
        let woke = Arc::new(AtomicBool::new(false));
        let indexer = {
            let (progress, woke) = (progress.clone(), woke.clone());
            std::thread::spawn(move || {
                progress.wait_wanted(Instant::now() + Duration::from_secs(600));
                woke.store(true, Ordering::Relaxed);
            })
        };
        // Nothing wanted beyond where the index is: the indexer keeps waiting.
        assert_eq!(progress.wait_for(4, Duration::from_millis(50)), 4);
        assert!(!woke.load(Ordering::Relaxed));
        // A search waits for change 5: the indexer wakes (while that search still waits).
        assert_eq!(progress.wait_for(5, Duration::from_secs(2)), 4);
        assert!(woke.load(Ordering::Relaxed), "the indexer slept on");
        assert_eq!(progress.wanted(), 5);
        indexer.join().expect("indexer");
    }

    /// The lag is how long the oldest change the index has not reached has waited, not
    /// how long the index has been behind: under writes that never stop, it stays the
    /// age of what is waiting.
    #[test]
    fn the_lag_is_the_age_of_the_oldest_change_not_yet_indexed() {
        let progress = IndexProgress::default();
        assert_eq!(progress.lag_ms(5_000), 0);
        progress.saw(10, 1_000);
        progress.saw(10, 1_500); // nothing new: still first seen at 1,000
        progress.saw(20, 2_000);
        progress.saw(30, 3_000);
        assert_eq!(progress.lag_ms(4_000), 3_000);
        // Changes up to 10 indexed: the oldest waiting (11..=20) was first seen at 2,000.
        progress.set(10);
        assert_eq!(progress.lag_ms(4_000), 2_000);
        // Part of what was seen at 2,000 (up to 20) is still waiting.
        progress.set(15);
        assert_eq!(progress.lag_ms(4_000), 2_000);
        progress.set(20);
        assert_eq!(progress.lag_ms(4_000), 1_000);
        // Writes go on: the lag is the age of the oldest, not the time since it fell behind.
        progress.saw(40, 4_000);
        progress.set(30);
        assert_eq!(progress.lag_ms(4_500), 500);
        progress.set(40);
        assert_eq!(progress.lag_ms(9_000), 0);
        // What the index had already reached is not a lag.
        progress.saw(40, 9_000);
        assert_eq!(progress.lag_ms(10_000), 0);
        // With every moment kept, later changes count from the newest kept one: the lag
        // reads older, never younger, and never 0 while changes wait.
        for i in 0..LAG_MOMENTS as u64 {
            progress.saw(41 + i, 20_000 + i);
        }
        let newest = 40 + LAG_MOMENTS as u64;
        progress.saw(newest + 100, 90_000);
        progress.set(newest);
        assert_eq!(
            progress.lag_ms(100_000),
            100_000 - (20_000 + LAG_MOMENTS as u64 - 1)
        );
    }

    /// No more searches take their turn at once than the turns allow; the next goes in
    /// as soon as one ends.
    #[test]
    fn searches_take_their_turns() {
        let turns = Arc::new(Turns::new(2));
        let (first, second) = (turns.wait(), turns.wait());
        assert!(first.is_some() && second.is_some());
        let (went_in, gone_in) = std::sync::mpsc::channel();
        let third = {
            let turns = turns.clone();
            std::thread::spawn(move || {
                let _turn = turns.wait();
                went_in.send(()).expect("send");
            })
        };
        assert!(
            gone_in.recv_timeout(Duration::from_millis(200)).is_err(),
            "a third went in beside two"
        );
        drop(first);
        gone_in
            .recv_timeout(Duration::from_secs(10))
            .expect("the third went in once a turn ended");
        third.join().expect("third");
    }
}
