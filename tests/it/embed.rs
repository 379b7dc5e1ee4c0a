//! The OpenAI-compatible embeddings client against a local server speaking that protocol.

use mnemon_node::search::embed::Embedder;
use mnemon_node::search::openai::OpenAiEmbedder;
use mnemon_tests::{EmbeddingServer, TEST_EMBED_MODEL, TestCli};

#[test]
fn embeds_in_batches_with_the_key_and_unit_vectors() {
    let server = EmbeddingServer::start(Some("sk-test"));
    let embedder = OpenAiEmbedder::connect(&server.url(), TEST_EMBED_MODEL, Some("sk-test".into()))
        .expect("connect");
    assert_eq!(embedder.dimension(), 16);
    assert!(embedder.model_id().starts_with("openai:test-embed@"));
    let after_probe = server.requests();
    let texts: Vec<String> = (0..100).map(|i| format!("memory number {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = embedder.embed(&refs).expect("embed");
    assert_eq!(vectors.len(), 100);
    assert_eq!(
        server.requests() - after_probe,
        2,
        "100 texts go in batches of 64"
    );
    for v in &vectors {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    assert_eq!(
        embedder.embed(&["memory number 5"]).expect("embed")[0],
        vectors[5]
    );
    // The key never shows in debug output.
    assert!(!format!("{embedder:?}").contains("sk-test"));
}

#[test]
fn errors_name_the_problem() {
    let mut server = EmbeddingServer::start(Some("sk-test"));
    let err =
        OpenAiEmbedder::connect(&server.url(), TEST_EMBED_MODEL, Some("wrong".into())).unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    let err = OpenAiEmbedder::connect(&server.url(), "no-such-model", Some("sk-test".into()))
        .unwrap_err();
    assert!(
        err.to_string().contains("404") && err.to_string().contains("model not found"),
        "{err}"
    );
    let err = OpenAiEmbedder::connect("ftp://example", TEST_EMBED_MODEL, None).unwrap_err();
    assert!(err.to_string().contains("http://"), "{err}");
    let url = server.url();
    server.stop();
    let err = OpenAiEmbedder::connect(&url, TEST_EMBED_MODEL, Some("sk-test".into())).unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[test]
fn the_node_searches_with_a_configured_endpoint() {
    let mut server = EmbeddingServer::start(Some("sk-test"));
    let cli = TestCli::new();
    cli.init();
    std::fs::write(
        cli.data_dir().join("config.toml"),
        format!(
            "[embedder]\nkind = \"openai\"\nurl = \"{}\"\nmodel = \"{TEST_EMBED_MODEL}\"\napi_key_env = \"TEST_EMBED_KEY\"\n",
            server.url()
        ),
    )
    .expect("config");
    let env = [("TEST_EMBED_KEY", "sk-test")];
    // (In this order, the budget note has no context: the server's 16-dimension "model"
    // is too coarse to tell a note from its context.)
    cli.run_with(&["add", "quarterly budget spreadsheet"], &env, None)
        .ok();
    let id = cli
        .run_with(&["add", "pelicans glide over the harbour"], &env, None)
        .ok()
        .to_owned();
    let hits = cli
        .run_with(
            &["search", "pelicans harbour", "--mode", "semantic", "--json"],
            &env,
            None,
        )
        .json();
    assert_eq!(hits[0]["id"], id.as_str());
    let status = cli.run_with(&["status", "--json"], &env, None).json();
    let model = status["index"]["models"][0]["model"]
        .as_str()
        .expect("model")
        .to_owned();
    assert!(model.starts_with("openai:test-embed@"), "{model}");
    assert_eq!(status["index"]["models"][0]["indexed"], 2);
    // Without the key variable: a clear error.
    cli.run(&["search", "pelicans"])
        .fails_with("TEST_EMBED_KEY");
    server.stop();
    cli.run_with(&["search", "pelicans"], &env, None)
        .fails_with("unreachable");
    // Nothing was lost, and deleting still works while the endpoint is down.
    assert_eq!(cli.count(), 2);
    let run = cli.run_with(&["rm", &id], &env, None);
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stderr.contains("index will forget later"),
        "{}",
        run.stderr
    );
    assert_eq!(cli.count(), 1);
}
