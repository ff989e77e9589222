#!/usr/bin/env bash
# cargo deny (deny.toml): licenses, sources and bans always; advisories only where the RustSec
# advisory database can be fetched. It lives on GitHub only (no crates.io, PyPI, npm or Debian
# package carries it), and this project's machines and CI reach only those registries, so here
# the advisory check is skipped and says so. Set DENY_ADVISORIES=require to make a fetch failure
# fatal (on a machine that reaches GitHub).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/tools/cargo-tool.sh cargo-deny 0.20.2
cargo deny --log-level error check licenses sources bans
if timeout 60 cargo deny --log-level error check advisories; then
    echo "cargo deny: advisories ok"
elif [ "${DENY_ADVISORIES:-}" = require ]; then
    echo "cargo deny: advisories could not be checked (see above)" >&2
    exit 1
else
    echo "cargo deny: ADVISORIES NOT CHECKED: the RustSec advisory database (GitHub) is unreachable from this machine" >&2
fi
