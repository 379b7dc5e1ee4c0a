//! The indexer: one thread under `mnemon serve` follows the store's change log into the
//! keyword and vector indexes in bounded batches (inline, before a search, in a CLI
//! process), and read-your-writes waits on how far it got.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mnemon_api::EventView;
use mnemon_api::{Error as ApiError, EventKind};
use mnemon_crdt::{ChangeKind, MemoryId, Timestamp};
use tokio::sync::broadcast;

use crate::search::{KeywordCommit, SearchError, SearchIndex};

use super::{
    INDEX_SLICE, KEYWORD_COMMIT_WINDOW, READ_YOUR_WRITES_WAIT, Service, WRITE_VECTOR_BUDGET,
    search_error, store_error,
};

/// How long the store goes without a change before the sealer seals even a small recent
/// segment (searched exactly until then, which costs every search at rest).
const QUIET: Duration = Duration::from_secs(10);

/// How long the indexer waits before it looks again while a keyword commit runs apart
/// from the index (a delete's purge merges every segment: up to seconds).
const COMMIT_PAUSE: Duration = Duration::from_millis(5);

/// When a seal of the vector index's recent segment is due.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// While writes stream in: only once the segment is large, so few graph builds compete
    /// with them.
    Writing,
    /// Once the index has caught up: at the segment's usual size.
    CaughtUp,
    /// Once nothing has changed for [`QUIET`] and the vectors have caught up (or stopped
    /// moving for as long: an embedding endpoint may be down): at a small size too, then
    /// a compaction.
    Quiet,
}

/// What the indexer does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// More can be done at once.
    Busy,
    /// Nothing, until the store changes.
    Idle,
    /// Nothing for a moment: the words wait for a commit run apart from the index.
    Pause(Duration),
    /// Every change is given to the keyword index, whose commit waits until this instant
    /// (or until a search waits for its writes).
    CommitAt(Instant),
}

fn event_kind(kind: ChangeKind) -> EventKind {
    match kind {
        ChangeKind::Created => EventKind::Created,
        ChangeKind::Updated => EventKind::Updated,
        ChangeKind::Deleted => EventKind::Deleted,
    }
}

impl Service {
    /// After a delete: forgets `ids` in the index files now, whatever position they are
    /// at (if the index cannot be opened, its next catch-up forgets them). The indexer, if
    /// one runs, applies the rest of the log; a CLI process catches up here.
    pub(super) fn forget_in_index(&self, ids: &[MemoryId]) {
        let store = self.store();
        let inline = !self.indexer.load(Ordering::Relaxed);
        let started = Instant::now();
        let purge = self.with_index(|index| {
            index.forget_now(store, ids)?;
            if inline {
                index.catch_up_within(store, Some(Instant::now() + WRITE_VECTOR_BUDGET))?;
            }
            Ok(index.keyword_commit_job())
        });
        // Forgetting reaches the keyword and vector files at once, written without holding
        // the index: searches go on meanwhile (the memories are gone from both already).
        let forgotten = started.elapsed();
        // Both files are rewritten even if one fails.
        let keyword = purge.and_then(|job| job.map_or(Ok(0), |job| self.keyword_commit(&job)));
        let written = self.save_vectors(true).and(keyword);
        tracing::debug!(
            forget_ms = forgotten.as_millis(),
            files_ms = (started.elapsed() - forgotten).as_millis(),
            "forgot deleted memories in the search index"
        );
        if let Err(e) = written {
            tracing::warn!("deleted, but the search index will forget later: {e}");
        }
    }

    /// Runs a keyword commit without holding the index, then records it; returns the
    /// keyword index's position after it.
    fn keyword_commit(&self, job: &KeywordCommit) -> Result<u64, ApiError> {
        let result = job.run();
        let seq = self.with_index(|index| {
            index.keyword_committed(job, &result);
            Ok(index.positions().0)
        })?;
        result.map_err(search_error)?;
        Ok(seq)
    }

    /// Saves the vector index if that is due (`now`: whenever anything changed), writing
    /// the files without holding the index.
    pub(super) fn save_vectors(&self, now: bool) -> Result<(), ApiError> {
        // Encoded with the index held for reading: searches go on meanwhile.
        let now = now || self.save_owed.swap(false, Ordering::Relaxed);
        let Some(job) = self.with_index_read(|index| index.vector_save_job(now))? else {
            return Ok(());
        };
        let result = job.run();
        self.with_index(|index| {
            index.vector_saved(&job, &result);
            Ok(())
        })?;
        result.map_err(search_error)
    }

    /// Runs `f` on the search index, opening it first if need be.
    #[track_caller]
    pub(super) fn with_index<T>(
        &self,
        f: impl FnOnce(&mut SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, ApiError> {
        let caller = std::panic::Location::caller();
        let mut slot = self
            .index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Searches wait while the index is held for writing: say when that is long.
        let held = Instant::now();
        let result = self.open_index(&mut slot).and_then(|index| {
            index.seal_in_background(self.background_seal.load(Ordering::Relaxed));
            // The indexer thread commits the keyword index and saves the vectors itself,
            // off the lock.
            index.defer_commits(self.indexer.load(Ordering::Relaxed));
            f(index).map_err(search_error)
        });
        let ms = held.elapsed().as_millis();
        if ms >= 20 {
            tracing::debug!(ms, at = %caller, "held the search index for writing");
        }
        result
    }

    /// The search index in `slot`, opened (and caught up on words) first if need be.
    fn open_index<'a>(
        &self,
        slot: &'a mut Option<SearchIndex>,
    ) -> Result<&'a mut SearchIndex, ApiError> {
        if slot.is_none() {
            let embedder = (self.embedder)()
                .map_err(|e| ApiError::unavailable(format!("search is unavailable: {e:#}")))?;
            let index = SearchIndex::open_lagging(&self.index_dir, embedder, &self.store)
                .map_err(search_error)?;
            self.progress.set(index.positions().0);
            *slot = Some(index);
            self.ready.store(true, Ordering::Relaxed);
        }
        slot.as_mut()
            .ok_or_else(|| ApiError::internal("the search index is not open"))
    }

    /// Runs `f` on the search index for reading; searches run side by side.
    pub(super) fn with_index_read<T>(
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
    pub(super) fn index_now(&self) {
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
    pub(super) fn wait_indexed(&self, seq: u64) -> Result<(), ApiError> {
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

    /// How far the keyword index is behind the store: changes, and how many milliseconds
    /// the oldest of them has waited since the indexer first saw it (0 when caught up).
    pub fn index_lag(&self) -> (u64, u64) {
        let last = self.store.last_seq().unwrap_or(0);
        let changes = last.saturating_sub(self.progress.get());
        let ms = if changes == 0 {
            0
        } else {
            self.progress.lag_ms(now_ms())
        };
        (changes, ms)
    }

    /// Starts the indexer: one thread that follows the store's change log, applies it to
    /// the keyword and vector indexes in bounded batches and re-embeds after a model
    /// change, and beside it the sealer, which builds the vector index's graphs (a merge
    /// at 100,000 memories takes a minute: the log is followed meanwhile). Both end when
    /// `stop` is set; the handle is the indexer's (the sealer is not waited for: what it
    /// has not installed stays in the recent segment). Both run at background priority,
    /// like the keyword index's writer threads: a burst of writes is answered first and
    /// indexed after, and the index's lag says how far behind it is meanwhile.
    pub fn spawn_indexer(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.indexer.store(true, Ordering::Relaxed);
        // Queries are tokenized on the tokenizers' shared pool: it starts here, at the
        // caller's priority, before a background thread can be the first to use it.
        mnemon_search::background::start_shared_pool();
        self.seal_in_background();
        let sealer = self.clone();
        let done = stop.clone();
        std::thread::Builder::new()
            .name("mnemon-sealer".into())
            .spawn(move || {
                lower_priority("sealer");
                // The last change seen, and since when the store has been at it; the
                // same for the vector index's position.
                let mut last = (0, Instant::now());
                let mut vectors = (0, Instant::now());
                while !done.load(Ordering::Relaxed) {
                    let at = sealer.store.last_seq().unwrap_or(0);
                    if at != last.0 {
                        last = (at, Instant::now());
                    }
                    let position = sealer
                        .with_index_read(|index| Ok(index.positions().1))
                        .unwrap_or(0);
                    if position != vectors.0 {
                        vectors = (position, Instant::now());
                    }
                    // Quiet once the vectors have caught up too (a compaction begun before
                    // would leave what arrives during its build to a second graph), or
                    // have not moved for as long.
                    let vectors_current = position >= at || vectors.1.elapsed() >= QUIET;
                    let writing = at > sealer.progress.get();
                    let quiet = !writing && last.1.elapsed() >= QUIET;
                    let due = if writing {
                        Due::Writing
                    } else if quiet && vectors_current {
                        Due::Quiet
                    } else {
                        Due::CaughtUp
                    };
                    match sealer.seal_if_due(due) {
                        // The indexer saves it: a save encoded here, with the index held
                        // for reading, would hold up the indexer's next batch, and the
                        // searches that queue behind that.
                        Ok(true) => sealer.save_owed.store(true, Ordering::Relaxed),
                        // (The words' merges need not wait for the vectors: an
                        // embedding endpoint that is down would hold them up.)
                        Ok(false) if quiet => {
                            if let Err(e) = sealer.compact_keywords() {
                                tracing::warn!("merging the keyword index failed: {e}");
                            }
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        Ok(false) => std::thread::sleep(Duration::from_millis(200)),
                        Err(e) => {
                            tracing::warn!("sealing the vector index failed: {e}");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                    }
                }
            })?;
        let service = self.clone();
        std::thread::Builder::new()
            .name("mnemon-indexer".into())
            .spawn(move || {
                // Writes are answered once durable; indexing them takes what CPU the
                // requests leave (a search waiting for its writes waits for this thread).
                lower_priority("indexer");
                let mut failures = 0u32;
                // The first commit is not held back.
                let mut committed = Instant::now()
                    .checked_sub(KEYWORD_COMMIT_WINDOW)
                    .unwrap_or_else(Instant::now);
                while !stop.load(Ordering::Relaxed) {
                    let next = match service.index_step(&mut committed) {
                        Ok(next) => {
                            failures = 0;
                            next
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
                    match next {
                        Next::Busy => {}
                        // Sleep until the next commit (or a moment, to notice `stop`).
                        Next::Idle => {
                            let at = service.progress.get();
                            service
                                .store
                                .wait_for_change(at, Duration::from_millis(200));
                        }
                        Next::CommitAt(at) => service.progress.wait_wanted(at),
                        Next::Pause(pause) => std::thread::sleep(pause),
                    }
                }
            })
    }

    /// One step of the indexer: the store's changes into both indexes for a bounded slice,
    /// then background work on the vector index. While changes stream in, the keyword
    /// index is committed at most once per [`KEYWORD_COMMIT_WINDOW`] (`committed`: when it
    /// last was), sooner for a search that waits for its writes or for a delete.
    pub(super) fn index_step(&self, committed: &mut Instant) -> Result<Next, ApiError> {
        let store = &self.store;
        let last = store.last_seq().map_err(store_error)?;
        // (Memories owed a new context in the keyword index keep it stepping too.)
        if last > self.progress.get() || self.with_index_read(|index| Ok(index.keyword_owed()))? {
            self.progress.saw(last, now_ms());
            // A step that failed (the vectors, say) may still have given the keyword
            // index changes to commit.
            let window_over = committed.elapsed() >= KEYWORD_COMMIT_WINDOW;
            let stepped =
                mnemon_search::step(&Held(self), store, Instant::now() + INDEX_SLICE).err();
            let (mut seq, staged, commit, committing) = self.with_index(|index| {
                let due = window_over
                    || index.keyword_purge_owed()
                    || self.progress.wanted() > index.positions().0;
                let commit = if due {
                    index.keyword_commit_job()
                } else {
                    None
                };
                let committing = index.keyword_committing();
                Ok((
                    index.positions().0,
                    index.keyword_staged(),
                    commit,
                    committing,
                ))
            })?;
            // The keyword commit (tens of milliseconds: segment files and fsync) runs
            // without holding the index, so searches go on meanwhile.
            let committed_now = commit.is_some();
            if let Some(commit) = commit {
                *committed = Instant::now();
                seq = self.keyword_commit(&commit)?;
            }
            self.progress.set(seq);
            if let Some(e) = stepped {
                return Err(e);
            }
            let last = store.last_seq().map_err(store_error)?;
            if seq < last {
                self.save_vectors(false)?;
                return Ok(if staged < last && committing && !committed_now {
                    // The words wait for a commit run apart (see `SearchIndex::step`).
                    Next::Pause(COMMIT_PAUSE)
                } else if staged < last {
                    Next::Busy
                } else {
                    Next::CommitAt(*committed + KEYWORD_COMMIT_WINDOW)
                });
            }
        }
        // In short slices: the index is held meanwhile.
        let pending = self.vector_step(INDEX_SLICE)?;
        self.save_vectors(false)?;
        Ok(if pending { Next::Busy } else { Next::Idle })
    }

    /// Moves the vector index on for at most `slice`. Returns whether work remains that
    /// can be done now (not while the vectors wait for the sealer).
    fn vector_step(&self, slice: Duration) -> Result<bool, ApiError> {
        let store = &self.store;
        mnemon_search::step_vectors(&Held(self), store, Instant::now() + slice)?;
        self.with_index_read(|index| {
            Ok(index.positions().1 < store.last_seq()? && !index.vectors_full())
        })
    }

    /// Seals the vector index's recent segment if that is `due`. The graph is built without
    /// holding the index. Returns whether it sealed.
    fn seal_if_due(&self, due: Due) -> Result<bool, ApiError> {
        let job = self.with_index_read(|index| {
            Ok(match due {
                Due::Writing => index.seal_job_while_writing(),
                Due::CaughtUp => index.seal_job(),
                Due::Quiet => index.seal_job_when_quiet(),
            })
        })?;
        let Some(job) = job else {
            return Ok(false);
        };
        let started = Instant::now();
        let built = {
            let _building = Building::start(&self.building_graph);
            job.build()
        };
        let retired = self.with_index(|index| Ok(index.install_seal(built)))?;
        let installed = retired.is_some();
        // What it replaced (graphs, the recent vectors it took) is freed here, with the
        // index no longer held: searches wait for none of it.
        drop(retired);
        // A merge held the graphs it merged beside the one it built: at rest (after the
        // largest builds, and off any load) the binary may give the freed pages back (see
        // [`on_memory_freed`]).
        if matches!(due, Due::Quiet)
            && let Some(give_back) = MEMORY_FREED.get()
        {
            give_back();
        }
        tracing::info!(
            installed,
            seconds = started.elapsed().as_secs_f64(),
            "sealed the vector index's recent segment"
        );
        Ok(true)
    }

    /// Merges the keyword index's small segments if it has many (for a store that has
    /// stopped changing), without holding the index: searches and writes go on meanwhile.
    fn compact_keywords(&self) -> Result<(), ApiError> {
        // Asked under the read lock first: a quiet store is asked every 200 ms.
        if !self.with_index_read(|index| Ok(index.keyword_compaction_due()))? {
            return Ok(());
        }
        let Some(job) = self.with_index(|index| Ok(index.keyword_compact_job()))? else {
            return Ok(());
        };
        let started = Instant::now();
        self.keyword_commit(&job)?;
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            "merged the keyword index's small segments"
        );
        Ok(())
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
        let pending = self.vector_step(slice)?;
        let due = if pending { Due::Writing } else { Due::CaughtUp };
        Ok(self.seal_if_due(due)? || pending)
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
}

/// The service's search index as the indexer holds it: for reading while it makes a batch
/// ready (searches go on meanwhile), for writing only to put the batch in.
struct Held<'a>(&'a Service);

impl mnemon_search::Hold for Held<'_> {
    type Error = ApiError;
    fn fail(e: SearchError) -> ApiError {
        search_error(e)
    }
    fn read<T>(
        &self,
        f: impl FnOnce(&SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, ApiError> {
        self.0.with_index_read(f)
    }
    fn write<T>(
        &self,
        f: impl FnOnce(&mut SearchIndex) -> Result<T, SearchError>,
    ) -> Result<T, ApiError> {
        self.0.with_index(f)
    }
}

/// Lowers the calling thread's scheduling priority (see [`mnemon_search::background`]).
fn lower_priority(thread: &str) {
    if let Err(e) = mnemon_search::background::lower_priority() {
        tracing::debug!("could not lower the {thread}'s priority: {e}");
    }
}

/// Now, in milliseconds since the epoch.
fn now_ms() -> u64 {
    Timestamp::now().as_millis().max(0) as u64
}

/// What the binary does once much memory was freed: give it back to the system.
static MEMORY_FREED: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what to call once much memory was freed (after a vector graph's build): the
/// allocator is the binary's to tune. Set once; later calls are ignored.
pub fn on_memory_freed(give_back: fn()) {
    let _ = MEMORY_FREED.set(give_back);
}

/// Shows a graph build in `status` while it lasts (a panic in the build included).
struct Building<'a>(&'a AtomicBool);

impl<'a> Building<'a> {
    fn start(flag: &'a AtomicBool) -> Building<'a> {
        flag.store(true, Ordering::Relaxed);
        Building(flag)
    }
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
