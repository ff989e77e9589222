//! Shared helpers: a temporary layer with the Python test extension copied in under any
//! name, the Python test runtime, and readers for what they logged.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use local_lambda::Config;
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The real path of the Python interpreter (not a shim), for shebangs.
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// A temporary `/opt`-like layer directory, removed on drop.
pub struct Layer {
    pub dir: PathBuf,
}

impl Layer {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "local-lambda-test-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(dir.join("extensions")).unwrap();
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::create_dir_all(dir.join("out")).unwrap();
        Self { dir }
    }

    /// Install the test extension as `extensions/<name>`.
    pub fn extension(&self, name: &str) -> &Self {
        let src = std::fs::read_to_string(fixtures().join("extension.py")).unwrap();
        let path = self.dir.join("extensions").join(name);
        std::fs::write(&path, format!("#!{}\n{src}", python())).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Where extensions and the runtime write their JSON lines.
    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    pub fn runtime_log(&self) -> PathBuf {
        self.out().join("runtime.jsonl")
    }

    /// A config running the Python test runtime against this layer.
    pub fn config(&self) -> Config {
        Config {
            layer_dir: Some(self.dir.clone()),
            runtime_cmd: vec![
                python().to_owned(),
                fixtures().join("runtime.py").to_string_lossy().into_owned(),
            ],
            env: vec![
                (
                    "RUNTIME_LOG".into(),
                    self.runtime_log().to_string_lossy().into_owned(),
                ),
                (
                    "EXT_LOG_DIR".into(),
                    self.out().to_string_lossy().into_owned(),
                ),
            ],
            log_dir: Some(self.dir.join("logs")),
            ..Config::default()
        }
    }

    /// A Lambda Managed Instances config (selected through the function's environment, as
    /// Lambda does) running the multi-worker test runtime against this layer.
    pub fn lmi_config(&self, max_concurrency: u32) -> Config {
        let mut cfg = self.config();
        cfg.runtime_cmd = vec![
            python().to_owned(),
            fixtures()
                .join("runtime_lmi.py")
                .to_string_lossy()
                .into_owned(),
        ];
        cfg.env.push((
            "AWS_LAMBDA_INITIALIZATION_TYPE".into(),
            "lambda-managed-instances".into(),
        ));
        cfg.env.push((
            "AWS_LAMBDA_MAX_CONCURRENCY".into(),
            max_concurrency.to_string(),
        ));
        cfg
    }

    /// JSON lines an extension (or the runtime: "runtime") wrote.
    pub fn records(&self, name: &str) -> Vec<Value> {
        read_jsonl(&self.out().join(format!("{name}.jsonl")))
    }

    /// Records of `kind`.
    pub fn records_of(&self, name: &str, kind: &str) -> Vec<Value> {
        self.records(name)
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    }

    /// Telemetry events an extension received, flattened in arrival order.
    pub fn telemetry(&self, name: &str) -> Vec<Value> {
        self.records_of(name, "telemetry")
            .into_iter()
            .flat_map(|r| r["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Poll `f` every 20 ms until it returns Some, for at most `limit`.
pub async fn eventually<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn is_hex(s: &str, n: usize) -> bool {
    s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// ms since the epoch now.
pub fn now_epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
