#!/usr/bin/env bash
# Builds the otel-xray layer, one zip per architecture:
#
#   target/layer-zips/otel-xray-x86_64.zip
#   target/layer-zips/otel-xray-arm64.zip
#
# each holding, at the zip root (what Lambda unpacks into /opt):
#
#   extensions/otel-xray   the extension (mode 755)
#   otel-xray-wrapper      the AWS_LAMBDA_EXEC_WRAPPER (mode 755)
#
# Both binaries are built with `cargo lambda build --release --extension` with zig as the linker
# and C compiler (mimalloc and ring are C), for glibc 2.26: the oldest glibc of the Lambda
# runtimes (Amazon Linux 2), so one binary runs on AL2 (2.26) and AL2023 (2.34) alike. The release
# profile is the workspace's own (`--disable-optimizations` keeps cargo lambda from overriding
# it with its defaults). Installs what it needs, idempotently: cargo-lambda and zig from PyPI in
# layer-build/.venv, the rustup targets.
#
# Usage: layer-build/build.sh [x86_64|arm64 ...]   (default: both)
# Env:   LAYER_MAX_ZIP_BYTES  fail when a zip is larger (default: no limit, a warning above 4 MB)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv"
out="$root/target/layer-zips"
glibc="2.26"
warn_bytes=$((4 * 1000 * 1000))

log() { printf '[layer] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 arm64)
for arch in "${arches[@]}"; do
  case "$arch" in x86_64 | arm64) ;; *) die "unknown architecture '$arch' (x86_64 or arm64)" ;; esac
done

triple_of() { case "$1" in x86_64) echo x86_64-unknown-linux-gnu ;; arm64) echo aarch64-unknown-linux-gnu ;; esac; }

# --- tools -------------------------------------------------------------------------------------
command -v python3 >/dev/null || die "python3 is needed (to install cargo-lambda and zig from PyPI)"
command -v zip >/dev/null || {
  log "installing zip from Debian"
  apt-get update -qq && apt-get install -y -qq zip >/dev/null
}
if [ ! -x "$venv/bin/python" ]; then
  log "creating layer-build/.venv"
  python3 -m venv "$venv"
fi
req_hash="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [ "$(cat "$venv/.requirements" 2>/dev/null || true)" != "$req_hash" ]; then
  log "installing cargo-lambda and zig (PyPI)"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$req_hash" >"$venv/.requirements"
fi
# cargo lambda finds zig as `python3 -m ziglang`: the venv's python3 must come first.
export PATH="$venv/bin:$PATH"
installed_targets="$(rustup target list --installed)"
for arch in "${arches[@]}"; do
  triple="$(triple_of "$arch")"
  grep -qx "$triple" <<<"$installed_targets" || {
    log "rustup target add $triple"
    rustup target add "$triple"
  }
done

# --- build, lay out, zip -----------------------------------------------------------------------
mkdir -p "$out"
human() { numfmt --to=iec-i --suffix=B --format='%.2f' "$1"; }
report=()
for arch in "${arches[@]}"; do
  triple="$(triple_of "$arch")"
  log "building $arch ($triple, glibc $glibc)"
  started=$(date +%s)
  (cd "$root" && cargo lambda build --release --extension --disable-optimizations \
    --target "$triple.$glibc" -p otel-xray-extension -p otel-xray-wrapper \
    --lambda-dir "target/lambda-$arch")
  log "built $arch in $(($(date +%s) - started)) s"

  # cargo lambda moves --extension binaries into <lambda-dir>/extensions/.
  bin_dir="$root/target/lambda-$arch/extensions"
  stage="$out/$arch"
  rm -rf "$stage" && mkdir -p "$stage/extensions"
  install -m 755 "$bin_dir/otel-xray" "$stage/extensions/otel-xray"
  install -m 755 "$bin_dir/otel-xray-wrapper" "$stage/otel-xray-wrapper"
  zip_path="$out/otel-xray-$arch.zip"
  rm -f "$zip_path"
  # -X: no extra attributes (reproducible); zip keeps the Unix modes, which Lambda restores.
  (cd "$stage" && zip -q -X -r "$zip_path" extensions/otel-xray otel-xray-wrapper)

  ext_bytes=$(stat -c %s "$stage/extensions/otel-xray")
  wrap_bytes=$(stat -c %s "$stage/otel-xray-wrapper")
  zip_bytes=$(stat -c %s "$zip_path")
  report+=("$(printf '%-7s extension %10s  wrapper %10s  zip %10s  %s' "$arch" \
    "$(human "$ext_bytes")" "$(human "$wrap_bytes")" "$(human "$zip_bytes")" "${zip_path#"$root"/}")")
  if [ -n "${LAYER_MAX_ZIP_BYTES:-}" ] && [ "$zip_bytes" -gt "$LAYER_MAX_ZIP_BYTES" ]; then
    die "$zip_path is $zip_bytes bytes, above LAYER_MAX_ZIP_BYTES=$LAYER_MAX_ZIP_BYTES"
  elif [ "$zip_bytes" -gt "$warn_bytes" ]; then
    log "warning: $arch zip is $zip_bytes bytes, above the 4 MB target"
  fi
done

printf '%s\n' "${report[@]}"
