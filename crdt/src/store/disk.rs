//! The store's file, watched. redb latches the first I/O error of a file handle: from then
//! on every read and write on that `Database` fails (`Previous I/O error occurred`) until it
//! is opened again. A full disk is the usual cause, and it passes. So the store's file goes
//! through [`WatchedFile`], redb's own `FileBackend` that also notes each refusal in a
//! shared [`DiskHealth`]; the writer thread then reopens the database at once (reads work
//! again) and, while the disk refuses writes, probes it until a write succeeds again.
//!
//! It also writes zeros a little ahead into the part of the file redb has grown but not yet
//! written ([`ZERO_AHEAD`]), so a commit's `fdatasync` seldom has to allocate blocks.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

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

/// redb's `FileBackend` for the file at `path`, reporting every failure to `health`.
#[derive(Debug)]
pub(crate) struct WatchedFile {
    inner: FileBackend,
    health: std::sync::Arc<DiskHealth>,
    /// Where the file's never-written tail begins: every byte at or past it was added by
    /// `set_len` in this process and not written since (so it reads as zero). See
    /// [`ZERO_AHEAD`].
    zeroed_to: Mutex<ZeroAhead>,
}

/// How far past a write into the file's never-written tail the file is filled with zeros.
///
/// redb grows its file with `set_len`, which leaves a hole: the filesystem allocates blocks
/// only when a commit first writes there, and then `fdatasync` must also write the file's
/// block map (on ext4 without a journal, a second synchronous write; with one, a journal
/// commit). A third of the single adds did that. Zeros written ahead, once per mebibyte,
/// take the allocation out of those commits (as PostgreSQL zero-fills its log files).
const ZERO_AHEAD: u64 = 1 << 20;

#[derive(Debug)]
struct ZeroAhead {
    /// The start of the never-written tail.
    from: u64,
    /// The file's length as last set.
    len: u64,
    /// A zero fill failed (a full disk, say): leave the tail alone until the file grows.
    off: bool,
}

impl WatchedFile {
    pub(crate) fn open(
        path: &Path,
        health: std::sync::Arc<DiskHealth>,
    ) -> Result<WatchedFile, redb::DatabaseError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        Ok(WatchedFile {
            inner: FileBackend::new(file)?,
            health,
            zeroed_to: Mutex::new(ZeroAhead {
                from: len,
                len,
                off: false,
            }),
        })
    }

    /// Fills the never-written tail with zeros up to [`ZERO_AHEAD`] past a write ending at
    /// `end`, before the write. Best effort: a failed fill costs nothing but the speed-up.
    fn zero_ahead(&self, end: u64) {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut tail = self
            .zeroed_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if end <= tail.from {
            return;
        }
        // Zeros go only where nothing was written: from the tail's start, never past the
        // file's length (the write itself may go past it, and then moves it).
        let stop = if tail.off {
            tail.from
        } else {
            tail.len.min(end + ZERO_AHEAD)
        };
        let mut at = tail.from;
        while at < stop {
            let n = (stop - at).min(ZEROS.len() as u64);
            if self.inner.write(at, &ZEROS[..n as usize]).is_err() {
                tail.off = true;
                break;
            }
            at += n;
        }
        tail.from = at.max(end);
        tail.len = tail.len.max(end);
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
        let mut tail = self
            .zeroed_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.watch(self.inner.set_len(len))?;
        if len > tail.len {
            tail.off = false;
        }
        tail.len = len;
        tail.from = tail.from.min(len);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.watch(self.inner.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.zero_ahead(offset + data.len() as u64);
        self.watch(self.inner.write(offset, data))
    }

    fn close(&self) -> Result<(), std::io::Error> {
        self.inner.close()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> WatchedFile {
        WatchedFile::open(path, Default::default()).expect("open")
    }

    fn read(file: &WatchedFile, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0xee; len];
        file.read(offset, &mut out).expect("read");
        out
    }

    #[cfg(unix)]
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).expect("metadata").blocks() * 512
    }

    #[test]
    fn a_write_into_the_grown_tail_zeroes_ahead_and_never_over_what_was_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        let file = open(&path);
        file.set_len(4096).expect("grow");
        file.write(0, &[1; 4096]).expect("write");
        // redb doubles its file as it grows; the new part is a hole.
        file.set_len(16 << 20).expect("grow");
        file.write(8192, &[2; 4096]).expect("write past a gap");
        #[cfg(unix)]
        {
            let blocks = allocated(&path);
            assert!(
                blocks >= 8192 + ZERO_AHEAD,
                "the tail past the write is allocated ahead: {blocks} bytes"
            );
            assert!(blocks < 4 << 20, "and only a little of it: {blocks} bytes");
        }
        // Writes below, inside and just past the zeroed part keep every byte written.
        file.write(4096, &[3; 4096]).expect("write in the gap");
        file.write(ZERO_AHEAD, &[4; 4096])
            .expect("write in the zeroed part");
        file.write(3 * ZERO_AHEAD, &[5; 100])
            .expect("write far past it");
        assert_eq!(read(&file, 0, 4096), vec![1; 4096]);
        assert_eq!(read(&file, 4096, 4096), vec![3; 4096]);
        assert_eq!(read(&file, 8192, 4096), vec![2; 4096]);
        assert_eq!(read(&file, ZERO_AHEAD, 4096), vec![4; 4096]);
        assert_eq!(read(&file, 3 * ZERO_AHEAD, 100), vec![5; 100]);
        assert_eq!(read(&file, 12288, 4096), vec![0; 4096]);
        assert_eq!(
            file.len().expect("len"),
            16 << 20,
            "zeros never grow the file"
        );

        // Shrunk and grown again: what was written below the new length stays.
        file.set_len(2 * ZERO_AHEAD).expect("shrink");
        file.set_len(16 << 20).expect("grow");
        file.write(5 * ZERO_AHEAD, &[6; 10])
            .expect("write past the old tail");
        assert_eq!(read(&file, ZERO_AHEAD, 4096), vec![4; 4096]);
        assert_eq!(
            read(&file, 3 * ZERO_AHEAD, 100),
            vec![0; 100],
            "cut off by the shrink"
        );
        assert_eq!(read(&file, 5 * ZERO_AHEAD, 10), vec![6; 10]);
    }

    #[test]
    fn a_reopened_file_never_zeroes_what_it_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        {
            let file = open(&path);
            file.set_len(1 << 20).expect("grow");
            file.write(512 << 10, &[7; 4096]).expect("write");
        }
        let file = open(&path);
        // Everything below the length found at open may hold data, holes or not.
        file.write(0, &[8; 4096]).expect("write");
        file.set_len(4 << 20).expect("grow");
        file.write(2 << 20, &[9; 4096])
            .expect("write in the new tail");
        assert_eq!(read(&file, 512 << 10, 4096), vec![7; 4096]);
        assert_eq!(read(&file, 0, 4096), vec![8; 4096]);
        assert_eq!(read(&file, 2 << 20, 4096), vec![9; 4096]);
    }
}
