#!/usr/bin/env bash
# Power-cut soak: runs the power-cut test (powercut::powercut_init_backup_key_add_prune
# in crates/cli/tests/e2e/powercut.rs) once per seed, CAIRN_POWERCUT_RUNS times
# (default 50). Each seed backs up other file sizes, so packs, index files and
# concurrent uploads fall elsewhere and the syncs return in other orders; every
# run checks every cut point under both models (only what fsync saved; every
# name but no unsynced byte). CI runs one seed. About 20 s a run on 2 cores.
#
#   tests/soak/powercut.sh                 # 50 seeds
#   CAIRN_POWERCUT_RUNS=200 tests/soak/powercut.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
runs="${CAIRN_POWERCUT_RUNS:-50}"
export CAIRN_POWERCUT_CUTS=all
for seed in $(seq 1 "$runs"); do
  echo "== seed $seed of $runs"
  CAIRN_POWERCUT_SEED="$seed" cargo nextest run -p cairn-cli --test e2e \
    -E 'test(=powercut::powercut_init_backup_key_add_prune)' --no-capture "$@"
done
