#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otel_xray::fuzzing::decompress_body(data));
