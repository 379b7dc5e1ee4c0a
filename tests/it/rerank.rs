//! Re-ranking, opt-in: a cross-encoder installed from a folder, and the chat model.

use mnemon_tests::tiny_bert::TinyBert;
use mnemon_tests::{ChatServer, Served, TEST_CHAT_MODEL, TestCli, ids};

/// Notes that all hold the word "garden", so every one is a candidate for the second
/// stage (each a title and a text of whole words the tiny model knows).
const NOTES: [(&str, &str); 8] = [
    ("tomatoes", "the garden tomatoes need water every morning"),
    ("roses", "prune the roses in the garden before spring"),
    ("shed", "the garden shed roof leaks when it rains"),
    ("compost", "turn the compost heap at the back of the garden"),
    ("party", "a garden party for the neighbours in june"),
    ("bees", "bees visit the lavender in the garden all summer"),
    ("fence", "paint the garden fence green this weekend"),
    ("pond", "the frogs came back to the garden pond"),
];

/// A node whose searches the chat model of `chat` re-ranks.
fn reranking_with(chat: &ChatServer) -> TestCli {
    let cli = TestCli::new();
    cli.init();
    std::fs::write(
        cli.data_dir().join("config.toml"),
        format!(
            "[search]\nrerank = \"llm\"\n\n[chat]\nurl = \"{}\"\nmodel = \"{TEST_CHAT_MODEL}\"\n",
            chat.url()
        ),
    )
    .expect("config");
    cli
}

fn add_notes(cli: &TestCli) -> Vec<String> {
    NOTES
        .iter()
        .map(|(title, text)| {
            cli.run(&["add", "--title", title, text])
                .ok()
                .trim()
                .to_owned()
        })
        .collect()
}

fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&str> = NOTES
        .iter()
        .flat_map(|(title, text)| std::iter::once(*title).chain(text.split_whitespace()))
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

#[test]
fn a_cross_encoder_installed_from_a_folder_orders_the_best_hits() {
    let cli = TestCli::new();
    cli.init();
    let added = add_notes(&cli);
    let model = TinyBert::generate(7, &vocabulary());
    let folder = tempfile::tempdir().expect("tempdir");
    model.write(folder.path());

    let installed = cli.run(&["model", "install", &folder.path().to_string_lossy()]);
    let said = installed.ok();
    assert!(
        said.contains("installed the cross-encoder cross-"),
        "{said}"
    );
    assert!(said.contains("[search] rerank = \"model\""), "{said}");
    // The embedder is untouched: it is not a sentence-embedding model.
    let embedder = cli.embedder();
    assert!(embedder.starts_with("mnemon-hash"), "{embedder}");

    let search = |extra: &[&str]| {
        let mut args = vec!["search", "garden", "-k", "10", "--json"];
        args.extend_from_slice(extra);
        cli.run(&args).json()
    };
    // Installed but not turned on: the ranking as it is.
    let plain = search(&[]);
    let plain_ids: Vec<String> = ids(&plain).into_iter().map(str::to_owned).collect();
    assert_eq!(plain_ids.len(), NOTES.len(), "{plain}");

    std::fs::write(
        cli.data_dir().join("config.toml"),
        "[search]\nrerank = \"model\"\n",
    )
    .expect("config");
    let reranked = search(&[]);
    let hits = reranked.as_array().expect("hits");
    assert_eq!(hits.len(), NOTES.len(), "{reranked}");
    // Each score is the model's for the query and the memory's title and text, as an
    // independent forward pass computes it, and the hits fall by it.
    let mut previous = f64::INFINITY;
    for hit in hits {
        let i = added
            .iter()
            .position(|id| hit["id"] == id.as_str())
            .expect("a memory of this test");
        let (title, text) = NOTES[i];
        let want = model.score("garden", &format!("{title}\n{text}"));
        let got = hit["score"].as_f64().expect("score");
        assert!(
            (got - want).abs() < 1e-4,
            "{title}: score {got}, the reference says {want}"
        );
        assert!(got <= previous, "scores fall: {reranked}");
        previous = got;
    }
    let reranked_ids: Vec<String> = ids(&reranked).into_iter().map(str::to_owned).collect();
    assert_ne!(reranked_ids, plain_ids, "the model orders them its own way");
    // A query can leave the second stage out.
    let off = search(&["--no-rerank"]);
    assert_eq!(ids(&off), ids(&plain));

    // A cross-encoder whose config does not match its weights is refused, and nothing
    // changes.
    let broken = tempfile::tempdir().expect("tempdir");
    model.write(broken.path());
    let config = broken.path().join("config.json");
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("\"hidden_size\":32", "\"hidden_size\":48"),
    )
    .expect("config");
    cli.run(&["model", "install", &broken.path().to_string_lossy()])
        .fails_with("does not hold a usable cross-encoder");
    assert_eq!(ids(&search(&[])), ids(&reranked));
}

#[test]
fn the_chat_model_orders_the_best_hits_when_the_owner_turns_it_on() {
    let chat = ChatServer::start(None);
    let cli = reranking_with(&chat);
    let serve = Served::start(&cli);
    add_notes(&cli);
    let search = |extra: &[&str]| {
        let mut args = vec!["search", "garden", "-k", "10", "--json"];
        args.extend_from_slice(extra);
        cli.run(&args).json()
    };
    let plain = search(&["--no-rerank"]);
    assert!(chat.requests().is_empty(), "no re-ranking asked for");
    // The test model names the passages last first: the order turns around.
    let reranked = search(&[]);
    let mut reversed = ids(&plain);
    reversed.reverse();
    assert_eq!(ids(&reranked), reversed, "{reranked}");
    let requests = chat.requests();
    assert_eq!(requests.len(), 1);
    let prompt = requests[0]["messages"][1]["content"]
        .as_str()
        .expect("prompt");
    assert!(prompt.starts_with("Query: garden\n"), "{prompt}");
    assert_eq!(prompt.matches("\n[").count(), NOTES.len(), "{prompt}");

    // An endpoint that is gone leaves the search's own order.
    drop(chat);
    assert_eq!(ids(&search(&[])), ids(&plain));
    serve.stop();
}

/// A search that waits for a re-ranking model waits off the service's async workers:
/// while the model holds more such searches than the machine has cores (each of which
/// would hold a worker), the service still answers gets, searches that re-rank nothing
/// and its health check; once the model answers, so do the held searches.
#[test]
fn searches_held_by_a_reranking_model_leave_the_service_answering() {
    const HELD: usize = 8;
    let chat = ChatServer::start(None);
    let cli = reranking_with(&chat);
    let serve = Served::start(&cli);
    let ids = add_notes(&cli);
    let token = cli.run(&["token"]).ok().trim().to_owned();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(120)))
        .build()
        .into();
    // A worker held by a search would leave these unanswered: they give up well before
    // the node gives up on the model (20 s) and lets the held searches go.
    let quick: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let get_with = |agent: &ureq::Agent, path: &str| -> (u16, serde_json::Value) {
        let mut r = agent
            .get(&format!("{}{path}", serve.url))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("get");
        (
            r.status().as_u16(),
            r.body_mut().read_json().unwrap_or_default(),
        )
    };
    let get = |path: &str| get_with(&quick, path);
    // By words alone, whose order is settled once the indexer commits them (within a second
    // or so; a hybrid order would move again as the vectors come in).
    let mut plain = serde_json::Value::Null;
    mnemon_tests::eventually(
        "every note is searchable",
        std::time::Duration::from_secs(60),
        || {
            plain = get("/api/v1/search?q=garden&mode=keyword&k=10&rerank=false").1;
            mnemon_tests::ids(&plain).len() == NOTES.len()
        },
    );
    let mut reversed: Vec<String> = mnemon_tests::ids(&plain)
        .into_iter()
        .map(str::to_owned)
        .collect();
    reversed.reverse();

    chat.hold();
    std::thread::scope(|s| {
        let held: Vec<_> = (0..HELD)
            .map(|_| s.spawn(|| get_with(&agent, "/api/v1/search?q=garden&mode=keyword&k=10")))
            .collect();
        mnemon_tests::eventually(
            "every held search asked the model",
            std::time::Duration::from_secs(10),
            || chat.requests().len() >= HELD,
        );
        // Each held search is inside the service now, waiting for the model.
        let (status, memory) = get(&format!("/api/v1/memories/{}", ids[0]));
        assert_eq!(
            (status, memory["id"].as_str()),
            (200, Some(ids[0].as_str()))
        );
        let (status, unranked) = get("/api/v1/search?q=garden&mode=keyword&k=10&rerank=false");
        assert_eq!(status, 200, "{unranked}");
        assert_eq!(mnemon_tests::ids(&unranked), mnemon_tests::ids(&plain));
        let (status, _) = get("/health/live");
        assert_eq!(status, 200);
        chat.release();
        for search in held {
            let (status, hits) = search.join().expect("held search");
            assert_eq!(status, 200, "{hits}");
            assert_eq!(mnemon_tests::ids(&hits), reversed, "re-ranked: {hits}");
        }
    });
    serve.stop();
}
