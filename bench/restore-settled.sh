#!/usr/bin/env bash
# Restore timing for Cairn and restic away from a recent mass delete.
#
# On ext4 without a journal (this VM's root filesystem), creating an inode
# skips every inode freed in the last 60 s (300 s while its inode block is
# dirty; the script syncs first), reading its inode table block to know:
# after `rm -rf` of a 47k-file tree, each file a restore creates costs a
# scan. peers.sh deletes and copies the source just before each tool's
# steps, so the faster a tool's backups, the deeper its restore lands in
# that window. This script backs
# up the same corpus with both tools, waits until nothing was deleted for
# WAIT seconds, then times each restore into a fresh directory.
#   bench/restore-settled.sh [CORPUS] [WAIT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
corpus=${1:-/tmp/bench/corpus}
wait=${2:-90}
w=/tmp/bench/settled
rm -rf "$w"; mkdir -p "$w"
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
export XDG_CACHE_HOME=$w/cache XDG_CONFIG_HOME=$w/config
cairn=${CAIRN_BIN:-./target/release/cairn}
"$cairn" init --repo "$w/cairn-repo" >/dev/null
"$cairn" backup --repo "$w/cairn-repo" "$corpus" >/dev/null
restic init --repo "$w/restic-repo" >/dev/null
restic backup --repo "$w/restic-repo" "$corpus" >/dev/null
for tool in cairn restic; do
  sync; sleep "$wait"
  case $tool in
    cairn) cmd=("$cairn" restore --repo "$w/cairn-repo" latest "$w/r-cairn") ;;
    restic) cmd=(restic restore --repo "$w/restic-repo" latest --target "$w/r-restic") ;;
  esac
  /usr/bin/time -f "$tool restore: %e s wall, %U s user, %S s sys, %M KiB peak RSS" "${cmd[@]}" >/dev/null 2>"$w/$tool.time" || true
  tail -1 "$w/$tool.time"
done
python3 - "$w/cairn.time" "$w/restic.time" <<'PY'
import sys
wall = [float(open(p).read().splitlines()[-1].split()[2]) for p in sys.argv[1:]]
print("cairn/restic = %.2f/%.2f = %.2f" % (wall[0], wall[1], wall[0] / wall[1]))
PY
python3 "$here/verify-restore.py" "$corpus" "$w/r-cairn$corpus" | tail -1
rm -rf "$w"
