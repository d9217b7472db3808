#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| svc_fuzz::h1_direct(data));
