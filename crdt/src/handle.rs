//! [`StoreHandle`]: the store on its own thread, behind a bounded channel.
//!
//! redb transactions are synchronous and a durable commit waits for `fsync`; running them
//! on the async executor would stall every other task. The store thread owns the
//! [`Store`]; async callers send it closures and await the result.

use std::thread;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::feed::ChangeEvent;
use crate::store::Store;

/// Requests waiting for the store thread before callers are made to wait.
pub const QUEUE_DEPTH: usize = 256;

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// A cheap, clonable handle to a store running on its own thread.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Job>,
    feed: broadcast::Sender<ChangeEvent>,
}

/// The store thread has stopped (it panicked or was shut down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the store has shut down")]
pub struct StoreClosed;

impl StoreHandle {
    /// Moves `store` onto a new thread and returns a handle to it. The thread ends when
    /// every handle is dropped.
    pub fn spawn(store: Store) -> std::io::Result<StoreHandle> {
        let (jobs, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let feed = store.feed();
        thread::Builder::new()
            .name("mnemon-store".into())
            .spawn(move || {
                let mut store = store;
                while let Some(job) = rx.blocking_recv() {
                    job(&mut store);
                }
            })?;
        Ok(StoreHandle { jobs, feed })
    }

    /// Runs `f` on the store thread and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreClosed>
    where
        F: FnOnce(&mut Store) -> R + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            let _ = tx.send(f(store));
        });
        self.jobs.send(job).await.map_err(|_| StoreClosed)?;
        rx.await.map_err(|_| StoreClosed)
    }

    /// Subscribes to the change feed (see [`Store::subscribe`]).
    pub fn subscribe(&self) -> broadcast::Receiver<ChangeEvent> {
        self.feed.subscribe()
    }
}
