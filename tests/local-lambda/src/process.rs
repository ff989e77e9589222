//! Starting the sandbox's processes, capturing their output, and signalling them.
//!
//! Every process gets its own process group, so that a signal reaches the processes it
//! started too (a wrapper's runtime, a runtime's workers), as a sandbox-wide freeze does.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::telemetry::TelemetryHub;

/// Which role a process plays; decides the Telemetry API log type of its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Runtime,
    Extension,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Runtime => "runtime",
            Self::Extension => "extension",
        }
    }

    fn telemetry_type(self) -> &'static str {
        match self {
            Self::Runtime => "function",
            Self::Extension => "extension",
        }
    }
}

/// Start `argv` with exactly `env` (plus nothing inherited), in its own process group.
pub fn spawn(
    argv: &[String],
    env: &[(String, String)],
    cwd: Option<&Path>,
) -> std::io::Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.spawn()
}

/// Copy one output stream to `file` line by line (appending), echo it if asked, and hand each
/// line to the Telemetry API as a `function` / `extension` log record.
pub fn capture<R: AsyncRead + Unpin + Send + 'static>(
    stream: R,
    file: PathBuf,
    role: Role,
    name: String,
    echo: bool,
    hub: Arc<TelemetryHub>,
) {
    tokio::spawn(async move {
        let mut out = match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .await
        {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(error = %e, file = %file.display(), "cannot open log file");
                None
            }
        };
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Some(f) = out.as_mut() {
                let _ = f.write_all(&line).await;
                let _ = f.flush().await;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if echo {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("[{} {}] {}", role.as_str(), name, text);
                }
            }
            hub.emit(
                role.telemetry_type(),
                serde_json::Value::String(text.to_owned()),
            );
        }
    });
}

fn pid(p: i32) -> Pid {
    Pid::from_raw(p)
}

/// Signal one process. Errors (already gone) are ignored.
pub fn signal_pid(p: i32, sig: Signal) {
    if p > 0 {
        let _ = kill(pid(p), sig);
    }
}

/// Signal a whole process group (its leader's pid). Errors (already gone) are ignored.
pub fn signal_group(pgid: i32, sig: Signal) {
    if pgid > 0 {
        let _ = killpg(pid(pgid), sig);
    }
}

/// Peak resident memory (VmHWM) of the given processes, in MB, rounded up.
pub fn max_memory_used_mb(pids: &[i32]) -> u64 {
    let kb: u64 = pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum();
    kb.div_ceil(1024)
}

/// Whether `path` is a regular file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
