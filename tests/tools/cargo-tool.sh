#!/usr/bin/env bash
# Installs a cargo subcommand from crates.io once (idempotent): `cargo-tool.sh cargo-fuzz 0.13.1`.
# The version is pinned so that CI and developers run the same tool; `--locked` uses the tool's
# own lock file. Prints how long the install took, so the cost in CI is visible.
set -euo pipefail
name=$1
version=$2
bin=${3:-$name}
if command -v "$bin" >/dev/null 2>&1 && "$bin" --version 2>/dev/null | grep -q "$version"; then
    exit 0
fi
# A subcommand reports through cargo: `cargo fuzz --version`.
if cargo "${name#cargo-}" --version 2>/dev/null | grep -q "$version"; then
    exit 0
fi
start=$(date +%s)
cargo install --locked --quiet "$name" --version "$version"
echo "installed $name $version in $(( $(date +%s) - start )) s" >&2
