#!/usr/bin/env bash
# Run the cargo-fuzz targets one after another on the stable toolchain.
#   fuzz/run.sh [SECONDS] [TARGET...]     (SECONDS defaults to 60, capped at 150;
#                                          targets default to all of them)
# Corpus, artifacts and logs go to $FUZZ_WORK (default /tmp/fuzz-work), the
# build to $CARGO_TARGET_DIR (default /tmp/fuzz-target): nothing lands in the
# tree. One fuzz process at a time, niced, and each run waits while
# /tmp/bench.lock exists (a benchmark is running).
set -euo pipefail

secs=${1:-60}
[ $# -gt 0 ] && shift
[ "$secs" -gt 150 ] && secs=150
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(tree snapshot index pack keys_config chunker)

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
work=${FUZZ_WORK:-/tmp/fuzz-work}
export RUSTC_BOOTSTRAP=1   # cargo fuzz needs nightly flags (-Zsanitizer)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/fuzz-target}

wait_bench() { while [ -e /tmp/bench.lock ]; do sleep 10; done; }

command -v cargo-fuzz >/dev/null || nice -n 19 cargo install cargo-fuzz --locked
mkdir -p "$work/logs"
wait_bench
nice -n 19 cargo fuzz build --fuzz-dir "$fuzz_dir"

status=0
for t in "${targets[@]}"; do
    mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
    wait_bench
    log="$work/logs/$t-$(date +%Y%m%dT%H%M%S).log"
    echo "== $t: ${secs}s, log $log"
    # -jobs=1 -workers=1: libFuzzer runs one child and writes its output to
    # fuzz-0.log in the current directory, hence the cd. cargo fuzz passes
    # its own -artifact_prefix first; the later one wins.
    (cd "$work/logs" && nice -n 19 cargo fuzz run --fuzz-dir "$fuzz_dir" "$t" "$work/corpus/$t" -- \
        -jobs=1 -workers=1 -max_total_time="$secs" -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/$t/" >"$log.cargo" 2>&1) || status=1
    mv "$work/logs/fuzz-0.log" "$log"
    grep -E '^#[0-9]+ +DONE|^stat::number_of_executed_units|panicked at|Test unit written' "$log" || true
done
# cargo fuzz creates (empty, git-ignored) fuzz/artifacts/<target>/ dirs.
rmdir "$fuzz_dir"/artifacts/* "$fuzz_dir/artifacts" 2>/dev/null || true
exit $status
