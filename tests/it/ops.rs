//! Running a node for years: backups and restores (under load, scheduled), `doctor`, the
//! service units, completions, the man page and the version — the real binary throughout.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mnemon_tests::{Served, TestCli, eventually};
use serde_json::{Value, json};

const PASSPHRASE: &str = "correct horse battery";

fn with_passphrase(cli: &TestCli, args: &[&str]) -> mnemon_tests::Run {
    cli.run_with(args, &[("MNEMON_BACKUP_PASSPHRASE", PASSPHRASE)], None)
}

fn listed_ids(cli: &TestCli) -> HashSet<String> {
    let listed = cli.run(&["list", "-n", "100000", "--json"]).json();
    mnemon_tests::ids(&listed)
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_backup_under_load_restores_exactly_what_was_acknowledged_before_it() {
    let cli = TestCli::new();
    cli.init();
    // 2,000 memories, each with a word of its own, and five deleted before the backup.
    let lines: String = (0..2000)
        .map(|i| format!("seeded note {i} marker{i}x\n"))
        .collect();
    let seeded: Vec<String> = cli
        .run_with(&["add", "-", "--lines"], &[], Some(lines.as_bytes()))
        .ok()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(seeded.len(), 2000);
    let deleted: Vec<&str> = seeded[..5].iter().map(String::as_str).collect();
    let mut rm = vec!["rm"];
    rm.extend(&deleted);
    cli.run(&rm).ok();

    let served = Served::start(&cli);
    let token = cli.run(&["token"]).ok().to_owned();
    // A load generator writes as fast as the service acknowledges.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, token, acked, stop) = (
                served.url.clone(),
                token.clone(),
                acked.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .new_agent();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut r = agent
                        .post(&format!("{url}/api/v1/memories"))
                        .header("Authorization", &format!("Bearer {token}"))
                        .send_json(json!({"content": format!("load {w} {i}")}))
                        .expect("post");
                    assert_eq!(r.status(), 201);
                    let v: Value = r.body_mut().read_json().expect("json");
                    acked
                        .lock()
                        .expect("lock")
                        .push(v["id"].as_str().expect("id").to_owned());
                    i += 1;
                }
            })
        })
        .collect();
    eventually("the load generator writes", Duration::from_secs(30), || {
        acked.lock().expect("lock").len() >= 20
    });
    let before: Vec<String> = acked.lock().expect("lock").clone();
    let dest = cli.data_dir().with_file_name("under-load.mnemonbak");
    let dest_str = dest.to_str().expect("utf-8");
    let taken = with_passphrase(&cli, &["backup", dest_str, "--json"]).json();
    let during = acked.lock().expect("lock").len();
    eventually(
        "writes go on after the backup",
        Duration::from_secs(30),
        || acked.lock().expect("lock").len() > during + 10,
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer");
    }
    let all_acked: HashSet<String> = acked.lock().expect("lock").iter().cloned().collect();
    let status = cli.run(&["status", "--json"]).json();
    assert_eq!(status["backup"]["last"]["file"], dest_str, "{status}");
    served.stop();

    let verified = with_passphrase(&cli, &["backup", "verify", dest_str, "--json"]).json();
    assert_eq!(
        verified["backup"]["memories"], taken["memories"],
        "{verified}"
    );

    let restored = TestCli::new();
    let restored_dir = restored.data_dir();
    let restored_dir = restored_dir.to_str().expect("utf-8");
    with_passphrase(&cli, &["--data-dir", restored_dir, "restore", dest_str]).ok();
    let ids = listed_ids(&restored);
    assert_eq!(ids.len() as u64, taken["memories"].as_u64().expect("count"));
    for id in seeded[5..].iter().chain(&before) {
        assert!(
            ids.contains(id),
            "{id}, acknowledged before the backup, is not in it"
        );
    }
    for id in &deleted {
        assert!(
            !ids.contains(*id),
            "{id} was deleted before the backup but came back"
        );
    }
    for id in &ids {
        assert!(
            seeded.contains(id) || all_acked.contains(id),
            "{id} was never written"
        );
    }
    assert_eq!(restored.run(&["id"]).ok(), cli.run(&["id"]).ok());
    // Search is rebuilt: a word only one memory holds finds it.
    let hits = restored
        .run(&["search", "marker1234x", "--mode", "keyword", "--json"])
        .json();
    assert_eq!(hits[0]["id"], seeded[1234].as_str(), "{hits}");
    // Forgetting holds in the backup: not one byte of a deleted memory is in the file.
    let restored_file = std::fs::read(restored.data_dir().join("mnemon.redb")).expect("read");
    let gone = restored_file
        .windows(b"marker3x".len())
        .any(|w| w == b"marker3x");
    assert!(!gone, "a deleted memory's text is in the restored store");

    // A wrong passphrase, a flipped byte and a non-empty folder are each a clear error.
    cli.run_with(
        &["backup", "verify", dest_str],
        &[("MNEMON_BACKUP_PASSPHRASE", "not the one")],
        None,
    )
    .fails_with("wrong passphrase");
    let mut bytes = std::fs::read(&dest).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    let flipped = dest.with_file_name("flipped.mnemonbak");
    std::fs::write(&flipped, &bytes).expect("write");
    with_passphrase(
        &cli,
        &["backup", "verify", flipped.to_str().expect("utf-8")],
    )
    .fails_with("damaged");
    let elsewhere = TestCli::new();
    let elsewhere_dir = elsewhere.data_dir();
    let elsewhere_dir = elsewhere_dir.to_str().expect("utf-8");
    with_passphrase(
        &cli,
        &[
            "--data-dir",
            elsewhere_dir,
            "restore",
            flipped.to_str().expect("utf-8"),
        ],
    )
    .fails_with("damaged");
    assert!(
        !elsewhere.data_dir().join("identity.key").exists(),
        "a failed restore left a key"
    );
    with_passphrase(&cli, &["--data-dir", restored_dir, "restore", dest_str])
        .fails_with("not empty");
    // A backup never overwrites a file.
    with_passphrase(&cli, &["backup", dest_str]).fails_with("exists");
}

#[test]
fn scheduled_backups_keep_the_newest_n_and_status_reports_the_last() {
    let cli = TestCli::new();
    cli.init();
    cli.run(&["add", "a memory worth keeping"]).ok();
    let folder = cli.data_dir().with_file_name("scheduled");
    let config = format!(
        "[backup]\nfolder = {:?}\ninterval = \"1s\"\nkeep = 2\npassphrase_env = \"TEST_BACKUP_PASS\"\n",
        folder.to_str().expect("utf-8")
    );
    mnemon_identity::private::write_private(&cli.data_dir().join("config.toml"), config.as_bytes())
        .expect("config");
    // Files in the folder that the schedule did not write for this node are never removed:
    // one renamed by hand, one of another node, one named like a backup but a folder.
    let did = cli.run(&["id"]).ok().to_owned();
    let tail = &did[did.len() - 8..];
    std::fs::create_dir_all(&folder).expect("folder");
    let foreign = [
        folder.join("mnemon-before-upgrade.mnemonbak"),
        folder.join("mnemon-abcdefgh-20200101T000000.000Z.mnemonbak"),
    ];
    for file in &foreign {
        std::fs::write(file, b"not ours").expect("write");
    }
    std::fs::create_dir(folder.join(format!("mnemon-{tail}-20000101T000000.000Z.mnemonbak")))
        .expect("dir");
    let backups_in = |folder: &std::path::Path| -> Vec<std::path::PathBuf> {
        backups_in(folder)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("mnemon-{tail}-")) && p.is_file())
            })
            .collect()
    };
    let served = Served::spawn_with_env(&cli, &["--no-p2p"], &[("TEST_BACKUP_PASS", PASSPHRASE)]);
    let taken = |log: &str| log.matches("backup taken").count();
    let token = cli.run(&["token"]).ok().to_owned();
    eventually("four scheduled backups", Duration::from_secs(60), || {
        let status = cli.run(&["status", "--json"]).json();
        // A new backup is in place before the oldest goes: at most keep + 1 for an instant.
        let files = backups_in(&folder).len();
        assert!(files <= 3, "{files} backups kept");
        status["backup"]["last"]["file"].is_string() && taken(&served.log()) >= 4
    });
    let status = cli.run(&["status", "--json"]).json();
    let last = status["backup"]["last"]["file"]
        .as_str()
        .expect("file")
        .to_owned();
    assert_eq!(status["backup"]["overdue"], false);
    assert_eq!(status["backup"]["keep"], 2);
    let metrics = ureq::get(&format!("{}/metrics", served.url))
        .header("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(
        metrics.contains("\nmnemon_backup_age_seconds "),
        "{metrics}"
    );
    assert!(metrics.contains("\nmnemon_backup_overdue 0"), "{metrics}");
    for counter in [
        "mnemon_store_commits_total",
        "mnemon_store_commit_seconds_total",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {counter} counter\n{counter} ")),
            "{metrics}"
        );
    }
    assert!(metrics.contains("\nmnemon_store_file_bytes "), "{metrics}");
    served.stop();
    let kept = backups_in(&folder);
    assert_eq!(kept.len(), 2, "{kept:?}");
    for file in &foreign {
        assert_eq!(std::fs::read(file).expect("still there"), b"not ours");
    }
    // The newest may have been taken between the status and the stop.
    assert!(
        kept.iter().any(|k| k.to_str() == Some(last.as_str())),
        "{last} not in {kept:?}"
    );
    let verified = with_passphrase(
        &cli,
        &[
            "backup",
            "verify",
            kept[1].to_str().expect("utf-8"),
            "--json",
        ],
    )
    .json();
    assert_eq!(verified["backup"]["memories"], 1);
}

/// The backups in `folder`, oldest first (their names sort by time).
fn backups_in(folder: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(folder)
        .map(|d| d.map(|e| e.expect("entry").path()).collect())
        .unwrap_or_default();
    found.retain(|p| p.extension().is_some_and(|e| e == "mnemonbak"));
    found.sort();
    found
}

fn doctor(cli: &TestCli) -> (bool, Value) {
    let run = cli.run(&["doctor", "--json"]);
    let report: Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert_eq!(
        run.success,
        report["ok"] == true,
        "exit code and report disagree: {report}"
    );
    (run.success, report)
}

fn failing(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| {
            format!(
                "{}: {}",
                c["name"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn doctor_finds_what_is_wrong_and_passes_a_healthy_node() {
    let cli = TestCli::new();
    cli.init();
    let ids: Vec<String> = (0..3)
        .map(|i| {
            cli.run(&["add", &format!("healthy note {i}")])
                .ok()
                .to_owned()
        })
        .collect();
    cli.run(&["search", "healthy"]).ok();
    let (ok, report) = doctor(&cli);
    assert!(ok, "a healthy node fails: {:?}", failing(&report));

    // A world-readable key.
    let key = cli.data_dir().join("identity.key");
    set_mode(&key, 0o644);
    let (ok, report) = doctor(&cli);
    assert!(!ok);
    assert!(
        failing(&report)
            .iter()
            .any(|f| f.starts_with("permissions") && f.contains("identity.key")),
        "{report}"
    );
    set_mode(&key, 0o600);

    // A stale serve.json: its process is gone and nothing answers at its address.
    let serve_json = cli.data_dir().join("serve.json");
    mnemon_identity::private::write_private(
        &serve_json,
        br#"{"url":"http://127.0.0.1:9","pid":4194303}"#,
    )
    .expect("write");
    let (ok, report) = doctor(&cli);
    assert!(!ok);
    assert!(
        failing(&report)
            .iter()
            .any(|f| f.starts_with("service") && f.contains("stale")),
        "{report}"
    );
    assert!(!serve_json.exists());

    // An index missing a memory that the store holds (and no change on its way).
    {
        let data = mnemon_node::DataDir::new(cli.data_dir());
        let store = data
            .open_store(&mnemon_node::PassphraseSource::default())
            .expect("store");
        let embedder = Arc::new(mnemon_node::search::embed::HashEmbedder::default());
        let mut index = mnemon_node::search::SearchIndex::open(&data.index_dir(), embedder, &store)
            .expect("index");
        let id = ids[1].parse().expect("id");
        index.forget_now(&store, &[id]).expect("forget");
        index.save().expect("save");
    }
    let (ok, report) = doctor(&cli);
    assert!(!ok);
    assert!(
        failing(&report)
            .iter()
            .any(|f| f.starts_with("index") && f.contains("disagrees")),
        "{report}"
    );
    cli.run(&["reindex"]).ok();
    let (ok, report) = doctor(&cli);
    assert!(ok, "after reindex: {:?}", failing(&report));

    // A model asked for but missing.
    mnemon_identity::private::write_private(
        &cli.data_dir().join("config.toml"),
        b"[embedder]\nkind = \"model\"\n",
    )
    .expect("config");
    let (ok, report) = doctor(&cli);
    assert!(!ok);
    assert!(
        failing(&report)
            .iter()
            .any(|f| f.starts_with("model") && f.contains("none is installed")),
        "{report}"
    );
    // The human report says what to do.
    let run = cli.run(&["doctor"]);
    assert!(!run.success);
    assert!(
        run.stdout.contains("fix: run `mnemon model install PATH`"),
        "{}",
        run.stdout
    );
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn the_service_units_pass_systemd_analyze_verify() {
    let cli = TestCli::new();
    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, must) in [
        (
            "--system",
            &[
                "DynamicUser=yes",
                "ProtectSystem=strict",
                "ProtectHome=yes",
                "NoNewPrivileges=yes",
                "StateDirectory=mnemon",
                "Restart=on-failure",
            ][..],
        ),
        ("--user", &["NoNewPrivileges=yes", "Restart=on-failure"][..]),
    ] {
        let unit = cli
            .run(&["service", "install", flag, "--print"])
            .ok()
            .to_owned();
        let binary = mnemon_tests::mnemon_bin();
        assert!(
            unit.contains(&format!("ExecStart={} serve", binary.display())),
            "{unit}"
        );
        for line in must {
            assert!(unit.lines().any(|l| l == *line), "{flag}: no {line}");
        }
        let path = dir.path().join("mnemon.service");
        std::fs::write(&path, format!("{unit}\n")).expect("write");
        // In system mode for both: checking a user unit needs a user manager.
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (apt-get install systemd)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{flag}: {stderr}"
        );
    }
}

#[test]
fn version_completions_and_man_page_come_from_the_binary() {
    let cli = TestCli::new();
    let version = cli.run(&["--version"]).ok().to_owned();
    assert!(
        version.starts_with("mnemon 0.") && version.contains("commit"),
        "{version}"
    );
    let bash = cli.run(&["completions", "bash"]).ok().to_owned();
    assert!(
        bash.contains("complete -F") && bash.contains("backup") && bash.contains("doctor"),
        "{bash}"
    );
    let zsh = cli.run(&["completions", "zsh"]).ok().to_owned();
    assert!(zsh.starts_with("#compdef mnemon"), "{zsh}");
    let man = cli.run(&["man"]).ok().to_owned();
    assert!(
        man.contains(".TH mnemon") && man.contains("restore"),
        "{man}"
    );
    cli.run(&["completions", "tcsh"])
        .fails_with("invalid value");
}

#[test]
fn one_command_from_an_empty_folder_to_a_signed_in_browser() {
    let cli = TestCli::new();
    cli.run(&["signin"]).fails_with("not initialised");
    // `serve` on a new folder makes the node.
    let served = Served::start(&cli);
    assert!(cli.data_dir().join("identity.key").exists());
    assert!(cli.run(&["id"]).ok().starts_with("did:key:z6Mk"));
    let link = cli.run(&["signin"]).ok().to_owned();
    let prefix = format!("{}/signin?code=", served.url);
    let code = link
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{link}"))
        .to_owned();
    let agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let answer = agent.get(&link).call().expect("sign in");
    assert_eq!(answer.status(), 303);
    assert_eq!(
        answer.headers()["location"],
        "/",
        "the code is not kept in the address"
    );
    let cookie = answer.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    let session = cookie.split(';').next().expect("pair").to_owned();
    assert!(
        session.starts_with("mnemon_session=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let mut home = agent
        .get(&format!("{}/", served.url))
        .header("Cookie", &session)
        .call()
        .expect("home");
    assert_eq!(home.status(), 200);
    assert!(
        home.body_mut()
            .read_to_string()
            .expect("page")
            .contains("id=\"capture\"")
    );
    // A link works once.
    let mut again = agent.get(&link).call().expect("again");
    assert_eq!(again.status(), 401);
    let page = again.body_mut().read_to_string().expect("page");
    assert!(page.contains("used already or has expired"), "{page}");
    // A guessed code is refused the same way, and never signs in.
    let guessed = agent
        .get(&format!("{prefix}{}", "0".repeat(64)))
        .call()
        .expect("guess");
    assert_eq!(guessed.status(), 401);
    assert!(guessed.headers().get("set-cookie").is_none());
    let log = served.stop();
    assert!(!log.contains(&code), "the sign-in code was logged");
    // With a passphrase given, the node `serve` makes has its key sealed.
    let sealed = TestCli::new();
    let served = Served::spawn_with_env(
        &sealed,
        &["--no-p2p"],
        &[("MNEMON_PASSPHRASE", "a passphrase for the key")],
    );
    let key = std::fs::read(sealed.data_dir().join("identity.key")).expect("key");
    assert_eq!(key[9], 1, "the key file is sealed");
    drop(served);
}

#[test]
fn rotating_the_token_while_serving_ends_the_old_one_and_every_session_at_once() {
    let cli = TestCli::new();
    cli.init();
    let served = Served::start(&cli);
    let old = cli.run(&["token"]).ok().to_owned();
    let agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let link = cli.run(&["signin"]).ok().to_owned();
    let signed_in = agent.get(&link).call().expect("sign in");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_owned();
    let home = |cookie: &str| {
        agent
            .get(&format!("{}/", served.url))
            .header("Cookie", cookie)
            .call()
            .expect("home")
            .status()
    };
    assert_eq!(home(&cookie), 200);
    let status = |token: &str| {
        agent
            .get(&format!("{}/api/v1/status", served.url))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("status")
            .status()
    };
    assert_eq!(status(&old), 200);

    // A web UI session cannot make lasting credentials: no sign-in links, no new token.
    let csrf = agent
        .get(&format!("{}/api/v1/session", served.url))
        .header("Cookie", &cookie)
        .call()
        .expect("session")
        .body_mut()
        .read_json::<serde_json::Value>()
        .expect("json")["csrf_token"]
        .as_str()
        .expect("csrf")
        .to_owned();
    for route in ["signin-links", "token"] {
        let refused = agent
            .post(&format!("{}/api/v1/{route}", served.url))
            .header("Cookie", &cookie)
            .header("X-CSRF-Token", &csrf)
            .send_empty()
            .expect("post");
        assert_eq!(refused.status(), 403, "{route} by a session");
    }
    // A link made before the rotation dies with the old token.
    let early_link = cli.run(&["signin"]).ok().to_owned();
    // A service the CLI cannot reach but that holds the store: no silent file-only rotation.
    let serve_json = cli.data_dir().join("serve.json");
    let hidden = cli.data_dir().join("serve.json.aside");
    std::fs::rename(&serve_json, &hidden).expect("hide serve.json");
    cli.run(&["token", "--rotate"])
        .fails_with("held by a running mnemon serve");
    std::fs::rename(&hidden, &serve_json).expect("put serve.json back");
    assert_eq!(cli.run(&["token"]).ok(), old, "nothing was rotated");

    let new = cli.run(&["token", "--rotate"]).ok().to_owned();
    assert!(new.starts_with("mnm_") && new != old, "{new}");
    assert_eq!(
        agent.get(&early_link).call().expect("early link").status(),
        401
    );
    assert_eq!(
        cli.run(&["token"]).ok(),
        new,
        "the file holds the new token"
    );
    assert_eq!(status(&old), 401, "the old token works no more");
    assert_eq!(status(&new), 200);
    assert_ne!(
        home(&cookie),
        200,
        "the browser's session ended with the old token"
    );
    let mcp = agent
        .post(&format!("{}/mcp", served.url))
        .header("Authorization", &format!("Bearer {old}"))
        .header("Accept", "application/json, text/event-stream")
        .send_json(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .expect("mcp");
    assert_eq!(mcp.status(), 401, "MCP takes the new token only");
    // The CLI goes on through the service with the new token.
    let id = cli
        .run(&["add", "written after the rotation"])
        .ok()
        .to_owned();
    assert_eq!(
        cli.run(&["get", &id, "--json"]).json()["content"],
        "written after the rotation"
    );
    let log = served.stop();
    assert!(
        !log.contains(&new) && !log.contains(&old),
        "a token was logged"
    );
}

/// A small tmpfs mounted on a folder for one test, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes` on `dir`; `None` (the test then skips, saying why)
    /// where this machine does not let the test mount one.
    fn mount(dir: &std::path::Path, megabytes: u32) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(SmallDisk(dir.to_owned())),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    /// Fills what is left of it with one file; returns the file.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![7u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_refuses_writes_clearly_and_writes_resume_when_space_returns() {
    let cli = TestCli::new();
    let Some(disk) = SmallDisk::mount(&cli.data_dir(), 32) else {
        return;
    };
    cli.init();
    let served = Served::start(&cli);
    let token = cli.run(&["token"]).ok().to_owned();
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let post = |content: &str| {
        let mut r = agent
            .post(&format!("{}/api/v1/memories", served.url))
            .header("Authorization", &format!("Bearer {token}"))
            .send_json(json!({ "content": content }))
            .expect("post");
        let body: Value = r.body_mut().read_json().unwrap_or(Value::Null);
        (r.status().as_u16(), body)
    };
    let ready = || {
        agent
            .get(&format!("{}/health/ready", served.url))
            .call()
            .expect("ready")
            .status()
            .as_u16()
    };
    let mut kept = Vec::new();
    for i in 0..5 {
        let (status, body) = post(&format!("written before the disk filled up, number {i}"));
        assert_eq!(status, 201, "{body}");
        kept.push(body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ready(), 200);
    // The indexes write those five before the disk fills (this is the store's test; the
    // indexer's own files meeting a full disk are another matter).
    eventually(
        "the indexes take the first five",
        Duration::from_secs(60),
        || {
            let status: Value = agent
                .get(&format!("{}/api/v1/status", served.url))
                .header("Authorization", &format!("Bearer {token}"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_json().ok())
                .unwrap_or(Value::Null);
            status["index"]["lag_changes"] == 0 && status["index"]["keyword_indexed"] == 5
        },
    );

    let filler = disk.fill();
    // Big memories, so each needs the file to grow; the first that cannot is refused.
    let big = "a long text that will not fit on the disk ".repeat(40_000);
    let refused = (0..20).find_map(|i| {
        let (status, body) = post(&format!("{i} {big}"));
        match status {
            201 => {
                kept.push(body["id"].as_str().expect("id").to_owned());
                None
            }
            _ => Some((status, body)),
        }
    });
    let (status, body) = refused.expect("a write on a full disk is refused");
    assert_eq!(status, 503, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("disk refused"), "{body}");
    assert_eq!(ready(), 503, "not ready while writes cannot succeed");
    // Reads go on: the store was opened again at once.
    eventually(
        "acknowledged memories read back",
        Duration::from_secs(30),
        || {
            kept.iter().all(|id| {
                agent
                    .get(&format!("{}/api/v1/memories/{id}", served.url))
                    .header("Authorization", &format!("Bearer {token}"))
                    .call()
                    .is_ok_and(|r| r.status() == 200)
            })
        },
    );

    std::fs::remove_file(&filler).expect("free the disk");
    eventually(
        "ready again once the disk has room",
        Duration::from_secs(30),
        || ready() == 200,
    );
    let (status, body) = post("written after the disk had room again");
    assert_eq!(status, 201, "{body}");
    kept.push(body["id"].as_str().expect("id").to_owned());
    served.stop();

    // Every acknowledged memory is there after a restart, and nothing refused is.
    let listed = listed_ids(&cli);
    for id in &kept {
        assert!(listed.contains(id), "{id} was acknowledged but is lost");
    }
    assert_eq!(listed.len(), kept.len());
    drop(disk);
}
