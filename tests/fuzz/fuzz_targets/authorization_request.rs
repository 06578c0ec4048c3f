#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis::fuzzing::authorization_request(data));
