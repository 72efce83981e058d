#!/usr/bin/env bash
# Reproduces bench/results.md: Cairn, restic and borg (zstd,3) in one run on
# the shared harness's 3 GiB mixed corpus and 200k small files.
#   apt-get install -y restic borgbackup time rsync
#   bench/run.sh            # ~40 min on 2 cores (+10 min making 1M small files once)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
peers=${PEERS:-../shared/bench/peers.sh}
"$peers" -t "cairn restic borg-zstd3" -w /tmp/bench/wmain -o bench/peers "$@"
# Memory scaling, Cairn alone, one run after the other (never in parallel:
# peers.sh cleans its work directory).
"$peers" -s small -t cairn -w /tmp/bench/w200k -o bench/peers-200k
"$peers" -s small -m /tmp/bench/small-1m -n 1000000 -t cairn -w /tmp/bench/w1m -o bench/peers-1m
python3 bench/ratios.py bench/peers bench/peers-200k bench/peers-1m > bench/results.md
cat bench/results.md
