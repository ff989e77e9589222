#!/usr/bin/env bash
# `make fuzz`: runs every libFuzzer target for FUZZ_SECONDS (default 60) each, then prints a table
# of executions and crashes. Needs cargo-fuzz (installed here, pinned) and nightly flags, which
# the stable toolchain accepts with RUSTC_BOOTSTRAP=1. Address sanitizer on (the default).
#
# New interesting inputs go to fuzz/corpus-tmp/<target>/ (not committed; the committed seeds in
# fuzz/corpus/<target>/ are read only). A crash leaves its input in fuzz/artifacts/<target>/:
# fix the bug, then copy the input to fuzz/regressions/<target>/ so that the regular test suite
# (extension/tests/fuzz_corpus.rs) replays it for ever. FUZZ_TARGETS="a b" runs only those.
set -uo pipefail
cd "$(dirname "$0")"
bash ../tests/tools/cargo-tool.sh cargo-fuzz 0.13.2 || exit 1
export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
cargo fuzz build -O || exit 1
mkdir -p logs
status=0
rows=()
for t in $targets; do
    mkdir -p "corpus-tmp/$t" "corpus/$t"
    log="logs/$t.log"
    max_len=16384
    [ "$t" = trace_header ] && max_len=512
    cargo fuzz run -O "$t" "corpus-tmp/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
    crashes=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
    [ $rc -ne 0 ] && status=1
    rows+=("$(printf '%-18s %12s %8s %8s %4s' "$t" "${runs:-?}" "${cov:-?}" "$crashes" "$rc")")
done
printf '%-18s %12s %8s %8s %4s\n' target executions coverage crashes rc
printf '%s\n' "${rows[@]}"
echo "($seconds s per target; logs in fuzz/logs/, crash inputs in fuzz/artifacts/)"
exit $status
