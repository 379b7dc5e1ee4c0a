//! Repository hygiene, checked by `cargo test`.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | "node_modules" | ".git") && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for krate in [
        "identity", "crdt", "protocol", "web", "node", "examples", "tests",
    ] {
        rust_files(&root().join(krate), &mut files);
    }
    assert!(files.len() > 20, "found only {} Rust files", files.len());
    files
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            !text.starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:?}"
    );
}

#[test]
fn unsafe_code_is_only_the_allocator_tuning() {
    let needle = ["un", "safe {"].concat();
    let allowed = ["allow(un", "safe_code)"].concat();
    let offenders: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| !f.ends_with("node/src/main.rs"))
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read");
            text.contains(&needle) || text.contains(&allowed)
        })
        .collect();
    assert!(offenders.is_empty(), "unsafe code in {offenders:?}");
    let main = std::fs::read_to_string(root().join("node/src/main.rs")).expect("main");
    assert_eq!(
        main.matches(&needle).count(),
        1,
        "one unsafe block in main.rs"
    );
}

#[test]
fn no_ignored_tests() {
    let needle = ["#[", "ignore"].concat();
    let offenders: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| std::fs::read_to_string(f).expect("read").contains(&needle))
        .collect();
    assert!(offenders.is_empty(), "ignored tests in {offenders:?}");
}

#[test]
fn sans_io_crates_do_not_depend_on_io_runtimes() {
    for (krate, forbidden) in [
        ("identity", &["tokio", "libp2p", "quinn", "redb"][..]),
        ("protocol", &["tokio", "libp2p", "quinn", "redb"][..]),
        ("crdt", &["libp2p", "quinn", "axum", "hyper"][..]),
        // The search engine knows the store's reader, not the node, its interfaces or the
        // network: the node drives it, nothing in it drives the node.
        (
            "node/search",
            &[
                "mnemon-node",
                "mnemon-web",
                "mnemon-protocol",
                "axum",
                "rmcp",
                "clap",
                "libp2p",
                "tokio",
            ][..],
        ),
        // The network knows the store, identities and the sync protocol; not the node, its
        // interfaces or the search engine.
        (
            "node/net",
            &[
                "mnemon-node",
                "mnemon-web",
                "mnemon-search",
                "axum",
                "rmcp",
                "clap",
                "tantivy",
                "candle",
            ][..],
        ),
        // The application contract is plain data and one trait: no HTTP framework, no MCP
        // library, no storage engine, no network.
        (
            "web/api",
            &[
                "mnemon-node",
                "mnemon-web",
                "mnemon-search",
                "mnemon-net",
                "axum",
                "hyper",
                "rmcp",
                "clap",
                "redb",
                "tantivy",
                "libp2p",
            ][..],
        ),
        // The MCP adapter knows the contract and rmcp, nothing of the node.
        (
            "web/mcp",
            &[
                "mnemon-node",
                "mnemon-web",
                "mnemon-crdt",
                "mnemon-search",
                "mnemon-net",
                "redb",
                "tantivy",
                "libp2p",
            ][..],
        ),
        // The interfaces know neither storage nor networking nor models: only `Api`.
        (
            "web",
            &[
                "redb",
                "tantivy",
                "libp2p",
                "quinn",
                "candle",
                "automerge",
                "rmcp",
            ][..],
        ),
    ] {
        let manifest =
            std::fs::read_to_string(root().join(krate).join("Cargo.toml")).expect("read");
        for name in forbidden {
            let as_dependency = manifest
                .lines()
                .any(|line| line.trim_start().starts_with(name) && line.contains('='));
            assert!(!as_dependency, "{krate} must not depend on {name}");
        }
    }
}

#[test]
fn the_runtime_does_not_depend_on_did_key() {
    // did-key pulls ed25519-dalek 1.0.1 (RUSTSEC-2022-0093); it is a dev-dependency only.
    let manifest = std::fs::read_to_string(root().join("identity/Cargo.toml")).expect("read");
    let (deps, dev) = manifest
        .split_once("[dev-dependencies]")
        .expect("identity has dev-dependencies");
    assert!(
        !deps.contains("did-key"),
        "did-key must stay out of [dependencies]"
    );
    assert!(dev.contains("did-key"), "the did-key cross-check is gone");
    for krate in ["crdt", "protocol", "web", "node"] {
        let manifest =
            std::fs::read_to_string(root().join(krate).join("Cargo.toml")).expect("read");
        assert!(
            !manifest.contains("did-key"),
            "{krate} must not depend on did-key"
        );
    }
}

/// The top-level modules of a crate's `src` that one file's non-test code names through
/// `crate::…` (or `super::…` from a file directly under `src`).
fn modules_named(text: &str, top_level_file: bool) -> std::collections::BTreeSet<String> {
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or(text)
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let mut out = std::collections::BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut prefixes = vec!["crate::"];
    if top_level_file {
        prefixes.push("super::");
    }
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' || before == ':' {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a::X, b}`: the first segment of each item at the top level.
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && !c.is_whitespace() => {
                            out.insert(ident(&group[i..]));
                            item_start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                out.insert(ident(rest));
            }
        }
    }
    out.retain(|m| !m.is_empty() && m.chars().next().is_some_and(char::is_lowercase));
    out
}

#[test]
fn no_crate_has_a_cycle_among_its_modules() {
    let mut seen = 0;
    for krate in [
        "identity/src",
        "crdt/src",
        "protocol/src",
        "web/api/src",
        "web/mcp/src",
        "web/src",
        "node/src",
        "node/search/src",
        "node/net/src",
    ] {
        let src = root().join(krate);
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        // Edges between top-level modules (a file under `src/a/` belongs to `a`); the
        // crate root, which only declares and re-exports, takes no part.
        let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
            Default::default();
        for file in &files {
            let relative = file.strip_prefix(&src).expect("under src");
            let first = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("name");
            let module = first.trim_end_matches(".rs").to_owned();
            if matches!(module.as_str(), "lib" | "main") {
                continue;
            }
            let text = std::fs::read_to_string(file).expect("read");
            let top_level_file = relative.components().count() == 1;
            let named = modules_named(&text, top_level_file);
            let entry = edges.entry(module.clone()).or_default();
            entry.extend(named.into_iter().filter(|m| *m != module));
        }
        let modules: Vec<String> = edges.keys().cloned().collect();
        edges
            .values_mut()
            .for_each(|e| e.retain(|m| modules.contains(m)));
        // Depth-first search for a path that comes back to where it started.
        fn cycle_from(
            at: &str,
            edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut std::collections::BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == at) {
                let mut cycle = path[i..].to_vec();
                cycle.push(at.to_owned());
                return Some(cycle);
            }
            if done.contains(at) {
                return None;
            }
            path.push(at.to_owned());
            for next in edges.get(at).into_iter().flatten() {
                if let Some(cycle) = cycle_from(next, edges, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(at.to_owned());
            None
        }
        let mut done = Default::default();
        for module in &modules {
            if let Some(cycle) = cycle_from(module, &edges, &mut Vec::new(), &mut done) {
                panic!("{krate}: modules import each other: {}", cycle.join(" -> "));
            }
        }
        seen += edges.values().map(|e| e.len()).sum::<usize>();
    }
    assert!(
        seen > 20,
        "only {seen} imports between modules were found; the check is not reading them"
    );
}

#[test]
fn the_module_reader_sees_grouped_and_parent_imports() {
    let text = "//! See [`crate::docs`].\nuse crate::{api::X, backend::{Y, Z}};\nuse super::hnsw::Hnsw;\nfn f() { crate::ui::page(); my_crate::nope(); }\n#[cfg(test)]\nmod tests { use crate::later; }";
    let named: Vec<String> = modules_named(text, true).into_iter().collect();
    assert_eq!(named, ["api", "backend", "hnsw", "ui"]);
    let nested: Vec<String> = modules_named(text, false).into_iter().collect();
    assert_eq!(nested, ["api", "backend", "ui"]);
}
