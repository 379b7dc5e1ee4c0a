//! Store write benchmark: durable single adds and batched adds beside redb's raw durable
//! insert rate, measured in the same run on the same disk. Prints one JSON object.
//!
//! Run: `cargo bench -p mnemon-crdt --bench store` (set `MNEMON_BENCH_DIR` to choose the disk;
//! default: a temporary folder under `target/`; `MNEMON_BENCH_N` for the memory count).
//!
//! Also: the same single adds from 50 concurrent writers through the writer thread
//! (`StoreHandle`), which group-commits them; each is acknowledged only once durable.
//!
//! Last, the backlinks of one memory that 50 others link to, among all of them: one range
//! read of the backlink table, beside the scan of every document it replaced.
//!
//! Data: memories with a 60-byte title, a ~150-byte body, two tags, the default kind; raw
//! redb rows are 24-byte keys and 150-byte values, one `Durability::Immediate` commit each.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mnemon_crdt::{MemoryDoc, NewMemory, Store, StoreHandle, Timestamp};
use mnemon_identity::Keypair;
use redb::{Database, TableDefinition};

const RAW: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw");
const RAW_META: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw-meta");
const RAW_MEMBERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw-members");
const RAW_SIGS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("raw-sigs");

fn bench_dir() -> PathBuf {
    let base = std::env::var_os("MNEMON_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp"));
    std::fs::create_dir_all(&base).expect("bench dir");
    base
}

fn memory(i: usize) -> NewMemory {
    NewMemory {
        title: Some(format!(
            "Memory number {i:08} with a title of about sixty bytes."
        )),
        content: format!(
            "Memory {i:08}: the quick brown fox jumps over the lazy dog while the store \
             keeps every word durable on disk, signed, and ready to sync. {i}"
        ),
        tags: vec!["bench".into(), format!("t{}", i % 10)],
        ..NewMemory::default()
    }
}

fn per_sec(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// Peak resident memory of this process, in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Adds, reads and edits one memory of `size` bytes of prose; reports times and the peak
/// resident memory it cost, per byte of text.
fn large_memory(store: &mut Store, size: usize) -> serde_json::Value {
    let line = "The quick brown fox jumps over the lazy dog by the river, twice a day.\n";
    let content = line.repeat(size / line.len());
    let len = content.len();
    // Reset the peak to the current level (Linux 4.0 and later).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss();
    let start = Instant::now();
    let id = store
        .add(NewMemory {
            content,
            ..NewMemory::default()
        })
        .expect("large add")
        .id;
    let add_ms = start.elapsed().as_secs_f64() * 1000.0;
    let start = Instant::now();
    let read = store.get(id).expect("get").content;
    assert_eq!(read.len(), len);
    let get_ms = start.elapsed().as_secs_f64() * 1000.0;
    let start = Instant::now();
    // The new text as a client sends it, held once (inserting into the text read would
    // double its buffer: the bench's cost, not the store's).
    let edited = ["An edit at the start.\n", &read].concat();
    drop(read);
    store
        .edit(
            id,
            &mnemon_crdt::MemoryEdit {
                content: Some(edited),
                ..Default::default()
            },
        )
        .expect("large edit");
    let edit_ms = start.elapsed().as_secs_f64() * 1000.0;
    let peak = peak_rss().saturating_sub(before);
    // Edited again: what an edited long memory costs the next time (its document holds
    // the first edit's change now).
    let again = {
        let read = store.get(id).expect("get").content;
        ["Edited a second time.\n", &read[22..]].concat()
    };
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss();
    let start = Instant::now();
    store
        .edit(
            id,
            &mnemon_crdt::MemoryEdit {
                content: Some(again),
                ..Default::default()
            },
        )
        .expect("second edit");
    let second_edit_ms = start.elapsed().as_secs_f64() * 1000.0;
    let second_peak = peak_rss().saturating_sub(before);
    serde_json::json!({
        "text_bytes": len,
        "add_ms": add_ms,
        "get_ms": get_ms,
        "edit_ms": edit_ms,
        "peak_rss_bytes": peak,
        "peak_per_text_byte": peak as f64 / len as f64,
        "second_edit_ms": second_edit_ms,
        "second_edit_peak_per_text_byte": second_peak as f64 / len as f64,
    })
}

/// glibc's tunable for the threshold above which buffers are mapped on their own.
const MMAP_THRESHOLD: &str = "MALLOC_MMAP_THRESHOLD_";

/// Runs this bench again with the allocator as the node binary sets it (`tune_allocator`
/// in `node/src/main.rs`: buffers of 1 MiB and more mapped on their own and given back
/// when freed), through glibc's environment tunable, which is read at start. Without it
/// glibc keeps freed megabyte buffers resident, and the large memories' peaks measure the
/// allocator's retention rather than what the store holds. Returns when already so.
fn allocate_as_the_node_does() {
    if std::env::var_os(MMAP_THRESHOLD).is_some() || !cfg!(target_env = "gnu") {
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().expect("this bench"))
        .args(std::env::args_os().skip(1))
        .env(MMAP_THRESHOLD, (1 << 20).to_string())
        .status()
        .expect("run the bench again");
    std::process::exit(status.code().unwrap_or(1));
}

fn main() {
    allocate_as_the_node_does();
    let allocator = match std::env::var(MMAP_THRESHOLD) {
        Ok(bytes) => format!("glibc, buffers of {bytes} bytes and more mapped on their own"),
        Err(_) => "the platform's default".to_owned(),
    };
    let n: usize = std::env::var("MNEMON_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir_in(bench_dir()).expect("tempdir");

    // 1. redb's raw durable single-insert rate.
    let raw_n = n.min(5_000);
    let raw = Database::create(dir.path().join("raw.redb")).expect("raw db");
    let value = [0xabu8; 150];
    let start = Instant::now();
    for i in 0..raw_n {
        let mut key = [0u8; 24];
        key[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let txn = raw.begin_write().expect("txn");
        txn.open_table(RAW)
            .expect("table")
            .insert(key.as_slice(), value.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let raw_elapsed = start.elapsed();
    drop(raw);

    // 1b. The same, but writing four tables per commit, as an add does (document ~550 B,
    // meta ~60 B, manifest entry, signature 64 B): what the extra tables cost in redb alone.
    let raw4 = Database::create(dir.path().join("raw4.redb")).expect("raw db");
    let doc_value = [0xcdu8; 550];
    let start = Instant::now();
    for i in 0..raw_n {
        let mut key = [0u8; 24];
        key[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let txn = raw4.begin_write().expect("txn");
        for (table, value) in [
            (RAW, &doc_value[..]),
            (RAW_META, &value[..60]),
            (RAW_MEMBERS, &[][..]),
            (RAW_SIGS, &value[..64]),
        ] {
            txn.open_table(table)
                .expect("table")
                .insert(key.as_slice(), value)
                .expect("insert");
        }
        txn.commit().expect("commit");
    }
    let raw4_elapsed = start.elapsed();
    drop(raw4);

    // 2. CPU work without storage: an automerge document built op by op and saved (what an
    // add did before it encoded the first change directly), and signing.
    let keypair = Keypair::generate();
    let did = keypair.did();
    let cpu_n = 2_000;
    let start = Instant::now();
    let mut saved_bytes = 0;
    let mut saved_docs = Vec::with_capacity(cpu_n);
    for i in 0..cpu_n {
        let (mut doc, _hash) = MemoryDoc::create(&did, &memory(i), Timestamp::now()).expect("doc");
        let saved = doc.save();
        saved_bytes += saved.len();
        saved_docs.push(saved);
    }
    let doc_elapsed = start.elapsed();
    // Loading a new memory (to edit or sync it) from a saved document, and from its one
    // change, which is what the store keeps for a new memory.
    let changes: Vec<Vec<u8>> = saved_docs
        .iter()
        .map(|saved| {
            let mut doc = MemoryDoc::load(saved, &did).expect("load");
            doc.automerge().get_changes(&[])[0].bytes().into_owned()
        })
        .collect();
    let time_loads = |all: &[Vec<u8>]| {
        let start = Instant::now();
        for bytes in all {
            std::hint::black_box(MemoryDoc::load(bytes, &did).expect("load"));
        }
        start.elapsed().as_secs_f64() * 1e6 / all.len() as f64
    };
    let (load_doc_us, load_change_us) = (time_loads(&saved_docs), time_loads(&changes));
    let start = Instant::now();
    for i in 0..cpu_n {
        std::hint::black_box(keypair.sign(&(i as u64).to_le_bytes()));
    }
    let sign_elapsed = start.elapsed();
    // What an add really does off the writer thread: validate, encode the first change
    // straight from the input, sign it (against building a document op by op, above).
    let builder = Store::open(dir.path().join("builder.redb"), keypair.clone())
        .expect("store")
        .builder();
    let start = Instant::now();
    for i in 0..cpu_n {
        std::hint::black_box(builder.prepare(&memory(i)).expect("prepare"));
    }
    let prepare_elapsed = start.elapsed();

    // 3. Durable single adds through the store, up to n memories.
    let mut store = Store::open(dir.path().join("single.redb"), keypair.clone()).expect("store");
    let start = Instant::now();
    for i in 0..n {
        store.add(memory(i)).expect("add");
    }
    let single_elapsed = start.elapsed();
    let single_file = std::fs::metadata(dir.path().join("single.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    drop(store);

    // 3b. Single adds from 50 concurrent writers through the writer thread, which
    // group-commits what is queued: each add is still acknowledged only once durable.
    let writers = 50;
    let store = Store::open(dir.path().join("grouped.redb"), keypair.clone()).expect("store");
    let handle = StoreHandle::spawn(store).expect("writer");
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                for i in (w..n).step_by(writers) {
                    handle
                        .write_blocking(move |s: &mut Store| s.add(memory(i)))
                        .expect("add");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    let grouped_elapsed = start.elapsed();
    let (groups, grouped_writes) = handle.commits();
    assert_eq!(handle.reader().count().expect("count"), n as u64);
    drop(handle);

    // 4. Batched adds (100 per transaction) up to n memories.
    let batch_size = 100;
    let mut store = Store::open(dir.path().join("batch.redb"), keypair).expect("store");
    let start = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<NewMemory> = (i..(i + batch_size).min(n)).map(memory).collect();
        i += batch.len();
        store.add_batch(batch).expect("batch");
    }
    let batch_elapsed = start.elapsed();
    assert_eq!(store.count().expect("count"), n as u64);

    // 5. Backlinks of one memory linked from 50 others.
    let target = store
        .list(&mnemon_crdt::ListFilter {
            limit: Some(1),
            ..Default::default()
        })
        .expect("list")[0]
        .id;
    let linking: Vec<NewMemory> = (0..50)
        .map(|i| NewMemory {
            links: vec![(target, "mentions".into())],
            ..memory(n + i)
        })
        .collect();
    store.add_batch(linking).expect("linking");
    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        assert_eq!(store.backlinks(target).expect("backlinks").len(), 50);
    }
    let table_ms = start.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    let start = Instant::now();
    let scans = 2;
    for _ in 0..scans {
        let all = store.list(&Default::default()).expect("list");
        let found = all.iter().filter(|m| m.links.contains_key(&target)).count();
        assert_eq!(found, 50);
    }
    let scan_ms = start.elapsed().as_secs_f64() * 1000.0 / scans as f64;

    // 6. One memory at the content limit, and one at the largest merged text: time and
    // peak resident memory above the process's level just before (Linux: the peak is
    // reset through /proc/self/clear_refs).
    let large = [
        ("at_merged_text_limit", mnemon_crdt::MAX_MERGED_TEXT_BYTES),
        ("at_content_limit", mnemon_crdt::MAX_CONTENT_BYTES),
    ]
    .map(|(name, size)| (name, large_memory(&mut store, size)));
    drop(store);

    let raw_rate = per_sec(raw_n, raw_elapsed);
    let single_rate = per_sec(n, single_elapsed);
    let batch_rate = per_sec(n, batch_elapsed);
    let grouped_rate = per_sec(n, grouped_elapsed);
    let report = serde_json::json!({
        "data": format!("{n} memories (60-byte title, ~150-byte body, 2 tags); raw redb: {raw_n} rows of 24-byte key + 150-byte value"),
        "disk": dir.path().display().to_string(),
        "raw_redb_durable_inserts_per_sec": raw_rate.round(),
        "raw_redb_commit_ms": 1000.0 / raw_rate,
        "raw_redb_four_table_commit_ms": raw4_elapsed.as_secs_f64() * 1000.0 / raw_n as f64,
        "single_adds_per_sec": single_rate.round(),
        "single_add_ms": 1000.0 / single_rate,
        "batched_adds_per_sec": batch_rate.round(),
        "grouped_single_adds_per_sec": grouped_rate.round(),
        "grouped_writers": writers,
        "grouped_commits": groups,
        "grouped_writes_per_commit": grouped_writes as f64 / groups.max(1) as f64,
        "ratio_grouped_to_raw": grouped_rate / raw_rate,
        "ratio_grouped_to_single": grouped_rate / single_rate,
        "batch_size": batch_size,
        "ratio_single_to_raw": single_rate / raw_rate,
        "ratio_batched_to_single": batch_rate / single_rate,
        "cpu_doc_build_and_save_us": doc_elapsed.as_secs_f64() * 1e6 / cpu_n as f64,
        "load_saved_doc_us": load_doc_us,
        "load_first_change_us": load_change_us,
        "cpu_sign_us": sign_elapsed.as_secs_f64() * 1e6 / cpu_n as f64,
        "cpu_prepare_us": prepare_elapsed.as_secs_f64() * 1e6 / cpu_n as f64,
        "ratio_doc_build_to_prepare": doc_elapsed.as_secs_f64() / prepare_elapsed.as_secs_f64(),
        "saved_doc_bytes_avg": saved_bytes / cpu_n,
        "single_file_bytes": single_file,
        "backlinks_ms": table_ms,
        "backlinks_by_scanning_every_document_ms": scan_ms,
        "backlinks_speedup": scan_ms / table_ms,
        "allocator": allocator,
        "large_memories": serde_json::Map::from_iter(large.map(|(k, v)| (k.to_owned(), v))),
        "goals": {"single_vs_raw": ">= 0.5", "batched_vs_single": ">= 5", "large_peak_per_text_byte": "<= 10"},
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}
