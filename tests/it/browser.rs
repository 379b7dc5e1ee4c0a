//! The web UI in a real browser: Debian's headless chromium, driven by `playwright-core`
//! (tests/browser/ui.mjs), against the real `mnemon serve`. Screenshots are kept in
//! `target/screenshots/` for people to look at.
//!
//! Needs `chromium` (apt) and `npm ci --prefix tests/browser`; `tests/run` and `.ci/run`
//! install them. Without them this test fails and says what is missing.

use std::path::Path;
use std::process::Command;

use mnemon_tests::{ChatServer, Served, TEST_CHAT_MODEL, TestCli};

#[test]
fn the_web_ui_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("tests/browser/ui.mjs");
    let modules = root.join("tests/browser/node_modules/playwright-core");
    let chromium = std::env::var("MNEMON_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        modules.exists(),
        "playwright-core is not installed: run `npm ci --prefix tests/browser` (tests/run does)"
    );
    assert!(
        Path::new(&chromium).exists(),
        "no chromium at {chromium}: `apt-get install -y chromium` (or set MNEMON_CHROMIUM)"
    );
    let cli = TestCli::new();
    cli.init();
    // The chat page answers through a local server speaking the chat-completions protocol.
    let chat = ChatServer::start(None);
    std::fs::write(
        cli.data_dir().join("config.toml"),
        format!(
            "[chat]\nurl = \"{}\"\nmodel = \"{TEST_CHAT_MODEL}\"\n",
            chat.url()
        ),
    )
    .expect("config");
    let token = cli.run(&["token"]).ok().to_owned();
    let served = Served::start(&cli);
    let shots = root.join("target/screenshots");
    let downloads = tempfile::tempdir().expect("tempdir");
    let backup = downloads.path().join("from-the-ui.mnemonbak");
    let passphrase = "typed in the browser";
    let output = Command::new("node")
        .arg(&script)
        .env("MNEMON_URL", &served.url)
        .env("MNEMON_TOKEN", token.trim())
        .env("MNEMON_SHOTS", &shots)
        .env("MNEMON_CHROMIUM", &chromium)
        .env("MNEMON_BACKUP_OUT", &backup)
        .env("MNEMON_BACKUP_PASSPHRASE", passphrase)
        // Another node's identity, to share a collection with.
        .env(
            "MNEMON_OTHER_DID",
            mnemon_identity::Keypair::generate().did().to_string(),
        )
        .output()
        .expect("run node (is nodejs installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the browser test failed (screenshots in {}):\n{stdout}\n{stderr}",
        shots.display()
    );
    // What the browser did is in the store: the CLI (through the service) sees the six
    // memories (three notes, a task, done, and a trip plan whose wikilink found the
    // packing list written after it), the links, and the collection.
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let alpha = result["alpha"].as_str().expect("alpha");
    let beta = result["beta"].as_str().expect("beta");
    let list = cli.run(&["list", "--json"]).json();
    assert_eq!(list.as_array().map(Vec::len), Some(6), "{list}");
    let plan = list
        .as_array()
        .and_then(|all| all.iter().find(|m| m["title"] == "Trip plan"))
        .expect("the trip plan");
    let packing = list
        .as_array()
        .and_then(|all| all.iter().find(|m| m["title"] == "Packing list"))
        .expect("the packing list");
    assert_eq!(plan["links"][0]["target"], packing["id"], "{plan}");
    // The backup the status page downloaded opens with the passphrase typed there.
    let verified = cli
        .run_with(
            &[
                "backup",
                "verify",
                backup.to_str().expect("utf-8"),
                "--json",
            ],
            &[("MNEMON_BACKUP_PASSPHRASE", passphrase)],
            None,
        )
        .json();
    assert_eq!(verified["backup"]["memories"], 3, "{verified}");
    let tasks = cli.run(&["task", "list", "--json"]).json();
    // Finished (30 xp), then reopened in the browser: open again, its points given back.
    assert_eq!(
        (&tasks["open"], &tasks["xp_earned"]),
        (&serde_json::json!(1), &serde_json::json!(0)),
        "{tasks}"
    );
    assert!(
        chat.requests().iter().any(|r| r["stream"] == true),
        "the chat page asked the model"
    );
    let memory = cli.run(&["get", beta, "--json"]).json();
    assert_eq!(memory["links"][0]["target"], alpha);
    let collections = cli.run(&["collection", "list", "--json"]).json();
    assert!(collections.to_string().contains("recipes"), "{collections}");
    served.stop();
    for shot in [
        "03-memory-page",
        "04-search-as-you-type",
        "06-backlink",
        "12-phone",
        "13-graph-around",
        "15-task-done",
        "16-chat",
    ] {
        let file = shots.join(format!("{shot}.png"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 5_000, "{} is missing or empty", file.display());
    }
}
