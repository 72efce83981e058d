#!/usr/bin/env bash
# Fuzz every target briefly from the committed seeds, for CI:
#   fuzz/ci.sh [SECONDS] [TARGET...]     (SECONDS per target, default 20;
#                                          targets default to all of them)
# A short run from valid encodings finds the shallow bugs a change brings
# in; long runs stay with fuzz/run.sh. Exits non-zero if any target
# crashes, leaks, runs out of memory or hangs, after naming the target and
# printing the input as hex. Nothing is written into the tree: the seeds
# are copied to a scratch directory first (libFuzzer adds what it finds to
# the corpus it is given), and the build goes to $CARGO_TARGET_DIR
# (default /tmp/fuzz-target).
set -euo pipefail

secs=${1:-20}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(tree snapshot index pack keys_config chunker)

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
export RUSTC_BOOTSTRAP=1   # cargo fuzz needs nightly flags (-Zsanitizer)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/tmp/fuzz-target}
start=$SECONDS

work=$(mktemp -d "${TMPDIR:-/tmp}/cairn-fuzz-ci.XXXXXX")
status=0
cleanup() {
    # cargo fuzz creates empty fuzz/artifacts/<target>/ dirs even when told
    # to put artifacts elsewhere.
    rmdir "$fuzz_dir"/artifacts/* "$fuzz_dir/artifacts" 2>/dev/null || true
    # Keep the logs and crash inputs of a failed run for whoever looks next.
    if [ $status -eq 0 ]; then rm -rf "$work"; else echo "fuzz: logs and inputs kept in $work"; fi
}
trap cleanup EXIT

# libfuzzer-sys compiles libFuzzer, which is C++: a machine with gcc alone
# lacks the C++ compiler and libstdc++. Installed the way .ci/run installs
# the tools of the end-to-end tests.
if ! command -v "${CXX:-c++}" >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++) >/dev/null
    else
        echo "fuzz: no C++ compiler (${CXX:-c++}); install g++" >&2
        exit 1
    fi
fi
# Only cargo-fuzz is missing on a fresh machine; cargo finds it in
# ~/.cargo/bin even when that is not on PATH.
if ! cargo fuzz --version >/dev/null 2>&1; then
    nice -n 10 cargo install cargo-fuzz --locked
fi
# A stale fuzz/Cargo.lock would be rewritten by the build: fail instead,
# as --locked does for the main workspace.
cargo metadata --locked --format-version 1 --manifest-path "$fuzz_dir/Cargo.toml" >/dev/null

echo "== fuzz: building all targets ($(cargo fuzz --version))"
nice -n 10 cargo fuzz build --fuzz-dir "$fuzz_dir"
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$CARGO_TARGET_DIR/$triple/release
echo "== fuzz: built in $((SECONDS - start))s"

hex() { od -An -v -tx1 "$1" | tr -d ' \n'; }

for t in "${targets[@]}"; do
    corpus=$work/corpus/$t
    artifacts=$work/artifacts/$t
    log=$work/$t.log
    mkdir -p "$corpus" "$artifacts"
    cp -R "$fuzz_dir/corpus/$t/." "$corpus/"
    # The binaries are run directly rather than through `cargo fuzz run`,
    # which would check the build again for every target. -timeout makes a
    # hang a failure rather than a silent stall until the CI job dies.
    rc=0
    (cd "$work" && nice -n 10 "$bin_dir/$t" "$corpus" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1) || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "== fuzz $t: ${runs:-?} runs, corpus grew to $(ls "$corpus" | wc -l) inputs, exit $rc"
    found=$(find "$artifacts" -type f | sort)
    if [ $rc -ne 0 ] || [ -n "$found" ]; then
        status=1
        echo "FUZZ FAILURE in target '$t' (exit $rc)"
        grep -E -A2 'panicked at' "$log" || true
        grep -E '^(==[0-9]+==)?ERROR|^SUMMARY' "$log" || true
        for a in $found; do
            echo "input $(basename "$a") ($(wc -c <"$a") bytes), hex:"
            echo "  $(hex "$a")"
        done
        echo "--- last lines of the $t log:"
        tail -n 30 "$log"
        echo "---"
    fi
done

echo "== fuzz: done in $((SECONDS - start))s"
exit $status
