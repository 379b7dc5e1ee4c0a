//! The store's file, watched. redb latches the first I/O error of a file handle: from then
//! on every read and write on that `Database` fails (`Previous I/O error occurred`) until it
//! is opened again. A full disk is the usual cause, and it passes. So the store's file goes
//! through [`WatchedFile`], redb's own `FileBackend` that also notes each refusal in a
//! shared [`DiskHealth`]; the writer thread then reopens the database at once (reads work
//! again) and, while the disk refuses writes, probes it until a write succeeds again.
//!
//! Its commits are made durable by the commit journal beside it ([`super::journal`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

use super::journal::{Backend, FileId, Journal};

/// What the store's file did last, shared by the writer and every reader.
#[derive(Debug, Default)]
pub(crate) struct DiskHealth {
    /// The database handle saw an I/O error and refuses everything until reopened.
    latched: AtomicBool,
    /// Writes cannot succeed now; cleared when a probe write succeeds.
    refusing: AtomicBool,
    /// The last error, for whoever asks why.
    last_error: Mutex<Option<String>>,
}

impl DiskHealth {
    fn failed(&self, e: &std::io::Error) {
        self.latched.store(true, Ordering::Release);
        self.refusing.store(true, Ordering::Release);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
    }

    /// Whether the database must be opened again before it answers.
    pub(crate) fn latched(&self) -> bool {
        self.latched.load(Ordering::Acquire)
    }

    /// Marks the database as opened again.
    pub(crate) fn reopened(&self) {
        self.latched.store(false, Ordering::Release);
    }

    /// Marks the database as still to be opened again (the last try failed).
    pub(crate) fn relatch(&self) {
        self.latched.store(true, Ordering::Release);
    }

    /// Why writes cannot succeed now, or `None` when they can.
    pub(crate) fn refusing(&self) -> Option<String> {
        self.refusing.load(Ordering::Acquire).then(|| {
            self.last_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .unwrap_or_else(|| "the disk refused a write".to_owned())
        })
    }

    /// Writes succeed again.
    pub(crate) fn recovered(&self) {
        self.refusing.store(false, Ordering::Release);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Notes a failure found outside redb (a probe).
    pub(crate) fn still_refusing(&self, e: &str) {
        self.refusing.store(true, Ordering::Release);
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
    }
}

/// redb's `FileBackend` for the file at `path`, reporting every failure to `health`, its
/// commits made durable by the journal.
#[derive(Debug)]
pub(crate) struct WatchedFile {
    inner: Backend,
    health: Arc<DiskHealth>,
    journal: Arc<Mutex<Journal>>,
}

impl WatchedFile {
    /// Opens the store file at `path` and takes its journals (writing what they hold into
    /// it). Fails with `DatabaseAlreadyOpen` if another process has them.
    pub(crate) fn open(
        path: &Path,
        health: Arc<DiskHealth>,
    ) -> Result<WatchedFile, redb::DatabaseError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let id = FileId::of(&file)?;
        let inner: Backend = Arc::new(FileBackend::new(file)?);
        let journal = Journal::open(path, inner.clone(), id).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                redb::DatabaseError::DatabaseAlreadyOpen
            } else {
                health.failed(&e);
                e.into()
            }
        })?;
        Ok(WatchedFile {
            inner,
            health,
            journal: Arc::new(Mutex::new(journal)),
        })
    }

    /// A store file and its journals on given files (a test's model disk).
    #[cfg(test)]
    pub(crate) fn on(
        main: Backend,
        journals: [Backend; 2],
        id: FileId,
        switch_bytes: u64,
    ) -> std::io::Result<WatchedFile> {
        let journal = Journal::start(main.clone(), journals, id, None, switch_bytes)?;
        Ok(WatchedFile {
            inner: main,
            health: Arc::default(),
            journal: Arc::new(Mutex::new(journal)),
        })
    }

    /// The journal, for [`Journal::detach`] while redb still holds this file.
    pub(crate) fn journal(&self) -> Arc<Mutex<Journal>> {
        self.journal.clone()
    }

    fn journal_mut(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn watch<T>(&self, result: Result<T, std::io::Error>) -> Result<T, std::io::Error> {
        if let Err(e) = &result {
            self.health.failed(e);
        }
        result
    }
}

impl StorageBackend for WatchedFile {
    fn len(&self) -> Result<u64, std::io::Error> {
        self.watch(self.inner.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        self.watch(self.inner.read(offset, out))
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        self.watch(self.inner.set_len(len))?;
        self.journal_mut().resized(len);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let synced = self.journal_mut().sync();
        self.watch(synced)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.watch(self.inner.write(offset, data))?;
        self.journal_mut().wrote(offset, data);
        Ok(())
    }

    fn close(&self) -> Result<(), std::io::Error> {
        // Read transactions may keep this file past the database: the journals (and
        // their lock) go now, so the file can be opened again.
        let detached = self.journal_mut().close();
        let closed = self.inner.close();
        self.watch(detached)?;
        closed
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Bytes a probe writes beside the store: room for a few ordinary commits.
const PROBE_BYTES: usize = 1 << 20;

/// Whether the disk under `dir` takes a write of [`PROBE_BYTES`], synced.
pub(crate) fn probe(dir: &Path) -> Result<(), std::io::Error> {
    let path = dir.join(".mnemon-disk-probe");
    let result = (|| {
        let mut file: File = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.write_all(&vec![0u8; PROBE_BYTES])?;
        file.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}
