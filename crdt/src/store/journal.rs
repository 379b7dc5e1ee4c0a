//! The commit journal: how a commit becomes durable with one sequential write.
//!
//! redb makes a commit durable by syncing its file: every page the commit wrote, each at
//! its own place in the file (a single add writes about twenty pages across ten tables),
//! and the disk takes each as a write of its own. Here the store's file is synced only
//! now and then; a commit is made durable by appending everything it wrote (offsets and
//! bytes, each write without its trailing zeros, checksummed) as one record to a journal
//! file beside the store and syncing that: one sequential write of some tens of kilobytes.
//! (Records of format 1 were LZ4-compressed: half the bytes, but compressing cost a single
//! add more than writing the other half; they are still read, from a journal an earlier
//! version left after a crash.)
//!
//! Invariants:
//! - When `sync_data` returns, every write before it is in the store file (as the kernel
//!   holds it) and in a synced journal record, or the store file itself was synced.
//! - A journal is emptied (its first record wiped, synced) only after the store file was
//!   synced with everything the journal holds, so replaying what is left never takes the
//!   file back past a commit that was made durable.
//! - On open, before redb sees the file, every valid record of both journals is written
//!   again into it in sequence order, the file is synced and the journals emptied. A
//!   record is valid if its checksum holds, it names this very file (device, inode, birth
//!   time: a vacuum's new file or a restored backup is another file) and it continues the
//!   sequence of the records before it in its journal (what follows is older or torn).
//! - Writes redb made after the last sync may or may not be in the file after a crash;
//!   redb copes with that as it does without a journal (its pages are copy-on-write; the
//!   header names a commit whose pages it checks).
//!
//! Two journals take turns: when the active one is past [`SWITCH_BYTES`], commits go on in
//! the other while a background thread syncs the store file and then empties the full
//! one. A commit too big to keep in memory ([`BIG_BYTES`]) syncs the store file itself.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::StorageBackend;
use redb::backends::FileBackend;

/// Past this many bytes of records, the other journal takes over.
const SWITCH_BYTES: u64 = if cfg!(test) { 512 << 10 } else { 4 << 20 };
/// Writes of one commit past this many bytes are not kept: the commit syncs the store file
/// (a big memory, a bulk import; their pages lie together and are many, and the copy
/// would cost as much memory).
const BIG_BYTES: usize = 4 << 20;
/// Journals grow (with zeros, ahead of their records) in steps this big, so a record's
/// sync seldom allocates blocks.
const FILL_BYTES: u64 = 1 << 20;

/// Format 2: writes as they are, without trailing zeros.
const MAGIC: [u8; 4] = *b"MnJ2";
/// Format 1: writes whole, the lot LZ4-compressed. Read, never written.
const MAGIC_LZ4: [u8; 4] = *b"MnJ1";
/// magic 4, crc 4, run 8, seq 8, inode 8, born 8, file length 8, raw 4, packed 4 (format
/// 2: the body's length, twice).
const HEADER: usize = 56;

/// Which file a record belongs to. Not its device: some filesystems (network, overlay,
/// btrfs subvolumes) number devices anew at each mount, and a reboot after a crash must
/// still find the journal's records its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileId {
    inode: u64,
    /// Birth time in nanoseconds since the epoch, 0 where the filesystem keeps none.
    born: u64,
}

impl FileId {
    pub(crate) fn of(file: &File) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = file.metadata()?;
        let born = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(FileId {
            inode: meta.ino(),
            born,
        })
    }
}

/// The two journal files of the store file at `path`.
pub(crate) fn paths(path: &Path) -> [PathBuf; 2] {
    let name = |i: u8| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".journal-{i}"));
        PathBuf::from(name)
    };
    [name(0), name(1)]
}

/// One commit's writes, as read back from a journal.
#[derive(Debug, PartialEq)]
struct Record {
    /// Drawn at random by each open: records a journal kept from an earlier open never
    /// continue the sequence of this one's.
    run: u64,
    seq: u64,
    file_len: u64,
    writes: Vec<(u64, Vec<u8>)>,
}

/// Encodes a record of the writes in `raw`: offset u64, length u32, kept u32 and the
/// write's first `kept` bytes (the rest are zeros), repeated.
fn encode(run: u64, seq: u64, id: FileId, file_len: u64, raw: &[u8]) -> Vec<u8> {
    encode_as(MAGIC, run, seq, id, file_len, raw, raw)
}

/// A record of format `magic` with the body `packed` (`raw` decoded).
fn encode_as(
    magic: [u8; 4],
    run: u64,
    seq: u64,
    id: FileId,
    file_len: u64,
    raw: &[u8],
    packed: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + packed.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&run.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&id.inode.to_le_bytes());
    out.extend_from_slice(&id.born.to_le_bytes());
    out.extend_from_slice(&file_len.to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
    out.extend_from_slice(packed);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The record at the start of `bytes`, and its length, if it is whole, belongs to `id`
/// and comes right after `after` (same run, next sequence number; any if `None`).
fn decode(bytes: &[u8], id: FileId, after: Option<(u64, u64)>) -> Option<(Record, usize)> {
    let magic = bytes.get(..4)?;
    if magic != MAGIC && magic != MAGIC_LZ4 {
        return None;
    }
    let packed_len = u32_at(bytes, 52)? as usize;
    let whole = bytes.get(..HEADER.checked_add(packed_len)?)?;
    if crc32fast::hash(&whole[8..]) != u32_at(whole, 4)? {
        return None;
    }
    let run = u64_at(whole, 8)?;
    let seq = u64_at(whole, 16)?;
    let found = FileId {
        inode: u64_at(whole, 24)?,
        born: u64_at(whole, 32)?,
    };
    if found != id || after.is_some_and(|prev| (run, seq) != (prev.0, prev.1.wrapping_add(1))) {
        return None;
    }
    let file_len = u64_at(whole, 40)?;
    let writes = if magic == MAGIC {
        writes(&whole[HEADER..], true)?
    } else {
        let raw_len = u32_at(whole, 48)? as usize;
        writes(
            &lz4_flex::block::decompress(&whole[HEADER..], raw_len).ok()?,
            false,
        )?
    };
    Some((
        Record {
            run,
            seq,
            file_len,
            writes,
        },
        whole.len(),
    ))
}

/// Appends a write at `offset` to a record's body, without its trailing zeros (a page's
/// unused end: most of what a small commit writes).
fn push_write(body: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let kept = used_len(data);
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(kept as u32).to_le_bytes());
    body.extend_from_slice(&data[..kept]);
}

/// The length of `data` without its trailing zeros.
fn used_len(data: &[u8]) -> usize {
    let mut end = data.len();
    while end >= 8 && data[end - 8..end] == [0; 8] {
        end -= 8;
    }
    while end > 0 && data[end - 1] == 0 {
        end -= 1;
    }
    end
}

/// The writes of a record's body, each whole: offset u64, length u32, then (format 2,
/// `trimmed`) how many of its bytes are kept u32, and those bytes (the rest are zeros).
/// Format 1 keeps every byte and says nothing of it.
fn writes(raw: &[u8], trimmed: bool) -> Option<Vec<(u64, Vec<u8>)>> {
    let head = if trimmed { 16 } else { 12 };
    let mut writes = Vec::new();
    // What the writes make, whole: never more than a commit keeps (a crafted record must
    // not ask for gigabytes of zeros).
    let mut whole_bytes = 0usize;
    let mut at = 0;
    while at < raw.len() {
        let offset = u64_at(raw, at)?;
        let len = u32_at(raw, at + 8)? as usize;
        let kept = if trimmed {
            u32_at(raw, at + 12)? as usize
        } else {
            len
        };
        let data = raw.get(at + head..at.checked_add(head)?.checked_add(kept)?)?;
        whole_bytes = whole_bytes.checked_add(len)?;
        if kept > len || whole_bytes > BIG_BYTES {
            return None;
        }
        let mut whole = Vec::with_capacity(len);
        whole.extend_from_slice(data);
        whole.resize(len, 0);
        writes.push((offset, whole));
        at += head + kept;
    }
    Some(writes)
}

/// Every valid record of a journal's bytes, in order.
fn records(bytes: &[u8], id: FileId) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut at = 0;
    while let Some((record, len)) = decode(&bytes[at..], id, out.last().map(|r| (r.run, r.seq))) {
        out.push(record);
        at += len;
    }
    out
}

/// A file the journal writes: the store file, a journal file (a test's model disk).
pub(crate) type Backend = Arc<dyn StorageBackend>;

/// Wipes the first record of a journal, durably: it then holds none.
fn empty(file: &Backend) -> std::io::Result<()> {
    file.write(0, &[0; HEADER])?;
    file.sync_data()
}

/// What journals a store file's commits; see the module documentation.
#[derive(Debug)]
pub(crate) struct Journal {
    /// The store file.
    main: Backend,
    id: FileId,
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    Journaled(Box<State>),
    /// Commits sync the store file itself (after [`Journal::detach`]).
    Through,
}

#[derive(Debug)]
struct State {
    files: [Backend; 2],
    /// The lock on the journals, held as long as they are used (none for a model disk).
    _lock: Option<File>,
    /// [`SWITCH_BYTES`], or less in a test.
    switch_bytes: u64,
    /// How long each journal file is: below that, a write allocates nothing.
    filled: [u64; 2],
    /// Whether each journal may hold records the store file's last sync did not cover.
    holds: [bool; 2],
    active: usize,
    /// Where the active journal's next record goes.
    pos: u64,
    run: u64,
    next_seq: u64,
    /// The writes since the last sync, as a record's body holds them (see [`encode`]).
    pending: Vec<u8>,
    /// Their bytes, zero ends counted: at most [`BIG_BYTES`] (so a record never makes
    /// more, and one that says it does is not one of these).
    written: usize,
    /// The writes since the last sync were too many to keep.
    big: bool,
    /// The store file's length as last set, and whether it changed since the last sync.
    len: u64,
    resized: bool,
    /// The background sync of the store file that will empty the journal it names.
    emptying: Option<(usize, JoinHandle<Result<(), Failed>>)>,
    /// A sync of the store file failed. The kernel may have dropped those pages' writes and
    /// would not say so again: no later sync through this handle can be trusted to cover
    /// the journals, so none is tried and every commit fails until the store is opened
    /// again (which writes the records back and syncs).
    failed: bool,
}

impl Journal {
    /// Takes the journals of the store file at `path` (open as `main`), writes what they
    /// hold into it, syncs it and empties them. Fails with `WouldBlock` if another
    /// process has them.
    pub(crate) fn open(path: &Path, main: Backend, id: FileId) -> std::io::Result<Journal> {
        let open = |path: &Path| {
            let mut options = OpenOptions::new();
            options.read(true).write(true).create(true).truncate(false);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options.open(path)
        };
        let [first, second] = paths(path);
        let (first, second) = (open(&first)?, open(&second)?);
        // Held as long as the journal is: no other process replays or writes them.
        let lock = first.try_clone()?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "the store is open in another process",
            ),
            std::fs::TryLockError::Error(e) => e,
        })?;
        let files: [Backend; 2] = [
            Arc::new(FileBackend::new(first).map_err(std::io::Error::other)?),
            Arc::new(FileBackend::new(second).map_err(std::io::Error::other)?),
        ];
        Journal::start(main, files, id, Some(lock), SWITCH_BYTES)
    }

    /// [`Journal::open`] on given files.
    pub(crate) fn start(
        main: Backend,
        files: [Backend; 2],
        id: FileId,
        lock: Option<File>,
        switch_bytes: u64,
    ) -> std::io::Result<Journal> {
        let mut found = Vec::new();
        let mut filled = [0; 2];
        // Each journal's first sequence number: the older is emptied first.
        let mut first = [0; 2];
        for (i, file) in files.iter().enumerate() {
            let mut bytes = vec![0; usize::try_from(file.len()?).map_err(std::io::Error::other)?];
            file.read(0, &mut bytes)?;
            filled[i] = bytes.len() as u64;
            let held = records(&bytes, id);
            first[i] = held.first().map_or(0, |r| r.seq);
            found.extend(held);
        }
        found.sort_by_key(|r| r.seq);
        if !found.is_empty() {
            for record in &found {
                for (offset, data) in &record.writes {
                    main.write(*offset, data)?;
                }
                main.set_len(record.file_len)?;
            }
            main.sync_data()?;
            tracing::info!(
                commits = found.len(),
                "wrote the journal's last commits into the store file"
            );
        }
        // Oldest first: a crash in between leaves the newest records, which replay again
        // onto what they made; the older ones alone would take the file back.
        let order = if first[0] <= first[1] { [0, 1] } else { [1, 0] };
        for i in order {
            if filled[i] > 0 {
                empty(&files[i])?;
            }
        }
        let len = main.len()?;
        Ok(Journal {
            main,
            id,
            mode: Mode::Journaled(Box::new(State {
                files,
                _lock: lock,
                switch_bytes,
                filled,
                holds: [false; 2],
                active: 0,
                pos: 0,
                run: rand::random(),
                next_seq: 1,
                pending: Vec::new(),
                written: 0,
                big: false,
                len,
                resized: false,
                emptying: None,
                failed: false,
            })),
        })
    }

    /// Notes a write redb made to the store file.
    pub(crate) fn wrote(&mut self, offset: u64, data: &[u8]) {
        let Mode::Journaled(state) = &mut self.mode else {
            return;
        };
        if state.big {
            return;
        }
        if state.written + data.len() > BIG_BYTES {
            state.big = true;
            state.pending = Vec::new();
            return;
        }
        state.written += data.len();
        // A write past the end grows the file (redb sets the length first; in case not).
        state.len = state.len.max(offset + data.len() as u64);
        push_write(&mut state.pending, offset, data);
    }

    /// Notes that redb set the store file's length.
    pub(crate) fn resized(&mut self, len: u64) {
        if let Mode::Journaled(state) = &mut self.mode {
            state.len = len;
            state.resized = true;
        }
    }

    /// Makes every write so far durable.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        let Mode::Journaled(state) = &mut self.mode else {
            return self.main.sync_data();
        };
        state.check()?;
        if state.big {
            return self.checkpoint();
        }
        if state.pending.is_empty() && !state.resized {
            return Ok(());
        }
        if state.pos >= state.switch_bytes {
            state.switch(&self.main)?;
        }
        let record = encode(
            state.run,
            state.next_seq,
            self.id,
            state.len,
            &state.pending,
        );
        let file = &state.files[state.active];
        let end = state.pos + record.len() as u64;
        while state.filled[state.active] < end {
            let at = state.filled[state.active];
            file.write(at, &vec![0; FILL_BYTES as usize])?;
            state.filled[state.active] = at + FILL_BYTES;
        }
        file.write(state.pos, &record)?;
        state.holds[state.active] = true;
        file.sync_data()?;
        state.pos = end;
        state.next_seq += 1;
        state.pending.clear();
        state.written = 0;
        state.resized = false;
        Ok(())
    }

    /// Syncs the store file and empties both journals (waiting for a background sync).
    pub(crate) fn checkpoint(&mut self) -> std::io::Result<()> {
        let Mode::Journaled(state) = &mut self.mode else {
            return self.main.sync_data();
        };
        state.check()?;
        if let Some((i, emptying)) = state.emptying.take() {
            state.joined(i, emptying)?;
        }
        state.sync_main(&self.main)?;
        // The journal switched away from holds the older records: it goes first.
        for i in [state.active ^ 1, state.active] {
            if state.holds[i] {
                empty(&state.files[i])?;
                state.holds[i] = false;
            }
        }
        state.pos = 0;
        state.pending.clear();
        state.written = 0;
        state.big = false;
        state.resized = false;
        Ok(())
    }

    /// Checkpoints, then empties the journals to nothing (no byte of an old record stays:
    /// a vacuum after a delete relies on it) and lets them go, and their lock: from now on
    /// every sync syncs the store file itself. At close, and before a vacuum puts another
    /// file in this one's place.
    /// If any step fails the journals stay as they are, in use.
    pub(crate) fn detach(&mut self) -> std::io::Result<()> {
        self.checkpoint()?;
        if let Mode::Journaled(state) = &self.mode {
            for file in &state.files {
                file.set_len(0)?;
                file.sync_data()?;
            }
        }
        self.mode = Mode::Through;
        Ok(())
    }

    /// At close: [`Journal::detach`], and the journals (and their lock) go even if it
    /// fails; whatever they still hold is written back at the next open.
    pub(crate) fn close(&mut self) -> std::io::Result<()> {
        let result = self.detach();
        self.mode = Mode::Through;
        result
    }
}

impl State {
    /// Hands commits to the other journal; the full one is emptied once a background
    /// sync of the store file covers it.
    fn switch(&mut self, main: &Backend) -> std::io::Result<()> {
        let next = self.active ^ 1;
        if let Some((i, emptying)) = self.emptying.take() {
            self.joined(i, emptying)?;
        }
        if self.holds[next] {
            // Its background emptying failed after the sync (the disk refused a write):
            // the sync covered it, so emptying it is all that is left.
            empty(&self.files[next])?;
            self.holds[next] = false;
        }
        let full = self.files[self.active].clone();
        let main = main.clone();
        let emptying = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || {
                main.sync_data().map_err(Failed::Sync)?;
                empty(&full).map_err(Failed::Empty)
            })?;
        self.emptying = Some((self.active, emptying));
        self.active = next;
        self.pos = 0;
        Ok(())
    }

    /// Fails if a sync of the store file failed before (see `failed`).
    fn check(&self) -> std::io::Result<()> {
        if self.failed {
            return Err(std::io::Error::other(
                "a sync of the store file failed; the store must be opened again",
            ));
        }
        Ok(())
    }

    fn sync_main(&mut self, main: &Backend) -> std::io::Result<()> {
        main.sync_data().inspect_err(|_| self.failed = true)
    }

    /// Waits for the background emptying of journal `i`.
    fn joined(
        &mut self,
        i: usize,
        emptying: JoinHandle<Result<(), Failed>>,
    ) -> std::io::Result<()> {
        match emptying.join() {
            Ok(Ok(())) => {
                self.holds[i] = false;
                Ok(())
            }
            // Synced, not emptied: it is emptied again before it takes records.
            Ok(Err(Failed::Empty(e))) => {
                tracing::warn!("emptying a journal of the store failed: {e}");
                Ok(())
            }
            Ok(Err(Failed::Sync(e))) => {
                self.failed = true;
                Err(e)
            }
            Err(_) => {
                self.failed = true;
                Err(std::io::Error::other(
                    "the store's background sync panicked",
                ))
            }
        }
    }
}

/// How a background emptying failed.
#[derive(Debug)]
enum Failed {
    /// The store file's sync: nothing it covered can be trusted (see `State::failed`).
    Sync(std::io::Error),
    /// Emptying the journal, after the sync.
    Empty(std::io::Error),
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Mode::Journaled(state) = &mut self.mode
            && let Some((_, emptying)) = state.emptying.take()
        {
            let _ = emptying.join();
        }
    }
}

#[cfg(test)]
mod tests;
