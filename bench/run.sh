#!/usr/bin/env bash
# Reproduces bench/results.md: Cairn, restic and borg (zstd,3) in one run on
# the 3 GiB mixed corpus and 200k small files of bench/peers.sh, Cairn alone
# on 200k and 1M small files (memory scaling), and restores away from a
# mass delete (bench/restore-settled.sh).
#   apt-get install -y restic borgbackup time rsync
#   bench/run.sh            # ~35 min on 2 cores (+10 min making 1M small files once)
set -euo pipefail
cd "$(dirname "$0")/.."
here=$PWD
cargo build --release
peers=${PEERS:-$here/bench/peers.sh}
# Absolute output paths: peers.sh runs some tools from other directories.
"$peers" -t "cairn restic borg-zstd3" -w /tmp/bench/wmain -o "$here/bench/peers" "$@"
# Memory scaling, Cairn alone, one run after the other (never in parallel:
# peers.sh cleans its work directory).
"$peers" -s small -t cairn -w /tmp/bench/w200k -o "$here/bench/peers-200k"
"$peers" -s small -m /tmp/bench/small-1m -n 1000000 -t cairn -w /tmp/bench/w1m -o "$here/bench/peers-1m"
python3 bench/ratios.py bench/peers bench/peers-200k bench/peers-1m > bench/results.md
{
  echo
  echo "## Restore away from a mass delete (bench/restore-settled.sh)"
  echo
  echo '```'
  bench/restore-settled.sh
  echo '```'
} >> bench/results.md
cat bench/results.md
