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
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::StoreError;
use crate::feed::ChangeEvent;
use crate::store::{Store, StoreReader};

/// Requests waiting for the store thread before callers are made to wait.
pub const QUEUE_DEPTH: usize = 1024;
/// Most writes committed in one group.
pub const MAX_GROUP: usize = 512;

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
        let result = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Err(e), _) => Err(E::from(e.clone())),
            (Ok(()), None) => Err(E::from(StoreError::Storage(
                "a write was answered before it ran".into(),
            ))),
        };
        let _ = self.reply.send(result);
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
    hold: Arc<Hold>,
}

/// A test hook: while set, the writer thread stops before committing a group.
#[derive(Debug, Default)]
struct Hold {
    held: AtomicBool,
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
        let hold = Arc::new(Hold::default());
        let held = hold.clone();
        thread::Builder::new()
            .name("mnemon-store".into())
            .spawn(move || writer(store, rx, &held))?;
        Ok(StoreHandle { jobs, reader, hold })
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
fn writer(mut store: Store, mut rx: mpsc::Receiver<Job>, hold: &Hold) {
    let mut group: Vec<Box<dyn GroupWrite>> = Vec::new();
    while let Some(job) = rx.blocking_recv() {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                Job::Grouped(write) => group.push(write),
                Job::Solo(f) => {
                    commit(&mut store, std::mem::take(&mut group), hold);
                    f(&mut store);
                }
            }
            if group.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        commit(&mut store, std::mem::take(&mut group), hold);
    }
}

/// Runs `writes` in one transaction and commits it. A write that fails is answered with
/// its error and left out; the others run again in a fresh transaction.
fn commit(store: &mut Store, mut writes: Vec<Box<dyn GroupWrite>>, hold: &Hold) {
    while !writes.is_empty() {
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
                    hold.wait();
                }
                match store.commit_group() {
                    Ok(_) => {
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
