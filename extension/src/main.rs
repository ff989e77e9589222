//! The `otel-xray` Lambda extension. Everything lives in the library; see [`otel_xray::lifecycle`].

fn main() -> std::process::ExitCode {
    otel_xray::lifecycle::main_entry()
}
