//! See `mnemon_protocol::fuzz_checks::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mnemon_protocol::fuzz_checks::frames(data));
