//! The `otel-xray` Lambda extension. Everything lives in the library; see [`otel_xray::lifecycle`].

/// mimalloc: OTLP decoding allocates per attribute; it roughly halves decode time
/// (docs/translator.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    otel_xray::lifecycle::main_entry()
}
