#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| otel_xray::fuzzing::otlp_wire(data));
