#!/usr/bin/env bash
# Crash soak: runs the crash-safety test (safety::crash_sigkill_backup_loop in
# crates/cli/tests/e2e/safety.rs) with CAIRN_CRASH_ITERS=2000, i.e. SIGKILLs
# `cairn backup` at 2000 random instants instead of the 50 that CI runs.
# After every kill it checks that earlier snapshots restore byte-identical,
# that `cairn check` passes, and that the rerun uploads again less than 10% of
# what the killed run had written. A fresh repository every 100 kills keeps
# disk use bounded. Takes 20 to 30 minutes on 2 cores.
#
#   tests/soak/crash.sh              # 2000 kills
#   CAIRN_CRASH_ITERS=500 tests/soak/crash.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export CAIRN_CRASH_ITERS="${CAIRN_CRASH_ITERS:-2000}"
exec cargo nextest run -p cairn-cli --test e2e \
  -E 'test(=safety::crash_sigkill_backup_loop)' --no-capture "$@"
