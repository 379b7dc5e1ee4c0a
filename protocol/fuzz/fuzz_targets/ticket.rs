#![no_main]
//! See `mnemon_protocol::fuzz_checks::ticket`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| mnemon_protocol::fuzz_checks::ticket(data));
