//! The engine through a real `mnemon serve`: concurrent writers group-committed, a `kill -9`
//! in the middle of them, read-your-writes with `after`, and the indexes following the
//! store's change log until all three agree.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mnemon_tests::{Served, TestCli, eventually};
use serde_json::{Value, json};

const WRITERS: usize = 16;

fn new_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

fn get(agent: &ureq::Agent, url: &str, token: &str) -> (u16, Value) {
    let mut r = agent
        .get(url)
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("get");
    let status = r.status().as_u16();
    (status, r.body_mut().read_json().unwrap_or(Value::Null))
}

/// Adds a memory; its id and seq, or `None` if the service did not acknowledge it.
fn add(agent: &ureq::Agent, url: &str, token: &str, content: &str) -> Option<(String, u64)> {
    let mut r = agent
        .post(&format!("{url}/api/v1/memories"))
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(json!({ "content": content }))
        .ok()?;
    if r.status() != 201 {
        return None;
    }
    let v: Value = r.body_mut().read_json().ok()?;
    Some((v["id"].as_str()?.to_owned(), v["seq"].as_u64()?))
}

/// Waits until the store, the keyword index and the vector index hold `n` memories.
fn indexes_agree(agent: &ureq::Agent, url: &str, token: &str, n: u64) -> Value {
    let mut last = Value::Null;
    eventually("the indexes to catch up", Duration::from_secs(120), || {
        let (status, body) = get(agent, &format!("{url}/api/v1/status"), token);
        assert_eq!(status, 200, "{body}");
        last = body;
        last["memories"] == n
            && last["index"]["keyword_indexed"] == n
            && last["index"]["models"][0]["indexed"] == n
            && last["index"]["lag_changes"] == 0
    });
    last
}

#[test]
fn sixteen_writers_then_a_kill_9_lose_nothing_and_the_indexes_follow_the_log() {
    let cli = TestCli::new();
    cli.init();
    let served = Served::start(&cli);
    let token = cli.run(&["token"]).ok().to_owned();
    let url = served.url.clone();

    // 16 concurrent writers, every add acknowledged with its change-log position.
    let per_writer = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                let agent = new_agent();
                (0..per_writer)
                    .map(|i| {
                        add(
                            &agent,
                            &url,
                            &token,
                            &format!("writer {w} note {i} zebrafish"),
                        )
                        .expect("acknowledged")
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<(String, u64)> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    let n = (WRITERS * per_writer) as u64;
    assert_eq!(acked.len() as u64, n);
    let zebrafish: Vec<String> = acked.iter().map(|(id, _)| id.clone()).collect();
    let mut seqs: Vec<u64> = acked.iter().map(|(_, s)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len() as u64, n, "every write has its own position");

    // Read-your-writes: a search after a write's position finds it.
    let agent = new_agent();
    let (id, seq) = add(&agent, &url, &token, "quokka sighting at the harbour").expect("add");
    let (status, hits) = get(
        &agent,
        &format!("{url}/api/v1/search?q=quokka&mode=keyword&after={seq}"),
        &token,
    );
    assert_eq!(status, 200, "{hits}");
    assert_eq!(hits[0]["id"], id.as_str(), "{hits}");
    acked.push((id, seq));
    // A position beyond the store's is refused, not waited for.
    let (status, _) = get(
        &agent,
        &format!("{url}/api/v1/search?q=quokka&after={}", seq + 1_000_000),
        &token,
    );
    assert_eq!(status, 422);
    let status = indexes_agree(&agent, &url, &token, n + 1);
    assert!(status["index"]["seq"].as_u64() >= Some(seq), "{status}");

    // Writers again, and `kill -9` while they run.
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let more = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (url, token) = (url.clone(), token.clone());
            let (stop, count, more) = (stop.clone(), count.clone(), more.clone());
            std::thread::spawn(move || {
                let agent = new_agent();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    match add(&agent, &url, &token, &format!("second run {w} {i}")) {
                        Some(acked) => {
                            more.lock().expect("lock").push(acked);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        None => break,
                    }
                    i += 1;
                }
            })
        })
        .collect();
    eventually("writes in flight", Duration::from_secs(120), || {
        count.load(Ordering::Relaxed) >= 200
    });
    drop(served); // SIGKILL, mid-stream
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    acked.extend(more.lock().expect("lock").drain(..));

    // After a restart every acknowledged id is there, and the indexes catch up to agree.
    let served = Served::start(&cli);
    let url = served.url.clone();
    for (id, _) in &acked {
        let (status, body) = get(&agent, &format!("{url}/api/v1/memories/{id}"), &token);
        assert_eq!(status, 200, "acknowledged {id} was lost: {body}");
    }
    let (_, status) = get(&agent, &format!("{url}/api/v1/status"), &token);
    let total = status["memories"].as_u64().expect("memories");
    assert!(total >= acked.len() as u64, "{total} < {}", acked.len());
    indexes_agree(&agent, &url, &token, total);
    let (status, hits) = get(
        &agent,
        &format!("{url}/api/v1/search?q=zebrafish&mode=keyword&k=1000"),
        &token,
    );
    assert_eq!(status, 200);
    // Every note with the word is found, and holds it; a note written just after one may be
    // found too, through its context (see mnemon_search::context), without the word.
    let hits = hits.as_array().expect("hits");
    let found: std::collections::HashSet<&str> =
        hits.iter().filter_map(|h| h["id"].as_str()).collect();
    assert!(zebrafish.iter().all(|id| found.contains(id.as_str())));
    let holding = hits
        .iter()
        .filter(|h| {
            h["snippet"]
                .as_str()
                .is_some_and(|s| s.contains("**zebrafish**"))
        })
        .count();
    assert_eq!(holding as u64, n);
    served.stop();
}
