//! The README's environment variable table is the code's: rendered from `config::ENV_VARS`, and
//! every variable name the extension's source mentions is in it. `UPDATE_README=1` rewrites it.

use std::path::{Path, PathBuf};

use otel_xray::config::ENV_VARS;

const START: &str = "<!-- env-table:start (generated from extension/src/config.rs; `UPDATE_README=1 cargo test --test readme_env_table`) -->";
const END: &str = "<!-- env-table:end -->";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rendered() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for v in ENV_VARS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            v.name, v.default, v.meaning
        ));
    }
    out
}

#[test]
fn readme_table_matches_the_code() {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let start = readme
        .find(START)
        .expect("README has the env-table start marker")
        + START.len();
    let end = readme
        .find(END)
        .expect("README has the env-table end marker");
    let current = readme[start..end].trim_matches('\n');
    let expected = rendered();
    if std::env::var_os("UPDATE_README").is_some() {
        let updated = format!("{}\n{}{}", &readme[..start], expected, &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        current.trim(),
        expected.trim(),
        "README.md's environment variable table differs from config::ENV_VARS; \
         run UPDATE_README=1 cargo test --test readme_env_table"
    );
}

/// Every `OTEL_*`/`AWS_*` name quoted in the extension's source is documented.
#[test]
fn every_variable_the_source_names_is_documented() {
    let mut undocumented = Vec::new();
    let mut stack = vec![root().join("extension/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Unit tests may name variables the code deliberately does not read.
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for name in quoted_env_names(text) {
                if !ENV_VARS.iter().any(|v| v.name == name) {
                    undocumented.push(format!("{} in {}", name, path.display()));
                }
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "variables read but not in config::ENV_VARS: {undocumented:?}"
    );
}

/// Names like "OTEL_XRAY_FLUSH" or "AWS_REGION" appearing as whole string literals.
fn quoted_env_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices('"') {
        let rest = &text[i + 1..];
        let Some(end) = rest.find('"') else { break };
        let lit = &rest[..end];
        let is_name = (lit.starts_with("OTEL_") || lit.starts_with("AWS_"))
            && lit.len() > 5
            && lit
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if is_name && !lit.ends_with('_') {
            out.push(lit.to_owned());
        }
    }
    out
}

#[test]
fn scanner_finds_names() {
    assert_eq!(
        quoted_env_names(r#"let a = "OTEL_XRAY_FLUSH"; let b = "not"; "AWS_REGION""#),
        vec!["OTEL_XRAY_FLUSH".to_owned(), "AWS_REGION".to_owned()]
    );
}
