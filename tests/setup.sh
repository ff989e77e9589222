#!/usr/bin/env bash
# Installs everything the test tiers need, idempotently: rustup targets/components, the Python
# venv (real OpenTelemetry SDK, awslambdaric, moto), the Node.js SDK, AWS's Runtime Interface
# Emulator (Go). Safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
stamp_dir="$here/.venv"

log() { printf '[setup] %s\n' "$*" >&2; }

# Rust: the toolchain file names the components; make sure they are present.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  log "installing rustfmt and clippy"
  rustup component add rustfmt clippy
fi

# Python venv with pinned test dependencies.
if [ ! -x "$stamp_dir/bin/python" ]; then
  log "creating tests/.venv"
  python3 -m venv "$stamp_dir"
fi
req_hash="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [ "$(cat "$stamp_dir/.requirements" 2>/dev/null || true)" != "$req_hash" ]; then
  log "installing Python test dependencies"
  "$stamp_dir/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$req_hash" > "$stamp_dir/.requirements"
fi

# aws-lambda-ric (Node's runtime interface client) builds native code with these.
missing=()
for tool in cmake:cmake autoconf:autoconf automake:automake libtoolize:libtool g++:g++ make:make; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool##*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} from Debian (aws-lambda-ric's native build)"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Node.js OpenTelemetry SDK and aws-lambda-ric (locked).
if command -v npm >/dev/null 2>&1; then
  lock_hash="$(sha256sum "$here/node/package-lock.json" | cut -c1-16)"
  if [ "$(cat "$here/node/node_modules/.lock-hash" 2>/dev/null || true)" != "$lock_hash" ]; then
    log "installing Node.js test dependencies"
    (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" > "$here/node/node_modules/.lock-hash"
  fi
else
  log "npm not found: installing nodejs and npm from Debian"
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
  exec "$0" "$@"
fi
# The sample Node.js function's own dependencies (tests/e2e/test_layer.py runs its handler).
node_example="$root/examples/node-function"
if command -v npm >/dev/null 2>&1; then
  example_hash="$(sha256sum "$node_example/package-lock.json" | cut -c1-16)"
  if [ "$(cat "$node_example/node_modules/.lock-hash" 2>/dev/null || true)" != "$example_hash" ]; then
    log "installing examples/node-function dependencies"
    (cd "$node_example" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$example_hash" > "$node_example/node_modules/.lock-hash"
  fi
fi
# AWS's Runtime Interface Emulator (tests/e2e/test_managed_instances.py, test_rie_propagation.py),
# built once from the Go module proxy into tests/.bin; the script returns at once when it is there.
bash "$here/tools/build-rie.sh"
# The arm64 layer test runs the arm64 extension (static, musl: no loader or sysroot needed) under
# qemu-user.
if ! command -v qemu-aarch64 >/dev/null 2>&1 && ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  log "installing qemu-user from Debian"
  apt-get update -qq && apt-get install -y -qq qemu-user >/dev/null
fi
log "ready ($root)"
