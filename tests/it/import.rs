//! `mnemon import` and `mnemon export` with the real binary: a generated Obsidian-style
//! vault of 2,000 notes (front matter, inline tags, wikilinks with aliases and headings,
//! nested folders) plus hostile files, imported twice, changed, exported, and imported
//! into fresh nodes from Markdown and from the JSON dump.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mnemon_tests::TestCli;
use serde_json::Value;

const NOTES: usize = 2000;
const FOLDERS: [&str; 6] = [
    "",
    "Projects",
    "Projects/Garden",
    "Journal/2024",
    "Areas/Home",
    "Areas/Work/Meetings",
];

fn folder(i: usize) -> &'static str {
    FOLDERS[i % FOLDERS.len()]
}

fn stem(i: usize) -> String {
    format!("Note {i:04}")
}

fn title(i: usize) -> String {
    if i.is_multiple_of(4) {
        format!("Title {i}: thoughts")
    } else {
        stem(i)
    }
}

/// What a generated note should become.
#[derive(Debug, Default)]
struct Expected {
    tags: BTreeSet<String>,
    /// Titles of the notes it links to.
    links: BTreeSet<String>,
    created: Option<String>,
}

/// Writes the vault; returns what each note (by title) should become.
fn write_vault(root: &Path) -> BTreeMap<String, Expected> {
    let mut expected = BTreeMap::new();
    for i in 0..NOTES {
        let dir = root.join(folder(i));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut e = Expected::default();
        let mut text = String::new();
        if i % 4 != 3 {
            text.push_str("---\n");
            if i.is_multiple_of(4) {
                text.push_str(&format!(
                    "title: \"{}\"\ntags: [alpha, \"beta-{}\"]\n",
                    title(i),
                    i % 10
                ));
                e.tags
                    .extend(["alpha".to_owned(), format!("beta-{}", i % 10)]);
            } else if i % 4 == 1 {
                text.push_str("tags:\n  - gamma\n  - \"#hashed\"\n");
                e.tags.extend(["gamma".to_owned(), "hashed".to_owned()]);
            } else {
                text.push_str("tags: delta, epsilon\n");
                e.tags.extend(["delta".to_owned(), "epsilon".to_owned()]);
            }
            if i.is_multiple_of(10) {
                text.push_str(&format!("aliases: [\"Alias {i}\"]\n"));
            }
            let day = i % 28 + 1;
            text.push_str(&format!("created: 2024-01-{day:02}\n---\n"));
            e.created = Some(format!("2024-01-{day:02}T00:00:00.000Z"));
        }
        // Links: by file name, with an alias, with a heading, by path, and by alias.
        let (a, b, c, d) = (
            (i + 1) % NOTES,
            (i * 7 + 3) % NOTES,
            (i * 13 + 5) % NOTES,
            (i / 10 * 10 + 10) % NOTES,
        );
        text.push_str(&format!(
            "# Heading {i}\n\nBody of note number {i}. #inline{}\n",
            i % 5
        ));
        e.tags.insert(format!("inline{}", i % 5));
        text.push_str(&format!(
            "See [[{}]] and [[{}|the other one]].\n",
            stem(a),
            stem(b)
        ));
        let c_path = if folder(c).is_empty() {
            stem(c)
        } else {
            format!("{}/{}", folder(c), stem(c))
        };
        text.push_str(&format!(
            "Also [[{c_path}#Some section|here]] and [[Alias {d}]].\n"
        ));
        text.push_str("```\n[[Not a link]] #notatag\n```\n");
        for target in [a, b, c, d] {
            if target != i {
                e.links.insert(title(target));
            }
        }
        if i.is_multiple_of(50) {
            text.push_str(&format!("And [[Missing note {i}]].\n"));
        }
        if !folder(i).is_empty() {
            e.tags.insert(folder(i).to_owned());
        }
        std::fs::write(dir.join(format!("{}.md", stem(i))), text).expect("note");
        expected.insert(title(i), e);
    }
    expected
}

/// Hostile and non-note files; returns (path, what the reason must say).
fn write_hostile(root: &Path, outside: &Path) -> Vec<(&'static str, &'static str)> {
    std::os::unix::fs::symlink("..", root.join("Areas/loop")).expect("symlink loop");
    std::fs::write(outside.join("secret.md"), "SECRET outside the vault").expect("secret");
    std::os::unix::fs::symlink(outside.join("secret.md"), root.join("outside.md"))
        .expect("symlink");
    std::fs::write(root.join("binary.md"), b"PK\x03\x04\x00\x00binary\x00data").expect("binary");
    std::fs::write(root.join("latin1.md"), b"caf\xe9 au lait").expect("latin1");
    let huge = std::fs::File::create(root.join("huge.md")).expect("huge");
    huge.set_len(100 * 1024 * 1024).expect("100 MB");
    std::fs::write(
        root.join("bomb.md"),
        "---\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n---\nboom",
    )
    .expect("bomb");
    std::fs::write(root.join("bad-yaml.md"), "---\ntitle: [unclosed\n---\nbody").expect("bad yaml");
    std::fs::write(root.join("Projects/diagram.png"), b"\x89PNG\r\n\x1a\n").expect("png");
    std::fs::create_dir_all(root.join(".obsidian")).expect("hidden");
    std::fs::write(root.join(".obsidian/app.json"), "{}").expect("settings");
    vec![
        ("Areas/loop", "symbolic link"),
        ("outside.md", "symbolic link"),
        ("binary.md", "binary"),
        ("latin1.md", "not valid UTF-8"),
        ("huge.md", "too large"),
        ("bomb.md", "aliases"),
        ("bad-yaml.md", "not valid YAML"),
        ("Projects/diagram.png", "attachment"),
        (".obsidian", "hidden folder"),
    ]
}

fn import(cli: &TestCli, path: &Path, extra: &[&str]) -> Value {
    let path = path.to_str().expect("utf-8 path");
    let mut args = vec!["import", path, "--json"];
    args.extend_from_slice(extra);
    cli.run(&args).json()
}

fn all(cli: &TestCli) -> Vec<Value> {
    cli.run(&["list", "--json"])
        .json()
        .as_array()
        .expect("array")
        .clone()
}

/// Memories by title, each with its links as (target title, relation).
fn by_title(memories: &[Value]) -> BTreeMap<String, (Value, BTreeSet<(String, String)>)> {
    let titles: BTreeMap<&str, &str> = memories
        .iter()
        .map(|m| {
            (
                m["id"].as_str().expect("id"),
                m["title"].as_str().expect("title"),
            )
        })
        .collect();
    memories
        .iter()
        .map(|m| {
            let links = m["links"]
                .as_array()
                .expect("links")
                .iter()
                .map(|l| {
                    let target = titles
                        .get(l["target"].as_str().expect("target"))
                        .unwrap_or_else(|| panic!("a link to a memory not on the node: {l}"));
                    (
                        (*target).to_owned(),
                        l["relation"].as_str().expect("relation").to_owned(),
                    )
                })
                .collect();
            (
                m["title"].as_str().expect("title").to_owned(),
                (m.clone(), links),
            )
        })
        .collect()
}

/// The fields that must survive export and import.
fn assert_same_memories(a: &[Value], b: &[Value]) {
    let (a, b) = (by_title(a), by_title(b));
    assert_eq!(a.len(), b.len());
    for (title, (ma, la)) in &a {
        let (mb, lb) = b.get(title).unwrap_or_else(|| panic!("{title:?} missing"));
        for field in [
            "content",
            "tags",
            "kind",
            "importance",
            "created_at",
            "collection_name",
            "task",
        ] {
            assert_eq!(ma.get(field), mb.get(field), "{title:?}: {field}");
        }
        assert_eq!(la, lb, "{title:?}: links");
    }
}

#[test]
fn a_vault_of_2000_notes_imports_once_updates_and_round_trips_through_export() {
    let work = tempfile::tempdir().expect("tempdir");
    let vault = work.path().join("vault");
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    let expected = write_vault(&vault);
    let hostile = write_hostile(&vault, &outside);

    let a = TestCli::new();
    a.init();
    let started = std::time::Instant::now();
    let summary = import(&a, &vault, &[]);
    eprintln!("first import of {NOTES} notes: {:.1?}", started.elapsed());
    assert_eq!(summary["imported"], NOTES, "{summary}");
    assert_eq!(summary["updated"], 0);
    let skipped: BTreeMap<&str, &str> = summary["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| {
            (
                s["path"].as_str().expect("path"),
                s["reason"].as_str().expect("reason"),
            )
        })
        .collect();
    for (path, reason) in &hostile {
        let got = skipped
            .get(path)
            .unwrap_or_else(|| panic!("{path} not reported: {skipped:?}"));
        assert!(got.contains(reason), "{path}: {got}");
    }
    assert_eq!(skipped.len(), hostile.len(), "{skipped:?}");
    let unresolved = summary["unresolved_links"].as_array().expect("unresolved");
    assert_eq!(unresolved.len(), NOTES / 50, "{unresolved:?}");
    assert!(
        unresolved
            .iter()
            .any(|u| u.as_str() == Some("Note 0000.md: Missing note 0")),
        "{unresolved:?}"
    );

    // Counts match the summary; tags, dates and links are as written.
    let memories = all(&a);
    assert_eq!(memories.len(), NOTES);
    assert!(
        memories
            .iter()
            .all(|m| !m["content"].as_str().unwrap_or("").contains("SECRET")),
        "a file outside the vault was read through a symbolic link"
    );
    let found = by_title(&memories);
    for (title, e) in &expected {
        let (m, links) = found
            .get(title)
            .unwrap_or_else(|| panic!("{title:?} missing"));
        let tags: BTreeSet<String> = m["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| t.as_str().expect("tag").to_owned())
            .collect();
        assert_eq!(tags, e.tags, "{title:?}");
        let targets: BTreeSet<String> = links.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(targets, e.links, "{title:?}");
        assert!(links.iter().all(|(_, r)| r == "wikilink"));
        if let Some(created) = &e.created {
            assert_eq!(
                m["created_at"].as_str(),
                Some(created.as_str()),
                "{title:?}"
            );
        }
        assert_eq!(m["source"]["kind"], "import");
    }

    // Again: nothing new, nothing changed.
    let summary = import(&a, &vault, &[]);
    assert_eq!(
        (
            &summary["imported"],
            &summary["updated"],
            &summary["unchanged"]
        ),
        (&Value::from(0), &Value::from(0), &Value::from(NOTES)),
        "{summary}"
    );
    assert_eq!(a.count(), NOTES);

    // A changed note is updated in place: its new text, its new link, its dropped ones.
    std::fs::write(
        vault.join(folder(5)).join(format!("{}.md", stem(5))),
        "Rewritten. Now only [[Note 0009]]. #fresh\n",
    )
    .expect("edit");
    let summary = import(&a, &vault, &[]);
    assert_eq!(summary["updated"], 1, "{summary}");
    assert_eq!(summary["imported"], 0);
    let memories = all(&a);
    assert_eq!(memories.len(), NOTES);
    let found = by_title(&memories);
    let (m, links) = &found[&title(5)];
    assert_eq!(m["content"], "Rewritten. Now only [[Note 0009]]. #fresh\n");
    assert_eq!(
        links.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [title(9).as_str()]
    );

    // A title that tries to leave the export folder, and a task, take part too.
    a.run(&[
        "add",
        "--title",
        "../../escape",
        "a note with a hostile title",
    ])
    .ok();
    a.run(&[
        "task",
        "add",
        "Water the garden",
        "--difficulty",
        "3",
        "--due",
        "2026-12-01",
    ])
    .ok();
    let out = work.path().join("export");
    let summary = a
        .run(&["export", out.to_str().expect("path"), "--json"])
        .json();
    assert_eq!(summary["memories"], NOTES + 2);
    assert!(out.join("mnemon-export.json").is_file());
    assert!(!work.path().join("escape.md").exists());
    let md_files = walk(&out).iter().filter(|p| p.ends_with(".md")).count();
    assert_eq!(md_files, NOTES + 2);
    // Exporting into a folder that is not empty is refused.
    a.run(&["export", out.to_str().expect("path")])
        .fails_with("not empty");

    // A fresh node imports the Markdown export: equal memories and links.
    let b = TestCli::new();
    b.init();
    let summary = import(&b, &out, &[]);
    assert_eq!(summary["imported"], NOTES + 2, "{summary}");
    let skipped = summary["skipped"].as_array().expect("skipped");
    assert_eq!(
        skipped.len(),
        1,
        "only the JSON dump, as an attachment: {skipped:?}"
    );
    assert!(
        summary["unresolved_links"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{summary}"
    );
    let memories_a = all(&a);
    assert_same_memories(&memories_a, &all(&b));
    // And again: no duplicates.
    let summary = import(&b, &out, &[]);
    assert_eq!(summary["imported"], 0, "{summary}");
    assert_eq!(b.count(), NOTES + 2);

    // Another fresh node imports the JSON dump: equal too.
    let c = TestCli::new();
    c.init();
    let summary = import(&c, &out.join("mnemon-export.json"), &[]);
    assert_eq!(summary["imported"], NOTES + 2, "{summary}");
    assert_same_memories(&memories_a, &all(&c));

    // A damaged dump is refused with the reason, and nothing is lost.
    let damaged = work.path().join("damaged.json");
    std::fs::write(
        &damaged,
        "{\"format\": \"mnemon-export\", \"version\": 1, \"memories\": [",
    )
    .expect("damaged");
    c.run(&["import", damaged.to_str().expect("path")])
        .fails_with("not a Mnemon JSON dump");
    assert_eq!(c.count(), NOTES + 2);
}

#[test]
fn folders_can_become_collections() {
    let work = tempfile::tempdir().expect("tempdir");
    let vault = work.path().join("vault");
    std::fs::create_dir_all(vault.join("Work/Meetings")).expect("dirs");
    std::fs::create_dir_all(vault.join("Home")).expect("dirs");
    std::fs::write(
        vault.join("Work/Meetings/Standup.md"),
        "Daily standup notes",
    )
    .expect("note");
    std::fs::write(vault.join("Home/Plants.md"), "Water the ficus").expect("note");
    std::fs::write(vault.join("Inbox.md"), "Loose thought").expect("note");
    let cli = TestCli::new();
    cli.init();
    let summary = import(&cli, &vault, &["--folders", "collections"]);
    assert_eq!(summary["imported"], 3, "{summary}");
    let memories = all(&cli);
    let collection_of = |title: &str| {
        memories
            .iter()
            .find(|m| m["title"] == title)
            .and_then(|m| m["collection_name"].as_str())
            .unwrap_or_else(|| panic!("{title}"))
            .to_owned()
    };
    assert_eq!(collection_of("Standup"), "Work");
    assert_eq!(collection_of("Plants"), "Home");
    assert_ne!(collection_of("Inbox"), "Work");
    assert!(
        memories
            .iter()
            .all(|m| m["tags"].as_array().is_some_and(Vec::is_empty))
    );
    // A path that does not exist is an error naming it.
    cli.run(&["import", "/nonexistent/vault"])
        .fails_with("/nonexistent/vault");
}

#[test]
fn wikilinks_to_titles_written_later_resolve_in_both_directions() {
    let work = tempfile::tempdir().expect("tempdir");
    let vault = work.path().join("vault");
    std::fs::create_dir_all(&vault).expect("vault");
    std::fs::write(
        vault.join("Trip.md"),
        "Pack for [[Packing list]] and [[Visa]]",
    )
    .expect("note");
    std::fs::write(vault.join("Visa.md"), "Apply by March").expect("note");
    let cli = TestCli::new();
    cli.init();
    // Written before the import: it names a note that only the vault has.
    cli.run(&["add", "--title", "Budget", "Costs of the [[trip]]"])
        .ok();
    let summary = import(&cli, &vault, &[]);
    assert_eq!(summary["imported"], 2, "{summary}");
    let unresolved = summary["unresolved_links"].as_array().expect("unresolved");
    assert_eq!(unresolved.len(), 1, "{summary}");
    let links_of = |title: &str| {
        by_title(&all(&cli))
            .remove(title)
            .unwrap_or_else(|| panic!("{title} missing"))
            .1
    };
    let wiki = |t: &str| (t.to_owned(), "wikilink".to_owned());
    assert_eq!(links_of("Budget"), BTreeSet::from([wiki("Trip")]));
    assert_eq!(links_of("Trip"), BTreeSet::from([wiki("Visa")]));
    // Written after the import: the link the vault could not resolve resolves now.
    cli.run(&["add", "--title", "packing LIST", "socks, charger"])
        .ok();
    assert_eq!(
        links_of("Trip"),
        BTreeSet::from([wiki("Visa"), wiki("packing LIST")])
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        if entry.file_type().expect("type").is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.to_string_lossy().into_owned());
        }
    }
    out
}

/// Any file can claim any id in its front matter: it must not rewrite this node's memory
/// of that id (signed by this node and synced to its peers). Re-importing this node's own
/// unchanged export still adds nothing.
#[test]
fn a_front_matter_id_cannot_overwrite_a_memory_this_import_did_not_make() {
    let cli = TestCli::new();
    cli.init();
    let id = cli
        .run(&["add", "--title", "Bank", "The real account notes"])
        .ok()
        .to_owned();
    let work = tempfile::tempdir().expect("tempdir");
    let out = work.path().join("export");
    cli.run(&["export", out.to_str().expect("path")]).ok();
    std::fs::remove_file(out.join("mnemon-export.json")).expect("only the Markdown");
    // Unchanged: nothing new, nothing rewritten.
    let summary = import(&cli, &out, &[]);
    assert_eq!(summary["imported"], 0, "{summary}");
    assert_eq!(summary["updated"], 0, "{summary}");
    assert_eq!(cli.count(), 1);
    // A file that claims the id with other text: a new memory; the real one untouched.
    let file = walk(&out)
        .into_iter()
        .find(|p| p.ends_with(".md"))
        .expect("a Markdown file");
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.contains(&id), "the export names the id: {text}");
    std::fs::write(
        &file,
        text.replace("The real account notes", "Send the money to the attacker"),
    )
    .expect("write");
    let summary = import(&cli, &out, &[]);
    assert_eq!(summary["updated"], 0, "{summary}");
    assert_eq!(summary["imported"], 1, "{summary}");
    assert!(
        summary["new_for_foreign_id"][0]
            .as_str()
            .is_some_and(|s| s.contains(&id)),
        "{summary}"
    );
    let real = cli.run(&["get", &id, "--json"]).json();
    assert_eq!(real["content"], "The real account notes");
    assert_eq!(cli.count(), 2);
    // Imported again: the copy it made is the one updated from now on.
    let summary = import(&cli, &out, &[]);
    assert_eq!(
        (summary["imported"].as_u64(), summary["unchanged"].as_u64()),
        (Some(0), Some(1)),
        "{summary}"
    );
    assert_eq!(cli.count(), 2);
}
