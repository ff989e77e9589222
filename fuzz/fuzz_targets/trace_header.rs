#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otel_xray::fuzzing::trace_header(data));
