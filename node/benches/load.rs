//! Load on `mnemon serve`: the real binary in its own process on 127.0.0.1, and this
//! process as the load generator: `MNEMON_LOAD_CLIENTS` clients (default 50), each on its
//! own connection, for `MNEMON_LOAD_SECS` seconds (default 30) or `MNEMON_LOAD_REQUESTS`
//! requests in all (default 200,000), whichever comes first. The mix per client: 40%
//! adds, 40% gets of an id it added, 20% keyword-and-meaning searches. Afterwards every
//! acknowledged id is read back. Prints one JSON object: throughput, p50/p99 per kind,
//! errors, lost ids, and the add rate beside the store benchmark's single durable adds
//! (`MNEMON_STORE_ADDS_PER_SEC`, if given, from `cargo bench -p mnemon-crdt --bench store`).
//!
//! Run: `cargo bench -p mnemon-node --bench load`. Data: short generated notes (a title
//! and ~100 bytes from a fixed vocabulary), the built-in embedder.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const WORDS: [&str; 24] = [
    "garden",
    "invoice",
    "kettle",
    "meeting",
    "rust",
    "paper",
    "trip",
    "doctor",
    "budget",
    "recipe",
    "bicycle",
    "lecture",
    "library",
    "holiday",
    "password",
    "garage",
    "concert",
    "insurance",
    "plumber",
    "birthday",
    "project",
    "review",
    "market",
    "window",
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Client {
    added: Vec<String>,
    add_ms: Vec<f64>,
    get_ms: Vec<f64>,
    search_ms: Vec<f64>,
    errors: usize,
}

fn main() {
    let clients = env_usize("MNEMON_LOAD_CLIENTS", 50);
    let secs = env_usize("MNEMON_LOAD_SECS", 30);
    let max_requests = env_usize("MNEMON_LOAD_REQUESTS", 200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_mnemon");
    let data = dir.path().join("data");
    let status = Command::new(bin)
        .args(["init"])
        .env("MNEMON_DATA_DIR", &data)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("init");
    assert!(status.success());
    let mut server = Command::new(bin)
        .args(["serve", "--http", "127.0.0.1:0", "--no-p2p"])
        .env("MNEMON_DATA_DIR", &data)
        .env("MNEMON_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("line").expect("read");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("url")
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(data.join("api-token"))
        .expect("token")
        .trim()
        .to_owned();

    let issued = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs as u64);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let url = url.clone();
            let token = token.clone();
            let issued = issued.clone();
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build()
                    .new_agent();
                let auth = format!("Bearer {token}");
                let mut client = Client {
                    added: Vec::new(),
                    add_ms: Vec::new(),
                    get_ms: Vec::new(),
                    search_ms: Vec::new(),
                    errors: 0,
                };
                let mut n: u64 = c as u64 * 7919;
                while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_requests {
                    n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let pick = (n >> 33) % 10;
                    let word = |k: usize| WORDS[(n >> (8 + k * 5)) as usize % WORDS.len()];
                    let start = Instant::now();
                    if pick < 4 || client.added.is_empty() {
                        let body = json!({
                            "title": format!("{} {} {}", word(0), word(1), n % 1000),
                            "content": format!("Remember the {} for the {} before the {} and the {}; client {c}.",
                                word(2), word(3), word(4), word(5)),
                            "tags": [word(6)],
                        });
                        match agent.post(&format!("{url}/api/v1/memories")).header("Authorization", &auth).send_json(&body) {
                            Ok(mut r) if r.status() == 201 => {
                                let v: Value = r.body_mut().read_json().unwrap_or_default();
                                if let Some(id) = v["id"].as_str() {
                                    client.added.push(id.to_owned());
                                }
                                client.add_ms.push(start.elapsed().as_secs_f64() * 1e3);
                            }
                            _ => client.errors += 1,
                        }
                    } else if pick < 8 {
                        let id = &client.added[(n >> 40) as usize % client.added.len()];
                        match agent.get(&format!("{url}/api/v1/memories/{id}")).header("Authorization", &auth).call() {
                            Ok(mut r) if r.status() == 200 => {
                                let _ = r.body_mut().read_to_string();
                                client.get_ms.push(start.elapsed().as_secs_f64() * 1e3);
                            }
                            _ => client.errors += 1,
                        }
                    } else {
                        let q = format!("{}%20{}", word(0), word(1));
                        match agent.get(&format!("{url}/api/v1/search?q={q}&k=10")).header("Authorization", &auth).call() {
                            Ok(mut r) if r.status() == 200 => {
                                let _ = r.body_mut().read_to_string();
                                client.search_ms.push(start.elapsed().as_secs_f64() * 1e3);
                            }
                            _ => client.errors += 1,
                        }
                    }
                }
                client
            })
        })
        .collect();
    let results: Vec<Client> = handles
        .into_iter()
        .map(|h| h.join().expect("client"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();

    // Every acknowledged id must be readable.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let auth = format!("Bearer {token}");
    let acknowledged: Vec<&String> = results.iter().flat_map(|c| &c.added).collect();
    let lost = acknowledged
        .iter()
        .filter(|id| {
            agent
                .get(&format!("{url}/api/v1/memories/{id}"))
                .header("Authorization", &auth)
                .call()
                .map_or(true, |r| r.status() != 200)
        })
        .count();
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();

    let mut summary = serde_json::Map::new();
    let mut total = 0;
    for (name, pick) in [
        ("add", (|c: &Client| &c.add_ms) as fn(&Client) -> &Vec<f64>),
        ("get", |c: &Client| &c.get_ms),
        ("search", |c: &Client| &c.search_ms),
    ] {
        let mut ms: Vec<f64> = results
            .iter()
            .flat_map(|c| pick(c).iter().copied())
            .collect();
        ms.sort_by(f64::total_cmp);
        total += ms.len();
        summary.insert(
            name.to_owned(),
            json!({
                "requests": ms.len(),
                "per_sec": ms.len() as f64 / elapsed,
                "p50_ms": percentile(&ms, 0.5),
                "p99_ms": percentile(&ms, 0.99),
            }),
        );
    }
    let adds_per_sec = summary["add"]["per_sec"].as_f64().unwrap_or(0.0);
    let store = std::env::var("MNEMON_STORE_ADDS_PER_SEC")
        .ok()
        .and_then(|s| s.parse::<f64>().ok());
    let report = json!({
        "data": "generated notes (title + ~100 bytes, one tag), built-in embedder, fresh data folder",
        "clients": clients,
        "seconds": elapsed,
        "requests": total,
        "requests_per_sec": total as f64 / elapsed,
        "errors": results.iter().map(|c| c.errors).sum::<usize>(),
        "acknowledged_adds": acknowledged.len(),
        "lost": lost,
        "by_kind": summary,
        "store_single_adds_per_sec": store,
        "api_adds_vs_store_single_adds": store.map(|s| adds_per_sec / s),
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("json"));
}
