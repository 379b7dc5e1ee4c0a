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
        // The interfaces know neither storage nor networking nor models: only `Backend`.
        (
            "web",
            &["redb", "tantivy", "libp2p", "quinn", "candle", "automerge"][..],
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
