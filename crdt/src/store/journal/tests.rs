//! Crashes, simulated: the store file and its journals are put back, in place (the same
//! files: records name their file), as a crash could have left them, and opened again.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use redb::{Database, ReadableDatabase, ReadableTableMetadata, TableDefinition};

use super::paths;

const ROWS: TableDefinition<u64, &[u8]> = TableDefinition::new("rows");

fn value(i: u64) -> Vec<u8> {
    // Some bytes alike, some not: like pages of real text.
    (0..300 + i % 700).map(|j| (i * 31 + j / 7) as u8).collect()
}

fn open(path: &Path) -> Database {
    super::super::open_file(path, &Default::default())
        .expect("open")
        .0
}

/// Commits rows `from..to`, one durable commit each.
fn commit(db: &Database, rows: std::ops::Range<u64>) {
    for i in rows {
        let txn = db.begin_write().expect("begin");
        txn.open_table(ROWS)
            .expect("table")
            .insert(i, value(i).as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
}

/// Rows `0..n` are there, each as written, and no others.
fn assert_rows(db: &Database, n: u64, why: &str) {
    let txn = db.begin_read().expect("read");
    let table = txn.open_table(ROWS).expect("table");
    assert_eq!(table.len().expect("len"), n, "{why}");
    for i in 0..n {
        let row = table.get(i).expect("get");
        assert_eq!(
            row.map(|v| v.value().to_vec()),
            Some(value(i)),
            "{why}: row {i}"
        );
    }
}

/// The store file and its journals as they are now (what the kernel holds).
struct Image {
    main: Vec<u8>,
    journals: [Vec<u8>; 2],
}

impl Image {
    fn take(path: &Path) -> Image {
        Image {
            main: std::fs::read(path).expect("main"),
            journals: paths(path).map(|p| std::fs::read(p).expect("journal")),
        }
    }
}

/// Writes `main` and `journals` into the files at `path`, in place.
fn put_back(path: &Path, main: &[u8], journals: &[Vec<u8>; 2]) {
    let write = |path: &PathBuf, bytes: &[u8]| {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .expect("open in place");
        file.write_all(bytes).expect("write");
        file.sync_all().expect("sync");
    };
    write(&path.to_owned(), main);
    for (path, bytes) in paths(path).iter().zip(journals) {
        write(path, bytes);
    }
}

/// What a crash may leave of the store file: what its last sync covered (`durable`), and
/// of the pages written since (`now`) some at random.
fn torn(durable: &[u8], now: &[u8], rng: &mut impl Rng) -> Vec<u8> {
    let mut out = durable.to_vec();
    out.resize(now.len().max(durable.len()), 0);
    for (page, bytes) in now.chunks(4096).enumerate() {
        if rng.gen_bool(0.5) {
            out[page * 4096..page * 4096 + bytes.len()].copy_from_slice(bytes);
        }
    }
    out
}

#[test]
fn every_commit_synced_through_the_journal_survives_a_crash_that_lost_the_file_s_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let db = open(&path);
    commit(&db, 0..20);
    drop(db);
    // Closed: the file was synced, the journals emptied.
    let durable = std::fs::read(&path).expect("main");
    for round in 0..4u64 {
        let db = open(&path);
        assert_rows(&db, 20, "after a clean close");
        commit(&db, 20..32);
        let crashed = Image::take(&path);
        // No switch yet: the file had no sync since the close.
        assert!(crashed.journals[1].is_empty(), "one journal took them all");
        drop(db);
        // Nothing written since the close reached the file (round 0), or some of it did.
        let main = if round == 0 {
            durable.clone()
        } else {
            torn(&durable, &crashed.main, &mut rng)
        };
        put_back(&path, &main, &crashed.journals);
        let db = open(&path);
        assert_rows(&db, 32, &format!("round {round}: every synced commit"));
        // Back to where each round starts.
        drop(db);
        put_back(&path, &durable, &[Vec::new(), Vec::new()]);
    }
}

#[test]
fn a_torn_last_record_loses_only_its_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    drop(open(&path));
    let durable = std::fs::read(&path).expect("main");
    let db = open(&path);
    commit(&db, 0..10);
    commit(&db, 10..11);
    let crashed = Image::take(&path);
    drop(db);
    assert!(crashed.journals[1].is_empty(), "one journal took them all");
    // The last record cut short, or one of its bytes changed.
    let (mut pos, mut last_start, mut records) = (0, 0, 0);
    while let Some((_, len)) = super::decode(&crashed.journals[0][pos..], id_of(&path), None) {
        (last_start, pos, records) = (pos, pos + len, records + 1);
    }
    assert!(
        records >= 11,
        "a record for each commit at least: {records}"
    );
    for damage in 0..2 {
        let mut journal = crashed.journals[0].clone();
        if damage == 0 {
            journal.truncate(last_start + 100);
        } else {
            journal[last_start + 80] ^= 0x40;
        }
        let main = torn(&durable, &crashed.main, &mut rng);
        put_back(&path, &main, &[journal, crashed.journals[1].clone()]);
        let db = open(&path);
        assert_rows(
            &db,
            10,
            &format!("damage {damage}: all but the torn commit"),
        );
        drop(db);
        put_back(&path, &durable, &[Vec::new(), Vec::new()]);
    }
}

#[test]
fn a_record_gives_back_every_write_whole_though_it_keeps_no_trailing_zeros() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let writes: Vec<(u64, Vec<u8>)> = (0..40u64)
        .map(|i| {
            let len = [0, 1, 7, 8, 9, 320, 4096][i as usize % 7];
            let mut data: Vec<u8> = (0..len).map(|_| rng.r#gen::<u8>()).collect();
            // Zero ends of every length, zeros inside, all zeros.
            let zeros = rng.gen_range(0..=len);
            data[len - zeros..].fill(0);
            if i % 5 == 0 && len > 2 {
                data[len / 2] = 0;
            }
            if i % 11 == 0 {
                data.fill(0);
            }
            (i * 4096, data)
        })
        .collect();
    let mut body = Vec::new();
    for (offset, data) in &writes {
        super::push_write(&mut body, *offset, data);
    }
    let whole: usize = writes.iter().map(|(_, d)| 16 + d.len()).sum();
    assert!(body.len() < whole, "zero ends are left out");
    let id = super::FileId::default();
    let record = super::encode(7, 3, id, 1 << 20, &body);
    let (decoded, len) = super::decode(&record, id, Some((7, 2))).expect("decodes");
    assert_eq!(len, record.len());
    assert_eq!(decoded.writes, writes);
    assert_eq!(
        (decoded.run, decoded.seq, decoded.file_len),
        (7, 3, 1 << 20)
    );
    // Its body's lengths are checked: a write that would keep more than it has fails.
    let mut lying = Vec::new();
    lying.extend_from_slice(&0u64.to_le_bytes());
    lying.extend_from_slice(&1u32.to_le_bytes());
    lying.extend_from_slice(&2u32.to_le_bytes());
    lying.extend_from_slice(&[1, 2]);
    assert!(super::decode(&super::encode(7, 3, id, 0, &lying), id, None).is_none());
    // Nor may a record make more than a commit keeps: four gibibytes of zeros, say.
    let mut greedy = Vec::new();
    greedy.extend_from_slice(&0u64.to_le_bytes());
    greedy.extend_from_slice(&u32::MAX.to_le_bytes());
    greedy.extend_from_slice(&0u32.to_le_bytes());
    assert!(super::decode(&super::encode(7, 3, id, 0, &greedy), id, None).is_none());
}

/// `journal` with each record of format 2 written again as format 1 (LZ4), as a version
/// before format 2 wrote it.
fn as_format_1(journal: &[u8], id: super::FileId) -> Vec<u8> {
    let mut out = Vec::new();
    for record in super::records(journal, id) {
        let mut raw = Vec::new();
        for (offset, data) in &record.writes {
            raw.extend_from_slice(&offset.to_le_bytes());
            raw.extend_from_slice(&(data.len() as u32).to_le_bytes());
            raw.extend_from_slice(data);
        }
        let packed = lz4_flex::block::compress(&raw);
        out.extend(super::encode_as(
            super::MAGIC_LZ4,
            record.run,
            record.seq,
            id,
            record.file_len,
            &raw,
            &packed,
        ));
    }
    out
}

#[test]
fn a_journal_of_format_1_left_by_an_earlier_version_is_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    drop(open(&path));
    let durable = std::fs::read(&path).expect("main");
    let db = open(&path);
    commit(&db, 0..12);
    let crashed = Image::take(&path);
    drop(db);
    assert!(crashed.journals[1].is_empty(), "one journal took them all");
    let id = id_of(&path);
    let old = crashed.journals.clone().map(|j| as_format_1(&j, id));
    assert!(
        old[0].len() > super::HEADER && old[0][..4] == super::MAGIC_LZ4,
        "format 1 records"
    );
    put_back(&path, &torn(&durable, &crashed.main, &mut rng), &old);
    let db = open(&path);
    assert_rows(&db, 12, "replayed from records of format 1");
}

fn id_of(path: &Path) -> super::FileId {
    super::FileId::of(&std::fs::File::open(path).expect("open")).expect("id")
}

#[test]
fn records_of_another_file_or_an_earlier_open_are_never_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let other = dir.path().join("other.redb");
    // Another store's journal, full of records, put beside this one.
    let db = open(&other);
    commit(&db, 0..30);
    let foreign = Image::take(&other);
    drop(db);
    let db = open(&path);
    commit(&db, 0..5);
    drop(db);
    let durable = std::fs::read(&path).expect("main");
    put_back(&path, &durable, &foreign.journals);
    let db = open(&path);
    assert_rows(&db, 5, "another file's records are not this file's");
    drop(db);

    // An open's records, then a close, then the next open writes records of the same
    // sizes over the first ones: what is left of the earlier open's never continues them.
    put_back(&path, &durable, &[Vec::new(), Vec::new()]);
    let db = open(&path);
    commit(&db, 100..140);
    drop(db);
    let earlier = std::fs::read(paths(&path)[0].clone()).expect("journal");
    put_back(&path, &durable, &[earlier, Vec::new()]);
    let db = open(&path);
    commit(&db, 100..105);
    let crashed = Image::take(&path);
    drop(db);
    put_back(&path, &durable, &crashed.journals);
    let db = open(&path);
    let txn = db.begin_read().expect("read");
    let rows = txn.open_table(ROWS).expect("table");
    assert_eq!(
        rows.len().expect("len"),
        10,
        "the five of the durable file and the five of this open, not the earlier open's"
    );
}

#[test]
fn commits_go_on_in_the_other_journal_while_the_full_one_is_emptied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let db = open(&path);
    // Well past several switches at the test's journal size.
    commit(&db, 0..400);
    let journals = paths(&path).map(|p| std::fs::metadata(p).expect("journal").len());
    assert!(
        journals.iter().all(|&len| len > 0),
        "both journals took records: {journals:?}"
    );
    // A crash now (the kernel keeps what was written): both journals replayed in order.
    let crashed = Image::take(&path);
    drop(db);
    put_back(&path, &crashed.main, &crashed.journals);
    let db = open(&path);
    assert_rows(&db, 400, "after a crash across switches");
    commit(&db, 400..450);
    drop(db);
    let db = open(&path);
    assert_rows(&db, 450, "after a clean close");
}

#[test]
fn a_second_open_of_the_same_store_is_refused_while_the_first_holds_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("store.redb");
    let db = open(&path);
    let second = super::super::open_file(&path, &Default::default());
    assert!(
        matches!(second, Err(redb::DatabaseError::DatabaseAlreadyOpen)),
        "{second:?}"
    );
    drop(db);
    drop(open(&path));
}

/// Three files on a model disk that keeps, of each, only what its last `sync_data` saw,
/// and whose power is cut at a chosen operation (of any of the three, on any thread).
#[derive(Debug, Default)]
struct Disk {
    /// (what the process sees, what survives a power cut) of each file.
    files: [(Vec<u8>, Vec<u8>); 3],
    ops_left: Option<u64>,
    cut: bool,
    /// Operations that changed the disk so far.
    ops: u64,
}

#[derive(Debug, Clone)]
struct ModelFile(std::sync::Arc<std::sync::Mutex<Disk>>, usize);

impl ModelFile {
    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one operation that changes the disk; fails from the cut on.
    fn tick(disk: &mut Disk) -> std::io::Result<()> {
        if disk.cut || disk.ops_left == Some(0) {
            disk.cut = true;
            return Err(std::io::Error::other("power cut"));
        }
        if let Some(left) = disk.ops_left.as_mut() {
            *left -= 1;
        }
        disk.ops += 1;
        Ok(())
    }
}

impl redb::StorageBackend for ModelFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.disk().files[self.1].0.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let disk = self.disk();
        let file = &disk.files[self.1].0;
        let start = offset as usize;
        let bytes = file
            .get(start..start + out.len())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past end"))?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut disk = self.disk();
        ModelFile::tick(&mut disk)?;
        disk.files[self.1].0.resize(len as usize, 0);
        Ok(())
    }

    fn sync_data(&self) -> std::io::Result<()> {
        let mut disk = self.disk();
        ModelFile::tick(&mut disk)?;
        let file = &mut disk.files[self.1];
        file.1 = file.0.clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut disk = self.disk();
        ModelFile::tick(&mut disk)?;
        let file = &mut disk.files[self.1].0;
        let end = offset as usize + data.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset as usize..end].copy_from_slice(data);
        Ok(())
    }
}

/// The store file and its journals on `disk`, as a database (or the error of opening it).
fn open_on(disk: &std::sync::Arc<std::sync::Mutex<Disk>>) -> Result<Database, String> {
    let file = |i| -> super::Backend { std::sync::Arc::new(ModelFile(disk.clone(), i)) };
    let watched = super::super::disk::WatchedFile::on(
        file(0),
        [file(1), file(2)],
        super::FileId::default(),
        // A switch every few commits.
        8 << 10,
    )
    .map_err(|e| e.to_string())?;
    super::super::builder()
        .create_with_backend(watched)
        .map_err(|e| e.to_string())
}

/// Power cut at random operations (a commit's writes, a record's sync, the background
/// sync of the store file, emptying a journal, opening): the disk's durable bytes alone
/// open, and hold every commit that was acknowledged, in order.
#[test]
fn power_cuts_anywhere_lose_no_acknowledged_commit() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x10c4);
    // A start with a few rows, all durable.
    let start = std::sync::Arc::new(std::sync::Mutex::new(Disk::default()));
    let db = open_on(&start).expect("open");
    commit(&db, 0..5);
    drop(db);
    let image = {
        let disk = start.lock().expect("disk");
        disk.files.clone().map(|(_, durable)| durable)
    };
    for round in 0..200 {
        let disk = std::sync::Arc::new(std::sync::Mutex::new(Disk {
            files: image.clone().map(|bytes| (bytes.clone(), bytes)),
            ops_left: Some(rng.gen_range(0..600)),
            ..Disk::default()
        }));
        // Rows from 5 on, one commit each, until the power goes.
        let mut acknowledged = 5;
        if let Ok(db) = open_on(&disk) {
            for i in 5..120u64 {
                let committed = db.begin_write().ok().and_then(|txn| {
                    txn.open_table(ROWS)
                        .ok()?
                        .insert(i, value(i).as_slice())
                        .ok()?;
                    txn.commit().ok()
                });
                if committed.is_none() {
                    break;
                }
                acknowledged = i + 1;
            }
        }
        // Whatever threads were doing, the power is off now.
        disk.lock().expect("disk").cut = true;
        let durable = |disk: &std::sync::Arc<std::sync::Mutex<Disk>>, ops_left| {
            let files = disk.lock().expect("disk").files.clone();
            std::sync::Arc::new(std::sync::Mutex::new(Disk {
                files: files.map(|(_, durable)| (durable.clone(), durable)),
                ops_left,
                ..Disk::default()
            }))
        };
        // Every other round the power goes again while the next open writes the records
        // back and empties the journals (mostly among its last operations: the emptying).
        let after = if round % 2 == 1 {
            let trial = durable(&disk, None);
            drop(open_on(&trial));
            let ops = trial.lock().expect("disk").ops;
            let cut = if rng.gen_bool(0.7) {
                ops.saturating_sub(rng.gen_range(1..=4))
            } else {
                rng.gen_range(0..=ops)
            };
            let again = durable(&disk, Some(cut));
            drop(open_on(&again));
            again.lock().expect("disk").cut = true;
            durable(&again, None)
        } else {
            durable(&disk, None)
        };
        let db = open_on(&after).unwrap_or_else(|e| panic!("round {round}: reopen: {e}"));
        let txn = db.begin_read().expect("read");
        let table = txn.open_table(ROWS).expect("table");
        let present = table.len().expect("len");
        assert!(
            present == acknowledged || present == acknowledged + 1,
            "round {round}: {present} rows after {acknowledged} acknowledged"
        );
        for i in 0..present {
            assert_eq!(
                table.get(i).expect("get").map(|v| v.value().to_vec()),
                Some(value(i)),
                "round {round}: row {i}"
            );
        }
    }
}
