//! The store's file, watched. redb latches the first I/O error of a file handle: from then
//! on every read and write on that `Database` fails (`Previous I/O error occurred`) until it
//! is opened again. A full disk is the usual cause, and it passes. So the store's file goes
//! through [`WatchedFile`], redb's own `FileBackend` that also notes each refusal in a
//! shared [`DiskHealth`]; the writer thread then reopens the database at once (reads work
//! again) and, while the disk refuses writes, probes it until a write succeeds again.
//!
//! It also writes zeros a little ahead into the part of the file redb has grown but not yet
//! written ([`ZERO_CHUNK`]), so a commit's `fdatasync` seldom has to allocate blocks.

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
    /// The part of the file redb grew in this process, for [`ZERO_CHUNK`]; set up at the
    /// first `set_len` or write, under redb's lock on the file (another process may write
    /// the file until then).
    grown: Mutex<Option<Grown>>,
}

/// The grain in which the part of the file redb grew is filled with zeros.
///
/// redb grows its file with `set_len`, which leaves a hole: the filesystem allocates blocks
/// only when a commit first writes there, and then `fdatasync` must also write the file's
/// block map (on ext4 without a journal, a second synchronous write; with one, a journal
/// commit). A third of the single adds did that. So the first write into a chunk of the
/// grown part first fills the whole chunk, and the next one, with zeros (as PostgreSQL
/// zero-fills its log files): the commits after it find their blocks allocated. Big
/// commits (groups of concurrent writes) fill new chunks themselves, and zeros would only
/// double their writes: after a commit that took more than two new chunks, nothing is
/// zeroed until commits are small again.
const ZERO_CHUNK: u64 = 1 << 16;

/// Which chunks of the grown part may hold data.
#[derive(Debug, Default)]
struct Grown {
    /// Chunks from this one on were added by `set_len` in this process; below it, the file
    /// as found at its first resize or write.
    first: u64,
    /// One bit per chunk from `first`: written (or zeroed) since it was added.
    touched: Vec<u64>,
    /// The file's length as last set.
    len: u64,
    /// A zero fill failed (a full disk, say): no zeros until the file grows again.
    off: bool,
    /// Chunks first touched since the last sync, and whether that was too many to help.
    fresh: u64,
    big: bool,
}

impl Grown {
    fn new(len: u64) -> Grown {
        Grown {
            first: len.div_ceil(ZERO_CHUNK),
            len,
            ..Grown::default()
        }
    }

    /// Marks `chunk` touched, and says whether it was untouched (so nothing in it was ever
    /// written: it reads as zero and may be overwritten with zeros).
    fn touch(&mut self, chunk: u64) -> bool {
        if chunk < self.first || chunk * ZERO_CHUNK >= self.len {
            return false;
        }
        let bit = (chunk - self.first) as usize;
        if self.touched.len() <= bit / 64 {
            self.touched.resize(bit / 64 + 1, 0);
        }
        let word = &mut self.touched[bit / 64];
        let fresh = *word & (1 << (bit % 64)) == 0;
        *word |= 1 << (bit % 64);
        fresh
    }

    fn set_len(&mut self, len: u64) {
        if len > self.len {
            self.off = false;
        }
        // Chunks wholly cut off are holes again; one cut in part keeps what it holds.
        let kept = len.div_ceil(ZERO_CHUNK).saturating_sub(self.first) as usize;
        for bit in kept..self.touched.len() * 64 {
            self.touched[bit / 64] &= !(1 << (bit % 64));
        }
        self.len = len;
    }
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
        Ok(WatchedFile {
            inner: FileBackend::new(file)?,
            health,
            grown: Mutex::new(None),
        })
    }

    /// Runs `f` on the grown part's record, set up first from the file's length now (redb
    /// locks the file before it resizes or writes it). `None` if the length is unknown.
    fn with_grown<T>(&self, f: impl FnOnce(&mut Grown) -> T) -> Option<T> {
        let mut grown = self
            .grown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if grown.is_none() {
            *grown = Some(Grown::new(self.inner.len().ok()?));
        }
        grown.as_mut().map(f)
    }

    /// Before a write of `offset..end`: fills each chunk of the grown part it is the first
    /// to touch, and the chunk after it, with zeros. Best effort: a failed fill costs only
    /// the speed-up.
    fn zero_ahead(&self, offset: u64, end: u64) {
        static ZEROS: [u8; ZERO_CHUNK as usize] = [0; ZERO_CHUNK as usize];
        // redb never resizes the file between this and the write that follows it (it
        // serializes writes with resizes), so no shrink can cut the chunk in between.
        self.with_grown(|grown| {
            // A write past the end grows the file itself.
            grown.len = grown.len.max(end);
            let last = end.div_ceil(ZERO_CHUNK);
            let ahead = if grown.big { 0 } else { 1 };
            for chunk in offset / ZERO_CHUNK..last + ahead {
                if !grown.touch(chunk) {
                    continue;
                }
                grown.fresh += 1;
                // A big write (a group, a bulk copy) shows itself before its sync.
                grown.big |= grown.fresh > 2;
                let at = chunk * ZERO_CHUNK;
                let n = ZERO_CHUNK.min(grown.len - at) as usize;
                if !grown.off && !grown.big && self.inner.write(at, &ZEROS[..n]).is_err() {
                    grown.off = true;
                }
            }
        });
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
        self.with_grown(|grown| {
            self.watch(self.inner.set_len(len))?;
            grown.set_len(len);
            Ok(())
        })
        .unwrap_or_else(|| self.watch(self.inner.set_len(len)))
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        self.with_grown(|grown| {
            grown.big = grown.fresh > 2;
            grown.fresh = 0;
        });
        self.watch(self.inner.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        self.zero_ahead(offset, offset + data.len() as u64);
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

    /// The chunk, short.
    const C: u64 = ZERO_CHUNK;

    /// A folder of its own and a file path in it.
    fn scratch() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        (dir, path)
    }

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

    /// Whether the filesystem under `dir` leaves `set_len` a hole and stores written zeros
    /// (not so with compression, say): the block counts below mean something only then.
    #[cfg(unix)]
    fn counts_blocks(dir: &Path) -> bool {
        let path = dir.join("probe");
        let file = std::fs::File::create(&path).expect("probe");
        file.set_len(1 << 20).expect("grow");
        let hole = allocated(&path) < ZERO_CHUNK;
        std::os::unix::fs::FileExt::write_all_at(&file, &[0; ZERO_CHUNK as usize], 0)
            .expect("write");
        file.sync_all().expect("sync");
        let kept = allocated(&path) >= ZERO_CHUNK;
        let _ = std::fs::remove_file(&path);
        if !(hole && kept) {
            eprintln!("skipped: this filesystem does not keep holes and zeros apart");
        }
        hole && kept
    }

    #[test]
    fn a_chunk_of_the_grown_part_is_zeroed_before_its_first_write_and_never_after() {
        let (dir, path) = scratch();
        let file = open(&path);
        // redb doubles its file as it grows; the new part is a hole.
        file.set_len(16 << 20).expect("grow");
        file.write(8192, &[2; 4096]).expect("write");
        #[cfg(unix)]
        if counts_blocks(dir.path()) {
            let blocks = allocated(&path);
            assert!(
                blocks >= 2 * C,
                "its chunk and the next are allocated: {blocks}"
            );
            assert!(blocks < 4 * C, "and no more: {blocks}");
        }
        file.write(4096, &[3; 4096]).expect("write beside it");
        file.write(5 * C + 100, &[5; 100])
            .expect("write far past it");
        file.write(4 * C, &[4; 4096])
            .expect("write in the chunk before that");
        file.write(C + 10, &[8; 10])
            .expect("write in the chunk zeroed ahead");
        file.write(2 * C, &[9; 10])
            .expect("write in a chunk of its own");
        assert_eq!(read(&file, 8192, 4096), vec![2; 4096]);
        assert_eq!(read(&file, 4096, 4096), vec![3; 4096]);
        assert_eq!(read(&file, 5 * C + 100, 100), vec![5; 100]);
        assert_eq!(read(&file, 4 * C, 4096), vec![4; 4096]);
        assert_eq!(read(&file, C + 10, 10), vec![8; 10]);
        assert_eq!(read(&file, 2 * C, 10), vec![9; 10]);
        assert_eq!(read(&file, 12288, 4096), vec![0; 4096]);
        assert_eq!(
            file.len().expect("len"),
            16 << 20,
            "zeros never grow the file"
        );

        // Shrunk into a chunk and grown again: what that chunk holds below the cut stays.
        // (Two syncs with nothing between: commits are small again, so zeros are on.)
        file.sync_data().expect("sync");
        file.sync_data().expect("sync");
        file.set_len(2 * C + 10).expect("shrink");
        file.set_len(16 << 20).expect("grow");
        file.write(2 * C + 4096, &[6; 10])
            .expect("write in the cut chunk");
        file.write(5 * C, &[7; 10])
            .expect("write in a chunk cut off");
        assert_eq!(read(&file, 2 * C, 10), vec![9; 10]);
        assert_eq!(read(&file, 2 * C + 4096, 10), vec![6; 10]);
        assert_eq!(
            read(&file, 5 * C + 100, 100),
            vec![0; 100],
            "cut off by the shrink"
        );
        assert_eq!(read(&file, 5 * C, 10), vec![7; 10]);
    }

    #[cfg(unix)]
    #[test]
    fn after_a_big_commit_nothing_is_zeroed_until_commits_are_small_again() {
        let (dir, path) = scratch();
        if !counts_blocks(dir.path()) {
            return;
        }
        let file = open(&path);
        file.set_len(64 << 20).expect("grow");
        let page = [1u8; 4096];
        // A group commit: pages in several new chunks.
        for chunk in 0..4 {
            file.write(chunk * 4 * C, &page).expect("write");
        }
        file.sync_data().expect("sync");
        let before = allocated(&path);
        file.write(100 * C, &page).expect("write");
        let grown = allocated(&path) - before;
        assert!(grown < C, "no zeros after a big commit: {grown}");
        file.sync_data().expect("sync");
        let before = allocated(&path);
        file.write(200 * C, &page).expect("write");
        let grown = allocated(&path) - before;
        assert!(grown >= 2 * C, "zeros again after a small one: {grown}");
        assert_eq!(read(&file, 100 * C, 4096), page.to_vec());
        assert_eq!(read(&file, 200 * C, 4096), page.to_vec());
    }

    #[test]
    fn a_reopened_file_never_zeroes_what_it_holds() {
        let (_dir, path) = scratch();
        // A length that ends inside a chunk: the data in that chunk is kept.
        let len = 16 * C + 1000;
        {
            let file = open(&path);
            file.set_len(len).expect("grow");
            file.write(8 * C, &[7; 4096]).expect("write");
            file.write(16 * C, &[6; 1000]).expect("write up to the end");
        }
        let file = open(&path);
        file.write(8 * C + 8192, &[8; 4096])
            .expect("write beside it");
        file.set_len(64 * C).expect("grow");
        file.write(16 * C + 4096, &[5; 4096])
            .expect("write in the chunk cut by the end");
        file.write(32 * C, &[9; 4096])
            .expect("write in the new part");
        assert_eq!(read(&file, 8 * C, 4096), vec![7; 4096]);
        assert_eq!(read(&file, 8 * C + 8192, 4096), vec![8; 4096]);
        assert_eq!(read(&file, 16 * C, 1000), vec![6; 1000]);
        assert_eq!(read(&file, 16 * C + 4096, 4096), vec![5; 4096]);
        assert_eq!(read(&file, 32 * C, 4096), vec![9; 4096]);
    }

    #[cfg(unix)]
    #[test]
    fn what_another_process_wrote_before_the_first_write_is_kept() {
        let (_dir, path) = scratch();
        let file = open(&path);
        // Until redb locks the file, another process may grow and write it.
        {
            let other = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open");
            other.set_len(4 * C).expect("grow");
            std::os::unix::fs::FileExt::write_all_at(&other, &[3; 100], 2 * C).expect("write");
        }
        file.set_len(8 * C).expect("grow");
        file.write(2 * C + 4096, &[4; 100])
            .expect("write beside it");
        assert_eq!(read(&file, 2 * C, 100), vec![3; 100]);
        assert_eq!(read(&file, 2 * C + 4096, 100), vec![4; 100]);
    }

    #[test]
    fn a_write_past_the_end_is_kept_when_the_file_grows_again() {
        let (_dir, path) = scratch();
        let file = open(&path);
        file.set_len(C).expect("grow");
        file.write(3 * C + 8192, &[1; 100])
            .expect("write past the end");
        file.set_len(16 * C).expect("grow");
        file.write(3 * C, &[2; 100])
            .expect("write before it in its chunk");
        assert_eq!(read(&file, 3 * C + 8192, 100), vec![1; 100]);
        assert_eq!(read(&file, 3 * C, 100), vec![2; 100]);
    }

    /// Random resizes, writes, syncs and reopens against a copy kept in memory: whatever
    /// the zeros do, every byte reads back as last written.
    #[test]
    fn every_byte_reads_as_last_written_through_random_resizes_writes_and_reopens() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().expect("tempdir");
        for seed in 0..8u64 {
            let path = dir.path().join(format!("file{seed}"));
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut shadow: Vec<u8> = Vec::new();
            let mut file = open(&path);
            for step in 0..300 {
                match rng.gen_range(0..12) {
                    0 => {
                        let len = rng.gen_range(0..24 * C);
                        file.set_len(len).expect("resize");
                        shadow.resize(len as usize, 0);
                    }
                    1..=3 => file.sync_data().expect("sync"),
                    4 => {
                        drop(file);
                        file = open(&path);
                    }
                    _ => {
                        let len = shadow.len() as u64;
                        let offset = rng.gen_range(0..len + 2 * C);
                        // Mostly pages (zeros on), now and then a big write (zeros off).
                        let size = if rng.gen_range(0..8) == 0 {
                            rng.gen_range(1..3 * C)
                        } else {
                            rng.gen_range(1..8192)
                        };
                        let byte = rng.gen_range(1..=255u8);
                        file.write(offset, &vec![byte; size as usize])
                            .expect("write");
                        let end = (offset + size) as usize;
                        if shadow.len() < end {
                            shadow.resize(end, 0);
                        }
                        shadow[offset as usize..end].fill(byte);
                    }
                }
                assert_eq!(
                    file.len().expect("len"),
                    shadow.len() as u64,
                    "seed {seed} step {step}"
                );
                if step % 25 == 0 || step == 299 {
                    assert!(
                        read(&file, 0, shadow.len()) == shadow,
                        "seed {seed} step {step}: the file differs from what was written"
                    );
                }
            }
        }
    }
}
