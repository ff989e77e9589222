//! Handoff to the function's own OpenTelemetry auto-instrumentation, where the function ships it.
//!
//! Pure: the environment and the file system come in through [`Fs`] and a lookup, the variables
//! to set come out. The runtime command is never changed: each handoff goes through the
//! environment, so the runtime starts once (no second interpreter, as a shell `otel-instrument`
//! script that runs `python3 opentelemetry-instrument "$@"` would cost).
//!
//! - **Python**: `opentelemetry-instrument CMD` only puts its `auto_instrumentation` directory
//!   (whose `sitecustomize.py` runs `initialize()` at interpreter start) first on `PYTHONPATH`
//!   and execs CMD. We do the same: the directory holding
//!   `opentelemetry/instrumentation/auto_instrumentation/sitecustomize.py` (task root,
//!   `/opt/python`, `/opt/python/lib/python3.*/site-packages`, `PYTHONPATH` entries) goes on
//!   `PYTHONPATH`, preceded by its `auto_instrumentation` folder.
//! - **Node.js**: `--require @opentelemetry/auto-instrumentations-node/register` appended to
//!   `NODE_OPTIONS` when the package is in the task root's or `/opt/nodejs`'s `node_modules`
//!   (the bare name, so Node resolves the package's `exports`; its `node_modules` is added to
//!   `NODE_PATH` when missing, so it resolves from any working directory).
//! - **Java**: `-javaagent:<jar>` appended to `JAVA_TOOL_OPTIONS` when
//!   `OTEL_XRAY_JAVA_AGENT` (default `/opt/opentelemetry-javaagent.jar`) exists.
//!
//! Never where the user set it up already (the variable names the agent), never with
//! `OTEL_XRAY_AUTO_INSTRUMENTATION=false`.

/// What the wrapper may read on disk; injected so the decisions are tested without files.
pub trait Fs {
    /// Whether the path exists.
    fn exists(&self, path: &str) -> bool;
    /// Names of a directory's entries (empty when it is not a readable directory).
    fn list_dir(&self, path: &str) -> Vec<String>;
}

/// Which runtime the wrapper starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Python,
    Node,
    Java,
    Other,
}

/// The Java agent's default place: the OpenTelemetry Java agent layers put it there.
pub const DEFAULT_JAVA_AGENT: &str = "/opt/opentelemetry-javaagent.jar";
const PY_AUTO: &str = "opentelemetry/instrumentation/auto_instrumentation";
const NODE_PKG: &str = "@opentelemetry/auto-instrumentations-node";

/// The runtime, from Lambda's `AWS_EXECUTION_ENV` (`AWS_Lambda_python3.12`, `AWS_Lambda_nodejs20.x`,
/// `AWS_Lambda_java21`) or else from the command (`python3.12 -m awslambdaric`, `node …`, `java …`).
pub fn runtime(
    get: &dyn Fn(&str) -> Option<String>,
    program: &str,
    args: &[std::ffi::OsString],
) -> Runtime {
    if let Some(exec_env) = get("AWS_EXECUTION_ENV") {
        let e = exec_env.to_ascii_lowercase();
        if e.contains("python") {
            return Runtime::Python;
        }
        if e.contains("nodejs") {
            return Runtime::Node;
        }
        if e.contains("java") {
            return Runtime::Java;
        }
    }
    let words = std::iter::once(program.to_owned()).chain(
        args.iter()
            .take(2)
            .map(|a| a.to_string_lossy().into_owned()),
    );
    for w in words {
        let base = w.rsplit('/').next().unwrap_or(&w).to_owned();
        if base.starts_with("python") || w.contains("awslambdaric") {
            return Runtime::Python;
        }
        if base == "node" || base.starts_with("node2") || base.starts_with("nodejs") {
            return Runtime::Node;
        }
        if base == "java" {
            return Runtime::Java;
        }
    }
    Runtime::Other
}

/// The folders a Python function's packages can be in, in the order Python would look.
pub fn python_dirs(get: &dyn Fn(&str) -> Option<String>, fs: &dyn Fs) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    let mut push = |d: String| {
        let d = d.trim_end_matches('/').to_owned();
        if !d.is_empty() && !dirs.contains(&d) {
            dirs.push(d);
        }
    };
    if let Some(pp) = get("PYTHONPATH") {
        pp.split(':').map(str::to_owned).for_each(&mut push);
    }
    if let Some(root) = get("LAMBDA_TASK_ROOT") {
        push(root);
    }
    push("/opt/python".into());
    let mut versions: Vec<String> = fs
        .list_dir("/opt/python/lib")
        .into_iter()
        .filter(|n| n.starts_with("python3"))
        .collect();
    versions.sort();
    for v in versions {
        push(format!("/opt/python/lib/{v}/site-packages"));
    }
    dirs
}

/// Variables to set so the function's auto-instrumentation starts with the runtime; notes for
/// the log.
pub fn handoff(
    get: &dyn Fn(&str) -> Option<String>,
    runtime: Runtime,
    fs: &dyn Fs,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    if let Some(raw) = get("OTEL_XRAY_AUTO_INSTRUMENTATION") {
        match crate::values::parse_bool(&raw) {
            Some(false) => return Vec::new(),
            Some(true) => {}
            None => notes.push(format!(
                "OTEL_XRAY_AUTO_INSTRUMENTATION={raw:?} is not true or false; using true"
            )),
        }
    }
    match runtime {
        Runtime::Python => python(get, fs, notes),
        Runtime::Node => node(get, fs, notes),
        Runtime::Java => java(get, fs, notes),
        Runtime::Other => Vec::new(),
    }
}

fn python(
    get: &dyn Fn(&str) -> Option<String>,
    fs: &dyn Fs,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let current = get("PYTHONPATH").unwrap_or_default();
    if current.contains("auto_instrumentation") {
        return Vec::new(); // the user (or opentelemetry-instrument) set it up
    }
    let Some(site) = python_dirs(get, fs)
        .into_iter()
        .find(|d| fs.exists(&format!("{d}/{PY_AUTO}/sitecustomize.py")))
    else {
        return Vec::new();
    };
    let mut parts = vec![format!("{site}/{PY_AUTO}")];
    let entries: Vec<&str> = current.split(':').filter(|p| !p.is_empty()).collect();
    if !entries
        .iter()
        .any(|e| e.trim_end_matches('/') == site.as_str())
    {
        parts.push(site.clone());
    }
    parts.extend(entries.iter().map(|e| (*e).to_owned()));
    notes.push(format!(
        "Python auto-instrumentation found in {site}: started as opentelemetry-instrument would"
    ));
    vec![("PYTHONPATH".into(), parts.join(":"))]
}

fn node(
    get: &dyn Fn(&str) -> Option<String>,
    fs: &dyn Fs,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let options = get("NODE_OPTIONS").unwrap_or_default();
    if options.contains(NODE_PKG) {
        return Vec::new();
    }
    let mut modules = Vec::new();
    if let Some(root) = get("LAMBDA_TASK_ROOT").filter(|r| !r.is_empty()) {
        modules.push(format!("{}/node_modules", root.trim_end_matches('/')));
    }
    modules.push("/opt/nodejs/node_modules".into());
    let Some(found) = modules
        .into_iter()
        .find(|m| fs.exists(&format!("{m}/{NODE_PKG}/package.json")))
    else {
        return Vec::new();
    };
    let require = format!("--require {NODE_PKG}/register");
    let options = if options.trim().is_empty() {
        require
    } else {
        format!("{} {require}", options.trim())
    };
    let mut set = vec![("NODE_OPTIONS".to_owned(), options)];
    let node_path = get("NODE_PATH").unwrap_or_default();
    if !node_path
        .split(':')
        .any(|p| p.trim_end_matches('/') == found)
    {
        let value = if node_path.is_empty() {
            found.clone()
        } else {
            format!("{node_path}:{found}")
        };
        set.push(("NODE_PATH".into(), value));
    }
    notes.push(format!(
        "Node.js auto-instrumentation found in {found}: NODE_OPTIONS gets {NODE_PKG}/register"
    ));
    set
}

fn java(
    get: &dyn Fn(&str) -> Option<String>,
    fs: &dyn Fs,
    notes: &mut Vec<String>,
) -> Vec<(String, String)> {
    let options = get("JAVA_TOOL_OPTIONS").unwrap_or_default();
    if options.contains("-javaagent:") {
        return Vec::new();
    }
    let configured = get("OTEL_XRAY_JAVA_AGENT").filter(|p| !p.trim().is_empty());
    let jar = configured
        .clone()
        .unwrap_or_else(|| DEFAULT_JAVA_AGENT.into());
    if !fs.exists(&jar) {
        if configured.is_some() {
            notes.push(format!(
                "OTEL_XRAY_JAVA_AGENT={jar:?} does not exist; no Java agent"
            ));
        }
        return Vec::new();
    }
    let agent = format!("-javaagent:{jar}");
    let value = if options.trim().is_empty() {
        agent
    } else {
        format!("{} {agent}", options.trim())
    };
    notes.push(format!(
        "Java agent {jar}: JAVA_TOOL_OPTIONS gets -javaagent"
    ));
    vec![("JAVA_TOOL_OPTIONS".into(), value)]
}
