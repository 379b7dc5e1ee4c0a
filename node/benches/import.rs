//! Import and export benchmark: a generated Obsidian-style vault (front matter, inline
//! tags, four wikilinks a note, six folders) imported into a node in this process, the
//! way `mnemon import` does it (bulk: indexes caught up once at the end). Prints one JSON
//! object.
//!
//! Run: `cargo bench -p mnemon-node --bench import` (`MNEMON_BENCH_N` sets the note count,
//! default 5,000). The anchor is the same notes written one by one with the indexes kept
//! current after every write, as the API does for a single memory: the ratio says what
//! bulk import buys. Also: re-import of the unchanged vault, export (Markdown + JSON dump)
//! and import of the dump into a fresh node.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use mnemon_api::Api;
use mnemon_api::CreateMemory;
use mnemon_crdt::Store;
use mnemon_identity::Keypair;
use mnemon_node::app::Service;
use mnemon_node::import::{ImportOptions, export, import};
use mnemon_node::search::embed::HashEmbedder;

fn node(dir: &Path) -> Service {
    std::fs::create_dir_all(dir).expect("data folder");
    let store = Store::open(dir.join("mnemon.redb"), Keypair::generate()).expect("store");
    let service = Service::open(
        store,
        &dir.join("index"),
        Box::new(|| Ok(Arc::new(HashEmbedder::default()) as _)),
        "cli",
    )
    .expect("service");
    service.load_index().expect("index");
    service
}

fn note(i: usize, n: usize) -> String {
    format!(
        "---\ntags: [alpha, beta-{}]\ncreated: 2024-01-{:02}\n---\n# Note {i}\n\nBody of note {i} about gardens, kettles and invoices. #inline{}\nSee [[Note {}]], [[Note {}|that]] and [[Note {}#part]].\n",
        i % 10,
        i % 28 + 1,
        i % 5,
        (i + 1) % n,
        (i * 7 + 3) % n,
        (i * 13 + 5) % n
    )
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

fn main() {
    let n: usize = std::env::var("MNEMON_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5_000);
    let work = tempfile::tempdir().expect("tempdir");
    let vault = work.path().join("vault");
    let folders = ["", "a", "a/b", "c", "d/e", "d/e/f"];
    for i in 0..n {
        let dir = vault.join(folders[i % folders.len()]);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(format!("Note {i}.md")), note(i, n)).expect("note");
    }
    let options = ImportOptions::default();

    // Bulk import, as `mnemon import` runs it.
    let a_dir = work.path().join("a");
    let a = node(&a_dir);
    let (summary, import_secs) = timed(|| {
        a.set_bulk(true);
        let summary = import(&a, &vault, &options).expect("import");
        a.set_bulk(false);
        summary
    });
    assert_eq!(summary.imported, n);
    let (again, reimport_secs) = timed(|| import(&a, &vault, &options).expect("re-import"));
    assert_eq!(again.unchanged, n);
    let out = work.path().join("export");
    let (exported, export_secs) = timed(|| export(&a, &out, None).expect("export"));
    assert_eq!(exported.memories, n);
    let c = node(&work.path().join("c"));
    let (dump, dump_secs) = timed(|| {
        c.set_bulk(true);
        let summary = import(&c, &out.join("mnemon-export.json"), &options).expect("dump");
        c.set_bulk(false);
        summary
    });
    assert_eq!(dump.imported, n);

    // The anchor: the same notes one by one, indexes current after each write.
    let b = node(&work.path().join("b"));
    let (_, one_by_one_secs) = timed(|| {
        for i in 0..n {
            b.create(CreateMemory {
                title: Some(format!("Note {i}")),
                content: note(i, n),
                ..CreateMemory::default()
            })
            .expect("create");
        }
    });

    let rate = |secs: f64| (n as f64 / secs).round();
    println!(
        "{}",
        serde_json::json!({
            "data": format!("{n} generated Markdown notes, ~300 bytes, front matter, 3 wikilinks and 1 inline tag each, 6 folders; built-in embedder"),
            "import_notes_per_s": rate(import_secs),
            "import_secs": import_secs,
            "links": summary.links,
            "reimport_unchanged_notes_per_s": rate(reimport_secs),
            "export_notes_per_s": rate(export_secs),
            "dump_import_notes_per_s": rate(dump_secs),
            "anchor_one_by_one_indexed_notes_per_s": rate(one_by_one_secs),
            "import_vs_anchor": (one_by_one_secs / import_secs * 100.0).round() / 100.0,
        })
    );
}
