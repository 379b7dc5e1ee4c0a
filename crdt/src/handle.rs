//! [`StoreHandle`]: the one door for writes. The store runs on its own thread behind a
//! bounded queue; reads go around it, through [`StoreReader`] snapshots.
//!
//! redb transactions are synchronous and a durable commit waits for `fsync`. The writer
//! thread drains whatever is queued and runs the memory writes among it in **one**
//! transaction, committed once with `Durability::Immediate` (group commit); every request
//! is answered only after that commit. A request that fails (a validation error, an
//! unknown id) fails alone: the group is aborted and the others run again without it, so
//! each request is still all or nothing.
//!
//! Async callers `.await` ([`StoreHandle::write`], [`StoreHandle::call`]); blocking
//! callers (request handlers on the blocking pool, the CLI) use the `_blocking` twins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::StoreError;
use crate::feed::ChangeEvent;
use crate::store::{MemoryBuilder, Store, StoreReader};

/// Requests waiting for the store thread before callers are made to wait.
pub const QUEUE_DEPTH: usize = 1024;
/// Most writes committed in one group.
pub const MAX_GROUP: usize = 512;
/// How long the writer waits between probes of a disk that refuses writes.
const DISK_PROBE_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// A write that can join a group and run again if another write of the group fails.
trait GroupWrite: Send {
    /// Runs the write inside the store's open group; false if it failed.
    fn run(&mut self, store: &mut Store) -> bool;
    /// Answers the caller: with the write's result if the group committed, else with the
    /// commit's error.
    fn answer(self: Box<Self>, committed: Result<(), &StoreError>);
}

struct Grouped<F, R, E> {
    f: F,
    result: Option<Result<R, E>>,
    reply: oneshot::Sender<Result<R, E>>,
}

impl<F, R, E> GroupWrite for Grouped<F, R, E>
where
    F: FnMut(&mut Store) -> Result<R, E> + Send,
    R: Send,
    E: From<StoreError> + Send,
{
    fn run(&mut self, store: &mut Store) -> bool {
        let result = (self.f)(store);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), &StoreError>) {
        let Grouped { f, result, reply } = *self;
        // What the write holds (it may share a large memory with its caller) goes before
        // the caller hears back.
        drop(f);
        let result = match (committed, result) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(E::from(e.clone())),
            (Ok(()), None) => Err(E::from(StoreError::Storage(
                "a write was answered before it ran".into(),
            ))),
        };
        let _ = reply.send(result);
    }
}

enum Job {
    /// Runs alone, in its own transactions (sync sessions, sharing, collections).
    Solo(Box<dyn FnOnce(&mut Store) + Send>),
    /// A memory write that joins the group.
    Grouped(Box<dyn GroupWrite>),
}

/// A cheap, clonable handle to a store running on its own thread: the only way to write.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Job>,
    reader: StoreReader,
    builder: MemoryBuilder,
    hold: Arc<Hold>,
    stats: Arc<WriterStats>,
}

/// What the writer thread has done, for `status` and `/metrics`.
#[derive(Debug, Default)]
struct WriterStats {
    /// Group transactions committed.
    groups: AtomicU64,
    /// Memory writes committed in them.
    writes: AtomicU64,
    /// Time spent running and committing them (each group from its transaction's start
    /// to its durable commit), in microseconds.
    busy_micros: AtomicU64,
}

/// A test hook: while set, the writer thread stops before committing a group.
#[derive(Debug, Default)]
struct Hold {
    held: AtomicBool,
    /// Writes waiting in a held group.
    holding: AtomicU64,
    lock: std::sync::Mutex<()>,
    wake: std::sync::Condvar,
}

impl Hold {
    fn wait(&self) {
        let mut guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while self.held.load(Ordering::Acquire) {
            guard = self
                .wake
                .wait(guard)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// The store thread has stopped (it panicked or was shut down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the store has shut down")]
pub struct StoreClosed;

impl From<StoreClosed> for StoreError {
    fn from(_: StoreClosed) -> StoreError {
        StoreError::Storage("the store has shut down".into())
    }
}

impl StoreHandle {
    /// Moves `store` onto a new thread and returns a handle to it. The thread ends when
    /// every handle is dropped.
    pub fn spawn(store: Store) -> std::io::Result<StoreHandle> {
        let (jobs, rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let reader = store.reader();
        let builder = store.builder();
        let hold = Arc::new(Hold::default());
        let stats = Arc::new(WriterStats::default());
        let (held, counted) = (hold.clone(), stats.clone());
        thread::Builder::new()
            .name("mnemon-store".into())
            .spawn(move || writer(store, rx, &held, &counted))?;
        Ok(StoreHandle {
            jobs,
            reader,
            builder,
            hold,
            stats,
        })
    }

    /// Builds new memories on the caller's thread, for [`Store::add_prepared`] here.
    pub fn builder(&self) -> &MemoryBuilder {
        &self.builder
    }

    /// The read side: snapshots that never wait for this writer.
    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    /// Runs `f` alone on the store thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreClosed>
    where
        F: FnOnce(&mut Store) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (job, rx) = solo(f);
        self.jobs.send(job).await.map_err(|_| StoreClosed)?;
        rx.await.map_err(|_| StoreClosed)
    }

    /// [`StoreHandle::call`] for blocking code (not inside an async task).
    pub fn call_blocking<R, F>(&self, f: F) -> Result<R, StoreClosed>
    where
        F: FnOnce(&mut Store) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (job, rx) = solo(f);
        self.jobs.blocking_send(job).map_err(|_| StoreClosed)?;
        rx.blocking_recv().map_err(|_| StoreClosed)
    }

    /// Runs the memory write `f` in the next group commit and returns its result once the
    /// group is durable. `f` may run more than once (when another write of its group
    /// fails, the rest run again); only the last run counts.
    pub async fn write<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnMut(&mut Store) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (job, rx) = grouped(f);
        self.jobs
            .send(job)
            .await
            .map_err(|_| E::from(StoreClosed.into()))?;
        rx.await.map_err(|_| E::from(StoreClosed.into()))?
    }

    /// [`StoreHandle::write`] for blocking code.
    pub fn write_blocking<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnMut(&mut Store) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (job, rx) = grouped(f);
        self.jobs
            .blocking_send(job)
            .map_err(|_| E::from(StoreClosed.into()))?;
        rx.blocking_recv()
            .map_err(|_| E::from(StoreClosed.into()))?
    }

    /// Requests waiting for the writer thread now.
    pub fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Writes held by [`StoreHandle::hold_commits`] in a group that waits to commit.
    pub fn holding(&self) -> usize {
        self.hold.holding.load(Ordering::Acquire) as usize
    }

    /// Time the writer thread spent in group transactions that committed, from their start
    /// to their durable commit (divided by [`StoreHandle::commits`]' groups: the mean
    /// write latency on the writer's side).
    pub fn commit_time(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.stats.busy_micros.load(Ordering::Relaxed))
    }

    /// Group commits so far, and the memory writes they committed.
    pub fn commits(&self) -> (u64, u64) {
        (
            self.stats.groups.load(Ordering::Relaxed),
            self.stats.writes.load(Ordering::Relaxed),
        )
    }

    /// Subscribes to the change feed (see [`StoreReader::subscribe`]).
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.reader.subscribe()
    }

    /// Test hook: holds the writer thread before its next commit (`true`) or lets it go
    /// (`false`), so a test can show that readers do not wait for a writer mid-batch.
    pub fn hold_commits(&self, held: bool) {
        let _guard = self
            .hold
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.hold.held.store(held, Ordering::Release);
        self.hold.wake.notify_all();
    }
}

type Reply<R> = oneshot::Receiver<R>;

fn solo<R, F>(f: F) -> (Job, Reply<R>)
where
    F: FnOnce(&mut Store) -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let job = Job::Solo(Box::new(move |store| {
        let _ = tx.send(f(store));
    }));
    (job, rx)
}

fn grouped<R, E, F>(f: F) -> (Job, Reply<Result<R, E>>)
where
    F: FnMut(&mut Store) -> Result<R, E> + Send + 'static,
    R: Send + 'static,
    E: From<StoreError> + Send + 'static,
{
    let (reply, rx) = oneshot::channel();
    let job = Job::Grouped(Box::new(Grouped {
        f,
        result: None,
        reply,
    }));
    (job, rx)
}

/// The writer thread: takes what is queued, in order; consecutive memory writes share one
/// commit.
fn writer(mut store: Store, mut rx: mpsc::Receiver<Job>, hold: &Hold, stats: &WriterStats) {
    let mut group: Vec<Box<dyn GroupWrite>> = Vec::new();
    loop {
        // While the disk refuses writes, probe it between jobs until it takes one again.
        let job = if store.disk_refusing().is_some() {
            store.recover_disk();
            match rx.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if store.disk_refusing().is_some() {
                        std::thread::sleep(DISK_PROBE_PAUSE);
                    }
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.blocking_recv() {
                Some(job) => job,
                None => break,
            }
        };
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                Job::Grouped(write) => group.push(write),
                Job::Solo(f) => {
                    commit(&mut store, std::mem::take(&mut group), hold, stats);
                    f(&mut store);
                }
            }
            if group.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        commit(&mut store, std::mem::take(&mut group), hold, stats);
        // A write the disk refused leaves the database closed to reads too: open it again.
        store.recover_disk();
    }
}

/// Runs `writes` in one transaction and commits it. A write that fails is answered with
/// its error and left out; the others run again in a fresh transaction.
fn commit(
    store: &mut Store,
    mut writes: Vec<Box<dyn GroupWrite>>,
    hold: &Hold,
    stats: &WriterStats,
) {
    while !writes.is_empty() {
        let started = std::time::Instant::now();
        if let Err(e) = store.begin_group() {
            for write in writes {
                write.answer(Err(&e));
            }
            return;
        }
        let failed = writes.iter_mut().position(|w| !w.run(store));
        match failed {
            Some(i) => {
                store.abort_group();
                writes.remove(i).answer(Ok(()));
            }
            None => {
                if hold.held.load(Ordering::Acquire) {
                    hold.holding.store(writes.len() as u64, Ordering::Release);
                    hold.wait();
                    hold.holding.store(0, Ordering::Release);
                }
                match store.commit_group() {
                    Ok(_) => {
                        let micros =
                            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                        stats.busy_micros.fetch_add(micros, Ordering::Relaxed);
                        stats.groups.fetch_add(1, Ordering::Relaxed);
                        stats
                            .writes
                            .fetch_add(writes.len() as u64, Ordering::Relaxed);
                        for write in writes {
                            write.answer(Ok(()));
                        }
                    }
                    Err(e) => {
                        for write in writes {
                            write.answer(Err(&e));
                        }
                    }
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mnemon_identity::Keypair;

    use super::*;
    use crate::id::MemoryId;
    use crate::memory::{MemoryEdit, NewMemory};

    /// Waits (a hang detector, not a timing assertion) until `done` holds.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// `n` threads that each add a memory through `handle`; with `failing`, every third
    /// edits a memory that does not exist instead.
    fn spawn_writers(
        handle: &StoreHandle,
        n: usize,
        failing: bool,
    ) -> Vec<thread::JoinHandle<Result<MemoryId, StoreError>>> {
        (0..n)
            .map(|i| {
                let h = handle.clone();
                thread::spawn(move || {
                    if failing && i % 3 == 2 {
                        h.write_blocking(move |s: &mut Store| {
                            s.edit(
                                MemoryId::from_u128(99),
                                &MemoryEdit {
                                    title: Some("nobody".into()),
                                    ..MemoryEdit::default()
                                },
                            )
                        })
                        .map(|m| m.id)
                    } else {
                        h.write_blocking(move |s: &mut Store| {
                            s.add(NewMemory {
                                content: format!("note {i}"),
                                ..NewMemory::default()
                            })
                        })
                        .map(|m| m.id)
                    }
                })
            })
            .collect()
    }

    /// The ids added, and how many writes were refused as not found.
    fn join(
        writers: Vec<thread::JoinHandle<Result<MemoryId, StoreError>>>,
    ) -> (Vec<MemoryId>, usize) {
        let mut added = Vec::new();
        let mut refused = 0;
        for w in writers {
            match w.join().expect("writer thread") {
                Ok(id) => added.push(id),
                Err(StoreError::NotFound(_)) => refused += 1,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        (added, refused)
    }

    #[test]
    fn queued_writes_share_one_commit_a_failing_one_fails_alone_and_readers_never_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("s.redb"), Keypair::generate()).expect("open");
        let handle = StoreHandle::spawn(store).expect("spawn");
        let first = handle
            .write_blocking(|s: &mut Store| {
                s.add(NewMemory {
                    content: "before".into(),
                    ..NewMemory::default()
                })
            })
            .expect("first");
        let before = handle.commits();

        // Hold the writer before its next commit, and queue writes behind it.
        handle.hold_commits(true);
        let writers = spawn_writers(&handle, 6, false);
        eventually("the writes are held or queued", || {
            handle.holding() > 0 && handle.holding() + handle.queued() == 6
        });
        // Readers answer while the writer is held mid-batch, from their snapshot.
        let reader = handle.reader().clone();
        assert_eq!(reader.count().expect("count"), 1);
        assert_eq!(reader.get(first.id).expect("get").content, "before");
        handle.hold_commits(false);
        let (added, refused) = join(writers);
        assert_eq!((added.len(), refused), (6, 0));
        let (groups, writes) = handle.commits();
        assert_eq!(writes - before.1, 6, "every write committed once");
        assert!(
            groups - before.0 <= 2,
            "six writes queued together took {} commits",
            groups - before.0
        );

        // Failing writes among others fail alone; the rest are all there.
        let (more, refused) = join(spawn_writers(&handle, 9, true));
        assert_eq!((more.len(), refused), (6, 3));
        for id in added.iter().chain(&more) {
            assert!(reader.get(*id).is_ok(), "{id} acknowledged but missing");
        }
        assert_eq!(reader.count().expect("count"), 13);
        reader.verify_views().expect("views");
    }

    #[test]
    fn a_prepared_memory_comes_back_from_its_write_without_a_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path().join("s.redb"), Keypair::generate()).expect("open");
        let handle = StoreHandle::spawn(store).expect("spawn");
        for i in 0..50 {
            let prepared = handle
                .builder()
                .prepare(&NewMemory {
                    content: format!("a text the write must not leave copied, {i}"),
                    ..NewMemory::default()
                })
                .expect("prepare");
            let text = prepared.memory().content.as_ptr();
            let stored = prepared.clone();
            handle
                .write_blocking(move |s: &mut Store| s.add_prepared(&stored))
                .expect("add");
            // The write let go of its share before answering: the text is the same buffer.
            assert_eq!(prepared.into_memory().content.as_ptr(), text, "write {i}");
        }
    }
}
