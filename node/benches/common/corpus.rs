//! The Debian package descriptions the benchmarks run on (`tests/run` prepares them; the
//! test helper `mnemon_tests::debian_corpus` reads the same file, but `node` cannot depend
//! on `mnemon-tests`).

use std::path::PathBuf;

/// Distinct long descriptions as (title "package: summary", text), in file order.
pub(crate) fn corpus() -> Vec<(String, String)> {
    let path = std::env::var_os("MNEMON_DEBIAN_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debian-descriptions.txt")
        });
    let text = std::fs::read_to_string(&path).expect("corpus: run tests/run first");
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for record in text.split("\n\n") {
        let mut title = String::new();
        let mut long = String::new();
        for line in record.lines() {
            if let Some(p) = line.strip_prefix("Package: ") {
                title = p.to_owned();
            } else if let Some(s) = line.strip_prefix("Description-en: ") {
                title = format!("{title}: {s}");
            } else if let Some(body) = line.strip_prefix(' ') {
                long.push_str(if body == "." { "\n" } else { body });
                long.push('\n');
            }
        }
        if long.len() >= 80 && seen.insert(long.clone()) {
            out.push((title, long));
        }
    }
    out
}
