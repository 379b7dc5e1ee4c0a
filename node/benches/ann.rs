//! Approximate nearest neighbours: Mnemon's HNSW graph (a patched instant-distance,
//! `node/search/src/hnsw.rs`) side by side with hnswlib, and optionally stock
//! instant-distance 0.6.1 (`MNEMON_ANN_STOCK=1`), on the same vectors, queries and ground
//! truth, one thread each.
//! Prints one JSON object: build times, recall@10 and QPS per `ef`, QPS at recall 0.95 and
//! 0.99 (interpolated between the measured points), and the ratios to hnswlib.
//!
//! Run: `cargo bench -p mnemon-node --bench ann`. Settings (environment):
//! - `MNEMON_ANN_N` base vectors (default 100,000), `MNEMON_ANN_QUERIES` (default 1,000);
//! - `MNEMON_ANN_REPEAT` (default 3): each `ef` is timed this many times on each side and
//!   the best kept, which takes out most of a shared machine's noise;
//! - `MNEMON_ANN_MODEL=DIR`: embed Debian descriptions (`target/debian-descriptions.txt`)
//!   with the sentence-embedding model in DIR (an installed `DATA/models/<id>` folder);
//!   the vectors are cached in `target/ann/`. Without it: synthetic 384-dimension unit
//!   vectors around 1,000 random centres, which the JSON says;
//! - hnswlib's half is `benches/hnswlib_side.py` (`pip install numpy hnswlib`); when
//!   python3 cannot import hnswlib, only instant-distance is reported.
//!
//! instant-distance fixes `ef_search` when it builds a graph; to sweep it without
//! rebuilding, the bench re-encodes the built graph with another `ef_search` (the first
//! field of its serde form).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "common/corpus.rs"]
mod corpus;

use instant_distance::{Builder, HnswMap, Search};
use mnemon_node::search::embed::Embedder;
use mnemon_node::search::hnsw::{Hnsw, Params, Scratch};
use mnemon_node::search::minilm::BertEmbedder;
use mnemon_node::search::vector::dot;
use serde::{Deserialize, Serialize};

/// A point for stock instant-distance: an owned vector, cosine distance of unit vectors.
#[derive(Clone, Serialize, Deserialize)]
struct Vector(Vec<f32>);

impl Vector {
    fn new(values: Vec<f32>) -> Vector {
        Vector(values)
    }
}

impl instant_distance::Point for Vector {
    fn distance(&self, other: &Vector) -> f32 {
        1.0 - dot(&self.0, &other.0)
    }
}
use serde_json::json;

const DIM: usize = 384;
/// Per-dimension noise of the synthetic vectors around their centre: a noise vector of
/// norm ≈ 1, so a point lies about 45° from its centre and clusters overlap.
const NOISE: f32 = 0.05;
const K: usize = 10;
const EFS: [usize; 12] = [10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ann")
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).expect("write vectors");
}

fn read_f32(path: &Path, dim: usize) -> Option<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    let floats: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(floats.chunks_exact(dim).map(<[f32]>::to_vec).collect())
}

/// A small deterministic generator (splitmix64) for the synthetic data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn gauss(&mut self) -> f32 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let v = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * (u + 1e-12).ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn synthetic(count: usize, rng: &mut Rng, centres: &[Vec<f32>]) -> Vec<Vec<f32>> {
    (0..count)
        .map(|_| {
            let centre = &centres[(rng.next() % centres.len() as u64) as usize];
            unit(centre.iter().map(|c| c + NOISE * rng.gauss()).collect())
        })
        .collect()
}

/// The texts to embed: each package's one-line summary ("vim: Vi IMproved - enhanced vi
/// editor"), distinct. (Whole long descriptions run to MiniLM's 256-token limit, and at
/// about 10 texts/s on two cores 100k of them would take hours.)
fn descriptions() -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    corpus::corpus()
        .into_iter()
        .map(|(title, _)| title)
        .filter(|t| seen.insert(t.clone()))
        .collect()
}

/// Base and query vectors, and what they are.
fn data(n: usize, queries: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, String) {
    let Some(model_dir) = std::env::var_os("MNEMON_ANN_MODEL") else {
        let mut rng = Rng(42);
        let centres: Vec<Vec<f32>> = (0..1000)
            .map(|_| unit((0..DIM).map(|_| rng.gauss()).collect()))
            .collect();
        let base = synthetic(n, &mut rng, &centres);
        let query = synthetic(queries, &mut rng, &centres);
        return (
            base,
            query,
            format!(
                "synthetic: {n} unit vectors, {DIM}-d, Gaussian (sigma {NOISE} per dimension) around 1,000 random centres"
            ),
        );
    };
    let model = BertEmbedder::load(Path::new(&model_dir)).expect("load model");
    let cache = target_dir().join(format!(
        "{}-summaries-{}.f32",
        model.model_id(),
        n + queries
    ));
    let all = read_f32(&cache, DIM)
        .filter(|v| v.len() == n + queries)
        .unwrap_or_else(|| {
            let texts = descriptions();
            assert!(texts.len() >= n + queries, "corpus too small");
            let start = Instant::now();
            let mut out = Vec::with_capacity(n + queries);
            for (i, batch) in texts[..n + queries].chunks(256).enumerate() {
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                out.extend(model.embed(&refs).expect("embed"));
                if i % 20 == 0 {
                    eprintln!(
                        "embedded {} in {:.0} s",
                        out.len(),
                        start.elapsed().as_secs_f64()
                    );
                }
            }
            let seconds = start.elapsed().as_secs_f64();
            eprintln!(
                "MiniLM: {} summaries in {seconds:.0} s: {:.0} texts/s",
                out.len(),
                out.len() as f64 / seconds
            );
            write_f32(&cache, &out);
            out
        });
    let (base, query) = all.split_at(n);
    (
        base.to_vec(),
        query.to_vec(),
        format!(
            "{} embeddings ({}) of {} distinct Debian package summaries (`name: one-line description`); queries: {} other summaries",
            model.model_id(),
            model.name(),
            n,
            queries
        ),
    )
}

fn ground_truth(base: &[Vec<f32>], queries: &[Vec<f32>]) -> Vec<Vec<u32>> {
    queries
        .iter()
        .map(|q| {
            let mut scored: Vec<(f32, u32)> = base
                .iter()
                .enumerate()
                .map(|(i, b)| (dot(q, b), i as u32))
                .collect();
            scored.select_nth_unstable_by(K, |a, b| b.0.total_cmp(&a.0));
            scored.truncate(K);
            scored.into_iter().map(|(_, i)| i).collect()
        })
        .collect()
}

/// The graph re-encoded with another `ef_search` (see the module documentation).
fn with_ef(encoded: &[u8], ef: usize) -> HnswMap<Vector, u32> {
    let (_, rest): (usize, &[u8]) = postcard::take_from_bytes(encoded).expect("ef prefix");
    let mut bytes = postcard::to_allocvec(&ef).expect("encode ef");
    bytes.extend_from_slice(rest);
    postcard::from_bytes(&bytes).expect("decode graph")
}

/// QPS at `target` recall, interpolated between the two measured points around it.
fn qps_at(runs: &[(usize, f64, f64)], target: f64) -> Option<f64> {
    let mut sorted: Vec<(f64, f64)> = runs.iter().map(|r| (r.1, r.2)).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let above = sorted.iter().position(|r| r.0 >= target)?;
    if above == 0 {
        return Some(sorted[0].1);
    }
    let (r0, q0) = sorted[above - 1];
    let (r1, q1) = sorted[above];
    let t = (target - r0) / (r1 - r0);
    Some(q0 + t * (q1 - q0))
}

fn main() {
    let n = env_usize("MNEMON_ANN_N", 100_000);
    let nq = env_usize("MNEMON_ANN_QUERIES", 1_000);
    let repeat = env_usize("MNEMON_ANN_REPEAT", 3).max(1);
    std::fs::create_dir_all(target_dir()).expect("target/ann");
    let (base, queries, what) = data(n, nq);
    let truth = ground_truth(&base, &queries);

    // Mnemon's graph (node/src/search/hnsw.rs), one thread, M = 16, ef_construction = 200.
    let start = Instant::now();
    let graph = Hnsw::build(DIM, base.iter().cloned(), Params::default());
    let build_s = start.elapsed().as_secs_f64();
    let mut scratch = Scratch::default();
    let mut ours = Vec::new();
    for ef in EFS {
        let mut best = f64::INFINITY;
        let mut hits = 0;
        for _ in 0..repeat {
            hits = 0;
            let start = Instant::now();
            for (q, t) in queries.iter().zip(&truth) {
                let found = graph.search(q, K, ef, &mut scratch);
                hits += found.iter().filter(|(_, id)| t.contains(id)).count();
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        ours.push((ef, hits as f64 / (nq * K) as f64, nq as f64 / best));
    }
    drop(graph);

    // Stock instant-distance (MNEMON_ANN_STOCK=1; slow to build), one thread (rayon's pool
    // of one) to match hnswlib's single thread.
    let stock = (std::env::var("MNEMON_ANN_STOCK").as_deref() == Ok("1")).then(|| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let points: Vec<Vector> = base.iter().cloned().map(Vector::new).collect();
        let values: Vec<u32> = (0..n as u32).collect();
        let start = Instant::now();
        let map: HnswMap<Vector, u32> = pool.install(|| {
            Builder::default()
                .ef_construction(200)
                .seed(7)
                .build(points, values)
        });
        let build_s = start.elapsed().as_secs_f64();
        let encoded = postcard::to_allocvec(&map).expect("encode graph");
        drop(map);
        let query_points: Vec<Vector> = queries.iter().cloned().map(Vector::new).collect();
        let mut runs = Vec::new();
        for ef in EFS {
            let map = with_ef(&encoded, ef);
            let mut search = Search::default();
            let mut hits = 0;
            let start = Instant::now();
            for (q, t) in query_points.iter().zip(&truth) {
                let found: Vec<u32> = map
                    .search(q, &mut search)
                    .take(K)
                    .map(|m| *m.value)
                    .collect();
                hits += found.iter().filter(|id| t.contains(id)).count();
            }
            let elapsed = start.elapsed().as_secs_f64();
            runs.push((ef, hits as f64 / (nq * K) as f64, nq as f64 / elapsed));
        }
        (build_s, runs)
    });

    // hnswlib on the same files.
    let dir = target_dir();
    write_f32(&dir.join("base.f32"), &base);
    write_f32(&dir.join("queries.f32"), &queries);
    let truth_bytes: Vec<u8> = truth
        .iter()
        .flatten()
        .flat_map(|i| i.to_le_bytes())
        .collect();
    std::fs::write(dir.join("truth.u32"), truth_bytes).expect("write truth");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/hnswlib_side.py");
    let theirs: Option<serde_json::Value> = Command::new("python3")
        .arg(&script)
        .arg(&dir)
        .arg(DIM.to_string())
        .arg(K.to_string())
        .arg(repeat.to_string())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok());
    let their_runs: Vec<(usize, f64, f64)> = theirs
        .as_ref()
        .and_then(|t| t["runs"].as_array())
        .map(|runs| {
            runs.iter()
                .map(|r| {
                    (
                        r["ef"].as_u64().unwrap_or(0) as usize,
                        r["recall"].as_f64().unwrap_or(0.0),
                        r["qps"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let report = json!({
        "data": what,
        "k": K,
        "threads": 1,
        "timing": format!("best of {repeat} passes over the queries per ef, each side"),
        "mnemon_hnsw": {
            "what": "node/search/src/hnsw.rs: patched instant-distance, M=16, ef_construction=200; built and walked through 8-bit codes",
            "build_s": build_s,
            "runs": ours.iter().map(|(ef, r, q)| json!({"ef": ef, "recall": r, "qps": q})).collect::<Vec<_>>(),
            "qps_at_recall_0.95": qps_at(&ours, 0.95),
            "qps_at_recall_0.99": qps_at(&ours, 0.99),
        },
        "instant_distance_stock": stock.as_ref().map(|(build_s, runs)| json!({
            "version": "0.6.1 (M=32 fixed by the crate, ef_construction=200)",
            "build_s": build_s,
            "runs": runs.iter().map(|(ef, r, q)| json!({"ef": ef, "recall": r, "qps": q})).collect::<Vec<_>>(),
            "qps_at_recall_0.95": qps_at(runs, 0.95),
            "qps_at_recall_0.99": qps_at(runs, 0.99),
        })),
        "hnswlib": theirs.as_ref().map(|t| json!({
            "params": "M=16, ef_construction=200",
            "build_s": t["build_s"],
            "runs": t["runs"],
            "qps_at_recall_0.95": qps_at(&their_runs, 0.95),
            "qps_at_recall_0.99": qps_at(&their_runs, 0.99),
        })),
        "ratios": {
            "qps_at_0.95_vs_hnswlib": ratio(qps_at(&ours, 0.95), qps_at(&their_runs, 0.95)),
            "qps_at_0.99_vs_hnswlib": ratio(qps_at(&ours, 0.99), qps_at(&their_runs, 0.99)),
            "build_time_vs_hnswlib": ratio(Some(build_s), theirs.as_ref().and_then(|t| t["build_s"].as_f64())),
        },
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}
