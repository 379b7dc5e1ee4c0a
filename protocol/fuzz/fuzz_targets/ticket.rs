//! See `mnemon_protocol::fuzz_checks::ticket`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mnemon_protocol::fuzz_checks::ticket(data));
