//! Search on real data: Debian's package descriptions as memories.

use std::path::Path;
use std::sync::Arc;

use mnemon_crdt::{MemoryEdit, MemoryId, NewMemory, Store, Timestamp};
use mnemon_identity::Keypair;
use mnemon_node::search::embed::{Embedder, HashEmbedder};
use mnemon_node::search::vector::VectorIndex;
use mnemon_node::search::{Filter, Mode, Query, SearchIndex};
use mnemon_tests::{Description, TestCli, debian_corpus};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};

fn embedder() -> Arc<dyn Embedder> {
    Arc::new(HashEmbedder::default())
}

fn memory_of(d: &Description) -> NewMemory {
    NewMemory {
        title: Some(format!("{}: {}", d.package, d.summary)),
        content: d.long.clone(),
        tags: vec!["debian".into()],
        ..NewMemory::default()
    }
}

/// A store holding the first `n` descriptions; returns their ids in corpus order.
fn store_with(dir: &tempfile::TempDir, n: usize) -> (Store, Vec<MemoryId>) {
    let corpus = debian_corpus();
    assert!(
        corpus.len() >= n,
        "only {} descriptions in the corpus",
        corpus.len()
    );
    let mut store =
        Store::open(dir.path().join("mnemon.redb"), Keypair::generate()).expect("store");
    let mut ids = Vec::with_capacity(n);
    for batch in corpus[..n].chunks(500) {
        let added = store
            .add_batch(batch.iter().map(memory_of).collect())
            .expect("add");
        ids.extend(added.into_iter().map(|m| m.id));
    }
    (store, ids)
}

/// Replaces a memory's text.
fn set_content(store: &mut Store, id: MemoryId, text: &str) {
    store
        .edit(
            id,
            &MemoryEdit {
                content: Some(text.into()),
                ..MemoryEdit::default()
            },
        )
        .expect("edit");
}

fn query(text: &str, k: usize, mode: Mode) -> Query {
    Query {
        text: text.to_owned(),
        k,
        mode,
        filter: Filter::default(),
        rerank: Vec::new(),
    }
}

fn words(text: &str) -> Vec<String> {
    let mut words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 4)
        .map(str::to_lowercase)
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

/// A known-item query: what a person remembers of a memory is its distinctive words, so
/// the query is the description's rarest word in the corpus plus 3 picked at random from its
/// next 7 rarest. (Many Debian descriptions are templates — DPDK drivers, l10n packs — that
/// differ in one word; 4 words drawn from the 8 rarest without it found 92.5%.)
fn words_from(
    d: &Description,
    df: &std::collections::HashMap<String, usize>,
    rng: &mut StdRng,
) -> Option<String> {
    let mut words = words(&d.long);
    if words.len() < 4 {
        return None;
    }
    words.sort_by_key(|w| (df.get(w).copied().unwrap_or(0), w.clone()));
    words.truncate(8);
    words[1..].shuffle(rng);
    let mut picked = words[..4].to_vec();
    picked.shuffle(rng);
    Some(picked.join(" "))
}

#[test]
fn known_item_search_over_5000_debian_descriptions() {
    const N: usize = 5_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, ids) = store_with(&dir, N);
    let index = SearchIndex::open(&dir.path().join("index"), embedder(), &store).expect("index");
    let corpus = debian_corpus();
    let mut df: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for d in &corpus[..N] {
        for w in words(&d.long) {
            *df.entry(w).or_default() += 1;
        }
    }
    let mut rng = StdRng::seed_from_u64(0xdeb1a9);
    let mut asked = 0;
    let mut found = [0usize; 3];
    let modes = [Mode::Keyword, Mode::Hybrid, Mode::Semantic];
    while asked < 200 {
        let i = rng.gen_range(0..N);
        let Some(text) = words_from(&corpus[i], &df, &mut rng) else {
            continue;
        };
        asked += 1;
        for (m, mode) in modes.iter().enumerate() {
            let hits = index
                .search(&store, &query(&text, 10, *mode))
                .expect("search");
            if hits.iter().any(|h| h.id == ids[i]) {
                found[m] += 1;
            }
        }
    }
    let rate = |n: usize| n as f64 / asked as f64;
    eprintln!(
        "known-item top-10 over {N} memories, {asked} queries: keyword {:.3}, hybrid {:.3}, semantic {:.3}",
        rate(found[0]),
        rate(found[1]),
        rate(found[2])
    );
    assert!(
        rate(found[0]) >= 0.95,
        "keyword found {:.3}",
        rate(found[0])
    );
    assert!(rate(found[1]) >= 0.95, "hybrid found {:.3}", rate(found[1]));
    // Fusion never loses to its parts.
    assert!(
        found[1] >= found[0] && found[1] >= found[2],
        "hybrid {} below keyword {} or semantic {}",
        found[1],
        found[0],
        found[2]
    );
}

fn recall_at_10(index: &VectorIndex, queries: &[Vec<f32>]) -> f64 {
    let mut total = 0.0;
    for q in queries {
        let truth: Vec<u128> = index
            .search(q, 10, true, &|_| true, &|_, _| 1.0)
            .iter()
            .map(|h| h.memory)
            .collect();
        let approx: Vec<u128> = index
            .search(q, 10, false, &|_| true, &|_, _| 1.0)
            .iter()
            .map(|h| h.memory)
            .collect();
        let hit = truth.iter().filter(|t| approx.contains(t)).count();
        total += hit as f64 / truth.len().max(1) as f64;
    }
    total / queries.len() as f64
}

#[test]
fn hnsw_recall_at_10_on_20k_vectors_before_and_after_churn() {
    const N: usize = 20_000;
    let corpus = debian_corpus();
    assert!(corpus.len() >= N + N / 10 + 200);
    let e = HashEmbedder::default();
    let embed = |d: &Description| {
        e.embed(&[&format!("{}\n\n{}", d.summary, d.long)])
            .expect("embed")
            .remove(0)
    };
    let mut index = VectorIndex::new(e.model_id(), e.dimension());
    for (i, d) in corpus[..N].iter().enumerate() {
        index.upsert(i as u128, vec![embed(d)]);
    }
    index.seal();
    // Queries: descriptions that are not in the index.
    let queries: Vec<Vec<f32>> = corpus[corpus.len() - 200..].iter().map(embed).collect();
    let before = recall_at_10(&index, &queries);

    let mut rng = StdRng::seed_from_u64(7);
    let mut order: Vec<usize> = (0..N).collect();
    order.shuffle(&mut rng);
    for &i in &order[..N / 10] {
        index.remove(i as u128);
    }
    for (j, d) in corpus[N..N + N / 10].iter().enumerate() {
        index.upsert((N + j) as u128, vec![embed(d)]);
    }
    let after = recall_at_10(&index, &queries);
    eprintln!(
        "HNSW recall@10 on {N} vectors: {before:.4}; after 10% deletes and 10% inserts: {after:.4}"
    );
    assert!(before >= 0.95, "recall@10 {before}");
    assert!(after >= 0.95, "recall@10 after churn {after}");
    // Deleted vectors never come back, in either search path.
    let deleted: std::collections::HashSet<u128> =
        order[..N / 10].iter().map(|&i| i as u128).collect();
    for q in &queries[..20] {
        for exact in [true, false] {
            assert!(
                index
                    .search(q, 50, exact, &|_| true, &|_, _| 1.0)
                    .iter()
                    .all(|h| !deleted.contains(&h.memory))
            );
        }
    }
}

#[test]
fn deletes_never_show_and_edits_are_searchable_when_the_write_returns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, ids) = store_with(&dir, 300);
    let path = dir.path().join("index");
    let mut index = SearchIndex::open(&path, embedder(), &store).expect("index");
    let target = ids[17];
    set_content(&mut store, target, "zanzibarquokka lives here now");
    index.catch_up(&store).expect("catch up");
    for mode in [Mode::Keyword, Mode::Hybrid, Mode::Semantic] {
        let hits = index
            .search(&store, &query("zanzibarquokka", 5, mode))
            .expect("search");
        assert_eq!(hits.first().map(|h| h.id), Some(target), "{mode:?}");
    }
    store.remove(&[target]).expect("remove");
    // Even before the index catches up, a deleted memory is never returned.
    for mode in [Mode::Keyword, Mode::Hybrid, Mode::Semantic] {
        let hits = index
            .search(&store, &query("zanzibarquokka", 5, mode))
            .expect("search");
        assert!(hits.iter().all(|h| h.id != target), "{mode:?}");
    }
    index.catch_up(&store).expect("catch up");
    let status = index.status(&store).expect("status");
    assert_eq!(status.pending, 0);
    assert_eq!(status.indexed, 299);
    assert_eq!(status.keyword_indexed, 299);
}

/// The built-in embedder, until `broken` is set: then every batch fails, as an
/// unreachable embedding service would.
#[derive(Debug, Default)]
struct Flaky {
    inner: HashEmbedder,
    broken: std::sync::atomic::AtomicBool,
}

impl Embedder for Flaky {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    fn embed(
        &self,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>, mnemon_node::search::embed::EmbedError> {
        if self.broken.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(mnemon_node::search::embed::EmbedError::Failed(
                "the service is unreachable".into(),
            ));
        }
        self.inner.embed(texts)
    }
}

#[test]
fn words_are_indexed_while_the_embedder_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, ids) = store_with(&dir, 50);
    let flaky = Arc::new(Flaky::default());
    let mut index =
        SearchIndex::open(&dir.path().join("index"), flaky.clone(), &store).expect("index");
    flaky
        .broken
        .store(true, std::sync::atomic::Ordering::Relaxed);
    set_content(
        &mut store,
        ids[3],
        "zanzibarquokka arrived while the model was away",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    assert!(
        index.step(&store, deadline).is_err(),
        "the vectors' failure is reported"
    );
    let last = store.last_seq().expect("seq");
    assert_eq!(index.positions().0, last, "the keyword index moved on");
    assert!(index.positions().1 < last, "the vectors did not");
    let hits = index
        .search(&store, &query("zanzibarquokka", 5, Mode::Keyword))
        .expect("search");
    assert_eq!(hits.first().map(|h| h.id), Some(ids[3]));
    // Back up: the vectors catch up.
    flaky
        .broken
        .store(false, std::sync::atomic::Ordering::Relaxed);
    index.step(&store, deadline).expect("step");
    assert_eq!(index.positions(), (last, last));
}

/// Runs the vector save that must be due (`due` says why), as the indexer does.
fn save_vectors(index: &mut SearchIndex, now: bool, due: &str) {
    let save = index.vector_save_job(now).expect("job").expect(due);
    let result = save.run();
    index.vector_saved(&save, &result);
    result.expect("save");
}

#[test]
fn deferred_commits_and_vector_saves_run_apart_from_the_index_and_then_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, ids) = store_with(&dir, 100);
    let mut index =
        SearchIndex::open(&dir.path().join("index"), embedder(), &store).expect("index");
    index.defer_commits(true);
    let found = |index: &SearchIndex, store: &Store| {
        index
            .search(store, &query("zanzibarquokka", 5, Mode::Keyword))
            .expect("search")
            .first()
            .map(|h| h.id)
    };
    let target = ids[7];
    set_content(&mut store, target, "zanzibarquokka lives here now");
    let before = index.positions().0;
    index
        .step(
            &store,
            std::time::Instant::now() + std::time::Duration::from_secs(5),
        )
        .expect("step");
    // Given to the keyword index, not committed: not searchable, and the position stays.
    assert_eq!(index.positions().0, before);
    assert_eq!(found(&index, &store), None);
    let job = index.keyword_commit_job().expect("a commit is due");
    assert_eq!(job.seq(), store.last_seq().expect("seq"));
    let result = job.run();
    index.keyword_committed(&job, &result);
    result.expect("commit");
    assert_eq!(index.positions().0, job.seq());
    assert_eq!(found(&index, &store), Some(target));
    assert!(!job.purges(), "an edit removes nothing");
    assert!(index.keyword_commit_job().is_none(), "nothing more is due");

    // A delete's commit purges; if it fails, the purge is owed to the next one.
    store.remove(&[target]).expect("remove");
    index
        .step(
            &store,
            std::time::Instant::now() + std::time::Duration::from_secs(5),
        )
        .expect("step");
    let failed = index.keyword_commit_job().expect("a commit is due");
    assert!(failed.purges());
    index.keyword_committed(
        &failed,
        &Err(mnemon_node::search::SearchError::Index("disk full".into())),
    );
    assert_eq!(
        index.positions().0,
        job.seq(),
        "a failed commit moves nothing"
    );
    // What the failed commit held is given again from the change log.
    index
        .step(
            &store,
            std::time::Instant::now() + std::time::Duration::from_secs(5),
        )
        .expect("step");
    let retry = index.keyword_commit_job().expect("still due");
    assert_eq!(retry.seq(), store.last_seq().expect("seq"));
    assert!(
        retry.purges(),
        "the failed purge is owed to the next commit"
    );
    let result = retry.run();
    index.keyword_committed(&retry, &result);
    result.expect("commit");
    assert_eq!(index.positions().0, store.last_seq().expect("seq"));
    assert_eq!(found(&index, &store), None);

    // The vectors are saved apart too: nothing was written while the caller defers, the
    // save is a job, and an index opened from what it wrote has the edit and not the
    // deleted memory.
    let path = dir.path().join("index");
    let saved_at = |path: &std::path::Path| {
        std::fs::read_dir(path)
            .expect("index dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("vectors-"))
            .map(|e| e.metadata().expect("meta").modified().expect("mtime"))
            .max()
    };
    let before = saved_at(&path);
    let other = ids[9];
    set_content(
        &mut store,
        other,
        "a quokka photographed in zanzibar at dawn",
    );
    index
        .step(
            &store,
            std::time::Instant::now() + std::time::Duration::from_secs(5),
        )
        .expect("step");
    assert_eq!(saved_at(&path), before, "nothing written meanwhile");
    save_vectors(&mut index, true, "a save is due");
    assert!(
        index.vector_save_job(true).expect("job").is_none(),
        "nothing more is due"
    );
    // A delete (from a peer, say) makes the next save due at once, not in a few seconds:
    // forgetting must reach the disk.
    let gone = ids[11];
    store.remove(&[gone]).expect("remove");
    index
        .step(
            &store,
            std::time::Instant::now() + std::time::Duration::from_secs(5),
        )
        .expect("step");
    save_vectors(&mut index, false, "due at once after a delete");
    assert!(index.vector_save_job(false).expect("job").is_none());
    // (The keyword commit jobs share the index's writer: they go with it.)
    drop((index, job, failed, retry));
    let reopened = SearchIndex::open_lagging(&path, embedder(), &store).expect("reopen");
    assert_eq!(reopened.positions().1, store.last_seq().expect("seq"));
    let hits = reopened
        .search(&store, &query("quokka zanzibar dawn", 5, Mode::Semantic))
        .expect("search");
    assert_eq!(hits.first().map(|h| h.id), Some(other));
    assert!(hits.iter().all(|h| h.id != target && h.id != gone));
}

#[test]
fn deleting_the_index_files_gives_the_same_top_10() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_with(&dir, 1_000);
    let path = dir.path().join("index");
    let texts = [
        "compression archive tool",
        "python library for parsing",
        "font",
        "kernel module firmware",
    ];
    let top = |index: &SearchIndex| -> Vec<Vec<MemoryId>> {
        texts
            .iter()
            .flat_map(|t| [Mode::Keyword, Mode::Hybrid, Mode::Semantic].map(|m| (t, m)))
            .map(|(t, m)| {
                index
                    .search(&store, &query(t, 10, m))
                    .expect("search")
                    .iter()
                    .map(|h| h.id)
                    .collect()
            })
            .collect()
    };
    let index = SearchIndex::open(&path, embedder(), &store).expect("index");
    let first = top(&index);
    assert!(first.iter().all(|hits| !hits.is_empty()));
    drop(index);
    // Reopening uses the persisted index as it is.
    let index = SearchIndex::open(&path, embedder(), &store).expect("index");
    assert_eq!(top(&index), first);
    drop(index);
    std::fs::remove_dir_all(&path).expect("remove index");
    let index = SearchIndex::open(&path, embedder(), &store).expect("rebuilt");
    assert_eq!(top(&index), first);
}

#[test]
fn search_from_the_command_line() {
    let cli = TestCli::new();
    cli.init();
    let id = cli
        .run(&[
            "add",
            "--tag",
            "garden",
            "The spare key is under the blue flower pot",
        ])
        .ok()
        .to_owned();
    cli.run(&["add", "Buy oat milk at the corner shop"]).ok();
    let hits = cli.run(&["search", "flower key", "--json"]).json();
    assert_eq!(hits[0]["id"], id.as_str());
    for field in ["id", "title", "score", "snippet", "chunk"] {
        assert!(hits[0].get(field).is_some(), "hit lacks {field}");
    }
    assert!(
        hits[0]["snippet"]
            .as_str()
            .expect("snippet")
            .contains("**flower**")
    );
    // Tags match without regard to case, by words and by meaning.
    for (tag, mode) in [
        ("garden", "hybrid"),
        ("Garden", "keyword"),
        ("GARDEN", "semantic"),
    ] {
        let tagged = cli
            .run(&["search", "milk key", "--tag", tag, "--mode", mode, "--json"])
            .json();
        assert_eq!(mnemon_tests::ids(&tagged), [id.as_str()], "{tag} {mode}");
    }
    cli.run(&["search", "   "]).fails_with("query is empty");
    cli.run(&["search", "x", "--k", "0"])
        .fails_with("k must be from 1");
    cli.run(&["search", "x", "--k", "100000"])
        .fails_with("k must be from 1");
    cli.run(&["search", "x", "--collection", "nope"])
        .fails_with("no collection named");
    cli.run(&["search", "x", "--since", "2026-13-01"])
        .fails_with("invalid time");
    let status = cli.run(&["status", "--json"]).json();
    assert_eq!(status["index"]["models"][0]["indexed"], 2);
    assert_eq!(status["index"]["models"][0]["pending"], 0);
    cli.run(&["reindex"]).ok();
    assert_eq!(
        cli.run(&["search", "flower", "--json"]).json()[0]["id"],
        id.as_str()
    );
}

/// A note as an import would read it: front matter with a title and a creation time.
fn note(vault: &Path, file: &str, title: &str, created: Timestamp, text: &str) {
    std::fs::write(
        vault.join(file),
        format!("---\ntitle: {title}\ncreated: {created}\n---\n{text}\n"),
    )
    .expect("write note");
}

#[test]
fn search_reads_what_the_query_asks() {
    let cli = TestCli::new();
    cli.init();
    let vault = tempfile::tempdir().expect("tempdir");
    let now = Timestamp::now().as_millis();
    let days_ago = |d: i64| Timestamp::from_millis(now - d * 86_400_000);
    note(
        vault.path(),
        "pizza.md",
        "Pizza dough",
        days_ago(30),
        "Flour, water, salt and yeast; rest it overnight in the fridge.",
    );
    note(
        vault.path(),
        "make.md",
        "Workshop",
        days_ago(30),
        "make a list, make a plan, make tea, make time, make notes, make it happen",
    );
    // "make" is a common word: other notes use it too.
    note(
        vault.path(),
        "soup.md",
        "Soup",
        days_ago(30),
        "Make a broth, then make it thick.",
    );
    note(
        vault.path(),
        "bed.md",
        "Mornings",
        days_ago(30),
        "Make the bed before coffee.",
    );
    note(
        vault.path(),
        "sourdough.md",
        "Starter",
        days_ago(30),
        "Sourdough starter notes from the doc, out of boredom.",
    );
    // The old risotto is the better match by words alone; the recent one is last week's.
    note(
        vault.path(),
        "old.md",
        "Risotto risotto",
        days_ago(400),
        "Cooked risotto with mushrooms, a risotto for the ages.",
    );
    note(
        vault.path(),
        "recent.md",
        "Dinner",
        days_ago(7),
        "Cooked risotto with peas.",
    );
    cli.run(&["import", vault.path().to_str().expect("utf-8")])
        .ok();
    let ids: std::collections::HashMap<String, String> = cli
        .run(&["list", "--json"])
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|m| {
            (
                m["title"].as_str().unwrap_or_default().to_owned(),
                m["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();

    // A title match beats a word said six times; question words count for nothing.
    let hits = cli.run(&["search", "how do I make pizza", "--json"]).json();
    assert_eq!(hits[0]["id"], ids["Pizza dough"].as_str(), "{hits}");
    // Whole words are marked, never pieces of words.
    for hit in hits.as_array().expect("array") {
        let snippet = hit["snippet"].as_str().expect("snippet");
        for piece in [
            "**Sourdough",
            "**doc",
            "**boredom",
            "**I**",
            "**do**",
            "**how**",
        ] {
            assert!(!snippet.contains(piece), "{piece} marked in {snippet:?}");
        }
    }
    let workshop = cli
        .run(&["search", "make", "--mode", "keyword", "--json"])
        .json();
    assert!(
        workshop[0]["snippet"]
            .as_str()
            .expect("snippet")
            .contains("**make**")
    );

    // Made-up words find nothing, in every mode, and the CLI says so.
    for mode in ["hybrid", "semantic", "keyword"] {
        let none = cli
            .run(&[
                "search",
                "florbix quandle zeptorian",
                "--mode",
                mode,
                "--json",
            ])
            .json();
        assert_eq!(none, serde_json::json!([]), "{mode}");
    }
    assert!(
        cli.run(&["search", "florbix quandle zeptorian"])
            .ok()
            .contains("no memories found")
    );

    // "last week" puts last week's memories first; an explicit --since wins over it.
    let hits = cli.run(&["search", "risotto last week", "--json"]).json();
    assert_eq!(hits[0]["id"], ids["Dinner"].as_str(), "{hits}");
    assert_eq!(hits[1]["id"], ids["Risotto risotto"].as_str(), "{hits}");
    assert!(
        hits[0]["created_at"]
            .as_str()
            .expect("created_at")
            .starts_with(&days_ago(7).to_string()[..10])
    );
    let since = days_ago(500).to_string();
    let hits = cli
        .run(&[
            "search",
            "risotto last week",
            "--since",
            &since[..10],
            "--json",
        ])
        .json();
    assert_eq!(hits[0]["id"], ids["Risotto risotto"].as_str(), "{hits}");
    // People see the date of every hit.
    let shown = cli.run(&["search", "risotto"]).ok().to_owned();
    assert!(shown.contains(&days_ago(400).to_string()[..10]), "{shown}");
}

/// Whether a keyword search for `words` finds the memory `id`.
fn finds(cli: &TestCli, words: &str, id: &str) -> bool {
    let hits = cli
        .run(&["search", words, "--mode", "keyword", "--json"])
        .json();
    hits.as_array()
        .expect("array")
        .iter()
        .any(|h| h["id"] == id)
}

#[test]
fn a_short_memory_is_found_through_what_came_before_it() {
    let cli = TestCli::new();
    cli.init();
    cli.run(&["collection", "new", "elsewhere"]).ok();
    // In another collection: never context.
    cli.run(&[
        "add",
        "--collection",
        "elsewhere",
        "Which bakery sells the rye bread?",
    ])
    .ok();
    let question = cli
        .run(&["add", "Did you go to the Radiohead concert in Lisbon?"])
        .ok()
        .to_owned();
    let answer = cli
        .run(&["add", "Yes! We danced until three in the morning."])
        .ok()
        .to_owned();
    let reply = cli
        .run(&["add", "Sounds like a perfect night."])
        .ok()
        .to_owned();
    let later = cli.run(&["add", "Anyway, back to work."]).ok().to_owned();
    for mode in ["keyword", "hybrid"] {
        let hits = cli
            .run(&[
                "search",
                "Radiohead concert Lisbon",
                "--mode",
                mode,
                "--json",
            ])
            .json();
        let ids: Vec<&str> = hits
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|h| h["id"].as_str())
            .collect();
        // The question itself first, then what followed it, found through it; a hit
        // shows the memory's own words, not its context's.
        assert_eq!(ids.first(), Some(&question.as_str()), "{mode}: {hits}");
        assert!(ids.contains(&answer.as_str()), "{mode}: {hits}");
        let shown = hits
            .as_array()
            .expect("array")
            .iter()
            .find(|h| h["id"] == answer.as_str())
            .expect("answer");
        assert_eq!(
            shown["snippet"],
            "Yes! We danced until three in the morning."
        );
        assert!(ids.contains(&reply.as_str()), "{mode}: {hits}");
        // Two memories back at most.
        if mode == "keyword" {
            assert!(!ids.contains(&later.as_str()), "{mode}: {hits}");
        }
    }
    // Nothing of another collection is context.
    let hits = cli
        .run(&["search", "rye bakery", "--mode", "keyword", "--json"])
        .json();
    assert_eq!(hits.as_array().expect("array").len(), 1, "{hits}");
    // A rebuilt index gives the same context.
    cli.run(&["reindex"]).ok();
    assert!(finds(&cli, "Radiohead Lisbon", &answer));
    // An edit reaches what follows: the old words no longer find the answer, the new do.
    cli.run(&[
        "edit",
        &question,
        "--title",
        "Portishead",
        "--content",
        "Did you see Portishead in Porto?",
    ])
    .ok();
    let hits = cli
        .run(&["search", "Radiohead", "--mode", "keyword", "--json"])
        .json();
    assert_eq!(hits, serde_json::json!([]), "{hits}");
    assert!(finds(&cli, "Portishead Porto", &answer));
    // Forgetting reaches it too: a deleted memory's words find nothing, not even the
    // memories it was context of.
    cli.run(&["rm", &question]).ok();
    for mode in ["keyword", "hybrid"] {
        let hits = cli
            .run(&["search", "Portishead Porto", "--mode", mode, "--json"])
            .json();
        assert_eq!(hits, serde_json::json!([]), "{mode}: {hits}");
    }
}

#[test]
fn a_memory_deleted_while_the_index_was_closed_leaves_no_context_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store =
        Store::open(dir.path().join("mnemon.redb"), Keypair::generate()).expect("store");
    let note = |text: &str| NewMemory {
        content: text.into(),
        ..NewMemory::default()
    };
    let added = store
        .add_batch(vec![
            note("Did you go to the Radiohead concert in Lisbon?"),
            note("Yes! We danced until three in the morning."),
        ])
        .expect("add");
    let (question, answer) = (added[0].id, added[1].id);
    let path = dir.path().join("index");
    let words = |index: &SearchIndex, store: &Store| -> Vec<MemoryId> {
        index
            .search(store, &query("Radiohead Lisbon", 10, Mode::Keyword))
            .expect("search")
            .iter()
            .map(|h| h.id)
            .collect()
    };
    let index = SearchIndex::open(&path, embedder(), &store).expect("index");
    assert_eq!(words(&index, &store), vec![question, answer]);
    drop(index);
    // Deleted while no index was open (as from a peer, before a restart): the index that
    // opens next knows it only from the change log.
    store.remove(&[question]).expect("remove");
    let index = SearchIndex::open(&path, embedder(), &store).expect("index");
    assert_eq!(words(&index, &store), Vec::<MemoryId>::new());
}
