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
# and C compiler (mimalloc and ring are C), for `<arch>-unknown-linux-musl`: statically linked,
# not position-independent (.cargo/config.toml), the wrapper without unwind tables (drop_unwind_tables.py),
# no dynamic loader and no shared library, so one
# binary runs on every Lambda OS (Amazon Linux 2 and 2023) and starts faster in less memory than
# the glibc build (docs/performance.md, "Start-up"). The release profile is the workspace's own
# (`--disable-optimizations` keeps cargo lambda from overriding it with its defaults). Installs
# what it needs, idempotently: cargo-lambda and zig from PyPI in layer-build/.venv, the rustup
# targets.
#
# `make local-layer` (what the end-to-end tests and `make bench` run) lays out target/layer from
# the very binaries of the host architecture's zip: `layer-build/build.sh --local x86_64`.
#
# Usage: layer-build/build.sh [--local] [x86_64|arm64 ...]   (default: both)
#   --local  also lay out target/layer from the first architecture's binaries
# Env:   LAYER_MAX_ZIP_BYTES  fail when a zip is larger (default: no limit, a warning above 4 MB)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$here/.venv"
out="$root/target/layer-zips"
local_layer="$root/target/layer"
warn_bytes=$((4 * 1000 * 1000))

log() { printf '[layer] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

local=0
if [ "${1:-}" = "--local" ]; then
  local=1
  shift
fi
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x86_64 arm64)
for arch in "${arches[@]}"; do
  case "$arch" in x86_64 | arm64) ;; *) die "unknown architecture '$arch' (x86_64 or arm64)" ;; esac
done

triple_of() { case "$1" in x86_64) echo x86_64-unknown-linux-musl ;; arm64) echo aarch64-unknown-linux-musl ;; esac; }

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
# GNU objcopy for each architecture, to drop the unwind tables (drop_unwind_tables.py).
objcopy_pkgs=()
for arch in "${arches[@]}"; do
  gnu="$( [ "$arch" = arm64 ] && echo aarch64 || echo x86_64)"
  if ! command -v "$gnu-linux-gnu-objcopy" >/dev/null && ! { [ "$(uname -m)" = "$gnu" ] && command -v objcopy >/dev/null; }; then
    objcopy_pkgs+=("binutils-${gnu//_/-}-linux-gnu")
  fi
done
if [ ${#objcopy_pkgs[@]} -gt 0 ]; then
  log "installing ${objcopy_pkgs[*]} from Debian"
  apt-get update -qq && apt-get install -y -qq "${objcopy_pkgs[@]}" >/dev/null
fi
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
human() { numfmt --to=iec-i --suffix=B --round=nearest --format='%.2f' "$1"; }
report=()
for arch in "${arches[@]}"; do
  triple="$(triple_of "$arch")"
  log "building $arch ($triple, static)"
  started=$(date +%s)
  (cd "$root" && cargo lambda build --release --extension --disable-optimizations \
    --target "$triple" -p otel-xray-extension -p otel-xray-wrapper \
    --lambda-dir "target/lambda-$arch")
  log "built $arch in $(($(date +%s) - started)) s"

  # cargo lambda moves --extension binaries into <lambda-dir>/extensions/.
  bin_dir="$root/target/lambda-$arch/extensions"
  stage="$out/$arch"
  rm -rf "$stage" && mkdir -p "$stage/extensions"
  install -m 755 "$bin_dir/otel-xray" "$stage/extensions/otel-xray"
  install -m 755 "$bin_dir/otel-xray-wrapper" "$stage/otel-xray-wrapper"
  # The extension unwinds (its panics are contained: extension/src/contain.rs) and keeps its
  # unwind tables. The wrapper has nothing to contain (a panic there aborts, and the runtime is
  # exec'd by then or the function starts without it): its tables go.
  python3 "$here/drop_unwind_tables.py" "$stage/otel-xray-wrapper"
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

if [ "$local" = 1 ]; then
  # The same files as the zip, where the end-to-end tests and the benchmarks look for them.
  stage="$out/${arches[0]}"
  rm -rf "$local_layer" && mkdir -p "$local_layer/extensions"
  install -m 755 "$stage/extensions/otel-xray" "$local_layer/extensions/otel-xray"
  install -m 755 "$stage/otel-xray-wrapper" "$local_layer/otel-xray-wrapper"
  log "target/layer: the ${arches[0]} binaries of ${out#"$root"/}/otel-xray-${arches[0]}.zip"
fi
printf '%s\n' "${report[@]}"
