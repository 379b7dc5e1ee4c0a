//! Search benchmark: exact-scan throughput beside the machine's memory bandwidth, and hybrid
//! search latency over Debian package descriptions stored as memories. Prints one JSON object.
//!
//! Run: `cargo bench -p mnemon-node --bench search` (after `tests/run` made
//! `target/debian-descriptions.txt`; `MNEMON_BENCH_N` sets the memory count, default 20,000).
//! Data: distinct Debian long descriptions (title "package: summary"), the built-in
//! 512-dimension hash embedder. The corpus has about 60,000; past that (`MNEMON_BENCH_N`
//! up to 100,000 and more) the memories go on with the separate paragraphs of the
//! descriptions that have several, then with the one-line summaries alone, as a notebook
//! holds long notes and short facts side by side. `MNEMON_BENCH_MODEL=DIR` (an installed `DATA/models/<id>`
//! folder) adds the sentence model's texts per second, on 1,000 descriptions cut to one
//! chunk (1,000 characters) as the index embeds them, and search latency over the same
//! memories embedded with the model (the query's embedding included; building that index
//! embeds every memory, about 15 minutes for 100,000 on 2 cores).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[path = "common/corpus.rs"]
mod corpus;

use corpus::corpus;
use mnemon_crdt::{NewMemory, Store};
use mnemon_identity::Keypair;
use mnemon_node::search::embed::{Embedder, HashEmbedder};
use mnemon_node::search::minilm::BertEmbedder;
use mnemon_node::search::vector::dot;
use mnemon_node::search::{Filter, Mode, Query, SearchIndex};

/// What a benchmark memory is made of.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Whole,
    Paragraph,
    Summary,
}

/// `n` memories (title, text, part): the whole descriptions, then paragraphs of those with
/// several (80 characters or more each), then the summaries alone.
fn memories(corpus: Vec<(String, String)>, n: usize) -> Vec<(String, String, Part)> {
    let mut out: Vec<(String, String, Part)> = corpus
        .iter()
        .map(|(t, l)| (t.clone(), l.clone(), Part::Whole))
        .collect();
    let mut seen: std::collections::HashSet<&str> =
        corpus.iter().map(|(_, l)| l.as_str()).collect();
    for (title, long) in &corpus {
        if out.len() >= n {
            break;
        }
        let paragraphs: Vec<&str> = long.split("\n\n").map(str::trim).collect();
        if paragraphs.len() < 2 {
            continue;
        }
        for (i, p) in paragraphs.iter().enumerate() {
            if p.len() >= 80 && seen.insert(p) {
                out.push((
                    format!("{title} ({})", i + 1),
                    (*p).to_owned(),
                    Part::Paragraph,
                ));
            }
        }
    }
    for (title, _) in &corpus {
        if out.len() >= n {
            break;
        }
        if let Some((package, summary)) = title.split_once(": ") {
            out.push((package.to_owned(), summary.to_owned(), Part::Summary));
        }
    }
    out.truncate(n);
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// p50 and p99 of `queries` (k = 10) in each mode.
fn latency(index: &SearchIndex, store: &Store, queries: &[String]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for mode in [Mode::Hybrid, Mode::Keyword, Mode::Semantic] {
        let mut ms: Vec<f64> = queries
            .iter()
            .map(|q| {
                let start = Instant::now();
                let query = Query {
                    text: q.clone(),
                    k: 10,
                    mode,
                    filter: Filter::default(),
                    rerank: Vec::new(),
                };
                std::hint::black_box(index.search(store, &query).expect("search"));
                start.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        out.push(serde_json::json!({
            "mode": format!("{mode:?}").to_lowercase(),
            "p50_ms": percentile(&ms, 0.5),
            "p99_ms": percentile(&ms, 0.99),
        }));
    }
    out
}

fn main() {
    let n: usize = std::env::var("MNEMON_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let corpus = memories(corpus(), n);
    let n = n.min(corpus.len());
    let descriptions = corpus.iter().filter(|m| m.2 == Part::Whole).count();
    let paragraphs = corpus.iter().filter(|m| m.2 == Part::Paragraph).count();
    let embedder = HashEmbedder::default();

    // 1. Exact scan: dot products over n vectors, one thread, beside memory bandwidth.
    let texts: Vec<String> = corpus[..n]
        .iter()
        .map(|(t, l, _)| format!("{t}\n\n{l}"))
        .collect();
    let start = Instant::now();
    let vectors: Vec<Vec<f32>> = texts
        .chunks(512)
        .flat_map(|c| {
            embedder
                .embed(&c.iter().map(String::as_str).collect::<Vec<_>>())
                .expect("embed")
        })
        .collect();
    let embed_secs = start.elapsed().as_secs_f64();
    let flat: Vec<f32> = vectors.iter().flatten().copied().collect();
    let dim = embedder.dimension();
    let query = &vectors[0];
    let rounds = 20;
    let start = Instant::now();
    let mut sink = 0f32;
    for _ in 0..rounds {
        for v in flat.chunks_exact(dim) {
            sink += dot(query, v);
        }
    }
    let scan_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    // Reading the same bytes with eight independent sums: as fast as memory delivers them.
    let mut acc = [0f32; 8];
    for _ in 0..rounds {
        for chunk in flat.chunks_exact(8) {
            for i in 0..8 {
                acc[i] += chunk[i];
            }
        }
    }
    let sum: f32 = acc.iter().sum();
    let bandwidth_secs = start.elapsed().as_secs_f64();
    std::hint::black_box((sink, sum));
    let bytes = (flat.len() * 4 * rounds) as f64;

    // 2. Hybrid search latency over n memories.
    let dir = tempfile::tempdir_in(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .expect("tempdir");
    let mut store =
        Store::open(dir.path().join("mnemon.redb"), Keypair::generate()).expect("store");
    let start = Instant::now();
    for batch in corpus[..n].chunks(1000) {
        store
            .add_batch(
                batch
                    .iter()
                    .map(|(t, l, _)| NewMemory {
                        title: Some(t.clone()),
                        content: l.clone(),
                        ..NewMemory::default()
                    })
                    .collect(),
            )
            .expect("add");
    }
    let store_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let index = SearchIndex::open(
        &dir.path().join("index"),
        Arc::new(HashEmbedder::default()),
        &store,
    )
    .expect("index");
    let index_secs = start.elapsed().as_secs_f64();
    let queries: Vec<String> = corpus[..n]
        .iter()
        .step_by((n / 200).max(1))
        .map(|(_, l, _)| {
            l.split_whitespace()
                .filter(|w| w.len() > 4)
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|q| !q.is_empty())
        .collect();
    let latencies = latency(&index, &store, &queries);
    // 3. The sentence-embedding model, if one is named: texts per second on every core,
    // and search latency over the same memories embedded with it (the query's embedding
    // included).
    let model = std::env::var_os("MNEMON_BENCH_MODEL").map(|model_dir| {
        let model = BertEmbedder::load(std::path::Path::new(&model_dir)).expect("load model");
        let start = Instant::now();
        let with_model = SearchIndex::open(
            &dir.path().join("index-model"),
            Arc::new(BertEmbedder::load(std::path::Path::new(&model_dir)).expect("load model")),
            &store,
        )
        .expect("index");
        let index_secs = start.elapsed().as_secs_f64();
        eprintln!("embedded {n} memories with the model in {index_secs:.0} s");
        let with_model_latency = latency(&with_model, &store, &queries);
        let texts: Vec<String> = corpus[..1000.min(n)]
            .iter()
            .map(|(t, l, _)| format!("{t}\n\n{}", l.chars().take(1000).collect::<String>()))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let tokens: usize = refs
            .iter()
            .map(|t| model.tokens(t).expect("tokens").len())
            .sum();
        let start = Instant::now();
        std::hint::black_box(model.embed(&refs).expect("embed"));
        let secs = start.elapsed().as_secs_f64();
        serde_json::json!({
            "model": model.model_id(),
            "index_build_secs": index_secs,
            "latency": with_model_latency,
            "texts": refs.len(),
            "mean_tokens": tokens as f64 / refs.len() as f64,
            "texts_per_sec": refs.len() as f64 / secs,
            "threads": std::thread::available_parallelism().map_or(1, usize::from),
        })
    });
    let report = serde_json::json!({
        "sentence_model": model,
        "data": format!(
            "{n} memories: {descriptions} distinct Debian package descriptions, {paragraphs} paragraphs of them, {} one-line summaries; built-in hash embedder ({dim} dimensions)",
            n - descriptions - paragraphs
        ),
        "embed_texts_per_sec": n as f64 / embed_secs,
        "exact_scan_vectors_per_sec": (n * rounds) as f64 / scan_secs,
        "exact_scan_gb_per_sec": bytes / scan_secs / 1e9,
        "memory_read_gb_per_sec": bytes / bandwidth_secs / 1e9,
        "scan_to_bandwidth_ratio": bandwidth_secs / scan_secs,
        "store_batched_adds_per_sec": n as f64 / store_secs,
        "index_build_secs": index_secs,
        "queries": queries.len(),
        "latency": latencies,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}
