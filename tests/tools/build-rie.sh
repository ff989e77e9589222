#!/usr/bin/env bash
# Builds AWS's Lambda Runtime Interface Emulator (RIE) from the Go module proxy into
# tests/.bin/aws-lambda-rie, idempotently. GOPATH and GOCACHE live under tests/.go so a fresh
# machine (CI) downloads and compiles it once. The module has no semver tags on the proxy,
# only pseudo-versions, so the pin is a pseudo-version.
#
#   Modes (chosen by the binary at start-up): on-demand by default; Lambda Managed Instances
#   when AWS_LAMBDA_MAX_CONCURRENCY is set. Both listen for invokes on
#   --runtime-interface-emulator-address (default 0.0.0.0:8080: always pass 127.0.0.1:PORT)
#   and serve the Runtime API on --runtime-api-address (default 127.0.0.1:9001).
set -euo pipefail

RIE_MODULE="github.com/aws/aws-lambda-runtime-interface-emulator"
RIE_VERSION="v0.0.0-20261030222936-bef5c4ba774d"

here="$(cd "$(dirname "$0")" && pwd)"
tests="$(cd "$here/.." && pwd)"
bin_dir="$tests/.bin"
go_dir="$tests/.go"
binary="$bin_dir/aws-lambda-rie"
stamp="$bin_dir/.aws-lambda-rie.version"

log() { printf '[build-rie] %s\n' "$*" >&2; }

if [ -x "$binary" ] && [ "$(cat "$stamp" 2>/dev/null || true)" = "$RIE_VERSION" ]; then
  exit 0
fi

go_bin="$(command -v go || true)"
if [ -z "$go_bin" ] && [ -x /usr/local/go/bin/go ]; then
  go_bin=/usr/local/go/bin/go
fi
if [ -z "$go_bin" ]; then
  log "go not found (looked in PATH and /usr/local/go/bin)"
  exit 1
fi

mkdir -p "$bin_dir" "$go_dir/path" "$go_dir/cache"
log "building $RIE_MODULE@$RIE_VERSION with $("$go_bin" version)"
rm -f "$stamp"
# GOTOOLCHAIN=local: the module asks for go >= 1.26.6; fail clearly rather than fetch a toolchain.
# -trimpath keeps the build independent of where the repository is checked out.
(
  cd "$go_dir"
  env GOPATH="$go_dir/path" GOCACHE="$go_dir/cache" GOMODCACHE="$go_dir/path/pkg/mod" \
    GOBIN="$bin_dir" GOFLAGS=-modcacherw GOTOOLCHAIN=local CGO_ENABLED=0 \
    "$go_bin" install -trimpath "$RIE_MODULE/cmd/aws-lambda-rie@$RIE_VERSION"
)
echo "$RIE_VERSION" > "$stamp"
log "installed $binary"
