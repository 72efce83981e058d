#!/usr/bin/env bash
# Reproduces bench/results.md: Cairn, restic and borg (zstd,3) in one run on
# the shared harness's 3 GiB mixed corpus and 200k small files.
#   apt-get install -y restic borgbackup time rsync
#   bench/run.sh            # ~40 min on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
peers=${PEERS:-../shared/bench/peers.sh}
"$peers" -t "cairn restic borg-zstd3" -o bench/peers "$@"
python3 bench/ratios.py bench/peers > bench/results.md
cat bench/results.md
