//! `otel-xray-wrapper`: named by `AWS_LAMBDA_EXEC_WRAPPER=/opt/otel-xray-wrapper`.
//!
//! Lambda's bootstrap runs it as `otel-xray-wrapper <runtime command…>`. First it asks whether the
//! extension is there (`presence.rs`: the health check of the Runtime API proxy, else of the
//! OTLP/HTTP receiver; `probe.rs`). When otel-xray answers, it points the function's
//! OpenTelemetry SDK at the extension's receiver and sets the propagators and the Lambda resource
//! attributes, each only where the user has not; points `AWS_LAMBDA_RUNTIME_API` at the proxy
//! when the proxy answered; hands off to the function's own auto-instrumentation where it ships
//! one (`instrument.rs`). When nothing of otel-xray answers, it sets nothing (the runtime starts as
//! if the layer were absent) and says so in one line. Then it `exec`s the runtime, whose command
//! it never changes. It fails open: whatever goes wrong, the runtime starts with the environment
//! it would have had.
//!
//! No dependencies, no allocation-heavy work: it must start in about a millisecond.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

mod env;
mod instrument;
mod presence;
mod probe;
mod values;

/// The real disk.
struct RealFs;

impl instrument::Fs for RealFs {
    fn exists(&self, path: &str) -> bool {
        std::path::Path::new(path).exists()
    }
    fn list_dir(&self, path: &str) -> Vec<String> {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        log("no runtime command given; nothing to run");
        return ExitCode::from(127);
    };
    let rest: Vec<OsString> = args.collect();

    let current = |k: &str| std::env::var(k).ok();
    let plan = env::plan(&current, &program, &rest, &RealFs, &probe::probe);
    for note in &plan.notes {
        log(note);
    }

    let mut cmd = Command::new(&program);
    cmd.args(&rest);
    for (k, v) in &plan.set {
        cmd.env(k, v);
    }
    // exec only returns on failure.
    let err = cmd.exec();
    log(&format!("cannot exec {}: {err}", program.to_string_lossy()));
    ExitCode::from(127)
}

/// One line on stderr, which Lambda sends to the function's log group.
#[allow(clippy::print_stderr)]
fn log(msg: &str) {
    eprintln!("[otel-xray-wrapper] {msg}");
}
