//! The real `mnemon` binary on temporary data folders.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use mnemon_tests::{Served, TestCli, count_in_files};

#[test]
fn uninitialised_folder_is_reported() {
    let cli = TestCli::new();
    for args in [
        &["list"][..],
        &["id"],
        &["add", "x"],
        &["get", "01M7ZZPXKC9A8FC6AQB3BWBE1N"],
    ] {
        cli.run(args).fails_with("not initialised");
    }
}

#[test]
fn init_twice_keeps_the_identity() {
    let cli = TestCli::new();
    let did = cli.init();
    assert!(did.starts_with("did:key:z6Mk"), "{did}");
    let again = cli.run(&["init"]);
    assert_eq!(again.ok(), did);
    assert!(
        again.stderr.contains("already initialised"),
        "{}",
        again.stderr
    );
    assert_eq!(cli.run(&["id"]).ok(), did);
    assert_eq!(cli.run(&["id", "--json"]).json()["did"], did.as_str());
    // The API token is made at init, kept by a second init, replaced by --rotate.
    let token = cli.run(&["token"]).ok().to_owned();
    assert!(token.starts_with("mnm_") && token.len() == 68, "{token}");
    cli.run(&["init"]).ok();
    assert_eq!(cli.run(&["token"]).ok(), token);
    let rotated = cli.run(&["token", "--rotate"]).ok().to_owned();
    assert_ne!(rotated, token);
    assert_eq!(cli.run(&["token"]).ok(), rotated);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for (file, mode) in [
            ("identity.key", 0o600),
            ("mnemon.redb", 0o600),
            ("api-token", 0o600),
        ] {
            let meta = std::fs::metadata(cli.data_dir().join(file)).expect("meta");
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
        let meta = std::fs::metadata(cli.data_dir()).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o700, "data folder");
    }
}

#[test]
fn data_dir_flag_wins_over_the_environment() {
    let cli = TestCli::new();
    let other = tempfile::tempdir().expect("tempdir");
    let flag_dir = other.path().join("elsewhere");
    let flag_dir = flag_dir.to_str().expect("utf-8");
    cli.run(&["--data-dir", flag_dir, "init"]).ok();
    assert!(other.path().join("elsewhere/identity.key").exists());
    assert!(!cli.data_dir().exists());
}

#[test]
fn add_get_list_edit_rm() {
    let cli = TestCli::new();
    let did = cli.init();
    let id = cli
        .run(&[
            "add",
            "--title",
            "Milk",
            "--tag",
            "shopping",
            "-t",
            "#home",
            "--kind",
            "task",
            "--importance",
            "0.8",
            "Buy oat milk",
        ])
        .ok()
        .to_owned();
    let memory = cli.run(&["get", &id, "--json"]).json();
    assert_eq!(memory["id"], id.as_str());
    assert_eq!(memory["title"], "Milk");
    assert_eq!(memory["content"], "Buy oat milk");
    assert_eq!(memory["tags"], serde_json::json!(["home", "shopping"]));
    assert_eq!(memory["kind"], "task");
    assert_eq!(memory["importance"], 0.8);
    assert_eq!(memory["author"], did.as_str());
    assert!(memory["created_at"].as_str().expect("time").ends_with('Z'));

    let human = cli.run(&["get", &id]).ok().to_owned();
    assert!(
        human.starts_with("Milk") && human.contains("Buy oat milk"),
        "{human}"
    );

    let from_stdin = cli.run_with(&["add", "--json", "-"], &[], Some(b"from standard input\n"));
    let second = from_stdin.json()["id"].as_str().expect("id").to_owned();
    assert_eq!(
        cli.run(&["get", &second, "--json"]).json()["content"],
        "from standard input\n"
    );

    let list = cli.run(&["list", "--json"]).json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2);
    for field in [
        "id",
        "title",
        "content",
        "tags",
        "kind",
        "importance",
        "created_at",
        "updated_at",
        "author",
        "collection",
    ] {
        assert!(list[0].get(field).is_some(), "list item lacks {field}");
    }
    let tagged = cli.run(&["list", "--tag", "shopping", "--json"]).json();
    assert_eq!(tagged.as_array().expect("array").len(), 1);
    let limited = cli.run(&["list", "--limit", "1", "--json"]).json();
    assert_eq!(limited.as_array().expect("array").len(), 1);

    cli.run(&[
        "edit",
        &id,
        "--content",
        "Buy soy milk",
        "--add-tag",
        "urgent",
        "--rm-tag",
        "home",
    ])
    .ok();
    let edited = cli.run(&["get", &id, "--json"]).json();
    assert_eq!(edited["content"], "Buy soy milk");
    assert_eq!(edited["tags"], serde_json::json!(["shopping", "urgent"]));
    assert_eq!(edited["title"], "Milk");
    assert_ne!(edited["updated_at"], memory["updated_at"]);
    cli.run_with(&["edit", &id, "--content", "-"], &[], Some(b"piped edit"))
        .ok();
    assert_eq!(
        cli.run(&["get", &id, "--json"]).json()["content"],
        "piped edit"
    );

    assert_eq!(cli.run(&["rm", &id]).ok(), format!("deleted {id}"));
    cli.run(&["get", &id]).fails_with("was deleted");
    cli.run(&["rm", &id]).fails_with("was deleted");
    assert_eq!(cli.count(), 1);
}

#[test]
fn collections_by_name_and_id() {
    let cli = TestCli::new();
    cli.init();
    let work = cli.run(&["collection", "new", "work"]).ok().to_owned();
    cli.run(&["collection", "new", "work"])
        .fails_with("exists already");
    let by_name = cli
        .run(&["add", "--collection", "work", "standup"])
        .ok()
        .to_owned();
    let by_id = cli.run(&["add", "-c", &work, "retro"]).ok().to_owned();
    cli.run(&["add", "private thought"]).ok();
    let in_work = cli.run(&["list", "-c", "work", "--json"]).json();
    let mut ids = mnemon_tests::ids(&in_work);
    ids.sort();
    let mut expected = vec![by_name.as_str(), by_id.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    for m in in_work.as_array().expect("array") {
        assert_eq!(m["collection"], work.as_str());
    }
    let collections = cli.run(&["collection", "list", "--json"]).json();
    let collections = collections.as_array().expect("array");
    assert_eq!(collections.len(), 2);
    let default = collections
        .iter()
        .find(|c| c["default"] == true)
        .expect("default");
    assert_eq!(default["memories"], 1);
    cli.run(&["add", "--collection", "nope", "x"])
        .fails_with("no collection named");
    cli.run(&["list", "--collection", "nope"])
        .fails_with("no collection named");
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let cli = TestCli::new();
    cli.init();
    cli.run(&["add", ""]).fails_with("text is empty");
    cli.run_with(&["add", "-"], &[], Some(b"  \n"))
        .fails_with("text is empty");
    cli.run(&["add", "--importance", "2", "x"])
        .fails_with("invalid importance");
    cli.run(&["add", "--kind", "Not A Kind", "x"])
        .fails_with("invalid kind");
    cli.run(&["add", "--tag", "two words", "x"])
        .fails_with("invalid tag");
    cli.run(&["get", "01M7ZZPXKC9A8FC6AQB3BWBE1N"])
        .fails_with("no memory with id");
    cli.run(&["get", "not-an-id"])
        .fails_with("not a valid memory id");
    cli.run(&["rm", "01M7ZZPXKC9A8FC6AQB3BWBE1N"])
        .fails_with("no memory with id");
    let id = cli.run(&["add", "fine"]).ok().to_owned();
    cli.run(&["edit", &id]).fails_with("nothing to change");
    cli.run(&["edit", &id, "--content", " "])
        .fails_with("text is empty");
    // Nothing was lost along the way.
    assert_eq!(cli.run(&["get", &id, "--json"]).json()["content"], "fine");
}

#[test]
fn sealed_key_needs_the_right_passphrase() {
    let cli = TestCli::new();
    let good = [("MNEMON_PASSPHRASE", "correct horse battery staple")];
    let did = cli
        .run_with(&["init", "--passphrase"], &good, None)
        .ok()
        .to_owned();
    // The DID is readable without the passphrase.
    assert_eq!(cli.run(&["id"]).ok(), did);
    let id = cli
        .run_with(&["add", "sealed memory"], &good, None)
        .ok()
        .to_owned();
    cli.run_with(&["get", &id], &[("MNEMON_PASSPHRASE", "wrong")], None)
        .fails_with("wrong passphrase");
    cli.run(&["get", &id]).fails_with("sealed");
    let file = cli.data_dir().join("pass.txt");
    std::fs::write(&file, "correct horse battery staple\n").expect("write");
    let file = file.to_str().expect("utf-8");
    let run = cli.run(&["--passphrase-file", file, "get", &id, "--json"]);
    assert_eq!(run.json()["content"], "sealed memory");
    // The key file does not hold the passphrase in the clear.
    let key = std::fs::read(cli.data_dir().join("identity.key")).expect("read");
    assert!(!key.windows(13).any(|w| w == b"correct horse"));
}

#[test]
fn corrupt_files_are_reported() {
    let cli = TestCli::new();
    cli.init();
    let id = cli.run(&["add", "precious"]).ok().to_owned();

    let key = cli.data_dir().join("identity.key");
    let good_key = std::fs::read(&key).expect("read");
    let mut bad = good_key.clone();
    bad[50] ^= 0xff;
    std::fs::write(&key, &bad).expect("write");
    cli.run(&["get", &id]).fails_with("key file is corrupt");
    std::fs::write(&key, &good_key).expect("write");

    let db = cli.data_dir().join("mnemon.redb");
    let good_db = std::fs::read(&db).expect("read");
    std::fs::write(&db, vec![0x42; good_db.len()]).expect("write");
    let run = cli.run(&["get", &id]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("database") && run.stderr.contains("mnemon.redb"),
        "the message names the database: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    std::fs::write(&db, &good_db).expect("write");
    assert_eq!(
        cli.run(&["get", &id, "--json"]).json()["content"],
        "precious"
    );
}

#[test]
fn removed_memory_leaves_no_trace_in_any_file() {
    let cli = TestCli::new();
    cli.init();
    // One word, so the keyword index stores it as a single term.
    let canary = "canaryc4f1d2e9b7";
    for i in 0..30 {
        cli.run(&["add", &format!("ordinary memory number {i}")])
            .ok();
    }
    let id = cli
        .run(&[
            "add",
            "--title",
            &format!("about {canary}"),
            &format!("the secret is {canary}"),
        ])
        .ok()
        .to_owned();
    cli.run(&[
        "edit",
        &id,
        "--content",
        &format!("the secret is still {canary}"),
        "--add-tag",
        canary,
    ])
    .ok();
    // Searching builds the indexes, which then hold the canary too.
    let hits = cli.run(&["search", canary, "--json"]).json();
    assert_eq!(hits[0]["id"], id.as_str());
    assert!(
        count_in_files(&cli.data_dir().join("index"), canary.as_bytes()) > 0,
        "the canary must be in the index before rm, or this test proves nothing"
    );
    assert!(count_in_files(&cli.data_dir(), canary.as_bytes()) > 0);
    cli.run(&["rm", &id]).ok();
    assert_eq!(count_in_files(&cli.data_dir(), canary.as_bytes()), 0);
    assert_eq!(cli.count(), 30);
}

#[test]
fn kill_9_during_a_stream_of_adds_loses_no_acknowledged_memory() {
    let cli = TestCli::new();
    cli.init();
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    for round in 0..3u32 {
        let mut child = cli
            .command()
            .args(["add", "--lines", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let feeder = std::thread::spawn(move || {
            for i in 0..100_000u32 {
                if writeln!(stdin, "round {round} line {i}").is_err() {
                    break; // the process was killed
                }
            }
        });
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let stop_after = 15 + 10 * round as usize;
        let mut lines = stdout.lines();
        let mut seen = 0;
        while let Some(Ok(id)) = lines.next() {
            acknowledged.push((id, format!("round {round} line {seen}")));
            seen += 1;
            if seen == stop_after {
                child.kill().expect("kill -9"); // SIGKILL on Unix
                break;
            }
        }
        child.wait().expect("wait");
        let _ = feeder.join();
        assert_eq!(seen, stop_after, "the stream of adds ended early");
    }
    let list = cli.run(&["list", "--json"]).json();
    let stored: std::collections::HashMap<&str, &str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|m| {
            (
                m["id"].as_str().expect("id"),
                m["content"].as_str().expect("content"),
            )
        })
        .collect();
    for (id, content) in &acknowledged {
        assert_eq!(
            stored.get(id.as_str()),
            Some(&content.as_str()),
            "acknowledged {id} lost"
        );
    }
}

#[test]
fn tasks_are_added_listed_by_due_date_and_done_for_points() {
    let cli = TestCli::new();
    cli.init();
    let later = cli
        .run(&[
            "task",
            "add",
            "Paint the fence",
            "--due",
            "2027-03-01",
            "--difficulty",
            "4",
        ])
        .ok()
        .trim()
        .to_owned();
    let soon = cli
        .run(&[
            "task",
            "add",
            "Buy paint",
            "--due",
            "2026-12-01",
            "--priority",
            "1",
        ])
        .ok()
        .trim()
        .to_owned();
    let someday = cli
        .run(&["task", "add", "Learn the cello", "--xp", "500"])
        .ok()
        .trim()
        .to_owned();
    cli.run(&["add", "Not a task"]).ok();
    let list = cli.run(&["task", "list", "--json"]).json();
    let order = mnemon_tests::ids(&list["tasks"]);
    assert_eq!(
        order,
        [soon.as_str(), later.as_str(), someday.as_str()],
        "{list}"
    );
    assert_eq!(
        list["tasks"][1]["task"]["xp"], 40,
        "10 points per difficulty level"
    );
    assert_eq!(list["tasks"][2]["task"]["xp"], 500);
    assert_eq!(list["xp_earned"], 0);
    let done = cli.run(&["task", "done", &later]).ok().to_owned();
    assert!(done.contains("+40 xp"), "{done}");
    let list = cli.run(&["task", "list", "--json"]).json();
    assert_eq!(list["open"], 2);
    assert_eq!(list["done"], 1);
    assert_eq!(list["xp_earned"], 40);
    assert_eq!(
        list["tasks"].as_array().map(Vec::len),
        Some(2),
        "done ones only with --all"
    );
    let text = cli.run(&["task", "list", "--all"]).ok().to_owned();
    assert!(
        text.contains("[x]") && text.contains("Paint the fence"),
        "{text}"
    );
    assert!(text.contains("2 open, 1 done, 40 xp earned"), "{text}");
    // Reopened, its points are no longer earned; changed, it moves in the order.
    let again = cli.run(&["task", "reopen", &later]).ok().to_owned();
    assert!(again.contains("open again: Paint the fence"), "{again}");
    assert_eq!(cli.run(&["task", "list", "--json"]).json()["xp_earned"], 0);
    let changed = cli
        .run(&[
            "task",
            "edit",
            &later,
            "--due",
            "2020-01-01",
            "--priority",
            "-3",
            "--difficulty",
            "2",
        ])
        .ok()
        .to_owned();
    assert!(
        changed.contains("priority -3, difficulty 2, due 2020-01-01"),
        "{changed}"
    );
    let list = cli.run(&["task", "list", "--json"]).json();
    assert_eq!(
        list["tasks"][0]["id"],
        later.as_str(),
        "the earliest due first: {list}"
    );
    assert_eq!(
        list["tasks"][0]["task"]["xp"], 20,
        "points follow the difficulty"
    );
    let cleared = cli
        .run(&["task", "edit", &later, "--no-due", "--json"])
        .json();
    assert!(cleared["task"].get("due").is_none(), "{cleared}");
    cli.run(&["task", "edit", &later])
        .fails_with("nothing to change");
    cli.run(&["task", "add", "x", "--difficulty", "7"])
        .fails_with("difficulty 7 is not from 1 to 5");
    cli.run(&["task", "add", "x", "--due", "soonish"])
        .fails_with("soonish");
    cli.run(&["task", "done", "not-an-id"])
        .fails_with("not-an-id");
    // Finishing is for tasks, here as in MCP and the UI.
    let note = cli.run(&["add", "just a note"]).ok().trim().to_owned();
    cli.run(&["task", "done", &note])
        .fails_with("is a note, not a task");
    cli.run(&["task", "reopen", &note])
        .fails_with("is a note, not a task");
    cli.run(&["task", "edit", &note, "--priority", "1"])
        .fails_with("is a note, not a task");
}

/// A `serve.json` left by a service that died names a port anyone may take. What answers
/// there must prove it knows the token before the CLI sends the token or any text.
#[test]
fn a_squatter_on_a_dead_servers_port_gets_neither_token_nor_text() {
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    let cli = TestCli::new();
    cli.init();
    // The squatter: answers every request with 200 and a proof of its own invention,
    // and keeps every byte it is sent.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let heard = Arc::new(Mutex::new(Vec::<u8>::new()));
    let keep = heard.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(300)));
            let mut buf = [0u8; 65536];
            while let Ok(n) = std::io::Read::read(&mut stream, &mut buf) {
                if n == 0 {
                    break;
                }
                keep.lock().expect("lock").extend_from_slice(&buf[..n]);
                let body = format!("{{\"proof\":\"{}\",\"id\":\"x\"}}", "ab".repeat(32));
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    });
    // This test's process is alive and owns the port, as a squatter would.
    let serve_json = cli.data_dir().join("serve.json");
    std::fs::write(
        &serve_json,
        format!("{{\"url\":\"{url}\",\"pid\":{}}}", std::process::id()),
    )
    .expect("write serve.json");
    let run = cli.run(&["add", "--title", "Squirrel", "the secret squirrel text"]);
    assert!(run.success, "written to the data folder: {}", run.stderr);
    assert!(run.stderr.contains("does not prove"), "{}", run.stderr);
    let heard = String::from_utf8_lossy(&heard.lock().expect("lock")).into_owned();
    assert!(heard.contains("/health/proof"), "it was asked: {heard}");
    let token = cli.run(&["token"]).ok().to_owned();
    assert!(!heard.contains(&token), "the token was sent: {heard}");
    assert!(
        !heard.to_ascii_lowercase().contains("authorization"),
        "{heard}"
    );
    assert!(!heard.contains("squirrel"), "the text was sent: {heard}");
    assert_eq!(cli.count(), 1);

    // A serve.json whose process is gone is removed, and the data folder is used.
    let mut gone = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = gone.id();
    gone.wait().expect("wait");
    std::fs::write(&serve_json, format!("{{\"url\":\"{url}\",\"pid\":{pid}}}"))
        .expect("write serve.json");
    assert_eq!(cli.count(), 1);
    assert!(!serve_json.exists(), "a stale serve.json is removed");
}

/// Titles and text come from peers and imported files: the terminal is shown their control
/// characters, never given them; JSON keeps them exact.
#[test]
fn control_characters_are_shown_not_sent_to_the_terminal() {
    let cli = TestCli::new();
    cli.init();
    let title = "Invoice\u{1b}]52;c;ZXZpbA==\u{7} \u{1b}[2J\u{202e}fdp.exe";
    let text = "body\u{1b}[31m red\u{0} and \u{9b}1m";
    let id = cli
        .run_with(&["add", "--title", title, "-"], &[], Some(text.as_bytes()))
        .ok()
        .to_owned();
    for args in [&["list"][..], &["get", &id], &["search", "invoice"]] {
        let run = cli.run(args);
        let shown = run.ok();
        assert!(
            !shown
                .chars()
                .any(|c| matches!(c, '\u{1b}' | '\u{7}' | '\u{0}' | '\u{9b}' | '\u{202e}')),
            "{args:?}: {shown:?}"
        );
        assert!(shown.contains("Invoice\\u{1b}]52"), "{args:?}: {shown}");
    }
    let got = cli.run(&["get", &id, "--json"]).json();
    assert_eq!(got["title"], title);
    assert_eq!(got["content"], text);
    // An error naming the input shows it the same way.
    let run = cli.run(&["get", "no\u{1b}[2Jsuch"]);
    assert!(!run.success);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
}

/// Every file and folder under the data folder is its owner's alone, the indexes too,
/// whatever the umask of the shell that started `mnemon`.
#[cfg(unix)]
#[test]
fn everything_in_the_data_folder_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let cli = TestCli::new();
    cli.init();
    for text in ["alpha kettle", "beta kettle", "gamma kettle"] {
        cli.run(&["add", text]).ok();
    }
    assert!(cli.run(&["search", "kettle"]).ok().contains("kettle"));
    let mut seen = 0;
    let mut stack = vec![cli.data_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let meta = entry.metadata().expect("meta");
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                assert_eq!(mode, 0o700, "{}", entry.path().display());
                stack.push(entry.path());
            } else {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", entry.path().display());
                seen += 1;
            }
        }
    }
    assert!(seen > 8, "the indexes were written: {seen} files");
}

/// A database that is missing or empty is refused, never made anew under the node's
/// identity; an init that fails leaves no key behind.
#[test]
fn a_missing_or_empty_database_is_refused_and_a_failed_init_leaves_no_key() {
    let cli = TestCli::new();
    cli.init();
    let id = cli.run(&["add", "precious"]).ok().to_owned();
    let db = cli.data_dir().join("mnemon.redb");
    let kept = cli.data_dir().join("kept.redb");
    std::fs::rename(&db, &kept).expect("move");
    std::fs::write(&db, b"").expect("truncate");
    cli.run(&["list"]).fails_with("is empty (0 bytes)");
    assert_eq!(
        std::fs::metadata(&db).expect("meta").len(),
        0,
        "not made anew"
    );
    std::fs::remove_file(&db).expect("remove");
    cli.run(&["get", &id]).fails_with("is missing");
    assert!(!db.exists());
    std::fs::rename(&kept, &db).expect("restore");
    assert_eq!(
        cli.run(&["get", &id, "--json"]).json()["content"],
        "precious"
    );

    // A database without its key: init refuses to make a key for it.
    let key = cli.data_dir().join("identity.key");
    std::fs::rename(&key, cli.data_dir().join("kept.key")).expect("move");
    cli.run(&["init"]).fails_with("no key file");
    assert!(!key.exists());

    // An init whose database cannot be made leaves no key that matches nothing.
    let other = TestCli::new();
    std::fs::create_dir_all(other.data_dir().join("mnemon.redb")).expect("a folder in the way");
    other.run(&["init"]).fails_with("creating the database");
    assert!(!other.data_dir().join("identity.key").exists());
}

#[test]
fn add_with_dedupe_answers_the_memory_that_already_says_the_same() {
    let cli = TestCli::new();
    cli.init();
    let first = cli
        .run(&["add", "Water the ficus on Sundays."])
        .ok()
        .to_owned();
    let again = cli.run(&["add", "--dedupe", "near", "water the ficus   on sundays"]);
    assert_eq!(again.ok(), first);
    assert!(
        again.stderr.contains("already says the same"),
        "{}",
        again.stderr
    );
    let json = cli
        .run(&[
            "add",
            "--dedupe",
            "exact",
            "Water the ficus on Sundays.",
            "--json",
        ])
        .json();
    assert_eq!(
        (json["id"].as_str(), &json["created"]),
        (Some(first.as_str()), &serde_json::json!(false))
    );
    // Not the same bytes: exact writes it; without --dedupe a copy is written as asked.
    let json = cli
        .run(&[
            "add",
            "--dedupe",
            "exact",
            "water the ficus on sundays",
            "--json",
        ])
        .json();
    assert_eq!(json["created"], true);
    let copy = cli
        .run(&["add", "Water the ficus on Sundays."])
        .ok()
        .to_owned();
    assert_ne!(copy, first);
    assert_eq!(cli.count(), 3);
    // Another collection is not the same place.
    cli.run(&["collection", "new", "plants"]).ok();
    let elsewhere = cli
        .run(&[
            "add",
            "--dedupe",
            "near",
            "-c",
            "plants",
            "Water the ficus on Sundays.",
        ])
        .ok()
        .to_owned();
    assert_ne!(elsewhere, first);
    cli.run(&["add", "--dedupe", "sometimes", "x"])
        .fails_with("dedupe must be off, exact or near");
}

#[test]
fn forget_history_keeps_the_text_and_erases_earlier_versions_through_serve() {
    let cli = TestCli::new();
    cli.init();
    // Upper-case letters the new text lacks: the text diff keeps them in one run.
    let canary = "QZXJWQZXJW";
    let id = cli
        .run(&[
            "add",
            "--title",
            "Door code",
            &format!("the code was {canary}"),
        ])
        .ok()
        .to_owned();
    cli.run(&["edit", &id, "--content", "the code is 8080"])
        .ok();
    // The live document (not a freed page) holds the earlier text.
    cli.run(&["compact"]).ok();
    assert!(count_in_files(&cli.data_dir(), canary.as_bytes()) > 0);
    let served = Served::start(&cli);
    let linking = cli
        .run(&["add", "see [[Door code]] before you leave"])
        .ok()
        .to_owned();
    assert_eq!(
        cli.run(&["get", &linking, "--json"]).json()["links"][0]["target"],
        id.as_str()
    );
    let fresh = cli.run(&["forget-history", &id, "--json"]).json();
    let fresh_id = fresh["id"].as_str().expect("id");
    assert_ne!(fresh_id, id);
    assert_eq!(fresh["content"], "the code is 8080");
    assert_eq!(fresh["title"], "Door code");
    cli.run(&["get", &id]).fails_with("deleted");
    assert_eq!(
        cli.run(&["get", &linking, "--json"]).json()["links"][0]["target"],
        fresh_id
    );
    let hits = cli
        .run(&["search", "8080", "--mode", "keyword", "--json"])
        .json();
    // (The linking note, written just after, matches too: by its context.)
    let hits = mnemon_tests::ids(&hits);
    assert_eq!(hits[0], fresh_id);
    assert!(!hits.contains(&id.as_str()), "{hits:?}");
    cli.run(&["forget-history", "01J0000000000000000000000Z"])
        .fails_with("no memory with id");
    served.stop();
    assert_eq!(count_in_files(&cli.data_dir(), canary.as_bytes()), 0);
    assert_eq!(cli.count(), 2);
}

#[test]
fn collections_are_renamed_and_deleted_and_memories_moved_through_serve() {
    let cli = TestCli::new();
    cli.init();
    let served = Served::start(&cli);
    let work = cli.run(&["collection", "new", "Work"]).ok().to_owned();
    cli.run(&["collection", "new", "Archive"]).ok();
    let plan = cli
        .run(&[
            "add",
            "--title",
            "Plan",
            "--collection",
            "Work",
            "ship it by Friday",
        ])
        .ok()
        .to_owned();
    let linking = cli
        .run(&["add", "see [[Plan]] for the dates"])
        .ok()
        .to_owned();
    let names = |cli: &TestCli| -> Vec<String> {
        cli.run(&["collection", "list", "--json"])
            .json()
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_owned())
            .collect()
    };

    // Rename: by id or name; a taken or empty name is refused by name.
    let renamed = cli
        .run(&["collection", "rename", "Work", "Projects", "--json"])
        .json();
    assert_eq!(renamed["id"], work.as_str());
    assert_eq!(renamed["name"], "Projects");
    assert!(names(&cli).contains(&"Projects".to_owned()));
    cli.run(&["collection", "rename", "Projects", "Archive"])
        .fails_with("exists already");
    cli.run(&["collection", "rename", "Projects", " "])
        .fails_with("invalid collection name");

    // Move: written anew in the other collection; the link follows.
    let moved = cli
        .run(&["move", &plan, "--to", "Archive", "--json"])
        .json();
    let moved_id = moved["id"].as_str().expect("id").to_owned();
    assert_ne!(moved_id, plan);
    assert_eq!(moved["collection_name"], "Archive");
    assert_eq!(moved["content"], "ship it by Friday");
    cli.run(&["get", &plan]).fails_with("deleted");
    assert_eq!(
        cli.run(&["get", &linking, "--json"]).json()["links"][0]["target"],
        moved_id.as_str()
    );
    cli.run(&["move", &moved_id, "--to", "Nowhere"])
        .fails_with("Nowhere");

    // Delete: an empty collection goes at once; one that holds memories needs --yes,
    // and then its memories go with it.
    let deleted = cli
        .run(&["collection", "delete", "Projects", "--json"])
        .json();
    assert_eq!(deleted["memories"], 0);
    cli.run(&["collection", "delete", "Archive"])
        .fails_with("--yes");
    assert_eq!(
        cli.run(&["get", &moved_id, "--json"]).json()["content"],
        "ship it by Friday",
        "refused without --yes: nothing deleted"
    );
    cli.run(&["collection", "delete", "Archive", "--yes"]).ok();
    cli.run(&["get", &moved_id]).fails_with("deleted");
    assert_eq!(names(&cli), vec!["default".to_owned()]);
    let hits = cli
        .run(&["search", "Friday", "--mode", "keyword", "--json"])
        .json();
    assert!(
        !mnemon_tests::ids(&hits).contains(&moved_id.as_str()),
        "a deleted collection's memories are not found"
    );
    cli.run(&["collection", "delete", "default", "--yes"])
        .fails_with("default collection");
    served.stop();
}

#[test]
fn other_nodes_are_listed_by_the_names_given_them() {
    let cli = TestCli::new();
    cli.init();
    let served = Served::start(&cli);
    let other = mnemon_identity::Keypair::generate().did().to_string();
    cli.run(&["collection", "new", "Family"]).ok();
    cli.run(&["share", "Family", &other, "--role", "read"]).ok();
    cli.run(&["name", &other, "Grandma's laptop"]).ok();
    let members = cli
        .run(&["collection", "members", "Family", "--json"])
        .json();
    assert_eq!(members[0]["did"], other.as_str());
    assert_eq!(members[0]["name"], "Grandma's laptop");
    let table = cli
        .run(&["collection", "members", "Family"])
        .ok()
        .to_owned();
    assert!(
        table.contains("Grandma's laptop") && !table.contains(&other),
        "{table}"
    );
    cli.run(&["name", &other, "bad\u{7}name"])
        .fails_with("control characters");
    cli.run(&["name", "did:key:nonsense", "x"])
        .fails_with("not a did:key");
    cli.run(&["name", &other, ""]).ok();
    let members = cli
        .run(&["collection", "members", "Family", "--json"])
        .json();
    assert!(members[0].get("name").is_none(), "{members}");
    served.stop();
}
