//! See `mnemon_protocol::fuzz_checks::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mnemon_protocol::fuzz_checks::session(data));
